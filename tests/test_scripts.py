"""train.py / predict.py end to end on tiny data: outputs, resume equivalence, interruption, metrics."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT, TINY_TRAIN, run_script, script

from ws_dan.models.checkpoint import load_checkpoint

SCRIPTS = ["train", "predict", "make_sample_data", "demo", "convert_checkpoint", "export", "compare_methods",
           "preview_augment", "benchmark", "prepare_cache", "lowres_experiment", "train_cleaner", "train_sr"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_runs(name):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "(default:" in out.stdout


def test_reference_project_flags_are_accepted():
    args = script("train").get_args_parser().parse_args(
        ["--dd", "D", "--sd", "S", "-j", "1", "-b", "4", "-e", "2", "--lr", "0.1", "-m", "resnet50", "-c", "x.pt",
         "--sf", "3", "-v", "--gpu-ids", "0"])
    assert (args.data_dir, args.save_dir, args.ckpt, args.save_freq, args.gpu_ids) == ("D", "S", "x.pt", 3, "0")
    args = script("predict").get_args_parser().parse_args(
        ["--dd", "D", "--cp", "C", "--od", "O", "--do-eval", "false", "--csv-headings", "a,b", "--gpu", "1"])
    assert (args.data_dir, args.ckpt_path, args.output_dir, args.do_eval) == ("D", "C", "O", False)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("run") / "run"
    row = run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "2", *TINY_TRAIN])
    return save, row


def test_training_writes_every_output(trained):
    save, row = trained
    for name in ("last.pt", "best.pt", "epoch_001.pt", "epoch_002.pt", "metrics.csv", "curves.png", "args.json",
                 "train.log"):
        assert (save / name).is_file(), name
    with open(save / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for key in ("train_loss", "train_raw_top1", "train_crop_top3", "train_drop_top5", "val_loss", "val_top1",
                "val_top5", "lr", "seconds"):
        assert np.isfinite(float(rows[-1][key])), key
    assert (save / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((save / "args.json").read_text())["epochs"] == 2
    state = load_checkpoint(save / "last.pt")
    assert state["epoch"] == 2 and state["config"]["class_names"] == ["blue_circle", "red_circle", "red_triangle"]
    assert state["config"]["backbone"] == "tiny" and state["optimizer"] and state["scheduler"]
    best = load_checkpoint(save / "best.pt")
    assert best["best_top1"] == pytest.approx(max(float(r["val_top1"]) for r in rows), abs=1e-3)
    assert "epoch 2/2" in (save / "train.log").read_text()


def test_resume_ends_with_the_same_weights(tiny_data, tmp_path):
    common = ["--dd", str(tiny_data), *TINY_TRAIN, "--sf", "0", "--seed", "3"]
    run_script("train", [*common, "--sd", str(tmp_path / "straight"), "-e", "3"])
    run_script("train", [*common, "--sd", str(tmp_path / "split"), "-e", "1"])
    run_script("train", [*common, "--sd", str(tmp_path / "split"), "-e", "3",
                         "-c", str(tmp_path / "split" / "last.pt")])
    a = load_checkpoint(tmp_path / "straight" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key  # weights and feature centers alike
    assert torch.equal(a["model"]["feature_centers"], b["model"]["feature_centers"])
    with open(tmp_path / "split" / "metrics.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]


def test_same_seed_same_result_with_worker_processes(tiny_data, tmp_path):
    common = ["--dd", str(tiny_data), *TINY_TRAIN, "-e", "1", "--sf", "0", "-j", "2"]
    run_script("train", [*common, "--sd", str(tmp_path / "a")])
    run_script("train", [*common, "--sd", str(tmp_path / "b")])
    a, b = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_with_another_backbone_fails_clearly(trained, tiny_data, tmp_path, capsys):
    save, _ = trained
    with pytest.raises(SystemExit):
        run_script("train", ["--dd", str(tiny_data), "--sd", str(tmp_path), *TINY_TRAIN, "-e", "3",
                             "-m", "mobilenet_v2", "-c", str(save / "last.pt")])
    err = capsys.readouterr().err
    assert "last.pt" in err and "'tiny'" in err and "'mobilenet_v2'" in err


def test_ctrl_c_saves_last_checkpoint(tiny_data, tmp_path, monkeypatch):
    import ws_dan.training.engine

    real = ws_dan.training.engine.train_one_epoch
    calls = []

    def interrupt_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ws_dan.training.engine, "train_one_epoch", interrupt_second_epoch)
    with pytest.raises(SystemExit) as info:
        run_script("train", ["--dd", str(tiny_data), "--sd", str(tmp_path), *TINY_TRAIN, "-e", "3"])
    assert info.value.code == 130
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["interrupted"] is True and state["epoch"] == 1


def _read_predictions(out):
    with open(out / "predictions.csv") as f:
        return list(csv.DictReader(f))


def test_predict_metrics_agree_with_predictions_csv(trained, tiny_data, tmp_path):
    save, _ = trained
    out = tmp_path / "pred"
    metrics = run_script("predict", ["--dd", str(tiny_data / "test"), "--cp", str(save / "best.pt"), "--od", str(out),
                                     "-j", "0", "-b", "5", "--no-progress", "--save-attention", "3"])
    rows = _read_predictions(out)
    probs = np.load(out / "probabilities.npy")
    names = load_checkpoint(save / "best.pt")["config"]["class_names"]
    assert len(rows) == probs.shape[0] == 12 and probs.shape[1] == 3
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert [names[i] for i in probs.argmax(axis=1)] == [r["predicted"] for r in rows]
    top1 = 100 * np.mean([r["label"] == r["predicted"] for r in rows])
    top2 = 100 * np.mean([r["label"] in (r["top1_class"], r["top2_class"]) for r in rows])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["top1"] == pytest.approx(top1) and metrics["top1"] == pytest.approx(top1)
    assert saved["top3"] == 100.0 and top2 <= saved["top3"]
    from sklearn.metrics import f1_score

    assert saved["f1_macro"] == pytest.approx(f1_score([r["label"] for r in rows], [r["predicted"] for r in rows],
                                                        average="macro", zero_division=0))
    with open(out / "per_class.csv") as f:
        per_class = list(csv.DictReader(f))
    assert sum(int(r["support"]) for r in per_class) == 12
    assert sum(int(r["correct"]) for r in per_class) == sum(r["label"] == r["predicted"] for r in rows)
    assert (out / "confusion_matrix.png").is_file()
    assert len(list((out / "attention").glob("*.png"))) == 3


def test_predict_from_csv_labels_and_unlabelled_folder(trained, tiny_data, tmp_path):
    save, _ = trained
    images = sorted((tiny_data / "test").rglob("*.jpg"))
    with open(tmp_path / "labels.csv", "w") as f:
        f.write("file,cls\n")
        for p in images:
            f.write(f"{p.relative_to(tiny_data / 'test')},{p.parent.name}\n")
    out = tmp_path / "csv"
    metrics = run_script("predict", ["--dd", str(tiny_data / "test"), "--cp", str(save / "best.pt"), "--od", str(out),
                                     "--csv-labels-path", str(tmp_path / "labels.csv"), "--csv-headings", "file,cls",
                                     "-j", "0", "--no-progress"])
    assert metrics["num_images"] == 12
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in images[:4]:
        (flat / p.name.replace(".jpg", f"_{p.parent.name}.jpg")).write_bytes(p.read_bytes())
    out = tmp_path / "flat_out"
    assert run_script("predict", ["--dd", str(flat), "--cp", str(save / "best.pt"), "--od", str(out), "-j", "0",
                                  "--no-progress"]) == {}
    rows = _read_predictions(out)
    assert len(rows) == 4 and "label" not in rows[0] and not (out / "metrics.json").exists()


def test_demo_offline_says_so_and_trains_from_random_init(tmp_path, capsys):
    # conftest blocks every download, as on a machine without internet
    metrics = run_script("demo", ["--output-dir", str(tmp_path), "-e", "1", "--image-size", "64", "-j", "0",
                                  "--train-per-class", "8", "--test-per-class", "4"])
    out = capsys.readouterr().out
    assert "could not get the ImageNet weights" in out and "RANDOM initialisation" in out
    assert "DEMO_WEIGHTS=" in out and "--no-pretrained" in out
    assert "test top-1 accuracy:" in out and "(chance: 20%)" in out
    assert 0 <= metrics["top1"] <= 100
    for path in ("data/boxes.csv", "run/best.pt", "run/metrics.csv", "predictions/predictions.csv",
                 "predictions/metrics.json", "predictions/confusion_matrix.png"):
        assert (tmp_path / path).is_file(), path
    assert len(list((tmp_path / "predictions" / "attention").glob("*.png"))) == 8
    assert metrics["num_images"] == 20


def test_train_and_predict_with_a_detail_copy(tiny_data, tmp_path):
    """--detail-scale 2: the checkpoint and args.json record it, predict.py loads the photos at 2x and its top-1
    is the validation top-1 train.py logged for the same weights; the baseline ignores the flag (with a warning)."""
    save = tmp_path / "run"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), *TINY_TRAIN, "-e", "2", "--sf", "0",
                         "--views-start-epoch", "1", "--detail-scale", "2"])
    state = load_checkpoint(save / "last.pt")
    assert state["config"]["detail_scale"] == 2
    assert json.loads((save / "args.json").read_text())["detail_scale"] == 2
    run_script("predict", ["--dd", str(tiny_data / "test"), "--cp", str(save / "last.pt"), "--od",
                           str(tmp_path / "pred"), "--device", "cpu", "--no-progress"])
    with open(save / "metrics.csv") as f:
        last = list(csv.DictReader(f))[-1]
    metrics = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    assert metrics["top1"] == pytest.approx(float(last["val_top1"]), abs=1e-3)
    run_script("train", ["--dd", str(tiny_data), "--sd", str(tmp_path / "b"), *TINY_TRAIN, "-e", "1", "--sf", "0",
                         "--method", "baseline", "--detail-scale", "2"])
    assert load_checkpoint(tmp_path / "b" / "last.pt")["config"]["detail_scale"] == 1


def test_benchmark_times_the_detail_copy_beside_the_plain_step(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "-m", "tiny", "--image-size", "32",
                           "-b", "4", "--num-classes", "3", "--num-attentions", "4", "--steps", "1", "--warmup", "0",
                           "--variants", "fp32", "--skip", "crop", "loader", "--detail-scales", "2", "--device", "cpu",
                           "--output", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "WS-DAN, detail x2, img/s" in done.stdout and "detail x2 vs WS-DAN" in done.stdout
    (row,) = json.loads(out.read_text())["steps"]
    assert row["wsdan_x2_train_img_s"] > 0 and row["x2_cost"] == pytest.approx(
        row["wsdan_train_img_s"] / row["wsdan_x2_train_img_s"] - 1)
