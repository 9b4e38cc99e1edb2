"""Speed and peak memory of super-resolution inference (the code path of super_resolve.py).

    python scripts/benchmark_sr.py                      # D-DBPN and DBPN-S, 4x, 128x96 and 1024x768, tile 256
    python scripts/benchmark_sr.py --models dbpn-s --sizes 320x240 --device cuda --csv bench.csv

Each (model, input size) runs in a fresh process, so one measurement's memory does not leak into the next:
the network (random weights: speed does not depend on them) enlarges a random RGB image with
``super_resolve_image`` (tiles of --tile input pixels with --overlap context), after one warm-up call on a
64x64 crop, repeated until --min-seconds have passed (at most --max-repeats times). On a slow machine
--max-tiles N times only the first N tiles of an image and extrapolates by tile area (the table says
"est."): tiles run one after another, so time is proportional to the pixels tiled, and peak memory is that
of one tile plus the output buffer, which is allocated first.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors on the GPU, reset after the warm-up); on the
CPU the process's peak resident set size (``resource.getrusage(...).ru_maxrss``, Linux/macOS) and its growth
over the resident size just before the timed calls (the working memory of the enlargement itself).
"""

from __future__ import annotations

import argparse


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Benchmark DBPN super-resolution: images/s and peak memory",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--models", nargs="+", default=["dbpn", "dbpn-s"],
                   choices=["dbpn", "dbpn-s", "dbpn-res-mr64-3", "dbpnll"])
    p.add_argument("--sizes", nargs="+", default=["128x96", "1024x768"], help="input sizes WxH")
    p.add_argument("--scale", type=int, choices=[2, 4, 8], default=4)
    p.add_argument("--tile", type=int, default=256, help="tile side in input pixels (0: no tiling)")
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--min-seconds", type=float, default=5.0, help="repeat each measurement at least this long")
    p.add_argument("--max-repeats", type=int, default=10)
    p.add_argument("--max-tiles", type=int, default=0,
                   help="time only this many tiles of an image and extrapolate (0: the whole image)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default, one per core); 1 is steadier on a busy machine")
    p.add_argument("--csv", default=None, help="also write the table here")
    p.add_argument("--seed", type=int, default=0)
    return p


class _Enough(Exception):
    pass


