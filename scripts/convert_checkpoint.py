"""Convert a WS-DAN checkpoint from other code (the reference Grab project, GuYuc's WS-DAN.PyTorch).

    python scripts/convert_checkpoint.py --from grab --input model.pth --output checkpoints/grab_b3.pt \
        --num-classes 196 --class-names classes.txt

The output is a checkpoint of this toolkit (weights_only-safe, with its config inside) that predict.py and
export.py use directly; the converted network gives the same logits as the original code.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Convert another project's WS-DAN checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--from", dest="fmt", required=True, choices=["grab", "guyuc"],
                   help="grab: sun-yitao/GrabAIChallenge (EfficientNet-B3); guyuc: GuYuc/WS-DAN.PyTorch (Inception-v3)")
    p.add_argument("--input", "-i", required=True, help="the old checkpoint file")
    p.add_argument("--output", "-o", required=True, help="the new checkpoint (.pt)")
    p.add_argument("--num-classes", type=int, default=None, help="checked against the classifier's size")
    p.add_argument("--class-names", default=None,
                   help="text file with one class name per line, in the training label order "
                        "(torchvision ImageFolder: sorted folder names); default class_000, class_001, ...")
    p.add_argument("-m", "--model", default=None,
                   help="backbone the old model used (default: efficientnet-b3 for grab, inception for guyuc)")
    p.add_argument("--image-size", type=int, default=None, help="input size (default: 512 grab, 448 guyuc)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a file that weights_only loading refuses; unpickling such a file can run code, "
                        "so use this only for files from a source you trust")
    return p


def main(args: argparse.Namespace) -> Path:
    from ws_dan.common.runtime import fail
    from ws_dan.models.checkpoint import CheckpointError, save_checkpoint
    from ws_dan.models.convert import ConversionError, convert_checkpoint

    names = None
    if args.class_names:
        path = Path(args.class_names)
        if not path.is_file():
            fail(f"--class-names {path}: file not found (expected one class name per line)")
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        model, state = convert_checkpoint(args.input, args.fmt, trust_pickle=args.trust_pickle,
                                          num_classes=args.num_classes, class_names=names, backbone=args.model,
                                          image_size=args.image_size)
    except (ConversionError, CheckpointError, ValueError) as e:
        fail(str(e))
    out = save_checkpoint(args.output, state)
    cfg = model.config
    print(f"converted {args.input} ({args.fmt}) -> {out}: {cfg.backbone}, M={cfg.num_attentions}, "
          f"{cfg.num_classes} classes, {cfg.image_size} px")
    return out


if __name__ == "__main__":
    main(get_args_parser().parse_args())
