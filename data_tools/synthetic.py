"""Built-in synthetic *fine-grained* sample dataset.

Every image shows the same kind of scene: a cluttered background and a simple
car-like object.  The only thing that depends on the class is ONE small badge
(8-14 % of the image side) painted at a random spot on the object's body; the
class is the badge's colour and shape (``red_circle``, ``blue_triangle``, ...).
Object colour, size and position, the background and the clutter are drawn from
the same distribution for every class, so a classifier has to find and look at
a small detail -- exactly the situation WS-DAN's attention cropping is made for.

The layout is the ``ImageFolder`` one used by the rest of the toolkit::

    output_dir/
        train/<class>/0000.jpg ...
        test/<class>/0000.jpg ...
        boxes.csv      # split,class,path,x0,y0,x1,y1 -- ground-truth badge boxes

Generation is deterministic: each image gets its own RNG seeded from
``(seed, split_id, class_id, index)``, so the bytes of an image depend neither on
the generation order nor on how many other classes/images are requested.
"""

from __future__ import annotations

import colorsys
import csv
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BADGE_COLOURS",
    "BADGE_SHAPES",
    "MAX_CLASSES",
    "MIN_CLASSES",
    "MIN_IMAGE_SIZE",
    "SampleDataset",
    "class_catalogue",
    "make_sample_dataset",
    "render_sample",
]

# Saturated badge colours.  Everything else in the scene (object body, windows,
# background, clutter) is kept at low saturation, so these colours occur *only*
# in the badge -- the class signal must not leak into the rest of the image.
BADGE_COLOURS: dict = {
    "red": (225, 25, 30),
    "blue": (25, 70, 235),
    "green": (15, 175, 45),
    "yellow": (250, 205, 0),
}
BADGE_SHAPES: tuple[str, ...] = ("circle", "triangle", "square", "star", "diamond", "cross")

MIN_CLASSES = 2
MAX_CLASSES = len(BADGE_COLOURS) * len(BADGE_SHAPES)  # 24
# Below this the badge would be only a handful of pixels and shapes stop being
# distinguishable at all.
MIN_IMAGE_SIZE = 64
MAX_IMAGE_SIZE = 2048

# Oversampling factor: draw at 2x and downsample with LANCZOS for antialiasing.
_SS = 2
# Split ids that go into the per-image seed.
_SPLIT_IDS = {"train": 0, "test": 1}
_BADGE_FRACTION = (0.08, 0.14)
_JPEG_QUALITY = 90

ProgressFn = Callable[[int, int], None]
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class SampleDataset:
    """What :func:`make_sample_dataset` wrote."""

    output_dir: Path
    class_names: list[str]
    num_train: int
    num_test: int
    boxes_csv: Path


def _ordered_pairs() -> list[tuple[int, int]]:
    """(colour index, shape index) pairs in catalogue order.

    Ordered by ``max(ci, si)`` first so that every prefix is a small, "square"
    grid of colours x shapes: with 2 classes the only difference is the shape
    (red circle vs red triangle), with 4 classes it is a 2x2 factorial, and so
    on.  Classes therefore share colours and shapes with each other, which keeps
    the task fine-grained instead of "spot the colour".
    """
    pairs = [(ci, si) for ci in range(len(BADGE_COLOURS)) for si in range(len(BADGE_SHAPES))]
    return sorted(pairs, key=lambda p: (max(p), p[0], p[1]))


def class_catalogue() -> list[str]:
    """All supported class names (``<colour>_<shape>``) in the order classes are taken."""
    colours = list(BADGE_COLOURS)
    return [f"{colours[ci]}_{BADGE_SHAPES[si]}" for ci, si in _ordered_pairs()]


# --------------------------------------------------------------------------- colours


def _hsv(h: float, s: float, v: float) -> Colour:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (int(round(r * 255)), int(round(g * 255)), int(round(b * 255)))


def _muted(rng: np.random.Generator, s_max: float, v_lo: float, v_hi: float) -> Colour:
    """A random low-saturation colour (can never be mistaken for a badge colour)."""
    return _hsv(rng.random(), rng.uniform(0.0, s_max), rng.uniform(v_lo, v_hi))


