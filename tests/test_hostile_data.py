"""The data tools' promise, against hostile folders and files, parametrised over the tools it binds.

A user's files are never moved, deleted or overwritten unless a flag asked for exactly that, and then an undo
restores them byte for byte; no tool writes outside its output root or reads its own outputs, whatever links the
folders hold. Cases: symlinked files (relative, into another dataset) and folders, hard-link pairs, hand-written
undo manifests, outputs overlapping inputs, interrupted writes.
"""

from __future__ import annotations

import csv
import errno
import logging
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_script
from test_dedupe import photo

from data_tools.clean import quarantine_images, undo_clean
from ws_dan.common.dataset_folders import scan_dataset
from ws_dan.common.io import InputError, atomic_path, sha256_file
from ws_dan.common.outputs import copy_file, move_file, output_path

FLAGS = ["-j", "1", "--no-progress"]


def snapshot(root: Path) -> dict:
    """Every entry under ``root``: a link -> ("link", its text); a file -> ("file", sha256)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            key = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[key] = ("link", os.readlink(p))
            elif p.is_file():
                out[key] = ("file", sha256_file(p))
    return out


@pytest.fixture
def linked(tmp_path):
    """``data/`` whose duplicates are links and hard links, one pointing into another dataset ``other/``.

    data/A/a.png            a photo (the keeper of its group)
    data/A/a_link.png    -> a.png (relative)
    data/B/x_link.png    -> ../../other/x.png (another dataset's file)
    data/B/x_copy.png       a copy of other/x.png
    data/C/h1.png, h2.png   one file under two names (a hard-link pair)
    data/C/y1.png, y2.png-> ../../other/y.png both (two links to the same file)
    data/D/solo.png         unrelated
    """
    data, other = tmp_path / "data", tmp_path / "other"
    for d in ("A", "B", "C", "D"):
        (data / d).mkdir(parents=True)
    other.mkdir()
    photo(1).save(data / "A" / "a.png")
    os.symlink("a.png", data / "A" / "a_link.png")
    photo(2).save(other / "x.png")
    os.symlink("../../other/x.png", data / "B" / "x_link.png")
    shutil.copy(other / "x.png", data / "B" / "x_copy.png")
    photo(3).save(data / "C" / "h1.png")
    os.link(data / "C" / "h1.png", data / "C" / "h2.png")
    photo(4).save(other / "y.png")
    os.symlink("../../other/y.png", data / "C" / "y1.png")
    os.symlink("../../other/y.png", data / "C" / "y2.png")
    photo(5).save(data / "D" / "solo.png")
    return data, other


# --------------------------------------------------------------------------------------------------------------
# 1. quarantine moves the path it reports (the link itself), never a target, never a keeper


def test_dedupe_quarantine_moves_links_not_targets_and_undo_restores_them(linked, tmp_path):
    data, other = linked
    before, other_before = snapshot(data), snapshot(other)
    out = tmp_path / "q"
    s = run_script("dedupe", ["--dd", str(data), "--od", str(out), "--action", "quarantine", "--exact-only",
                              *FLAGS])
    assert s["groups"] == 4 and s["quarantine"]["moved"] == 4
    assert snapshot(other) == other_before  # the other dataset's files never move
    after = snapshot(data)
    # every group keeps one readable copy; the keeper is the real file, not a link to it
    assert after["A/a.png"] == before["A/a.png"] and "A/a_link.png" not in after
    assert after["B/x_copy.png"] == before["B/x_copy.png"] and "B/x_link.png" not in after
    assert len([k for k in ("C/h1.png", "C/h2.png") if k in after]) == 1
    assert len([k for k in ("C/y1.png", "C/y2.png") if k in after]) == 1
    for img in scan_dataset(data)[0]:
        assert img.path.is_file()  # nothing left dangling
    moved = {Path(r["original"]).name: r for r in csv.DictReader(open(out / "quarantine_manifest.csv"))}
    assert Path(moved["a_link.png"]["quarantined"]).is_symlink()  # moved as the link
    assert os.readlink(moved["a_link.png"]["quarantined"]) == "a.png" == moved["a_link.png"]["link"]
    counts = run_script("dedupe", ["--undo", str(out / "quarantine_manifest.csv"), "--no-progress"])
    assert counts["restored"] == 4 and not counts["problems"]
    assert snapshot(data) == before and snapshot(other) == other_before


def test_clean_quarantine_moves_links_and_never_a_file_a_kept_image_links_to(linked, tmp_path):
    data, other = linked
    before, other_before = snapshot(data), snapshot(other)
    images = {img.path.name: img for img in scan_dataset(data, splits=False)[0]}
    plan = [(images["x_link.png"], 0.9), (images["a.png"], 0.8)]  # a.png: a kept image (a_link.png) links to it
    q, manifest = tmp_path / "q", tmp_path / "out" / "quarantine_manifest.csv"
    s = quarantine_images(plan, q, manifest, data_dir=data,
                          keep=[img.path for n, img in images.items() if n not in ("x_link.png", "a.png")])
    assert s["moved"] == 1 and s["not_moved"] == 1
    assert (data / "A" / "a.png").is_file() and (data / "A" / "a_link.png").is_file()
    assert snapshot(other) == other_before
    assert (q / "B" / "unwanted" / "x_link.png").is_symlink()
    assert undo_clean(manifest)["restored"] == 1
    assert snapshot(data) == before


# --------------------------------------------------------------------------------------------------------------
# 2. undo trusts only the folders the tool recorded


@pytest.fixture
def manifests(tmp_path):
    """A real quarantine (dedupe) and a real in-place merge, each with its manifest and recorded roots."""
    data = tmp_path / "data"
    (data / "A").mkdir(parents=True)
    photo(1).save(data / "A" / "a.png")
    shutil.copy(data / "A" / "a.png", data / "A" / "a_copy.png")
    run_script("dedupe", ["--dd", str(data), "--od", str(tmp_path / "dd"), "--action", "quarantine", *FLAGS])
    train, new = tmp_path / "train", tmp_path / "new"
    (train / "A").mkdir(parents=True)
    (new / "A").mkdir(parents=True)
    photo(2).save(train / "A" / "t.png")
    photo(3).save(new / "A" / "n.png")
    run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(tmp_path / "m"),
                              "--in-place", *FLAGS])
    return {"dedupe": tmp_path / "dd" / "quarantine_manifest.csv", "clean": tmp_path / "dd" / "quarantine_manifest.csv",
            "merge": tmp_path / "m" / "merge_added.csv"}


def _undo(tool: str, manifest: Path):
    script = {"dedupe": "dedupe", "clean": "clean_images", "merge": "merge_data"}[tool]
    return run_script(script, ["--undo", str(manifest), "--no-progress"])


def _craft(tool: str, manifest: Path, victim: Path, elsewhere: Path) -> None:
    """Append a hand-written row that would move ``victim`` to ``elsewhere`` (or delete it, for merge)."""
    rows = list(csv.DictReader(open(manifest, newline="")))
    fields = list(rows[0])
    if tool == "merge":
        rows.append({**rows[0], "dest": str(victim), "sha256": sha256_file(victim)})
    else:
        rows.append({**rows[0], "original": str(elsewhere), "quarantined": str(victim),
                     "sha256": sha256_file(victim), "link": ""})
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize("tool", ["dedupe", "clean", "merge"])
@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_undo_refuses_rows_outside_the_recorded_folders(manifests, tmp_path, capsys, caplog, tool, where):
    victim_dir = tmp_path / "precious"
    victim_dir.mkdir()
    photo(9).save(victim_dir / "keep_me.png")
    victim = victim_dir / "keep_me.png"
    digest = sha256_file(victim)
    manifest = manifests[tool]
    if where == "dotdot":  # looks inside the recorded folder, leads out of it
        if tool == "merge":
            victim = tmp_path / "train" / ".." / "precious" / "keep_me.png"
        else:
            victim = manifest.parent / "quarantine" / ".." / ".." / "precious" / "keep_me.png"
    _craft(tool, manifest, victim, tmp_path / "data" / "A" / "stolen.png" if where == "dotdot"
           else tmp_path / "elsewhere" / "stolen.png")
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as info:
        _undo(tool, manifest)
    assert info.value.code == 1
    assert sha256_file(victim_dir / "keep_me.png") == digest  # neither moved nor deleted
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "data" / "A" / "stolen.png").exists()
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "keep_me.png" in refused[0]
    # the genuine rows were undone all the same
    if tool == "merge":
        assert not (tmp_path / "train" / "A" / "n.png").exists() and (tmp_path / "train" / "A" / "t.png").is_file()
    else:
        assert (tmp_path / "data" / "A" / "a_copy.png").is_file() or (tmp_path / "data" / "A" / "a.png").is_file()
        assert sorted(p.name for p in (tmp_path / "data" / "A").iterdir()) == ["a.png", "a_copy.png"]


@pytest.mark.parametrize("tool", ["dedupe", "clean", "merge"])
@pytest.mark.parametrize("case", ["binary", "latin1", "missing_columns", "no_roots", "missing"])
def test_undo_of_a_bad_manifest_is_one_line(manifests, tmp_path, capsys, tool, case):
    manifest = manifests[tool]
    if case == "binary":
        manifest.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\xff\xfe")
    elif case == "latin1":
        manifest.write_bytes("original,quarantined,sha256,dest,source,class\ncaf\xe9,b,c,d,e,f\n".encode("latin-1"))
    elif case == "missing_columns":
        manifest.write_text("path,sha256\nx,y\n")
    elif case == "no_roots":
        manifest.with_name(manifest.stem + ".roots.json").unlink()
    else:
        manifest = tmp_path / "nope.csv"
    with pytest.raises(SystemExit) as info:
        _undo(tool, manifest)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert str(manifest.name) in err


def test_undo_never_overwrites_a_file_at_the_restore_destination(manifests, tmp_path):
    manifest = manifests["dedupe"]
    row = next(csv.DictReader(open(manifest, newline="")))
    Path(row["original"]).write_bytes(b"a new file the user put there")
    with pytest.raises(SystemExit) as info:
        _undo("dedupe", manifest)
    assert info.value.code == 1
    assert Path(row["original"]).read_bytes() == b"a new file the user put there"
    assert sha256_file(row["quarantined"]) == row["sha256"]  # still safe in quarantine
    with pytest.raises(FileExistsError):
        move_file(row["quarantined"], row["original"])


# --------------------------------------------------------------------------------------------------------------
# 4. --link links (or copies) the real file, never a link that dangles


@pytest.fixture
def relative_links(tmp_path):
    """``src/<class>/`` of 8 relative symlinks into ``store/`` (how splits are often built)."""
    store, src = tmp_path / "store", tmp_path / "src"
    for k in range(8):
        cls = "AB"[k % 2]
        (store / cls).mkdir(parents=True, exist_ok=True)
        (src / cls).mkdir(parents=True, exist_ok=True)
        photo(20 + k, (64, 48)).save(store / cls / f"{k}.jpg", quality=90)
        os.symlink(f"../../store/{cls}/{k}.jpg", src / cls / f"{k}.jpg")
    return src, store


@pytest.mark.parametrize("tool", ["split_dataset", "validate_images", "dedupe"])
def test_link_flag_hard_links_the_real_files(relative_links, tmp_path, capsys, tool):
    src, store = relative_links
    out = tmp_path / "out"
    argv = {"split_dataset": ["--source", str(src), "--od", str(out), "--link", *FLAGS],
            "validate_images": ["--dd", str(src), "--od", str(out), "--fix", "--link", *FLAGS],
            "dedupe": ["--dd", str(src), "--od", str(out), "--action", "copy-unique", "--link", "--exact-only",
                       *FLAGS]}[tool]
    s = run_script(tool, argv)
    written = [p for p in out.rglob("*.jpg")]
    assert len(written) == 8
    for p in written:
        assert not p.is_symlink() and p.is_file()
        assert os.stat(p).st_ino == os.stat(store / p.parent.name / p.name).st_ino  # a hard link of the real file
    counts = {"split_dataset": s, "validate_images": s.get("fixed", {}), "dedupe": s.get("copy", {})}[tool]
    assert counts["linked"] == 8 and counts.get("copied", 0) == 0
    assert all(p.is_symlink() for p in src.rglob("*.jpg"))  # the sources are untouched


def test_copy_file_of_a_link_copies_the_target_and_refuses_a_dangling_one(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "real.bin").write_bytes(b"data")
    os.symlink("real.bin", tmp_path / "a" / "l.bin")
    assert copy_file(tmp_path / "a" / "l.bin", tmp_path / "b" / "l.bin") == "copied"
    assert not (tmp_path / "b" / "l.bin").is_symlink() and (tmp_path / "b" / "l.bin").read_bytes() == b"data"
    os.symlink("nothing.bin", tmp_path / "a" / "dangling.bin")
    with pytest.raises(FileNotFoundError):
        copy_file(tmp_path / "a" / "dangling.bin", tmp_path / "b" / "d.bin", link=True)
    assert not list((tmp_path / "b").glob(".*"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_path_renames_the_finished_file_over_the_old_one(tmp_path):
    from ws_dan.common.run_dir import TEMP_FILE

    target = tmp_path / "new" / "model.onnx"  # the folder is created
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and not tmp.exists()  # the tool creates the file itself
        assert TEMP_FILE.match(tmp.name).group("name") == "model.onnx"  # a killed run's leftover is recognised
        assert not target.exists()  # nothing under the final name while the tool writes
        tmp.write_bytes(b"old")
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # what a plain write would give
    assert [p.name for p in target.parent.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize("old", [b"complete old file", None])
def test_atomic_path_removes_the_half_written_file_when_the_tool_fails(tmp_path, old):
    target = tmp_path / "model.ts"
    if old is not None:
        target.write_bytes(old)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half a fi")
            raise KeyboardInterrupt  # Ctrl-C in the middle of the write
    assert [p.name for p in tmp_path.iterdir()] == ([] if old is None else ["model.ts"])
    if old is not None:
        assert target.read_bytes() == old  # the old file, whole


def test_copy_file_keeps_the_sources_permissions_and_links_the_same_file(tmp_path):
    src = tmp_path / "a" / "x.bin"
    src.parent.mkdir()
    src.write_bytes(b"data")
    os.chmod(src, 0o640)
    assert copy_file(src, tmp_path / "b" / "copy.bin") == "copied"
    assert (tmp_path / "b" / "copy.bin").stat().st_mode & 0o777 == 0o640
    assert copy_file(src, tmp_path / "b" / "link.bin", link=True) == "linked"
    assert os.stat(tmp_path / "b" / "link.bin").st_ino == os.stat(src).st_ino
    assert src.stat().st_mode & 0o777 == 0o640  # the source's mode is not touched through the link
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["copy.bin", "link.bin"]


# --------------------------------------------------------------------------------------------------------------
# outputs overlapping inputs; links inside the output


def test_super_resolve_refuses_an_output_inside_its_input_before_anything(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    photo(1, (40, 30)).save(data / "x.png")
    for od in (data / "out", tmp_path):
        with pytest.raises(SystemExit) as info:
            run_script("super_resolve", ["--data_dir", str(data), "--model_path", str(tmp_path / "no_model.pth"),
                                         "--output-dir", str(od), "--no-progress"])
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.count("\n") == 1 and ("inside the input" in err or "contains" in err)
    assert sorted(p.name for p in data.iterdir()) == ["x.png"]


def test_super_resolve_folder_refuses_nested_output(tmp_path):
    import torch

    from super_resolution.folder import super_resolve_folder

    data = tmp_path / "data"
    data.mkdir()
    photo(1, (40, 30)).save(data / "x.png")
    os.symlink(data, tmp_path / "alias")
    with pytest.raises(InputError, match="inside the input"):
        super_resolve_folder(data, tmp_path / "alias" / "sr", torch.nn.Identity(), 2, progress=False)
    assert sorted(p.name for p in data.iterdir()) == ["x.png"]


@pytest.mark.parametrize("tool", ["downsample", "validate_images", "split_dataset", "dedupe"])
def test_a_symlinked_folder_in_the_output_is_not_written_through(tmp_path, capsys, tool):
    data, victim = tmp_path / "data", tmp_path / "victim"
    (data / "A").mkdir(parents=True)
    photo(1, (300, 200)).save(data / "A" / "x.jpg")
    photo(2, (300, 200)).save(data / "A" / "y.jpg")
    victim.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    sub = {"downsample": out, "validate_images": out / "fixed", "split_dataset": out / "train",
           "dedupe": out / "unique"}[tool]
    sub.mkdir(exist_ok=True)
    os.symlink(victim, sub / "A")
    argv = {"downsample": ["--dd", str(data), "--od", str(out), "--overwrite"],
            "validate_images": ["--dd", str(data), "--od", str(out), "--fix", "--overwrite"],
            "split_dataset": ["--source", str(data), "--od", str(out), "--test-ratio", "0.5", "--overwrite"],
            "dedupe": ["--dd", str(data), "--od", str(out), "--action", "copy-unique", "--overwrite"]}[tool]
    if tool == "split_dataset":  # --overwrite replaces train/ and test/ (the link itself, not its target)
        s = run_script(tool, argv + FLAGS)
        assert s["images"] == 2 and not (out / "train" / "A").is_symlink()
    else:
        with pytest.raises(SystemExit) as info:
            run_script(tool, argv + FLAGS)
        err = capsys.readouterr().err
        assert info.value.code == 2 and "is a link" in err and err.count("\n") == 1
    assert list(victim.iterdir()) == []


def test_output_path_rules(tmp_path):
    (tmp_path / "out").mkdir()
    assert output_path(tmp_path / "out", "a/b/c.jpg") == tmp_path / "out" / "a" / "b" / "c.jpg"
    assert (tmp_path / "out" / "a" / "b").is_dir()
    for bad in ("../x.jpg", str(tmp_path / "x.jpg"), "a/../../x.jpg"):
        with pytest.raises(InputError):
            output_path(tmp_path / "out", bad)
    (tmp_path / "out" / "f").write_text("x")
    with pytest.raises(InputError, match="found a file"):
        output_path(tmp_path / "out", "f/x.jpg")


def test_merge_in_place_does_not_write_through_a_symlinked_class_folder(tmp_path, capsys):
    train, new, elsewhere = tmp_path / "train", tmp_path / "new", tmp_path / "elsewhere"
    (train / "A").mkdir(parents=True)
    photo(1).save(train / "A" / "t.png")
    elsewhere.mkdir()
    os.symlink(elsewhere, train / "B")
    (new / "B").mkdir(parents=True)
    photo(2).save(new / "B" / "n.png")
    with pytest.raises(SystemExit) as info:
        run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(tmp_path / "m"),
                                  "--in-place", *FLAGS])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "is a link" in err
    assert list(elsewhere.iterdir()) == []


# --------------------------------------------------------------------------------------------------------------
# 12 (part): nothing dropped without a word


def test_split_names_an_empty_class_folder(tmp_path, caplog):
    src = tmp_path / "src"
    for cls in ("A", "B"):
        (src / cls).mkdir(parents=True)
        for k in range(3):
            photo(k + (10 if cls == "B" else 0), (48, 40)).save(src / cls / f"{k}.jpg")
    (src / "Empty").mkdir()
    (src / "Empty" / "notes.txt").write_text("no images here")
    with caplog.at_level(logging.WARNING):
        s = run_script("split_dataset", ["--source", str(src), "--od", str(tmp_path / "out"), *FLAGS])
    lines = [r.getMessage() for r in caplog.records if "Empty" in r.getMessage()]
    assert len(lines) == 1 and "no images" in lines[0] and "\n" not in lines[0]
    assert s["empty_class_folders"] == [str(src / "Empty")] and s["classes"] == 2


# --------------------------------------------------------------------------------------------------------------
# 13. undo moves files only out of a quarantine the tool made (its marker), into the data folders it names


def _write_forged(manifest: Path, rows: list[dict], roots: dict) -> None:
    import json

    manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["original", "quarantined", "sha256", "bytes", "group", "link"])
        w.writeheader()
        w.writerows(rows)
    manifest.with_name(manifest.stem + ".roots.json").write_text(
        json.dumps({"tool": "dedupe", "manifest": manifest.name, "roots": roots}))


@pytest.mark.parametrize("script", ["dedupe", "clean_images", "find_label_issues"])
def test_undo_of_a_forged_manifest_naming_another_folder_as_the_quarantine_moves_nothing(tmp_path, capsys,
                                                                                          script):
    data, precious = tmp_path / "data", tmp_path / "precious"
    (data / "A").mkdir(parents=True)
    precious.mkdir()
    photo(1).save(data / "A" / "a.png")
    photo(9).save(precious / "keep_me.png")
    before = snapshot(precious)
    forged = tmp_path / "downloaded" / "quarantine_manifest.csv"
    _write_forged(forged, [{"original": str(data / "A" / "stolen.png"), "quarantined": str(precious / "keep_me.png"),
                            "sha256": sha256_file(precious / "keep_me.png"), "bytes": 1, "group": 1, "link": ""}],
                  {"original": [str(data)], "quarantine": [str(precious)]})
    with pytest.raises(SystemExit) as info:
        run_script(script, ["--undo", str(forged), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert str(precious) in err and "not a quarantine folder this tool made" in err
    assert snapshot(precious) == before and not (data / "A" / "stolen.png").exists()


def test_undo_trusts_the_quarantines_marker_not_the_sidecar(manifests, tmp_path, capsys, caplog):
    """A genuine quarantine, its sidecar edited to add a data folder and a row restoring into it: refused (the
    marker inside the quarantine names the data folders); a forged manifest elsewhere naming the genuine
    quarantine is refused too (the marker names the manifests that moved files there)."""
    import json

    manifest = manifests["dedupe"]
    rows = list(csv.DictReader(open(manifest, newline="")))
    q_file = Path(rows[0]["quarantined"])
    side = manifest.with_name(manifest.stem + ".roots.json")
    record = json.loads(side.read_text())
    record["roots"]["original"].append(str(tmp_path / "elsewhere"))
    side.write_text(json.dumps(record))
    _write_forged(manifest, rows + [{**rows[0], "original": str(tmp_path / "elsewhere" / "x.png")}],
                  record["roots"])
    with caplog.at_level(logging.WARNING), pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--undo", str(manifest), "--no-progress"])
    assert info.value.code == 1
    assert [r.getMessage() for r in caplog.records if "refused" in r.getMessage()][0].count("elsewhere") == 1
    assert not (tmp_path / "elsewhere").exists()
    assert sorted(p.name for p in (tmp_path / "data" / "A").iterdir()) == ["a.png", "a_copy.png"]  # genuine row

    capsys.readouterr()
    photo(5).save(q_file)  # put something back in the genuine quarantine, then point a forged manifest at it
    forged = tmp_path / "forged" / "quarantine_manifest.csv"
    _write_forged(forged, [{**rows[0], "original": str(tmp_path / "data" / "A" / "new.png"),
                            "sha256": sha256_file(q_file)}], record["roots"])
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--undo", str(forged), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "not a quarantine folder this tool made for" in err and err.count("\n") == 1
    assert q_file.is_file() and not (tmp_path / "data" / "A" / "new.png").exists()


def test_a_quarantine_is_never_made_in_a_folder_holding_other_files(tmp_path):
    data, qdir = tmp_path / "data", tmp_path / "mine"
    (data / "A").mkdir(parents=True)
    photo(1).save(data / "A" / "a.png")
    qdir.mkdir()
    (qdir / "notes.txt").write_text("the user's")
    from data_tools.manifest import quarantine_files

    with pytest.raises(InputError, match="expected a new or empty quarantine folder"):
        quarantine_files([(data / "A" / "a.png", "A/a.png", {})], [data], qdir, tmp_path / "out" / "m.csv")
    assert (data / "A" / "a.png").is_file() and not (tmp_path / "out" / "m.csv").exists()
    assert sorted(p.name for p in qdir.iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------------------------------------------
# 14. a write the disk refuses is one line naming the path, and leaves no temporary file


def _hidden_temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _copy_half_then_enospc(src, dst, *args, **kwargs):
    Path(dst).write_bytes(Path(src).read_bytes()[:10])  # half a file, then the disk is full
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def two_groups(tmp_path):
    data = tmp_path / "data"
    for cls in ("A", "B"):
        (data / cls).mkdir(parents=True)
        for k in range(3):
            photo(k + (10 if cls == "B" else 0), (64, 48)).save(data / cls / f"{k}.png")
    shutil.copy(data / "A" / "0.png", data / "A" / "0_copy.png")
    return data


@pytest.mark.parametrize("tool", ["dedupe", "split_dataset"])
def test_a_full_disk_while_copying_is_one_line_and_leaves_no_temporary_file(two_groups, tmp_path, capsys,
                                                                            monkeypatch, tool):
    out = tmp_path / "out"
    argv = {"dedupe": ["--dd", str(two_groups), "--od", str(out), "--action", "copy-unique"],
            "split_dataset": ["--source", str(two_groups), "--od", str(out), "--test-ratio", "0.5"]}[tool]
    before = snapshot(two_groups)
    monkeypatch.setattr(shutil, "copy2", _copy_half_then_enospc)
    with pytest.raises(SystemExit) as info:
        run_script(tool, argv + FLAGS)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert "No space left on device" in err and str(out) in err and "Errno" not in err
    copies = [p for p in out.rglob("*.png") if p.name != "contact_sheet.png"]
    assert _hidden_temp_files(out) == [] and copies == []  # nothing half-written under a final name
    assert snapshot(two_groups) == before


def test_a_full_disk_while_writing_a_report_is_one_line_and_leaves_no_temporary_file(two_groups, tmp_path, capsys,
                                                                                    monkeypatch):
    from ws_dan.common import io

    out = tmp_path / "out"
    real_fsync = io.os.fsync
    calls = []

    def fsync_then_full(fd):
        calls.append(fd)
        if len(calls) > 1:  # the output folder's marker is written; then the disk is full
            _enospc()
        real_fsync(fd)

    monkeypatch.setattr(io.os, "fsync", fsync_then_full)
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--dd", str(two_groups), "--od", str(out), *FLAGS])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "duplicates.csv: cannot write: No space left" in err
    assert _hidden_temp_files(out) == [] and not (out / "duplicates.csv").exists()


@pytest.mark.parametrize("tool", ["dedupe", "split_dataset"])
def test_a_read_only_output_folder_is_one_line(two_groups, tmp_path, capsys, monkeypatch, tool):
    """As root (CI) chmod does not stop a write: the read-only filesystem is simulated at mkdir."""
    out = tmp_path / "ro" / "out"
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self == out or out in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    argv = {"dedupe": ["--dd", str(two_groups), "--od", str(out)],
            "split_dataset": ["--source", str(two_groups), "--od", str(out)]}[tool]
    with pytest.raises(SystemExit) as info:
        run_script(tool, argv + FLAGS)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert f"{out}: cannot create the output folder: Read-only file system" in err


def test_a_quarantine_in_a_read_only_data_folder_moves_nothing_and_says_so(two_groups, tmp_path, capsys,
                                                                          monkeypatch):
    before = snapshot(two_groups)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "link", read_only)
    monkeypatch.setattr(os, "rename", read_only)
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--dd", str(two_groups), "--od", str(tmp_path / "q"), "--action", "quarantine",
                              "--exact-only", *FLAGS])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert "Read-only file system" in err and f"cannot move {two_groups / 'A'}" in err
    assert snapshot(two_groups) == before and not (two_groups / ".ws_dan.lock").exists()


def test_a_250_byte_name_gets_a_temporary_name_that_fits(tmp_path):
    from ws_dan.common.io import write_json

    name = "é" * 60 + "x" * 125 + ".json"  # 250 bytes in UTF-8: the temporary name must be cut
    assert len(name.encode()) == 250
    write_json(tmp_path / name, {"ok": 1})
    assert [p.name for p in tmp_path.iterdir()] == [name]


# --------------------------------------------------------------------------------------------------------------
# 15. one run at a time moves files in a folder


@pytest.fixture
def lock_holder(tmp_path):
    """Start a process holding the lock of a folder; returns a function (folder) -> its pid."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    procs = []

    def hold(folder: Path) -> int:
        code = ("import sys\nfrom ws_dan.common.outputs import folder_lock\n"
                "with folder_lock([sys.argv[1]], 'dedupe --action quarantine'):\n"
                "    print('locked', flush=True)\n    sys.stdin.read()\n")
        proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True, cwd=root,
                                env={**os.environ, "PYTHONPATH": str(root)})
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc.pid

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_second_quarantine_of_a_folder_in_use_is_refused_in_one_line(two_groups, tmp_path, capsys, lock_holder):
    before = snapshot(two_groups)
    pid = lock_holder(two_groups)
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--dd", str(two_groups), "--od", str(tmp_path / "q2"), "--action", "quarantine",
                              "--exact-only", *FLAGS])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert f"{two_groups.resolve()}: in use by dedupe --action quarantine (pid {pid})" in err
    assert not (tmp_path / "q2").exists()  # refused before anything was written
    # a report only reads: it runs beside the quarantine
    run_script("dedupe", ["--dd", str(two_groups), "--od", str(tmp_path / "report"), *FLAGS])
    after = snapshot(two_groups)
    after.pop(".ws_dan.lock")  # the holder's
    assert after == before


