"""The epoch loop every training script shares (classifier, cleaner, demo, super-resolution).

    saver = CheckpointSaver(save_dir, metric="val_top1", mode="max", save_freq=1)
    trainer = Trainer(TrainerConfig(epochs=100, seed=0), model, optimizer, scheduler,
                      train_one_epoch=lambda epoch: {...}, evaluate=lambda epoch: {...}, saver=saver)
    trainer.resume(load_checkpoint("S/last.pt"))       # optional
    row = trainer.fit()                                # the last metrics.csv row

Per epoch (as in torchvision's references and timm's train.py): ``train_one_epoch(epoch)`` and
``evaluate(epoch)`` (the model family's own step and metrics, e.g. top-1 or PSNR; their keys get ``train_`` /
``val_`` prefixes), the scheduler step (ReduceLROnPlateau on ``val_loss``), a metrics.csv row, curves.png,
the checkpoints through :class:`CheckpointSaver` (last.pt every epoch, best.pt when ``metric`` improves in
``mode``, epoch_NNN.pt every ``save_freq``), then the per-epoch callbacks (log lines, early stops). Under
DistributedDataParallel only rank 0 writes; batch-norm buffers are broadcast from rank 0 after training and
the replicas are compared after every epoch.

Stopping: Ctrl-C saves an "interrupted" last.pt (resuming repeats the interrupted epoch from its weights) and
raises :class:`TrainingInterrupted` (scripts exit 130). A Ctrl-C that lands while checkpoints are being
written waits until they are complete. ``train_one_epoch`` / ``evaluate`` may raise :class:`TrainingError`
(e.g. a diverging loss): the loop stops, the last complete epoch's checkpoints stay as they are, and scripts
print the message. A callback may set ``trainer.stop_requested`` to end after the current epoch.

Resume restores weights (the caller builds the model from the checkpoint), optimizer, scheduler, GradScaler,
epoch, best value and RNG: a single-process run continues the saved torch / numpy / python streams and the
loader's shuffling generator, so it ends bit-identical to an uninterrupted run. Under DDP (now or when the
checkpoint was written) the saved state is rank 0's, so every rank reseeds with seed + rank + 1000 x epoch:
deterministic whatever the number of processes.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ws_dan.common.io import PathLike, atomic_write, read_csv_rows, write_csv
from ws_dan.common.runtime import seed_everything, tqdm_logging
from ws_dan.models.checkpoint import deferred_sigint, get_rng_state, save_checkpoint, set_rng_state
from ws_dan.training import distributed as dist
from ws_dan.training.optim import step_scheduler

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Raised by an epoch function for a run that cannot go on (e.g. a diverging loss); the message is one line."""


class TrainingInterrupted(Exception):
    """Ctrl-C: ``checkpoint`` (or None on ranks that do not write) holds ``epoch`` completed epochs."""

    def __init__(self, epoch: int, checkpoint: Optional[Path]):
        super().__init__(f"interrupted after {epoch} completed epoch(s)")
        self.epoch, self.checkpoint = epoch, checkpoint


