"""Training DBPN from high-resolution photos alone (the engine of ``scripts/train_sr.py``).

Pairs are made on the fly, as in the DBPN release: a random ``scale * p`` square is cut from a
high-resolution image, the low-resolution input is its PIL bicubic (anti-aliased) reduction to ``p x p``,
and both get the same random flip / rotation (one of the 8 symmetries of the square; the release used flips
and a 180-degree turn). Loss: L1 = mean |model(LR) - HR|; optimiser Adam (lr 1e-4, betas 0.9/0.999), lr
divided by 10 halfway (the release's recipe).

Validation enlarges held-out images (centre crops, so an epoch's check stays cheap) and reports PSNR/SSIM on
the Y channel with the border cropped, beside the bicubic baseline on the same crops.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ws_dan.common.images import UnreadableImageError, find_images, open_image
from ws_dan.common.io import PathLike

from .inference import image_to_tensor, tensor_to_image, tiled_forward
from .metrics import bicubic_down, bicubic_up, modcrop, psnr_y, ssim_y

log = logging.getLogger(__name__)


@dataclass
class HRImage:
    path: Path
    size: tuple[int, int]  # (w, h)


def scan_hr_images(dirs: Iterable[PathLike], min_side: int, strict: bool = False
                   ) -> tuple[list[HRImage], list[tuple[Path, str]]]:
    """Find the images under ``dirs`` (recursively) that decode and have both sides >= ``min_side``.

    Returns ``(usable, rejected)``, rejected holding (path, reason) for unreadable and too-small images.
    Each image is decoded once here, so a corrupt file is reported now rather than mid-training.
    """
    usable: list[HRImage] = []
    rejected: list[tuple[Path, str]] = []
    for d in dirs:
        images, skipped = find_images(d)
        rejected += [(s.path, s.reason) for s in skipped]
        for path in images:
            try:
                size = open_image(path).size
            except UnreadableImageError as e:
                if strict:
                    raise
                rejected.append((path, e.reason))
                continue
            if min(size) < min_side:
                rejected.append((path, f"{size[0]}x{size[1]} is smaller than the {min_side}-pixel training patch"))
            else:
                usable.append(HRImage(path, size))
    return usable, rejected


def hold_out(images: Sequence[HRImage], fraction: float, seed: int) -> tuple[list[HRImage], list[HRImage]]:
    """(train, validation): ``round(n * fraction)`` images (at least 1 when n > 1) drawn by a seeded permutation,
    both lists in their original order, so the same seed holds out the same images."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=g).tolist()
    n_val = max(1, round(len(images) * fraction)) if len(images) > 1 else 0
    return [images[i] for i in sorted(order[n_val:])], [images[i] for i in sorted(order[:n_val])]


def metrics_row(epoch: int, train: dict, val: dict, lr: float, seconds: float) -> dict:
    """train_sr.py's metrics.csv row (the trainer's ``make_row``): L1, steps, patches, PSNR/SSIM vs bicubic."""
    return {"epoch": epoch, "train_l1": round(train["loss"], 5), "steps": train["steps"],
            "patches": train["patches"], "val_psnr": round(val["psnr"], 3), "val_ssim": round(val["ssim"], 4),
            "val_bicubic_psnr": round(val["bicubic_psnr"], 3), "val_bicubic_ssim": round(val["bicubic_ssim"], 4),
            "lr": lr, "seconds": round(seconds, 1)}


def augment_pair(lr: Image.Image, hr: Image.Image, k: int) -> tuple[Image.Image, Image.Image]:
    """Apply symmetry ``k`` (0..7: bit 2 = mirror left-right, bits 0-1 = quarter turns) to both images."""
    if k & 4:
        lr, hr = lr.transpose(Image.Transpose.FLIP_LEFT_RIGHT), hr.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    turn = [None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270][k & 3]
    if turn is not None:
        lr, hr = lr.transpose(turn), hr.transpose(turn)
    return lr, hr


