"""Does the attention land on the object? An automatic check without boxes, for vehicle datasets.

The inference crop of WS-DAN (the mean attention map thresholded at ``eval_crop_theta``, padded) should keep
the car, or a part of it, rather than background. Without annotated boxes, a second, independent judge decides:
an ImageNet classifier (torchvision MobileNetV2) looks at each crop, and the crop "keeps a vehicle" when one of
the judge's top-k classes is a vehicle or a vehicle part (sports car, convertible, cab, grille, car wheel...).
Two controls of the same size make the number mean something: the box at the image centre (photographers centre
cars) and a box at a random position; and the whole image as the ceiling.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from ws_dan.common.io import PathLike
from ws_dan.models.attention import attention_crop_boxes, crop_and_resize
from ws_dan.models.backbones import IMAGENET_MEAN, IMAGENET_STD

# ImageNet-1k classes that show a road vehicle or a recognisable part of one (torchvision's category names).
VEHICLE_CLASSES = (
    "ambulance", "beach wagon", "cab", "convertible", "jeep", "limousine", "minivan", "Model T", "pickup", "racer",
    "sports car", "tow truck", "trailer truck", "moving van", "police van", "garbage truck", "fire engine",
    "minibus", "school bus", "trolleybus", "go-kart", "recreational vehicle", "snowplow", "tractor", "half track",
    "amphibian", "car wheel", "grille", "disk brake", "car mirror", "seat belt", "odometer", "crash helmet",
)


def imagenet_judge(weights_path: PathLike) -> tuple[nn.Module, torch.Tensor]:
    """The full ImageNet MobileNetV2 classifier from a local torchvision weights file (weights_only load),
    in eval mode, and the indices of :data:`VEHICLE_CLASSES`."""
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    from ws_dan.models.backbones import load_weights_file

    net = mobilenet_v2(weights=None)
    net.load_state_dict(load_weights_file(weights_path), strict=True)
    names = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    index = torch.tensor([i for i, n in enumerate(names) if n in VEHICLE_CLASSES])
    return net.eval(), index


@torch.no_grad()
def shows_vehicle(judge: nn.Module, vehicle_index: torch.Tensor, images: torch.Tensor, k: int = 5) -> torch.Tensor:
    """(B,) bool: is one of the judge's top-k ImageNet classes a vehicle (part)? ``images`` ImageNet-normalised."""
    top = judge(images).topk(k, dim=1).indices
    return torch.isin(top, vehicle_index.to(top.device)).any(dim=1)


def _renormalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """From the model's normalisation to ImageNet's (the judge's)."""
    m, s = (torch.tensor(v, device=images.device).view(1, 3, 1, 1) for v in (mean, std))
    im, ist = (torch.tensor(v, device=images.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return ((images * s + m) - im) / ist


def same_size_boxes(boxes: torch.Tensor, size: tuple[int, int], where: str,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Boxes of the same width and height as ``boxes`` (B, 4), placed at the image centre or at random."""
    height, width = size
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    if where == "center":
        x0, y0 = (width - w) / 2, (height - h) / 2
    elif where == "random":
        x0 = torch.rand(len(boxes), generator=generator) * (width - w)
        y0 = torch.rand(len(boxes), generator=generator) * (height - h)
    else:
        raise ValueError(f"where must be 'center' or 'random', got {where!r}")
    return torch.stack([x0, y0, x0 + w, y0 + h], dim=1)


def peak_boxes(attention: torch.Tensor, size: tuple[int, int], area: float) -> torch.Tensor:
    """Square boxes (B, 4) covering ``area`` of the image, centred on each mean map's maximum (after bilinear
    upsampling to ``size``) and shifted inside the image: where the model looks hardest, at a fixed size, so it
    can be compared with same-size boxes elsewhere even when the thresholded crop is the whole image."""
    from ws_dan.models.attention import normalized_attention

    height, width = size
    up = normalized_attention(attention, size)[:, 0].flatten(1)  # (B, H*W)
    peak = up.argmax(dim=1)
    cy, cx = (peak // width).float() + 0.5, (peak % width).float() + 0.5
    side_y, side_x = height * area ** 0.5, width * area ** 0.5
    x0 = (cx - side_x / 2).clamp(0, width - side_x)
    y0 = (cy - side_y / 2).clamp(0, height - side_y)
    return torch.stack([x0, y0, x0 + side_x, y0 + side_y], dim=1)


@torch.no_grad()
def crop_check(model: nn.Module, judge: nn.Module, vehicle_index: torch.Tensor, images: torch.Tensor,
               generator: Optional[torch.Generator] = None, theta: Optional[float] = None,
               peak_area: Optional[float] = None, k: int = 5) -> dict[str, torch.Tensor]:
    """For a batch of model-normalised images: the mean attention (B, 1, h, w), the crop boxes (B, 4) at
    ``theta`` (default: the model's inference crop, ``eval_crop_theta``), each box's share of the image area,
    and whether the judge sees a vehicle in that crop, in the same-size centre and random boxes, and in the
    whole image (each (B,) bool). With ``peak_area`` the boxes are instead squares of that share of the image
    around the attention peak (:func:`peak_boxes`). ``k``: the judge's top-k classes that are looked at."""
    cfg = model.config
    _, attention = model.predict_logits(images)
    size = tuple(images.shape[-2:])
    theta = cfg.eval_crop_theta if theta is None else theta
    if peak_area is not None:
        boxes = peak_boxes(attention, size, peak_area)
    else:
        boxes = attention_crop_boxes(attention, size, theta, cfg.eval_crop_padding, cfg.attention_norm)
    judged = _renormalize(images, cfg.mean, cfg.std)
    out = {"attention": attention, "boxes": boxes,
           "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / (size[0] * size[1])}
    for name, b in (("crop", boxes), ("center", same_size_boxes(boxes, size, "center")),
                    ("random", same_size_boxes(boxes, size, "random", generator))):
        out[name] = shows_vehicle(judge, vehicle_index, crop_and_resize(judged, b), k)
    out["whole"] = shows_vehicle(judge, vehicle_index, judged, k)
    return out