# --------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Linear colour gradient in a random direction.

    Computed on a 16x16 grid and upscaled bilinearly: a linear ramp survives
    bilinear interpolation unchanged, and it is ~20x cheaper than a full-size
    numpy ramp (which dominated the generation time).
    """
    c0 = np.array(_muted(rng, 0.25, 0.35, 0.95), dtype=np.float32)
    c1 = np.array(_muted(rng, 0.25, 0.35, 0.95), dtype=np.float32)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    coords = np.linspace(-0.5, 0.5, 16, dtype=np.float32)
    t = np.cos(angle) * coords[None, :] + np.sin(angle) * coords[:, None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    small = np.clip(c0 + (c1 - c0) * t[..., None] + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(small, "RGB").resize((size, size), Image.BILINEAR)


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """Large faded blobs and thin lines.

    Deliberately different from badges: blobs are big and translucent, lines are
    thin, and both are low-saturation, so clutter adds texture without ever
    looking like a small saturated badge.
    """
    for _ in range(int(rng.integers(3, 7))):
        r = rng.uniform(0.12, 0.35) * size
        cx, cy = rng.uniform(0, size, 2)
        colour = _muted(rng, 0.35, 0.2, 1.0) + (int(rng.integers(40, 100)),)
        if rng.random() < 0.6:
            rx, ry = r, r * rng.uniform(0.5, 1.5)
            draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=colour)
        else:
            n = int(rng.integers(3, 7))
            angles = np.sort(rng.uniform(0, 2 * math.pi, n))
            radii = r * rng.uniform(0.6, 1.0, n)
            pts = [(cx + rr * math.cos(a), cy + rr * math.sin(a)) for a, rr in zip(angles, radii)]
            draw.polygon(pts, fill=colour)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0, x1, y1 = rng.uniform(-0.1 * size, 1.1 * size, 4)
        colour = _muted(rng, 0.35, 0.1, 1.0) + (int(rng.integers(90, 200)),)
        draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 2 * _SS + 1)))


def _badge_polygon(shape: str, x0: float, y0: float, side: float) -> list[tuple[float, float]]:
    """Outline of a badge shape inscribed in the square ``[x0, x0+side)``."""
    cx, cy, h = x0 + side / 2, y0 + side / 2, side / 2
    if shape == "square":
        k = 0.86 * h  # a bit smaller than the box: a full square reads as "bigger" than the rest
        return [(cx - k, cy - k), (cx + k, cy - k), (cx + k, cy + k), (cx - k, cy + k)]
    if shape == "triangle":
        return [(cx, y0), (x0 + side, y0 + side), (x0, y0 + side)]
    if shape == "diamond":
        return [(cx, y0), (x0 + side, cy), (cx, y0 + side), (x0, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            r = h if i % 2 == 0 else 0.45 * h
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + h * 0.1 + r * math.sin(a)))
        return pts
    if shape == "cross":
        w = h / 3
        return [
            (cx - w, y0), (cx + w, y0), (cx + w, cy - w), (x0 + side, cy - w),
            (x0 + side, cy + w), (cx + w, cy + w), (cx + w, y0 + side), (cx - w, y0 + side),
            (cx - w, cy + w), (x0, cy + w), (x0, cy - w), (cx - w, cy - w),
        ]
    raise ValueError(f"unknown badge shape {shape!r}")


def _draw_badge(draw: ImageDraw.ImageDraw, shape: str, colour: Colour, x0: float, y0: float, side: float) -> None:
    if shape == "circle":
        draw.ellipse([x0, y0, x0 + side, y0 + side], fill=colour)
    else:
        draw.polygon(_badge_polygon(shape, x0, y0, side), fill=colour)


def render_sample(
    rng: np.random.Generator, class_name: str, image_size: int
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Render one image of ``class_name``.

    Returns the RGB image (``image_size`` square) and the badge box
    ``(x0, y0, x1, y1)`` in pixel coordinates, x1/y1 exclusive.

    All draws that shape the scene happen in the same order for every class,
    and the class only selects the badge's colour and outline, so the class
    cannot be inferred from anything but the badge.
    """
    colour_name, _, shape = class_name.partition("_")
    if colour_name not in BADGE_COLOURS or shape not in BADGE_SHAPES:
        raise ValueError(f"unknown class {class_name!r}; expected one of {class_catalogue()}")
    S = image_size
    img = _background(rng, S * _SS)
    # "RGBA" draw mode on an RGB image alpha-blends translucent fills: faded blobs for free.
    draw = ImageDraw.Draw(img, "RGBA")
    _clutter(draw, rng, S * _SS)
    car = _Car.place(rng, S)
    _draw_wheels(draw, rng, car)
    mid = _draw_cabin(draw, rng, car)
    _draw_body(draw, rng, car, mid)
    box = _draw_badge_on(draw, rng, car, colour_name, shape)
    img = img.resize((S, S), Image.LANCZOS)
    # Sensor-like noise, added after downsampling so it is per-pixel.
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0.0, 4.0, (S, S, 3)).astype(np.float32)
    img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img, box


