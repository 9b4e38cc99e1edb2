"""A fair comparison of training methods: the same budget for all, a learning-rate sweep each, several seeds.

    python scripts/compare_methods.py --data-dir ../shared/data/cars_dev --output-dir runs/compare_cars_dev \
        --pretrained-path ../shared/data/weights/mobilenet_v2-b0353104.pth --lrs 0.003 0.01 0.03 --seeds 0 1
    python scripts/compare_methods.py --dataset sample --output-dir runs/compare_sample

Every run is ``python scripts/train.py`` in a subprocess with the same backbone, image size, epochs, batch,
augmentation, optimizer and cosine schedule; only the method's own flags and the learning rate differ. Each
method gets every learning rate of ``--lrs`` (or its own list, ``--method-lrs wsdan=0.001,0.003,0.01``) and
every seed (or, with ``--sweep-seeds N``, the sweep on the first N seeds and the other seeds at the method's best
rate from it: the same protocol for every method, at a fraction of the cost). Runs live in
OUTPUT/<method>/lr<lr>/seed<seed>/; a run whose metrics.csv already holds all epochs with the same settings
(checked against its args.json) is not repeated, so an interrupted sweep resumes; an unfinished run, or one made
with other settings, is trained again from the start (train.py --overwrite replaces its files).

Writes results.csv (one row per run), table.md (mean +- sd over seeds at each method's best learning rate,
and every learning rate's mean) and curves.png (test top-1 per epoch, mean over seeds, each method at its best
learning rate). "Best" is chosen by the mean *final* test top-1 over the seeds: there is no separate
validation split, so the choice is optimistic, for every method alike. A run that diverges (train.py's
divergence guard) counts as failed at that learning rate.

With ``--paired`` each run at its method's best learning rate is also evaluated photo by photo (its last.pt on
the test photos, as predict.py would): per_photo.csv (each photo's label and how many runs of each method got it
wrong) and a paired section in table.md: for each method against the first, seed by seed, the photos only one of
the two runs got right and the exact McNemar p-value, and over all seeds a sign test across photos. On a small test
set this separates a real difference from seed noise far better than two means and their spreads, and the photos
every run gets wrong (often mislabelled) show how much any method can still gain.

Methods: ``baseline`` (backbone + global pooling + linear), ``wsdan`` (train.py's WS-DAN defaults),
``wsdan+cal``; more with ``--define NAME="train.py flags"``. Datasets: ``--data-dir`` (train/ and test/ class
folders, used as they are), ``--dataset sample`` (the built-in synthetic set, random initialisation, with the
fraction of inference crops that hold the badge), or ``--dataset cars`` (a folder of class folders, split once
per class into OUTPUT/data).
"""

from __future__ import annotations

import argparse
import math
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

