"""The classifier's training recipe as named steps (used by train.py, the cleaner, and a notebook).

    settings = TrainSettings(data_dir="cars", save_dir="runs/b3", epochs=30)
    row = train_classifier(settings)                  # the steps below, in order; the last metrics row

The steps read top to bottom like torchvision's references/classification/train.py; :func:`train_classifier`
calls them in this order, and scripts/train.py's ``main`` is the same list of calls: processes (torchrun),
:func:`start_logging`, seeding, :func:`check_inputs` (run folder, device, data, checkpoint, batch size),
:func:`resolve_model`, :func:`resolve_recipe` (unset knobs from the method's recipe), :func:`build_datasets`, then
the first write, :func:`open_run_dir`, and :func:`wrap_model`, :func:`build_loaders`, :func:`build_optimization`,
:func:`build_trainer`, :func:`write_args_json`, :func:`log_run`, ``trainer.fit()``, :func:`log_done`.

Everything up to :func:`build_datasets` only reads: errors in the user's input raise :class:`TrainSetupError`
(one line) before the run folder is touched. Ctrl-C raises :class:`ws_dan.training.trainer.TrainingInterrupted`; a run
that cannot go on raises :class:`ws_dan.training.trainer.TrainingError` (e.g. from the epoch function in
:func:`build_trainer`: a diverging loss).

A new setting is a :class:`TrainSettings` field in its group, the flag in the same group of train.py's parser
(``default=TrainSettings.<field>``) and of train_cleaner.py's copy (tests/test_train_settings.py says when one is
missing), read by the step it concerns: parameter groups, learning rates and warm-up in
:func:`build_optimization`, the model's head in :func:`resolve_model`, the step's schedule in
:class:`ws_dan.training.engine.StepConfig` via :func:`build_optimization`.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import logging.handlers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from ws_dan.common.cli_types import nonneg_float, nonneg_int, positive_float, positive_int, unit_float
from ws_dan.common.io import PathLike
from ws_dan.common.runtime import default_workers

if TYPE_CHECKING:  # torch and the model load in the steps, so that train.py --help stays quick
    import torch

    from ws_dan.data.datasets import ImageDataset, SampleList, SkipLog
    from ws_dan.models.wsdan import ModelConfig
    from ws_dan.training.distributed import DistInfo
    from ws_dan.training.engine import StepConfig
    from ws_dan.training.optim import LinearWarmup
    from ws_dan.training.trainer import EpochEnd, Trainer

log = logging.getLogger(__name__)

#: What model, image size and M are when neither the settings nor a resumed checkpoint give them.
DEFAULTS = dict(model="efficientnet-b3", method="wsdan", image_size=512, num_attentions=64)

#: Each method's values for the recipe settings left unset (None), filled in by :func:`resolve_recipe` (args.json
#: and the checkpoints record the values used). WS-DAN: the classifier sees the unit-norm feature matrix x
#: ``logit_scale`` (at 100, lr 0.01 diverges); the new layers learn at ``lr`` x ``head_lr_scale``; a linear warm-up
#: over ``warmup_epochs``; the crop and drop views from epoch ``views_start_epoch`` on (before that the maps are
#: noise); the SGD step's norm, not the gradient's, is capped (``clip_mode`` "step"), because a higher rate fails
#: through larger steps, not through rare gradient spikes; ``detail_scale`` is the loader's detail copy for the
#: crops. The baseline keeps a plain fine-tune: one learning rate, no warm-up, no clipping. Each value is one
#: entry, so an experiment changes it in one line; docs/results.md ("Where the defaults come from") has the
#: measurements behind each.
WSDAN_RECIPE = dict(lr=0.01, logit_scale=25.0, head_lr_scale=1.0, warmup_epochs=0.0, views_start_epoch=2,
                    clip_grad=0.15, clip_mode="step", detail_scale=1)
BASELINE_RECIPE = dict(lr=0.01, head_lr_scale=1.0, warmup_epochs=0.0, clip_grad=0.0, clip_mode="norm")
RECIPES = {"wsdan": WSDAN_RECIPE, "baseline": BASELINE_RECIPE}
#: The settings only WS-DAN reads (None in a baseline run's record).
WSDAN_ONLY = ("logit_scale", "views_start_epoch", "detail_scale")


class TrainSetupError(ValueError):
    """The run cannot start: bad data, checkpoint, device, settings or save folder. The message is one line."""


@dataclass(frozen=True)
class TrainSettings:
    """Every setting the recipe reads; train.py's flags take their defaults from here (one place, no drift).

    ``model``, ``method``, ``image_size`` and ``num_attentions`` are None for "the checkpoint's when resuming
    with ``ckpt``, else :data:`DEFAULTS`"; ``lr_gamma`` None for the scheduler's own default; ``head_lr_scale``,
    ``warmup_epochs``, ``logit_scale`` and ``views_start_epoch`` None for "the resumed run's, else the method's
    recipe" (:data:`RECIPES`, :func:`resolve_recipe`). The fields are in
    train.py's flag groups. Build one from parsed flags with :meth:`from_namespace`, and change one with
    ``dataclasses.replace``."""

    data_dir: str  # data: train/<class>/ and test/<class>/ (the two settings without a default come first)
    save_dir: str  # output: the run folder
    # model
    model: Optional[str] = None
    method: Optional[str] = None
    cal: bool = False
    image_size: Optional[int] = None
    num_attentions: Optional[int] = None
    detail_scale: Optional[int] = None  # None: the recipe's, or the checkpoint's when resuming
    pretrained: bool = True
    pretrained_path: Optional[str] = None
    # optimization
    epochs: int = 100
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: Optional[float] = None  # None: the method's recipe (WSDAN_RECIPE / BASELINE_RECIPE)
    head_lr_scale: Optional[float] = None  # None: the method's recipe (WSDAN_RECIPE / BASELINE_RECIPE)
    warmup_epochs: Optional[float] = None  # None: the method's recipe
    clip_grad: Optional[float] = None  # None: the method's recipe; 0: no clipping
    clip_mode: Optional[str] = None  # None: the recipe's; "norm" / "step" / "agc" (optim.clip_gradients_)
    diverge_factor: float = 5.0  # the divergence guard (ws_dan.training.engine); 0: off
    final_lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-5
    lr_scheduler: str = "cosine"  # anneals within any budget; a plateau needs epochs to notice one
    lr_gamma: Optional[float] = None
    lr_patience: int = 3
    lr_step_size: int = 2
    class_weights: str = "none"
    label_smoothing: float = 0.0
    seed: int = 0
    # WS-DAN step
    crop_theta: tuple[float, float] = (0.4, 0.6)
    drop_theta: tuple[float, float] = (0.2, 0.5)
    crop_padding: float = 0.1
    beta: float = 0.05
    center_weight: float = 1.0
    logit_scale: Optional[float] = None  # None: the recipe's, or the checkpoint's when resuming
    views_start_epoch: Optional[int] = None  # None: the recipe's
    # data
    augment: str = "flip,color-jitter"
    workers: int = default_workers()  # the cores of the process that imports this module, as the flag had
    prefetch_factor: Optional[int] = None
    strict: bool = False
    # speed
    device: str = "auto"
    gpu_ids: Optional[str] = None
    amp: bool = False
    channels_last: bool = False
    compile: bool = False
    accum_steps: int = 1
    sync_bn: bool = False
    dist_backend: str = "auto"
    # output
    overwrite: bool = False
    ckpt: Optional[str] = None
    save_freq: int = 1
    report: bool = True
    progress: bool = True
    verbose: bool = False

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> TrainSettings:
        """The settings in parsed flags (other attributes are ignored; missing ones keep their defaults).
        nargs=2 flags arrive as lists and become tuples, so the settings stay immutable and comparable."""
        values = {}
        for f in dataclasses.fields(cls):
            if hasattr(args, f.name):
                value = getattr(args, f.name)
                values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), as args.json and the checkpoints record them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}



def add_train_arguments(p: argparse.ArgumentParser, helps: Optional[dict[str, str]] = None) -> argparse.ArgumentParser:
    """train.py's flags, in TrainSettings' groups, every default read from :class:`TrainSettings` so they cannot
    drift; the seed project's names stay valid and argparse checks the bounds. Defined once here because
    train.py and train_cleaner.py both take them (a script imports no other); ``helps`` replaces the help text of
    ``model``, ``method``, ``image_size``, ``data_dir`` or ``save_dir`` for a script whose defaults differ."""
    helps = helps or {}
    _model_flags(p, helps)
    _optimization_flags(p, helps)
    _wsdan_step_flags(p, helps)
    _data_flags(p, helps)
    _speed_flags(p, helps)
    _output_flags(p, helps)
    return p


def _model_flags(p: argparse.ArgumentParser, helps: dict[str, str]) -> None:
    """train.py's "model" flags (see :func:`add_train_arguments`)."""
    from ws_dan.models.backbones import list_backbones

    S = TrainSettings
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", default=S.model,
                   help=helps.get("model", f"backbone ({', '.join(list_backbones())}); default "
                                           f"{DEFAULTS['model']}, or the checkpoint's with -c"))
    g.add_argument("--method", choices=["wsdan", "baseline"], default=S.method,
                   help=helps.get("method", "wsdan, or baseline: backbone + global pooling + linear classifier; "
                                            f"default {DEFAULTS['method']}, or the checkpoint's with -c"))
    g.add_argument("--cal", action="store_true", default=S.cal,
                   help="add the counterfactual-attention loss of CAL (Rao et al. 2021) to WS-DAN")
    g.add_argument("--image-size", type=positive_int, default=S.image_size,
                   help=helps.get("image_size", f"square input size; default {DEFAULTS['image_size']}"))
    g.add_argument("--num-attentions", type=positive_int, default=S.num_attentions,
                   help=f"number of attention maps M; default {DEFAULTS['num_attentions']}")
    g.add_argument("--detail-scale", type=positive_int, default=S.detail_scale,
                   help="WS-DAN: the loader keeps each photo at this many times --image-size; the network sees it "
                        "scaled down, the attention crops are cut from it (real detail instead of an enlargement); "
                        f"default {WSDAN_RECIPE['detail_scale']}, or the checkpoint's with -c")
    g.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=S.pretrained,
                   help="start from ImageNet weights (downloaded by the backbone library and cached)")
    g.add_argument("--pretrained-path", default=S.pretrained_path,
                   help="local ImageNet weights file, for offline machines")


