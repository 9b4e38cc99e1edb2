"""Train a DBPN super-resolution network from a folder (or several) of high-resolution photos.

    python scripts/train_sr.py --hr-dir photos/ --save-dir runs/sr --model dbpn-s --scale 4 -e 100

Low-resolution inputs are made on the fly (PIL bicubic reduction of random HR crops, random flips and quarter
turns); L1 loss, Adam (lr 1e-4), lr / 10 at --lr-decay-epoch (default: halfway). Each epoch ends with the
validation PSNR/SSIM (Y channel, border cropped) of held-out images beside bicubic's.

S receives last.pt (every epoch), best.pt (best validation PSNR), metrics.csv, args.json and train.log; the
checkpoints carry the variant and the scale, load with weights_only=True, and are what --model_path takes in
super_resolve.py and eval_sr.py. Resume with -c S/last.pt. --time-limit M stops after M minutes (then
validates and saves), for a training run of a stated length. A save folder that already holds a run is
refused unless -c resumes it or --overwrite replaces it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ws_dan.common.cli_types import nonneg_float, nonneg_int, positive_float, positive_int, unit_float
from ws_dan.common.runtime import default_workers  # (ws_dan.common.runtime imports torch lazily)

MODELS = ["dbpn-s", "dbpn", "dbpn-res-mr64-3", "dbpnll"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a DBPN super-resolution network (Haris et al., CVPR 2018)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--hr-dir", nargs="+", required=True,
                   help="folder(s) of high-resolution images (searched recursively)")
    p.add_argument("--save-dir", "--sd", required=True, help="folder for checkpoints, metrics and the log")
    p.add_argument("--overwrite", action="store_true",
                   help="the save folder holds a previous run: remove its files (checkpoints, metrics.csv, args.json, "
                        "train.log) first instead of refusing")
    p.add_argument("--model", "-m", choices=MODELS, default="dbpn-s",
                   help="dbpn-s (2.4 M parameters at 4x), dbpn (D-DBPN, 10.4 M), dbpn-res-mr64-3 (recurrent, "
                        "residual), dbpnll (10 stages, 15.3 M)")
    p.add_argument("--scale", type=int, choices=[2, 4, 8], default=4)
    p.add_argument("--residual", action="store_true",
                   help="add the bicubic enlargement to the output and learn only the correction (always on for "
                        "dbpn-res-mr64-3); trains much faster from scratch")
    p.add_argument("--val-dir", nargs="+", default=None,
                   help="validation images; default: hold out --val-fraction of the --hr-dir images")
    p.add_argument("--val-fraction", type=unit_float, default=0.1,
                   help="share of the HR images held out (no --val-dir)")
    p.add_argument("--val-crop", type=nonneg_int, default=256,
                   help="validate on centre crops of at most this many HR pixels a side (0: whole images)")
    p.add_argument("-e", "--epochs", type=positive_int, default=100)
    p.add_argument("-b", "--batch-size", type=positive_int, default=16)
    p.add_argument("--patch-size", type=positive_int, default=40,
                   help="LR patch side (the HR patch is scale times that)")
    p.add_argument("--patches-per-image", type=positive_int, default=8, help="random patches per image and epoch")
    p.add_argument("--lr", type=positive_float, default=1e-4, help="Adam learning rate")
    p.add_argument("--lr-decay-epoch", type=positive_int, default=None,
                   help="divide the lr by 10 here; default epochs // 2")
    p.add_argument("--time-limit", type=nonneg_float, default=0.0,
                   help="stop after this many minutes of training (0: no limit); validates and saves first")
    p.add_argument("-j", "--workers", type=nonneg_int, default=default_workers(), help="data loading processes")
    p.add_argument("-c", "--ckpt", default=None, help="checkpoint to resume from (e.g. SAVE_DIR/last.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(args: argparse.Namespace) -> dict:
    """Train; returns the last epoch's metrics row (also in metrics.csv) plus the best validation PSNR."""
    import time

    from super_resolution.training import prepare_validation
    from super_resolution.weights import sr_config
    from ws_dan.common.io import write_json
    from ws_dan.common.run_dir import prepare_run_dir
    from ws_dan.common.runtime import seed_everything, setup_logging

    log = setup_logging(None, args.verbose)  # console only until the save folder is known to be usable
    seed_everything(args.seed)
    save_dir, device, resume = _check_inputs(args)  # folders, device, checkpoint: read, nothing written
    train_images, val_images = _images(args, log)  # big enough for one HR patch; validation held out
    model = _model(args, resume)  # the checkpoint's variant and scale when resuming (the flags must agree)
    # The save folder: created (previous run removed with --overwrite, stale temporary files cleared), logged to.
    prepare_run_dir(save_dir, resume=bool(args.ckpt), overwrite=args.overwrite)
    log = setup_logging(save_dir / "train.log", args.verbose)
    val_items = prepare_validation(val_images, args.scale, args.val_crop)
    model.to(device)
    trainer, saver, patches, t_start = _trainer(args, model, train_images, val_items, device, save_dir, log)
    if resume is not None:
        trainer.resume(resume, args.ckpt)
    write_json(save_dir / "args.json", {**vars(args), "config": sr_config(model)})
    log.info("%s %dx%s, %d parameters | train %d images (%d patches of %d px per epoch), validation %d | %s",
             model.spec.name, args.scale, " residual" if model.residual else "",
             sum(p.numel() for p in model.parameters()), len(train_images), patches, args.patch_size,
             len(val_items), device)
    row = _fit(trainer)
    log.info("done: best validation PSNR %.2f dB at epoch %d; checkpoints and metrics.csv in %s", saver.best,
             saver.best_epoch, save_dir)
    return {**row, "best_psnr": saver.best, "best_epoch": saver.best_epoch,
            "train_seconds": round(time.time() - t_start, 1)}


