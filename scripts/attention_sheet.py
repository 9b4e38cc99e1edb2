"""Where does a trained WS-DAN look? A contact sheet of test photos with their mean attention maps and inference
crops, and how often that crop keeps the vehicle rather than background.

    python scripts/attention_sheet.py -c runs/x/last.pt --data-dir ../shared/data/cars_dev/test \
        --judge-weights ../shared/data/weights/mobilenet_v2-b0353104.pth --output docs/attention_cars_dev.png

The judge is an independent ImageNet MobileNetV2 (ws_dan.evaluation.attention_check): a crop keeps the vehicle when
one of its top-5 ImageNet classes is a vehicle or a vehicle part. The same-size box at the image centre and at a random
place are the controls. Writes the PNG and, next to it, a JSON of the fractions.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Attention contact sheet and crop-keeps-the-vehicle fraction",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("-c", "--ckpt", required=True, help="a WS-DAN checkpoint (train.py's last.pt or best.pt)")
    p.add_argument("--data-dir", "--dd", required=True, help="class folders of test photos (e.g. cars_dev/test)")
    p.add_argument("--judge-weights", required=True, help="torchvision ImageNet MobileNetV2 weights file")
    p.add_argument("--output", "-o", default="docs/attention_cars_dev.png")
    p.add_argument("--tiles", type=int, default=24, help="photos on the sheet (spread over the classes)")
    p.add_argument("--cols", type=int, default=6)
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="for the random-box control")
    p.add_argument("--theta", type=float, default=None,
                   help="crop threshold for the check and the boxes drawn; default the model's inference crop "
                        "(eval_crop_theta, 0.1: on photos filled by the car that box is often the whole image, "
                        "so also try 0.5, the middle of the training crop's range)")
    p.add_argument("--judge-k", type=int, default=5,
                   help="a crop keeps a vehicle when one of the judge's top-k ImageNet classes is one (1: strict)")
    p.add_argument("--peak-area", type=float, default=None,
                   help="instead of a thresholded crop: a square box of this share of the image (e.g. 0.25) "
                        "centred on the attention peak, against same-size centre and random boxes")
    return p


#: The boxes judged: the attention crop and, as controls, a same-size box at the centre and at random, and the
#: whole image.
KEYS = ("crop", "center", "random", "whole")


def main(args: argparse.Namespace) -> dict:
    from ws_dan.common.io import write_json
    from ws_dan.common.runtime import fail

    if args.peak_area is not None and not 0 < args.peak_area <= 1:
        fail(f"--peak-area {args.peak_area}: expected a share of the image in (0, 1]")
    model, judge, vehicles, listing = _load(args)  # the WS-DAN model, the ImageNet judge, the test photos
    hits, area, n, tiles = _check_all(args, model, judge, vehicles, listing)  # every photo; tiles for the sheet
    if n == 0:
        fail(f"{args.data_dir}: no readable images")
    cfg = model.config
    theta = cfg.eval_crop_theta if args.theta is None else args.theta
    result = {"images": n, "checkpoint": str(args.ckpt), "theta": theta, "peak_area": args.peak_area,
              "judge_top_k": args.judge_k,
              "crop_area_mean": round(area / n, 4),
              **{f"{k}_keeps_vehicle": round(hits[k] / n, 4) for k in KEYS}}
    output = Path(args.output)
    _sheet(args, cfg, theta, result, tiles, output)
    write_json(output.with_suffix(".json"), result)
    print(result)
    return result


def _load(args: argparse.Namespace):
    from ws_dan.common.runtime import fail
    from ws_dan.data.datasets import DatasetError, class_folder_samples
    from ws_dan.evaluation.attention_check import imagenet_judge
    from ws_dan.models.backbones import PretrainedWeightsError
    from ws_dan.models.checkpoint import CheckpointError, model_from_checkpoint

    try:
        model = model_from_checkpoint(args.ckpt)
        judge, vehicles = imagenet_judge(args.judge_weights)
        listing = class_folder_samples(args.data_dir)
    except (CheckpointError, PretrainedWeightsError, DatasetError, FileNotFoundError) as e:
        fail(str(e))
    if model.config.method != "wsdan":
        fail(f"{args.ckpt}: a {model.config.method} checkpoint; the sheet needs a WS-DAN model (attention maps)")
    return model, judge, vehicles, listing


def _check_all(args: argparse.Namespace, model, judge, vehicles, listing):
    """Judge every photo's boxes in batches; returns the hits per box kind, the summed crop area, the number of
    photos and the sheet's tiles (photos spread evenly over the class-sorted list, so every class can appear)."""
    import torch
    from PIL import Image

    from ws_dan.common.images import open_image
    from ws_dan.data.datasets import build_transform
    from ws_dan.evaluation.attention_check import crop_check

    cfg = model.config
    transform = build_transform(cfg.load_size, cfg.mean, cfg.std, train=False)
    samples = listing.samples
    generator = torch.Generator().manual_seed(args.seed)
    hits = {k: 0 for k in KEYS}
    area, n = 0.0, 0
    step = max(1, len(samples) // max(args.tiles, 1))
    chosen = set(range(0, len(samples), step)[: args.tiles])
    tiles = []
    std = torch.tensor(cfg.std).view(3, 1, 1)
    mean = torch.tensor(cfg.mean).view(3, 1, 1)
    for start in range(0, len(samples), args.batch_size):
        chunk = samples[start:start + args.batch_size]
        x = torch.stack([transform(open_image(path)) for path, _ in chunk])
        out = crop_check(model, judge, vehicles, x, generator, theta=args.theta, peak_area=args.peak_area,
                         k=args.judge_k)
        for k in KEYS:
            hits[k] += int(out[k].sum())
        area += float(out["area"].sum())
        n += len(chunk)
        for i, (_, target) in enumerate(chunk):
            if start + i in chosen:
                pixels = ((x[i] * std + mean).clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype("uint8")
                caption = (f"{listing.class_names[target][:24]}\ncrop {'keeps car' if out['crop'][i] else 'NO car'}"
                           f", {float(out['area'][i]):.0%} of image")
                tiles.append((Image.fromarray(pixels), out["attention"][i, 0].numpy(), out["boxes"][i].tolist(),
                              caption))
    return hits, area, n, tiles


def _sheet(args: argparse.Namespace, cfg, theta: float, result: dict, tiles: list, output: Path) -> None:
    from ws_dan.evaluation.plots import save_contact_sheet

    what = (f"a {args.peak_area:.0%} box at its peak" if args.peak_area is not None else f"its crop at theta {theta:g}")
    n = result["images"]
    output.parent.mkdir(parents=True, exist_ok=True)
    save_contact_sheet(tiles, output, cols=args.cols,
                       title=f"{cfg.backbone}, M={cfg.num_attentions}: mean attention and {what} "
                             f"(white box, {result['crop_area_mean']:.0%} of the image on average);\n"
                             f"crop keeps a vehicle (judge's top-{args.judge_k}) in {result['crop_keeps_vehicle']:.0%} "
                             f"of {n} test photos "
                             f"(same-size centre box {result['center_keeps_vehicle']:.0%}, random box "
                             f"{result['random_keeps_vehicle']:.0%}, whole image {result['whole_keeps_vehicle']:.0%})")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