def _optimization_flags(p: argparse.ArgumentParser, helps: dict[str, str]) -> None:
    """train.py's "optimization" flags (see :func:`add_train_arguments`)."""
    S = TrainSettings
    g = p.add_argument_group("optimization")
    g.add_argument("-e", "--epochs", type=positive_int, default=S.epochs)
    g.add_argument("-b", "--batch-size", type=positive_int, default=S.batch_size)
    g.add_argument("--optimizer", choices=["sgd", "adamw", "adabound"], default=S.optimizer)
    g.add_argument("--lr", type=positive_float, default=S.lr,
                   help="initial learning rate (of the pretrained backbone); default "
                        f"{WSDAN_RECIPE['lr']:g} for WS-DAN, {BASELINE_RECIPE['lr']:g} for the baseline, or the "
                        "resumed run's with -c")
    g.add_argument("--head-lr-scale", type=positive_float, default=S.head_lr_scale,
                   help="learning rate of the new layers (attention, classifier) = --lr x this; default "
                        f"{WSDAN_RECIPE['head_lr_scale']:g} for WS-DAN, {BASELINE_RECIPE['head_lr_scale']:g} "
                        "for the baseline, or the resumed run's with -c")
    g.add_argument("--warmup-epochs", type=nonneg_float, default=S.warmup_epochs,
                   help="linear learning-rate warm-up over this many epochs (fractions allowed); default "
                        f"{WSDAN_RECIPE['warmup_epochs']:g} for WS-DAN, {BASELINE_RECIPE['warmup_epochs']:g} "
                        "for the baseline, or the resumed run's with -c")
    g.add_argument("--clip-grad", type=nonneg_float, default=S.clip_grad,
                   help="gradient clipping before each step, 0: none; with --clip-mode norm the cap on the global "
                        "norm (train.log prints each epoch's mean and largest), with step the cap on the norm of "
                        "lr x gradient, with agc the largest gradient / weight norm ratio of a unit (lambda). "
                        "Given alone it clips the norm. Default: WS-DAN --clip-mode "
                        f"{WSDAN_RECIPE['clip_mode']} --clip-grad {WSDAN_RECIPE['clip_grad']:g}, the baseline "
                        f"{BASELINE_RECIPE['clip_grad']:g} (off), or the resumed run's with -c")
    g.add_argument("--clip-mode", choices=["norm", "step", "agc"], default=S.clip_mode,
                   help="norm: --clip-grad caps the global L2 norm of all gradients; step: it caps the norm of the "
                        "SGD step lr x gradient (the same largest step at any --lr); agc: adaptive gradient "
                        "clipping, unit by unit (Brock et al. 2021); default: see --clip-grad")
    g.add_argument("--diverge-factor", type=nonneg_float, default=S.diverge_factor,
                   help="stop when the loss is non-finite or above this x max(first loss, ln classes); 0: never")
    g.add_argument("--final-lr", type=positive_float, default=S.final_lr,
                   help="AdaBound: the SGD learning rate it converges to")
    g.add_argument("--momentum", type=unit_float, default=S.momentum, help="SGD momentum")
    g.add_argument("--weight-decay", "--wd", type=nonneg_float, default=S.weight_decay)
    g.add_argument("--lr-scheduler", choices=["plateau", "cosine", "step"], default=S.lr_scheduler,
                   help="cosine: to 0 at the last epoch, so any budget anneals; plateau: x gamma after --lr-patience "
                        "epochs without a lower validation loss (the reference project's choice, for 100 epochs); "
                        "step: x gamma every --lr-step-size epochs (WS-DAN.PyTorch: 0.9 every 2)")
    g.add_argument("--lr-gamma", type=positive_float, default=S.lr_gamma,
                   help="decay factor; default 0.1 (plateau), 0.9 (step)")
    g.add_argument("--lr-patience", type=nonneg_int, default=S.lr_patience,
                   help="plateau: epochs without improvement before decay")
    g.add_argument("--lr-step-size", type=positive_int, default=S.lr_step_size, help="step: epochs between decays")
    g.add_argument("--class-weights", choices=["none", "balanced"], default=S.class_weights,
                   help="balanced: weight the cross-entropy by n / (classes x count), scikit-learn's formula")
    g.add_argument("--label-smoothing", type=unit_float, default=S.label_smoothing)
    g.add_argument("--seed", type=int, default=S.seed)


