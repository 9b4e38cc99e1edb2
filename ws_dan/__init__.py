"""WS-DAN (Weakly Supervised Data Augmentation Network) for fine-grained visual classification.

The base layer of the toolkit: it imports nothing from ``super_resolution`` or ``data_tools`` (which build on it).
Its subpackages, each importing only those above it in this list (tests/test_layers.py checks the direction and
that no package's modules import each other in a circle):

* :mod:`ws_dan.common`: the floor every package stands on (atomic files, image I/O, output-folder safety, the
  dataset scanner, run-folder rules, CLI types, tables, devices, seeds and logging);
* :mod:`ws_dan.data`: datasets, transforms, augmentations;
* :mod:`ws_dan.models`: backbones, the WS-DAN model and baseline, attention crop / drop, losses, checkpoints;
* :mod:`ws_dan.evaluation`: inference, metrics, plots, predict.py's outputs, the HTML report;
* :mod:`ws_dan.training`: the recipe's named steps, the trainer, the train step, optimizers, distributed.
"""

__version__ = "0.1.0"
