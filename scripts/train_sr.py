"""Train a DBPN super-resolution network from a folder (or several) of high-resolution photos.

    python scripts/train_sr.py --hr-dir photos/ --save-dir runs/sr --model dbpn-s --scale 4 -e 100

Low-resolution inputs are made on the fly (PIL bicubic reduction of random HR crops, random flips and quarter
turns); L1 loss, Adam (lr 1e-4), lr / 10 at --lr-decay-epoch (default: halfway). Each epoch ends with the
validation PSNR/SSIM (Y channel, border cropped) of held-out images beside bicubic's.

S receives last.pt (every epoch), best.pt (best validation PSNR), metrics.csv, args.json and train.log; the
checkpoints carry the variant and the scale, load with weights_only=True, and are what --model_path takes in
super_resolve.py and eval_sr.py. Resume with -c S/last.pt. --time-limit M stops after M minutes (then
validates and saves), for a training run of a stated length.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout too

from ws_dan.utils import default_workers  # noqa: E402  (ws_dan.utils imports torch lazily)

MODELS = ["dbpn-s", "dbpn", "dbpn-res-mr64-3", "dbpnll"]


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train a DBPN super-resolution network (Haris et al., CVPR 2018)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--hr-dir", nargs="+", required=True,
                   help="folder(s) of high-resolution images (searched recursively)")
    p.add_argument("--save-dir", "--sd", required=True, help="folder for checkpoints, metrics and the log")
    p.add_argument("--model", "-m", choices=MODELS, default="dbpn-s",
                   help="dbpn-s (2.4 M parameters at 4x), dbpn (D-DBPN, 10.4 M), dbpn-res-mr64-3 (recurrent, "
                        "residual), dbpnll (10 stages, 15.3 M)")
    p.add_argument("--scale", type=int, choices=[2, 4, 8], default=4)
    p.add_argument("--residual", action="store_true",
                   help="add the bicubic enlargement to the output and learn only the correction (always on for "
                        "dbpn-res-mr64-3); trains much faster from scratch")
    p.add_argument("--val-dir", nargs="+", default=None,
                   help="validation images; default: hold out --val-fraction of the --hr-dir images")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the HR images held out (no --val-dir)")
    p.add_argument("--val-crop", type=int, default=256,
                   help="validate on centre crops of at most this many HR pixels a side (0: whole images)")
    p.add_argument("-e", "--epochs", type=int, default=100)
    p.add_argument("-b", "--batch-size", type=int, default=16)
    p.add_argument("--patch-size", type=int, default=40, help="LR patch side (the HR patch is scale times that)")
    p.add_argument("--patches-per-image", type=int, default=8, help="random patches per image and epoch")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--lr-decay-epoch", type=int, default=None, help="divide the lr by 10 here; default epochs // 2")
    p.add_argument("--time-limit", type=float, default=0.0,
                   help="stop after this many minutes of training (0: no limit); validates and saves first")
    p.add_argument("-j", "--workers", type=int, default=default_workers(), help="data loading processes")
    p.add_argument("-c", "--ckpt", default=None, help="checkpoint to resume from (e.g. SAVE_DIR/last.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="tqdm progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def main(args: argparse.Namespace) -> dict:
    """Train; returns the last epoch's metrics row (also in metrics.csv) plus the best validation PSNR."""
    import torch

    from ws_dan.images import UnreadableImageError
    from super_resolution.dbpn import DBPN
    from super_resolution.training import (
        SRPatchDataset, prepare_validation, scan_hr_images, train_one_epoch, validate,
    )
    from super_resolution.weights import SRWeightsError, load_dbpn_weights, sr_config
    from ws_dan.checkpoint import CheckpointError, get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
    from ws_dan.utils import fail, resolve_device, seed_everything, setup_logging
    from ws_dan.io import read_csv_rows, write_csv, write_json

    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    log = setup_logging(save_dir / "train.log", args.verbose)
    seed_everything(args.seed)
    for d in args.hr_dir + (args.val_dir or []):
        if not Path(d).is_dir():
            fail(f"{d}: expected a folder of high-resolution images; it is not a folder")
    if args.patch_size < 1 or args.batch_size < 1 or args.epochs < 1:
        fail("--patch-size, --batch-size and --epochs must be positive")
    try:
        device = resolve_device(args.device)
        resume = load_checkpoint(args.ckpt, kind="sr") if args.ckpt else None
    except (CheckpointError, RuntimeError) as e:
        fail(str(e))

    # Data: images smaller than one HR patch cannot give a training pair.
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
        g = torch.Generator().manual_seed(args.seed)
        order = torch.randperm(len(train_images), generator=g).tolist()
        n_val = max(1, round(len(train_images) * args.val_fraction)) if len(train_images) > 1 else 0
        val_images = [train_images[i] for i in sorted(order[:n_val])]
        train_images = [train_images[i] for i in sorted(order[n_val:])]
    if not train_images:
        fail(f"{', '.join(args.hr_dir)}: no readable image with both sides >= {hp} pixels (the HR patch: "
             f"--patch-size {args.patch_size} x --scale {args.scale}); need at least 2 (one for validation)")
    if not val_images:
        fail("no validation images (give --val-dir or at least 2 images in --hr-dir)")
    val_items = prepare_validation(val_images, args.scale, args.val_crop)

    # Model: the checkpoint's variant and scale when resuming (the flags must agree).
    if resume is not None:
        cfg = resume["config"]
        if (cfg.get("variant"), int(cfg.get("scale", 0))) != (args.model, args.scale):
            fail(f"{args.ckpt}: holds {cfg.get('variant')} at {cfg.get('scale')}x; this run asks for --model "
                 f"{args.model} --scale {args.scale}")
        model = DBPN(args.model, args.scale, residual=bool(cfg.get("residual", False)))
        try:
            load_dbpn_weights(model, resume["model"], args.ckpt)
        except SRWeightsError as e:
            fail(str(e))
    else:
        model = DBPN(args.model, args.scale, residual=True if args.residual else None)
    model.to(device)

    generator = torch.Generator().manual_seed(args.seed)
    dataset = SRPatchDataset(train_images, args.scale, args.patch_size, args.patches_per_image, augment=True)
    batch = min(args.batch_size, len(dataset))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=args.workers, generator=generator,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, betas=(0.9, 0.999))
    decay = args.lr_decay_epoch if args.lr_decay_epoch is not None else max(args.epochs // 2, 1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[decay], gamma=0.1)

    start_epoch, best_psnr, best_epoch, rows = 0, -math.inf, 0, []
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        start_epoch = int(resume["epoch"])
        best_psnr, best_epoch = float(resume.get("best_psnr", -math.inf)), int(resume.get("best_epoch", 0))
        set_rng_state(resume["rng"])
        generator.set_state(resume["rng"]["loader"])
        if (save_dir / "metrics.csv").is_file():
            rows = [r for r in read_csv_rows(save_dir / "metrics.csv") if int(r["epoch"]) <= start_epoch]
        log.info("resumed from %s at epoch %d (best validation PSNR %.2f dB at epoch %d)", args.ckpt, start_epoch,
                 best_psnr, best_epoch)
    write_json(save_dir / "args.json", {**vars(args), "config": sr_config(model)})
    log.info("%s %dx%s, %d parameters | train %d images (%d patches of %d px per epoch), validation %d | %s",
             model.spec.name, args.scale, " residual" if model.residual else "",
             sum(p.numel() for p in model.parameters()), len(train_images), len(dataset), args.patch_size,
             len(val_items), device)

    def state(epoch: int, interrupted: bool = False) -> dict:
        rng = get_rng_state()
        rng["loader"] = generator.get_state()
        return {"config": sr_config(model), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "best_psnr": best_psnr,
                "best_epoch": best_epoch, "rng": rng, "args": {k: v for k, v in vars(args).items()},
                "interrupted": interrupted}

    deadline = time.time() + args.time_limit * 60 if args.time_limit > 0 else None
    t_start = time.time()
    row: dict = rows[-1] if rows else {}
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, args.epochs):
            t0 = time.time()
            lr = optimizer.param_groups[0]["lr"]
            train_m = train_one_epoch(model, loader, optimizer, device, deadline, args.progress,
                                      desc=f"epoch {epoch + 1}")
            scheduler.step()
            val_m = validate(model, val_items, args.scale, device)
            is_best = val_m["psnr"] > best_psnr
            if is_best:
                best_psnr, best_epoch = val_m["psnr"], epoch + 1
            row = {"epoch": epoch + 1, "train_l1": round(train_m["loss"], 5), "steps": train_m["steps"],
                   "patches": train_m["patches"], "val_psnr": round(val_m["psnr"], 3),
                   "val_ssim": round(val_m["ssim"], 4), "val_bicubic_psnr": round(val_m["bicubic_psnr"], 3),
                   "val_bicubic_ssim": round(val_m["bicubic_ssim"], 4), "lr": lr,
                   "seconds": round(time.time() - t0, 1)}
            rows.append(row)
            write_csv(save_dir / "metrics.csv", rows)
            save_checkpoint(save_dir / "last.pt", state(epoch + 1), kind="sr")
            if is_best:
                _copy_atomic(save_dir / "last.pt", save_dir / "best.pt")
            log.info("epoch %d/%d  L1 %.4f (%d steps)  | val PSNR %.2f dB SSIM %.4f (bicubic %.2f / %.4f)%s | "
                     "lr %.2g  %.0fs", epoch + 1, args.epochs, train_m["loss"], train_m["steps"], val_m["psnr"],
                     val_m["ssim"], val_m["bicubic_psnr"], val_m["bicubic_ssim"], " (best)" if is_best else "",
                     lr, row["seconds"])
            if train_m["stopped"]:
                log.info("--time-limit %.1f min reached after %.0f s of training; stopped after epoch %d",
                         args.time_limit, time.time() - t_start, epoch + 1)
                break
    except UnreadableImageError as e:
        fail(f"{e}\n(an image became unreadable during training)")
    except KeyboardInterrupt:
        save_checkpoint(save_dir / "last.pt", state(epoch, interrupted=True), kind="sr")
        log.warning("interrupted during epoch %d: saved %s (resume with -c)", epoch + 1, save_dir / "last.pt")
        raise SystemExit(130)
    log.info("done: best validation PSNR %.2f dB at epoch %d; checkpoints and metrics.csv in %s", best_psnr,
             best_epoch, save_dir)
    return {**row, "best_psnr": best_psnr, "best_epoch": best_epoch, "train_seconds": round(time.time() - t_start, 1)}


if __name__ == "__main__":
    main(get_args_parser().parse_args())
