"""DistributedDataParallel through torchrun: 2 CPU processes (gloo), tiny model, one epoch; then resume alone."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, TINY_TRAIN, run_script

from ws_dan.models.checkpoint import load_checkpoint
from ws_dan.training.distributed import ShardSampler


def test_shard_sampler_covers_every_index_once():
    shards = [list(ShardSampler(11, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert [len(s) for s in shards] == [4, 4, 3]


def _torchrun(args, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "scripts" / "train.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_two_process_training_then_resume_with_one(tiny_data, tmp_path):
    save = tmp_path / "run"
    flags = [a for a in TINY_TRAIN if a not in ("--device", "cpu")]
    out = _torchrun(["--dd", str(tiny_data), "--sd", str(save), "-e", "1", "--sf", "0", *flags], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    log = (save / "train.log").read_text()
    assert "2 processes, batch 8 each" in log
    assert "replicas identical on 2 processes: yes" in log  # weights, BN statistics and feature centers
    with open(save / "metrics.csv") as f:
        row = list(csv.DictReader(f))[0]
    assert float(row["val_images"]) == 12  # the 12 test images split over 2 ranks, each counted once
    assert float(row["train_images"]) == 16  # 12 per rank (DistributedSampler), one full batch of 8 each
    state = load_checkpoint(save / "last.pt")
    assert state["world_size"] == 2 and state["epoch"] == 1
    assert state["model"]["feature_centers"].abs().sum() > 0

    # resume the distributed run in a single process (a different number of processes)
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "2", "--sf", "0", *TINY_TRAIN,
                         "-c", str(save / "last.pt")])
    state = load_checkpoint(save / "last.pt")
    assert state["epoch"] == 2 and state["world_size"] == 1
    with open(save / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2"]


def test_gradient_accumulation_equals_one_large_batch():
    from ws_dan.training.engine import StepConfig, _optimize

    torch.manual_seed(0)
    x, y = torch.randn(8, 5), torch.randn(8, 1)
    big, small = torch.nn.Linear(5, 1), torch.nn.Linear(5, 1)
    small.load_state_dict(big.state_dict())
    opt_big = torch.optim.SGD(big.parameters(), lr=0.1, momentum=0.9)
    opt_small = torch.optim.SGD(small.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        _optimize(torch.nn.functional.mse_loss(big(x), y), opt_big, None, StepConfig())
        for half, last in ((slice(0, 4), False), (slice(4, 8), True)):
            _optimize(torch.nn.functional.mse_loss(small(x[half]), y[half]), opt_small, None, StepConfig(accum_steps=2),
                      step_now=last)
    for a, b in zip(big.parameters(), small.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_accumulation_and_channels_last_through_train(tiny_data, tmp_path):
    row = run_script("train", ["--dd", str(tiny_data), "--sd", str(tmp_path), "-e", "1", "--sf", "0", *TINY_TRAIN,
                               "-b", "4", "--accum-steps", "3", "--channels-last"])
    assert row["train_images"] == 24 and row["val_images"] == 12
