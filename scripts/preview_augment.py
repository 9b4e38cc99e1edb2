"""Preview training augmentations: a PNG grid, each row an image, before and after (several random draws).

    python scripts/preview_augment.py --images photos/*.jpg --augment night --output night.png

Uses the same transforms as train.py (ws_dan.data.augment); `--augment` takes one name or a comma-separated list.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Before/after grid of training augmentations",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--images", nargs="+", required=True, help="image files (one row each)")
    p.add_argument("--augment", default="night", help="augmentation name(s), comma-separated")
    p.add_argument("--samples", type=int, default=3, help="random draws per image")
    p.add_argument("--size", type=int, default=224, help="side of each tile")
    p.add_argument("--output", "-o", default="augment_preview.png")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> Path:
    import torch
    from PIL import Image, ImageDraw

    from ws_dan.common.images import UnreadableImageError, open_image
    from ws_dan.common.io import atomic_write
    from ws_dan.common.runtime import fail
    from ws_dan.data.augment import NightAugment, build_train_transform, parse_augment

    names = parse_augment(args.augment)
    try:
        if names == ("night",):  # the night look alone, always applied, without the resize-to-square
            transform = NightAugment(p=1.0)
        else:
            tensor_tf = build_train_transform(args.size, (0.0,) * 3, (1.0,) * 3, names)
            transform = lambda im: Image.fromarray(  # noqa: E731  (tensor in [0, 1] back to an image)
                (tensor_tf(im).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8"))
    except ValueError as e:
        fail(str(e))
    torch.manual_seed(args.seed)
    rows = []
    for path in args.images:
        try:
            image = open_image(path)
        except UnreadableImageError as e:
            fail(str(e))
        image.thumbnail((args.size, args.size))
        rows.append([image] + [transform(image) for _ in range(args.samples)])
    tile = args.size
    grid = Image.new("RGB", (tile * (args.samples + 1), tile * len(rows) + 20), "white")
    draw = ImageDraw.Draw(grid)
    draw.text((4, 4), "original", fill="black")
    draw.text((tile + 4, 4), f"{args.augment} (random draws)", fill="black")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            im = im.resize((tile, tile)) if im.size != (tile, tile) else im
            grid.paste(im, (c * tile, 20 + r * tile))
    out = Path(args.output)
    with atomic_write(out, "wb") as f:
        grid.save(f, format="PNG", optimize=True)
    print(f"wrote {out} ({len(rows)} images x {args.samples} draws of {args.augment})")
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
