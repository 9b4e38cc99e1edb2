"""Predict with a trained WS-DAN checkpoint; evaluate when labels are known.

    python scripts/predict.py --data-dir D --ckpt-path best.pt [--output-dir O] [--save-attention 16]
    python scripts/predict.py photo.jpg other.png more_photos/ --ckpt-path best.pt

Labels come from class folders (D/<class>/...), from a CSV (--csv-labels-path labels.csv, columns set by
--csv-headings image,label), or nowhere (image files or folders of images). Writes predictions.csv and
probabilities.npy; with labels also metrics.json, per_class.csv and confusion_matrix.png; with --report also
report.html (one self-contained page: metrics, tables, confusion matrix, worst errors). Class names come from
the checkpoint. For up to 20 images, each one's top-k classes are printed too. The work is done by
ws_dan.evaluation.prediction (which images, the rows, the files) and ws_dan.evaluation.inference.predict (the model).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

# Only what --help needs is imported here (torchvision, matplotlib... load in main), so --help is quick.
from ws_dan.common.cli_types import nonneg_int, positive_int
from ws_dan.common.runtime import default_workers, fail, setup_logging, str2bool

#: Above this input side predict.py warns on a CPU (a checkpoint may ask for up to 4096 px: 64x the default's work).
LARGE_INPUT = 1024


class _CollectInputs(argparse.Action):
    """--data-dir A [B ...]: every value is an input; ``data_dir`` keeps the first (the seed project's name)."""

    def __call__(self, parser, namespace, values, option_string=None):
        namespace.inputs = list(getattr(namespace, "inputs", None) or []) + list(values)
        if namespace.data_dir is None:
            namespace.data_dir = values[0]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict (and evaluate) with a WS-DAN checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", nargs="+", action=_CollectInputs, default=None, metavar="PATH",
                   help="image files and/or folders of images (a folder may hold class folders)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="more image files or folders (same as --data-dir)")
    p.add_argument("--ckpt-path", "--cp", required=True, help="checkpoint written by train.py")
    p.add_argument("--output-dir", "--od", default="predictions", help="where the outputs go")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in --output-dir that predict.py did not write (e.g. your own predictions.csv)")
    p.add_argument("--csv-labels-path", default="auto",
                   help="'folder': labels are the class folder names; a CSV file: labels from it; 'none': no "
                        "labels; 'auto': 'folder' when DATA_DIR's sub-folders are class names, else 'none'")
    p.add_argument("--csv-headings", default="image,label", help="CSV column names: IMAGE,LABEL")
    p.add_argument("--do-eval", type=str2bool, default=True, help="compute metrics when labels are known")
    p.add_argument("--topk", type=positive_int, default=5, help="how many top classes predictions.csv lists")
    p.add_argument("--tta", action="store_true",
                   help="test-time views: the image and its mirror, each raw and cropped at --tta-thetas, averaged")
    p.add_argument("--tta-thetas", type=float, nargs="+", default=[0.3, 0.2, 0.1],
                   help="crop thresholds of --tta (CAL's evaluation uses 0.3 0.2 0.1)")
    p.add_argument("--sr-model", default=None,
                   help="super-resolution weights (DBPN .pth or a train_sr.py checkpoint): images smaller than "
                        "--sr-max-area are enlarged before classification (nothing is written)")
    p.add_argument("--sr-max-area", type=nonneg_int, default=128 * 256,
                   help="area w x h below which images are enlarged")
    p.add_argument("--sr-tile", type=positive_int, default=256,
                   help="tile size of the super-resolution (bounds memory)")
    p.add_argument("--save-attention", type=nonneg_int, default=0, metavar="N",
                   help="write attention heatmap overlays for the first N images")
    p.add_argument("--report", action="store_true",
                   help="also write report.html: one self-contained page with the metrics, per-class table, "
                        "confusion matrix, most confused pairs and worst errors beside their attention heatmaps")
    p.add_argument("-b", "--batch-size", type=positive_int, default=32)
    p.add_argument("-j", "--workers", type=nonneg_int, default=default_workers())
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpu", "--gpu-ids", dest="gpu_ids", default=None, help="GPU ids, e.g. 0 or 0,1")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bar")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _area(path) -> int:
    """Pixels of an image from its header (0 when unreadable: the loader will skip and report it)."""
    from ws_dan.common.images import UnreadableImageError, read_image_info

    try:
        info = read_image_info(path)
    except UnreadableImageError:
        return 0
    return info.width * info.height