def _wsdan_step_flags(p: argparse.ArgumentParser, helps: dict[str, str]) -> None:
    """train.py's "WS-DAN step" flags (see :func:`add_train_arguments`)."""
    S = TrainSettings
    g = p.add_argument_group("WS-DAN step")
    g.add_argument("--crop-theta", type=unit_float, nargs=2, default=list(S.crop_theta), metavar=("LOW", "HIGH"),
                   help="attention-crop threshold range theta_c")
    g.add_argument("--drop-theta", type=unit_float, nargs=2, default=list(S.drop_theta), metavar=("LOW", "HIGH"),
                   help="attention-drop threshold range theta_d")
    g.add_argument("--crop-padding", type=nonneg_float, default=S.crop_padding,
                   help="crop box padding, fraction of the image size")
    g.add_argument("--beta", type=unit_float, default=S.beta, help="feature-center update rate")
    g.add_argument("--center-weight", type=nonneg_float, default=S.center_weight, help="weight of the center loss")
    g.add_argument("--logit-scale", type=positive_float, default=S.logit_scale,
                   help="the classifier sees the unit-norm feature matrix x this (1 / temperature); "
                        f"default {WSDAN_RECIPE['logit_scale']:g}, or the checkpoint's with -c")
    g.add_argument("--views-start-epoch", type=positive_int, default=S.views_start_epoch,
                   help="first epoch (1-based) that trains on the attention crop and drop views; before it, the "
                        f"raw view only; default {WSDAN_RECIPE['views_start_epoch']}, or the resumed run's with -c")


def _data_flags(p: argparse.ArgumentParser, helps: dict[str, str]) -> None:
    """train.py's "data" flags (see :func:`add_train_arguments`)."""
    S = TrainSettings
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", "--dd", required=True,
                   help=helps.get("data_dir", "dataset folder with train/<class>/ and test/<class>/"))
    g.add_argument("--augment", default=S.augment,
                   help="comma-separated training augmentations: flip, color-jitter, random-resized-crop, "
                        "autoaugment, randaugment, random-erasing, night; or none")
    g.add_argument("-j", "--workers", type=nonneg_int, default=S.workers, help="data loading processes")
    g.add_argument("--prefetch-factor", type=positive_int, default=S.prefetch_factor,
                   help="batches each loader worker prepares ahead")
    g.add_argument("--strict", action="store_true", default=S.strict,
                   help="stop at the first unreadable image instead of skipping it")


def _speed_flags(p: argparse.ArgumentParser, helps: dict[str, str]) -> None:
    """train.py's "speed" flags (see :func:`add_train_arguments`)."""
    S = TrainSettings
    g = p.add_argument_group("speed")
    g.add_argument("--device", default=S.device, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--gpu", "--gpu-ids", dest="gpu_ids", default=S.gpu_ids,
                   help="GPU ids, e.g. 0 or 0,1 (several: nn.DataParallel on this machine)")
    g.add_argument("--amp", action="store_true", default=S.amp,
                   help="mixed precision on CUDA (bf16 where supported, else fp16)")
    g.add_argument("--channels-last", action="store_true", default=S.channels_last,
                   help="NHWC memory layout (faster convolutions on GPUs)")
    g.add_argument("--compile", action="store_true", default=S.compile,
                   help="torch.compile the model (slow first epoch)")
    g.add_argument("--accum-steps", type=positive_int, default=S.accum_steps,
                   help="gradient accumulation: one optimizer step every N batches (effective batch N x -b)")
    g.add_argument("--sync-bn", action="store_true", default=S.sync_bn,
                   help="torchrun: synchronise batch-norm statistics across GPUs")
    g.add_argument("--dist-backend", default=S.dist_backend, help="torchrun: nccl (CUDA), gloo (CPU) or auto")