def make_pair(hr_image: Image.Image, scale: int, lr_patch: int, rng: random.Random, augment: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """A random (LR (3, p, p), HR (3, scale*p, scale*p)) pair in [0, 1] from one high-resolution image."""
    hp = lr_patch * scale
    w, h = hr_image.size
    if w < hp or h < hp:
        raise ValueError(f"image {w}x{h} is smaller than the {hp}-pixel HR patch")
    x, y = rng.randint(0, w - hp), rng.randint(0, h - hp)
    hr = hr_image.crop((x, y, x + hp, y + hp))
    lr = hr.resize((lr_patch, lr_patch), Image.BICUBIC)
    if augment:
        lr, hr = augment_pair(lr, hr, rng.randrange(8))
    return image_to_tensor(lr)[0], image_to_tensor(hr)[0]


class SRPatchDataset(Dataset):
    """``patches_per_image`` random LR/HR pairs per image and epoch (see :func:`make_pair`).

    Randomness comes from ``torch.randint`` (seeded per DataLoader worker by the loader's generator), so a
    fixed ``--seed`` gives the same patches for the same number of workers.
    """

    def __init__(self, images: Sequence[HRImage], scale: int, lr_patch: int = 40, patches_per_image: int = 1,
                 augment: bool = True):
        self.images, self.scale, self.lr_patch = list(images), scale, lr_patch
        self.patches_per_image, self.augment = patches_per_image, augment

    def __len__(self) -> int:
        return len(self.images) * self.patches_per_image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.images[index % len(self.images)]
        rng = random.Random(int(torch.randint(0, 2**62, (1,)).item()))
        return make_pair(open_image(item.path), self.scale, self.lr_patch, rng, self.augment)


@dataclass
class ValItem:
    name: str
    lr: Image.Image
    hr: Image.Image
    bicubic_psnr: float
    bicubic_ssim: float


def prepare_validation(images: Sequence[HRImage], scale: int, crop: int = 256) -> list[ValItem]:
    """Centre crops (at most ``crop`` HR pixels a side, a multiple of the scale) and their LR versions."""
    items = []
    for im in images:
        hr = open_image(im.path)
        w, h = hr.size
        cw, ch = (min(w, crop) if crop > 0 else w), (min(h, crop) if crop > 0 else h)
        left, top = (w - cw) // 2, (h - ch) // 2
        hr = modcrop(hr.crop((left, top, left + cw, top + ch)), scale)
        lr = bicubic_down(hr, scale)
        up = bicubic_up(lr, scale)
        items.append(ValItem(str(im.path.name), lr, hr, psnr_y(up, hr, scale), ssim_y(up, hr, scale)))
    return items


@torch.no_grad()
def validate(model: nn.Module, items: Sequence[ValItem], scale: int, device: Union[str, torch.device],
             tile: int = 0) -> dict[str, float]:
    """Mean PSNR / SSIM (Y, border cropped) of the model and of bicubic on the validation crops."""
    was_training = model.training
    model.eval()
    p, s = [], []
    try:
        for it in items:
            sr = tensor_to_image(tiled_forward(model, image_to_tensor(it.lr), scale, tile=tile, device=device,
                                               out_dtype=torch.uint8))
            p.append(psnr_y(sr, it.hr, scale))
            s.append(ssim_y(sr, it.hr, scale))
    finally:
        model.train(was_training)
    return {"psnr": float(np.mean(p)), "ssim": float(np.mean(s)),
            "bicubic_psnr": float(np.mean([it.bicubic_psnr for it in items])),
            "bicubic_ssim": float(np.mean([it.bicubic_ssim for it in items]))}


def train_one_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer,
                    device: Union[str, torch.device], deadline: Optional[float] = None, progress: bool = True,
                    desc: str = "train") -> dict[str, float]:
    """One pass over ``loader`` minimising L1 = mean |model(LR) - HR|.

    ``deadline`` (a ``time.time()`` value): stop after the step that passes it (``stopped`` = 1 in the
    result). Returns the mean loss, the number of steps and patches, and the seconds taken.
    """
    from tqdm.auto import tqdm

    model.train()
    t0 = time.time()
    total, steps, patches, stopped = 0.0, 0, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)
    for lr, hr in bar:
        lr, hr = lr.to(device, non_blocking=True), hr.to(device, non_blocking=True)
        loss = F.l1_loss(model(lr), hr)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.item())
        steps += 1
        patches += lr.shape[0]
        bar.set_postfix(l1=f"{total / steps:.4f}")
        if deadline is not None and time.time() >= deadline:
            stopped = 1
            break
    bar.close()
    return {"loss": total / max(steps, 1), "steps": steps, "patches": patches, "seconds": time.time() - t0,
            "stopped": stopped}
