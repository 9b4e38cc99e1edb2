"""Export a WS-DAN checkpoint's inference path to ONNX or TorchScript for deployment.

    python scripts/export.py --ckpt-path best.pt --format onnx [--output model.onnx]

The graph takes RGB images as float32 in [0, 1], shape (N, 3, S, S) (S = the checkpoint's image size, any N),
normalises them, averages the logits of the raw image and of its attention crop, and returns softmax
probabilities (N, classes). After writing, the file is run on random images and compared with PyTorch.
The output never replaces the checkpoint (also not through a symlink or a hard link).
"""

from __future__ import annotations

import argparse

from ws_dan.common.cli_types import positive_int

TOLERANCE = 1e-4  # max |p_exported - p_pytorch| accepted by the check (float32 graphs agree to ~1e-6)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a WS-DAN checkpoint (raw + attention crop, softmax)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=add_help)
    p.add_argument("--ckpt-path", "--cp", required=True, help="checkpoint written by train.py or convert_checkpoint.py")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--output", "-o", default=None, help="output file (default: the checkpoint's name with .onnx / .ts)")
    p.add_argument("--opset", type=positive_int, default=18, help="ONNX opset")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help=f"compare the exported graph with PyTorch on random images (max abs difference < {TOLERANCE})")
    p.add_argument("--seed", type=int, default=0, help="seed of the check's random images")
    return p


def main(args: argparse.Namespace) -> dict:
    from ws_dan.common.owned_files import OutputError, check_not_an_input
    from ws_dan.common.runtime import fail
    from ws_dan.models.checkpoint import CheckpointError, model_from_checkpoint
    from ws_dan.models.export import default_output, export_onnx, export_torchscript, max_abs_difference

    out = args.output if args.output else default_output(args.ckpt_path, args.format)
    try:
        check_not_an_input(out, [args.ckpt_path], flag="--output")  # before any work: nothing to lose
        model = model_from_checkpoint(args.ckpt_path)
    except (CheckpointError, OutputError) as e:
        fail(str(e))
    if args.format == "onnx":
        try:
            import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
            import onnxscript  # noqa: F401
        except ImportError:
            fail("ONNX export needs the packages onnx and onnxscript: pip install onnx onnxscript onnxruntime")
        export_onnx(model, out, opset=args.opset)
    else:
        export_torchscript(model, out)
    result = {"output": str(out), "format": args.format}
    print(f"wrote {out} ({args.format}; input 'images' float32 (N, 3, {model.config.load_size}, "
          f"{model.config.load_size}) in [0, 1], output 'probabilities' (N, {model.config.num_classes}))")
    if args.check:
        if args.format == "onnx":
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                print("check skipped: onnxruntime is not installed (pip install onnxruntime)")
                return result
        diff = max_abs_difference(model, out, args.format, seed=args.seed)
        result["max_abs_diff"] = diff
        print(f"check: max |p_{args.format} - p_pytorch| = {diff:.2e} over batches of 1 and 3 random images "
              f"({'OK' if diff < TOLERANCE else 'FAILED'}, tolerance {TOLERANCE})")
        if diff >= TOLERANCE:
            fail(f"{out}: exported graph disagrees with PyTorch by {diff:.2e} (tolerance {TOLERANCE})")
    return result


if __name__ == "__main__":
    main(get_args_parser().parse_args())