def _output_flags(p: argparse.ArgumentParser, helps: dict[str, str]) -> None:
    """train.py's "output" flags (see :func:`add_train_arguments`)."""
    S = TrainSettings
    g = p.add_argument_group("output")
    g.add_argument("--save-dir", "--sd", required=True,
                   help=helps.get("save_dir", "folder for checkpoints, metrics and logs"))
    g.add_argument("--overwrite", action="store_true", default=S.overwrite,
                   help="the save folder holds a previous run: remove its files (checkpoints, metrics.csv, curves, "
                        "args.json, train.log) first instead of refusing")
    g.add_argument("-c", "--ckpt", default=S.ckpt, help="checkpoint to resume from (e.g. SAVE_DIR/last.pt)")
    g.add_argument("--sf", "--save-freq", dest="save_freq", type=nonneg_int, default=S.save_freq,
                   help="write epoch_NNN.pt every this many epochs (0: never)")
    g.add_argument("--report", action=argparse.BooleanOptionalAction, default=S.report,
                   help="at the end, report.html: the test split predicted by the final weights (metrics, per-class "
                        "table, confusion matrix, worst errors with heatmaps) and the curves")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=S.progress,
                   help="tqdm progress bars")
    g.add_argument("-v", "--verbose", action="store_true", default=S.verbose, help="debug logging")


class RunInputs(NamedTuple):
    """What :func:`check_inputs` resolved: all read, nothing written yet."""

    save_dir: Path
    device: torch.device
    gpu_ids: list[int]
    train_list: SampleList
    test_list: SampleList
    resume: Optional[dict]  # the checkpoint to continue from (weights_only-loaded), or None
    skip_log: SkipLog  # unreadable files so far; the loaders add theirs
    batch_size: int  # per process: the global batch is batch_size x processes x accum_steps
    extra_files: tuple[str, ...]  # names the caller writes into the run folder too (removed with overwrite)


class Datasets(NamedTuple):
    train: ImageDataset
    test: ImageDataset
    augment: tuple[str, ...]  # the training augmentations' names


class Loaders(NamedTuple):
    train: torch.utils.data.DataLoader
    test: torch.utils.data.DataLoader
    train_sampler: Optional[torch.utils.data.Sampler]  # DistributedSampler under torchrun (reshuffled per epoch)
    generator: torch.Generator  # the training shuffle's; saved in the checkpoint for an exact resume


class Optimization(NamedTuple):
    optimizer: torch.optim.Optimizer
    scheduler: Any
    dtype: Optional[torch.dtype]  # autocast dtype, None for full precision
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    step: StepConfig
    warmup: Optional[LinearWarmup] = None  # the linear warm-up's optimizer-step hooks (a no-op at 0 epochs)


# ---------------------------------------------------------------------------------------------------------------
# The steps, in the order they run


def start_logging(settings: TrainSettings, info: DistInfo) -> logging.handlers.MemoryHandler:
    """Log to the console only, until the run folder is known to be usable; the returned handler keeps the
    lines for train.log (:func:`open_run_dir`). Ranks other than 0 log errors only."""
    from ws_dan.common.runtime import setup_logging

    project = setup_logging(None, settings.verbose)
    early = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
    project.addHandler(early)
    if not info.is_main:
        project.setLevel("ERROR")
    return early


def check_inputs(settings: TrainSettings, info: DistInfo, data_dirs: Optional[Sequence[PathLike]] = None,
                 extra_files: Sequence[str] = ()) -> RunInputs:
    """Everything the run reads, checked before anything is written: run folder, device, data, checkpoint,
    batch size. ``data_dirs``: the folders the save folder must not nest with (default the data folder; the
    cleaner passes its source folder, as its split lives inside its save folder by design)."""
    import torch

    from ws_dan.common.run_dir import RunDirError, check_run_dir
    from ws_dan.common.runtime import parse_gpu_ids, resolve_device
    from ws_dan.data.datasets import DatasetError, SkipLog, discover_train_test
    from ws_dan.models.checkpoint import CheckpointError, load_checkpoint

    save_dir = Path(settings.save_dir)
    clear_of = list(data_dirs) if data_dirs is not None else [settings.data_dir]
    try:
        check_run_dir(save_dir, clear_of, resume=bool(settings.ckpt), overwrite=settings.overwrite,
                      extra=extra_files)
        gpu_ids = parse_gpu_ids(settings.gpu_ids)
        if info.enabled and torch.cuda.is_available() and settings.device in ("auto", "cuda"):
            device = torch.device("cuda", info.local_rank)  # torchrun: one GPU per process
        else:
            device = resolve_device(settings.device, gpu_ids)
        train_list, test_list = discover_train_test(settings.data_dir)
        resume = load_checkpoint(settings.ckpt) if settings.ckpt else None
    except (RunDirError, DatasetError, CheckpointError, RuntimeError, argparse.ArgumentTypeError) as e:
        raise TrainSetupError(str(e)) from None
    skip_log = SkipLog()
    skip_log.add(train_list.skipped + test_list.skipped)
    if settings.strict and len(skip_log):
        raise TrainSetupError(skip_log.summary(limit=5) + "\n(--strict: fix or remove these files)")
    if not test_list.samples:
        raise TrainSetupError(f"{Path(settings.data_dir) / 'test'}: no readable test images (needed for validation)")
    class_names = train_list.class_names
    missing = sorted(set(class_names) - {class_names[t] for _, t in test_list.samples})
    if missing:
        log.warning("test split has no images of %d class(es): %s", len(missing), ", ".join(missing[:10]))
    batch_size = settings.batch_size
    per_rank = len(train_list.samples) // info.world_size
    if batch_size > per_rank:
        log.warning("batch size %d is larger than the %d training images per process; using %d",
                    batch_size, per_rank, per_rank)
        batch_size = per_rank
    if batch_size < 2:
        raise TrainSetupError(f"{settings.data_dir}: at least 2 training images per batch are needed (batch norm); "
                              f"found {batch_size}")
    return RunInputs(save_dir, device, gpu_ids, train_list, test_list, resume, skip_log, batch_size,
                     tuple(extra_files))


