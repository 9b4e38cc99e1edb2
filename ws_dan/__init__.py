"""WS-DAN (Weakly Supervised Data Augmentation Network) for fine-grained visual classification.

The base layer of the toolkit: it imports nothing from ``super_resolution`` or ``data_tools`` (which build on
it; tests/test_layers.py checks the direction). Its modules, one concept each:

* the method: ``backbones`` (name -> feature extractor, a registry), ``model`` (attention maps, bilinear
  attention pooling, classifier; the plain baseline), ``attention`` (batched crop / drop, pure tensor functions),
  ``losses`` (center loss), ``augment`` (training augmentations by name), ``optim`` (optimizers, AdaBound,
  schedulers);
* training and inference: ``data`` (datasets and transforms), ``engine`` (train_step, evaluate, predict),
  ``trainer`` (the one epoch loop: resume, RNG, metrics.csv, CheckpointSaver, Ctrl-C), ``classification`` (the
  classifier's recipe as named steps, TrainSettings, train.py's flags), ``run_dir`` (the save folder's rules),
  ``distributed`` (torchrun / DDP), ``checkpoint`` (atomic, weights_only, validated config), ``convert`` (other
  WS-DAN projects' checkpoints), ``export`` (ONNX / TorchScript);
* outputs: ``prediction`` (what predict.py writes), ``report`` (report.html), ``metrics``, ``plots``,
  ``contact_sheet``, ``tables``, ``benchmark`` (measuring helpers);
* files every part shares: ``images`` (safe image open, content sniffing), ``io`` (the one atomic writer, CSV /
  JSON, PathLike), ``outputs`` (output-folder safety, safe copy / link / move), ``owned_files`` (never replace
  an input or a user's file), ``layout`` (the one dataset scanner), ``cli_types`` (bounded argparse types),
  ``utils`` (devices, seeds, logging).
"""

__version__ = "0.1.0"