def _sc(*vals: float) -> list[float]:
    """Final-image pixels -> the supersampled canvas's."""
    return [v * _SS for v in vals]


@dataclass
class _Car:
    """The car's geometry, decided in final-image pixels so the badge box is exact, and its colours."""

    side: float  # the badge's side
    width: float
    body_h: float
    cabin_h: float
    wheel_r: float
    wheel_drop: float  # how far wheels stick out below the body
    left: float
    top: float
    body_top: float
    body_bottom: float
    body_colour: Colour
    dark: Colour
    window_colour: Colour
    wheel_colour: Colour
    hub_colour: Colour

    @classmethod
    def place(cls, rng: np.random.Generator, S: int) -> _Car:
        side = max(4, int(round(rng.uniform(*_BADGE_FRACTION) * S)))
        width = rng.uniform(0.4, 0.8) * S
        body_h = max(width * rng.uniform(0.26, 0.36), side + 4.0)
        cabin_h = width * rng.uniform(0.15, 0.24)
        wheel_r = body_h * rng.uniform(0.32, 0.42)
        wheel_drop = wheel_r * 0.55
        total_h = cabin_h + body_h + wheel_drop
        margin = 0.02 * S
        left = rng.uniform(margin, S - width - margin)
        top = rng.uniform(margin, max(margin, S - total_h - margin))
        body_colour = _muted(rng, 0.3, 0.25, 0.9)
        return cls(side, width, body_h, cabin_h, wheel_r, wheel_drop, left, top, top + cabin_h,
                   top + cabin_h + body_h, body_colour, tuple(int(c * 0.55) for c in body_colour),
                   _muted(rng, 0.12, 0.55, 0.85), _muted(rng, 0.08, 0.05, 0.2), _muted(rng, 0.08, 0.55, 0.8))


def _draw_wheels(draw: ImageDraw.ImageDraw, rng: np.random.Generator, car: _Car) -> None:
    # Soft shadow under the car, then wheels (drawn before the body, which hides
    # their top so the body's lower rectangle stays free for the badge).
    left, width, wheel_r = car.left, car.width, car.wheel_r
    draw.ellipse(_sc(left - 0.03 * width, car.body_bottom + car.wheel_drop - 0.06 * width,
                     left + 1.03 * width, car.body_bottom + car.wheel_drop + 0.04 * width), fill=(0, 0, 0, 60))
    for fx in (0.2 + rng.uniform(-0.04, 0.04), 0.8 + rng.uniform(-0.04, 0.04)):
        wx, wy = left + fx * width, car.body_bottom - wheel_r + car.wheel_drop
        draw.ellipse(_sc(wx - wheel_r, wy - wheel_r, wx + wheel_r, wy + wheel_r), fill=car.wheel_colour)
        hr = wheel_r * 0.45
        draw.ellipse(_sc(wx - hr, wy - hr, wx + hr, wy + hr), fill=car.hub_colour)


def _draw_cabin(draw: ImageDraw.ImageDraw, rng: np.random.Generator, car: _Car) -> float:
    """The cabin with its windows; returns the x of the middle between them (where the door seam goes)."""
    left, width, top, body_top, cabin_h = car.left, car.width, car.top, car.body_top, car.cabin_h
    c0 = left + width * rng.uniform(0.15, 0.3)
    c1 = left + width * rng.uniform(0.68, 0.85)
    slant = (c1 - c0) * rng.uniform(0.1, 0.25)
    overlap = 0.2 * car.body_h  # so the cabin joins the body without a seam
    draw.polygon([tuple(_sc(c0, body_top + overlap)), tuple(_sc(c0 + slant, top)),
                  tuple(_sc(c1 - slant * 0.6, top)), tuple(_sc(c1, body_top + overlap))], fill=car.body_colour)
    inset = 0.18 * cabin_h
    mid = (c0 + c1) / 2
    wtop, wbot = top + inset, body_top - 0.05 * cabin_h
    if wbot - wtop > 1.0:
        draw.polygon([tuple(_sc(c0 + slant + inset, wtop)), tuple(_sc(mid - inset / 2, wtop)),
                      tuple(_sc(mid - inset / 2, wbot)), tuple(_sc(c0 + inset * 0.8, wbot))], fill=car.window_colour)
        draw.polygon([tuple(_sc(mid + inset / 2, wtop)), tuple(_sc(c1 - slant * 0.6 - inset, wtop)),
                      tuple(_sc(c1 - inset * 0.8, wbot)), tuple(_sc(mid + inset / 2, wbot))], fill=car.window_colour)
    return mid


