"""WS-DAN (Weakly Supervised Data Augmentation Network) for fine-grained visual classification.

Modules: ``backbones`` (name -> feature extractor), ``model`` (attention, pooling, classifier), ``attention``
(batched crop / drop), ``losses`` (center loss), ``data`` (datasets, transforms), ``engine`` (training step,
evaluation, prediction), ``checkpoint`` (atomic, weights_only), ``utils`` (devices, seeds, logging, files),
``plots`` (curves, confusion matrix, attention heatmaps).
"""

__version__ = "0.1.0"
