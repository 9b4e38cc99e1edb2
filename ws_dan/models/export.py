"""Export the inference path (normalise, raw + attention crop, averaged, softmax) as one graph.

The exported graph takes RGB images as float32 in [0, 1], shape (N, 3, S, S) with S the checkpoint's image
size and any N, and returns class probabilities (N, num_classes): the same numbers as ``predict.py`` for
the same resized image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn as nn

from ws_dan.common.io import PathLike, atomic_path
from ws_dan.models.wsdan import WSDAN


class InferenceModel(nn.Module):
    """images in [0, 1] -> softmax((logits(raw) + logits(attention crop)) / 2), normalisation included."""

    def __init__(self, model: WSDAN):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(model.config.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(model.config.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model.predict_logits((images - self.mean) / self.std)
        return torch.softmax(logits, dim=1)


def _exportable(model: WSDAN) -> WSDAN:
    """Swap efficientnet-pytorch's memory-efficient Swish (a custom autograd Function that tracers cannot
    see through) for the plain x * sigmoid(x); the numbers are the same."""
    try:
        from efficientnet_pytorch.utils import MemoryEfficientSwish, Swish
    except ImportError:  # pragma: no cover - efficientnet-pytorch is a dependency
        return model
    for module in model.modules():
        if isinstance(getattr(module, "_swish", None), MemoryEfficientSwish):
            module._swish = Swish()
    return model


def export_onnx(model: WSDAN, path: PathLike, opset: int = 18) -> Path:
    """Write an ONNX file with a dynamic batch dimension (input ``images``, output ``probabilities``)."""
    path = Path(path)
    wrapper = InferenceModel(_exportable(model)).eval()
    size = model.config.load_size
    example = torch.rand(2, 3, size, size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path) as tmp:
        torch.onnx.export(wrapper, (example,), str(tmp), input_names=["images"], output_names=["probabilities"],
                          dynamic_shapes={"images": {0: batch}}, opset_version=opset, dynamo=True,
                          external_data=False)
    return path


def export_torchscript(model: WSDAN, path: PathLike) -> Path:
    """Write a TorchScript file (traced; the batch dimension stays free because nothing depends on its value)."""
    path = Path(path)
    wrapper = InferenceModel(_exportable(model)).eval()
    size = model.config.load_size
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, torch.rand(2, 3, size, size), check_trace=False)
    with atomic_path(path) as tmp:
        traced.save(str(tmp))
    return path


SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts"}


def default_output(ckpt_path: PathLike, fmt: str) -> Path:
    """The checkpoint's name with ``.onnx`` / ``.ts``."""
    return Path(ckpt_path).with_suffix(SUFFIXES[fmt])


def max_abs_difference(model: WSDAN, path: PathLike, fmt: str, seed: int = 0,
                       batch_sizes: Sequence[int] = (1, 3)) -> float:
    """Largest |p_exported - p_pytorch| over batches of random images in [0, 1] (one per size in
    ``batch_sizes``, so a batch dimension frozen at export would show)."""
    import numpy as np

    reference = InferenceModel(model).eval()
    g = torch.Generator().manual_seed(seed)
    size = model.config.load_size
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(x: torch.Tensor) -> np.ndarray:
            return session.run(None, {"images": x.numpy()})[0]
    else:
        loaded = torch.jit.load(str(path))

        def run(x: torch.Tensor) -> np.ndarray:
            return loaded(x).numpy()
    worst = 0.0
    with torch.no_grad():
        for n in batch_sizes:
            x = torch.rand(n, 3, size, size, generator=g)
            worst = max(worst, float(np.abs(run(x) - reference(x).numpy()).max()))
    return worst
