"""Train WS-DAN (or the plain CNN baseline) on a folder of class folders.

    python scripts/train.py --data-dir D --save-dir S [-m efficientnet-b3] [-e 100] [-b 32] [--lr 0.001]

D holds train/<class>/ and test/<class>/. S receives last.pt (every epoch), best.pt (best validation top-1),
epoch_NNN.pt (every --save-freq epochs), metrics.csv, curves.png, args.json and train.log.
Resume with -c S/last.pt: weights, feature centers, optimizer, scheduler, epoch and RNG state continue.

Several GPUs or machines: launch the same command with torchrun (DistributedDataParallel; -b is per process):

    torchrun --nproc_per_node 4 scripts/train.py --data-dir D --save-dir S -b 16
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

# Only what --help needs is imported here (torchvision, matplotlib... load in main), so --help is quick.
from ws_dan.backbones import list_backbones  # noqa: E402
from ws_dan.utils import default_workers  # noqa: E402

DEFAULTS = dict(model="efficientnet-b3", image_size=512, num_attentions=64)  # flags left unset take these


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train WS-DAN (See Better Before Looking Closer, Hu et al. 2019)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--data-dir", "--dd", required=True, help="dataset folder with train/<class>/ and test/<class>/")
    p.add_argument("--save-dir", "--sd", required=True, help="folder for checkpoints, metrics and logs")
    p.add_argument("-m", "--model", default=None,
                   help=f"backbone ({', '.join(list_backbones())}); default {DEFAULTS['model']}, or the checkpoint's with -c")
    p.add_argument("--method", choices=["wsdan", "baseline"], default=None,
                   help="wsdan, or baseline: backbone + global pooling + linear classifier; default wsdan, "
                        "or the checkpoint's with -c")
    p.add_argument("--cal", action="store_true",
                   help="add the counterfactual-attention loss of CAL (Rao et al. 2021) to WS-DAN")
    p.add_argument("--image-size", type=int, default=None, help=f"square input size; default {DEFAULTS['image_size']}")
    p.add_argument("--num-attentions", type=int, default=None,
                   help=f"number of attention maps M; default {DEFAULTS['num_attentions']}")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="start from ImageNet weights (downloaded by the backbone library and cached)")
    p.add_argument("--pretrained-path", default=None, help="local ImageNet weights file, for offline machines")
    p.add_argument("-e", "--epochs", type=int, default=100)
    p.add_argument("-b", "--batch-size", type=int, default=32)
    p.add_argument("-j", "--workers", type=int, default=default_workers(), help="data loading processes")
    p.add_argument("--optimizer", choices=["sgd", "adamw", "adabound"], default="sgd")
    p.add_argument("--lr", type=float, default=0.001, help="initial learning rate")
    p.add_argument("--final-lr", type=float, default=0.1, help="AdaBound: the SGD learning rate it converges to")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", "--wd", type=float, default=1e-5)
    p.add_argument("--lr-scheduler", choices=["plateau", "cosine", "step"], default="plateau",
                   help="plateau: reduce on validation loss (the reference project's choice); "
                        "step: x gamma every --lr-step-size epochs (WS-DAN.PyTorch: 0.9 every 2); cosine: to 0")
    p.add_argument("--lr-gamma", type=float, default=None, help="decay factor; default 0.1 (plateau), 0.9 (step)")
    p.add_argument("--lr-patience", type=int, default=3, help="plateau: epochs without improvement before decay")
    p.add_argument("--lr-step-size", type=int, default=2, help="step: epochs between decays")
    p.add_argument("--crop-theta", type=float, nargs=2, default=[0.4, 0.6], metavar=("LOW", "HIGH"),
                   help="attention-crop threshold range theta_c")
    p.add_argument("--drop-theta", type=float, nargs=2, default=[0.2, 0.5], metavar=("LOW", "HIGH"),
                   help="attention-drop threshold range theta_d")
    p.add_argument("--crop-padding", type=float, default=0.1, help="crop box padding, fraction of the image size")
    p.add_argument("--augment", default="flip,color-jitter",
                   help="comma-separated training augmentations: flip, color-jitter, random-resized-crop, "
                        "autoaugment, randaugment, random-erasing, night; or none")
    p.add_argument("--class-weights", choices=["none", "balanced"], default="none",
                   help="balanced: weight the cross-entropy by n / (classes x count), scikit-learn's formula")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--beta", type=float, default=0.05, help="feature-center update rate")
    p.add_argument("--center-weight", type=float, default=1.0, help="weight of the center loss")
    p.add_argument("-c", "--ckpt", default=None, help="checkpoint to resume from (e.g. SAVE_DIR/last.pt)")
    p.add_argument("--sf", "--save-freq", dest="save_freq", type=int, default=1,
                   help="write epoch_NNN.pt every this many epochs (0: never)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--gpu", "--gpu-ids", dest="gpu_ids", default=None,
                   help="GPU ids, e.g. 0 or 0,1 (several: nn.DataParallel on this machine)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA (bf16 where supported, else fp16)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow first epoch)")
    p.add_argument("--accum-steps", type=int, default=1,
                   help="gradient accumulation: one optimizer step every N batches (effective batch N x -b)")
    p.add_argument("--sync-bn", action="store_true", help="torchrun: synchronise batch-norm statistics across GPUs")
    p.add_argument("--dist-backend", default="auto", help="torchrun: nccl (CUDA), gloo (CPU) or auto")
    p.add_argument("--prefetch-factor", type=int, default=None, help="batches each loader worker prepares ahead")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def build_scheduler(args: argparse.Namespace, optimizer):
    import torch

    if args.lr_scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=args.lr_gamma or 0.1, patience=args.lr_patience)
    if args.lr_scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step_size, gamma=args.lr_gamma or 0.9)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1))


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def main(args: argparse.Namespace) -> dict:
    """Train; returns the final epoch's metrics row (also written to metrics.csv)."""
    import torch

    from ws_dan.images import UnreadableImageError
    from ws_dan import distributed as dist
    from ws_dan.augment import parse_augment
    from ws_dan.backbones import PretrainedWeightsError
    from ws_dan.checkpoint import (
        CheckpointError, build_model_from_state, check_compatible, checkpoint_config, get_rng_state,
        load_checkpoint, save_checkpoint, set_rng_state,
    )
    from ws_dan.data import DatasetError, ImageDataset, SkipLog, build_transform, discover_train_test, make_loader
    from ws_dan.engine import StepConfig, evaluate, train_one_epoch
    from ws_dan.model import ModelConfig, build_model
    from ws_dan.optim import balanced_class_weights, build_optimizer
    from ws_dan.plots import plot_curves
    from ws_dan.utils import amp_dtype, fail, parse_gpu_ids, resolve_device, seed_everything, setup_logging, wrap_data_parallel
    from ws_dan.io import read_csv_rows, write_csv, write_json

    # Processes: one, or one per GPU under torchrun. Only rank 0 writes files, logs to the console and shows
    # progress bars; every rank seeds differently so crops, drops and augmentations differ between them.
    info = dist.init_distributed(args.dist_backend)
    save_dir = Path(args.save_dir)
    if info.is_main:
        save_dir.mkdir(parents=True, exist_ok=True)
    dist.barrier()
    log = setup_logging(save_dir / "train.log" if info.is_main else None, args.verbose)
    if not info.is_main:
        log.setLevel("ERROR")
    progress = args.progress and info.is_main
    seed_everything(args.seed + info.rank)  # before the model is built: its random initialisation depends on it
    try:
        gpu_ids = parse_gpu_ids(args.gpu_ids)
        if info.enabled and torch.cuda.is_available() and args.device in ("auto", "cuda"):
            device = torch.device("cuda", info.local_rank)
        else:
            device = resolve_device(args.device, gpu_ids)
        train_list, test_list = discover_train_test(args.data_dir)
        resume = load_checkpoint(args.ckpt) if args.ckpt else None
    except (DatasetError, CheckpointError, RuntimeError, argparse.ArgumentTypeError) as e:
        fail(str(e))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels once
    class_names = train_list.class_names
    skip_log = SkipLog()
    skip_log.add(train_list.skipped + test_list.skipped)
    if args.strict and len(skip_log):
        fail(skip_log.summary(limit=5) + "\n(--strict: fix or remove these files)")
    if not test_list.samples:
        fail(f"{Path(args.data_dir) / 'test'}: no readable test images (needed for validation)")
    missing = sorted(set(class_names) - {class_names[t] for _, t in test_list.samples})
    if missing:
        log.warning("test split has no images of %d class(es): %s", len(missing), ", ".join(missing[:10]))

    # Model: from the checkpoint when resuming (flags given explicitly must agree), else from the flags.
    try:
        if resume is not None:
            config = checkpoint_config(resume)
            wanted = {"class_names": class_names}
            for flag, key in [("model", "backbone"), ("image_size", "image_size"), ("num_attentions", "num_attentions"),
                              ("method", "method")]:
                if getattr(args, flag) is not None:
                    wanted[key] = getattr(args, flag)
            check_compatible(config, wanted, args.ckpt)
            model = build_model_from_state(config, resume["model"], args.ckpt)
        else:
            config = ModelConfig(
                backbone=args.model or DEFAULTS["model"], method=args.method or "wsdan", num_classes=len(class_names),
                class_names=class_names, num_attentions=args.num_attentions or DEFAULTS["num_attentions"],
                image_size=args.image_size or DEFAULTS["image_size"])
            model = build_model(config, pretrained=args.pretrained, pretrained_path=args.pretrained_path)
        augment = parse_augment(args.augment)
        train_transform = build_transform(config.image_size, config.mean, config.std, True, augment)
    except (CheckpointError, PretrainedWeightsError, FileNotFoundError, ValueError, ImportError) as e:
        fail(str(e))
    if args.cal and config.method != "wsdan":
        fail("--cal needs --method wsdan (the counterfactual attention is WS-DAN's)")
    if args.accum_steps < 1:
        fail(f"--accum-steps must be 1 or more, got {args.accum_steps}")
    if info.enabled and args.sync_bn:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    if info.enabled:
        # DDP all-reduces the gradients; every process starts from rank 0's weights (broadcast at wrap time).
        forward_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        forward_model = wrap_data_parallel(model, device, gpu_ids)
    if args.compile:
        forward_model = torch.compile(forward_model)

    batch_size = args.batch_size  # per process under torchrun: the global batch is -b x processes x --accum-steps
    per_rank = len(train_list.samples) // info.world_size
    if batch_size > per_rank:
        log.warning("batch size %d is larger than the %d training images per process; using %d",
                    batch_size, per_rank, per_rank)
        batch_size = per_rank
    if batch_size < 2:
        fail(f"{args.data_dir}: at least 2 training images per batch are needed (batch norm); found {batch_size}")
    generator = torch.Generator().manual_seed(args.seed)
    pin = device.type == "cuda"
    train_ds = ImageDataset(train_list.samples, train_transform, strict=args.strict)
    test_ds = ImageDataset(test_list.samples, build_transform(config.image_size, config.mean, config.std, False),
                           strict=args.strict)
    train_sampler = test_sampler = None
    if info.enabled:
        train_sampler = torch.utils.data.DistributedSampler(train_ds, info.world_size, info.rank, shuffle=True,
                                                            seed=args.seed, drop_last=True)
        test_sampler = dist.ShardSampler(len(test_ds), info.rank, info.world_size)
    loader_opts = dict(pin_memory=pin, persistent_workers=True, prefetch_factor=args.prefetch_factor)
    train_loader = make_loader(train_ds, batch_size, args.workers, train=True, generator=generator,
                               sampler=train_sampler, **loader_opts)
    test_loader = make_loader(test_ds, batch_size, args.workers, train=False, sampler=test_sampler, **loader_opts)

    optimizer = build_optimizer(args.optimizer, model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, final_lr=args.final_lr)
    scheduler = build_scheduler(args, optimizer)
    dtype = amp_dtype(args.amp, device, log)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    class_weight = None
    if args.class_weights == "balanced":
        class_weight = balanced_class_weights([t for _, t in train_list.samples], config.num_classes)
        log.info("class weights (balanced): min %.3f, max %.3f", class_weight.min(), class_weight.max())
    step_cfg = StepConfig(crop_theta=tuple(args.crop_theta), crop_padding=args.crop_padding,
                          drop_theta=tuple(args.drop_theta), beta=args.beta, center_weight=args.center_weight,
                          cal=args.cal, class_weight=class_weight, label_smoothing=args.label_smoothing,
                          accum_steps=args.accum_steps)

    start_epoch, best_top1, best_epoch = 0, -math.inf, 0
    rows: list[dict] = []
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        start_epoch = int(resume["epoch"])
        best_top1, best_epoch = float(resume.get("best_top1", -math.inf)), int(resume.get("best_epoch", 0))
        if info.enabled or resume.get("world_size", 1) > 1:
            # The saved RNG state is rank 0's; ranks need streams of their own, fixed by seed, rank and epoch,
            # so a distributed run resumes deterministically whatever the number of processes.
            seed_everything(args.seed + info.rank + 1000 * start_epoch)
        else:
            set_rng_state(resume["rng"])
            generator.set_state(resume["rng"]["loader"])
        if (save_dir / "metrics.csv").is_file():
            rows = [r for r in read_csv_rows(save_dir / "metrics.csv") if int(r["epoch"]) <= start_epoch]
        log.info("resumed from %s at epoch %d (best top-1 %.2f%% at epoch %d)", args.ckpt, start_epoch,
                 best_top1, best_epoch)
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

    def state(epoch: int, interrupted: bool = False) -> dict:
        rng = get_rng_state()
        rng["loader"] = generator.get_state()
        return {"config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "epoch": epoch, "best_top1": best_top1, "best_epoch": best_epoch, "rng": rng,
                "world_size": info.world_size, "args": dict(vars(args)), "interrupted": interrupted}

    epoch = start_epoch
    row: dict = rows[-1] if rows else {}
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            lr = optimizer.param_groups[0]["lr"]
            if train_sampler is not None:
                train_sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank
            train_m = train_one_epoch(forward_model, train_loader, optimizer, step_cfg, device, epoch + 1, scaler,
                                      dtype, skip_log, progress, channels_last=args.channels_last)
            if info.enabled:
                dist.broadcast_buffers(model)  # batch-norm statistics as rank 0's, as DDP does at each forward
            val_m = evaluate(model, test_loader, device, dtype, skip_log, progress, desc=f"val {epoch + 1}",
                             cfg=step_cfg, channels_last=args.channels_last)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_m["loss"])
            else:
                scheduler.step()
            row = {"epoch": epoch + 1, **{f"train_{k}": round(v, 4) for k, v in train_m.items()},
                   **{f"val_{k}": round(v, 4) for k, v in val_m.items()}, "lr": lr,
                   "seconds": round(time.time() - t0, 2)}
            rows.append(row)
            is_best = val_m["top1"] > best_top1
            if is_best:
                best_top1, best_epoch = val_m["top1"], epoch + 1
            if info.is_main:
                write_csv(save_dir / "metrics.csv", rows)
                plot_curves(rows, save_dir / "curves.png")
                save_checkpoint(save_dir / "last.pt", state(epoch + 1))
                if is_best:
                    _copy_atomic(save_dir / "last.pt", save_dir / "best.pt")
                if args.save_freq and (epoch + 1) % args.save_freq == 0:
                    _copy_atomic(save_dir / "last.pt", save_dir / f"epoch_{epoch + 1:03d}.pt")
            views = "  ".join(f"{v} {train_m[v + '_top1']:.2f}%" for v in ("raw", "crop", "drop")
                              if v + "_top1" in train_m)
            log.info("epoch %d/%d  loss %.4f  %s  | val loss %.4f  top-1 %.2f%%  top-5 %.2f%%%s  | lr %.2g  %.1fs",
                     epoch + 1, args.epochs, train_m["loss"], views, val_m["loss"], val_m["top1"], val_m["top5"],
                     " (best)" if is_best else "", lr, row["seconds"])
            if info.enabled:
                agree = dist.replicas_agree(model)  # weights, batch-norm statistics and feature centers
                log.info("replicas identical on %d processes: %s", info.world_size, "yes" if agree else "NO")
                dist.barrier()
    except UnreadableImageError as e:  # only raised with --strict
        fail(f"{e}\n(--strict: fix or remove this file, or run without --strict to skip unreadable images)")
    except KeyboardInterrupt:
        # Keep the work: last.pt holds the current weights; resuming repeats the interrupted epoch from them.
        if info.is_main:
            save_checkpoint(save_dir / "last.pt", state(epoch, interrupted=True))
            log.warning("interrupted during epoch %d: saved %s (resume with -c)", epoch + 1, save_dir / "last.pt")
        raise SystemExit(130)
    finally:
        dist.cleanup()
    if len(skip_log):
        log.warning(skip_log.summary())
    log.info("done: best validation top-1 %.2f%% at epoch %d; checkpoints, metrics.csv and curves.png in %s",
             best_top1, best_epoch, save_dir)
    return row


if __name__ == "__main__":
    main(get_args_parser().parse_args())