def resolve_model(settings: TrainSettings, inputs: RunInputs) -> tuple[ModelConfig, torch.nn.Module]:
    """The model config and the model: the checkpoint's when resuming (settings given must agree with it),
    else the settings' (unset ones from :data:`DEFAULTS`), with ImageNet weights when ``pretrained``."""
    from ws_dan.models.backbones import PretrainedWeightsError
    from ws_dan.models.checkpoint import CheckpointError, build_model_from_state, check_compatible, checkpoint_config
    from ws_dan.models.wsdan import ModelConfig, build_model

    class_names = inputs.train_list.class_names
    try:
        if inputs.resume is not None:
            config = checkpoint_config(inputs.resume)
            wanted = {"class_names": class_names}
            for name, key in [("model", "backbone"), ("image_size", "image_size"),
                              ("num_attentions", "num_attentions"), ("method", "method")]:
                if getattr(settings, name) is not None:
                    wanted[key] = getattr(settings, name)
            if settings.logit_scale is not None and config.method == "wsdan":
                wanted["logit_scale"] = settings.logit_scale  # a trained head's scale is part of its weights
            if settings.detail_scale is not None and config.method == "wsdan":
                wanted["detail_scale"] = settings.detail_scale  # the crops it learned from
            check_compatible(config, wanted, settings.ckpt)
            model = build_model_from_state(config, inputs.resume["model"], settings.ckpt)
        else:
            config = ModelConfig(
                backbone=_or_default(settings.model, "model"), method=_or_default(settings.method, "method"),
                num_classes=len(class_names), class_names=class_names,
                num_attentions=_or_default(settings.num_attentions, "num_attentions"),
                image_size=_or_default(settings.image_size, "image_size"),
                logit_scale=WSDAN_RECIPE["logit_scale"] if settings.logit_scale is None else settings.logit_scale,
                detail_scale=_detail_scale(settings))
            model = build_model(config, pretrained=settings.pretrained, pretrained_path=settings.pretrained_path)
    except (CheckpointError, PretrainedWeightsError, FileNotFoundError, ValueError, ImportError) as e:
        raise TrainSetupError(str(e)) from None
    if settings.cal and config.method != "wsdan":
        raise TrainSetupError("--cal needs --method wsdan (the counterfactual attention is WS-DAN's)")
    return config, model


def _detail_scale(settings: TrainSettings) -> int:
    """WS-DAN's detail copy (the setting, else the recipe's); 1 for the baseline, which has no crop to take."""
    if _or_default(settings.method, "method") != "wsdan":
        return 1
    return WSDAN_RECIPE["detail_scale"] if settings.detail_scale is None else settings.detail_scale


def _or_default(value, name: str):
    """A setting, or :data:`DEFAULTS`' when it is unset (None; 0 is refused by the flag's type)."""
    return DEFAULTS[name] if value is None else value


def resolve_recipe(settings: TrainSettings, config: ModelConfig, resume: Optional[dict] = None) -> TrainSettings:
    """The settings with the recipe's values in place of the unset (None) ones, so that every later step and
    args.json see the values used.

    An unset setting takes, in this order: the resumed run's recorded value (``-c``: a run continues with the
    warm-up, head learning rate and view schedule it started with), else the method's entry in :data:`RECIPES`.
    ``logit_scale`` is the model's (``config``: the checkpoint's when resuming); the settings WS-DAN alone reads
    (:data:`WSDAN_ONLY`) are None for the baseline. The optimizer's parameter groups must match a resumed
    optimizer state: a checkpoint from before the backbone / head split has one group, so its run keeps one
    learning rate (``head_lr_scale`` 1); a two-group state cannot be merged (:class:`TrainSetupError`)."""
    wsdan = config.method == "wsdan"
    recorded = (resume.get("args") or {}) if resume is not None else {}
    values: dict[str, Any] = {}
    # Clipping's value and mode go together: --clip-grad alone clips the gradient's norm (as in timm), the
    # recipe's pair applies when neither is given, and a mode without a value is refused unless it is the pair's.
    if settings.clip_grad is not None and settings.clip_mode is None:
        values["clip_mode"] = "norm"
    elif settings.clip_grad is None and settings.clip_mode is not None:
        source = recorded if recorded.get("clip_mode") is not None else RECIPES[config.method]
        if settings.clip_mode != source["clip_mode"]:
            raise TrainSetupError(f"--clip-mode {settings.clip_mode}: give its cap with --clip-grad (the "
                                  f"{'resumed run' if source is recorded else config.method + ' recipe'}'s "
                                  f"{source.get('clip_grad', 0):g} is for --clip-mode {source['clip_mode']})")
    for name, value in RECIPES[config.method].items():
        if getattr(settings, name) is None and name not in values:
            values[name] = recorded.get(name) if recorded.get(name) is not None else value
    ignored = [n for n in WSDAN_ONLY if getattr(settings, n) is not None and not wsdan]
    if ignored:
        log.warning("%s: WS-DAN settings, not used by the %s", ", ".join(ignored), config.method)
    values.update({"logit_scale": config.logit_scale, "detail_scale": config.detail_scale} if wsdan
                  else dict.fromkeys(WSDAN_ONLY))
    resolved = dataclasses.replace(settings, **values)
    # Settings built in a notebook have not been through the flags' bounded types.
    if not resolved.head_lr_scale > 0:
        raise TrainSetupError(f"head_lr_scale: expected a number > 0, got {resolved.head_lr_scale!r}")
    if not resolved.warmup_epochs >= 0:
        raise TrainSetupError(f"warmup_epochs: expected a number >= 0, got {resolved.warmup_epochs!r}")
    if resume is not None:
        groups = len(resume["optimizer"]["param_groups"])
        if groups == 1 and resolved.head_lr_scale != 1.0:
            if settings.head_lr_scale is not None:
                log.warning("%s: its optimizer has one parameter group (a run from before the backbone / head "
                            "split); --head-lr-scale %g ignored, the run keeps one learning rate", settings.ckpt,
                            settings.head_lr_scale)
            resolved = dataclasses.replace(resolved, head_lr_scale=1.0)
        elif groups > 1 and resolved.head_lr_scale == 1.0:
            raise TrainSetupError(f"{settings.ckpt}: its optimizer has separate backbone and head learning rates; "
                                  f"--head-lr-scale 1 would merge them: give the run's own value "
                                  f"({recorded.get('head_lr_scale', 'see its args.json')}) or leave the flag unset")
    return resolved