def _draw_body(draw: ImageDraw.ImageDraw, rng: np.random.Generator, car: _Car, mid: float) -> None:
    # Lower body, a door seam and a (whitish, not yellow) headlight: small
    # class-independent details so the badge is not the only thing on the car.
    left, width, body_top, body_bottom, body_h = car.left, car.width, car.body_top, car.body_bottom, car.body_h
    radius = min(body_h * 0.35, width * 0.1) * _SS
    draw.rounded_rectangle(_sc(left, body_top, left + width, body_bottom), radius=radius, fill=car.body_colour)
    draw.line(_sc(mid, body_top + 0.1 * body_h, mid, body_bottom - 0.15 * body_h), fill=car.dark, width=_SS)
    hl = max(1.0, 0.05 * width)
    facing_right = rng.random() < 0.5
    hx = left + width - 1.6 * hl if facing_right else left + 0.6 * hl
    draw.rectangle(_sc(hx, body_top + 0.25 * body_h, hx + hl, body_top + 0.25 * body_h + hl), fill=(235, 235, 222))


def _draw_badge_on(draw: ImageDraw.ImageDraw, rng: np.random.Generator, car: _Car, colour_name: str,
                   shape: str) -> tuple[int, int, int, int]:
    """The badge, the only class-dependent element: an integer box in final pixels, fully inside the lower body
    (1 px margin); returns it."""
    side = car.side
    bx_lo, bx_hi = int(math.ceil(car.left + 1)), int(math.floor(car.left + car.width - 1 - side))
    by_lo, by_hi = int(math.ceil(car.body_top + 1)), int(math.floor(car.body_bottom - 1 - side))
    bx = int(rng.integers(bx_lo, max(bx_lo, bx_hi) + 1))
    by = int(rng.integers(by_lo, max(by_lo, by_hi) + 1))
    jitter = rng.uniform(0.88, 1.0)  # slight brightness variation, same for every class
    badge_colour = tuple(int(round(c * jitter)) for c in BADGE_COLOURS[colour_name])
    # Inset by a quarter pixel (at 1x) so LANCZOS ringing stays (mostly) inside the box.
    inset_px = 0.25 * _SS
    _draw_badge(draw, shape, badge_colour, bx * _SS + inset_px, by * _SS + inset_px, side * _SS - 2 * inset_px - 1)
    return bx, by, bx + side, by + side


# --------------------------------------------------------------------------- dataset


def _validate(num_classes: int, train_per_class: int, test_per_class: int, image_size: int) -> None:
    if not isinstance(num_classes, (int, np.integer)) or not MIN_CLASSES <= num_classes <= MAX_CLASSES:
        raise ValueError(
            f"num_classes must be an integer from {MIN_CLASSES} to {MAX_CLASSES} "
            f"({len(BADGE_COLOURS)} badge colours x {len(BADGE_SHAPES)} shapes), got {num_classes!r}"
        )
    for name, value in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not isinstance(image_size, (int, np.integer)) or not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ValueError(
            f"image_size must be an integer from {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} pixels "
            f"(smaller badges are unreadable), got {image_size!r}"
        )


def _check_output_dir(output_dir: Path, overwrite: bool) -> None:
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise FileExistsError(f"{output_dir} exists and is not a directory")
    if not overwrite and any(output_dir.iterdir()):
        raise FileExistsError(
            f"{output_dir} exists and is not empty; pass overwrite=True (--overwrite) to replace "
            "its train/, test/ and boxes.csv"
        )