def _check_inputs(args: argparse.Namespace):
    """The image folders, the save folder, the device and the checkpoint to resume, checked before anything is
    written; returns (save folder, device, the checkpoint or None)."""
    from ws_dan.common.run_dir import RunDirError, check_run_dir
    from ws_dan.common.runtime import fail, resolve_device
    from ws_dan.models.checkpoint import CheckpointError, load_checkpoint

    for d in args.hr_dir + (args.val_dir or []):
        if not Path(d).is_dir():
            fail(f"{d}: expected a folder of high-resolution images; it is not a folder")
    save_dir = Path(args.save_dir)
    try:
        check_run_dir(save_dir, args.hr_dir + (args.val_dir or []), resume=bool(args.ckpt), overwrite=args.overwrite)
        device = resolve_device(args.device)
        resume = load_checkpoint(args.ckpt, kind="sr") if args.ckpt else None
    except (RunDirError, CheckpointError, RuntimeError) as e:
        fail(str(e))
    return save_dir, device, resume


def _images(args: argparse.Namespace, log) -> tuple[list, list]:
    """The training and validation images; those smaller than one HR patch cannot give a training pair."""
    from super_resolution.training import hold_out, scan_hr_images
    from ws_dan.common.images import UnreadableImageError
    from ws_dan.common.runtime import fail

    hp = args.patch_size * args.scale
    try:
        train_images, rejected = scan_hr_images(args.hr_dir, hp, strict=args.strict)
        val_images, val_rejected = (scan_hr_images(args.val_dir, 4 * args.scale, strict=args.strict)
                                    if args.val_dir else ([], []))
    except UnreadableImageError as e:
        fail(f"{e}\n(--strict: fix or remove this file, or run without --strict to skip it)")
    for path, reason in (rejected + val_rejected)[:5]:
        log.warning("skipped %s: %s", path, reason)
    if len(rejected + val_rejected) > 5:
        log.warning("... %d file(s) skipped in all", len(rejected + val_rejected))
    if not args.val_dir:
        train_images, val_images = hold_out(train_images, args.val_fraction, args.seed)
    if not train_images:
        fail(f"{', '.join(args.hr_dir)}: no readable image with both sides >= {hp} pixels (the HR patch: "
             f"--patch-size {args.patch_size} x --scale {args.scale}); need at least 2 (one for validation)")
    if not val_images:
        fail("no validation images (give --val-dir or at least 2 images in --hr-dir)")
    return train_images, val_images


