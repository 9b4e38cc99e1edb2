"""Compare the baseline CNN, WS-DAN and WS-DAN + CAL with the same budget, over several seeds.

    python scripts/compare_methods.py --dataset sample --output-dir runs/compare_sample
    python scripts/compare_methods.py --dataset cars --cars-dir ../shared/data/cars \
        --pretrained-path ../shared/data/weights/mobilenet_v2-b0353104.pth --output-dir runs/compare_cars

Every run uses the same backbone, image size, epochs, batch size, optimizer and schedule; only the method
differs. The table reports the test top-1 after the last epoch (no model selection on the test split), as
mean and standard deviation over the seeds, and the mean training time. Writes results.csv and table.md.

Datasets: ``sample`` is the built-in synthetic set (classes differ only by a small badge), trained from random
initialisation; ``cars`` is a folder of class folders of real photos, split per class (``--train-per-class``
images for training, the rest, up to ``--test-per-class``, for test; the same split for every run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

METHODS = {"baseline": ["--method", "baseline"], "wsdan": ["--method", "wsdan"],
           "wsdan+cal": ["--method", "wsdan", "--cal"]}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Baseline vs WS-DAN vs WS-DAN+CAL, same budget, several seeds",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--dataset", choices=["sample", "cars"], required=True)
    p.add_argument("--output-dir", "--od", required=True)
    p.add_argument("--cars-dir", default=str(ROOT.parent / "shared" / "data" / "cars"),
                   help="--dataset cars: a folder of class folders")
    p.add_argument("--train-per-class", type=int, default=15)
    p.add_argument("--test-per-class", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("-m", "--model", default=None, help="backbone (default: tiny for sample, mobilenet_v2 for cars)")
    p.add_argument("--image-size", type=int, default=None, help="default: 112 for sample, 224 for cars")
    p.add_argument("--num-attentions", type=int, default=32)
    p.add_argument("-e", "--epochs", type=int, default=10)
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="default: 0.01 from random init, 0.001 fine-tuning")
    p.add_argument("--pretrained-path", default=None, help="ImageNet weights for --dataset cars")
    p.add_argument("-j", "--workers", type=int, default=2)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py flags, passed to every run")
    return p


def _split_cars(src: Path, dst: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """Copy a class-folder dataset into dst/train and dst/test, the same split every time (seeded per class)."""
    import random
    import shutil

    from ws_dan.images import find_images

    if (dst / "train").is_dir() and (dst / "test").is_dir():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for class_dir in sorted(p for p in src.iterdir() if p.is_dir()):
        images, _ = find_images(class_dir)
        images = sorted(images)
        random.Random(f"{seed}/{class_dir.name}").shuffle(images)
        for split, chosen in (("train", images[:train_per_class]),
                              ("test", images[train_per_class:train_per_class + test_per_class])):
            (tmp / split / class_dir.name).mkdir(parents=True, exist_ok=True)
            for path in chosen:
                shutil.copyfile(path, tmp / split / class_dir.name / path.name)
    tmp.rename(dst)
    return dst


def attention_on_detail(ckpt: Path, data: Path) -> dict:
    """Is the model looking at the badge? For the sample set's test images (boxes.csv gives the badge box):
    how often the inference crop box contains the badge's centre, the crop's share of the image area, and the
    mean normalised attention inside the badge box relative to the whole image (1 = no preference)."""
    import torch

    from ws_dan.images import open_image
    from ws_dan.attention import attention_crop_boxes, normalized_attention
    from ws_dan.checkpoint import model_from_checkpoint
    from ws_dan.data import build_transform
    from ws_dan.io import read_csv_rows

    model = model_from_checkpoint(ckpt)
    cfg = model.config
    transform = build_transform(cfg.image_size, cfg.mean, cfg.std, train=False)
    rows = [r for r in read_csv_rows(data / "boxes.csv") if r["split"] == "test"]
    hits, areas, ratios = [], [], []
    for start in range(0, len(rows), 32):
        chunk = rows[start:start + 32]
        images = [open_image(data / r["path"]) for r in chunk]
        x = torch.stack([transform(im) for im in images])
        _, attention = model.predict_logits(x)
        size = (cfg.image_size, cfg.image_size)
        boxes = attention_crop_boxes(attention, size, cfg.eval_crop_theta, cfg.eval_crop_padding, cfg.attention_norm)
        norm = normalized_attention(attention, size, cfg.attention_norm)[:, 0]
        for r, im, box, att in zip(chunk, images, boxes.tolist(), norm):
            sx, sy = cfg.image_size / im.width, cfg.image_size / im.height
            x0, y0, x1, y1 = (float(r["x0"]) * sx, float(r["y0"]) * sy, float(r["x1"]) * sx, float(r["y1"]) * sy)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            hits.append(box[0] <= cx < box[2] and box[1] <= cy < box[3])
            areas.append((box[2] - box[0]) * (box[3] - box[1]) / (cfg.image_size ** 2))
            inside = att[int(y0):max(int(y1), int(y0) + 1), int(x0):max(int(x1), int(x0) + 1)].mean()
            ratios.append(float(inside / att.mean().clamp_min(1e-12)))
    n = len(hits)
    return {"crop_hits_badge": sum(hits) / n, "crop_area": sum(areas) / n, "attention_ratio": sum(ratios) / n}


def main(args: argparse.Namespace) -> list[dict]:
    import statistics

    import train

    from data_tools.synthetic import make_sample_dataset
    from ws_dan.io import read_csv_rows, write_csv

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.dataset == "sample":
        data = out / "data"
        if not (data / "boxes.csv").is_file():
            make_sample_dataset(data, seed=0, overwrite=True)
        backbone, size, lr = args.model or "tiny", args.image_size or 112, args.lr or 0.01
        weights = ["--no-pretrained"]
    else:
        data = _split_cars(Path(args.cars_dir), out / "data", args.train_per_class, args.test_per_class)
        backbone, size, lr = args.model or "mobilenet_v2", args.image_size or 224, args.lr or 0.001
        weights = ["--pretrained-path", args.pretrained_path] if args.pretrained_path else ["--pretrained"]
    results = []
    for seed in args.seeds:
        for method in args.methods:
            run_dir = out / f"{method}_seed{seed}"
            argv = ["--data-dir", str(data), "--save-dir", str(run_dir), "-m", backbone, "--image-size", str(size),
                    "--num-attentions", str(args.num_attentions), "-e", str(args.epochs), "-b", str(args.batch_size),
                    "--lr", str(lr), "--lr-scheduler", "cosine", "--seed", str(seed), "-j", str(args.workers),
                    "--sf", "0", "--device", "cpu", "--no-progress", *weights, *METHODS[method], *args.extra]
            print(f"\n== {method}, seed {seed}: python scripts/train.py {' '.join(argv)}", flush=True)
            start = time.time()
            train.main(train.get_args_parser().parse_args(argv))
            rows = read_csv_rows(run_dir / "metrics.csv")
            result = {"method": method, "seed": seed, "test_top1": float(rows[-1]["val_top1"]),
                      "best_test_top1": max(float(r["val_top1"]) for r in rows),
                      "seconds": round(time.time() - start, 1)}
            if args.dataset == "sample":
                result.update({k: round(v, 3) for k, v in attention_on_detail(run_dir / "last.pt", data).items()})
            results.append(result)
            write_csv(out / "results.csv", results)

    sample = args.dataset == "sample"
    lines = [f"| method | test top-1 % (mean ± sd over seeds {', '.join(map(str, args.seeds))}) | "
             "best epoch's top-1 % | seconds per run |" + (" crop box holds the badge | crop area | attention "
                                                            "on badge / mean |" if sample else ""),
             "|---|---|---|---|" + ("---|---|---|" if sample else "")]
    for method in args.methods:
        rs = [r for r in results if r["method"] == method]
        acc = [r["test_top1"] for r in rs]
        best = [r["best_test_top1"] for r in rs]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        line = (f"| {method} | {statistics.mean(acc):.1f} ± {sd:.1f} | {statistics.mean(best):.1f} | "
                f"{statistics.mean(r['seconds'] for r in rs):.0f} |")
        if sample:
            line += (f" {statistics.mean(r['crop_hits_badge'] for r in rs):.0%} |"
                     f" {statistics.mean(r['crop_area'] for r in rs):.0%} |"
                     f" {statistics.mean(r['attention_ratio'] for r in rs):.1f} |")
        lines.append(line)
    header = (f"{args.dataset}: {backbone} at {size} px, {args.epochs} epochs, batch {args.batch_size}, SGD lr {lr} "
              f"cosine, M={args.num_attentions}, {'random init' if weights == ['--no-pretrained'] else 'ImageNet init'}")
    table = header + "\n\n" + "\n".join(lines) + "\n"
    (out / "table.md").write_text(table)
    print("\n" + table)
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
