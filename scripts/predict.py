"""Predict with a trained WS-DAN checkpoint; evaluate when labels are known.

    python scripts/predict.py --data-dir D --ckpt-path best.pt [--output-dir O] [--save-attention 16]

Labels come from class folders (D/<class>/...), from a CSV (--csv-labels-path labels.csv, columns set by
--csv-headings image,label), or nowhere (a folder of images). Writes predictions.csv and probabilities.npy;
with labels also metrics.json, per_class.csv and confusion_matrix.png. Class names come from the checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

# Only what --help needs is imported here (torchvision, matplotlib... load in main), so --help is quick.
from ws_dan.utils import default_workers, str2bool  # noqa: E402


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict (and evaluate) with a WS-DAN checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True, help="folder of images, or of class folders")
    p.add_argument("--ckpt-path", "--cp", required=True, help="checkpoint written by train.py")
    p.add_argument("--output-dir", "--od", default="predictions", help="where the outputs go")
    p.add_argument("--csv-labels-path", default="auto",
                   help="'folder': labels are the class folder names; a CSV file: labels from it; 'none': no "
                        "labels; 'auto': 'folder' when DATA_DIR's sub-folders are class names, else 'none'")
    p.add_argument("--csv-headings", default="image,label", help="CSV column names: IMAGE,LABEL")
    p.add_argument("--do-eval", type=str2bool, default=True, help="compute metrics when labels are known")
    p.add_argument("--topk", type=int, default=5, help="how many top classes predictions.csv lists")
    p.add_argument("--tta", action="store_true",
                   help="test-time views: the image and its mirror, each raw and cropped at --tta-thetas, averaged")
    p.add_argument("--tta-thetas", type=float, nargs="+", default=[0.3, 0.2, 0.1],
                   help="crop thresholds of --tta (CAL's evaluation uses 0.3 0.2 0.1)")
    p.add_argument("--sr-model", default=None,
                   help="super-resolution weights (DBPN .pth or a train_sr.py checkpoint): images smaller than "
                        "--sr-max-area are enlarged before classification (nothing is written)")
    p.add_argument("--sr-max-area", type=int, default=128 * 256, help="area w x h below which images are enlarged")
    p.add_argument("--sr-tile", type=int, default=256, help="tile size of the super-resolution (bounds memory)")
    p.add_argument("--save-attention", type=int, default=0, metavar="N",
                   help="write attention heatmap overlays for the first N images")
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("-j", "--workers", type=int, default=default_workers())
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpu", "--gpu-ids", dest="gpu_ids", default=None, help="GPU ids, e.g. 0 or 0,1")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def find_samples(args: argparse.Namespace, class_names: list[str]):
    """The images to predict (a SampleList) and whether they carry labels."""
    from ws_dan.data import DatasetError, class_folder_samples, csv_samples, unlabeled_samples

    data_dir = Path(args.data_dir)
    mode = args.csv_labels_path
    if mode == "auto":
        subdirs = {p.name for p in data_dir.iterdir() if p.is_dir()} if data_dir.is_dir() else set()
        mode = "folder" if subdirs and subdirs <= set(class_names) else "none"
    if mode == "folder":
        return class_folder_samples(data_dir, class_names=class_names, allow_empty_classes=True), True
    if mode == "none":
        return unlabeled_samples(data_dir), False
    headings = tuple(h.strip() for h in args.csv_headings.split(","))
    if len(headings) != 2:
        raise DatasetError(f"--csv-headings expects two names like image,label; got {args.csv_headings!r}")
    return csv_samples(data_dir, mode, class_names, headings), True


def _area(path: Path) -> int:
    """Pixels of an image from its header (0 when unreadable: the loader will skip and report it)."""
    from ws_dan.images import UnreadableImageError, read_image_info

    try:
        info = read_image_info(path)
    except UnreadableImageError:
        return 0
    return info.width * info.height


def _display_path(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def main(args: argparse.Namespace) -> dict:
    """Predict; returns the metrics (empty without labels)."""
    import numpy as np

    from ws_dan.images import UnreadableImageError, open_image
    from ws_dan.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
    from ws_dan.data import DatasetError, ImageDataset, SkipLog, build_transform, make_loader
    from ws_dan.engine import predict
    from ws_dan.metrics import classification_report
    from ws_dan.plots import plot_confusion_matrix, save_attention_overlay
    from ws_dan.utils import amp_dtype, fail, parse_gpu_ids, resolve_device, setup_logging, wrap_data_parallel
    from ws_dan.io import atomic_write, write_csv, write_json

    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = setup_logging(out_dir / "predict.log", args.verbose, name="ws_dan.predict")
    try:
        gpu_ids = parse_gpu_ids(args.gpu_ids)
        device = resolve_device(args.device, gpu_ids)
        state = load_checkpoint(args.ckpt_path)
        model = model_from_checkpoint(state, device)
        config = model.config
        found, labelled = find_samples(args, config.class_names)
    except (CheckpointError, DatasetError, RuntimeError, argparse.ArgumentTypeError) as e:
        fail(str(e))
    skip_log = SkipLog()
    skip_log.add(found.skipped)
    if args.strict and len(skip_log):
        fail(skip_log.summary(limit=5) + "\n(--strict: fix or remove these files)")
    if not found.samples:
        fail(f"{args.data_dir}: no images to predict")
    evaluate = labelled and args.do_eval
    log.info("%s: %d images%s | model %s, %d classes, %d px | device %s", args.data_dir, len(found.samples),
             " with labels" if labelled else "", config.backbone, config.num_classes, config.image_size, device)

    workers, pre = args.workers, None
    if args.sr_model:
        from super_resolution import EnlargeSmallImages, SRWeightsError, load_sr_model

        try:
            sr_model, scale = load_sr_model(args.sr_model, device)
        except SRWeightsError as e:
            fail(str(e))
        pre = EnlargeSmallImages(sr_model, scale, args.sr_max_area, tile=args.sr_tile, device=device)
        n_small = sum(1 for path, _ in found.samples if _area(path) < args.sr_max_area)
        if device.type == "cuda" and workers:
            log.info("--sr-model on CUDA: loading images in the main process (CUDA cannot run in loader workers)")
            workers = 0
        log.info("super-resolution: %s (x%d) for the %d images under %d pixels", args.sr_model, scale, n_small,
                 args.sr_max_area)
    dataset = ImageDataset(found.samples, build_transform(config.image_size, config.mean, config.std, False,
                                                          pre=pre), strict=args.strict)
    loader = make_loader(dataset, args.batch_size, workers, train=False, pin_memory=device.type == "cuda")
    dtype = amp_dtype(args.amp, device, log)
    try:
        result = predict(wrap_data_parallel(model, device, gpu_ids), loader, device, dtype,
                         keep_attention=args.save_attention, skip_log=skip_log, progress=args.progress,
                         thetas=args.tta_thetas if args.tta else None, flip=args.tta)
    except UnreadableImageError as e:  # only raised with --strict
        fail(f"{e}\n(--strict: fix or remove this file, or run without --strict to skip unreadable images)")

    # predictions.csv and probabilities.npy, row for row
    names = config.class_names
    k = min(args.topk, len(names))
    order = np.argsort(-result.probabilities, axis=1, kind="stable")[:, :k]
    root = Path(args.data_dir)
    rows: list[dict] = []
    for row, (idx, target) in enumerate(zip(result.indices, result.targets)):
        path = dataset.samples[idx][0]
        rec = {"image": _display_path(path, root)}
        if labelled:
            rec["label"] = names[target]
        top = order[row]
        rec["predicted"] = names[top[0]]
        rec["confidence"] = f"{result.probabilities[row, top[0]]:.6f}"
        for j, c in enumerate(top, start=1):
            rec[f"top{j}_class"] = names[c]
            rec[f"top{j}_prob"] = f"{result.probabilities[row, c]:.6f}"
        rows.append(rec)
    write_csv(out_dir / "predictions.csv", rows)
    with atomic_write(out_dir / "probabilities.npy", "wb") as f:
        np.save(f, result.probabilities.astype(np.float32))

    metrics: dict = {}
    if evaluate and len(rows):
        report = classification_report(result.targets, result.probabilities, names)
        metrics = {"num_images": len(rows), "skipped_images": len(skip_log), **report.summary,
                   "checkpoint": str(args.ckpt_path), "data_dir": str(args.data_dir)}
        if args.sr_model:
            metrics.update(sr_model=str(args.sr_model), super_resolved_images=n_small)
        write_json(out_dir / "metrics.json", metrics)
        write_csv(out_dir / "per_class.csv", report.per_class)
        plot_confusion_matrix(report.confusion, names, out_dir / "confusion_matrix.png")

    for n, (idx, attention) in enumerate(result.attention):
        path = dataset.samples[idx][0]
        row = rows[int(np.flatnonzero(result.indices == idx)[0])]
        title = f"{path.name}: {row['predicted']} ({float(row['confidence']):.0%})"
        if labelled:
            title += f", true: {row['label']}"
        try:
            image = open_image(path)
        except UnreadableImageError:
            continue
        (out_dir / "attention").mkdir(exist_ok=True)
        save_attention_overlay(image, attention, out_dir / "attention" / f"{n:04d}_{path.stem}.png", title)

    if len(skip_log):
        log.warning(skip_log.summary())
    log.info("predicted %d images -> %s", len(rows), out_dir / "predictions.csv")
    if metrics:
        log.info("top-1 %.2f%%  top-3 %.2f%%  top-5 %.2f%%  macro precision %.4f  recall %.4f  F1 %.4f",
                 metrics["top1"], metrics["top3"], metrics["top5"], metrics["precision_macro"],
                 metrics["recall_macro"], metrics["f1_macro"])
    return metrics


if __name__ == "__main__":
    main(get_args_parser().parse_args())