def _model(args: argparse.Namespace, resume):
    """The network: the checkpoint's when resuming (its variant and scale must be the flags'), else a new one."""
    from super_resolution.dbpn import DBPN
    from super_resolution.weights import SRWeightsError, load_dbpn_weights
    from ws_dan.common.runtime import fail

    if resume is None:
        return DBPN(args.model, args.scale, residual=True if args.residual else None)
    cfg = resume["config"]
    if (cfg.get("variant"), int(cfg.get("scale", 0))) != (args.model, args.scale):
        fail(f"{args.ckpt}: holds {cfg.get('variant')} at {cfg.get('scale')}x; this run asks for --model "
             f"{args.model} --scale {args.scale}")
    model = DBPN(args.model, args.scale, residual=bool(cfg.get("residual", False)))
    try:
        load_dbpn_weights(model, resume["model"], args.ckpt)
    except SRWeightsError as e:
        fail(str(e))
    return model


def _trainer(args: argparse.Namespace, model, train_images: list, val_items: list, device, save_dir: Path, log):
    """The patch loader, Adam with the lr / 10 step, and the Trainer: L1 steps, PSNR/SSIM validation, best.pt on
    the validation PSNR, --time-limit ending it early. Returns (trainer, saver, patches per epoch, start time)."""
    import time

    import torch

    from super_resolution.training import SRPatchDataset, metrics_row, train_one_epoch, validate
    from super_resolution.weights import sr_config
    from ws_dan.training.trainer import CheckpointSaver, EpochEnd, Trainer, TrainerConfig

    generator = torch.Generator().manual_seed(args.seed)
    dataset = SRPatchDataset(train_images, args.scale, args.patch_size, args.patches_per_image, augment=True)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=min(args.batch_size, len(dataset)), shuffle=True, drop_last=True,
        num_workers=args.workers, generator=generator, pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    decay = args.lr_decay_epoch if args.lr_decay_epoch is not None else max(args.epochs // 2, 1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[decay], gamma=0.1)
    deadline = time.time() + args.time_limit * 60 if args.time_limit > 0 else None
    t_start = time.time()

    def log_epoch(e: EpochEnd) -> None:
        log.info("epoch %d/%d  L1 %.4f (%d steps)  | val PSNR %.2f dB SSIM %.4f (bicubic %.2f / %.4f)%s | "
                 "lr %.2g  %.0fs", e.epoch, e.epochs, e.train["loss"], e.train["steps"], e.val["psnr"],
                 e.val["ssim"], e.val["bicubic_psnr"], e.val["bicubic_ssim"], " (best)" if e.is_best else "",
                 e.lr, e.row["seconds"])
        if e.train["stopped"]:
            log.info("--time-limit %.1f min reached after %.0f s of training; stopped after epoch %d",
                     args.time_limit, time.time() - t_start, e.epoch)
            e.trainer.stop_requested = True

    saver = CheckpointSaver(save_dir, metric="val_psnr", mode="max", kind="sr", best_key="best_psnr")
    trainer = Trainer(
        TrainerConfig(epochs=args.epochs, seed=args.seed, args=dict(vars(args))), model, optimizer, scheduler,
        train_one_epoch=lambda epoch: train_one_epoch(model, loader, optimizer, device, deadline, args.progress,
                                                      desc=f"epoch {epoch}"),
        evaluate=lambda epoch: validate(model, val_items, args.scale, device),
        saver=saver, make_row=metrics_row, extra_state=lambda: {"config": sr_config(model)}, generator=generator,
        callbacks=[log_epoch])
    return trainer, saver, len(dataset), t_start


def _fit(trainer) -> dict:
    """Run the epochs; a failure as one error line, Ctrl-C as exit status 130 (last.pt saved)."""
    from ws_dan.common.images import UnreadableImageError
    from ws_dan.common.runtime import fail
    from ws_dan.training.trainer import TrainingError, TrainingInterrupted

    try:
        return trainer.fit()
    except UnreadableImageError as e:
        fail(f"{e}\n(an image became unreadable during training)")
    except TrainingError as e:
        fail(str(e))
    except TrainingInterrupted:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main(get_args_parser().parse_args())
