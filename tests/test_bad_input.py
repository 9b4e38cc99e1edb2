"""Bad input: each case gets a clear message naming the path, or is skipped and counted."""

from __future__ import annotations

import gc
import io
import shutil

import numpy as np
import pytest
from conftest import TINY_TRAIN, run_script
from PIL import Image


@pytest.fixture
def data(tiny_data, tmp_path):
    """A private copy of the tiny dataset that a test may spoil."""
    copy = tmp_path / "data"
    shutil.copytree(tiny_data, copy)
    return copy


def _train(data, save, *extra):
    return run_script("train", ["--dd", str(data), "--sd", str(save), "-e", "1", "--sf", "0", *TINY_TRAIN, *extra])


def _error(capsys) -> str:
    return capsys.readouterr().err


def _add_bad_files(folder):
    good = next(folder.glob("*.jpg")).read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "page.jpg").write_text("<html>not an image</html>")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))


def _add_odd_but_valid_files(folder):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "gray.png")
    rgb.convert("CMYK").save(folder / "cmyk.jpg")
    rgb.convert("P", palette=Image.ADAPTIVE).save(folder / "palette.png")
    rgb.convert("RGBA").save(folder / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    rgb.save(buf, "JPEG", exif=exif.tobytes())
    (folder / "rotated.jpg").write_bytes(buf.getvalue())


def test_unreadable_images_are_skipped_and_counted(data, tmp_path):
    _add_bad_files(data / "train" / "red_circle")
    _add_bad_files(data / "test" / "blue_circle")
    _add_odd_but_valid_files(data / "train" / "red_triangle")
    _train(data, tmp_path / "run", "-b", "1000")  # one batch: every image is read in the one epoch
    log = (tmp_path / "run" / "train.log").read_text()
    # per split: the empty file and the HTML page are skipped by the scan, the truncated JPEG and the corrupt
    # PNG (valid signatures) when they fail to decode
    assert "8 unreadable or non-image file(s) were skipped" in log
    assert "truncated.jpg: corrupt or truncated image" in log and "zero.jpg: empty file" in log
    assert "corrupt.png: corrupt PNG file" in log and "page.jpg: not an image" in log
    assert "gray.png" not in log and "cmyk.jpg" not in log and "rotated.jpg" not in log  # odd modes load fine
    assert "loss" in log and (tmp_path / "run" / "last.pt").is_file()


def test_strict_stops_at_the_first_bad_file(data, tmp_path, capsys):
    _add_bad_files(data / "train" / "red_circle")
    with pytest.raises(SystemExit):
        _train(data, tmp_path / "run", "--strict")
    err = _error(capsys)
    assert "red_circle/page.jpg" in err and "--strict" in err


@pytest.mark.parametrize("workers", ["0", "1"])
def test_strict_reports_a_truncated_file_by_name(data, tmp_path, capsys, workers):
    good = next((data / "train" / "red_circle").glob("*.jpg")).read_bytes()
    (data / "train" / "red_circle" / "cut.jpg").write_bytes(good[: len(good) // 3])
    with pytest.raises(SystemExit):
        _train(data, tmp_path / "run", "--strict", "-b", "1000", "-j", workers)  # -j 1: raised in a worker
    err = _error(capsys)
    assert "cut.jpg: corrupt or truncated image" in err and "--strict" in err
    assert "Traceback" not in err  # the worker's traceback is reduced to its message
    gc.collect()  # the caught exception kept the loader's worker alive; let it go now, not in the next test


def test_empty_class_folder(data, tmp_path, capsys):
    (data / "train" / "green_square").mkdir()
    with pytest.raises(SystemExit):
        _train(data, tmp_path / "run")
    err = _error(capsys)
    assert "train" in err and "'green_square'" in err and "no readable images" in err


def test_test_split_with_other_classes(data, tmp_path, capsys):
    shutil.copytree(data / "test" / "red_circle", data / "test" / "yellow_star")
    with pytest.raises(SystemExit):
        _train(data, tmp_path / "run")
    err = _error(capsys)
    assert "test" in err and "'yellow_star'" in err and "not among the 3 known classes" in err


def test_missing_data_dir_and_missing_split(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _train(tmp_path / "nowhere", tmp_path / "run")
    assert "nowhere: does not exist" in _error(capsys)
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(SystemExit):
        _train(tmp_path / "only_train", tmp_path / "run")
    assert "has no test/ folder" in _error(capsys)


def test_batch_size_larger_than_dataset(data, tmp_path):
    _train(data, tmp_path / "run", "-b", "1000")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "batch size 1000 is larger than the 24 training images per process; using 24" in log
    assert (tmp_path / "run" / "last.pt").is_file()


@pytest.fixture
def checkpoint(tiny_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("ckpt")
    _train(tiny_data, save)
    return save / "last.pt"


def _predict(data, ckpt, out, *extra):
    return run_script("predict", ["--dd", str(data), "--cp", str(ckpt), "--od", str(out), "-j", "0",
                                  "--no-progress", *extra])


def test_csv_with_missing_files_and_unknown_labels(tiny_data, checkpoint, tmp_path, capsys):
    test_dir = tiny_data / "test"
    images = sorted(test_dir.rglob("*.jpg"))
    rows = [f"{p.relative_to(test_dir)},{p.parent.name}" for p in images]
    (tmp_path / "missing.csv").write_text("image,label\n" + "\n".join(rows + ["gone/ghost.jpg,red_circle"]) + "\n")
    metrics = _predict(test_dir, checkpoint, tmp_path / "out", "--csv-labels-path", str(tmp_path / "missing.csv"))
    assert metrics["num_images"] == 12 and metrics["skipped_images"] == 1
    assert "ghost.jpg: listed in missing.csv (line 14) but not found" in (tmp_path / "out" / "predict.log").read_text()

    (tmp_path / "unknown.csv").write_text("image,label\n" + "\n".join(rows + [f"{rows[0].split(',')[0]},purple_moon"]))
    with pytest.raises(SystemExit):
        _predict(test_dir, checkpoint, tmp_path / "out2", "--csv-labels-path", str(tmp_path / "unknown.csv"))
    err = _error(capsys)
    assert "unknown.csv" in err and "'purple_moon'" in err

    with pytest.raises(SystemExit):
        _predict(test_dir, checkpoint, tmp_path / "out3", "--csv-labels-path", str(tmp_path / "missing.csv"),
                 "--csv-headings", "path,class")
    assert "missing column(s) ['path', 'class']; found ['image', 'label']" in _error(capsys)


def test_predict_with_a_broken_checkpoint(tiny_data, tmp_path, capsys):
    (tmp_path / "broken.pt").write_bytes(b"PK\x03\x04 definitely not a checkpoint")
    with pytest.raises(SystemExit):
        _predict(tiny_data / "test", tmp_path / "broken.pt", tmp_path / "out")
    assert "broken.pt: not a readable PyTorch checkpoint" in _error(capsys)


# --------------------------------------------------------------------------------------------------------
# A write the disk refuses: one error line naming the file and the system's reason, no temporary file left


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("how", ["torch_runtime_error", "os_error"])
def test_a_full_disk_during_the_checkpoint_write_is_one_line(data, tmp_path, capsys, monkeypatch, how):
    import errno
    import os
    from collections import namedtuple

    import torch

    from ws_dan.models import checkpoint

    def full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        if how == "os_error":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 0))
    save = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        _train(data, save)
    lines = _error_lines(_error(capsys))
    assert info.value.code == 2 and lines == [f"error: {save / 'last.pt'}: cannot write: No space left on device"]
    assert not (save / "last.pt").exists() and not list(save.glob(".*.tmp"))


def test_a_torch_write_failure_with_room_on_the_disk_names_torchs_reason(tmp_path, monkeypatch):
    import torch

    from ws_dan.common.io import WriteError
    from ws_dan.models.checkpoint import save_checkpoint

    def fails(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", fails)
    (tmp_path / "last.pt").write_bytes(b"the previous checkpoint")
    with pytest.raises(WriteError, match=r"last.pt: cannot write: torch could not write the file \(Pytorch"):
        save_checkpoint(tmp_path / "last.pt", {"epoch": 1})
    assert (tmp_path / "last.pt").read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_read_only_save_folder_is_one_line(data, tmp_path, capsys, monkeypatch):
    """As root (CI) chmod does not stop a write: the read-only filesystem is simulated at mkdir."""
    import errno
    import os
    from pathlib import Path

    save = tmp_path / "ro" / "run"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == save:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(SystemExit) as info:
        _train(data, save)
    lines = _error_lines(_error(capsys))
    assert info.value.code == 2 and lines == [f"error: {save}: cannot create the save folder: Read-only file system"]


def test_save_attention_of_a_250_byte_image_name(tiny_data, checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    long_name = "c" * 246 + ".jpg"  # 250 bytes: the heatmap's and the writer's temporary names must be shortened
    shutil.copy(next((tiny_data / "test").rglob("*.jpg")), folder / long_name)
    shutil.copy(next((tiny_data / "test").rglob("*.jpg")), folder / "short.jpg")
    _predict(folder, checkpoint, tmp_path / "out", "--save-attention", "2")
    names = sorted(p.name for p in (tmp_path / "out" / "attention").iterdir())
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names), names
    assert any(n.startswith("0001_short") or n.startswith("0000_short") for n in names)
    assert not list((tmp_path / "out").rglob(".*.tmp"))


def test_heatmap_names_of_long_image_names_fit_and_stay_distinct():
    from ws_dan.evaluation.prediction import heatmap_name

    a, b = "é" * 120 + "a.jpg", "é" * 120 + "b.jpg"
    names = {heatmap_name(0, a), heatmap_name(0, b)}
    assert len(names) == 2 and all(len(n.encode()) < 120 for n in names)
    assert heatmap_name(3, "photos/car.jpg") == "attention/0003_car.png"  # a short name is kept as it is


def test_job_errors_gives_every_data_script_the_same_one_line_refusals(tmp_path, capsys):
    import errno

    from ws_dan.common.images import UnreadableImageError
    from ws_dan.common.io import InputError
    from ws_dan.common.runtime import RERUN_TO_FINISH, job_errors

    cases = [(InputError("x: expected a folder"), 2, "error: x: expected a folder"),
             (UnreadableImageError(tmp_path / "a.jpg", "truncated"), 2, "(--strict)"),
             (OSError(errno.ENOSPC, "No space left on device"), 2, f"error: {tmp_path}: No space left on device"),
             (KeyboardInterrupt(), 130, f"error: interrupted; files already written are complete: run the same "
                                        f"command again to finish {tmp_path}")]
    for raised, code, message in cases:
        with pytest.raises(SystemExit) as info, job_errors(tmp_path, RERUN_TO_FINISH):
            raise raised
        err = capsys.readouterr().err.strip()
        assert info.value.code == code and message in err and len(err.splitlines()) == 1
    with pytest.raises(KeyboardInterrupt), job_errors(tmp_path):  # no message: Ctrl-C stays Ctrl-C
        raise KeyboardInterrupt
