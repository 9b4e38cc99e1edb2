"""Duplicate finder: altered copies found, distinct photos not, vectorised search = brute force, actions safe."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script, shared
from PIL import Image, ImageEnhance

from data_tools.dedupe import (
    DEFAULT_THRESHOLD,
    connected_groups,
    distance,
    find_duplicates,
    find_pairs,
    hash_file,
    hash_images,
    pair_distances,
    undo_quarantine,
)
from data_tools.dedupe_eval import ALTERATIONS, make_altered_copies, synthetic_hashes


def photo(seed: int, size=(160, 120)) -> Image.Image:
    """A textured picture: smooth random colour field plus a few shapes, different for every seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    im = Image.fromarray(low).resize((w, h), Image.BICUBIC)
    arr = np.asarray(im).astype(np.int16)
    arr += rng.integers(-12, 12, arr.shape, dtype=np.int16)
    im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    from PIL import ImageDraw

    d = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, max(1, w - w // 5))), int(rng.integers(0, max(1, h - h // 5)))
        d.ellipse([x0, y0, x0 + int(rng.integers(1, max(2, w // 4))), y0 + int(rng.integers(1, max(2, h // 4)))],
                  fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return im


def tree_snapshot(root: Path) -> dict:
    """Every file under root: relative path -> (bytes, mtime_ns); every folder -> None."""
    snap = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            snap[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            snap[os.path.relpath(p, root)] = (Path(p).read_bytes(), os.stat(p).st_mtime_ns)
    return snap


# --------------------------------------------------------------------------------------------------------------
# search


@pytest.mark.parametrize("threshold", [0, 12, DEFAULT_THRESHOLD, 60])
def test_vectorised_search_equals_brute_force(threshold):
    h, _ = synthetic_hashes(240, seed=3, copies=60, flip_bits=10)
    h[5] = h[4]  # an exact pair
    a, b = np.triu_indices(len(h), 1)
    d = pair_distances(h[a], h[b])  # every pair, no screening, no blocks: the reference
    want = {(int(x), int(y)): int(v) for x, y, v in zip(a, b, d) if v <= threshold}
    for workers, block in [(1, 32), (2, 7)]:
        i, j, d = find_pairs(h, threshold, workers=workers, block=block)
        assert dict(zip(zip(i.tolist(), j.tolist()), d.tolist())) == want


def test_cross_search_equals_brute_force():
    h, _ = synthetic_hashes(150, seed=4, copies=50, flip_bits=8)
    q, r = h[100:], h[:100]
    i, j, d = find_pairs(q, DEFAULT_THRESHOLD, other=r, workers=2, block=16)
    a, b = np.meshgrid(np.arange(len(q)), np.arange(len(r)), indexing="ij")
    d = pair_distances(q[a.ravel()], r[b.ravel()])
    want = {(int(x), int(y)) for x, y, v in zip(a.ravel(), b.ravel(), d) if v <= DEFAULT_THRESHOLD}
    assert set(zip(i.tolist(), j.tolist())) == want and len(want) >= 50


def test_distance_takes_the_best_view_pairing():
    a = np.zeros((2, 4), np.uint64)
    b = np.full((2, 4), np.iinfo(np.uint64).max, np.uint64)
    b[1] = 0  # b's centre view equals a's whole view
    assert distance(a, b) == 0 and distance(b, a) == 0
    assert distance(a, np.full((2, 4), np.iinfo(np.uint64).max, np.uint64)) == 256


def test_groups_are_connected_components():
    groups = connected_groups(7, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert groups == [[0, 1, 2], [4, 5]]


def test_threshold_out_of_range_is_refused():
    with pytest.raises(ValueError, match="threshold"):
        find_pairs(np.zeros((2, 2, 4), np.uint64), 200)


# --------------------------------------------------------------------------------------------------------------
# quality on generated and real photos


def _write_copies(im: Image.Image, folder: Path, stem: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.png"]
    im.save(paths[0])
    w, h = im.size
    im.save(folder / f"{stem}_q40.jpg", quality=40)
    im.resize((w // 2, h // 2), Image.LANCZOS).save(folder / f"{stem}_half.jpg", quality=90)
    im.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(folder / f"{stem}_crop.jpg", quality=90)
    ImageEnhance.Brightness(im).enhance(1.2).save(folder / f"{stem}_bright.jpg", quality=90)
    im.save(folder / f"{stem}_same.bmp")  # identical pixels, other bytes
    return paths + [folder / f"{stem}_{s}" for s in ("q40.jpg", "half.jpg", "crop.jpg", "bright.jpg", "same.bmp")]


def test_generated_copies_found_and_distinct_images_not(tmp_path):
    for s in range(6):
        _write_copies(photo(s), tmp_path / "data", f"p{s}")
    report = find_duplicates(tmp_path / "data", workers=1)
    groups = [sorted(report.images[m].path.name.split("_")[0].split(".")[0] for m in g.members) for g in report.groups]
    assert sorted(groups) == [[f"p{s}"] * 6 for s in range(6)]
    exact = {report.images[m].path.name: k for g in report.groups for m, k in zip(g.members, g.kinds)}
    assert exact["p0_same.bmp"] in ("exact", "keep") and exact["p0_q40.jpg"] == "near"


def test_exact_means_same_pixels_not_same_bytes(tmp_path):
    im = photo(1)
    im.save(tmp_path / "a.png")
    im.save(tmp_path / "b.bmp")
    im.save(tmp_path / "c.png", compress_level=0)  # same pixels, different bytes
    a, b, c = (hash_file(tmp_path / n) for n in ("a.png", "b.bmp", "c.png"))
    assert a.digest == b.digest == c.digest
    assert (tmp_path / "a.png").read_bytes() != (tmp_path / "c.png").read_bytes()
    report = find_duplicates(tmp_path, workers=1, exact_only=True)
    assert len(report.groups) == 1 and report.groups[0].kinds == ["keep", "exact", "exact"]


def test_real_photos_altered_copies_found(tmp_path):
    cars = shared("cars")
    flowers = shared("flowers")
    sources = [sorted(d.iterdir())[0] for d in sorted(cars.iterdir())[:5]]
    sources += [sorted(d.iterdir())[1] for d in sorted(flowers.iterdir())[:4]]
    items = make_altered_copies(sources, tmp_path / "eval")
    hashed = hash_images([it.path for it in items], workers=2)
    assert len(hashed) == len(sources) * (1 + len(ALTERATIONS)) and not hashed.skipped
    i, j, _ = find_pairs(hashed.hashes, DEFAULT_THRESHOLD)
    group = {it.path: it.group for it in items}
    g = np.array([group[p] for p in hashed.paths])
    assert np.all(g[i] == g[j]), "a pair of different photos matched"
    found = set(zip(i.tolist(), j.tolist()))
    kinds = {it.path: it.kind for it in items}
    originals = {group[p]: k for k, p in enumerate(hashed.paths) if kinds[p] == "original"}
    missed = [str(p.name) for k, p in enumerate(hashed.paths) if kinds[p] != "original"
              and (min(k, originals[group[p]]), max(k, originals[group[p]])) not in found]
    # 63 copies; the target is 97% recall: allow one miss (a 3 degree rotation is the hardest)
    assert len(missed) <= 1, missed
    exact = [k for k, p in enumerate(hashed.paths) if kinds[p] == "png_same_pixels"]
    assert all(hashed.digests[k] == hashed.digests[originals[group[hashed.paths[k]]]] for k in exact)


def test_distinct_real_photos_are_not_duplicates(tmp_path):
    # The 120 Oxford flowers hold one real near-duplicate pair: the same fire lily photo, re-cropped and captioned.
    report = find_duplicates(shared("flowers"), workers=2)
    names = [sorted(report.images[m].path.name for m in g.members) for g in report.groups]
    assert names == [["image_06779.jpg", "image_06785.jpg"]]


def test_imagededup_test_set(tmp_path):
    # imagededup's own fixtures: the resized copy is found, the corrupt file is skipped with its reason.
    report = find_duplicates(shared("dedup", "mixed_images"), workers=1)
    names = [sorted(report.images[m].path.name for m in g.members) for g in report.groups]
    assert ["ukbench00120.jpg", "ukbench00120_resize.jpg"] in [n[:1] + n[-1:] for n in names]
    assert [s.path.name for s in report.skipped] == ["ukbench09268_corrupt.jpg"]


# --------------------------------------------------------------------------------------------------------------
# the script: reports, leak mode, label conflicts, actions


@pytest.fixture
def dup_tree(tmp_path) -> Path:
    """train/ and test/ with: a test copy of a train image (leak), a copy filed under another class (label
    conflict), an exact copy within train, distinct images, a corrupt file."""
    root = tmp_path / "data"
    for split, cls, seed, name in [("train", "A", 0, "a0.png"), ("train", "A", 1, "a1.png"),
                                   ("train", "B", 2, "b2.png"), ("train", "B", 3, "b3.png"),
                                   ("test", "A", 4, "a4.png"), ("test", "B", 5, "b5.png")]:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        photo(seed).save(root / split / cls / name)
    photo(0).save(root / "test" / "A" / "a0_copy.jpg", quality=60)  # leak
    photo(2).resize((80, 60)).save(root / "train" / "A" / "b2_small.jpg")  # label conflict (B image in A)
    photo(3).save(root / "train" / "B" / "b3_again.bmp")  # exact
    (root / "train" / "B" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    return root


def test_dedupe_script_reports(dup_tree, tmp_path):
    out = tmp_path / "out"
    s = run_script("dedupe", ["--data-dir", str(dup_tree), "--output-dir", str(out), "-j", "1", "--no-progress"])
    assert s["groups"] == 3 and s["duplicates"] == 3 and s["label_conflict_groups"] == 1
    assert s["cross_split_groups"] == 1 and s["skipped"] == 1 and s["exact_pairs_to_keeper"] == 1
    import csv

    rows = list(csv.DictReader(open(out / "duplicates.csv")))
    assert {r["role"] for r in rows} == {"keep", "duplicate"} and len(rows) == 6
    by_name = {Path(r["path"]).name: r for r in rows}
    assert by_name["b3_again.bmp"]["kind"] == "exact" or by_name["b3.png"]["kind"] == "exact"
    assert by_name["a0_copy.jpg"]["role"] == "duplicate"
    assert int(by_name["a0_copy.jpg"]["distance"]) <= DEFAULT_THRESHOLD
    assert by_name["b2.png"]["role"] == "keep"  # the larger copy is kept
    conflicts = list(csv.DictReader(open(out / "label_conflicts.csv")))
    assert {Path(r["path"]).name for r in conflicts} == {"b2.png", "b2_small.jpg"}
    assert (out / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "dedupe_report.json").read_text())["groups"] == 3
    assert "broken.jpg" in (out / "skipped.csv").read_text()
    assert not (out / ".incomplete.json").exists()


def test_leak_mode_lists_test_images_copied_from_train(dup_tree, tmp_path):
    out = tmp_path / "leaks"
    s = run_script("dedupe", ["--reference", str(dup_tree / "train"), "--query", str(dup_tree / "test"),
                              "--od", str(out), "-j", "1", "--no-progress"])
    assert s["mode"] == "leak" and s["leaked_query_images"] == 1
    import csv

    rows = list(csv.DictReader(open(out / "duplicates.csv")))
    assert [(Path(r["path"]).name, r["side"], r["role"]) for r in rows] == [
        ("a0.png", "reference", "keep"), ("a0_copy.jpg", "query", "duplicate")]


def test_quarantine_and_undo_restore_the_tree_byte_for_byte(dup_tree, tmp_path):
    before = tree_snapshot(dup_tree)
    out = tmp_path / "q"
    s = run_script("dedupe", ["--dd", str(dup_tree), "--od", str(out), "--action", "quarantine", "-j", "1",
                              "--no-progress"])
    assert s["quarantine"]["moved"] == 3
    after = tree_snapshot(dup_tree)
    assert len([k for k, v in after.items() if v]) == len([k for k, v in before.items() if v]) - 3
    assert len([p for p in (out / "quarantine").rglob("*.*") if p.name != ".ws_dan_quarantine.json"]) == 3
    counts = run_script("dedupe", ["--undo", str(out / "quarantine_manifest.csv"), "--no-progress"])
    assert counts["restored"] == 3 and not counts["problems"]
    assert tree_snapshot(dup_tree) == before
    again = run_script("dedupe", ["--undo", str(out / "quarantine_manifest.csv"), "--no-progress"])
    assert again["already_in_place"] == 3 and again["restored"] == 0


def test_interrupted_quarantine_can_be_undone(dup_tree, tmp_path, monkeypatch):
    before = tree_snapshot(dup_tree)
    from data_tools import manifest

    real_move = manifest.move_file
    calls = []

    def move_then_interrupt(src, dst):
        if calls:
            raise KeyboardInterrupt  # Ctrl-C after the first file moved
        calls.append(src)
        real_move(src, dst)

    monkeypatch.setattr(manifest, "move_file", move_then_interrupt)
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--dd", str(dup_tree), "--od", str(tmp_path / "q"), "--action", "quarantine",
                              "-j", "1", "--no-progress"])
    assert info.value.code == 130 and len(calls) == 1
    monkeypatch.setattr(manifest, "move_file", real_move)
    counts = undo_quarantine(tmp_path / "q" / "quarantine_manifest.csv")
    assert counts["restored"] == 1 and counts["already_in_place"] == 2
    assert tree_snapshot(dup_tree) == before


def test_copy_unique_keeps_one_of_each_group(dup_tree, tmp_path):
    before = tree_snapshot(dup_tree)
    out = tmp_path / "u"
    s = run_script("dedupe", ["--dd", str(dup_tree), "--od", str(out), "--action", "copy-unique", "-j", "2",
                              "--no-progress"])
    copied = sorted(p.name for p in (out / "unique").rglob("*") if p.is_file())
    assert len(copied) == s["images"] - s["duplicates"] == 6
    assert "a0.png" in copied and "a0_copy.jpg" not in copied and "broken.jpg" not in copied
    assert tree_snapshot(dup_tree) == before


def test_strict_stops_at_the_unreadable_file(dup_tree, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--dd", str(dup_tree), "--od", str(tmp_path / "o"), "--strict", "-j", "1",
                              "--no-progress"])
    assert info.value.code == 2 and "broken.jpg" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["inside", "non_empty", "missing", "both_modes", "no_output"])
def test_bad_arguments_get_one_line(dup_tree, tmp_path, capsys, case):
    argv = {"inside": ["--dd", str(dup_tree), "--od", str(dup_tree / "train" / "report")],
            "non_empty": ["--dd", str(dup_tree), "--od", str(dup_tree.parent)],
            "missing": ["--dd", str(tmp_path / "nope"), "--od", str(tmp_path / "o")],
            "both_modes": ["--dd", str(dup_tree), "--reference", str(dup_tree), "--query", str(dup_tree),
                           "--od", str(tmp_path / "o")],
            "no_output": ["--dd", str(dup_tree)]}[case]
    if case == "non_empty":
        argv = ["--dd", str(dup_tree / "train"), "--od", str(dup_tree / "test")]
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", argv + ["--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    expected = {"inside": "inside the input", "non_empty": "not empty", "missing": "does not exist",
                "both_modes": "not both", "no_output": "--output-dir"}[case]
    assert expected in err
    assert not (dup_tree / "train" / "report").exists()
