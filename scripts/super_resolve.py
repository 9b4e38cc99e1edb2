"""Enlarge the small images of a folder with a DBPN super-resolution network.

    python scripts/super_resolve.py --data_dir photos/ --model_path checkpoints/DBPN_x4.pth --output-dir photos_sr/

Every image whose area (w x h) is below --max-area (default 128*256 = 32768, the reference project's trigger)
is enlarged --scale times; the others are copied unchanged; the folder tree is mirrored into --output-dir
(default: <data_dir>_sr beside it), with the same file names and formats. --in-place replaces the small
originals instead, each one atomically (a temporary file renamed over it): an interruption never leaves a
half-written image. Large images go through overlapping --tile x --tile tiles, so memory stays bounded.
Unreadable images are skipped and counted. --model_path takes the authors' published weights (DBPN_x4.pth,
DBPN-RES-MR64-3_4x.pth, DBPNLL_x4.pth...; variant and scale are read from the file) or a train_sr.py checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Super-resolve the small images of a folder tree with DBPN",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data_dir", "--data-dir", "--dd", dest="data_dir", required=True,
                   help="folder of images (searched recursively)")
    p.add_argument("--model_path", "--model-path", dest="model_path", required=True,
                   help="DBPN weights: a published .pth (e.g. DBPN_x4.pth) or a train_sr.py checkpoint")
    p.add_argument("--output-dir", "--output_dir", "--od", dest="output_dir", default=None,
                   help="mirror folder for the results; default <data_dir>_sr beside the input")
    p.add_argument("--in-place", "--in_place", dest="in_place", action="store_true",
                   help="replace the small originals by their enlargements (each file atomically)")
    p.add_argument("--max-area", "--max_area", dest="max_area", type=int, default=128 * 256,
                   help="enlarge images whose width x height is below this")
    p.add_argument("--scale", type=int, choices=[2, 4, 8], default=4, help="must match the weights file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--tile", type=int, default=256, help="tile side in input pixels (memory bound); 0: no tiling")
    p.add_argument("--overlap", type=int, default=16, help="context pixels around each tile")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(args: argparse.Namespace) -> dict:
    """Run; returns the summary (enlarged, copied, failed, not_images, seconds, failures, output_dir)."""
    from super_resolution.folder import check_not_output_of, super_resolve_folder
    from super_resolution.weights import SRWeightsError, load_sr_model
    from ws_dan.common.images import UnreadableImageError
    from ws_dan.common.io import InputError
    from ws_dan.common.runtime import fail, resolve_device, setup_logging

    log = setup_logging(None, args.verbose)
    src = Path(args.data_dir)
    if not src.is_dir():
        fail(f"{src}: expected a folder of images (--data_dir); it is not a folder")
    if args.in_place and args.output_dir:
        fail("--in-place and --output-dir exclude each other: either overwrite the originals or write a copy")
    if args.max_area < 0:
        fail(f"--max-area must be >= 0, got {args.max_area}")
    if args.tile < 0 or (args.tile and args.tile <= 2 * args.overlap):
        fail(f"--tile ({args.tile}) must be 0 (no tiling) or larger than twice --overlap ({args.overlap})")
    dst = None if args.in_place else Path(args.output_dir) if args.output_dir else src.parent / f"{src.name}_sr"
    if dst is not None:
        try:  # before the model loads and before anything is written: the README's "never inside its input"
            check_not_output_of(dst, src)
        except InputError as e:
            fail(str(e))
    try:
        device = resolve_device(args.device)
        model, scale = load_sr_model(args.model_path, device, scale=args.scale)
    except (SRWeightsError, RuntimeError) as e:
        fail(str(e))
    log.info("%s %dx on %s: enlarging images under %d pixels in %s -> %s", model.spec.name, scale, device,
             args.max_area, src, "in place" if args.in_place else dst)
    try:
        summary = super_resolve_folder(src, dst, model, scale, max_area=args.max_area, tile=args.tile,
                                       overlap=args.overlap, device=device, in_place=args.in_place,
                                       strict=args.strict, progress=args.progress)
    except UnreadableImageError as e:
        fail(f"{e} (--strict: fix or remove this file, or run without --strict to skip it)")
    except InputError as e:
        fail(str(e))
    except OSError as e:
        fail(f"could not write the output: {e}")
    out = summary.as_dict()
    out["output_dir"] = str(src if args.in_place else dst)
    log.info("enlarged %d, copied unchanged %d, failed %d (unreadable or not written), not images %d; %.1f s",
             summary.enlarged, summary.copied, summary.failed, summary.not_images, summary.seconds)
    for path, reason in summary.failures[:10]:
        log.info("  failed: %s: %s", path, reason)
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