TRAIN = Path(__file__).resolve().with_name("train.py")
METHODS = {"baseline": "--method baseline", "wsdan": "--method wsdan", "wsdan+cal": "--method wsdan --cal"}
# train.py flags that do not change the result: ignored when deciding whether a finished run can be reused
NEUTRAL = {"--save-dir", "--workers", "--no-progress", "--progress", "--device", "--save-freq", "--data-dir",
           "--overwrite", "--report", "--no-report"}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Baseline vs WS-DAN (vs CAL...): same budget, lr sweep, several seeds",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", default=None, help="a dataset with train/<class>/ and test/<class>/")
    p.add_argument("--dataset", choices=["sample", "cars"], default=None,
                   help="instead of --data-dir: the synthetic sample set, or --cars-dir split per class")
    p.add_argument("--output-dir", "--od", required=True)
    p.add_argument("--cars-dir", default=str(TRAIN.parents[2] / "shared" / "data" / "cars"),
                   help="--dataset cars: a folder of class folders")
    p.add_argument("--train-per-class", type=int, default=15)
    p.add_argument("--test-per-class", type=int, default=5)
    p.add_argument("--methods", nargs="+", default=list(METHODS), help=f"of {list(METHODS)} and --define's")
    p.add_argument("--define", action="append", default=[], metavar='NAME="FLAGS"',
                   help='add a method: its name and train.py flags, '
                        'e.g. wsdan_m32="--method wsdan --num-attentions 32"')
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--sweep-seeds", type=int, default=None, metavar="N",
                   help="sweep the learning rates on the first N seeds only; the other seeds run at each method's "
                        "best rate from that sweep (default: every seed at every rate)")
    p.add_argument("--lrs", type=float, nargs="+", default=None,
                   help="learning rates every method is tried at; default 0.003 0.01 0.03 (pretrained), "
                        "0.01 0.03 0.1 (sample)")
    p.add_argument("--lr", type=float, default=None, help="a single learning rate (the same as --lrs LR)")
    p.add_argument("--method-lrs", action="append", default=[], metavar="NAME=LR,LR,...",
                   help="a method's own learning rates, instead of --lrs")
    p.add_argument("-m", "--model", default=None, help="backbone (default: tiny for sample, mobilenet_v2 otherwise)")
    p.add_argument("--image-size", type=int, default=None, help="default: 112 for sample, 224 otherwise")
    p.add_argument("--num-attentions", type=int, default=None, help="WS-DAN's M; default train.py's")
    p.add_argument("-e", "--epochs", type=int, default=8)
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--augment", default=None, help="train.py --augment, the same for every method; default train.py's")
    p.add_argument("--pretrained-path", default=None, help="local ImageNet weights (offline)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights (--dataset sample: always random initialisation)")
    p.add_argument("-j", "--workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--dry-run", action="store_true", help="print the train.py commands, run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: tabulate the finished (and diverged) runs among those asked for")
    p.add_argument("--paired", action="store_true",
                   help="also evaluate each best-rate run's last.pt photo by photo: per_photo.csv and a paired "
                        "test (exact McNemar per seed, a sign test over seeds) against the first method")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more train.py flags, passed to every run")
    return p


def _split_cars(src: Path, dst: Path, train_per_class: int, test_per_class: int, seed: int = 0) -> Path:
    """Copy a class-folder dataset into dst/train and dst/test, the same split every time (seeded per class)."""
    import random
    import shutil

    from ws_dan.common.images import find_images

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

    from ws_dan.common.images import open_image
    from ws_dan.common.io import read_csv_rows
    from ws_dan.data.datasets import build_transform
    from ws_dan.models.attention import attention_crop_boxes, normalized_attention
    from ws_dan.models.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(ckpt)
    cfg = model.config
    transform = build_transform(cfg.load_size, cfg.mean, cfg.std, train=False)
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


def parse_flags(argv: list[str]) -> dict[str, list[str]]:
    """``["--lr", "0.01", "--cal", "--crop-theta", "0.3", "0.5"]`` -> {"--lr": ["0.01"], "--cal": [], ...}."""
    flags: dict[str, list[str]] = {}
    key = None
    for token in argv:
        if token.startswith("--") and not _is_number(token):
            key = token
            flags[key] = []
        elif key is not None:
            flags[key].append(token)
    return flags


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _same(value, wanted: list[str]) -> bool:
    """Does an args.json value equal the flag's value(s) as given on the command line?"""
    if not wanted:  # a switch: --cal -> True, --no-pretrained -> (checked by the caller as False)
        return value is True
    if isinstance(value, list):
        return len(value) == len(wanted) and all(_same(v, [w]) for v, w in zip(value, wanted))
    if len(wanted) != 1:
        return False
    try:
        return math.isclose(float(value), float(wanted[0]), rel_tol=1e-9)
    except (TypeError, ValueError):
        return str(value) == wanted[0]


def run_is_complete(run_dir: Path, argv: list[str], epochs: int) -> bool:
    """True when run_dir holds a finished run (``epochs`` rows in metrics.csv) made with the same settings as
    ``argv`` (every result-affecting flag matches args.json), so it need not be repeated."""
    import json

    from ws_dan.common.io import read_csv_rows

    try:
        rows = read_csv_rows(run_dir / "metrics.csv")
        saved = json.loads((run_dir / "args.json").read_text())
    except (OSError, ValueError):
        return False
    if len(rows) != epochs or int(rows[-1]["epoch"]) != epochs:
        return False
    for flag, values in parse_flags(argv).items():
        if flag in NEUTRAL:
            continue
        if flag.startswith("--no-") and not values:
            if saved.get(flag[5:].replace("-", "_"), None) is not False:
                return False
            continue
        if not _same(saved.get(flag[2:].replace("-", "_")), values):
            return False
    return True


