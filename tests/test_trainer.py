"""The shared epoch loop (ws_dan.training.trainer), the run folder rules (ws_dan.common.run_dir), bounded flags
(ws_dan.common.cli_types)
and train.py / train_sr.py hardening: refusals before anything is written, --overwrite, stale temporary files,
Ctrl-C during the checkpoint write."""

from __future__ import annotations

import argparse
import csv
import math
import os
import signal

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TRAIN, run_script, script

from ws_dan.common.cli_types import nonneg_int, positive_float, positive_int, unit_float
from ws_dan.common.run_dir import RunDirError, check_run_dir, prepare_run_dir
from ws_dan.models.checkpoint import load_checkpoint
from ws_dan.training.optim import CosineSchedule, build_scheduler
from ws_dan.training.trainer import CheckpointSaver, Trainer, TrainerConfig, TrainingError, TrainingInterrupted


def _tree(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else None


# ---------------------------------------------------------------------------------------------------------------
# The loop on a tiny regression model: generic enough for a "min" metric (SR-style), exact resume, stops


class _Task:
    """y = x w + noise, fitted by SGD; the loss is the metric to minimise, like an SR loss."""

    def __init__(self, seed: int = 0):
        data = torch.Generator().manual_seed(0)  # the same data whatever the seed
        self.x = torch.randn(64, 4, generator=data)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(64, generator=data)
        torch.manual_seed(seed)
        self.model = torch.nn.Linear(4, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.scheduler = build_scheduler("step", self.optimizer, epochs=10, gamma=0.5, step_size=2)
        self.generator = torch.Generator().manual_seed(seed)

    def train_one_epoch(self, epoch):
        order = torch.randperm(64, generator=self.generator)
        total = 0.0
        for i in range(0, 64, 16):
            idx = order[i:i + 16]
            noise = 0.01 * torch.randn(16, 4)  # draws from the global RNG: resume must restore it
            loss = F.mse_loss(self.model(self.x[idx] + noise).squeeze(1), self.y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.item()
        return {"loss": total / 4}

    def evaluate(self, epoch):
        with torch.no_grad():
            return {"loss": F.mse_loss(self.model(self.x).squeeze(1), self.y).item()}

    def trainer(self, save_dir, epochs, **kwargs):
        saver = CheckpointSaver(save_dir, metric="val_loss", mode="min", save_freq=2, kind="test")
        return Trainer(TrainerConfig(epochs=epochs, seed=0), self.model, self.optimizer, self.scheduler,
                       self.train_one_epoch, self.evaluate, saver, generator=self.generator,
                       extra_state=lambda: {"config": {"what": "linear"}}, **kwargs)


def _load(path):
    return load_checkpoint(path, kind="test")


def test_fit_writes_rotation_metrics_and_best_by_min(tmp_path):
    task = _Task()
    row = task.trainer(tmp_path, 4).fit()
    assert row["epoch"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "epoch_002.pt", "epoch_004.pt", "last.pt",
                                                          "metrics.csv"]
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert [float(r["lr"]) for r in rows] == [0.05, 0.05, 0.025, 0.025]  # StepLR stepped once per epoch
    best = _load(tmp_path / "best.pt")
    losses = [float(r["val_loss"]) for r in rows]
    assert best["best_epoch"] == 1 + losses.index(min(losses))  # smallest loss, mode="min"
    assert best["best_loss"] == pytest.approx(min(losses), abs=1e-4)
    assert best["epoch"] == best["best_epoch"] and best["config"] == {"what": "linear"}
    assert _load(tmp_path / "epoch_002.pt")["epoch"] == 2 and _load(tmp_path / "last.pt")["epoch"] == 4


def test_resume_is_bit_identical(tmp_path):
    straight = _Task()
    straight.trainer(tmp_path / "a", 4).fit()
    first = _Task()
    first.trainer(tmp_path / "b", 2).fit()
    second = _Task(seed=5)  # other initial weights and RNG: the checkpoint must restore all of it
    second.model.load_state_dict(_load(tmp_path / "b" / "last.pt")["model"])
    trainer = second.trainer(tmp_path / "b", 4)
    assert trainer.resume(_load(tmp_path / "b" / "last.pt")) == 2
    trainer.fit()
    a, b = _load(tmp_path / "a" / "last.pt"), _load(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["best_epoch"] == b["best_epoch"] and a["best_loss"] == b["best_loss"]
    with open(tmp_path / "b" / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3", "4"]


def test_callback_can_stop_and_training_error_keeps_the_last_complete_epoch(tmp_path):
    task = _Task()
    seen = []

    def stop_after_two(end):
        seen.append((end.epoch, end.is_best, sorted(end.val)))
        if end.epoch == 2:
            end.trainer.stop_requested = True

    assert task.trainer(tmp_path / "stop", 10, callbacks=[stop_after_two]).fit()["epoch"] == 2
    assert seen[0] == (1, True, ["loss"]) and len(seen) == 2

    task = _Task()
    real = task.train_one_epoch

    def diverge(epoch):
        if epoch == 3:
            raise TrainingError("loss is nan at epoch 3")
        return real(epoch)

    task.train_one_epoch = diverge
    with pytest.raises(TrainingError, match="nan at epoch 3"):
        task.trainer(tmp_path / "nan", 5).fit()
    assert _load(tmp_path / "nan" / "last.pt")["epoch"] == 2  # untouched by the failed epoch


def test_ctrl_c_in_an_epoch_saves_an_interrupted_checkpoint(tmp_path):
    task = _Task()
    real = task.train_one_epoch

    def interrupt(epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(epoch)

    task.train_one_epoch = interrupt
    with pytest.raises(TrainingInterrupted) as info:
        task.trainer(tmp_path, 5).fit()
    assert info.value.epoch == 1 and info.value.checkpoint == tmp_path / "last.pt"
    state = _load(tmp_path / "last.pt")
    assert state["interrupted"] is True and state["epoch"] == 1


def test_saver_finishes_every_file_when_ctrl_c_comes_between_writes(tmp_path, monkeypatch):
    """save_checkpoint holds a Ctrl-C during its write and raises it afterwards: best.pt and epoch_NNN.pt must
    still be written before the saver stops."""
    import ws_dan.training.trainer

    real = ws_dan.training.trainer.save_checkpoint

    def save_then_interrupt(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ws_dan.training.trainer, "save_checkpoint", save_then_interrupt)
    saver = CheckpointSaver(tmp_path, metric="val_top1", save_freq=1)
    assert saver.update(1, 50.0)
    with pytest.raises(KeyboardInterrupt):
        saver.save_epoch({"config": {}, "model": {}, "epoch": 1}, 1, is_best=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "epoch_001.pt", "last.pt"]
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()


def test_saver_best_tracking_and_modes(tmp_path):
    up = CheckpointSaver(tmp_path, metric="val_top1", mode="max")
    assert [up.update(e, v) for e, v in enumerate([10.0, 30.0, 30.0, float("nan"), 20.0], 1)] == \
        [True, True, False, False, False]
    assert up.state() == {"best_top1": 30.0, "best_epoch": 2}  # the first of equal scores is kept
    down = CheckpointSaver(tmp_path, metric="val_loss", mode="min", best_key="best_l1")
    assert down.update(1, 0.5) and not down.update(2, 0.7) and down.update(3, 0.1)
    assert down.state() == {"best_l1": 0.1, "best_epoch": 3}
    with pytest.raises(ValueError, match="'max' or 'min'"):
        CheckpointSaver(tmp_path, mode="up")


def test_build_scheduler_names():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert isinstance(build_scheduler("plateau", opt, 5), torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert isinstance(build_scheduler("cosine", opt, 5), CosineSchedule)
    assert build_scheduler("step", opt, 5).gamma == 0.9
    with pytest.raises(ValueError, match="unknown learning-rate scheduler 'poly'"):
        build_scheduler("poly", opt, 5)


def _rates(scheduler, optimizer, epochs):
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_cosine_schedule_is_the_closed_form_and_anneals_within_the_budget():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    rates = _rates(CosineSchedule(opt, 8), opt, 8)
    assert rates == pytest.approx([0.05 * (1 + math.cos(math.pi * t / 8)) for t in range(8)], abs=1e-15)
    assert rates[0] == 0.1 and rates[-1] < 0.004  # the last epoch of any budget runs at under 4% of the peak


def test_cosine_schedule_resumed_with_a_larger_budget_follows_the_new_curve():
    """A 1-epoch run ends at rate 0; resumed with -e 3 it must not stay at 0, and must match an unbroken 3-epoch
    run bit for bit (the state holds no rate, only the epoch count and the base rates)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    straight = _rates(CosineSchedule(opt, 3), opt, 3)
    opt1 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    first = CosineSchedule(opt1, 1)
    _rates(first, opt1, 1)
    assert opt1.param_groups[0]["lr"] == 0.0
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    opt2.load_state_dict(opt1.state_dict())  # the optimizer's saved rate is 0
    resumed = CosineSchedule(opt2, 3)
    resumed.load_state_dict(first.state_dict())
    assert [0.1] + _rates(resumed, opt2, 2) == straight
    old = torch.optim.lr_scheduler.CosineAnnealingLR(opt1, T_max=4).state_dict()  # an older run's state loads too
    resumed.load_state_dict(old)
    assert resumed.last_epoch == old["last_epoch"]


# ---------------------------------------------------------------------------------------------------------------
# Bounded flag types


def test_cli_types_bounds():
    assert positive_int("3") == 3 and nonneg_int("0") == 0 and positive_float("1e-4") == 1e-4
    assert unit_float("1") == 1.0 and unit_float("0") == 0.0
    for fn, bad in [(positive_int, "0"), (positive_int, "2.5"), (nonneg_int, "-1"), (positive_float, "0"),
                    (positive_float, "nan"), (unit_float, "1.5"), (positive_int, "x")]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got '{bad}'"):
            fn(bad)


@pytest.mark.parametrize("flag,value", [("--image-size", "0"), ("--num-attentions", "0"), ("-e", "0"),
                                        ("-b", "0"), ("-j", "-1"), ("--accum-steps", "0"), ("--sf", "-1"),
                                        ("--lr", "0"), ("--lr", "-0.01"), ("--head-lr-scale", "0"),
                                        ("--warmup-epochs", "-1"), ("--logit-scale", "0"),
                                        ("--views-start-epoch", "0"), ("--diverge-factor", "-1"),
                                        ("--diverge-factor", "nan")])
def test_train_flags_refuse_out_of_range_values(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        script("train").get_args_parser().parse_args(["--dd", "D", "--sd", "S", flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    long_name = {"-e": "--epochs", "-b": "--batch-size", "-j": "--workers", "--sf": "--sf/--save-freq"}.get(flag, flag)
    assert f"argument {long_name.split('/')[0]}" in err or f"argument {flag}" in err, err
    assert f"got '{value}'" in err


@pytest.mark.parametrize("flag,value", [("-e", "0"), ("-b", "0"), ("--lr", "0"), ("--patch-size", "0"),
                                        ("-j", "-1")])
def test_train_sr_flags_refuse_out_of_range_values(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        script("train_sr").get_args_parser().parse_args(["--hr-dir", "H", "--sd", "S", flag, value])
    assert info.value.code == 2 and f"got '{value}'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The run folder: refusals before anything is written, --overwrite, stale temporary files


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.fixture(scope="module")
def previous_run(tiny_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("prev") / "run"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "2", "--sf", "2", *TINY_TRAIN])
    return save


def test_second_run_into_a_used_folder_is_refused_before_writing(previous_run, tiny_data, tmp_path, capsys):
    save = tmp_path / "run"
    save.mkdir()
    for name in ("last.pt", "best.pt", "metrics.csv", "epoch_002.pt", "curves.png", "args.json", "train.log"):
        (save / name).write_bytes((previous_run / name).read_bytes())
    before = {p.name: p.read_bytes() for p in save.iterdir()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", *TINY_TRAIN])
    assert info.value.code == 2
    line = _error_line(capsys)
    assert f"-c {save / 'last.pt'}" in line and "--overwrite" in line and str(save) in line
    assert {p.name: p.read_bytes() for p in save.iterdir()} == before  # not a byte changed, no train.log line


@pytest.mark.parametrize("marker", ["metrics.csv", "best.pt", "epoch_007.pt"])
def test_any_run_file_counts_as_a_previous_run(marker, tmp_path):
    (tmp_path / marker).write_text("x")
    with pytest.raises(RunDirError, match="already holds a training run"):
        check_run_dir(tmp_path)
    check_run_dir(tmp_path, resume=True)  # -c: continuing a run is what the folder is for
    check_run_dir(tmp_path, overwrite=True)


def test_overwrite_removes_only_the_old_runs_files(previous_run, tiny_data, tmp_path):
    save = tmp_path / "run"
    save.mkdir()
    for name in ("last.pt", "metrics.csv", "epoch_002.pt", "train.log"):
        (save / name).write_bytes((previous_run / name).read_bytes())
    (save / "epoch_009.pt").write_bytes(b"old")
    (save / "notes.txt").write_text("mine")
    (save / "keep").mkdir()
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", "--sf", "0", "--overwrite",
                         *TINY_TRAIN])
    names = sorted(p.name for p in save.iterdir())
    assert names == ["args.json", "best.pt", "curves.png", "keep", "last.pt", "metrics.csv", "notes.txt", "train.log"]
    with open(save / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]  # the old run's 2 epochs are gone, not mixed in
    log = (save / "train.log").read_text()
    assert "epoch 1/1" in log and "epoch 2/2" not in log
    assert load_checkpoint(save / "last.pt")["epoch"] == 1


@pytest.mark.parametrize("where", ["inside", "same", "contains", "symlink"])
def test_save_dir_and_data_dir_must_not_nest(where, tiny_data, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    before = _tree(data)
    save = {"inside": data / "train" / "run1", "same": data, "contains": tmp_path}.get(where)
    if where == "symlink":  # a link to the data folder, then a run folder under it
        (tmp_path / "link").symlink_to(data, target_is_directory=True)
        save = tmp_path / "link" / "run1"
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_script("train", ["--dd", str(data), "--sd", str(save), "-e", "1", *TINY_TRAIN])
    line = _error_line(capsys)
    assert "--save-dir" in line and str(data) in line
    assert _tree(data) == before  # no train/run1/train.log: the dataset is as it was


def test_save_dir_that_is_a_file(tiny_data, tmp_path, capsys):
    target = tmp_path / "runfile"
    target.write_text("not a folder")
    with pytest.raises(SystemExit):
        run_script("train", ["--dd", str(tiny_data), "--sd", str(target), "-e", "1", *TINY_TRAIN])
    assert f"--save-dir {target}: is a file" in _error_line(capsys)
    with pytest.raises(SystemExit):
        run_script("train", ["--dd", str(tiny_data), "--sd", str(target / "sub"), "-e", "1", *TINY_TRAIN])
    assert "which is a file" in _error_line(capsys)
    assert target.read_text() == "not a folder"


@pytest.mark.parametrize("what", ["data_dir", "train_split"])
def test_data_dir_or_split_that_is_a_file(what, tiny_data, tmp_path, capsys):
    import shutil

    if what == "data_dir":
        data = tmp_path / "data.txt"
        data.write_text("x")
    else:
        data = tmp_path / "data"
        shutil.copytree(tiny_data / "test", data / "test")
        (data / "train").write_text("x")
    save = tmp_path / "run"
    with pytest.raises(SystemExit):
        run_script("train", ["--dd", str(data), "--sd", str(save), "-e", "1", *TINY_TRAIN])
    line = _error_line(capsys)
    assert str(data) in line
    assert not save.exists()  # nothing written for a run that cannot start


def test_stale_temporary_files_are_removed_by_the_next_run(tiny_data, tmp_path):
    stale = [".last.pt.k3j_x9ab.tmp", ".best.pt.tmp", ".metrics.csv.a1b2c3d4.tmp", ".epoch_003.pt.zz99zz99.tmp"]
    for name in stale:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    others = [".notes.txt.a1b2c3d4.tmp", "last.pt.tmp", ".cache.tmp"]  # not names the run writes: kept
    for name in others:
        (tmp_path / name).write_bytes(b"someone else's")
    run_script("train", ["--dd", str(tiny_data), "--sd", str(tmp_path), "-e", "1", "--sf", "0", *TINY_TRAIN])
    names = {p.name for p in tmp_path.iterdir()}
    assert not names & set(stale) and set(others) <= names


def test_prepare_run_dir_unit(tmp_path):
    (tmp_path / ".last.pt.abcdefgh.tmp").write_text("x")
    (tmp_path / "metrics.csv").write_text("epoch\n1\n")
    (tmp_path / "cleaner.pt").write_text("x")
    prepare_run_dir(tmp_path, overwrite=True, extra=("cleaner.pt",))
    assert list(tmp_path.iterdir()) == []
    prepare_run_dir(tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper").is_dir()


def test_ctrl_c_during_the_checkpoint_write_finishes_it_then_stops(tiny_data, tmp_path, monkeypatch,
                                                                  python_sigint):
    """SIGINT arrives in the middle of torch.save (a real signal, as Ctrl-C sends): the write completes, the run
    stops with exit status 130, and last.pt is the complete epoch-1 checkpoint, not a traceback."""
    real_save = torch.save
    calls = []

    def save_with_ctrl_c(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # handled between bytecodes: right here, mid-write
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_with_ctrl_c)
    with pytest.raises(SystemExit) as info:
        run_script("train", ["--dd", str(tiny_data), "--sd", str(tmp_path), "-e", "3", "--sf", "1", *TINY_TRAIN])
    assert info.value.code == 130
    monkeypatch.setattr(torch, "save", real_save)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 1
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "epoch_001.pt")["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with open(tmp_path / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1"]


def test_train_sr_refuses_a_used_folder_and_overwrite_clears_it(tmp_path, capsys):
    hr = tmp_path / "hr"
    hr.mkdir()
    save = tmp_path / "sr"
    save.mkdir()
    (save / "metrics.csv").write_text("epoch,train_l1\n1,0.1\n")
    (save / "last.pt").write_bytes(b"old")
    with pytest.raises(SystemExit) as info:
        run_script("train_sr", ["--hr-dir", str(hr), "--sd", str(save), "-e", "1", "--device", "cpu"])
    assert info.value.code == 2
    line = _error_line(capsys)
    assert f"-c {save / 'last.pt'}" in line and "--overwrite" in line
    assert sorted(p.name for p in save.iterdir()) == ["last.pt", "metrics.csv"]
    with pytest.raises(SystemExit):  # save folder inside the HR folder
        run_script("train_sr", ["--hr-dir", str(hr), "--sd", str(hr / "run"), "-e", "1", "--device", "cpu"])
    assert "inside the data folder" in _error_line(capsys) and list(hr.iterdir()) == []


def test_train_cleaner_refuses_a_used_folder_before_splitting(tmp_path, capsys):
    sorted_dir = tmp_path / "sorted"
    for name in ("wanted", "unwanted"):
        (sorted_dir / name).mkdir(parents=True)
    save = tmp_path / "cleaner_run"
    save.mkdir()
    (save / "cleaner.pt").write_bytes(b"old")
    (save / "last.pt").write_bytes(b"old")
    with pytest.raises(SystemExit):
        run_script("train_cleaner", ["--data-dir", str(sorted_dir), "--save-dir", str(save), *TINY_TRAIN])
    line = _error_line(capsys)
    assert "already holds a training run" in line and "--overwrite" in line
    assert sorted(p.name for p in save.iterdir()) == ["cleaner.pt", "last.pt"]  # no data/ split written


def test_epoch_log_line_leaves_out_views_that_did_not_run():
    from ws_dan.training.recipe import epoch_log_line
    from ws_dan.training.trainer import EpochEnd

    train = {"loss": 1.23456, "raw_top1": 50.0, "crop_top1": float("nan"), "drop_top1": float("nan"),
             "grad_norm": 7.712, "grad_norm_max": 9.21, "clipped": 12.0}
    e = EpochEnd(epoch=1, epochs=3, row={"seconds": 0.25}, train=train,
                 val={"loss": 1.5, "top1": 33.333, "top5": 100.0},
                 is_best=True, lr=0.001, seconds=0.25, trainer=None)
    assert epoch_log_line(e, clipping=True) == ("epoch 1/3  loss 1.2346  raw 50.00%  grad norm 7.71 (max 9.21), 12% "
                                                "clipped  | val loss 1.5000  top-1 33.33%  top-5 100.00% (best)  | "
                                                "lr 0.001  0.2s")
    assert "clipped" not in epoch_log_line(e, clipping=False)