class CheckpointSaver:
    """Owns last.pt / best.pt / epoch_NNN.pt in a run folder (after timm's CheckpointSaver).

    last.pt is written every epoch with :func:`ws_dan.models.checkpoint.save_checkpoint`; best.pt (when ``metric``
    improved: larger for ``mode="max"``, smaller for ``"min"``) and epoch_NNN.pt (every ``save_freq`` epochs,
    0: never) are atomic copies of it. The best value goes into the checkpoint as ``best_key`` with
    ``best_epoch``. A Ctrl-C while these files are written is held until all of them are complete."""

    def __init__(self, save_dir: PathLike, metric: str = "val_top1", mode: str = "max", save_freq: int = 0,
                 kind: str = "wsdan", best_key: Optional[str] = None):
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.save_dir = Path(save_dir)
        self.metric, self.mode, self.save_freq, self.kind = metric, mode, save_freq, kind
        self.best_key = best_key or f"best_{metric.removeprefix('val_')}"
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = 0

    @property
    def last(self) -> Path:
        return self.save_dir / "last.pt"

    def is_better(self, value: float) -> bool:
        """Strictly better than the best so far (the first best epoch is kept on ties); NaN never is."""
        if value is None or math.isnan(value):
            return False
        return value > self.best if self.mode == "max" else value < self.best

    def update(self, epoch: int, value: float) -> bool:
        """Record epoch ``epoch`` (1-based) scoring ``value``; True when it is the new best."""
        if not self.is_better(value):
            return False
        self.best, self.best_epoch = float(value), epoch
        return True

    def state(self) -> dict[str, Any]:
        """The entries the checkpoint carries for resuming the best-tracking."""
        return {self.best_key: self.best, "best_epoch": self.best_epoch}

    def load_state(self, checkpoint: dict) -> None:
        self.best = float(checkpoint.get(self.best_key, self.best))
        self.best_epoch = int(checkpoint.get("best_epoch", 0))

    def _copy(self, name: str) -> Path:
        dst = self.save_dir / name
        with open(self.last, "rb") as src, atomic_write(dst, "wb") as f:
            shutil.copyfileobj(src, f)
        return dst

    def _write_all(self, writes: Sequence[Callable[[], Path]]) -> list[Path]:
        """Run every write even if a Ctrl-C comes in between (save_checkpoint may hold one back and raise it
        after its own write); then raise the KeyboardInterrupt."""
        written, interrupted = [], False
        with deferred_sigint("writing the checkpoints"):
            for write in writes:
                try:
                    written.append(write())
                except KeyboardInterrupt:  # the write itself finished; finish the set
                    interrupted = True
        if interrupted:
            raise KeyboardInterrupt
        return written

    def save_epoch(self, state: dict, epoch: int, is_best: bool) -> list[Path]:
        """last.pt, and best.pt / epoch_NNN.pt as due, for ``epoch`` (1-based) completed epochs."""
        writes: list[Callable[[], Path]] = [lambda: save_checkpoint(self.last, state, kind=self.kind)]
        if is_best:
            writes.append(lambda: self._copy("best.pt"))
        if self.save_freq and epoch % self.save_freq == 0:
            writes.append(lambda: self._copy(f"epoch_{epoch:03d}.pt"))
        return self._write_all(writes)

    def save_interrupted(self, state: dict) -> Path:
        """last.pt with ``interrupted=True`` (a second Ctrl-C during the write is held until it is done)."""
        try:
            self._write_all([lambda: save_checkpoint(self.last, {**state, "interrupted": True}, kind=self.kind)])
        except KeyboardInterrupt:
            pass  # already stopping; the file is complete
        return self.last


@dataclass
class TrainerConfig:
    """epochs: total (a resumed run continues to it); seed: for the DDP resume reseeding; plateau_metric: the
    row key ReduceLROnPlateau steps on; args: the flags, stored in every checkpoint for the record."""

    epochs: int
    seed: int = 0
    plateau_metric: str = "val_loss"
    args: dict = field(default_factory=dict)


@dataclass
class EpochEnd:
    """What the per-epoch callbacks get: ``epoch`` is 1-based, ``train`` / ``val`` the unrounded metrics."""

    epoch: int
    epochs: int
    row: dict
    train: dict
    val: dict
    is_best: bool
    lr: float
    seconds: float
    trainer: Trainer


def default_row(epoch: int, train: dict, val: dict, lr: float, seconds: float) -> dict:
    """metrics.csv row: epoch, train_* and val_* (4 decimals), lr, seconds."""
    return {"epoch": epoch, **{f"train_{k}": round(v, 4) for k, v in train.items()},
            **{f"val_{k}": round(v, 4) for k, v in val.items()}, "lr": lr, "seconds": round(seconds, 2)}


