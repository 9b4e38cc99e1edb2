"""Train WS-DAN (or the plain CNN baseline) on a folder of class folders.

    python scripts/train.py --data-dir D --save-dir S [-m efficientnet-b3] [-e 100] [-b 32] [--lr 0.001]

D holds train/<class>/ and test/<class>/. S receives last.pt (every epoch), best.pt (best validation top-1),
epoch_NNN.pt (every --save-freq epochs), metrics.csv, curves.png, args.json and train.log.
Resume with -c S/last.pt: weights, feature centers, optimizer, scheduler, epoch and RNG state continue.
A save folder that already holds a run is refused unless -c resumes it or --overwrite replaces it.

Several GPUs or machines: launch the same command with torchrun (DistributedDataParallel; -b is per process):

    torchrun --nproc_per_node 4 scripts/train.py --data-dir D --save-dir S -b 16

The flags and their defaults: ws_dan.training.recipe's add_train_arguments and TrainSettings; main() is the
recipe's steps (ws_dan.training.recipe) top to bottom, the same ones train_classifier() runs for the cleaner or a
notebook.
Bad input ends in one line; Ctrl-C in exit status 130 with last.pt saved.
"""

from __future__ import annotations

import argparse

# Only what --help needs is imported here (torch, torchvision, matplotlib... load in main), so --help is quick.
from ws_dan.training.recipe import TrainSettings, add_train_arguments


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The flags: the seed project's names and defaults, bounds checked by argparse, grouped as TrainSettings
    (model, optimization, WS-DAN step, data, speed, output); defined once in ws_dan.training.recipe.add_train_arguments,
    as train_cleaner.py takes them too."""
    p = argparse.ArgumentParser(description="Train WS-DAN (See Better Before Looking Closer, Hu et al. 2019)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)

    return add_train_arguments(p)


def main(args: argparse.Namespace) -> dict:
    """Train; returns the final epoch's metrics row (also written to metrics.csv)."""
    from ws_dan.common.io import InputError, os_error_message
    from ws_dan.common.runtime import fail, seed_everything
    from ws_dan.training import distributed as dist
    from ws_dan.training import recipe
    from ws_dan.training.recipe import TrainSetupError
    from ws_dan.training.trainer import TrainingError, TrainingInterrupted

    settings = TrainSettings.from_namespace(args)
    # Processes: one, or one per GPU under torchrun. Only rank 0 writes files, logs to the console and shows
    # progress bars; every rank seeds differently so crops, drops and augmentations differ between them.
    info = dist.init_distributed(settings.dist_backend)
    try:
        early = recipe.start_logging(settings, info)  # console only until the run folder is known to be usable
        seed_everything(settings.seed + info.rank)  # before the model is built: its initialisation depends on it
        inputs = recipe.check_inputs(settings, info)  # run folder, device, data, checkpoint: read, nothing written
        config, model = recipe.resolve_model(settings, inputs)  # the checkpoint's when resuming, else the flags'
        settings = recipe.resolve_recipe(settings, config, inputs.resume)  # unset knobs: the method's recipe
        datasets = recipe.build_datasets(settings, config, inputs)  # transforms; --augment checked
        recipe.open_run_dir(settings, inputs, info, early)  # the first write: run folder, train.log
        model, forward_model = recipe.wrap_model(settings, model, inputs, info)  # device, DDP / DataParallel, compile
        loaders = recipe.build_loaders(settings, datasets, inputs, info)
        optim = recipe.build_optimization(settings, model, config, inputs, loaders)  # optimizer, warm-up, AMP, step
        trainer = recipe.build_trainer(settings, model, forward_model, config, inputs, loaders, optim, info)  # resumed
        recipe.write_args_json(settings, config, inputs, info)
        recipe.log_run(settings, config, inputs, datasets, loaders, optim, info)
        row = trainer.fit()
        recipe.write_report(settings, model, config, inputs, datasets, optim, info, row["epoch"])  # report.html
        recipe.log_done(trainer, inputs)
        return row
    except (TrainSetupError, TrainingError, InputError) as e:  # InputError: also a checkpoint the disk refused
        fail(str(e))
    except OSError as e:  # e.g. a save folder that cannot be created, or train.log in a read-only folder
        fail(os_error_message(e, settings.save_dir))
    except TrainingInterrupted:
        raise SystemExit(130) from None
    finally:
        dist.cleanup()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