def main(args: argparse.Namespace) -> dict:
    """Predict; returns the metrics (empty without labels). The steps, in order: the inputs (checkpoint, images,
    output folder), the device, the images to predict, super-resolution (optional), the prediction, the rows and
    metrics, the files, the summary."""
    inputs = list(getattr(args, "inputs", None) or []) + list(getattr(args, "paths", None) or [])
    if not inputs:
        fail("no images given: pass image files or folders (--data-dir PATH [PATH ...] or as arguments)")
    model, found, writer, log = open_inputs(args, inputs)
    device, gpu_ids = pick_device(args)
    model = model.to(device)
    samples, skip_log = images_to_predict(args, inputs, found, model.config, device, log)
    pre, workers, n_small = super_resolution_step(args, samples, device, log)
    dataset, result, dtype = run_prediction(args, model, samples, skip_log, pre, workers, device, gpu_ids)
    rows, scores, metrics = rows_and_metrics(args, inputs, found, dataset, result, model.config.class_names,
                                             len(skip_log), n_small)
    write_outputs(args, writer, model, dataset, result, rows, scores, metrics, device, dtype)
    log_summary(log, skip_log, rows, metrics, Path(args.output_dir))
    return metrics or {}


def open_inputs(args: argparse.Namespace, inputs: list):
    """The checkpoint's model (its config validated before any work), the images found, the output writer and the
    log; one error line for a bad checkpoint, label CSV, input or output folder."""
    from ws_dan.common.io import os_error_message
    from ws_dan.common.owned_files import OutputError
    from ws_dan.data.datasets import DatasetError
    from ws_dan.evaluation.prediction import PredictionWriter, find_inputs
    from ws_dan.models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint

    out_dir = Path(args.output_dir)
    try:
        state = load_checkpoint(args.ckpt_path)
        model = model_from_checkpoint(state, source=args.ckpt_path)  # validates the config: fail before any work
        found = find_inputs(inputs, model.config.class_names, args.csv_labels_path, args.csv_headings.split(","))
        named_files = [p for p in inputs if Path(p).is_file()] + [args.ckpt_path]
        writer = PredictionWriter(out_dir, args.overwrite, inputs=named_files, scanned_dirs=found.scanned_dirs,
                                  html=args.report)
        log = setup_logging(writer.path("predict.log"), args.verbose, name="ws_dan.predict")
    except (CheckpointError, DatasetError, OutputError) as e:
        fail(str(e))
    except OSError as e:  # e.g. an output folder that cannot be created
        fail(os_error_message(e, out_dir))
    return model, found, writer, log


def pick_device(args: argparse.Namespace):
    """``--device`` and ``--gpu-ids`` resolved, or one error line."""
    from ws_dan.common.runtime import parse_gpu_ids, resolve_device

    try:
        gpu_ids = parse_gpu_ids(args.gpu_ids)
        return resolve_device(args.device, gpu_ids), gpu_ids
    except (RuntimeError, argparse.ArgumentTypeError) as e:
        fail(str(e))


def images_to_predict(args: argparse.Namespace, inputs: list, found, config, device, log):
    """The samples and the skip log (files already skipped while scanning); refuses nothing to predict, and with
    ``--strict`` any skipped file; says what a large input costs on a CPU."""
    from ws_dan.data.datasets import SkipLog

    skip_log = SkipLog()
    skip_log.add(found.found.skipped)
    if args.strict and len(skip_log):
        fail(skip_log.summary(limit=5) + "\n(--strict: fix or remove these files)")
    samples = found.found.samples
    if not samples:
        fail(f"{', '.join(map(str, inputs[:3]))}: no images to predict")
    log.info("%s: %d images%s | model %s, %d classes, %d px | device %s", ", ".join(map(str, inputs[:3])),
             len(samples), " with labels" if found.labelled else "", config.backbone, config.num_classes,
             config.image_size, device)
    if config.load_size > LARGE_INPUT and device.type == "cpu":
        # A checkpoint's size is input too: say what it costs before a run that may take hours on a CPU.
        log.warning("%s: this model reads %d px images, %.0fx the pixels of the default 512 px each: slow on a "
                    "CPU (use --device cuda, or a model trained at a smaller --image-size)", args.ckpt_path,
                    config.load_size, (config.load_size / 512) ** 2)
    return samples, skip_log


def super_resolution_step(args: argparse.Namespace, samples, device, log):
    """With ``--sr-model``: the PIL step that enlarges images under ``--sr-max-area`` pixels, the loader workers
    (0 on CUDA: CUDA cannot run in loader workers) and how many images it will enlarge."""
    workers, pre, n_small = args.workers, None, 0
    if not args.sr_model:
        return pre, workers, n_small
    from super_resolution import EnlargeSmallImages, SRWeightsError, load_sr_model

    try:
        sr_model, scale = load_sr_model(args.sr_model, device)
    except SRWeightsError as e:
        fail(str(e))
    pre = EnlargeSmallImages(sr_model, scale, args.sr_max_area, tile=args.sr_tile, device=device)
    n_small = sum(1 for path, _ in samples if _area(path) < args.sr_max_area)
    if device.type == "cuda" and workers:
        log.info("--sr-model on CUDA: loading images in the main process (CUDA cannot run in loader workers)")
        workers = 0
    log.info("super-resolution: %s (x%d) for the %d images under %d pixels", args.sr_model, scale, n_small,
             args.sr_max_area)
    return pre, workers, n_small


