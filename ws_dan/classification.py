"""The classifier's training recipe: train.py's flags and the run they describe (used by train.py, the cleaner,
the demo and the method comparison; callable from a notebook with a Namespace from :func:`get_train_parser`).

:func:`train_classifier` reads top to bottom like torchvision's references/classification/train.py: processes
(torchrun), inputs checked before anything is written (data, checkpoint, device, run folder), model (from the
checkpoint when resuming, else from the flags), samplers and loaders, optimizer and schedule, then the shared
epoch loop (:mod:`ws_dan.trainer`) with WS-DAN's step (or the plain baseline's) and top-1 for best.pt.

Errors in the user's input raise :class:`TrainSetupError` (one line, before the run folder is touched);
Ctrl-C raises :class:`ws_dan.trainer.TrainingInterrupted`; a run that cannot go on raises
:class:`ws_dan.trainer.TrainingError`.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from .backbones import list_backbones
from .cli_types import nonneg_float, nonneg_int, positive_float, positive_int, unit_float
from .io import PathLike
from .utils import default_workers

log = logging.getLogger(__name__)

DEFAULTS = dict(model="efficientnet-b3", image_size=512, num_attentions=64)  # flags left unset take these


class TrainSetupError(ValueError):
    """The run cannot start: bad data, checkpoint, device, flags or save folder. The message is one line."""


def get_train_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """train.py's flags (the seed project's names and defaults; bounds checked by argparse)."""
    p = argparse.ArgumentParser(description="Train WS-DAN (See Better Before Looking Closer, Hu et al. 2019)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True, help="dataset folder with train/<class>/ and test/<class>/")
    p.add_argument("--save-dir", "--sd", required=True, help="folder for checkpoints, metrics and logs")
    p.add_argument("--overwrite", action="store_true",
                   help="the save folder holds a previous run: remove its files (checkpoints, metrics.csv, curves, "
                        "args.json, train.log) first instead of refusing")
    p.add_argument("-m", "--model", default=None,
                   help=f"backbone ({', '.join(list_backbones())}); default {DEFAULTS['model']}, "
                        "or the checkpoint's with -c")
    p.add_argument("--method", choices=["wsdan", "baseline"], default=None,
                   help="wsdan, or baseline: backbone + global pooling + linear classifier; default wsdan, "
                        "or the checkpoint's with -c")
    p.add_argument("--cal", action="store_true",
                   help="add the counterfactual-attention loss of CAL (Rao et al. 2021) to WS-DAN")
    p.add_argument("--image-size", type=positive_int, default=None,
                   help=f"square input size; default {DEFAULTS['image_size']}")
    p.add_argument("--num-attentions", type=positive_int, default=None,
                   help=f"number of attention maps M; default {DEFAULTS['num_attentions']}")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights (downloaded by the backbone library and cached)")
    p.add_argument("--pretrained-path", default=None, help="local ImageNet weights file, for offline machines")
    p.add_argument("-e", "--epochs", type=positive_int, default=100)
    p.add_argument("-b", "--batch-size", type=positive_int, default=32)
    p.add_argument("-j", "--workers", type=nonneg_int, default=default_workers(), help="data loading processes")
    p.add_argument("--optimizer", choices=["sgd", "adamw", "adabound"], default="sgd")
    p.add_argument("--lr", type=positive_float, default=0.001, help="initial learning rate")
    p.add_argument("--final-lr", type=positive_float, default=0.1,
                   help="AdaBound: the SGD learning rate it converges to")
    p.add_argument("--momentum", type=unit_float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", "--wd", type=nonneg_float, default=1e-5)
    p.add_argument("--lr-scheduler", choices=["plateau", "cosine", "step"], default="plateau",
                   help="plateau: reduce on validation loss (the reference project's choice); "
                        "step: x gamma every --lr-step-size epochs (WS-DAN.PyTorch: 0.9 every 2); cosine: to 0")
    p.add_argument("--lr-gamma", type=positive_float, default=None,
                   help="decay factor; default 0.1 (plateau), 0.9 (step)")
    p.add_argument("--lr-patience", type=nonneg_int, default=3,
                   help="plateau: epochs without improvement before decay")
    p.add_argument("--lr-step-size", type=positive_int, default=2, help="step: epochs between decays")
    p.add_argument("--crop-theta", type=unit_float, nargs=2, default=[0.4, 0.6], metavar=("LOW", "HIGH"),
                   help="attention-crop threshold range theta_c")
    p.add_argument("--drop-theta", type=unit_float, nargs=2, default=[0.2, 0.5], metavar=("LOW", "HIGH"),
                   help="attention-drop threshold range theta_d")
    p.add_argument("--crop-padding", type=nonneg_float, default=0.1,
                   help="crop box padding, fraction of the image size")
    p.add_argument("--augment", default="flip,color-jitter",
                   help="comma-separated training augmentations: flip, color-jitter, random-resized-crop, "
                        "autoaugment, randaugment, random-erasing, night; or none")
    p.add_argument("--class-weights", choices=["none", "balanced"], default="none",
                   help="balanced: weight the cross-entropy by n / (classes x count), scikit-learn's formula")
    p.add_argument("--label-smoothing", type=unit_float, default=0.0)
    p.add_argument("--beta", type=unit_float, default=0.05, help="feature-center update rate")
    p.add_argument("--center-weight", type=nonneg_float, default=1.0, help="weight of the center loss")
    p.add_argument("-c", "--ckpt", default=None, help="checkpoint to resume from (e.g. SAVE_DIR/last.pt)")
    p.add_argument("--sf", "--save-freq", dest="save_freq", type=nonneg_int, default=1,
                   help="write epoch_NNN.pt every this many epochs (0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpu", "--gpu-ids", dest="gpu_ids", default=None,
                   help="GPU ids, e.g. 0 or 0,1 (several: nn.DataParallel on this machine)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (bf16 where supported, else fp16)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow first epoch)")
    p.add_argument("--accum-steps", type=positive_int, default=1,
                   help="gradient accumulation: one optimizer step every N batches (effective batch N x -b)")
    p.add_argument("--sync-bn", action="store_true", help="torchrun: synchronise batch-norm statistics across GPUs")
    p.add_argument("--dist-backend", default="auto", help="torchrun: nccl (CUDA), gloo (CPU) or auto")
    p.add_argument("--prefetch-factor", type=positive_int, default=None,
                   help="batches each loader worker prepares ahead")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _setting(value, default):
    """A flag's value, or the default when it was not given (None; 0 is refused by the flag's type)."""
    return default if value is None else value


def _resolve_model(args: argparse.Namespace, class_names: list[str], resume: Optional[dict]):
    """The model config and the model: the checkpoint's when resuming (flags given must agree), else the flags'."""
    from .checkpoint import build_model_from_state, check_compatible, checkpoint_config
    from .model import ModelConfig, build_model

    if resume is not None:
        config = checkpoint_config(resume)
        wanted = {"class_names": class_names}
        for flag, key in [("model", "backbone"), ("image_size", "image_size"), ("num_attentions", "num_attentions"),
                          ("method", "method")]:
            if getattr(args, flag) is not None:
                wanted[key] = getattr(args, flag)
        check_compatible(config, wanted, args.ckpt)
        return config, build_model_from_state(config, resume["model"], args.ckpt)
    config = ModelConfig(
        backbone=_setting(args.model, DEFAULTS["model"]), method=_setting(args.method, "wsdan"),
        num_classes=len(class_names), class_names=class_names,
        num_attentions=_setting(args.num_attentions, DEFAULTS["num_attentions"]),
        image_size=_setting(args.image_size, DEFAULTS["image_size"]))
    return config, build_model(config, pretrained=args.pretrained, pretrained_path=args.pretrained_path)


def _attach_early_lines(handler: logging.handlers.MemoryHandler) -> None:
    """Write the lines logged before train.log existed into it (the console has shown them already)."""
    for h in logging.getLogger("ws_dan").handlers:
        if isinstance(h, logging.FileHandler):
            for record in handler.buffer:
                h.handle(record)
    handler.buffer.clear()


def train_classifier(args: argparse.Namespace, data_dirs: Optional[Sequence[PathLike]] = None,
                     extra_files: Sequence[str] = ()) -> dict:
    """Train as the flags say; returns the final epoch's metrics row (also the last row of metrics.csv).

    ``data_dirs``: the folders the save folder must stay clear of (default ``[args.data_dir]``; the cleaner
    passes its own source folder, as its split lives inside its save folder by design); ``extra_files``:
    names the caller writes into the save folder too (removed with --overwrite)."""
    from . import distributed as dist

    # Processes: one, or one per GPU under torchrun. Only rank 0 writes files, logs to the console and shows
    # progress bars; every rank seeds differently so crops, drops and augmentations differ between them.
    info = dist.init_distributed(args.dist_backend)
    try:
        return _train(args, info, data_dirs, extra_files)
    finally:
        dist.cleanup()


def _train(args, info, data_dirs, extra_files) -> dict:
    import torch

    from . import distributed as dist
    from . import engine
    from .augment import parse_augment
    from .backbones import PretrainedWeightsError
    from .checkpoint import CheckpointError, load_checkpoint
    from .data import DatasetError, ImageDataset, SkipLog, build_transform, discover_train_test, make_loader
    from .images import UnreadableImageError
    from .io import write_json
    from .optim import balanced_class_weights, build_optimizer, build_scheduler
    from .plots import plot_curves
    from .run_dir import RunDirError, check_run_dir, prepare_run_dir
    from .trainer import CheckpointSaver, EpochEnd, Trainer, TrainerConfig, TrainingError
    from .utils import amp_dtype, parse_gpu_ids, resolve_device, seed_everything, setup_logging, wrap_data_parallel

    log = setup_logging(None, args.verbose)  # console only until the run folder is known to be usable
    early = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    log.addHandler(early)
    if not info.is_main:
        log.setLevel("ERROR")
    progress = args.progress and info.is_main
    seed_everything(args.seed + info.rank)  # before the model is built: its random initialisation depends on it

    # Inputs, checked before anything is written: run folder, device, data, checkpoint, model.
    save_dir = Path(args.save_dir)
    try:
        check_run_dir(save_dir, data_dirs if data_dirs is not None else [args.data_dir], resume=bool(args.ckpt),
                      overwrite=getattr(args, "overwrite", False), extra=extra_files)
        gpu_ids = parse_gpu_ids(args.gpu_ids)
        if info.enabled and torch.cuda.is_available() and args.device in ("auto", "cuda"):
            device = torch.device("cuda", info.local_rank)
        else:
            device = resolve_device(args.device, gpu_ids)
        train_list, test_list = discover_train_test(args.data_dir)
        resume = load_checkpoint(args.ckpt) if args.ckpt else None
    except (RunDirError, DatasetError, CheckpointError, RuntimeError, argparse.ArgumentTypeError) as e:
        raise TrainSetupError(str(e)) from None
    class_names = train_list.class_names
    skip_log = SkipLog()
    skip_log.add(train_list.skipped + test_list.skipped)
    if args.strict and len(skip_log):
        raise TrainSetupError(skip_log.summary(limit=5) + "\n(--strict: fix or remove these files)")
    if not test_list.samples:
        raise TrainSetupError(f"{Path(args.data_dir) / 'test'}: no readable test images (needed for validation)")
    missing = sorted(set(class_names) - {class_names[t] for _, t in test_list.samples})
    if missing:
        log.warning("test split has no images of %d class(es): %s", len(missing), ", ".join(missing[:10]))
    try:
        config, model = _resolve_model(args, class_names, resume)
        augment = parse_augment(args.augment)
        train_transform = build_transform(config.image_size, config.mean, config.std, True, augment)
    except (CheckpointError, PretrainedWeightsError, FileNotFoundError, ValueError, ImportError) as e:
        raise TrainSetupError(str(e)) from None
    if args.cal and config.method != "wsdan":
        raise TrainSetupError("--cal needs --method wsdan (the counterfactual attention is WS-DAN's)")
    batch_size = args.batch_size  # per process under torchrun: the global batch is -b x processes x --accum-steps
    per_rank = len(train_list.samples) // info.world_size
    if batch_size > per_rank:
        log.warning("batch size %d is larger than the %d training images per process; using %d",
                    batch_size, per_rank, per_rank)
        batch_size = per_rank
    if batch_size < 2:
        raise TrainSetupError(f"{args.data_dir}: at least 2 training images per batch are needed (batch norm); "
                              f"found {batch_size}")

    # The run folder: created (previous run removed with --overwrite, stale temporary files cleared), then logged to.
    if info.is_main:
        prepare_run_dir(save_dir, resume=bool(args.ckpt), overwrite=getattr(args, "overwrite", False),
                        extra=extra_files)
    dist.barrier()
    log = setup_logging(save_dir / "train.log" if info.is_main else None, args.verbose)
    _attach_early_lines(early)
    if not info.is_main:
        log.setLevel("ERROR")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once

    # Model on the device, wrapped for several GPUs (DDP all-reduces the gradients; every process starts from
    # rank 0's weights, broadcast at wrap time).
    if info.enabled and args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if info.enabled:
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        forward_model = wrap_data_parallel(model, device, gpu_ids)
    if args.compile:
        forward_model = torch.compile(forward_model)

    # Data: the training loader shuffles with its own generator (saved in the checkpoint for an exact resume).
    generator = torch.Generator().manual_seed(args.seed)
    train_ds = ImageDataset(train_list.samples, train_transform, strict=args.strict)
    test_ds = ImageDataset(test_list.samples, build_transform(config.image_size, config.mean, config.std, False),
                           strict=args.strict)
    train_sampler = test_sampler = None
    if info.enabled:
        train_sampler = torch.utils.data.DistributedSampler(train_ds, info.world_size, info.rank, shuffle=True,
                                                            seed=args.seed, drop_last=True)
        test_sampler = dist.ShardSampler(len(test_ds), info.rank, info.world_size)
    loader_opts = dict(pin_memory=device.type == "cuda", persistent_workers=True,
                       prefetch_factor=args.prefetch_factor)
    train_loader = make_loader(train_ds, batch_size, args.workers, train=True, generator=generator,
                               sampler=train_sampler, **loader_opts)
    test_loader = make_loader(test_ds, batch_size, args.workers, train=False, sampler=test_sampler, **loader_opts)

    # Optimizer, schedule, mixed precision, the step's hyper-parameters.
    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, final_lr=args.final_lr)
    scheduler = build_scheduler(args.lr_scheduler, optimizer, args.epochs, gamma=args.lr_gamma,
                                patience=args.lr_patience, step_size=args.lr_step_size)
    dtype = amp_dtype(args.amp, device, log)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    class_weight = None
    if args.class_weights == "balanced":
        class_weight = balanced_class_weights([t for _, t in train_list.samples], config.num_classes)
        log.info("class weights (balanced): min %.3f, max %.3f", class_weight.min(), class_weight.max())
    step_cfg = engine.StepConfig(crop_theta=tuple(args.crop_theta), crop_padding=args.crop_padding,
                                 drop_theta=tuple(args.drop_theta), beta=args.beta, center_weight=args.center_weight,
                                 cal=args.cal, class_weight=class_weight, label_smoothing=args.label_smoothing,
                                 accum_steps=args.accum_steps)

    # The loop: WS-DAN's (or the baseline's) step, validation top-1 for best.pt.
    def train_one_epoch(epoch: int) -> dict:
        try:
            return engine.train_one_epoch(forward_model, train_loader, optimizer, step_cfg, device, epoch, scaler,
                                          dtype, skip_log, progress, channels_last=args.channels_last)
        except UnreadableImageError as e:  # only raised with --strict
            raise TrainingError(f"{e}\n(--strict: fix or remove this file, or run without --strict to skip "
                                "unreadable images)") from None

    def evaluate(epoch: int) -> dict:
        try:
            return engine.evaluate(model, test_loader, device, dtype, skip_log, progress, desc=f"val {epoch}",
                                   cfg=step_cfg, channels_last=args.channels_last)
        except UnreadableImageError as e:
            raise TrainingError(f"{e}\n(--strict: fix or remove this file, or run without --strict to skip "
                                "unreadable images)") from None

    def log_epoch(e: EpochEnd) -> None:
        views = "  ".join(f"{v} {e.train[v + '_top1']:.2f}%" for v in ("raw", "crop", "drop")
                          if v + "_top1" in e.train)
        log.info("epoch %d/%d  loss %.4f  %s  | val loss %.4f  top-1 %.2f%%  top-5 %.2f%%%s  | lr %.2g  %.1fs",
                 e.epoch, e.epochs, e.train["loss"], views, e.val["loss"], e.val["top1"], e.val["top5"],
                 " (best)" if e.is_best else "", e.lr, e.row["seconds"])

    saver = CheckpointSaver(save_dir, metric="val_top1", mode="max", save_freq=args.save_freq, kind="wsdan",
                            best_key="best_top1")
    trainer = Trainer(TrainerConfig(epochs=args.epochs, seed=args.seed, args=dict(vars(args))), model, optimizer,
                      scheduler, train_one_epoch, evaluate, saver, extra_state=lambda: {"config": config.to_dict()},
                      scaler=scaler, generator=generator, sampler=train_sampler, plot=plot_curves,
                      callbacks=[log_epoch], dist_info=info)
    if resume is not None:
        trainer.resume(resume, args.ckpt)
    if info.is_main:
        write_json(save_dir / "args.json", {**vars(args), "resolved_model_config": config.to_dict(),
                                            "world_size": info.world_size})
    what = (f"WS-DAN{'+CAL' if args.cal else ''} {config.backbone}, M={config.num_attentions}"
            if config.method == "wsdan" else f"baseline {config.backbone}")
    log.info("%s, %d classes, %d px | train %d images, test %d | augment %s | %s | device %s%s%s", what,
             config.num_classes, config.image_size, len(train_ds), len(test_ds), ",".join(augment) or "none",
             args.optimizer, device, f" ({dtype})" if dtype else "",
             f" | {info.world_size} processes, batch {batch_size} each" if info.enabled else "")
    log.debug("model config: %s", {k: v for k, v in config.to_dict().items() if k != "class_names"})
    log.debug("step config: %s | optimizer %s lr %g wd %g | scheduler %s | %d batches of %d per epoch", step_cfg,
              args.optimizer, args.lr, args.weight_decay, args.lr_scheduler, len(train_loader), batch_size)
    row = trainer.fit()
    if len(skip_log):
        log.warning(skip_log.summary())
    log.info("done: best validation top-1 %.2f%% at epoch %d; checkpoints, metrics.csv and curves.png in %s",
             saver.best, saver.best_epoch, save_dir)
    return row
