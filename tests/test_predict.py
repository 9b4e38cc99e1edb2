"""predict.py / export.py on hostile or unusual input: outputs never replace or become inputs, a checkpoint's
config is validated, Ctrl-C cannot break a checkpoint write, bad flags get one line, images can be named."""

from __future__ import annotations

import csv
import os
import signal

import numpy as np
import pytest
import torch
from conftest import run_script, script
from PIL import Image

from ws_dan.models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from ws_dan.models.wsdan import WSDAN, ModelConfig

NAMES = ["blue_circle", "red_circle", "red_triangle"]


def _error(capsys) -> str:
    return capsys.readouterr().err.strip()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An untrained tiny WS-DAN with the sample classes (predict needs no training to be tested)."""
    torch.manual_seed(0)
    model = WSDAN(ModelConfig(backbone="tiny", num_classes=3, class_names=NAMES, num_attentions=4, image_size=32))
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"config": model.config.to_dict(), "model": model.state_dict()})
    return path


def _predict(inputs, ckpt, out, *extra):
    return run_script("predict", [*inputs, "--cp", str(ckpt), "--od", str(out), "-j", "0", "--no-progress",
                                  "--device", "cpu", *extra])


def _rows(out):
    with open(out / "predictions.csv", newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------------------
# export.py: the output never replaces the checkpoint


@pytest.mark.parametrize("how", ["same", "symlink", "hardlink", "default_name"])
def test_export_never_overwrites_its_checkpoint(ckpt, tmp_path, capsys, how):
    src = tmp_path / ("model.onnx" if how == "default_name" else "model.pt")
    src.write_bytes(ckpt.read_bytes())
    argv = ["--ckpt-path", str(src), "--format", "onnx", "--no-check"]
    if how == "same":
        argv += ["--output", str(src)]
    elif how == "symlink":
        (tmp_path / "link.onnx").symlink_to(src)
        argv += ["--output", str(tmp_path / "link.onnx")]
    elif how == "hardlink":
        os.link(src, tmp_path / "hard.onnx")
        argv += ["--output", str(tmp_path / "hard.onnx")]
    before = src.read_bytes()
    with pytest.raises(SystemExit):
        run_script("export", argv)
    err = _error(capsys)
    assert err.startswith("error: ") and "writing it would replace the input" in err and len(err.splitlines()) == 1
    assert src.read_bytes() == before and load_checkpoint(src)["config"]["class_names"] == NAMES


# --------------------------------------------------------------------------------------------------------
# predict.py: outputs never become inputs; a user's files are not overwritten


def _images(folder, n=3, size=(40, 30)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_output_dir_inside_or_equal_to_the_data_dir_is_refused(ckpt, tmp_path, capsys):
    data = tmp_path / "photos"
    _images(data)
    for out in (data, data / "pred"):
        with pytest.raises(SystemExit):
            _predict(["--dd", str(data)], ckpt, out, "--save-attention", "2")
        err = _error(capsys)
        assert "the output folder is inside the input folder" in err and str(data) in err
    assert not (data / "pred").exists() and sorted(p.name for p in data.iterdir()) == ["img0.jpg", "img1.jpg",
                                                                                        "img2.jpg"]


def test_an_image_files_own_folder_may_hold_the_outputs(ckpt, tmp_path):
    (photo,) = _images(tmp_path / "here", n=1)
    _predict(["--dd", str(photo)], ckpt, tmp_path / "here", "--save-attention", "1")
    assert [r["image"] for r in _rows(tmp_path / "here")] == [str(photo)]
    # and again: predict reruns into its own output folder, and never reads its heatmap as an input
    _predict(["--dd", str(photo)], ckpt, tmp_path / "here", "--save-attention", "1")
    assert len(_rows(tmp_path / "here")) == 1


def test_a_users_file_is_kept_unless_overwrite(ckpt, tmp_path, capsys):
    data = tmp_path / "photos"
    _images(data)
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("my,own\n1,2\n")
    with pytest.raises(SystemExit):
        _predict(["--dd", str(data)], ckpt, out)
    err = _error(capsys)
    assert "predictions.csv, not written by ws_dan.predict" in err and "--overwrite" in err
    assert (out / "predictions.csv").read_text() == "my,own\n1,2\n"
    _predict(["--dd", str(data)], ckpt, out, "--overwrite")
    assert len(_rows(out)) == 3
    _predict(["--dd", str(data)], ckpt, out)  # now the file is predict's own: rerunning needs no flag
    assert len(_rows(out)) == 3


def test_rerun_removes_heatmaps_it_no_longer_writes(ckpt, tmp_path):
    data = tmp_path / "photos"
    _images(data)
    out = tmp_path / "out"
    _predict(["--dd", str(data)], ckpt, out, "--save-attention", "3")
    assert len(list((out / "attention").glob("*.png"))) == 3
    _predict(["--dd", str(data)], ckpt, out, "--save-attention", "1")
    assert len(list((out / "attention").glob("*.png"))) == 1


# --------------------------------------------------------------------------------------------------------
# predict what the user points at


def test_image_files_and_folders_and_the_terminal_summary(ckpt, tmp_path, capsys):
    a, b = _images(tmp_path / "loose", n=2)
    folder = tmp_path / "more"
    _images(folder, n=2)
    _predict(["--dd", str(a), str(b), str(folder), "--topk", "2"], ckpt, tmp_path / "o1")
    rows = _rows(tmp_path / "o1")
    assert [r["image"] for r in rows] == [str(a), str(b), str(folder / "img0.jpg"), str(folder / "img1.jpg")]
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 4 and printed[0].startswith(f"{a}: ")
    for line, row in zip(printed, rows):  # top-2 classes with their probabilities, as in the CSV
        assert f"{row['top1_class']} {float(row['top1_prob']):.3f} | {row['top2_class']}" in line
    # positional paths work too, and a single folder keeps today's relative paths
    _predict([str(a)], ckpt, tmp_path / "o2")
    assert [r["image"] for r in _rows(tmp_path / "o2")] == [str(a)]
    _predict(["--dd", str(folder)], ckpt, tmp_path / "o3")
    assert [r["image"] for r in _rows(tmp_path / "o3")] == ["img0.jpg", "img1.jpg"]


def test_a_missing_input_names_it(ckpt, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _predict(["--dd", str(tmp_path / "nope.jpg")], ckpt, tmp_path / "o")
    assert "nope.jpg: does not exist" in _error(capsys)


# --------------------------------------------------------------------------------------------------------
# bad flags: one line each


@pytest.mark.parametrize("flag,value", [("-b", "0"), ("-b", "-3"), ("--topk", "0"), ("--topk", "-2")])
def test_bad_numbers_are_refused_by_argparse(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        script("predict").get_args_parser().parse_args(["--dd", "D", "--cp", "C", flag, value])
    assert info.value.code == 2
    err = _error(capsys).splitlines()[-1]
    assert f"expected an integer >= 1, got '{value}'" in err and flag.lstrip("-")[:1] in err


def test_output_dir_that_is_a_file(ckpt, tmp_path, capsys):
    _images(tmp_path / "photos")
    (tmp_path / "taken").write_text("x")
    with pytest.raises(SystemExit):
        _predict(["--dd", str(tmp_path / "photos")], ckpt, tmp_path / "taken")
    err = _error(capsys)
    assert len(err.splitlines()) == 1 and "taken: is an existing file" in err


# --------------------------------------------------------------------------------------------------------
# label CSV: duplicates counted once, conflicts refused


def test_duplicate_and_conflicting_csv_rows(ckpt, tmp_path, capsys, caplog):
    data = tmp_path / "photos"
    _images(data)
    (tmp_path / "dup.csv").write_text("image,label\nimg0.jpg,red_circle\nimg1.jpg,blue_circle\n"
                                      "img0.jpg,red_circle\nimg2.jpg,red_triangle\n")
    with caplog.at_level("WARNING", logger="ws_dan.data.datasets"):
        metrics = _predict(["--dd", str(data)], ckpt, tmp_path / "o", "--csv-labels-path", str(tmp_path / "dup.csv"))
    assert metrics["num_images"] == 3 and len(_rows(tmp_path / "o")) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and r.name == "ws_dan.data.datasets"]
    assert len(warnings) == 1 and "1 duplicate row(s)" in warnings[0] and "line(s) 4" in warnings[0]
    (tmp_path / "conflict.csv").write_text("image,label\nimg0.jpg,red_circle\nimg1.jpg,blue_circle\n"
                                           "img0.jpg,blue_circle\n")
    with pytest.raises(SystemExit):
        _predict(["--dd", str(data)], ckpt, tmp_path / "o2", "--csv-labels-path", str(tmp_path / "conflict.csv"))
    err = _error(capsys)
    assert "conflict.csv: 1 image(s) listed with conflicting labels" in err
    assert "line 2: 'red_circle', line 4: 'blue_circle'" in err


@pytest.mark.parametrize("listed", ["../victim/photo.jpg", "/etc/passwd", "link/img0.jpg"])
def test_a_label_csv_cannot_make_predict_read_outside_the_data_folder(ckpt, tmp_path, capsys, listed):
    """Rows must name photos inside --data-dir: not ../, not an absolute path elsewhere, not through a link in
    the folder that points out of it. The run stops before reading any image, with one line naming the rows."""
    data = tmp_path / "data"
    _images(data, 2)
    victim = _images(tmp_path / "victim", 1)[0]
    victim.rename(victim.with_name("photo.jpg"))
    _images(tmp_path / "elsewhere", 1)
    (data / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"image,label\nimg1.jpg,red_circle\n{listed},blue_circle\n")
    with pytest.raises(SystemExit):
        _predict(["--dd", str(data)], ckpt, tmp_path / "out", "--csv-labels-path", str(labels))
    err = _error(capsys)
    assert err == (f"error: {labels}: 1 path(s) outside the data folder {data} (line 3: {listed!r}); list images "
                   "inside it, relative to it")
    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_a_label_csv_may_name_photos_by_absolute_path_inside_the_data_folder(ckpt, tmp_path):
    data = tmp_path / "data"
    photos = _images(data, 2)
    labels = tmp_path / "labels.csv"
    labels.write_text(f"image,label\n{photos[0]},red_circle\nimg1.jpg,blue_circle\n")
    _predict(["--dd", str(data)], ckpt, tmp_path / "out", "--csv-labels-path", str(labels))
    assert len(_rows(tmp_path / "out")) == 2


# --------------------------------------------------------------------------------------------------------
# a checkpoint's config is input too


@pytest.mark.parametrize("change,message", [
    ({"image_size": 1000000}, "image_size=1000000, expected an integer from 8 to 4096"),
    ({"num_attentions": 0}, "num_attentions=0, expected an integer from 1 to 1024"),
    ({"num_classes": 4}, "3 class names for num_classes=4"),
    ({"backbone": "resnet9000"}, "unknown backbone 'resnet9000'"),
    ({"backbone": "timm:no_such_model_xyz"}, "timm:no_such_model_xyz"),
    ({"std": [0.2, 0.0, 0.2]}, "std=[0.2, 0.0, 0.2], expected 3 numbers > 0"),
    ({"mean": [0.5, float("nan"), 0.5]}, "expected 3 finite numbers"),
    ({"method": "magic"}, "method='magic', expected one of"),
    ({"logit_scale": -1.0}, "logit_scale=-1.0, expected a finite number > 0"),
    ({"eval_crop_theta": 1.5}, "eval_crop_theta=1.5, expected a number from 0 to 1"),
    ({"class_names": [1, 2, 3]}, "class_names must be a list of strings"),
    ({"crop_convention": "other"}, "crop_convention='other'"),
    ({"detail_scale": 9}, "detail_scale=9, expected an integer from 1 to 4"),
    ({"image_size": 4096, "detail_scale": 2}, "image_size x detail_scale = 8192 px, expected at most 4096"),
])
def test_bad_configs_fail_in_one_line_naming_the_file(ckpt, tmp_path, change, message):
    if change.get("backbone", "").startswith("timm:"):
        pytest.importorskip("timm")
    state = load_checkpoint(ckpt)
    state["config"].update(change)
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, {k: v for k, v in state.items() if k not in ("format", "format_version", "kind", "version")})
    with pytest.raises(CheckpointError) as info:
        model_from_checkpoint(bad)
    text = str(info.value)
    assert text.startswith(f"{bad}: invalid model config: ") and message in text and "\n" not in text


def test_predict_refuses_a_huge_image_size_before_any_work(ckpt, tmp_path, capsys):
    _images(tmp_path / "photos")
    state = load_checkpoint(ckpt)
    state["config"]["image_size"] = 1000000
    save_checkpoint(tmp_path / "huge.pt", {"config": state["config"], "model": state["model"]})
    with pytest.raises(SystemExit):
        _predict(["--dd", str(tmp_path / "photos")], tmp_path / "huge.pt", tmp_path / "o")
    err = _error(capsys)
    assert "huge.pt: invalid model config: image_size=1000000" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_predict_says_what_a_large_input_costs_on_the_cpu(ckpt, tmp_path, capsys, caplog):
    """Inside the bound (4096 px) a size can still cost hours on a CPU: the run says so before it starts."""
    _images(tmp_path / "photos", 1)
    state = load_checkpoint(ckpt)
    state["config"]["image_size"] = 1088
    save_checkpoint(tmp_path / "large.pt", {"config": state["config"], "model": state["model"]})
    _predict(["--dd", str(tmp_path / "photos")], tmp_path / "large.pt", tmp_path / "o")
    text = capsys.readouterr().err + caplog.text
    assert "large.pt: this model reads 1088 px images, 5x the pixels of the default 512 px each: slow on a CPU" in text
    assert len(_rows(tmp_path / "o")) == 1


# --------------------------------------------------------------------------------------------------------
# Ctrl-C while a checkpoint is written


def test_ctrl_c_during_save_finishes_the_file_then_stops(tmp_path, monkeypatch, python_sigint):
    real_save = torch.save
    state = {"config": {}, "model": {"w": torch.randn(256, 256)}, "epoch": 7}

    def save_with_ctrl_c(obj, f, *args, **kwargs):
        f.write(b"")  # the file is open; now the user presses Ctrl-C in the middle of the write
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # give Python a chance to run the signal handler here, mid-write
            pass
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_with_ctrl_c)
    handler_before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last.pt", state)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded["epoch"] == 7 and torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
