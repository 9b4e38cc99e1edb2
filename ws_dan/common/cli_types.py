"""argparse ``type=`` functions with bounds, shared by every script.

A bad value ends in argparse's usual one-line error naming the flag, e.g.
``train.py: error: argument --image-size: expected an integer >= 1, got '0'`` -- instead of a zero that
quietly falls back to a default (a falsy value reads as "not given") or a crash an epoch later.
Each function takes the command-line text and returns the parsed value, so it also works on defaults.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Union

__all__ = ["bounded_int", "bounded_float", "positive_int", "nonneg_int", "positive_float", "nonneg_float",
           "unit_float", "open_unit_float"]


def _parse(text: Union[str, int, float], kind: type, what: str):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def bounded_int(low: int, high: Union[int, None] = None) -> Callable[[str], int]:
    """An integer in [low, high] (no upper bound when ``high`` is None)."""
    what = f"an integer >= {low}" if high is None else f"an integer from {low} to {high}"

    def parse(text: str) -> int:
        value = _parse(text, int, what)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def bounded_float(low: float, high: Union[float, None] = None, low_open: bool = False,
                  high_open: bool = False) -> Callable[[str], float]:
    """A finite float in the interval from ``low`` to ``high``; ``*_open`` excludes that end."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    what = (f"a number {'>' if low_open else '>='} {low:g}" if high is None
            else f"a number in {left}{low:g}, {high:g}{right}")

    def parse(text: str) -> float:
        value = _parse(text, float, what)
        if value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if high is not None and (value > high or (high_open and value == high)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = "float"
    return parse


#: 1, 2, 3, ... (epochs, batch size, image size, number of attention maps, accumulation steps)
positive_int = bounded_int(1)
#: 0, 1, 2, ... (worker processes, "every N epochs, 0: never")
nonneg_int = bounded_int(0)
#: > 0 (learning rates, decay factors)
positive_float = bounded_float(0.0, low_open=True)
#: >= 0 (weight decay, padding, minutes)
nonneg_float = bounded_float(0.0)
#: [0, 1] (fractions, rates, thresholds)
unit_float = bounded_float(0.0, 1.0)
#: (0, 1) (a share that must leave something on both sides)
open_unit_float = bounded_float(0.0, 1.0, low_open=True, high_open=True)