def _tile_limited(model, max_tiles: int):
    """Wrap ``model`` so that it counts the tiles (and their pixels) it enlarges and stops after ``max_tiles``."""
    import torch.nn as nn

    class TileLimited(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.calls, self.pixels = model, 0, 0

        def forward(self, x):
            if max_tiles and self.calls >= max_tiles:
                raise _Enough
            self.calls += 1
            self.pixels += x.shape[-2] * x.shape[-1]
            return self.model(x)

    return TileLimited()


def measure(model_name: str, size: tuple[int, int], scale: int, tile: int, overlap: int, device: str,
            min_seconds: float, max_repeats: int, seed: int, max_tiles: int = 0, threads: int = 0) -> dict:
    """One measurement (run it in a fresh process for a clean memory peak)."""
    import time

    import numpy as np
    import torch
    from PIL import Image

    from super_resolution.dbpn import build_dbpn
    from super_resolution.inference import super_resolve_image, tile_spans
    from ws_dan.common.benchmark import current_rss_bytes, peak_rss_bytes, sync

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    dev = torch.device(device)
    net = build_dbpn(model_name, scale).to(dev).eval()
    model = _tile_limited(net, max_tiles)
    w, h = size
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")

    super_resolve_image(net, image.crop((0, 0, min(w, 64), min(h, 64))), scale, tile, overlap, dev)  # warm-up
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    rss_before = current_rss_bytes()
    if tile > 0:
        spans_h, spans_w = tile_spans(h, tile, overlap), tile_spans(w, tile, overlap)
    else:
        spans_h, spans_w = [(0, h)], [(0, w)]
    total_pixels = sum(s[1] - s[0] for s in spans_h) * sum(s[1] - s[0] for s in spans_w)
    times, partial = [], False
    while not times or (sum(times) < min_seconds and len(times) < max_repeats):
        model.calls = model.pixels = 0
        t0 = time.perf_counter()
        try:
            out = super_resolve_image(model, image, scale, tile, overlap, dev)
            assert out.size == (w * scale, h * scale)
        except _Enough:
            partial = True
        sync(dev)
        # time for the whole image: measured, or scaled from the tiles done by their share of the pixels
        times.append((time.perf_counter() - t0) * total_pixels / model.pixels)
    n_tiles = len(spans_h) * len(spans_w)
    sec = float(np.median(times))
    row = {"model": net.spec.name, "input": f"{w}x{h}", "output": f"{w * scale}x{h * scale}", "tiles": n_tiles,
           "timed_tiles": model.calls, "device": str(dev), "threads": torch.get_num_threads(), "runs": len(times),
           "s_per_image": round(sec, 3), "images_per_s": round(1.0 / sec, 4),
           "estimated": partial}
    if dev.type == "cuda":
        row.update(peak_mib=round(torch.cuda.max_memory_allocated(dev) / 2**20, 1),
                   working_mib=round((torch.cuda.max_memory_allocated(dev) - base) / 2**20, 1),
                   memory="torch.cuda.max_memory_allocated")
    else:
        peak = peak_rss_bytes()
        row.update(peak_mib=round(peak / 2**20, 1), working_mib=round(max(peak - rss_before, 0) / 2**20, 1),
                   memory="peak RSS (getrusage ru_maxrss); working = peak - RSS before the timed calls")
    return row


def _child(queue, kwargs) -> None:
    try:
        queue.put(measure(**kwargs))
    except BaseException as e:  # report, do not hang the parent
        queue.put({"error": f"{type(e).__name__}: {e}"})


def main(args: argparse.Namespace) -> dict:
    """Run every (model, size) pair; prints the table and returns {"rows": [...]}."""
    import multiprocessing as mp

    from ws_dan.common.io import write_csv
    from ws_dan.common.runtime import fail, resolve_device

    sizes = []
    for text in args.sizes:
        try:
            w, h = (int(v) for v in text.lower().split("x"))
            assert w > 0 and h > 0
        except (ValueError, AssertionError):
            fail(f"--sizes: expected WxH like 128x96, got {text!r}")
        sizes.append((w, h))
    try:
        device = str(resolve_device(args.device))
    except RuntimeError as e:
        fail(str(e))
    ctx = mp.get_context("spawn")  # a fresh interpreter per measurement: clean RSS / CUDA peaks
    rows = []
    for model_name in args.models:
        for size in sizes:
            queue = ctx.Queue()
            kwargs = dict(model_name=model_name, size=size, scale=args.scale, tile=args.tile, overlap=args.overlap,
                          device=device, min_seconds=args.min_seconds, max_repeats=args.max_repeats, seed=args.seed,
                          max_tiles=args.max_tiles, threads=args.threads)
            proc = ctx.Process(target=_child, args=(queue, kwargs))
            proc.start()
            row = queue.get()
            proc.join()
            if "error" in row:
                row = {"model": model_name, "input": f"{size[0]}x{size[1]}", **row}
            rows.append(row)
            print(_format_row(row), flush=True)
    print()
    print(_table(rows, args))
    if args.csv:
        write_csv(args.csv, rows)
    return {"rows": rows}


def _format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['model']} {r['input']}: failed: {r['error']}"
    est = f" (est. from {r['timed_tiles']} of {r['tiles']} tiles)" if r["estimated"] else ""
    return (f"{r['model']} {r['input']} -> {r['output']} ({r['tiles']} tiles, {r['device']}, {r['threads']} threads): "
            f"{r['s_per_image']} s/image{est}, {r['images_per_s']} images/s, peak {r['peak_mib']} MiB "
            f"(working {r['working_mib']} MiB)")


def _table(rows: list, args: argparse.Namespace) -> str:
    head = "| model | input | output | tiles | device | images/s | s/image | peak memory MiB | working MiB |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['input']} | failed: {r['error']} ||||||")
            continue
        est = f" (est. from {r['timed_tiles']} tiles)" if r["estimated"] else ""
        lines.append(f"| {r['model']} | {r['input']} | {r['output']} | {r['tiles']} | {r['device']} | "
                     f"{r['images_per_s']}{est} | {r['s_per_image']} | {r['peak_mib']} | {r['working_mib']} |")
    ok = [r for r in rows if "error" not in r]
    if ok:
        lines.append(f"\n{args.scale}x, tile {args.tile}, overlap {args.overlap}; memory: {ok[0]['memory']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