class Trainer:
    """The loop; see the module docstring. ``model`` is the bare module (its state_dict is saved), not a DDP
    wrapper. ``extra_state()`` adds entries to every checkpoint (e.g. the model config); ``plot(rows, path)``
    draws curves.png after each epoch; ``sampler``: a DistributedSampler to reshuffle each epoch;
    ``generator``: the training loader's shuffling generator (saved and restored)."""

    def __init__(self, cfg: TrainerConfig, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 train_one_epoch: Callable[[int], dict], evaluate: Callable[[int], dict],
                 saver: Optional[CheckpointSaver] = None, *, make_row: Callable[..., dict] = default_row,
                 extra_state: Callable[[], dict] = dict, scaler: Optional[torch.amp.GradScaler] = None,
                 generator: Optional[torch.Generator] = None, sampler: Any = None,
                 plot: Optional[Callable[[list, Path], None]] = None,
                 callbacks: Sequence[Callable[[EpochEnd], None]] = (), dist_info: Optional[dist.DistInfo] = None):
        self.cfg, self.model, self.optimizer, self.scheduler = cfg, model, optimizer, scheduler
        self.train_one_epoch, self.evaluate, self.saver = train_one_epoch, evaluate, saver
        self.make_row, self.extra_state, self.scaler, self.generator = make_row, extra_state, scaler, generator
        self.sampler, self.plot, self.callbacks = sampler, plot, list(callbacks)
        self.info = dist_info or dist.DistInfo()
        self.start_epoch = 0
        self.rows: list[dict] = []
        self.stop_requested = False

    @property
    def writes(self) -> bool:
        return self.saver is not None and self.info.is_main

    # ------------------------------------------------------------------ resume and state
    def resume(self, checkpoint: dict, source: PathLike = "<checkpoint>") -> int:
        """Continue from ``checkpoint`` (weights already in the model); returns the completed epochs."""
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.start_epoch = int(checkpoint["epoch"])
        if self.saver is not None:
            self.saver.load_state(checkpoint)
        if self.info.enabled or int(checkpoint.get("world_size", 1)) > 1:
            # The saved RNG state is rank 0's; every rank needs a stream of its own, fixed by seed, rank and epoch.
            seed_everything(self.cfg.seed + self.info.rank + 1000 * self.start_epoch)
        else:
            set_rng_state(checkpoint["rng"])
            if self.generator is not None and "loader" in checkpoint["rng"]:
                self.generator.set_state(checkpoint["rng"]["loader"])
        metrics = self.saver.save_dir / "metrics.csv" if self.saver is not None else None
        if metrics is not None and metrics.is_file():
            self.rows = [r for r in read_csv_rows(metrics) if int(r["epoch"]) <= self.start_epoch]
        if self.saver is not None:
            log.info("resumed from %s at epoch %d (best %s %.4g at epoch %d)", source, self.start_epoch,
                     self.saver.metric, self.saver.best, self.saver.best_epoch)
        return self.start_epoch

    def state(self, epoch: int, interrupted: bool = False) -> dict:
        """Everything a resume needs, as plain values and tensors (weights_only-loadable)."""
        rng = get_rng_state()
        if self.generator is not None:
            rng["loader"] = self.generator.get_state()
        return {**self.extra_state(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler is not None and self.scaler.is_enabled() else None,
                "epoch": epoch, **(self.saver.state() if self.saver is not None else {}), "rng": rng,
                "world_size": self.info.world_size, "args": dict(self.cfg.args), "interrupted": interrupted}

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        """Train from ``start_epoch`` to ``cfg.epochs``; returns the last metrics row ({} when none ran)."""
        completed, dirty = self.start_epoch, False
        try:
            with tqdm_logging():
                for epoch in range(self.start_epoch, self.cfg.epochs):
                    dirty = True
                    pending = self._epoch(epoch)
                    completed, dirty = epoch + 1, False
                    if pending:
                        raise KeyboardInterrupt
                    if self.info.enabled:
                        agree = dist.replicas_agree(self.model)  # weights, batch-norm statistics, feature centers
                        log.info("replicas identical on %d processes: %s", self.info.world_size,
                                 "yes" if agree else "NO")
                        dist.barrier()
                    if self.stop_requested:
                        break
        except KeyboardInterrupt:
            path = None
            if self.writes and dirty:
                # Keep the work: the current weights; resuming repeats the interrupted epoch from them.
                path = self.saver.save_interrupted(self.state(completed, interrupted=True))
                log.warning("interrupted during epoch %d: saved %s (resume with -c)", completed + 1, path)
            elif self.writes:
                path = self.saver.last
                log.warning("interrupted after epoch %d: its checkpoints are complete in %s (resume with -c %s)",
                            completed, self.saver.save_dir, path)
            raise TrainingInterrupted(completed, path) from None
        return self.rows[-1] if self.rows else {}

    def _epoch(self, epoch: int) -> bool:
        """One epoch (0-based ``epoch``); True when a Ctrl-C arrived while its checkpoints were written."""
        t0 = time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        if self.sampler is not None and hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
        train = self.train_one_epoch(epoch + 1)
        if self.info.enabled:
            dist.broadcast_buffers(self.model)  # batch-norm statistics as rank 0's, as DDP does at each forward
        val = self.evaluate(epoch + 1)
        metrics = {**{f"train_{k}": v for k, v in train.items()}, **{f"val_{k}": v for k, v in val.items()}}
        step_scheduler(self.scheduler, metrics.get(self.cfg.plateau_metric))
        row = self.make_row(epoch + 1, train, val, lr, time.time() - t0)
        self.rows.append(row)
        is_best = self.saver.update(epoch + 1, metrics[self.saver.metric]) if self.saver is not None else False
        pending = False
        if self.writes:
            write_csv(self.saver.save_dir / "metrics.csv", self.rows)
            if self.plot is not None:
                self.plot(self.rows, self.saver.save_dir / "curves.png")
            try:
                self.saver.save_epoch(self.state(epoch + 1), epoch + 1, is_best)
            except KeyboardInterrupt:  # raised once every file was complete: log the epoch, then stop
                pending = True
        end = EpochEnd(epoch + 1, self.cfg.epochs, row, train, val, is_best, lr, row.get("seconds", 0.0), self)
        for callback in self.callbacks:
            callback(end)
        return pending
