"""Checkpoints: round trip, atomic writes, weights_only safety, clear errors."""

from __future__ import annotations

import csv
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_script

from ws_dan.models.checkpoint import (
    CheckpointError,
    check_compatible,
    get_rng_state,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from ws_dan.models.wsdan import WSDAN, ModelConfig


def _model():
    torch.manual_seed(0)
    model = WSDAN(ModelConfig(backbone="tiny", num_classes=3, class_names=["a", "b", "c"], num_attentions=4,
                              image_size=32))
    model.feature_centers.normal_()  # non-zero so the round trip is checked
    return model.eval()


def test_round_trip_rebuilds_the_same_model(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "m.pt", {"config": model.config.to_dict(), "model": model.state_dict(), "epoch": 3})
    state = load_checkpoint(tmp_path / "m.pt")
    assert state["epoch"] == 3 and state["format_version"] == 1
    again = model_from_checkpoint(tmp_path / "m.pt")
    assert again.config == model.config
    assert torch.equal(again.feature_centers, model.feature_centers)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(again.predict_logits(x)[0], model.predict_logits(x)[0])
    # only plain values: loads with weights_only=True without any allow-listing
    torch.load(tmp_path / "m.pt", weights_only=True)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"config": {}, "model": {}, "epoch": 1})

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"config": {}, "model": {}, "epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1  # the previous file is intact
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # not mkstemp's 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_truncated_foreign_and_missing_files(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "ok.pt", {"config": model.config.to_dict(), "model": model.state_dict()})
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save(model.state_dict(), tmp_path / "bare_state_dict.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this toolkit"):
        load_checkpoint(tmp_path / "bare_state_dict.pt")
    save_checkpoint(tmp_path / "sr.pt", {"config": {}, "model": {}}, kind="sr")
    with pytest.raises(CheckpointError, match="this is a 'sr' checkpoint; a 'wsdan' checkpoint is needed"):
        load_checkpoint(tmp_path / "sr.pt")
    assert load_checkpoint(tmp_path / "sr.pt", kind=None)["kind"] == "sr"
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_checkpoint(tmp_path / "nope.pt")


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Payload:
    ran = False

    def __reduce__(self):
        return (_mark_ran, ())


def _mark_ran():
    _Payload.ran = True
    return "pwned"


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_with_code_is_refused_not_executed(tmp_path):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "ws_dan.checkpoint", "config": _Payload(), "model": {}}, f)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not _Payload.ran


def test_mismatch_names_both_sides(tmp_path):
    cfg = _model().config
    with pytest.raises(CheckpointError) as info:
        check_compatible(cfg, {"backbone": "resnet50", "class_names": ["a", "b", "c", "d"]}, "run/last.pt")
    message = str(info.value)
    assert "run/last.pt" in message and "'tiny'" in message and "'resnet50'" in message
    assert "3 classes vs 4" in message and "['d']" in message
    check_compatible(cfg, {"backbone": "tiny", "class_names": ["a", "b", "c"]}, "x")  # fits: no error


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    model = _model()
    state = model.state_dict()
    state["fc.weight"] = torch.zeros(5, state["fc.weight"].shape[1])
    save_checkpoint(tmp_path / "m.pt", {"config": model.config.to_dict(), "model": state})
    with pytest.raises(CheckpointError, match=r"fc.weight: checkpoint \(5, 128\) vs model \(3, 128\)"):
        model_from_checkpoint(tmp_path / "m.pt")


def test_rng_state_round_trip(tmp_path):
    import random

    import numpy as np

    state = get_rng_state()
    save_checkpoint(tmp_path / "r.pt", {"config": {}, "model": {}, "rng": state})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


# ---------------------------------------------------------------------------------------------------------------
# A checkpoint of an older layout of the code still loads, predicts the same and resumes

PRE_MOVE = Path(__file__).parent / "data" / "pre_move"


def test_a_checkpoint_written_before_the_subpackages_predicts_the_same(tiny_data, tmp_path):
    run_script("predict", ["--data-dir", str(tiny_data / "test"), "--ckpt-path", str(PRE_MOVE / "wsdan_tiny_epoch1.pt"),
                           "--output-dir", str(tmp_path / "pred"), "--device", "cpu"])
    with open(PRE_MOVE / "predictions.csv") as f:
        before = list(csv.DictReader(f))
    with open(tmp_path / "pred" / "predictions.csv") as f:
        now = list(csv.DictReader(f))
    assert [r["image"] for r in now] == [r["image"] for r in before] and len(now) == 12
    assert [r["predicted"] for r in now] == [r["predicted"] for r in before]
    for a, b in zip(now, before):
        assert float(a["confidence"]) == pytest.approx(float(b["confidence"]), abs=2e-6), a["image"]


def test_a_checkpoint_written_before_the_subpackages_resumes(tiny_data, tmp_path):
    """Its optimizer and (CosineAnnealingLR) scheduler state load into today's trainer and the run goes on."""
    from conftest import TINY_TRAIN

    save = tmp_path / "run"
    save.mkdir()
    shutil.copy(PRE_MOVE / "wsdan_tiny_epoch1.pt", save / "last.pt")
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), *TINY_TRAIN, "-e", "2", "--sf", "0",
                         "-c", str(save / "last.pt")])
    state = load_checkpoint(save / "last.pt")
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 2