def _diverged_before(run_dir: Path, argv: list[str]) -> str:
    """The error line of an earlier run in run_dir that diverged with the same flags, else ''."""
    import json

    try:
        saved = json.loads((run_dir / "diverged.json").read_text())
    except (OSError, ValueError):
        return ""
    return saved.get("error", "") if saved.get("argv") == argv else ""


def _lr_label(lr: float) -> str:
    return f"lr{lr:g}"


def _read_run(run_dir: Path) -> dict:
    from ws_dan.common.io import read_csv_rows

    rows = read_csv_rows(run_dir / "metrics.csv")
    top1 = [float(r["val_top1"]) for r in rows]
    best = max(range(len(top1)), key=lambda i: top1[i])
    return {"test_top1": top1[-1], "best_test_top1": top1[best], "best_epoch": best + 1,
            "minutes": round(sum(float(r["seconds"]) for r in rows) / 60, 1), "curve": top1}


def photo_predictions(ckpt: Path, test_dir: Path, device: str = "auto", workers: int = 0,
                      batch_size: int = 32) -> dict[str, tuple[str, str]]:
    """``{photo path relative to test_dir: (label, predicted class)}`` for every readable photo of the
    ``test_dir/<class>/`` folders, by the checkpoint's inference (WS-DAN: raw + attention crop, averaged), with
    the evaluation transform train.py validates with: the same numbers as the run's last validation."""
    from ws_dan.common.runtime import resolve_device
    from ws_dan.data.datasets import ImageDataset, build_transform, class_folder_samples, make_loader
    from ws_dan.evaluation.inference import predict
    from ws_dan.models.checkpoint import model_from_checkpoint

    dev = resolve_device(device)
    model = model_from_checkpoint(ckpt, dev)
    cfg = model.config
    found = class_folder_samples(test_dir, class_names=cfg.class_names, allow_empty_classes=True)
    transform = build_transform(cfg.load_size, cfg.mean, cfg.std, False, interpolation=cfg.resize_interpolation)
    dataset = ImageDataset(found.samples, transform)
    result = predict(model, make_loader(dataset, batch_size, workers, train=False), dev, progress=False)
    names = cfg.class_names
    return {Path(dataset.samples[i][0]).relative_to(test_dir).as_posix(): (names[t], names[p])
            for i, t, p in zip(result.indices, result.targets, result.probabilities.argmax(axis=1))}


def hardest_sheet(rows: list[dict], test_dir: Path, path: Path, limit: int = 12) -> Optional[Path]:
    """A contact sheet of the ``limit`` photos most runs got wrong (``paired_report``'s rows, hardest first): each
    captioned with its label, how many of all the runs got it wrong and the first method's most common wrong answer
    (per method: per_photo.csv). None when no run erred."""
    from ws_dan.common.contact_sheet import contact_sheet
    from ws_dan.evaluation.comparison import hardest

    tiles = [(test_dir / image, caption) for image, caption in hardest(rows, limit)]
    return contact_sheet([tiles[i:i + 4] for i in range(0, len(tiles), 4)], path, thumb=160, caption_lines=3,
                         chars=28)


