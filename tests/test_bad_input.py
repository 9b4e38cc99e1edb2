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
