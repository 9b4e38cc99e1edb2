"""Measure a super-resolution model against bicubic on high-resolution test images (Set5, Set14, your own).

    python scripts/eval_sr.py --hr-dir data/Set5 --model_path runs/sr/best.pt --scale 4 --output-dir runs/sr/set5

Each HR image is cropped to a multiple of the scale, reduced by PIL bicubic (or read from --lr-dir, e.g. the
DBPN release's own Set5_LR_x4 inputs), enlarged by bicubic and by the model, and both are compared with the
original: PSNR and SSIM on the Y channel with a border of --scale pixels cropped (the SR papers' convention).
Writes metrics.csv (a row per image and the mean), metrics.json, and strip.png: for the first --strip-images
images a row of centre crops LR | bicubic | model | original, with each one's PSNR. Without --model_path only
the bicubic baseline is measured.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="PSNR/SSIM of a super-resolution model vs bicubic",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--hr-dir", "--hr_dir", dest="hr_dir", required=True, help="folder of high-resolution images")
    p.add_argument("--model_path", "--model-path", dest="model_path", default=None,
                   help="DBPN weights (published .pth or train_sr.py checkpoint); none: bicubic only")
    p.add_argument("--scale", type=int, choices=[2, 4, 8], default=4)
    p.add_argument("--lr-dir", default=None,
                   help="ready-made LR inputs named like the HR files (NAME.png or NAME_x4.png); default: bicubic "
                        "reduction of the HR images with PIL")
    p.add_argument("--output-dir", "--od", default="sr_eval", help="where metrics.csv, metrics.json, strip.png go")
    p.add_argument("--strip-images", type=int, default=5, help="images shown in strip.png (0: no strip)")
    p.add_argument("--strip-crop", type=int, default=128, help="side of the HR centre crop shown per image")
    p.add_argument("--tile", type=int, default=256, help="tile side in LR pixels (0: whole image at once)")
    p.add_argument("--overlap", type=int, default=16, help="context pixels around each tile")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _find_lr(lr_dir: Path, stem: str, scale: int):
    for name in (stem, f"{stem}_x{scale}", f"{stem}_X{scale}", f"{stem}x{scale}"):
        for path in sorted(lr_dir.glob(f"{name}.*")):
            return path
    return None


def make_strip(rows: list, crop: int, path: Path) -> None:
    """A PNG with one row per image: LR (nearest) | bicubic | model | original centre crops, labelled."""
    from PIL import Image, ImageDraw

    label_h, pad = 14, 4
    columns = len(rows[0]["tiles"])
    strip = Image.new("RGB", (columns * (crop + pad) + pad, len(rows) * (crop + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        y = pad + r * (crop + label_h + pad)
        for c, (label, tile) in enumerate(row["tiles"]):
            x = pad + c * (crop + pad)
            draw.text((x, y), label, fill="black")
            strip.paste(tile, (x, y + label_h))
    strip.save(path)


def main(args: argparse.Namespace) -> dict:
    """Evaluate; returns {"mean": {...}, "images": [...], "output_dir": ...}."""
    import numpy as np

    from ws_dan.common.io import write_csv, write_json
    from ws_dan.common.runtime import fail, setup_logging

    log = setup_logging(None, args.verbose)
    hr_dir, lr_dir, images = _inputs(args)  # the folders, and the HR images to measure
    model, name = _model(args)  # None: bicubic only
    s = args.scale
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, strip_rows = [], []
    for path in images:
        pair = _pair(path, lr_dir, s, log)  # (HR cropped to a multiple of the scale, LR), or None: skipped
        if pair is None:
            continue
        row, enlarged = _measure(path.relative_to(hr_dir), *pair, s, model, args)  # and (bicubic, SR)
        if len(strip_rows) < args.strip_images:
            strip_rows.append({"tiles": _strip_tiles(path, *pair, enlarged, row, model, args.strip_crop)})
        rows.append(row)
        log.info("%-24s bicubic %.2f dB / %.4f%s", row["image"], row["bicubic_psnr"], row["bicubic_ssim"],
                 f"   {name} {row['sr_psnr']:.2f} dB / {row['sr_ssim']:.4f}" if model is not None else "")
    if not rows:
        fail(f"{hr_dir}: no image could be measured")
    keys = [k for k in rows[0] if k not in ("image", "width", "height")]
    mean = {"image": "MEAN", "width": "", "height": "", **{k: round(float(np.mean([r[k] for r in rows])), 4)
                                                           for k in keys}}
    write_csv(out_dir / "metrics.csv", rows + [mean])
    summary = {"model": name, "model_path": args.model_path, "scale": s, "hr_dir": str(hr_dir),
               "lr_source": str(lr_dir) if lr_dir else "PIL bicubic", "images": len(rows),
               "mean": {k: mean[k] for k in keys}}
    write_json(out_dir / "metrics.json", summary)
    if strip_rows:
        make_strip(strip_rows, args.strip_crop, out_dir / "strip.png")
    log.info("mean over %d images: bicubic %.2f dB / %.4f%s", len(rows), mean["bicubic_psnr"], mean["bicubic_ssim"],
             f";  {name} {mean['sr_psnr']:.2f} dB / {mean['sr_ssim']:.4f}" if model is not None else "")
    return {**summary, "rows": rows, "output_dir": str(out_dir)}


def _inputs(args: argparse.Namespace) -> tuple[Path, Optional[Path], list[Path]]:
    from ws_dan.common.images import find_images
    from ws_dan.common.runtime import fail

    hr_dir = Path(args.hr_dir)
    if not hr_dir.is_dir():
        fail(f"{hr_dir}: expected a folder of high-resolution images; it is not a folder")
    lr_dir = Path(args.lr_dir) if args.lr_dir else None
    if lr_dir is not None and not lr_dir.is_dir():
        fail(f"{lr_dir}: expected a folder of low-resolution images (--lr-dir); it is not a folder")
    images, _ = find_images(hr_dir)
    if not images:
        fail(f"{hr_dir}: no images found")
    return hr_dir, lr_dir, images


def _model(args: argparse.Namespace):
    """The network of --model_path and its name, or (None, "bicubic only")."""
    from super_resolution.weights import SRWeightsError, load_sr_model
    from ws_dan.common.runtime import fail, resolve_device

    if not args.model_path:
        return None, "bicubic only"
    try:
        device = resolve_device(args.device)
        model, _ = load_sr_model(args.model_path, device, scale=args.scale)
    except (SRWeightsError, RuntimeError) as e:
        fail(str(e))
    return model, f"{model.spec.name}{' (residual)' if model.residual and model.variant != 'dbpn-res-mr64-3' else ''}"


def _pair(path: Path, lr_dir: Optional[Path], s: int, log):
    """(HR, LR) for one image: the LR from --lr-dir (its size must be the HR's / scale) or PIL bicubic. None for an
    unreadable image or one too small to measure (a warning says which)."""
    from super_resolution.metrics import bicubic_down, modcrop
    from ws_dan.common.images import UnreadableImageError, open_image
    from ws_dan.common.runtime import fail

    try:
        hr = modcrop(open_image(path), s)
        if lr_dir is not None:
            lr_path = _find_lr(lr_dir, path.stem, s)
            if lr_path is None:
                fail(f"{lr_dir}: no LR image for {path.name} (looked for {path.stem}.* and {path.stem}_x{s}.*)")
            lr = open_image(lr_path)
            if (lr.width * s, lr.height * s) != hr.size:
                fail(f"{lr_path}: {lr.width}x{lr.height} is not {hr.width}x{hr.height} / {s}")
        else:
            lr = bicubic_down(hr, s)
    except UnreadableImageError as e:
        log.warning("skipped %s: %s", path, e.reason)
        return None
    if min(hr.size) < 2 * s + 11:
        log.warning("skipped %s: %dx%d is too small to measure at %dx", path, hr.width, hr.height, s)
        return None
    return hr, lr


def _measure(rel: Path, hr, lr, s: int, model, args: argparse.Namespace):
    """One metrics.csv row (PSNR / SSIM on Y of bicubic and, with a model, of its output) and the two
    enlargements (bicubic, SR; SR is None without a model)."""
    from super_resolution.inference import super_resolve_image
    from super_resolution.metrics import bicubic_up, psnr_y, ssim_y

    bic = bicubic_up(lr, s)
    row = {"image": str(rel), "width": hr.width, "height": hr.height,
           "bicubic_psnr": round(psnr_y(bic, hr, s), 4), "bicubic_ssim": round(ssim_y(bic, hr, s), 4)}
    sr = None
    if model is not None:
        sr = super_resolve_image(model, lr, s, tile=args.tile, overlap=args.overlap)
        row.update(sr_psnr=round(psnr_y(sr, hr, s), 4), sr_ssim=round(ssim_y(sr, hr, s), 4))
        row["gain_db"] = round(row["sr_psnr"] - row["bicubic_psnr"], 4)
    return row, (bic, sr)


def _strip_tiles(path: Path, hr, lr, enlarged, row: dict, model, crop_side: int) -> list:
    """The strip's row for one image: centre crops of the LR (nearest), bicubic, the model's output and the HR."""
    from PIL import Image

    bic, sr = enlarged
    c = min(crop_side, hr.width, hr.height)
    box = ((hr.width - c) // 2, (hr.height - c) // 2)
    box = (*box, box[0] + c, box[1] + c)
    tiles = [("LR (nearest)", lr.resize(hr.size, Image.NEAREST).crop(box)),
             (f"bicubic {row['bicubic_psnr']:.2f}", bic.crop(box))]
    if model is not None:
        tiles.append((f"{model.spec.name} {row['sr_psnr']:.2f}", sr.crop(box)))
    tiles.append((path.stem[:18], hr.crop(box)))
    return [(label, t.resize((crop_side, crop_side), Image.NEAREST)) for label, t in tiles]


if __name__ == "__main__":
    main(get_args_parser().parse_args())
