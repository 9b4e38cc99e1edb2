"""validate_images, dataset_stats, merge_data, downsample, the shared output-folder rules, and every --help."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_script, shared
from PIL import Image
from test_dedupe import photo, tree_snapshot

from ws_dan.common.dataset_folders import scan_dataset
from ws_dan.common.images import open_image, read_image_info
from ws_dan.common.io import InputError
from ws_dan.common.outputs import finish_output_dir, prepare_output_dir, unique_path

SCRIPTS = ["split_dataset", "dedupe", "validate_images", "dataset_stats", "merge_data", "downsample",
           "benchmark_dedupe"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------------------------------------------
# shared rules


def test_output_folder_rules(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for bad in (data, data / "out", tmp_path):
        with pytest.raises(InputError):
            prepare_output_dir(bad, [data], tool="t")
    out = tmp_path / "out"
    assert prepare_output_dir(out, [data], tool="t", settings={"a": 1}) is False
    (out / "file.txt").write_text("x")
    # an interrupted run of the same tool and settings may continue; anything else is refused
    assert prepare_output_dir(out, [data], tool="t", settings={"a": 1}) is True
    with pytest.raises(InputError, match="different settings"):
        prepare_output_dir(out, [data], tool="t", settings={"a": 2})
    finish_output_dir(out)
    with pytest.raises(InputError, match="not empty"):
        prepare_output_dir(out, [data], tool="t", settings={"a": 1})
    assert prepare_output_dir(out, [data], tool="t", overwrite=True) is False


def test_output_inside_input_through_a_symlink_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    os.symlink(data / "sub", tmp_path / "alias")
    with pytest.raises(InputError, match="inside the input"):
        prepare_output_dir(tmp_path / "alias" / "out", [data], tool="t")


def test_unique_path_never_reuses_a_name():
    taken: set = set()
    names = [unique_path(Path("A/x.jpg"), taken, tag="test").as_posix() for _ in range(3)]
    assert names == ["A/x.jpg", "A/x__test.jpg", "A/x__test_2.jpg"]
    assert unique_path(Path("A/X.JPG"), taken).as_posix() == "A/X_2.JPG"  # case-insensitive filesystems


def test_symlink_loop_does_not_hang(tmp_path):
    root = tmp_path / "data" / "A"
    root.mkdir(parents=True)
    photo(1, (40, 30)).save(root / "x.jpg")
    os.symlink(tmp_path / "data", root / "loop")  # data/A/loop -> data
    images, _ = scan_dataset(tmp_path / "data")
    assert [i.path.name for i in images] == ["x.jpg"]
    s = run_script("dataset_stats", ["--dd", str(tmp_path / "data"), "--od", str(tmp_path / "st"), "-j", "1",
                                     "--no-progress"])
    assert s["overall"]["images"] == 1


def test_scan_dataset_layouts(tmp_path):
    for rel in ("train/A/1.png", "train/A/sub/2.png", "test/B/3.png"):
        (tmp_path / "d" / rel).parent.mkdir(parents=True, exist_ok=True)
        photo(0, (20, 20)).save(tmp_path / "d" / rel)
    items, _ = scan_dataset(tmp_path / "d")
    assert [(i.split, i.label) for i in items] == [("test", "B"), ("train", "A"), ("train", "A")]
    items, _ = scan_dataset(tmp_path / "d" / "train")
    assert [(i.split, i.label, i.rel.as_posix()) for i in items] == [("", "A", "A/1.png"), ("", "A", "A/sub/2.png")]


def test_read_image_info_matches_open_image(tmp_path):
    im = photo(2, (30, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees
    im.save(tmp_path / "r.jpg", exif=exif.tobytes())
    info = read_image_info(tmp_path / "r.jpg")
    assert (info.width, info.height) == open_image(tmp_path / "r.jpg").size == (20, 30)
    assert info.format == "JPEG" and info.orientation == 6 and info.frames == 1


# --------------------------------------------------------------------------------------------------------------
# validate_images


@pytest.fixture
def messy(tmp_path) -> Path:
    d = tmp_path / "messy" / "A"
    d.mkdir(parents=True)
    rgb = photo(3, (60, 40))
    rgb.save(d / "good.jpg", quality=90)
    rgb.save(d / "png_named.jpg", "PNG")
    rgb.convert("CMYK").save(d / "cmyk.jpg")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(d / "alpha.png")
    rgb.save(d / "good.png")  # its fixed name good.jpg is taken by the real good.jpg
    frames = [photo(s, (60, 40)).convert("P") for s in (1, 2)]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:])
    rgb.resize((12, 8)).save(d / "tiny.jpg")
    full = (d / "good.jpg").read_bytes()
    (d / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (d / "page.jpg").write_text("<html>404</html>")
    return tmp_path / "messy"


def test_validate_lists_every_problem(messy, tmp_path):
    out = tmp_path / "val"
    s = run_script("validate_images", ["--dd", str(messy), "--od", str(out), "-j", "1", "--no-progress"])
    rows = {Path(r["path"]).name: r for r in _rows(out / "validation.csv")}
    assert rows["good.jpg"]["status"] == "ok"
    assert rows["truncated.jpg"]["status"] == "unreadable" and "truncated" in rows["truncated.jpg"]["issues"]
    assert rows["page.jpg"]["status"] == "not_image"
    assert "extension .jpg holds a PNG" in rows["png_named.jpg"]["issues"]
    assert "mode CMYK" in rows["cmyk.jpg"]["issues"] and "mode RGBA" in rows["alpha.png"]["issues"]
    assert "animated" in rows["anim.gif"]["issues"] and "tiny" in rows["tiny.jpg"]["issues"]
    assert (s["files"], s["ok"], s["unreadable"], s["not_image"]) == (9, 1, 1, 1)
    assert not (out / "fixed").exists()


def test_validate_fix_writes_a_clean_jpeg_copy(messy, tmp_path):
    before = tree_snapshot(messy)
    out = tmp_path / "val"
    s = run_script("validate_images", ["--dd", str(messy), "--od", str(out), "--fix", "-j", "2", "--no-progress"])
    assert tree_snapshot(messy) == before
    fixed = sorted(p.relative_to(out / "fixed").as_posix() for p in (out / "fixed").rglob("*") if p.is_file())
    assert fixed == ["A/alpha.jpg", "A/anim.jpg", "A/cmyk.jpg", "A/good.jpg", "A/good__png.jpg", "A/png_named.jpg",
                     "A/tiny.jpg"]
    for name in fixed:
        with Image.open(out / "fixed" / name) as im:
            assert im.format == "JPEG" and im.mode in ("RGB", "L")
    assert (out / "fixed" / "A" / "good.jpg").read_bytes() == (messy / "A" / "good.jpg").read_bytes()
    assert s["fixed"] == {"converted": 5, "copied": 2}
    # transparency became white-ish, not black
    assert np.asarray(Image.open(out / "fixed" / "A" / "alpha.jpg")).mean() > \
        np.asarray(Image.open(messy / "A" / "good.jpg")).mean()


def test_validate_strict_and_empty_folder(messy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run_script("validate_images", ["--dd", str(messy), "--od", str(tmp_path / "v"), "--strict", "-j", "1"])
    assert "(--strict)" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        run_script("validate_images", ["--dd", str(tmp_path / "empty"), "--od", str(tmp_path / "v2")])
    assert "no files" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------------
# dataset_stats


def test_dataset_stats(tmp_path):
    d = tmp_path / "ds"
    sizes = {"train/A": [(300, 200), (100, 100), (64, 48)], "train/B": [(400, 300)], "test/A": [(120, 90)]}
    for folder, dims in sizes.items():
        (d / folder).mkdir(parents=True)
        for k, wh in enumerate(dims):
            photo(k, wh).save(d / folder / f"{k}.{'png' if k == 1 else 'jpg'}")
    out = tmp_path / "st"
    s = run_script("dataset_stats", ["--dd", str(d), "--od", str(out), "-j", "1", "--no-progress"])
    assert s["overall"]["images"] == 5 and s["splits"]["train"]["images"] == 4
    assert s["overall"]["small"] == 3  # 100x100, 64x48, 120x90 are under 128x256
    rows = {(r["split"], r["class"]): r for r in _rows(out / "stats_per_class.csv")}
    a = rows["train", "A"]
    assert a["images"] == "3" and float(a["width_median"]) == 100 and float(a["area_max"]) == 60000
    assert a["formats"] == "JPEG:2 PNG:1" and rows["train", "*"]["images"] == "4"
    assert s["class_balance"]["train"] == {"min_per_class": 1, "max_per_class": 3, "max_over_min": 3.0}
    for png in ("size_histogram.png", "class_balance.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(_rows(out / "image_sizes.csv")) == 5


def test_dataset_stats_real_cars(tmp_path):
    s = run_script("dataset_stats", ["--dd", str(shared("cars")), "--od", str(tmp_path / "st"), "-j", "2",
                                     "--no-progress"])
    assert s["overall"]["images"] == 200 and s["overall"]["width"]["min"] == 78
    assert 0 < s["overall"]["small"] < 200


# --------------------------------------------------------------------------------------------------------------
# merge_data


@pytest.fixture
def merge_case(tmp_path):
    train, test, new = tmp_path / "train", tmp_path / "test", tmp_path / "new"
    for cls, seeds in (("A", (0, 1, 2)), ("B", (3, 4))):
        (train / cls).mkdir(parents=True)
        for s in seeds:
            photo(s).save(train / cls / f"{s}.png")
    (test / "A").mkdir(parents=True)
    photo(5).save(test / "A" / "5.png")
    (new / "A").mkdir(parents=True)
    (new / "B").mkdir(parents=True)
    shutil.copy(train / "A" / "0.png", new / "A" / "exact_copy.png")
    photo(1).resize((80, 60)).save(new / "A" / "small_copy.jpg", quality=70)  # near copy of train/A/1.png
    photo(5).save(new / "A" / "test_copy.jpg", quality=85)  # copy of a test image: would leak
    photo(10).save(new / "A" / "0.png")  # new, and its name is taken in train/A
    photo(11).save(new / "B" / "fresh.png")
    photo(11).resize((80, 60)).save(new / "B" / "fresh_small.jpg")  # duplicate among the new ones
    (new / "B" / "junk.jpg").write_text("not an image")
    return train, test, new


def test_merge_into_a_new_folder(merge_case, tmp_path):
    train, test, new = merge_case
    before = tree_snapshot(train)
    out = tmp_path / "merged"
    s = run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--also-check", str(test),
                                  "--od", str(out), "-j", "1", "--no-progress"])
    assert tree_snapshot(train) == before
    added = {Path(r["source"]).name: r for r in _rows(out / "merge_added.csv")}
    assert sorted(added) == ["0.png", "fresh.png"]
    assert Path(added["0.png"]["dest"]).name == "0__new.png"  # never replaces train/A/0.png
    rejected = {Path(r["source"]).name: r for r in _rows(out / "merge_rejected.csv")}
    assert set(rejected) == {"exact_copy.png", "small_copy.jpg", "test_copy.jpg", "fresh_small.jpg", "junk.jpg"}
    assert rejected["exact_copy.png"]["kind"] == "exact" and rejected["small_copy.jpg"]["kind"] == "near"
    assert Path(rejected["test_copy.jpg"]["duplicate_of"]).name == "5.png"
    assert "another new image" in rejected["fresh_small.jpg"]["reason"]
    merged = sorted(p.relative_to(out / "train").as_posix() for p in (out / "train").rglob("*")
                    if p.is_file() and not p.name.startswith("."))
    assert (out / "train" / ".ws_dan_added.json").is_file()  # the undo's marker (hidden: no scan sees it)
    assert merged == ["A/0.png", "A/0__new.png", "A/1.png", "A/2.png", "B/3.png", "B/4.png", "B/fresh.png"]
    assert s["added"] == 2 and s["rejected"] == 5


def test_merge_in_place_and_undo(merge_case, tmp_path):
    train, test, new = merge_case
    before = tree_snapshot(train)
    out = tmp_path / "log"
    s = run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(out), "--in-place",
                                  "-j", "1", "--no-progress"])
    assert s["added"] == 3  # test_copy.jpg is new to train when the test split is not checked
    assert (train / "A" / "0__new.png").is_file() and (train / "A" / "0.png").read_bytes() == before["A/0.png"][0]
    counts = run_script("merge_data", ["--undo", str(out / "merge_added.csv"), "--no-progress"])
    assert counts["removed"] == 3
    assert tree_snapshot(train) == before
    with pytest.raises(SystemExit):  # the undo list of the earlier merge must not be overwritten
        run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(out), "--in-place",
                                  "--overwrite", "-j", "1", "--no-progress"])


def test_merge_refuses_unknown_classes(merge_case, tmp_path, capsys):
    train, test, new = merge_case
    (new / "Zeta").mkdir()
    photo(20).save(new / "Zeta" / "z.png")
    with pytest.raises(SystemExit):
        run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(tmp_path / "m"),
                                  "--no-progress"])
    err = capsys.readouterr().err
    assert "Zeta" in err and "--allow-new-classes" in err and not (tmp_path / "m").exists()
    s = run_script("merge_data", ["--new-dir", str(new), "--train-dir", str(train), "--od", str(tmp_path / "m"),
                                  "--allow-new-classes", "-j", "1", "--no-progress"])
    assert s["new_classes"] == ["Zeta"] and (tmp_path / "m" / "train" / "Zeta" / "z.png").is_file()


# --------------------------------------------------------------------------------------------------------------
# downsample


def test_downsample(tmp_path):
    d = tmp_path / "d" / "A"
    d.mkdir(parents=True)
    photo(1, (400, 256)).save(d / "big.jpg", quality=95)
    photo(2, (300, 200)).save(d / "big.png")
    photo(3, (100, 60)).save(d / "small.jpg")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 10)
    out = tmp_path / "lr"
    s = run_script("downsample", ["--dd", str(tmp_path / "d"), "--od", str(out), "--size", "128", "-j", "2",
                                  "--no-progress"])
    assert (s["resized"], s["copied"], s["skipped"]) == (2, 1, 1)
    with Image.open(out / "A" / "big.jpg") as im:
        assert im.size == (200, 128) and im.format == "JPEG"
    with Image.open(out / "A" / "big.png") as im:
        assert im.size == (192, 128) and im.format == "PNG"
    assert (out / "A" / "small.jpg").read_bytes() == (d / "small.jpg").read_bytes()
    # area interpolation: a 2x2 checkerboard block pattern averages to its mean grey
    board = np.kron((np.indices((64, 64)).sum(0) % 2) * 255, np.ones((1, 1))).astype(np.uint8)
    Image.fromarray(board).save(tmp_path / "board.png")
    from data_tools.downsample import downsample_file

    downsample_file(tmp_path / "board.png", tmp_path / "board_small.png", size=32)
    small = np.asarray(Image.open(tmp_path / "board_small.png").convert("L")).astype(int)
    assert small.shape == (32, 32) and np.abs(small - 127.5).max() <= 1


def test_downsample_ctrl_c_then_rerun(tmp_path, monkeypatch):
    d = tmp_path / "d" / "A"
    d.mkdir(parents=True)
    for k in range(6):
        photo(k, (300, 200)).save(d / f"{k}.jpg")
    out = tmp_path / "lr"
    from data_tools import downsample as ds

    real = ds.save_image
    calls = []

    def save_then_interrupt(image, dst, *a, **kw):
        calls.append(dst)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(image, dst, *a, **kw)

    monkeypatch.setattr(ds, "save_image", save_then_interrupt)
    with pytest.raises(SystemExit) as info:
        run_script("downsample", ["--dd", str(tmp_path / "d"), "--od", str(out), "-j", "1", "--no-progress"])
    assert info.value.code == 130
    monkeypatch.setattr(ds, "save_image", real)
    assert sorted(p.name for p in (out / "A").iterdir()) == ["0.jpg", "1.jpg"]
    s = run_script("downsample", ["--dd", str(tmp_path / "d"), "--od", str(out), "-j", "1", "--no-progress"])
    assert s["already_there"] == 2 and s["resized"] == 4
    assert all(Image.open(out / "A" / f"{k}.jpg").size == (192, 128) for k in range(6))


def test_downsample_real_photos(tmp_path):
    s = run_script("downsample", ["--dd", str(shared("grab")), "--od", str(tmp_path / "lr"), "-j", "1",
                                  "--no-progress"])
    assert s["images"] == 5 and s["resized"] == 5
    assert all(min(Image.open(p).size) == 128 for p in (tmp_path / "lr").glob("*.jpg"))


# --------------------------------------------------------------------------------------------------------------
# every script


@pytest.mark.parametrize("name", SCRIPTS)
def test_help(name):
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "usage:" in res.stdout and "(default:" in res.stdout
    assert "--output-dir" in res.stdout or "--od" in res.stdout


@pytest.mark.parametrize("name,argv", [
    ("validate_images", ["--dd", "{data}", "--od", "{data}/report"]),
    ("dataset_stats", ["--dd", "{data}", "--od", "{data}/A/report"]),
    ("downsample", ["--dd", "{data}", "--od", "{data}/lr"]),
    ("merge_data", ["--new-dir", "{tmp}/new", "--train-dir", "{data}", "--od", "{data}/merged"]),
    ("merge_data", ["--new-dir", "{data}", "--train-dir", "{data}", "--od", "{tmp}/m"]),
])
def test_scripts_refuse_output_inside_input(tmp_path, capsys, name, argv):
    data = tmp_path / "data"
    (data / "A").mkdir(parents=True)
    photo(0, (40, 30)).save(data / "A" / "x.jpg")
    (tmp_path / "new" / "A").mkdir(parents=True)
    photo(1, (40, 30)).save(tmp_path / "new" / "A" / "y.jpg")
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as info:
        run_script(name, argv + ["--no-progress"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert sorted(p.name for p in data.rglob("*")) == ["A", "x.jpg"]


def test_missing_input_folder_gets_one_line(tmp_path, capsys):
    for name in ("validate_images", "dataset_stats", "downsample"):
        with pytest.raises(SystemExit):
            run_script(name, ["--dd", str(tmp_path / "nope"), "--od", str(tmp_path / "o"), "--no-progress"])
        err = capsys.readouterr().err
        assert "nope" in err and "does not exist" in err and err.count("\n") == 1