def build_datasets(settings: TrainSettings, config: ModelConfig, inputs: RunInputs) -> Datasets:
    """The train and test datasets with the model's input size and normalisation; an unknown ``augment`` name
    is a :class:`TrainSetupError` here, still before anything is written."""
    from ws_dan.data.augment import parse_augment
    from ws_dan.data.datasets import ImageDataset, build_transform

    try:
        augment = parse_augment(settings.augment)
        train_transform = build_transform(config.load_size, config.mean, config.std, True, augment)
    except (ValueError, ImportError) as e:
        raise TrainSetupError(str(e)) from None
    test_transform = build_transform(config.load_size, config.mean, config.std, False)
    return Datasets(ImageDataset(inputs.train_list.samples, train_transform, strict=settings.strict),
                    ImageDataset(inputs.test_list.samples, test_transform, strict=settings.strict), augment)


def open_run_dir(settings: TrainSettings, inputs: RunInputs, info: DistInfo,
                 early: logging.handlers.MemoryHandler) -> None:
    """The first write: the run folder is created (a previous run removed with ``overwrite``, stale temporary
    files cleared) by rank 0, then logged to (train.log gets the lines logged so far too)."""
    import torch

    from ws_dan.common.run_dir import prepare_run_dir
    from ws_dan.common.runtime import setup_logging
    from ws_dan.training import distributed as dist

    if info.is_main:
        prepare_run_dir(inputs.save_dir, resume=bool(settings.ckpt), overwrite=settings.overwrite,
                        extra=inputs.extra_files)
    dist.barrier()
    project = setup_logging(inputs.save_dir / "train.log" if info.is_main else None, settings.verbose)
    _attach_early_lines(early)
    if not info.is_main:
        project.setLevel("ERROR")
    if inputs.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once


def _attach_early_lines(handler: logging.handlers.MemoryHandler) -> None:
    """Write the lines logged before train.log existed into it (the console has shown them already)."""
    for h in logging.getLogger("ws_dan").handlers:
        if isinstance(h, logging.FileHandler):
            for record in handler.buffer:
                h.handle(record)
    handler.buffer.clear()


def wrap_model(settings: TrainSettings, model: torch.nn.Module, inputs: RunInputs,
               info: DistInfo) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The model on the device (with SyncBatchNorm under torchrun when ``sync_bn``; its state_dict is what the
    checkpoints save) and the module the training step calls: DDP under torchrun (it all-reduces the gradients;
    every process starts from rank 0's weights, broadcast at wrap time), nn.DataParallel for several
    ``gpu_ids``, else the model itself; compiled with ``compile``."""
    import torch

    from ws_dan.common.runtime import wrap_data_parallel

    if info.enabled and settings.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(inputs.device)
    if settings.channels_last:
        model.to(memory_format=torch.channels_last)
    if info.enabled:
        device = inputs.device
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        forward_model = wrap_data_parallel(model, inputs.device, inputs.gpu_ids)
    if settings.compile:
        forward_model = torch.compile(forward_model)
    return model, forward_model


def build_loaders(settings: TrainSettings, datasets: Datasets, inputs: RunInputs, info: DistInfo) -> Loaders:
    """The loaders: training shuffles with its own seeded generator (or a DistributedSampler under torchrun,
    every rank a different shard); validation is split into shards across ranks."""
    import torch

    from ws_dan.data.datasets import make_loader
    from ws_dan.training import distributed as dist

    generator = torch.Generator().manual_seed(settings.seed)
    train_sampler = test_sampler = None
    if info.enabled:
        train_sampler = torch.utils.data.DistributedSampler(datasets.train, info.world_size, info.rank,
                                                            shuffle=True, seed=settings.seed, drop_last=True)
        test_sampler = dist.ShardSampler(len(datasets.test), info.rank, info.world_size)
    opts = dict(pin_memory=inputs.device.type == "cuda", persistent_workers=True,
                prefetch_factor=settings.prefetch_factor)
    train = make_loader(datasets.train, inputs.batch_size, settings.workers, train=True, generator=generator,
                        sampler=train_sampler, **opts)
    test = make_loader(datasets.test, inputs.batch_size, settings.workers, train=False, sampler=test_sampler, **opts)
    return Loaders(train, test, train_sampler, generator)


def build_optimization(settings: TrainSettings, model: torch.nn.Module, config: ModelConfig,
                       inputs: RunInputs, loaders: Loaders) -> Optimization:
    """Optimizer (the backbone at ``lr``, the new layers at ``lr`` x ``head_lr_scale``), learning-rate schedule,
    linear warm-up over ``warmup_epochs`` (counted in optimizer steps, continued where a resumed run stopped),
    mixed precision (bf16 where supported, else fp16 with a GradScaler) and the training step's hyper-parameters
    (crop / drop thresholds, center loss, class weights, divergence guard...). ``settings`` as
    :func:`resolve_recipe` returns them."""
    import math

    import torch

    from ws_dan.common.runtime import amp_dtype
    from ws_dan.training.engine import StepConfig
    from ws_dan.training.optim import (
        LinearWarmup,
        balanced_class_weights,
        build_optimizer,
        build_scheduler,
        param_groups,
    )

    groups = param_groups(model, settings.lr, 1.0 if settings.head_lr_scale is None else settings.head_lr_scale)
    optimizer = build_optimizer(settings.optimizer, groups, lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, final_lr=settings.final_lr)
    scheduler = build_scheduler(settings.lr_scheduler, optimizer, settings.epochs, gamma=settings.lr_gamma,
                                patience=settings.lr_patience, step_size=settings.lr_step_size)
    dtype = amp_dtype(settings.amp, inputs.device, log)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    class_weight = None
    if settings.class_weights == "balanced":
        class_weight = balanced_class_weights([t for _, t in inputs.train_list.samples], config.num_classes)
        log.info("class weights (balanced): min %.3f, max %.3f", class_weight.min(), class_weight.max())
    step = StepConfig(crop_theta=tuple(settings.crop_theta), crop_padding=settings.crop_padding,
                      drop_theta=tuple(settings.drop_theta), beta=settings.beta, center_weight=settings.center_weight,
                      cal=settings.cal, class_weight=class_weight, label_smoothing=settings.label_smoothing,
                      accum_steps=settings.accum_steps, clip_grad=settings.clip_grad or 0.0,
                      clip_mode=settings.clip_mode, diverge_factor=settings.diverge_factor)
    # The warm-up counts optimizer steps (one per accum_steps batches, and one for an epoch's last partial group),
    # so a resumed run continues the ramp from the steps its completed epochs made.
    steps_per_epoch = math.ceil(len(loaders.train) / settings.accum_steps)
    start_epoch = int(inputs.resume["epoch"]) if inputs.resume is not None else 0
    warmup = LinearWarmup(optimizer, round((settings.warmup_epochs or 0.0) * steps_per_epoch),
                          start_step=start_epoch * steps_per_epoch)
    if warmup.warmup_steps:
        log.info("linear warm-up over the first %d optimizer steps", warmup.warmup_steps)
    return Optimization(optimizer, scheduler, dtype, scaler, step, warmup)


def epoch_log_line(e: EpochEnd, clipping: bool) -> str:
    """The one log line of a finished epoch: loss, each view's training top-1 (views that did not run are NaN and
    left out), the gradients' norm before clipping (what --clip-grad compares with), validation, rate, time."""
    import math

    views = "  ".join(f"{v} {e.train[v + '_top1']:.2f}%" for v in ("raw", "crop", "drop")
                      if v + "_top1" in e.train and not math.isnan(e.train[v + "_top1"]))
    grad = ""
    if "grad_norm" in e.train:
        grad = f"  grad norm {e.train['grad_norm']:.3g} (max {e.train['grad_norm_max']:.3g})"
        grad += f", {e.train['clipped']:.0f}% clipped" if clipping else ""
    return (f"epoch {e.epoch}/{e.epochs}  loss {e.train['loss']:.4f}  {views}{grad}  | val loss {e.val['loss']:.4f}  "
            f"top-1 {e.val['top1']:.2f}%  top-5 {e.val['top5']:.2f}%{' (best)' if e.is_best else ''}  | "
            f"lr {e.lr:.2g}  {e.row['seconds']:.1f}s")


