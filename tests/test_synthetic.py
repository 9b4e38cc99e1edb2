"""Tests for the synthetic fine-grained sample dataset (data_tools.synthetic)."""

from __future__ import annotations

import csv
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools.synthetic import (
    BADGE_COLOURS,
    MAX_CLASSES,
    SampleDataset,
    class_catalogue,
    make_sample_dataset,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_sample_data.py"
SIZE = 64  # smallest supported size keeps the tests fast


def _files(root: Path) -> dict:
    """Relative path -> bytes of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _read_boxes(ds: SampleDataset) -> list:
    with open(ds.boxes_csv, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _box(row: dict) -> tuple:
    return tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))


def _leftovers(parent: Path, name: str) -> list:
    """Hidden staging/trash folders the generator may have left next to `name`."""
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> SampleDataset:
    out = tmp_path_factory.mktemp("synth") / "ds"
    return make_sample_dataset(out, num_classes=3, train_per_class=4, test_per_class=2, image_size=SIZE, seed=7)


def test_layout_and_counts(small: SampleDataset) -> None:
    assert small.class_names == class_catalogue()[:3]
    assert (small.num_train, small.num_test) == (12, 6)
    assert small.boxes_csv == small.output_dir / "boxes.csv"
    assert sorted(p.name for p in small.output_dir.iterdir()) == ["boxes.csv", "test", "train"]
    for split, n in (("train", 4), ("test", 2)):
        assert sorted(p.name for p in (small.output_dir / split).iterdir()) == sorted(small.class_names)
        for name in small.class_names:
            files = sorted((small.output_dir / split / name).iterdir())
            assert [p.name for p in files] == [f"{i:04d}.jpg" for i in range(n)]
            with Image.open(files[0]) as im:
                assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE))
    # No staging folder left next to the dataset.
    assert _leftovers(small.output_dir.parent, small.output_dir.name) == []


def test_boxes_csv(small: SampleDataset) -> None:
    rows = _read_boxes(small)
    assert list(rows[0].keys()) == ["split", "class", "path", "x0", "y0", "x1", "y1"]
    listed = sorted(r["path"] for r in rows)
    on_disk = sorted(p.relative_to(small.output_dir).as_posix() for p in small.output_dir.rglob("*.jpg"))
    assert listed == on_disk and len(set(listed)) == len(listed) == 18
    lo, hi = int(0.08 * SIZE), int(np.ceil(0.14 * SIZE))
    for r in rows:
        assert r["path"] == f"{r['split']}/{r['class']}/{Path(r['path']).name}"
        x0, y0, x1, y1 = _box(r)
        assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
        assert x1 - x0 == y1 - y0  # badges are drawn in a square box
        assert lo <= x1 - x0 <= hi


def test_class_names_and_range() -> None:
    names = class_catalogue()
    assert len(names) == len(set(names)) == MAX_CLASSES >= 12
    colours = "|".join(BADGE_COLOURS)
    assert all(re.fullmatch(rf"({colours})_(circle|triangle|square|star|diamond|cross)", n) for n in names)
    # Two classes differ by shape only: the task is fine-grained from the start.
    assert names[:2] == ["red_circle", "red_triangle"]
    for bad in (0, 1, MAX_CLASSES + 1):
        with pytest.raises(ValueError, match="num_classes"):
            make_sample_dataset("/nonexistent/never/written", num_classes=bad)
    with pytest.raises(ValueError, match="image_size"):
        make_sample_dataset("/nonexistent/never/written", image_size=16)


def test_deterministic(tmp_path: Path, small: SampleDataset) -> None:
    kwargs = dict(num_classes=3, train_per_class=4, test_per_class=2, image_size=SIZE)
    same = make_sample_dataset(tmp_path / "same", seed=7, **kwargs)
    assert _files(same.output_dir) == _files(small.output_dir)

    other = _files(make_sample_dataset(tmp_path / "other", seed=8, **kwargs).output_dir)
    ref = _files(small.output_dir)
    assert other.keys() == ref.keys()
    assert all(other[k] != ref[k] for k in ref if k.endswith(".jpg"))

    # Per-image seeds: an image does not depend on how many classes/images were asked for.
    sub = _files(make_sample_dataset(tmp_path / "sub", seed=7, num_classes=2, train_per_class=2,
                                     test_per_class=1, image_size=SIZE).output_dir)
    jpgs = [k for k in sub if k.endswith(".jpg")]
    assert len(jpgs) == 6 and all(sub[k] == ref[k] for k in jpgs)


def test_badge_is_inside_its_box(tmp_path: Path) -> None:
    # Every class once per split at the default size, so every colour/shape is checked.
    ds = make_sample_dataset(tmp_path / "all", num_classes=MAX_CLASSES, train_per_class=2,
                             test_per_class=1, image_size=112, seed=1)
    for r in _read_boxes(ds):
        img = np.asarray(Image.open(ds.output_dir / r["path"]), dtype=np.float32)
        x0, y0, x1, y1 = _box(r)
        colour = np.array(BADGE_COLOURS[r["class"].split("_")[0]], dtype=np.float32)
        near = np.linalg.norm(img - colour, axis=-1) < 80
        inside = int(near[y0:y1, x0:x1].sum())
        # Even the thinnest shape (star) fills well over 15 % of its box.
        assert inside >= 0.15 * (x1 - x0) * (y1 - y0), r["path"]
        # Outside the box (+2 px for resampling/JPEG fringe) the class colour is (almost) absent.
        near[max(0, y0 - 2): y1 + 2, max(0, x0 - 2): x1 + 2] = False
        assert near.sum() < 0.1 * inside, r["path"]


def test_refuses_non_empty_dir_and_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=re.escape(str(out))):
        make_sample_dataset(out, num_classes=2, train_per_class=1, test_per_class=1, image_size=SIZE)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]

    first = make_sample_dataset(out, num_classes=2, train_per_class=2, test_per_class=1,
                                image_size=SIZE, overwrite=True)
    stale = out / "train" / "stale.jpg"
    stale.write_bytes(b"old")
    second = make_sample_dataset(out, num_classes=3, train_per_class=1, test_per_class=1,
                                 image_size=SIZE, overwrite=True)
    assert first.output_dir == second.output_dir == out.absolute()
    assert (out / "notes.txt").read_text() == "keep me"  # only our own outputs are replaced
    assert not stale.exists()
    assert len(list((out / "train").rglob("*.jpg"))) == 3 and len(_read_boxes(second)) == 6
    assert _leftovers(tmp_path, "ds") == []

    # An existing *empty* folder is fine without overwrite; a file is never replaced.
    (tmp_path / "empty").mkdir()
    make_sample_dataset(tmp_path / "empty", num_classes=2, train_per_class=1, test_per_class=1, image_size=SIZE)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        make_sample_dataset(tmp_path / "afile", overwrite=True, image_size=SIZE)


def test_interrupted_run_leaves_nothing(tmp_path: Path) -> None:
    calls = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total))
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        make_sample_dataset(tmp_path / "ds", num_classes=2, train_per_class=2, test_per_class=1,
                            image_size=SIZE, progress=progress)
    assert calls == [(1, 6), (2, 6), (3, 6)]
    assert list(tmp_path.iterdir()) == []


def test_script_help() -> None:
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True,
                         cwd=SCRIPT.parent, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--output-dir" in res.stdout and "--od" in res.stdout and "(default: 5)" in res.stdout


def test_script_main(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location("make_sample_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = module.get_args_parser()
    out = tmp_path / "cli"
    argv = ["--od", str(out), "--num-classes", "2", "--train-per-class", "2",
            "--test-per-class", "1", "--image-size", str(SIZE), "--seed", "3"]
    module.main(parser.parse_args(argv))
    printed = capsys.readouterr().out
    assert "red_circle, red_triangle" in printed and str(out) in printed
    assert len(list((out / "train").rglob("*.jpg"))) == 4 and len(list((out / "test").rglob("*.jpg"))) == 2
    # Same as the library call with the same arguments.
    ref = make_sample_dataset(tmp_path / "lib", num_classes=2, train_per_class=2, test_per_class=1,
                              image_size=SIZE, seed=3)
    assert _files(out) == _files(ref.output_dir)
    # A second run without --overwrite is refused with a message, not a traceback.
    with pytest.raises(SystemExit, match="not empty"):
        module.main(parser.parse_args(argv))
    module.main(parser.parse_args(argv + ["--overwrite"]))