def paired_section(best: dict, methods: list[str], out: Path, test_dir: Path, device: str, workers: int
                   ) -> list[str]:
    """``--paired``: every run at each method's best rate (``summarize``'s ``best``) photo by photo; writes
    per_photo.csv and hardest.png in ``out`` and returns the lines for table.md (none when no run finished)."""
    from ws_dan.common.io import write_csv
    from ws_dan.evaluation.comparison import paired_report

    photos = {}
    for method in methods:
        for r in best.get(method, {}).get("runs", []):
            run_dir = out / method / _lr_label(r["lr"]) / f"seed{r['seed']}"
            photos[(method, r["seed"])] = pred = photo_predictions(run_dir / "last.pt", test_dir, device, workers)
            top1 = 100 * statistics.mean(label == got for label, got in pred.values())
            print(f"== {method} lr {r['lr']:g} seed {r['seed']}: {top1:.2f}% photo by photo "
                  f"(metrics.csv: {r['test_top1']:.2f}%)", flush=True)
    if not photos:
        return []
    rows, lines = paired_report(photos, [m for m in methods if any(k[0] == m for k in photos)])
    write_csv(out / "per_photo.csv", rows)
    hardest_sheet(rows, test_dir, out / "hardest.png")
    return ["", *lines, "", "The photos most runs got wrong, with their most common wrong answer: hardest.png (check "
            "them by eye: a photo no run gets right is often mislabelled)."]


@dataclass
class Plan:
    """What every run of the comparison shares, from the flags: the methods' train.py flags, the data, the budget."""

    methods: dict[str, str]  # name -> its train.py flags
    data: Path
    sample: bool  # the synthetic set: random initialisation, and the badge columns
    backbone: str
    size: int
    default_lrs: list[float]
    method_lrs: dict[str, list[float]]
    common: list[str]  # the train.py flags of every run
    sweep_seeds: list[int]

    def lrs(self, method: str) -> list[float]:
        return self.method_lrs.get(method, self.default_lrs)


def main(args: argparse.Namespace) -> list[dict]:
    methods = _method_flags(args)  # the built-in methods and --define's; --methods checked
    out = Path(args.output_dir)
    data = _dataset(args, out)  # --data-dir, or the sample / cars set made in OUTPUT/data
    plan = _plan(args, methods, data)  # backbone, size, learning rates, the train.py flags every run shares
    results = _sweep(args, plan, out)  # every run: trained, reused, or remembered as diverged
    if args.dry_run:
        return []
    _report(args, plan, results, out)  # table.md, curves.png; with --paired per_photo.csv and hardest.png
    return results


def _method_flags(args: argparse.Namespace) -> dict[str, str]:
    from ws_dan.common.runtime import fail

    methods = dict(METHODS)
    for spec in args.define:
        name, sep, flags = spec.partition("=")
        if not sep or not name.strip():
            fail(f'--define {spec!r}: expected NAME="train.py flags"')
        methods[name.strip()] = flags
    unknown = [m for m in args.methods if m not in methods]
    if unknown:
        fail(f"--methods {' '.join(unknown)}: unknown; choose from {', '.join(methods)} or add one with --define")
    return methods


def _dataset(args: argparse.Namespace, out: Path) -> Path:
    from ws_dan.common.runtime import fail

    if args.data_dir:
        data = Path(args.data_dir)
        if not (data / "train").is_dir() or not (data / "test").is_dir():
            fail(f"--data-dir {data}: expected train/<class>/ and test/<class>/ folders")
        return data
    if args.dataset == "sample":
        from data_tools.synthetic import make_sample_dataset

        data = out / "data"
        if not (data / "boxes.csv").is_file() and not args.dry_run:
            make_sample_dataset(data, seed=0, overwrite=True)
        return data
    if args.dataset == "cars":
        if not args.cars_dir or not Path(args.cars_dir).is_dir():
            fail(f"--cars-dir {args.cars_dir}: expected a folder of class folders")
        return _split_cars(Path(args.cars_dir), out / "data", args.train_per_class, args.test_per_class)
    fail("give --data-dir DIR (train/ and test/ class folders) or --dataset sample|cars")