_OUTPUTS = ("boxes.csv", "train", "test")  # boxes.csv first out, last in: it marks completeness


def _install(staging: Path, output_dir: Path) -> None:
    """Move the finished dataset from ``staging`` to ``output_dir``.

    If ``output_dir`` does not exist this is one atomic rename.  Otherwise only
    the entries we own are swapped: old ones are first moved aside (boxes.csv
    first) and new ones moved in (boxes.csv last), so ``output_dir`` never holds
    a boxes.csv that describes files which are not there.
    """
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
    try:
        for name in _OUTPUTS:
            old = output_dir / name
            if old.exists() or old.is_symlink():
                os.replace(old, trash / name)
        for name in reversed(_OUTPUTS):
            os.replace(staging / name, output_dir / name)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _render_all(staging: Path, names: Sequence[str], counts: dict[str, int], seed: int, image_size: int,
                digits: int, total: int, progress: Optional[ProgressFn]) -> list[Sequence[object]]:
    """Every image into ``staging/<split>/<class>/``, each from its own seed (master seed, split, class, index), so
    any one image is reproducible alone; returns the rows of boxes.csv."""
    rows: list[Sequence[object]] = []
    done = 0
    for split, n in counts.items():
        for class_id, name in enumerate(names):
            class_dir = staging / split / name
            class_dir.mkdir(parents=True)
            for index in range(n):
                rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_IDS[split], class_id, index]))
                img, box = render_sample(rng, name, image_size)
                rel = f"{split}/{name}/{index:0{digits}d}.jpg"
                # 4:4:4 chroma: with default 4:2:0 subsampling the colour of a
                # ~10 px badge would be smeared over twice its area.
                img.save(staging / rel, "JPEG", quality=_JPEG_QUALITY, subsampling=0)
                rows.append((split, name, rel, *box))
                done += 1
                if progress is not None:
                    progress(done, total)
    return rows


def _write_boxes(path: Path, rows: list[Sequence[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "class", "path", "x0", "y0", "x1", "y1"])
        writer.writerows(rows)


def make_sample_dataset(
    output_dir: Union[str, os.PathLike],
    num_classes: int = 5,
    train_per_class: int = 80,
    test_per_class: int = 20,
    image_size: int = 112,
    seed: int = 0,
    overwrite: bool = False,
    progress: Optional[ProgressFn] = None,
) -> SampleDataset:
    """Write a synthetic fine-grained dataset to ``output_dir``.

    Args:
        output_dir: destination folder; created if missing.  Must be missing or
            empty unless ``overwrite`` is set.
        num_classes: number of badge classes, ``MIN_CLASSES``..``MAX_CLASSES``;
            the first ``num_classes`` entries of :func:`class_catalogue` are used.
        train_per_class / test_per_class: images per class in each split.
        image_size: side of the square images in pixels.
        seed: master seed; the same seed reproduces byte-identical files.
        overwrite: replace the ``train/``, ``test/`` and ``boxes.csv`` of an
            existing non-empty ``output_dir`` (nothing else in it is touched).
        progress: optional ``progress(done, total)`` callback, called after each image.

    Returns:
        A :class:`SampleDataset` describing what was written.

    Raises:
        ValueError: an argument is out of range.
        FileExistsError: ``output_dir`` is a file, or is a non-empty folder and
            ``overwrite`` is false.
    """
    _validate(num_classes, train_per_class, test_per_class, image_size)
    output_dir = Path(output_dir).expanduser().absolute()
    _check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)

    names = class_catalogue()[: int(num_classes)]
    counts = {"train": int(train_per_class), "test": int(test_per_class)}
    total = num_classes * (counts["train"] + counts["test"])
    digits = max(4, len(str(max(counts.values()) - 1)))

    # Staging folder next to the destination (same filesystem -> rename is atomic),
    # hidden so an interrupted run's leftovers are not mistaken for a dataset.
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        rows = _render_all(staging, names, counts, int(seed), int(image_size), digits, total, progress)
        _write_boxes(staging / "boxes.csv", rows)
        # Re-check right before installing: the folder may have been filled meanwhile.
        _check_output_dir(output_dir, overwrite)
        _install(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    return SampleDataset(output_dir=output_dir, class_names=list(names), num_train=num_classes * counts["train"],
                         num_test=num_classes * counts["test"], boxes_csv=output_dir / "boxes.csv")
