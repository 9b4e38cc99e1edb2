"""split_dataset: stratified, reproducible, loses nothing, never touches the sources, survives Ctrl-C."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import ROOT, run_script, shared
from test_dedupe import photo, tree_snapshot

from data_tools.split import assign_splits
from ws_dan.common import outputs


def _manifest(out: Path) -> list[dict]:
    with open(out / "split_manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def sources(tmp_path) -> Path:
    """cars/train and cars/test with 3 classes (13, 9 and 1 images), a name used in both splits, a non-image
    and a truncated JPEG."""
    root = tmp_path / "cars"
    seed = 0
    for cls, n_train, n_test in [("Audi A4", 10, 3), ("BMW M3", 7, 2), ("Rare car", 1, 0)]:
        for split, n in (("train", n_train), ("test", n_test)):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                photo(seed, (48, 32)).save(root / split / cls / f"{k:03d}.jpg", quality=90)
                seed += 1
    (root / "train" / "Audi A4" / "notes.txt").write_text("not an image")
    good = (root / "train" / "BMW M3" / "000.jpg").read_bytes()
    (root / "train" / "BMW M3" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return root


def _split(sources: Path, out: Path, *extra: str) -> dict:
    return run_script("split_dataset", ["--source", str(sources / "train"), "--source", str(sources / "test"),
                                        "--output-dir", str(out), "-j", "1", "--no-progress", *extra])


def test_split_is_stratified_loses_no_file_and_leaves_sources_alone(sources, tmp_path):
    before = tree_snapshot(sources)
    out = tmp_path / "out"
    s = _split(sources, out)
    assert tree_snapshot(sources) == before
    rows = _manifest(out)
    # every readable source image once (23 images; the text file and the truncated JPEG are left out)
    assert sorted(r["source"] for r in rows) == sorted(
        str(p) for p in sources.rglob("*.jpg") if p.name != "truncated.jpg")
    assert s["images"] == 23 and s["skipped"] == 2
    per_class = Counter((r["class"], r["split"]) for r in rows)
    assert per_class[("Audi A4", "test")] == round(13 * 0.25) == 3 and per_class[("Audi A4", "train")] == 10
    assert per_class[("BMW M3", "test")] == 2 and per_class[("BMW M3", "train")] == 7
    assert per_class[("Rare car", "train")] == 1 and s["classes_too_few"] == ["Rare car"]
    for r in rows:
        dst = out / r["path"]
        assert r["path"].startswith(f"{r['split']}/{r['class']}/")
        assert hashlib.sha256(dst.read_bytes()).hexdigest() == r["sha256"] == \
            hashlib.sha256(Path(r["source"]).read_bytes()).hexdigest()
    files = [p for split in ("train", "test") for p in (out / split).rglob("*") if p.is_file()]
    assert len(files) == 23
    # names used in both sources are kept apart, not overwritten
    assert s["renamed_on_collision"] >= 1 and any("__test" in r["path"] for r in rows)
    assert not (out / ".incomplete.json").exists() and (out / "split_report.json").is_file()


def test_split_is_reproducible_for_a_seed(sources, tmp_path):
    a = _manifest(tmp_path / "a") if _split(sources, tmp_path / "a", "--seed", "7") else None
    b = _manifest(tmp_path / "b") if _split(sources, tmp_path / "b", "--seed", "7") else None
    c = _manifest(tmp_path / "c") if _split(sources, tmp_path / "c", "--seed", "8") else None
    assert a == b
    assert [r["split"] for r in a] != [r["split"] for r in c]


def test_assignment_does_not_depend_on_other_classes():
    labels = ["x"] * 8 + ["y"] * 8
    alone, _ = assign_splits(labels[:8], [[k] for k in range(8)], 0.25, seed=3)
    both, rows = assign_splits(labels, [[k] for k in range(16)], 0.25, seed=3)
    assert both[:8] == alone and [r["test"] for r in rows] == [2, 2]


def test_group_duplicates_keeps_copies_on_one_side(tmp_path):
    src = tmp_path / "src"
    for cls in ("A", "B"):
        (src / cls).mkdir(parents=True)
    for k in range(12):
        im = photo(100 + k, (96, 72))
        im.save(src / "A" / f"{k:02d}.png")
        if k < 6:  # near copies: re-encoded and shrunk
            im.resize((48, 36)).save(src / "A" / f"{k:02d}_copy.jpg", quality=60)
        photo(200 + k, (96, 72)).save(src / "B" / f"{k:02d}.png")
    out = tmp_path / "out"
    s = run_script("split_dataset", ["--source", str(src), "--od", str(out), "--group-duplicates", "-j", "2",
                                     "--no-progress", "--seed", "1"])
    assert s["duplicate_groups"] == 6
    side = {(r["class"], Path(r["source"]).name): r["split"] for r in _manifest(out)}
    for k in range(6):
        assert side["A", f"{k:02d}.png"] == side["A", f"{k:02d}_copy.jpg"]
    tests = Counter(cls for (cls, _), split in side.items() if split == "test")
    assert tests["B"] == 3 and tests["A"] in (4, 5)  # A: 18 images in 12 units, quota 5 (4.5 rounded half up)


def test_link_makes_hard_links(sources, tmp_path):
    out = tmp_path / "out"
    s = _split(sources, out, "--link")
    assert s["linked"] == 23
    r = _manifest(out)[0]
    assert os.stat(out / r["path"]).st_ino == os.stat(r["source"]).st_ino


def test_refusals(sources, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _split(sources, sources / "train" / "split")
    assert "inside the input folder" in capsys.readouterr().err
    assert not (sources / "train" / "split").exists()
    with pytest.raises(SystemExit):
        run_script("split_dataset", ["--source", str(sources / "train"), "--od", str(sources), "--no-progress"])
    assert "contains the input folder" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        _split(sources, busy)
    assert "not empty" in capsys.readouterr().err
    s = _split(sources, busy, "--overwrite")
    assert s["images"] == 23 and (busy / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit):
        _split(sources, tmp_path / "x", "--test-ratio", "1.5")
    assert "--test-ratio" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_script("split_dataset", ["--source", str(tmp_path / "missing"), "--od", str(tmp_path / "y")])
    assert "does not exist" in capsys.readouterr().err


def test_strict_fails_on_the_truncated_file(sources, tmp_path, capsys):
    with pytest.raises(SystemExit):
        _split(sources, tmp_path / "out", "--strict")
    assert "truncated.jpg" in capsys.readouterr().err


def test_ctrl_c_leaves_no_half_file_and_rerun_completes(sources, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_copy2 = shutil.copy2
    calls = []

    def copy_then_interrupt(src, dst, *a, **kw):
        calls.append(dst)
        if len(calls) == 5:  # Ctrl-C while the 5th file is half-written
            Path(dst).write_bytes(Path(src).read_bytes()[:100])
            raise KeyboardInterrupt
        return real_copy2(src, dst, *a, **kw)

    monkeypatch.setattr(outputs.shutil, "copy2", copy_then_interrupt)
    with pytest.raises(SystemExit) as info:
        _split(sources, out)
    assert info.value.code == 130
    monkeypatch.setattr(outputs.shutil, "copy2", real_copy2)
    written = [p for p in out.rglob("*") if p.is_file() and p.parent != out]
    assert len(written) == 4  # complete files only: no half-written file under a final name, no temp file
    assert not [p for p in out.rglob("*.tmp")]
    rerun = _split(sources, out)  # same command, no --overwrite needed
    assert rerun["already_there"] == 4 and rerun["copied"] == 19
    for r in _manifest(out):
        assert hashlib.sha256((out / r["path"]).read_bytes()).hexdigest() == r["sha256"]


def test_real_photos_split(tmp_path):
    cars = shared("cars")
    out = tmp_path / "cars_split"
    s = run_script("split_dataset", ["--source", str(cars), "--od", str(out), "--no-check", "--link", "-j", "1",
                                     "--no-progress"])
    assert s["images"] == 200 and s["test"] == 50 and s["classes"] == 10
    assert all(len(list((out / "test" / c.name).iterdir())) == 5 for c in cars.iterdir())


def test_help():
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "split_dataset.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--group-duplicates" in res.stdout and "(default:" in res.stdout