def _plan(args: argparse.Namespace, methods: dict[str, str], data: Path) -> Plan:
    from ws_dan.common.runtime import fail

    sample = args.dataset == "sample"
    backbone = args.model or ("tiny" if sample else "mobilenet_v2")
    size = args.image_size or (112 if sample else 224)
    default_lrs = [args.lr] if args.lr else (args.lrs or ([0.01, 0.03, 0.1] if sample else [0.003, 0.01, 0.03]))
    method_lrs = {}
    for spec in args.method_lrs:
        name, sep, values = spec.partition("=")
        try:
            method_lrs[name] = [float(v) for v in values.split(",")]
        except ValueError:
            fail(f"--method-lrs {spec!r}: expected NAME=LR,LR,... (numbers)")
        if not sep or name not in methods:
            fail(f"--method-lrs {spec!r}: expected NAME=LR,LR,... with NAME one of {', '.join(methods)}")
    weights = (["--no-pretrained"] if sample or not args.pretrained else
               ["--pretrained-path", args.pretrained_path] if args.pretrained_path else ["--pretrained"])
    common = ["--data-dir", str(data), "--model", backbone, "--image-size", str(size), "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size), "--lr-scheduler", "cosine", "--workers", str(args.workers),
              "--save-freq", "0", "--no-progress", "--no-report", "--device", args.device, *weights]
    if args.num_attentions:
        common += ["--num-attentions", str(args.num_attentions)]
    if args.augment:
        common += ["--augment", args.augment]
    # The sweep: every learning rate on the first --sweep-seeds seeds (all of them by default); the other seeds
    # only at the learning rate the sweep found best for that method, which is what they are there to confirm.
    sweep_seeds = args.seeds[:args.sweep_seeds] if args.sweep_seeds else args.seeds
    return Plan(methods, data, sample, backbone, size, default_lrs, method_lrs, common, sweep_seeds)


def _sweep(args: argparse.Namespace, plan: Plan, out: Path) -> list[dict]:
    """Every method at every learning rate on the sweep's seeds, then its other seeds at its best rate."""
    from ws_dan.evaluation.comparison import summarize

    results: list[dict] = []
    out.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        for lr in plan.lrs(method):
            for seed in plan.sweep_seeds:
                _run(args, plan, out, results, method, lr, seed)
        rest = [s for s in args.seeds if s not in plan.sweep_seeds]
        if rest and not args.dry_run:
            found, _ = summarize([r for r in results if r["method"] == method], [method], plan.sweep_seeds)
            if method not in found or not found[method]["runs"]:
                print(f"== {method}: no learning rate finished its sweep; seeds {rest} not run", flush=True)
                continue
            lr = found[method]["lr"]
            print(f"== {method}: best learning rate on seed(s) {plan.sweep_seeds}: {lr:g}; seeds {rest} there",
                  flush=True)
            for seed in rest:
                _run(args, plan, out, results, method, lr, seed)
        elif rest:
            print(f"# {method}: seeds {rest} at the best of these learning rates, once the sweep has run")
    return results


def _run(args: argparse.Namespace, plan: Plan, out: Path, results: list[dict], method: str, lr: float,
         seed: int) -> None:
    """Train (or reuse) one run and add its row to ``results`` and results.csv (with --dry-run: print its
    command)."""
    from ws_dan.common.io import write_csv

    run_dir = out / method / _lr_label(lr) / f"seed{seed}"
    argv = ["--save-dir", str(run_dir), *plan.common, "--lr", f"{lr:g}", "--seed", str(seed),
            *shlex.split(plan.methods[method]), *args.extra]
    command = [sys.executable, str(TRAIN), *argv]
    result = {"method": method, "lr": lr, "seed": seed, "status": "ok", "error": ""}
    if args.dry_run:
        print(shlex.join(command))
        return
    diverged = _diverged_before(run_dir, argv)
    if diverged:
        result.update(status="diverged", error=diverged)
        print(f"== {method} lr {lr:g} seed {seed}: diverged before with these settings: {diverged}")
    elif run_is_complete(run_dir, argv, args.epochs):
        print(f"== {method} lr {lr:g} seed {seed}: done before, reusing {run_dir}", flush=True)
    elif args.report_only:
        print(f"== {method} lr {lr:g} seed {seed}: not run (--report-only)", flush=True)
        return
    else:
        result.update(_train(run_dir, argv, command, f"{method} lr {lr:g} seed {seed}"))
    if result["status"] == "ok":
        result.update(_read_run(run_dir))
        if plan.sample:
            detail = attention_on_detail(run_dir / "last.pt", plan.data)
            result.update({k: round(v, 3) for k, v in detail.items()})
    results.append(result)
    write_csv(out / "results.csv", [{k: v for k, v in r.items() if k != "curve"} for r in results],
              fieldnames=sorted({k for r in results for k in r if k != "curve"}, key=_column_order))


