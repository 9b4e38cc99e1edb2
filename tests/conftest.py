"""Shared fixtures: a tiny generated dataset, the repository's scripts as importable modules, ../shared."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "scripts"))

# Tests must never download: make any attempt fail loudly instead of hanging on a closed network.
torch.hub.set_dir(str(ROOT / ".pytest_cache" / "torch_hub_unused"))


def script(name: str):
    """Import scripts/<name>.py as a module (they are thin argparse wrappers with get_args_parser/main)."""
    return importlib.import_module(name)


def run_script(name: str, argv: list[str]):
    mod = script(name)
    return mod.main(mod.get_args_parser().parse_args(argv))


def shared(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test where that folder is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture(autouse=True)
def _fresh_logging():
    """A script's setup_logging binds its console handler to this test's captured stderr, which pytest closes
    afterwards; the next test calling the library directly would log into a closed stream. Undo it after each test."""
    yield
    import logging

    from ws_dan.common.runtime import PROJECT_LOGGERS

    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler for the test: a process started in the background by a non-interactive
    shell inherits SIGINT ignored (POSIX), and then a real SIGINT would do nothing at all."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """3 classes x (8 train + 4 test) synthetic 64 px images: train/<class>/, test/<class>/."""
    from data_tools.synthetic import make_sample_dataset

    out = tmp_path_factory.mktemp("tiny") / "data"
    make_sample_dataset(out, num_classes=3, train_per_class=8, test_per_class=4, image_size=64, seed=1)
    return out


# --no-report: report.html costs each test run another pass; tests/test_train_settings.py and test_report.py check it.
TINY_TRAIN = ["-m", "tiny", "--no-pretrained", "--image-size", "64", "--num-attentions", "4", "-b", "8",
              "-j", "0", "--no-progress", "--lr", "0.001", "--device", "cpu", "--no-report"]
