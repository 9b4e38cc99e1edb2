"""The fair-comparison harness (scripts/compare_methods.py): a tiny sweep on generated data, resumable."""

from __future__ import annotations

import csv
import json
import math
import subprocess

import pytest
from conftest import run_script, script

from ws_dan.evaluation.comparison import mcnemar_exact, paired_report, summarize
from ws_dan.models.checkpoint import load_checkpoint


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_tiny_sweep_picks_best_lr_counts_divergence_and_resumes(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    argv = ["--data-dir", str(tiny_data), "--output-dir", str(out), "-m", "tiny", "--image-size", "48", "-e", "2",
            "-b", "8", "-j", "0", "--device", "cpu", "--methods", "baseline", "wsdan", "--seeds", "0", "1",
            "--method-lrs", "baseline=0.01", "--method-lrs", "wsdan=0.001,1e6", "--num-attentions", "4",
            "--augment", "flip"]
    run_script("compare_methods", [*argv, "--no-pretrained"])
    rows = _rows(out / "results.csv")
    assert [(r["method"], float(r["lr"]), int(r["seed"])) for r in rows] == [
        ("baseline", 0.01, 0), ("baseline", 0.01, 1), ("wsdan", 0.001, 0), ("wsdan", 0.001, 1),
        ("wsdan", 1e6, 0), ("wsdan", 1e6, 1)]
    assert [r["status"] for r in rows] == ["ok"] * 4 + ["diverged"] * 2
    assert rows[4]["error"].startswith("error: training diverged at epoch 1")
    for r in rows[:4]:
        metrics = _rows(out / r["method"] / f"lr{float(r['lr']):g}" / f"seed{r['seed']}" / "metrics.csv")
        assert float(r["test_top1"]) == pytest.approx(float(metrics[-1]["val_top1"]))
        assert float(r["best_test_top1"]) == pytest.approx(max(float(m["val_top1"]) for m in metrics))
    table = (out / "table.md").read_text()
    accs = [float(r["test_top1"]) for r in rows[2:4]]
    mean, sd = sum(accs) / 2, abs(accs[0] - accs[1]) / math.sqrt(2)
    assert f"| wsdan | 0.001 | {mean:.2f} ± {sd:.2f} | 2 |" in table  # the diverged lr is never "best"
    assert "| wsdan | 1e+06 | diverged, diverged | - |" in table
    assert "optimistic" in table
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    args = json.loads((out / "wsdan" / "lr0.001" / "seed1" / "args.json").read_text())
    got = (args["model"], args["image_size"], args["epochs"], args["seed"], args["augment"])
    assert got == ("tiny", 48, 2, 1, "flip")

    # Again: nothing trains; finished runs are reused and diverged ones remembered (both deterministic).
    calls = []
    real_call = subprocess.call
    monkeypatch.setattr(subprocess, "call", lambda cmd, **kw: calls.append(cmd) or real_call(cmd, **kw))
    capsys.readouterr()
    run_script("compare_methods", [*argv, "--no-pretrained"])
    assert calls == []
    printed = capsys.readouterr().out
    assert printed.count("done before, reusing") == 4 and printed.count("diverged before") == 2
    assert [r["status"] for r in _rows(out / "results.csv")] == ["ok"] * 4 + ["diverged"] * 2
    # --paired: every best-rate run's last.pt photo by photo, the same numbers as its last validation.
    capsys.readouterr()
    run_script("compare_methods", [*argv, "--no-pretrained", "--report-only", "--paired"])
    assert calls == []
    printed = capsys.readouterr().out
    photos = _rows(out / "per_photo.csv")
    assert len(photos) == 12 and {p["label"] for p in photos} == {d.name for d in (tiny_data / "test").iterdir()}
    for method in ("baseline", "wsdan"):
        runs = [r for r in rows[:4] if r["method"] == method]
        for r in runs:
            assert (f"== {method} lr {float(r['lr']):g} seed {r['seed']}: {float(r['test_top1']):.2f}% photo by photo "
                    f"(metrics.csv: {float(r['test_top1']):.2f}%)") in printed
        wrong = sum(int(p[f"{method}_wrong"].split("/")[0]) for p in photos)
        assert wrong == pytest.approx(sum(12 * (1 - float(r["test_top1"]) / 100) for r in runs))
        assert all(p[f"{method}_wrong"].endswith("/2") for p in photos)
    table = (out / "table.md").read_text()
    assert "on the same 12 test photos" in table
    assert "| wsdan | 0 |" in table and "| wsdan | 1 |" in table and "| wsdan | all (2 vs 2 runs" in table
    if any(not p[f"{m}_wrong"].startswith("0/") for p in photos for m in ("baseline", "wsdan")):
        assert (out / "hardest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # --report-only tabulates what exists and trains nothing, even for runs never made (seed 2).
    capsys.readouterr()
    run_script("compare_methods", [*argv, "--no-pretrained", "--report-only", "--seeds", "0", "1", "2"])
    assert calls == [] and capsys.readouterr().out.count("not run (--report-only)") == 3
    assert len(_rows(out / "results.csv")) == 6
    # --sweep-seeds 1: every lr on seed 0, the other seeds only at each method's best lr from seed 0.
    capsys.readouterr()
    run_script("compare_methods", [*argv, "--no-pretrained", "--report-only", "--seeds", "0", "1", "2",
                                   "--sweep-seeds", "1"])
    printed = capsys.readouterr().out
    assert "wsdan: best learning rate on seed(s) [0]: 0.001; seeds [1, 2] there" in printed
    assert calls == [] and printed.count("not run (--report-only)") == 2  # seed 2 of each method
    assert [(r["method"], float(r["lr"]), int(r["seed"])) for r in _rows(out / "results.csv")] == [
        ("baseline", 0.01, 0), ("baseline", 0.01, 1), ("wsdan", 0.001, 0), ("wsdan", 1e6, 0), ("wsdan", 0.001, 1)]
    assert "every lr on seed(s) 0, the others at the best lr" in (out / "table.md").read_text()
    # A changed setting is not mistaken for a finished run.
    mod = script("compare_methods")
    run_dir = out / "baseline" / "lr0.01" / "seed0"
    same = ["--save-dir", str(run_dir), "--model", "tiny", "--image-size", "48", "--epochs", "2", "--lr", "0.01",
            "--method", "baseline", "--no-pretrained", "--augment", "flip"]
    assert mod.run_is_complete(run_dir, same, 2)
    assert not mod.run_is_complete(run_dir, [*same[:-1], "flip,color-jitter"], 2)
    assert not mod.run_is_complete(run_dir, same, 3)
    assert not mod.run_is_complete(run_dir, [*same, "--pretrained"], 2)


def test_the_best_lr_is_chosen_on_the_sweep_seeds_only():
    results = [{"method": "m", "lr": 0.1, "seed": 0, "status": "ok", "test_top1": 90.0, "best_test_top1": 90.0},
               {"method": "m", "lr": 0.1, "seed": 1, "status": "ok", "test_top1": 80.0, "best_test_top1": 80.0},
               {"method": "m", "lr": 0.3, "seed": 0, "status": "ok", "test_top1": 86.0, "best_test_top1": 86.0}]
    assert summarize(results, ["m"])[0]["m"]["lr"] == 0.3  # all seeds: 86 > mean(90, 80)
    best = summarize(results, ["m"], select_seeds=[0])[0]["m"]  # the sweep's seed: 90 > 86
    assert (best["lr"], best["mean"], best["n"]) == (0.1, 85.0, 2)  # reported over every seed it ran


def test_paired_report_counts_photos_and_tests_them_exactly(tmp_path):
    mod = script("compare_methods")
    # 4 photos; baseline seeds 0, 1 and wsdan seeds 0, 1. Photo "d" is wrong in every run.
    truth = {"a": "x", "b": "x", "c": "y", "d": "y"}

    def run(wrong):
        return {n: (label, "z" if n in wrong else label) for n, label in truth.items()}

    photos = {("baseline", 0): run({"a", "b", "d"}), ("baseline", 1): run({"a", "d"}),
              ("wsdan", 0): run({"d"}), ("wsdan", 1): run({"c", "d"})}
    rows, lines = paired_report(photos, ["baseline", "wsdan"])
    assert [r["image"] for r in rows] == ["d", "a", "b", "c"]  # most runs wrong first
    assert rows[0] == {"image": "d", "label": "y", "baseline_wrong": "2/2", "baseline_predicted": "z",
                       "wsdan_wrong": "2/2", "wsdan_predicted": "z"}
    assert rows[3]["baseline_wrong"] == "0/2" and rows[3]["baseline_predicted"] == ""
    assert "Photos wrong in all 4 runs: 1 (d)." in lines[0]
    # seed 0: only wsdan right on a, b; only baseline on none -> p = 2 * (1/2)^2 = 0.5
    assert "| wsdan | 0 | 2 | 0 | 0.5 |" in lines
    # seed 1: wsdan right on a, baseline right on c -> 1 vs 1, p = 1
    assert "| wsdan | 1 | 1 | 1 | 1 |" in lines
    # over both seeds, per photo: a (wsdan 2/2 vs 0/2) and b (2/2 vs 1/2) favour wsdan, c (1/2 vs 2/2) the baseline
    assert "| wsdan | all (2 vs 2 runs; sign test over photos) | 2 | 1 | 1 |" in lines
    from PIL import Image

    for name in truth:
        Image.new("RGB", (40, 30), "red").save(tmp_path / f"{name}.png")
    rows = [{**r, "image": f"{r['image']}.png"} for r in rows]
    sheet = mod.hardest_sheet(rows, tmp_path, tmp_path / "hardest.png", limit=2)
    with Image.open(sheet) as im:  # two tiles (d and a) in one row
        assert im.width < 2 * (160 + 6) + 10 and im.height < 160 + 60
    assert mod.hardest_sheet(rows[3:], tmp_path, tmp_path / "none.png") is not None  # c: wrong once
    assert mod.hardest_sheet([{**rows[3], "baseline_wrong": "0/2", "wsdan_wrong": "0/2"}], tmp_path,
                             tmp_path / "none.png") is None
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(2 * sum(math.comb(12, k) for k in range(3)) / 2 ** 12)


def test_mcnemar_exact_is_the_two_sided_binomial_test_at_one_half():
    from scipy.stats import binomtest

    for a in range(0, 31):
        for b in range(0, 31):
            expected = 1.0 if a + b == 0 else binomtest(a, a + b, 0.5).pvalue
            assert mcnemar_exact(a, b) == pytest.approx(expected, rel=1e-9), (a, b)
    assert mcnemar_exact(900, 1100) == pytest.approx(binomtest(900, 2000, 0.5).pvalue, rel=1e-6)  # large counts


def test_bad_input_gets_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_script("compare_methods", ["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    expected = f"error: --data-dir {tmp_path}: expected train/<class>/ and test/<class>/ folders"
    assert capsys.readouterr().err.strip() == expected
    with pytest.raises(SystemExit):
        run_script("compare_methods", ["--dataset", "sample", "--output-dir", str(tmp_path / "o"), "--methods", "nope",
                                       "--dry-run"])
    assert "--methods nope: unknown" in capsys.readouterr().err


def test_dry_run_prints_the_same_budget_for_every_method(tmp_path, capsys):
    (tmp_path / "d" / "train").mkdir(parents=True)
    (tmp_path / "d" / "test").mkdir()
    run_script("compare_methods", ["--data-dir", str(tmp_path / "d"), "--output-dir", str(tmp_path / "o"),
                                   "--lrs", "0.003", "0.01", "--seeds", "0", "1", "--dry-run",
                                   "--define", "wsdan_m32=--method wsdan --num-attentions 32",
                                   "--methods", "baseline", "wsdan", "wsdan_m32"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 * 2 * 2
    for line in lines:
        assert "--model mobilenet_v2 --image-size 224 --epochs 8 --batch-size 16 --lr-scheduler cosine" in line
    assert sum("--num-attentions 32" in line for line in lines) == 4


def test_an_unfinished_run_folder_is_trained_again(tiny_data, tmp_path):
    """train.py refuses a folder holding a run unless told --overwrite: the harness says so for a run it must
    repeat (here a stale, unfinished one), instead of counting it as failed."""
    out = tmp_path / "cmp"
    run_dir = out / "baseline" / "lr0.01" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("epoch,val_top1,seconds\n1,0.0,1.0\n")  # 1 of 2 epochs
    (run_dir / "last.pt").write_bytes(b"stale")
    rows = run_script("compare_methods", [
        "--data-dir", str(tiny_data), "--output-dir", str(out), "-m", "tiny", "--image-size", "48", "-e", "2", "-b",
        "8", "-j", "0", "--device", "cpu", "--methods", "baseline", "--seeds", "0", "--lrs", "0.01",
        "--augment", "flip", "--no-pretrained"])
    assert [r["status"] for r in rows] == ["ok"], rows
    metrics = _rows(run_dir / "metrics.csv")
    assert [int(m["epoch"]) for m in metrics] == [1, 2]
    assert rows[0]["test_top1"] == pytest.approx(float(metrics[-1]["val_top1"]))
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    assert json.loads((run_dir / "args.json").read_text())["overwrite"] is True