def _train(run_dir: Path, argv: list[str], command: list[str], what: str) -> dict:
    """Run train.py in a subprocess (``what``: the run, for the log line); ``{}`` when it finished, else the status
    ("diverged" or "failed") and its last error line. A divergence is deterministic: remembered in diverged.json,
    so it is not run again."""
    from ws_dan.common.io import write_json
    from ws_dan.common.run_dir import existing_run_files

    if existing_run_files(run_dir):  # unfinished, or other settings: train.py refuses a used
        command.append("--overwrite")  # folder without it; the old run's files are replaced
    print(f"== {what}: {shlex.join(command)}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "diverged.json").unlink(missing_ok=True)  # an earlier run's, with other settings
    start = time.time()
    with open(run_dir / "stderr.log", "w") as err:
        code = subprocess.call(command, stderr=err)
    outcome = {}
    if code != 0:
        lines = (run_dir / "stderr.log").read_text().strip().splitlines()
        message = lines[-1] if lines else f"exit code {code}"
        outcome = {"status": "diverged" if "diverged" in message else "failed", "error": message}
        if outcome["status"] == "diverged":
            write_json(run_dir / "diverged.json", {"argv": argv, "error": message})
        print(f"   {outcome['status']}: {message}", flush=True)
    print(f"   {time.time() - start:.0f} s", flush=True)
    return outcome


def _report(args: argparse.Namespace, plan: Plan, results: list[dict], out: Path) -> None:
    """table.md (printed too) and curves.png; with --paired the photo-by-photo section, per_photo.csv and
    hardest.png."""
    from ws_dan.common.io import atomic_write
    from ws_dan.evaluation.comparison import best_table, mean_curves, summarize
    from ws_dan.evaluation.plots import plot_method_curves

    best, lr_lines = summarize(results, args.methods, plan.sweep_seeds)
    lines = [_header(args, plan), "",
             "Each method at its best learning rate, chosen by the mean final test top-1 over the sweep's seeds. "
             "There is no "
             "separate validation split, so this choice is optimistic, for every method alike.", "",
             *best_table(best, args.methods, badge_column=plan.sample),
             "", "Every learning rate (times are wall-clock on a shared machine: noisy):", "", *lr_lines]
    if args.paired:
        lines += paired_section(best, args.methods, out, plan.data / "test", args.device, args.workers)
    table = "\n".join(lines) + "\n"
    with atomic_write(out / "table.md", "w", encoding="utf-8") as f:
        f.write(table)
    curves = mean_curves(best, args.methods)
    if curves:
        plot_method_curves(curves, out / "curves.png", title=f"{plan.backbone} {plan.size} px, {args.epochs} epochs: "
                                                             "mean over seeds, each at its best lr")
    print("\n" + table)


def _header(args: argparse.Namespace, plan: Plan) -> str:
    """table.md's first line: the data, the budget every run had, and each method's flags."""
    return (f"{plan.data}: {plan.backbone} at {plan.size} px, {args.epochs} epochs, batch {args.batch_size}, "
            f"SGD + cosine, augment {args.augment or 'train.py default'}, seeds {', '.join(map(str, args.seeds))}"
            + (f" (every lr on seed(s) {', '.join(map(str, plan.sweep_seeds))}, the others at the best lr)"
               if plan.sweep_seeds != args.seeds else "") + ", "
            f"{'random init' if plan.sample else 'ImageNet init'}; method flags: "
            + "; ".join(f"{m} = `{plan.methods[m]}`" for m in args.methods))


def _column_order(key: str) -> int:
    order = ["method", "lr", "seed", "status", "test_top1", "best_test_top1", "best_epoch", "minutes", "error"]
    return order.index(key) if key in order else len(order)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
