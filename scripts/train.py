"""Train WS-DAN (or the plain CNN baseline) on a folder of class folders.

    python scripts/train.py --data-dir D --save-dir S [-m efficientnet-b3] [-e 100] [-b 32] [--lr 0.001]

D holds train/<class>/ and test/<class>/. S receives last.pt (every epoch), best.pt (best validation top-1),
epoch_NNN.pt (every --save-freq epochs), metrics.csv, curves.png, args.json and train.log.
Resume with -c S/last.pt: weights, feature centers, optimizer, scheduler, epoch and RNG state continue.
A save folder that already holds a run is refused unless -c resumes it or --overwrite replaces it.

Several GPUs or machines: launch the same command with torchrun (DistributedDataParallel; -b is per process):

    torchrun --nproc_per_node 4 scripts/train.py --data-dir D --save-dir S -b 16

The recipe (model, data, optimizer, the epoch loop) is ws_dan.classification.train_classifier; this script
parses the flags and turns its errors into one line (Ctrl-C: exit status 130, last.pt saved).
"""

from __future__ import annotations

import argparse

# Only what --help needs is imported here (torch, torchvision, matplotlib... load in main), so --help is quick.
from ws_dan.classification import get_train_parser


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    return get_train_parser(add_help)


def main(args: argparse.Namespace) -> dict:
    """Train; returns the final epoch's metrics row (also written to metrics.csv)."""
    from ws_dan.classification import TrainSetupError, train_classifier
    from ws_dan.trainer import TrainingError, TrainingInterrupted
    from ws_dan.utils import fail

    try:
        return train_classifier(args)
    except (TrainSetupError, TrainingError) as e:
        fail(str(e))
    except TrainingInterrupted:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main(get_args_parser().parse_args())