def run_prediction(args: argparse.Namespace, model, samples, skip_log, pre, workers: int, device, gpu_ids):
    """The model over every readable image (at the checkpoint's load size and resize), with the test-time views
    asked for; returns the dataset, the predictions and the autocast dtype."""
    from ws_dan.common.images import UnreadableImageError
    from ws_dan.common.runtime import amp_dtype, wrap_data_parallel
    from ws_dan.data.datasets import ImageDataset, build_transform, make_loader
    from ws_dan.evaluation.inference import predict

    config = model.config
    transform = build_transform(config.load_size, config.mean, config.std, False, pre=pre,
                                interpolation=config.resize_interpolation)
    dataset = ImageDataset(samples, transform, strict=args.strict)
    loader = make_loader(dataset, args.batch_size, workers, train=False, pin_memory=device.type == "cuda")
    dtype = amp_dtype(args.amp, device, logging.getLogger("ws_dan.predict"))
    try:
        result = predict(wrap_data_parallel(model, device, gpu_ids), loader, device, dtype,
                         keep_attention=args.save_attention, skip_log=skip_log, progress=args.progress,
                         thetas=args.tta_thetas if args.tta else None, flip=args.tta)
    except UnreadableImageError as e:  # only raised with --strict
        fail(f"{e}\n(--strict: fix or remove this file, or run without --strict to skip unreadable images)")
    return dataset, result, dtype


def rows_and_metrics(args: argparse.Namespace, inputs: list, found, dataset, result, names, skipped: int,
                     n_small: int):
    """predictions.csv's rows and, for labelled images with ``--do-eval``, the scores and metrics.json."""
    from ws_dan.evaluation.metrics import classification_scores
    from ws_dan.evaluation.prediction import display_path, metrics_record, prediction_rows

    paths = [dataset.samples[i][0] for i in result.indices]
    rows = prediction_rows([display_path(p, found.root) for p in paths], result.probabilities, names, args.topk,
                           result.targets if found.labelled else None)
    scores = metrics = None
    if found.labelled and args.do_eval and rows:
        scores = classification_scores(result.targets, result.probabilities, names)
        extra = {"checkpoint": str(args.ckpt_path),
                 "data_dir": str(args.data_dir) if len(inputs) == 1 else [str(p) for p in inputs]}
        if args.sr_model:
            extra.update(sr_model=str(args.sr_model), super_resolved_images=n_small)
        metrics = metrics_record(scores, len(rows), skipped, **extra)
    return rows, scores, metrics


def write_outputs(args: argparse.Namespace, writer, model, dataset, result, rows, scores, metrics, device,
                  dtype) -> None:
    """The files (predictions, probabilities, metrics, heatmaps, report.html), one error line when a write is
    refused; then the files of an earlier run this one did not write go."""
    from ws_dan.common.io import os_error_message
    from ws_dan.common.owned_files import OutputError

    names = model.config.class_names
    row_of = {int(idx): r for idx, r in zip(result.indices, rows)}
    try:
        writer.write(rows, result.probabilities, scores, metrics, names)
        for n, (idx, attention) in enumerate(result.attention):
            writer.heatmap(n, dataset.samples[idx][0], attention, row_of[int(idx)])
        if args.report:
            writer.write_html(model, dataset, result, names, [r["image"] for r in rows], scores, metrics,
                              device=device, amp_dtype=dtype, batch_size=args.batch_size,
                              thetas=args.tta_thetas if args.tta else None, flip=args.tta)
    except OutputError as e:
        fail(str(e))
    except OSError as e:  # a full disk, a read-only folder: one line naming the file (WriteError)
        fail(os_error_message(e, Path(args.output_dir)))
    writer.finish()


def log_summary(log, skip_log, rows, metrics, out_dir: Path) -> None:
    """The skipped files, each image's top classes when there are few, where the files went, the metrics."""
    from ws_dan.evaluation.prediction import PRINT_LIMIT, top_classes_lines

    if len(skip_log):
        log.warning(skip_log.summary())
    if len(rows) <= PRINT_LIMIT:
        print("\n".join(top_classes_lines(rows)))
    log.info("predicted %d images -> %s", len(rows), out_dir / "predictions.csv")
    if metrics:
        log.info("top-1 %.2f%%  top-3 %.2f%%  top-5 %.2f%%  macro precision %.4f  recall %.4f  F1 %.4f",
                 metrics["top1"], metrics["top3"], metrics["top5"], metrics["precision_macro"],
                 metrics["recall_macro"], metrics["f1_macro"])


if __name__ == "__main__":
    main(get_args_parser().parse_args())