def build_trainer(settings: TrainSettings, model: torch.nn.Module, forward_model: torch.nn.Module,
                  config: ModelConfig, inputs: RunInputs, loaders: Loaders, optim: Optimization, info: DistInfo,
                  record: Optional[Mapping[str, Any]] = None) -> Trainer:
    """The shared epoch loop with WS-DAN's step (or the baseline's), validation top-1 for best.pt, one log line
    per epoch; resumed from ``inputs.resume`` when given. ``record``: what the checkpoints store as their
    ``args`` (default the settings).

    The epoch function turns WS-DAN's crop and drop views on from ``views_start_epoch``, and a diverging loss
    (:class:`ws_dan.training.engine.TrainingDiverged`) into a :class:`TrainingError` whose one line names the learning
    rates and what to try; the diverged epoch's weights are not saved (last.pt keeps the previous epoch)."""
    from ws_dan.common.images import UnreadableImageError
    from ws_dan.evaluation.plots import plot_curves
    from ws_dan.training import engine
    from ws_dan.training.trainer import CheckpointSaver, Trainer, TrainerConfig, TrainingError

    device, skip_log, progress = inputs.device, inputs.skip_log, settings.progress and info.is_main
    strict_hint = "\n(--strict: fix or remove this file, or run without --strict to skip unreadable images)"
    views_start = settings.views_start_epoch or 1

    def train_one_epoch(epoch: int) -> dict:
        # The maps are random at first, so their crops and drops are noise until the attention has learned something.
        optim.step.attention_views = epoch >= views_start
        try:
            return engine.train_one_epoch(forward_model, loaders.train, optim.optimizer, optim.step, device, epoch,
                                          optim.scaler, optim.dtype, skip_log, progress,
                                          channels_last=settings.channels_last)
        except UnreadableImageError as e:  # only raised with strict
            raise TrainingError(f"{e}{strict_hint}") from None
        except engine.TrainingDiverged as e:
            raise TrainingError(diverged_message(e, settings, config)) from None

    def evaluate(epoch: int) -> dict:
        try:
            return engine.evaluate(model, loaders.test, device, optim.dtype, skip_log, progress, desc=f"val {epoch}",
                                   cfg=optim.step, channels_last=settings.channels_last)
        except UnreadableImageError as e:
            raise TrainingError(f"{e}{strict_hint}") from None

    def log_epoch(e: EpochEnd) -> None:
        log.info("%s", epoch_log_line(e, bool(settings.clip_grad)))

    saver = CheckpointSaver(inputs.save_dir, metric="val_top1", mode="max", save_freq=settings.save_freq,
                            kind="wsdan", best_key="best_top1")
    cfg = TrainerConfig(epochs=settings.epochs, seed=settings.seed,
                        args=dict(record) if record is not None else settings.to_dict())
    trainer = Trainer(cfg, model, optim.optimizer, optim.scheduler, train_one_epoch, evaluate, saver,
                      extra_state=lambda: {"config": config.to_dict()}, scaler=optim.scaler,
                      generator=loaders.generator, sampler=loaders.train_sampler, plot=plot_curves,
                      callbacks=[log_epoch], dist_info=info)
    if inputs.resume is not None:
        trainer.resume(inputs.resume, settings.ckpt)
    return trainer


def _clipping(settings: TrainSettings) -> str:
    """The clipping in words for the log and messages: "step 0.15", "norm 1" or "off"."""
    return f"{settings.clip_mode} {settings.clip_grad:g}" if settings.clip_grad else "off"