def test_a_folder_inside_or_around_a_folder_in_use_is_refused_too(two_groups, tmp_path, capsys, lock_holder):
    pid = lock_holder(two_groups / "A")
    with pytest.raises(SystemExit):
        run_script("dedupe", ["--dd", str(two_groups), "--od", str(tmp_path / "q"), "--action", "quarantine",
                              *FLAGS])
    err = capsys.readouterr().err
    assert f"(pid {pid})" in err and err.count("\n") == 1
    assert (two_groups / "A" / "0_copy.png").is_file()


def test_undo_while_the_folder_is_in_use_is_refused(manifests, tmp_path, capsys, lock_holder):
    rows = list(csv.DictReader(open(manifests["dedupe"], newline="")))
    pid = lock_holder(tmp_path / "data")
    with pytest.raises(SystemExit) as info:
        run_script("dedupe", ["--undo", str(manifests["dedupe"]), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"(pid {pid})" in err and err.count("\n") == 1
    assert Path(rows[0]["quarantined"]).is_file() and not Path(rows[0]["original"]).exists()


def test_a_lock_left_by_a_killed_run_is_taken_over(two_groups, tmp_path):
    import json
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (two_groups / ".ws_dan.lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                         "tool": "dedupe"}))
    s = run_script("dedupe", ["--dd", str(two_groups), "--od", str(tmp_path / "q"), "--action", "quarantine",
                              "--exact-only", *FLAGS])
    assert s["quarantine"]["moved"] == 1
    assert not (two_groups / ".ws_dan.lock").exists()  # released when the run ended


def test_a_file_gone_since_the_scan_is_counted_not_a_traceback(two_groups, tmp_path, caplog):
    from data_tools.manifest import quarantine_files

    gone = two_groups / "A" / "0_copy.png"
    moves = [(gone, "A/0_copy.png", {}), (two_groups / "B" / "0.png", "B/0.png", {})]
    gone.unlink()  # another program removed it after the plan was made
    with caplog.at_level(logging.WARNING):
        s = quarantine_files(moves, [two_groups], tmp_path / "q", tmp_path / "m.csv")
    assert s["moved"] == 1 and s["not_moved"] == 1
    assert any("gone since it was found" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------------------------------------------
# 14. an in-place merge: every destination vetted before the first write, an undo list whatever stops it, undo
# only in a folder the merge marked, and the training folder locked while it runs


def _merge_folders(tmp_path: Path) -> tuple[Path, Path]:
    train, new = tmp_path / "train", tmp_path / "new"
    for cls in ("A", "C"):
        (train / cls).mkdir(parents=True)
        (new / cls).mkdir(parents=True)
    photo(1).save(train / "A" / "t.png")
    photo(4).save(train / "C" / "t.png")
    photo(2).save(new / "A" / "n.png")
    photo(3).save(new / "C" / "n.png")
    return train, new


def _visible(root: Path) -> dict:
    return {k: v for k, v in snapshot(root).items() if not Path(k).name.startswith(".")}


def test_merge_in_place_refused_for_one_class_folder_writes_none(tmp_path, capsys):
    """The hostile pass's case: class B of --train-dir is a link; A sorts first. The refusal comes before A's
    photo is copied, so the user's folders are untouched and nothing needs undoing."""
    train, new = _merge_folders(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, train / "B")
    (new / "B").mkdir()
    photo(5).save(new / "B" / "n.png")
    before = _visible(train)
    with pytest.raises(SystemExit) as info:
        run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(tmp_path / "m"),
                                  "--in-place", *FLAGS])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "is a link" in err and err.count("\n") == 1, err
    assert _visible(train) == before and list(elsewhere.iterdir()) == []
    assert not (train / ".ws_dan_added.json").exists()  # nothing was about to be added


def test_merge_in_place_stopped_midway_leaves_an_undo_list(tmp_path, monkeypatch):
    """A full disk at the second copy: merge_added.csv lists the first, --undo removes it, the folder is as before;
    a rerun after the stop (same settings) finishes the merge and keeps the first file on the undo list."""
    import data_tools.merge as merge_mod

    train, new = _merge_folders(tmp_path)
    before = _visible(train)
    real_copy, calls = merge_mod.copy_file, []

    def full_disk(src, dst, link=False):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copy(src, dst, link=link)

    monkeypatch.setattr(merge_mod, "copy_file", full_disk)
    with pytest.raises(OSError):
        merge_mod.merge_data(new, train, tmp_path / "m", in_place=True, workers=1)
    added = list(csv.DictReader(open(tmp_path / "m" / "merge_added.csv", newline="")))
    assert [Path(r["dest"]).name for r in added] == ["n.png"] and Path(added[0]["dest"]).is_file()

    monkeypatch.setattr(merge_mod, "copy_file", real_copy)
    s = merge_mod.merge_data(new, train, tmp_path / "m", in_place=True, workers=1)  # the rerun finishes it
    assert s["added"] == 2
    assert len(list(csv.DictReader(open(tmp_path / "m" / "merge_added.csv", newline="")))) == 2
    run_script("merge_data", ["--undo", str(tmp_path / "m" / "merge_added.csv"), "--no-progress"])
    assert _visible(train) == before


def test_undo_of_a_forged_addition_list_naming_another_folder_deletes_nothing(tmp_path, capsys):
    import json

    precious = tmp_path / "precious"
    precious.mkdir()
    photo(9).save(precious / "keep_me.png")
    before = snapshot(precious)
    forged = tmp_path / "downloaded" / "merge_added.csv"
    forged.parent.mkdir()
    with open(forged, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["source", "dest", "class", "sha256"])
        w.writeheader()
        w.writerow({"source": "x", "dest": str(precious / "keep_me.png"), "class": "A",
                    "sha256": sha256_file(precious / "keep_me.png")})
    forged.with_name("merge_added.roots.json").write_text(
        json.dumps({"tool": "merge_data", "manifest": forged.name, "roots": {"added": [str(precious)]}}))
    with pytest.raises(SystemExit) as info:
        run_script("merge_data", ["--undo", str(forged), "--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert str(precious) in err and "was not added to by this list" in err
    assert snapshot(precious) == before


def test_a_genuine_marker_does_not_let_another_list_delete(manifests, tmp_path, capsys):
    """The training folder holds the genuine merge's marker; a forged list elsewhere naming that folder is still
    refused (the marker names the lists that added there, not the folder alone)."""
    import json

    genuine = list(csv.DictReader(open(manifests["merge"], newline="")))
    victim = tmp_path / "train" / "A" / "t.png"
    forged = tmp_path / "forged" / "merge_added.csv"
    forged.parent.mkdir()
    shutil.copy(manifests["merge"], forged)
    with open(forged, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=list(genuine[0])).writerow({**genuine[0], "dest": str(victim),
                                                                 "sha256": sha256_file(victim)})
    shutil.copy(manifests["merge"].with_name("merge_added.roots.json"), forged.with_name("merge_added.roots.json"))
    with pytest.raises(SystemExit) as info:
        run_script("merge_data", ["--undo", str(forged), "--no-progress"])
    assert info.value.code == 2 and "was not added to by this list" in capsys.readouterr().err
    assert victim.is_file() and Path(genuine[0]["dest"]).is_file()
    assert json.loads((tmp_path / "train" / ".ws_dan_added.json").read_text())["lists"] == [
        str(manifests["merge"].resolve())]


def test_merge_in_place_into_a_folder_in_use_is_refused(tmp_path, capsys, lock_holder):
    train, new = _merge_folders(tmp_path)
    before = _visible(train)
    pid = lock_holder(train)
    with pytest.raises(SystemExit) as info:
        run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(tmp_path / "m"),
                                  "--in-place", *FLAGS])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"(pid {pid})" in err and err.count("\n") == 1, err
    assert _visible(train) == before and not (tmp_path / "m").exists()
