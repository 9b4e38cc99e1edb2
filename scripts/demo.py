"""The demo behind `make demo`: sample data -> WS-DAN training on the CPU -> prediction -> a short summary.

    python scripts/demo.py --output-dir demo_output [--pretrained-path mobilenet_v2-b0353104.pth]

It fine-tunes torchvision's MobileNetV2 from ImageNet weights (downloaded and cached by torchvision, or the
local file given) on the built-in synthetic dataset, whose 5 classes differ only by a small badge. Without
the weights (offline, no file) it says so and trains from random initialisation, which learns far less in
the same time. Each step prints the equivalent command line, so the demo doubles as a tutorial.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from ws_dan.common.cli_types import nonneg_int, positive_int

SCRIPTS = Path(__file__).resolve().parent


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train and evaluate WS-DAN on the built-in sample dataset (CPU demo)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--output-dir", "--od", default="demo_output", help="data, run and predictions go here")
    p.add_argument("--pretrained-path", default=None, help="local ImageNet MobileNetV2 weights (offline machines)")
    p.add_argument("--train-per-class", type=positive_int, default=80, help="sample images per class for training")
    p.add_argument("--test-per-class", type=positive_int, default=20, help="sample images per class for testing")
    p.add_argument("-e", "--epochs", type=positive_int, default=6)
    p.add_argument("-b", "--batch-size", type=positive_int, default=16)
    p.add_argument("--image-size", type=positive_int, default=112)
    p.add_argument("-j", "--workers", type=nonneg_int, default=2)
    p.add_argument("--seed", type=int, default=0)
    return p


def _run_script(name: str, argv: list[str]) -> None:
    """scripts/<name>.py as its own process (a script does not import another), shown as the command a user would
    type; its exit status ends the demo when it fails (130 after Ctrl-C, its own message already printed)."""
    from ws_dan.common.runtime import fail

    print(f"\n$ python scripts/{name}.py {shlex.join(argv)}", flush=True)
    with subprocess.Popen([sys.executable, str(SCRIPTS / f"{name}.py"), *argv]) as child:
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                # The terminal sent Ctrl-C to the child too: let it finish its checkpoint and exit (130) rather
                # than kill it mid-write, as subprocess.run would after a quarter of a second.
                continue
    if code == 130:
        raise SystemExit(130)
    if code != 0:
        fail(f"scripts/{name}.py stopped with exit status {code} (its message is above)", code=code)


def main(args: argparse.Namespace) -> dict:
    from data_tools.synthetic import make_sample_dataset
    from ws_dan.models.backbones import PretrainedWeightsError, create_backbone

    out = Path(args.output_dir)
    data_dir, run_dir, pred_dir = out / "data", out / "run", out / "predictions"
    start = time.time()

    print(f"$ python scripts/make_sample_data.py --output-dir {data_dir} --train-per-class {args.train_per_class} "
          f"--test-per-class {args.test_per_class} --seed {args.seed} --overwrite")
    sample = make_sample_dataset(data_dir, train_per_class=args.train_per_class, test_per_class=args.test_per_class,
                                 seed=args.seed, overwrite=True)
    chance = 100.0 / len(sample.class_names)
    print(f"{sample.num_train} training and {sample.num_test} test images, {len(sample.class_names)} classes "
          f"that differ only by a small badge: {', '.join(sample.class_names)}")

    weights = ["--pretrained-path", args.pretrained_path] if args.pretrained_path else ["--pretrained"]
    if not args.pretrained_path:
        try:
            create_backbone("mobilenet_v2", pretrained=True)  # fills torchvision's cache, or fails offline
        except PretrainedWeightsError as e:
            print(f"\nNOTE: {e}\nThe demo continues from RANDOM initialisation: expect an accuracy not far above "
                  f"chance ({chance:.0f}%). For the real demo on an offline machine: "
                  "make demo DEMO_WEIGHTS=path/to/mobilenet_v2-b0353104.pth\n")
            weights = ["--no-pretrained"]

    _run_script("train", ["--data-dir", str(data_dir), "--save-dir", str(run_dir), "--overwrite", "-m", "mobilenet_v2",
                          "--image-size", str(args.image_size), "-e", str(args.epochs), "-b", str(args.batch_size),
                          "-j", str(args.workers), "--seed", str(args.seed), "--sf", "0", "--device", "cpu",
                          *weights])
    _run_script("predict", ["--data-dir", str(data_dir / "test"), "--ckpt-path", str(run_dir / "best.pt"),
                            "--output-dir", str(pred_dir), "-j", str(args.workers), "--device", "cpu",
                            "--save-attention", "8", "--overwrite"])
    metrics = json.loads((pred_dir / "metrics.json").read_text(encoding="utf-8"))

    print("\n" + "=" * 72)
    print(f"WS-DAN demo finished in {time.time() - start:.0f} s "
          f"({'ImageNet MobileNetV2' if weights[0] != '--no-pretrained' else 'random init'}, {args.epochs} epochs)")
    print(f"  test top-1 accuracy: {metrics['top1']:.1f}%   (chance: {chance:.0f}%)   "
          f"macro F1: {metrics['f1_macro']:.3f}")
    print(f"  training run:   {run_dir}/  (best.pt, last.pt, metrics.csv, curves.png, train.log)")
    print(f"  predictions:    {pred_dir}/  (predictions.csv, probabilities.npy, metrics.json, per_class.csv, "
          "confusion_matrix.png, attention/)")
    print("=" * 72)
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
