"""Speed and memory of training and prediction, side by side in one run (tables, not timed tests).

    python scripts/benchmark.py -m mobilenet_v2 --image-size 224 -b 16              # CPU table in the README
    python scripts/benchmark.py -m efficientnet-b3 --image-size 512 -b 32 --device cuda --compile

Sections (each can be skipped):
1. steps: one WS-DAN training step (raw + crop + drop, backward, optimizer), three plain-classifier steps of the
   same backbone, batch and size (the irreducible cost of three views), and one prediction step (raw + crop), for
   each speed option: fp32, --amp (CUDA), channels-last, torch.compile (--compile). images/s and peak memory
   (CUDA: max allocated; CPU: the peak resident memory of a fresh process per variant, minus its memory before
   the models were built, so variants don't mask each other and the libraries' own memory is not counted).
   The WS-DAN overhead is step / (3 plain steps) - 1. With ``--detail-scales 2``, also the WS-DAN step on a
   detail copy (the batch at 2x the size, box-filtered to it for the network, crops cut from the copy) and its
   cost against the plain WS-DAN step.
2. crop: attention cropping of a batch as one grid_sample (this toolkit), one roi_align, and a per-image loop
   with F.interpolate and a host synchronisation per image (how earlier WS-DAN code did it).
3. loader: the DataLoader alone (decode, resize, augment) on a folder of photos, as they are and pre-resized with
   scripts/prepare_cache.py, images/s; and with the training transform at each detail copy's size.
Inputs for 1-2 are random tensors: speed does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the default --loader-dir is ../shared/data/cars beside the checkout

VARIANTS = ("fp32", "amp", "channels-last", "amp+channels-last", "compile")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark WS-DAN training, prediction, cropping and data loading",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("-m", "--model", default="mobilenet_v2", help="backbone")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--num-attentions", type=int, default=32)
    p.add_argument("--num-classes", type=int, default=196)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--variants", nargs="+", default=None, choices=VARIANTS,
                   help="speed options to compare (default: fp32 and channels-last on CPU; all but compile on CUDA, "
                        "plus compile with --compile)")
    p.add_argument("--compile", action="store_true", help="include the torch.compile variant")
    p.add_argument("--detail-scales", type=int, nargs="*", default=[2],
                   help="also time WS-DAN with a detail copy this many times --image-size (none: skip)")
    p.add_argument("--crop-batch", type=int, default=32)
    p.add_argument("--crop-size", type=int, default=448)
    p.add_argument("--loader-dir", default=str(ROOT.parent / "shared" / "data" / "cars"),
                   help="a folder of photos for the loader benchmark ('' to skip)")
    p.add_argument("-j", "--workers", type=int, default=2, help="loader processes")
    p.add_argument("--skip", nargs="*", default=[], choices=["steps", "crop", "loader"])
    p.add_argument("--output", default=None, help="also write the results as JSON here")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: measure one variant, print JSON
    return p


def measure_variant(args: argparse.Namespace, variant: str) -> dict:
    """images/s of a WS-DAN step, 3 plain steps and a prediction step, and peak memory, for one variant."""
    import torch

    from ws_dan.common.benchmark import current_rss_bytes, peak_rss_bytes, random_batch, time_per_call
    from ws_dan.common.runtime import amp_dtype, resolve_device
    from ws_dan.models.wsdan import ModelConfig, create_model
    from ws_dan.training.engine import StepConfig, baseline_step, train_step

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = current_rss_bytes() / 2 ** 20
    amp = amp_dtype("amp" in variant, device)
    channels_last = "channels-last" in variant
    torch.manual_seed(0)
    size, b = args.image_size, args.batch_size
    cfg = StepConfig()
    results = {"variant": variant, "amp": str(amp).replace("torch.", "") if amp else "-"}
    images, targets = random_batch(b, size, args.num_classes, device, channels_last)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    for method in ("wsdan", "baseline"):
        model = create_model(ModelConfig(backbone=args.model, method=method, num_classes=args.num_classes,
                                         num_attentions=args.num_attentions, image_size=size)).to(device)
        if channels_last:
            model.to(memory_format=torch.channels_last)
        forward = torch.compile(model) if variant == "compile" else model
        opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        model.train()
        if method == "wsdan":
            secs = time_per_call(lambda: train_step(forward, images, targets, opt, cfg, scaler, amp),  # noqa: B023
                                 device, args.steps, args.warmup)
            results["wsdan_train_img_s"] = b / secs
            model.eval()
            with torch.no_grad():
                def predict_step():
                    with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                        model.predict_logits(images)  # noqa: B023
                secs = time_per_call(predict_step, device, args.steps, args.warmup)
            results["predict_img_s"] = b / secs
            for k in args.detail_scales:
                results[f"wsdan_x{k}_train_img_s"] = _detail_step_speed(args, k, device, channels_last, amp)
        else:
            secs = time_per_call(lambda: baseline_step(forward, images, targets, opt, cfg, scaler, amp),  # noqa: B023
                                 device, args.steps, args.warmup)
            results["plain_train_img_s"] = b / secs
    # WS-DAN sees each image three times; three plain steps are the same amount of backbone work.
    results["wsdan_overhead"] = (results["plain_train_img_s"] / 3) / results["wsdan_train_img_s"] - 1
    if device.type == "cuda":
        results["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:  # peak resident memory of this process minus what it held before the models were built
        results["peak_mib"] = peak_rss_bytes() / 2 ** 20 - rss_before
    return results


def _detail_step_speed(args: argparse.Namespace, scale: int, device, channels_last: bool, amp) -> float:
    """images/s of a WS-DAN step on a batch with a detail copy ``scale`` x the input size."""
    import torch

    from ws_dan.common.benchmark import random_batch, time_per_call
    from ws_dan.models.wsdan import ModelConfig, create_model
    from ws_dan.training.engine import StepConfig, train_step

    torch.manual_seed(0)
    b = args.batch_size
    model = create_model(ModelConfig(backbone=args.model, num_classes=args.num_classes, detail_scale=scale,
                                     num_attentions=args.num_attentions, image_size=args.image_size)).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    images, targets = random_batch(b, args.image_size * scale, args.num_classes, device, channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    secs = time_per_call(lambda: train_step(model, images, targets, opt, StepConfig(), scaler, amp), device,
                         args.steps, args.warmup)
    return b / secs


def bench_steps(args: argparse.Namespace, device) -> list[dict]:
    if args.variants:
        variants = list(args.variants)
    elif device.type == "cuda":
        variants = ["fp32", "amp", "channels-last", "amp+channels-last"] + (["compile"] if args.compile else [])
    else:
        variants = ["fp32", "channels-last"] + (["compile"] if args.compile else [])
    rows = []
    for variant in variants:
        if device.type == "cuda":
            rows.append(measure_variant(args, variant))
        else:  # a fresh process per variant, so its peak resident memory is its own
            argv = [a for a in sys.argv[1:]]
            out = subprocess.run([sys.executable, __file__, *argv, "--one", variant], capture_output=True, text=True)
            if out.returncode != 0:
                raise RuntimeError(f"variant {variant} failed:\n{out.stderr[-2000:]}")
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def bench_crop(args: argparse.Namespace, device) -> list[dict]:
    """Batched grid_sample vs roi_align vs a per-image F.interpolate loop, same boxes, same output size."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    from ws_dan.common.benchmark import time_per_call
    from ws_dan.models.attention import attention_crop_boxes, crop_and_resize

    torch.manual_seed(0)
    b, s = args.crop_batch, args.crop_size
    images = torch.randn(b, 3, s, s, device=device)
    maps = torch.rand(b, 1, s // 32, s // 32, device=device) ** 4

    def batched():
        return crop_and_resize(images, attention_crop_boxes(maps, (s, s), 0.5, 0.1))

    def with_roi_align():
        boxes = attention_crop_boxes(maps, (s, s), 0.5, 0.1)
        rois = torch.cat([torch.arange(b, device=device, dtype=boxes.dtype).unsqueeze(1), boxes], dim=1)
        return roi_align(images, rois, (s, s), spatial_scale=1.0, sampling_ratio=1, aligned=True)

    def per_image_loop():  # WS-DAN.PyTorch's batch_augment: a nonzero() and .item() per image
        out = []
        for i in range(b):
            mask = F.interpolate(maps[i:i + 1], size=(s, s), mode="bilinear", align_corners=False)
            mask = mask > 0.5 * mask.max()
            nz = torch.nonzero(mask[0, 0])
            y0, y1 = max(int(nz[:, 0].min().item() - 0.1 * s), 0), min(int(nz[:, 0].max().item() + 0.1 * s), s)
            x0, x1 = max(int(nz[:, 1].min().item() - 0.1 * s), 0), min(int(nz[:, 1].max().item() + 0.1 * s), s)
            out.append(F.interpolate(images[i:i + 1, :, y0:y1, x0:x1], size=(s, s), mode="bilinear",
                                     align_corners=False))
        return torch.cat(out)

    rows = []
    for name, fn in (("batched grid_sample (this toolkit)", batched), ("batched roi_align", with_roi_align),
                     ("per-image loop, F.interpolate", per_image_loop)):
        secs = time_per_call(fn, device, max(args.steps, 3), 1)
        rows.append({"method": name, "ms": secs * 1000})
    base = rows[0]["ms"]
    for r in rows:
        r["relative"] = r["ms"] / base
    return rows


def bench_loader(args: argparse.Namespace) -> list[dict]:
    """images/s of the training DataLoader on photos as they are and pre-resized to the training size."""
    import shutil
    import tempfile

    from data_tools.downsample import downsample_dataset
    from ws_dan.data.augment import build_train_transform
    from ws_dan.data.datasets import ImageDataset, make_loader, unlabeled_samples

    src = Path(args.loader_dir)
    if not src.is_dir():
        return []
    tmp = Path(tempfile.mkdtemp(prefix="wsdan_cache_"))
    try:
        start = time.perf_counter()
        downsample_dataset(src, tmp / "cache", size=args.image_size, workers=args.workers)
        cache_secs = time.perf_counter() - start
        rows = []
        runs = [("original photos", src, args.image_size),
                (f"cache (shortest side {args.image_size})", tmp / "cache", args.image_size)]
        runs += [(f"original photos, detail copy {args.image_size * k} px", src, args.image_size * k)
                 for k in args.detail_scales]
        for name, folder, size in runs:
            samples = unlabeled_samples(folder).samples
            transform = build_train_transform(size, (0.5,) * 3, (0.25,) * 3)
            loader = make_loader(ImageDataset(samples, transform), args.batch_size, args.workers, train=True)
            for _ in range(2):  # the first pass warms the page cache and the workers
                start = time.perf_counter()
                n = sum(len(batch.images) for batch in loader)
                secs = time.perf_counter() - start
            rows.append({"data": name, "images": n, "img_s": n / secs})
        rows.append({"data": f"building the cache ({len(samples)} images)", "images": len(samples),
                     "img_s": len(samples) / cache_secs})
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(args: argparse.Namespace) -> dict:
    import platform

    import torch

    from ws_dan.common.benchmark import markdown_table as _table
    from ws_dan.common.runtime import resolve_device

    if args.one:
        print(json.dumps(measure_variant(args, args.one)))
        return {}
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    print(f"# benchmark on {name}, torch {torch.__version__}: {args.model} at {args.image_size} px, batch "
          f"{args.batch_size}, M={args.num_attentions}, {args.num_classes} classes\n")
    results: dict = {"device": name, "model": args.model, "image_size": args.image_size, "batch": args.batch_size}
    if "steps" not in args.skip:
        rows = bench_steps(args, device)
        results["steps"] = rows
        columns = [("variant", "variant", ""), ("wsdan_train_img_s", "WS-DAN train img/s", ".1f"),
                   ("plain_train_img_s", "plain train img/s", ".1f"), ("wsdan_overhead",
                   "WS-DAN vs 3 plain steps", "+.0%"), ("predict_img_s", "predict img/s", ".1f")]
        for k in args.detail_scales:
            for r in rows:
                r[f"x{k}_cost"] = r["wsdan_train_img_s"] / r[f"wsdan_x{k}_train_img_s"] - 1
            columns += [(f"wsdan_x{k}_train_img_s", f"WS-DAN, detail x{k}, img/s", ".1f"),
                        (f"x{k}_cost", f"detail x{k} vs WS-DAN", "+.0%")]
        print(_table(rows, columns + [("peak_mib", "peak MiB", ".0f")]) + "\n")
    if "crop" not in args.skip:
        rows = bench_crop(args, device)
        results["crop"] = rows
        print(f"attention crop of {args.crop_batch} images at {args.crop_size} px:\n")
        print(_table(rows, [("method", "method", ""), ("ms", "ms", ".1f"), ("relative", "x batched", ".2f")]) + "\n")
    if "loader" not in args.skip and args.loader_dir:
        rows = bench_loader(args)
        results["loader"] = rows
        if rows:
            print(f"data loader alone, {args.workers} workers, training transform at {args.image_size} px:\n")
            print(_table(rows, [("data", "data", ""), ("images", "images", "d"), ("img_s", "images/s", ".1f")]))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(get_args_parser().parse_args())
