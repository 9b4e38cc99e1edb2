"""Training augmentations, by name (``--augment flip,color-jitter,night``), each also usable on its own.

Randomness comes from torch's global generator, as in torchvision's transforms, so ``torch.manual_seed``
(and the DataLoader's per-worker seeding) makes every augmentation reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

#: Names accepted by --augment. "flip,color-jitter" is the default (WS-DAN.PyTorch's training transform).
AUGMENTATIONS = ("flip", "color-jitter", "random-resized-crop", "autoaugment", "randaugment", "random-erasing",
                 "night")
DEFAULT_AUGMENT = ("flip", "color-jitter")


class NightAugment:
    """Turn a daytime photo into a plausible night photo (in the spirit of the Automold road-image library).

    Applied with probability ``p``, in the order a camera at night would produce them:

    1. a darker tone curve, v <- v ** gamma (gamma > 1 sinks the mid-tones, keeps highlights): low light;
    2. lower exposure, v <- v * exposure;
    3. less colour (scotopic vision, small sensors): v <- lum + (v - lum) * (1 - desaturate);
    4. cooler colour temperature: red scaled by (1 - cool), blue by (1 + cool / 2) (moonlight, LED lamps);
    5. optional light glows: a few warm Gaussian halos added (street lamps, headlights), each with
       probability ``glow_p``, sized 3-12% of the image;
    6. sensor noise: Gaussian, stronger in the dark (std = noise * (0.5 + sqrt(1 - v)) / 1.5), a little chroma.

    Input and output are RGB PIL images of the same size.
    """

    def __init__(self, p: float = 0.5, gamma: tuple[float, float] = (1.3, 2.0),
                 exposure: tuple[float, float] = (0.25, 0.55), desaturate: tuple[float, float] = (0.2, 0.5),
                 cool: tuple[float, float] = (0.05, 0.25), noise: tuple[float, float] = (0.01, 0.04),
                 glow_p: float = 0.5, max_glows: int = 3):
        self.p, self.gamma, self.exposure, self.cool, self.noise = p, gamma, exposure, cool, noise
        self.desaturate = desaturate
        self.glow_p, self.max_glows = glow_p, max_glows

    @staticmethod
    def _uniform(low_high: tuple[float, float]) -> float:
        low, high = low_high
        return low + (high - low) * torch.rand(()).item()

    def __call__(self, image: Image.Image) -> Image.Image:
        if torch.rand(()).item() >= self.p:
            return image
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)  # (H, W, 3)
        h, w, _ = x.shape
        x = x.pow(self._uniform(self.gamma)) * self._uniform(self.exposure)
        lum = x.mean(dim=-1, keepdim=True)
        x = lum + (x - lum) * (1 - self._uniform(self.desaturate))
        cool = self._uniform(self.cool)
        x = x * torch.tensor([1 - cool, 1 - cool / 4, 1 + cool / 2])
        for _ in range(self.max_glows):
            if torch.rand(()).item() < self.glow_p:
                cy, cx = torch.rand(()).item() * h, torch.rand(()).item() * w
                radius = self._uniform((0.03, 0.12)) * max(h, w)
                ys = torch.arange(h, dtype=torch.float32).view(-1, 1) - cy
                xs = torch.arange(w, dtype=torch.float32).view(1, -1) - cx
                halo = torch.exp(-(ys ** 2 + xs ** 2) / (2 * radius ** 2)) * self._uniform((0.4, 0.9))
                x = x + halo.unsqueeze(-1) * torch.tensor([1.0, 0.8, 0.5])  # warm light
        luminance = x.mean(dim=-1, keepdim=True).clamp(0, 1)
        std = self._uniform(self.noise) * (0.5 + (1 - luminance).sqrt()) / 1.5
        x = x + torch.randn(h, w, 1) * std + torch.randn(h, w, 3) * std * 0.3  # luminance + chroma noise
        out = (x.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return Image.fromarray(out, "RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


def build_train_transform(image_size: int, mean: Sequence[float], std: Sequence[float],
                          augment: Sequence[str] = DEFAULT_AUGMENT) -> T.Compose:
    """The training transform for a list of augmentation names (see AUGMENTATIONS).

    Geometry first (random-resized crop, else the whole image resized to a square: the reference project found
    keeping the whole car better than a crop), then flips, night, colour, the policies, tensor conversion,
    normalisation and random erasing (which erases to 0 = the mean colour after normalisation).
    """
    unknown = [a for a in augment if a not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {', '.join(AUGMENTATIONS)}")
    size = (image_size, image_size)
    steps: list = []
    if "random-resized-crop" in augment:
        steps.append(T.RandomResizedCrop(size, scale=(0.35, 1.0), antialias=True))
    else:
        steps.append(T.Resize(size, interpolation=T.InterpolationMode.BILINEAR, antialias=True))
    if "flip" in augment:
        steps.append(T.RandomHorizontalFlip())
    if "night" in augment:
        steps.append(NightAugment(p=0.3))
    if "color-jitter" in augment:
        steps.append(T.ColorJitter(brightness=0.126, saturation=0.5))  # WS-DAN.PyTorch's values
    if "autoaugment" in augment:
        steps.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET))
    if "randaugment" in augment:
        steps.append(T.RandAugment())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if "random-erasing" in augment:
        steps.append(T.RandomErasing(p=0.5, value=0))
    return T.Compose(steps)


def parse_augment(text: str) -> tuple[str, ...]:
    """'flip, night' -> ('flip', 'night'); 'none' or '' -> ()."""
    names = tuple(a.strip() for a in text.split(",") if a.strip())
    return () if names == ("none",) else names
