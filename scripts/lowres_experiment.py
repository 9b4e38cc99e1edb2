"""The reference project's low-resolution experiment: how much accuracy small photos cost, and how much a
super-resolution network recovers.

    python scripts/lowres_experiment.py --data-dir my_cars/test --ckpt-path best.pt --sr-model DBPN_x4.pth \
        --output-dir runs/lowres

1. copies the labelled validation folder with every image's shortest side reduced to --size (128 px, area
   interpolation: scripts/downsample.py);
2. predicts the original images, the down-sampled copies, and the down-sampled copies with super-resolution
   in front of the classifier (predict.py --sr-model, images under --sr-max-area enlarged);
3. prints the three-row table (the reference project: 96.19% / 93.60% / 94.56%) and writes it to
   OUTPUT_DIR/lowres_table.md, with each run's predictions and metrics in its own folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Accuracy on original, down-sampled and super-resolved images",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True, help="labelled validation folder (one folder per class)")
    p.add_argument("--ckpt-path", "--cp", required=True, help="classifier checkpoint")
    p.add_argument("--sr-model", required=True, help="super-resolution weights (DBPN .pth or train_sr.py checkpoint)")
    p.add_argument("--output-dir", "--od", default="lowres_experiment")
    p.add_argument("--size", type=int, default=128, help="shortest side of the down-sampled copies")
    p.add_argument("--sr-max-area", type=int, default=128 * 256, help="images under this area are super-resolved")
    p.add_argument("--sr-tile", type=int, default=256)
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("-j", "--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true", help="redo the down-sampled copy")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    return p


def main(args: argparse.Namespace) -> list[dict]:
    from data_tools.downsample import downsample_dataset
    from ws_dan.common.io import InputError, atomic_write
    from ws_dan.common.runtime import fail

    out = Path(args.output_dir)
    small = out / f"downsampled_{args.size}"
    try:
        downsample_dataset(args.data_dir, small, size=args.size, workers=args.workers, progress=args.progress,
                           overwrite=args.overwrite)
    except InputError as e:
        fail(str(e))
    common = ["--ckpt-path", args.ckpt_path, "-b", str(args.batch_size), "-j", str(args.workers), "--device",
              args.device, "--csv-labels-path", "folder", "--progress" if args.progress else "--no-progress"]
    runs = [("original", args.data_dir, []), (f"down-sampled to {args.size} px", small, []),
            ("down-sampled + super-resolution", small,
             ["--sr-model", args.sr_model, "--sr-max-area", str(args.sr_max_area), "--sr-tile", str(args.sr_tile)])]
    rows = []
    for (name, data, extra), folder in zip(runs, ("pred_original", "pred_downsampled", "pred_super_resolved")):
        argv = ["--data-dir", str(data), "--output-dir", str(out / folder), *common, *extra]
        print(f"\n== {name}: python scripts/predict.py {' '.join(argv)}", flush=True)
        # predict.py in its own process (a script does not import another); its metrics.json is the result
        done = subprocess.run([sys.executable, str(SCRIPTS / "predict.py"), *argv])
        if done.returncode != 0:
            fail(f"scripts/predict.py stopped with exit status {done.returncode} on {data} (its message is above)",
                 code=done.returncode)
        metrics = json.loads((out / folder / "metrics.json").read_text(encoding="utf-8"))
        rows.append({"images": name, "top1": metrics["top1"], "top5": metrics["top5"], "f1": metrics["f1_macro"],
                     "n": metrics["num_images"], "enlarged": metrics.get("super_resolved_images", "")})
    lines = ["| validation images | top-1 % | top-5 % | macro F1 | images | super-resolved |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['images']} | {r['top1']:.2f} | {r['top5']:.2f} | {r['f1']:.4f} | {r['n']} | {r['enlarged']} |"
              for r in rows]
    table = (f"Classifier {args.ckpt_path}, super-resolution {args.sr_model}, validation {args.data_dir}\n\n"
             + "\n".join(lines) + "\n")
    with atomic_write(out / "lowres_table.md") as f:
        f.write(table)
    print("\n" + table)
    return rows


if __name__ == "__main__":
    main(get_args_parser().parse_args())