def diverged_message(error: Exception, settings: TrainSettings, config: ModelConfig) -> str:
    """The one line for a diverged run: where, the learning rates, and what to try."""
    return (f"{error} with --lr {settings.lr:g} (new layers x{settings.head_lr_scale or 1.0:g}, warm-up "
            f"{settings.warmup_epochs or 0.0:g} epochs, gradient clipping {_clipping(settings)}); "
            "try a 3-10x smaller --lr, --warmup-epochs 1, --clip-mode step --clip-grad 0.05"
            + (", or a smaller --head-lr-scale or --logit-scale" if config.method == "wsdan" else ""))


def write_args_json(settings: TrainSettings, config: ModelConfig, inputs: RunInputs, info: DistInfo,
                    record: Optional[Mapping[str, Any]] = None) -> None:
    """args.json in the run folder (rank 0): ``record`` (default the settings), the resolved model config and
    the number of processes."""
    from ws_dan.common.io import write_json

    if info.is_main:
        write_json(inputs.save_dir / "args.json",
                   {**(record if record is not None else settings.to_dict()),
                    "resolved_model_config": config.to_dict(), "world_size": info.world_size})


def log_run(settings: TrainSettings, config: ModelConfig, inputs: RunInputs, datasets: Datasets, loaders: Loaders,
            optim: Optimization, info: DistInfo) -> None:
    """The run in one line (model, classes, data, augmentation, optimizer, device); the configs at debug level."""
    what = (f"WS-DAN{'+CAL' if settings.cal else ''} {config.backbone}, M={config.num_attentions}"
            if config.method == "wsdan" else f"baseline {config.backbone}")
    log.info("%s, %d classes, %d px | train %d images, test %d | augment %s | %s | device %s%s%s", what,
             config.num_classes, config.image_size, len(datasets.train), len(datasets.test),
             ",".join(datasets.augment) or "none", settings.optimizer, inputs.device,
             f" ({optim.dtype})" if optim.dtype else "",
             f" | {info.world_size} processes, batch {inputs.batch_size} each" if info.enabled else "")
    wsdan = (f", logit scale {config.logit_scale:g}, crop and drop views from epoch {settings.views_start_epoch or 1}"
             if config.method == "wsdan" else "")
    clip = _clipping(settings)
    log.info("recipe: lr %g (new layers x%g), warm-up %g epoch(s), gradient clipping %s%s, divergence guard %s",
             settings.lr, settings.head_lr_scale or 1.0, settings.warmup_epochs or 0.0, clip, wsdan,
             f"x{settings.diverge_factor:g}" if settings.diverge_factor else "off")
    log.debug("model config: %s", {k: v for k, v in config.to_dict().items() if k != "class_names"})
    log.debug("step config: %s | optimizer %s lr %g wd %g | scheduler %s | %d batches of %d per epoch", optim.step,
              settings.optimizer, settings.lr, settings.weight_decay, settings.lr_scheduler, len(loaders.train),
              inputs.batch_size)


def write_report(settings: TrainSettings, model: torch.nn.Module, config: ModelConfig, inputs: RunInputs,
                 datasets: Datasets, optim: Optimization, info: DistInfo, epoch: int) -> Optional[Path]:
    """report.html in the run folder (``--report``, on by default; rank 0 only): one more pass over the test split
    with the final weights, beside the curves of metrics.csv (ws_dan.evaluation.html_report)."""
    if not settings.report or not info.is_main:
        return None
    from ws_dan.evaluation.prediction import write_training_report

    return write_training_report(inputs.save_dir, model, datasets.test, config.class_names, device=inputs.device,
                                 amp_dtype=optim.dtype, batch_size=inputs.batch_size, workers=settings.workers,
                                 progress=settings.progress and info.is_main,
                                 extra={"weights": f"after epoch {epoch} (last.pt)"})


def log_done(trainer: Trainer, inputs: RunInputs) -> None:
    """The unreadable files skipped (if any) and the summary line."""
    if len(inputs.skip_log):
        log.warning(inputs.skip_log.summary())
    log.info("done: best validation top-1 %.2f%% at epoch %d; checkpoints, metrics.csv and curves.png in %s",
             trainer.saver.best, trainer.saver.best_epoch, inputs.save_dir)


# ---------------------------------------------------------------------------------------------------------------
# The recipe as one call


def train_classifier(settings: TrainSettings, data_dirs: Optional[Sequence[PathLike]] = None,
                     extra_files: Sequence[str] = (), record: Optional[Mapping[str, Any]] = None) -> dict:
    """Train as ``settings`` say; returns the final epoch's metrics row (also the last row of metrics.csv).

    The same steps as scripts/train.py's ``main``, in the same order. ``data_dirs``: the folders the save
    folder must stay clear of (default the data folder); ``extra_files``: names the caller writes into the save
    folder too (removed with ``overwrite``); ``record``: what args.json and the checkpoints record as the run's
    arguments (default the settings; the cleaner adds its own flags)."""
    from ws_dan.common.runtime import seed_everything
    from ws_dan.training import distributed as dist

    info = dist.init_distributed(settings.dist_backend)
    try:
        early = start_logging(settings, info)
        seed_everything(settings.seed + info.rank)  # every rank differs: its crops, drops, augmentations too
        inputs = check_inputs(settings, info, data_dirs, extra_files)
        config, model = resolve_model(settings, inputs)
        settings = resolve_recipe(settings, config, inputs.resume)
        if record is not None:
            record = {**record, **settings.to_dict()}  # the values used, the caller's extra entries kept
        datasets = build_datasets(settings, config, inputs)
        open_run_dir(settings, inputs, info, early)
        model, forward_model = wrap_model(settings, model, inputs, info)
        loaders = build_loaders(settings, datasets, inputs, info)
        optim = build_optimization(settings, model, config, inputs, loaders)
        trainer = build_trainer(settings, model, forward_model, config, inputs, loaders, optim, info, record)
        write_args_json(settings, config, inputs, info, record)
        log_run(settings, config, inputs, datasets, loaders, optim, info)
        row = trainer.fit()
        write_report(settings, model, config, inputs, datasets, optim, info, row["epoch"])
        log_done(trainer, inputs)
        return row
    finally:
        dist.cleanup()
