"""The method: backbones, the WS-DAN model, attention crop / drop, losses, and the model files.

``backbones`` (name -> feature extractor, a registry), ``wsdan`` (attention maps, bilinear attention pooling, the
classifier; the plain baseline), ``attention`` (batched crop / drop as pure tensor functions), ``losses`` (center
loss), ``checkpoint`` (the one-file format: atomic, ``weights_only``, validated config), ``convert`` (other WS-DAN
projects' checkpoints), ``export`` (ONNX / TorchScript). Imports only :mod:`ws_dan.common` and :mod:`ws_dan.data`.
"""
