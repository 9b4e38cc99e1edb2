"""prepare_dataset: the four benchmarks from fake copies of their official files (layouts, counts, links vs copies,
the aircraft banner, box crops, unsafe class names, an untouched source, one-line errors)."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script, script, shared
from PIL import Image
from scipy.io import savemat
from test_dedupe import tree_snapshot

from data_tools import prepare
from ws_dan.common.io import InputError
from ws_dan.common.outputs import MARKER_NAME

CAR_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
BOX_COLOUR = (250, 20, 20)
BANNER_COLOUR = (10, 240, 10)


def picture(path: Path, size=(40, 30), box=None, colour=(30, 60, 200), banner: int = 0) -> None:
    """A JPEG of one colour, ``box`` (PIL box) painted BOX_COLOUR, the bottom ``banner`` rows BANNER_COLOUR."""
    arr = np.empty((size[1], size[0], 3), np.uint8)
    arr[:] = colour
    if box is not None:
        left, top, right, bottom = box
        arr[top:bottom, left:right] = BOX_COLOUR
    if banner:
        arr[-banner:] = BANNER_COLOUR
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, quality=95, subsampling=0)


def save_struct(path: Path, name: str, fields, rows) -> None:
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for k, row in enumerate(rows):
        arr[0, k] = tuple(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), {name: arr})


def mean_colour(im: Image.Image) -> tuple:
    return tuple(np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3).mean(0).round())


def close(a, b, tol: float = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def one_error_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()  # what earlier calls printed
    with pytest.raises(SystemExit) as e:
        run_script("prepare_dataset", argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


def rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------------
# Fake copies of the official layouts

CAR_CLASSES = ["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012", "Acura TL Sedan 2012"]
# 1-based inclusive MATLAB boxes: x 5..24, y 4..20 -> PIL box (4, 3, 24, 20), 20 x 17 pixels
CAR_BOX = (5, 4, 24, 20)


def make_cars(root: Path, torchvision: bool = True) -> Path:
    """torchvision's StanfordCars layout (root/stanford_cars/...): 3 classes, 5 train and 4 test images."""
    base = root / "stanford_cars" if torchvision else root
    train = [(1, "00001.jpg"), (1, "00002.jpg"), (2, "00003.jpg"), (3, "00004.jpg"), (3, "00005.jpg")]
    test = [(1, "00001.jpg"), (2, "00002.jpg"), (2, "00003.jpg"), (3, "00004.jpg")]
    for folder, items in (("cars_train", train), ("cars_test", test)):
        for cls, name in items:
            picture(base / folder / name, box=(4, 3, 24, 20), colour=(30 + 40 * cls, 60, 200))
    save_struct(base / "devkit" / "cars_train_annos.mat", "annotations", CAR_FIELDS,
                [(*CAR_BOX, c, n) for c, n in train])
    save_struct(base / "cars_test_annos_withlabels.mat", "annotations", CAR_FIELDS,
                [(*CAR_BOX, c, n) for c, n in test])
    save_struct(base / "devkit" / "cars_test_annos.mat", "annotations", [f for f in CAR_FIELDS if f != "class"],
                [(*CAR_BOX, n) for _, n in test])
    savemat(str(base / "devkit" / "cars_meta.mat"), {"class_names": np.array([CAR_CLASSES], dtype=object)})
    return root


@pytest.fixture
def cars(tmp_path) -> Path:
    return make_cars(tmp_path / "raw_cars")


def make_cub(root: Path) -> Path:
    """CUB_200_2011/: 2 classes (one with a '/' in its name), 3 train and 2 test images, boxes as x y w h."""
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan/Albatross"]
    folders = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images = [(1, 1, 1), (2, 1, 0), (3, 2, 1), (4, 2, 1), (5, 2, 0)]  # id, class, is_training_image
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": [], "bounding_boxes.txt": []}
    for image_id, cls, is_train in images:
        rel = f"{folders[cls - 1]}/Bird_{image_id:04d}.jpg"
        picture(base / "images" / rel, size=(50, 40), box=(10, 5, 30, 25))
        lines["images.txt"].append(f"{image_id} {rel}")
        lines["image_class_labels.txt"].append(f"{image_id} {cls}")
        lines["train_test_split.txt"].append(f"{image_id} {is_train}")
        lines["bounding_boxes.txt"].append(f"{image_id} 10.0 5.0 20.0 20.0")
    lines["classes.txt"] = [f"{k} {c}" for k, c in enumerate(classes, 1)]
    for name, text in lines.items():
        (base / name).write_text("\n".join(text) + "\n")
    return root


def make_aircraft(root: Path) -> Path:
    """fgvc-aircraft-2013b/data/: 2 variants (one is F/A-18), 2 train + 1 val + 2 test images with a banner."""
    data = root / "fgvc-aircraft-2013b" / "data"
    lists = {"train": [("0000001", "707-320"), ("0000002", "F/A-18")], "val": [("0000003", "707-320")],
             "test": [("0000004", "707-320"), ("0000005", "F/A-18")]}
    for split, items in lists.items():
        for image_id, _ in items:
            picture(data / "images" / f"{image_id}.jpg", size=(48, 60), box=(8, 10, 40, 36), banner=20)
        (data / f"images_variant_{split}.txt").write_text("".join(f"{i} {v}\n" for i, v in items))
    (data / "variants.txt").write_text("707-320\nF/A-18\n")
    # 1-based inclusive: x 9..40, y 11..50 reaches into the banner (rows 40..59), which is cut off anyway
    (data / "images_box.txt").write_text("".join(f"000000{k} 9 11 40 50\n" for k in range(1, 6)))
    return root


DOG_FOLDERS = ["n02085620-Chihuahua", "n02086240-Shih-Tzu"]


def voc(path: Path, box: tuple) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<annotation><size><width>64</width><height>48</height></size><object><name>dog</name>"
                    "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"
                    "</annotation>".format(*box))


def make_dogs(root: Path) -> Path:
    """Images/, Annotation/, lists/{train,test}_list.mat: 2 breeds, 3 train and 2 test images."""
    split_items = {"train": [(1, "n02085620_1"), (1, "n02085620_2"), (2, "n02086240_1")],
                   "test": [(1, "n02085620_3"), (2, "n02086240_2")]}
    for split, items in split_items.items():
        files, anns = [], []
        for label, stem in items:
            rel = f"{DOG_FOLDERS[label - 1]}/{stem}"
            picture(root / "Images" / f"{rel}.jpg", size=(64, 48), box=(4, 6, 36, 30))
            voc(root / "Annotation" / rel, (5, 7, 36, 30))  # 1-based inclusive -> PIL (4, 6, 36, 30)
            files.append(f"{rel}.jpg")
            anns.append(rel)
        (root / "lists").mkdir(parents=True, exist_ok=True)
        savemat(str(root / "lists" / f"{split}_list.mat"),
                {"file_list": np.array([[f] for f in files], dtype=object),
                 "annotation_list": np.array([[a] for a in anns], dtype=object),
                 "labels": np.array([[label] for label, _ in items], dtype=np.uint8)})
    return root


def prep(name: str, source: Path, out: Path, *extra: str) -> dict:
    return run_script("prepare_dataset", [name, "--source", str(source), "--output-dir", str(out), "-j", "0",
                                          "--no-progress", *extra])


# ---------------------------------------------------------------------------------------------------------------
# Stanford Cars


def test_cars_torchvision_layout_hard_links_into_class_folders(cars, tmp_path, capsys):
    before = tree_snapshot(cars)
    out = tmp_path / "cars"
    s = prep("stanford-cars", cars, out)
    assert tree_snapshot(cars) == before  # the source is only read (hard links do not change bytes or mtimes)
    base = cars / "stanford_cars"
    assert files_under(out / "train") == [
        "AM General Hummer SUV 2000/00001.jpg", "AM General Hummer SUV 2000/00002.jpg",
        "Acura TL Sedan 2012/00004.jpg", "Acura TL Sedan 2012/00005.jpg", "Ram C_V Cargo Van Minivan 2012/00003.jpg"]
    assert files_under(out / "test") == [
        "AM General Hummer SUV 2000/00001.jpg", "Acura TL Sedan 2012/00004.jpg",
        "Ram C_V Cargo Van Minivan 2012/00002.jpg", "Ram C_V Cargo Van Minivan 2012/00003.jpg"]
    # hard links: the same inode as the source file, train/ and test/ files of the same name kept apart
    assert os.stat(out / "train/AM General Hummer SUV 2000/00001.jpg").st_ino == \
        os.stat(base / "cars_train/00001.jpg").st_ino
    assert os.stat(out / "test/AM General Hummer SUV 2000/00001.jpg").st_ino == \
        os.stat(base / "cars_test/00001.jpg").st_ino
    assert s["splits"] == {"train": 5, "test": 4} and s["classes"] == 3 and s["linked"] == 9 and s["copied"] == 0
    assert s["mismatches"] == ["train has 5 images (official: 8,144)", "test has 4 images (official: 8,041)",
                               "3 classes (official: 196)"]
    # a small copy is prepared, with a warning (the script logs to stderr)
    assert f"{cars}: train has 5 images (official: 8,144); test has" in capsys.readouterr().err
    assert rows(out / "classes.csv") == [
        {"id": "1", "class": CAR_CLASSES[0], "folder": CAR_CLASSES[0]},
        {"id": "2", "class": CAR_CLASSES[1], "folder": "Ram C_V Cargo Van Minivan 2012"},
        {"id": "3", "class": CAR_CLASSES[2], "folder": CAR_CLASSES[2]}]
    manifest = rows(out / "prepare_manifest.csv")
    assert len(manifest) == 9 and {r["how"] for r in manifest} == {"linked"}
    assert {r["class"] for r in manifest} == set(CAR_CLASSES)
    assert json.loads((out / "prepare_report.json").read_text())["splits"] == {"train": 5, "test": 4}
    assert not (out / MARKER_NAME).exists()
    # the output is what the training loader reads
    from ws_dan.data.datasets import class_folder_samples

    assert len(class_folder_samples(out / "train").samples) == 5


def test_cars_copy_makes_independent_files(cars, tmp_path):
    out = tmp_path / "cars"
    s = prep("cars", cars, out, "--copy")
    src = cars / "stanford_cars" / "cars_train" / "00003.jpg"
    dst = out / "train" / "Ram C_V Cargo Van Minivan 2012" / "00003.jpg"
    assert s["copied"] == 9 and s["linked"] == 0
    assert dst.read_bytes() == src.read_bytes() and os.stat(dst).st_ino != os.stat(src).st_ino


def test_cars_crop_bbox_uses_the_one_based_inclusive_box(cars, tmp_path):
    out = tmp_path / "cars"
    s = prep("stanford-cars", cars, out, "--crop-bbox")
    assert s["cropped"] == 9 and s["linked"] == 0
    for p in (out / "train").rglob("*.jpg"):
        with Image.open(p) as im:
            assert im.size == (20, 17)  # x 5..24, y 4..20 inclusive
            assert close(mean_colour(im), BOX_COLOUR)  # exactly the painted box, none of the background
    manifest = rows(out / "prepare_manifest.csv")
    assert {r["box"] for r in manifest} == {"4 3 24 20"} and {r["how"] for r in manifest} == {"cropped"}


def test_cars_flat_devkit_layout_and_kaggle_nesting(tmp_path):
    raw = make_cars(tmp_path / "raw", torchvision=False)
    # Kaggle's copy: cars_train/cars_train/*.jpg
    inner = raw / "cars_train" / "cars_train"
    inner.mkdir()
    for p in (raw / "cars_train").glob("*.jpg"):
        os.rename(p, inner / p.name)
    s = prep("stanford-cars", raw, tmp_path / "out")
    assert s["splits"] == {"train": 5, "test": 4}
    assert s["files_read"]["test annotations"] == str(raw / "cars_test_annos_withlabels.mat")


def test_a_symlinked_source_image_is_written_as_its_real_file(cars, tmp_path):
    base = cars / "stanford_cars" / "cars_train"
    elsewhere = tmp_path / "elsewhere.jpg"
    os.rename(base / "00002.jpg", elsewhere)
    os.symlink(elsewhere, base / "00002.jpg")
    (base / "00005.jpg").unlink()
    os.symlink(tmp_path / "gone.jpg", base / "00005.jpg")
    out = tmp_path / "cars"
    s = prep("stanford-cars", cars, out)
    dst = out / "train" / "AM General Hummer SUV 2000" / "00002.jpg"
    assert not dst.is_symlink() and dst.is_file() and os.stat(dst).st_ino == os.stat(elsewhere).st_ino
    assert s["skipped"] == 1 and s["splits"]["train"] == 4  # the dangling link is reported, not copied
    assert rows(out / "skipped.csv") == [
        {"path": str(base / "00005.jpg"),
         "reason": f"listed in the annotations but a broken symlink (to {tmp_path / 'gone.jpg'})"}]
    # with --copy the output is a regular file with the target's bytes
    out2 = tmp_path / "cars_copy"
    prep("stanford-cars", cars, out2, "--copy")
    dst2 = out2 / "train" / "AM General Hummer SUV 2000" / "00002.jpg"
    assert not dst2.is_symlink() and dst2.read_bytes() == elsewhere.read_bytes()


def test_strict_refuses_a_count_mismatch_before_writing(cars, tmp_path, capsys):
    out = tmp_path / "cars"
    err = one_error_line(capsys, ["stanford-cars", "--source", str(cars), "--output-dir", str(out), "--strict",
                                  "--no-progress"])
    assert err == (f"error: {cars}: train has 5 images (official: 8,144); test has 4 images (official: 8,041); "
                   f"3 classes (official: 196); is it a complete copy of Stanford Cars? (--strict)")
    assert not out.exists()


def test_a_missing_listed_image_is_skipped_or_fatal_with_strict(cars, tmp_path, capsys):
    missing = cars / "stanford_cars" / "cars_test" / "00003.jpg"
    missing.unlink()
    s = prep("stanford-cars", cars, tmp_path / "out")
    assert s["skipped"] == 1 and s["splits"]["test"] == 3
    err = one_error_line(capsys, ["stanford-cars", "-s", str(cars), "--od", str(tmp_path / "out2"), "--strict"])
    assert err == f"error: {missing}: listed in the annotations but missing (--strict)"
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("damage,expected", [
    ("devkit/cars_meta.mat", "devkit/cars_meta.mat: expected the devkit's class names (cars_meta.mat)"),
    ("cars_test_annos_withlabels.mat",
     "cars_test_annos_withlabels.mat: expected the labelled test annotations (cars_test_annos_withlabels.mat; "
     "the devkit's cars_test_annos.mat has no labels)"),
    ("cars_test", "cars_test: expected the folder of test images (cars_test/), found nothing"),
])
def test_cars_missing_official_files_name_the_path(cars, tmp_path, capsys, damage, expected):
    import shutil

    target = cars / "stanford_cars" / damage
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    err = one_error_line(capsys, ["stanford-cars", "--source", str(cars), "--output-dir", str(tmp_path / "o")])
    assert f"error: {cars / 'stanford_cars'}/{expected}" in err
    assert not (tmp_path / "o").exists()


def test_cars_bad_annotation_files(cars, tmp_path, capsys):
    base = cars / "stanford_cars"
    argv = ["stanford-cars", "--source", str(cars), "--output-dir", str(tmp_path / "o")]
    # the unlabelled test file where the labelled one belongs
    os.replace(base / "devkit" / "cars_test_annos.mat", base / "cars_test_annos_withlabels.mat")
    err = one_error_line(capsys, argv)
    assert err.startswith(f"error: {base / 'cars_test_annos_withlabels.mat'}: the struct has no field 'class'")
    # a file that is not a .mat at all
    (base / "cars_test_annos_withlabels.mat").write_text("not matlab")
    err = one_error_line(capsys, argv)
    assert err.startswith(f"error: {base / 'cars_test_annos_withlabels.mat'}: cannot read it as a MATLAB .mat file")
    # a class id beyond the class list, and a file name that climbs out of the image folder
    save_struct(base / "cars_test_annos_withlabels.mat", "annotations", CAR_FIELDS, [(*CAR_BOX, 7, "00001.jpg")])
    err = one_error_line(capsys, argv)
    assert err == f"error: {base / 'cars_test_annos_withlabels.mat'} (annotation 1): class id 7 is outside 1..3 " \
                  f"(the number of classes)"
    save_struct(base / "cars_test_annos_withlabels.mat", "annotations", CAR_FIELDS,
                [(*CAR_BOX, 1, "../../../etc/passwd")])
    err = one_error_line(capsys, argv)
    assert "image path '../../../etc/passwd' is not a relative path inside" in err
    assert not (tmp_path / "o").exists()


def test_output_folder_rules(cars, tmp_path, capsys):
    # inside the source: refused (it would read its own output next time)
    err = one_error_line(capsys, ["stanford-cars", "--source", str(cars), "--output-dir", str(cars / "prepared")])
    assert "the output folder is inside the input folder" in err and not (cars / "prepared").exists()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    err = one_error_line(capsys, ["stanford-cars", "--source", str(cars), "--output-dir", str(out)])
    assert err == f"error: {out}: the output folder exists and is not empty; choose a new folder or pass " \
                  f"--overwrite to write into it"
    (out / "train" / "Old class").mkdir(parents=True)
    (out / "train" / "Old class" / "x.jpg").write_bytes(b"old")
    s = prep("stanford-cars", cars, out, "--overwrite")
    assert s["images"] == 9 and not (out / "train" / "Old class").exists() and (out / "keep.txt").exists()


def test_an_interrupted_run_is_finished_by_the_same_command(cars, tmp_path, monkeypatch):
    out = tmp_path / "cars"
    real = prepare._write_one
    calls = []

    def dies_on_the_fourth(job, *a, **k):
        calls.append(job)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(job, *a, **k)

    monkeypatch.setattr(prepare, "_write_one", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        prepare.prepare_dataset("stanford-cars", cars, out, workers=0)
    assert (out / MARKER_NAME).exists() and len(files_under(out / "train")) == 3
    monkeypatch.setattr(prepare, "_write_one", real)
    s = prepare.prepare_dataset("stanford-cars", cars, out, workers=0)  # no --overwrite needed
    assert s.summary["already_there"] == 3 and s.summary["linked"] == 6 and not (out / MARKER_NAME).exists()
    # different settings do not pass for a resume
    (out / MARKER_NAME).write_text(json.dumps({"tool": "prepare_dataset", "settings": {}}))
    with pytest.raises(InputError, match="interrupted run with different settings"):
        prepare.prepare_dataset("stanford-cars", cars, out, copy=True, workers=0)


# ---------------------------------------------------------------------------------------------------------------
# CUB-200-2011


def test_cub_official_split_class_names_and_boxes(tmp_path):
    raw = make_cub(tmp_path / "raw")
    before = tree_snapshot(raw)
    out = tmp_path / "cub"
    s = prep("cub-200-2011", raw, out)
    assert files_under(out) == [
        "classes.csv", "prepare_manifest.csv", "prepare_report.json", "skipped.csv",
        "test/001.Black_footed_Albatross/Bird_0002.jpg", "test/002.Laysan_Albatross/Bird_0005.jpg",
        "train/001.Black_footed_Albatross/Bird_0001.jpg", "train/002.Laysan_Albatross/Bird_0003.jpg",
        "train/002.Laysan_Albatross/Bird_0004.jpg"]
    assert s["splits"] == {"train": 3, "test": 2} and s["classes"] == 2
    assert rows(out / "classes.csv")[1] == {"id": "2", "class": "002.Laysan/Albatross",
                                            "folder": "002.Laysan_Albatross"}
    # --crop-bbox: x y w h = 10 5 20 20 -> 20 x 20 pixels of the painted box
    s = prep("cub", raw, tmp_path / "cub_crop", "--crop-bbox", "-j", "2")
    assert s["cropped"] == 5
    with Image.open(tmp_path / "cub_crop/train/001.Black_footed_Albatross/Bird_0001.jpg") as im:
        assert im.size == (20, 20) and close(mean_colour(im), BOX_COLOUR)
    assert tree_snapshot(raw) == before


def test_cub_bad_lists_name_the_line(tmp_path, capsys):
    raw = make_cub(tmp_path / "raw")
    base = raw / "CUB_200_2011"
    argv = ["cub-200-2011", "--source", str(raw), "--output-dir", str(tmp_path / "o")]
    (base / "train_test_split.txt").write_text("1 1\n2 0\n3 yes\n4 1\n5 0\n")
    assert one_error_line(capsys, argv) == f"error: {base / 'train_test_split.txt'}:3: expected 1 (train) or 0 " \
                                           f"(test), found 'yes'"
    (base / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n4 1\n")
    assert one_error_line(capsys, argv) == (
        f"error: {base / 'train_test_split.txt'}: has no line for image 5 ({base / 'images.txt'}:5); expected one "
        f"'<image_id> <1 for train, 0 for test>' line per image")
    (base / "image_class_labels.txt").unlink()
    assert one_error_line(capsys, argv) == (
        f"error: {base / 'image_class_labels.txt'}: expected CUB's list of '<image_id> <class_id>' lines "
        f"(image_class_labels.txt), found nothing")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------------------------
# FGVC-Aircraft


def test_aircraft_banner_is_removed_and_val_kept_or_merged(tmp_path):
    raw = make_aircraft(tmp_path / "raw")
    before = tree_snapshot(raw)
    out = tmp_path / "air"
    s = prep("fgvc-aircraft", raw, out)
    assert s["splits"] == {"train": 2, "val": 1, "test": 2} and s["cropped"] == 5 and s["banner_removed"] == 20
    assert files_under(out / "val") == ["707-320/0000003.jpg"]
    assert files_under(out / "train") == ["707-320/0000001.jpg", "F_A-18/0000002.jpg"]
    src = raw / "fgvc-aircraft-2013b" / "data" / "images" / "0000001.jpg"
    dst = out / "train" / "707-320" / "0000001.jpg"
    with Image.open(src) as a, Image.open(dst) as b:
        assert b.size == (a.width, a.height - 20) == (48, 40)
        assert b.format == "JPEG" and os.stat(dst).st_ino != os.stat(src).st_ino  # a new file, not a link
        # the same pixels as the top 40 rows, and none of the green banner
        diff = np.abs(np.asarray(a.crop((0, 0, 48, 40)), np.int16) - np.asarray(b, np.int16))
        assert diff.mean() < 3
        assert not close(mean_colour(b.crop((0, 36, 48, 40))), BANNER_COLOUR, tol=60)
    # --trainval: train and val together, as papers report it
    s = prep("aircraft", raw, tmp_path / "air_tv", "--trainval")
    assert s["splits"] == {"train": 3, "test": 2} and not (tmp_path / "air_tv" / "val").exists()
    assert "train has 3 images (official: 6,667)" in s["mismatches"]
    assert tree_snapshot(raw) == before


def test_aircraft_crop_bbox_stops_above_the_banner(tmp_path):
    raw = make_aircraft(tmp_path / "raw")
    s = prep("fgvc-aircraft", raw, tmp_path / "air", "--crop-bbox")
    assert s["cropped"] == 5
    with Image.open(tmp_path / "air" / "test" / "F_A-18" / "0000005.jpg") as im:
        # x 9..40 -> 32 wide; y from row 10 down to the banner at row 40 (the box's 50 is clipped) -> 30 high
        assert im.size == (32, 30)
        assert close(mean_colour(im.crop((0, 0, 32, 26))), BOX_COLOUR)
        assert not close(mean_colour(im.crop((0, 26, 32, 30))), BANNER_COLOUR, tol=60)


def test_aircraft_unknown_variant_names_the_line(tmp_path, capsys):
    raw = make_aircraft(tmp_path / "raw")
    data = raw / "fgvc-aircraft-2013b" / "data"
    (data / "images_variant_test.txt").write_text("0000004 707-320\n0000005 Boeing 999\n")
    err = one_error_line(capsys, ["fgvc-aircraft", "--source", str(raw), "--output-dir", str(tmp_path / "o")])
    assert err == f"error: {data / 'images_variant_test.txt'}:2: variant 'Boeing 999' is not in {data / 'variants.txt'}"


# ---------------------------------------------------------------------------------------------------------------
# Stanford Dogs


def test_dogs_lists_class_folders_and_voc_boxes(tmp_path):
    raw = make_dogs(tmp_path / "raw")
    before = tree_snapshot(raw)
    out = tmp_path / "dogs"
    s = prep("stanford-dogs", raw, out)
    assert s["splits"] == {"train": 3, "test": 2} and s["classes"] == 2 and s["linked"] == 5
    assert files_under(out / "train") == ["n02085620-Chihuahua/n02085620_1.jpg", "n02085620-Chihuahua/n02085620_2.jpg",
                                          "n02086240-Shih-Tzu/n02086240_1.jpg"]
    assert [r["class"] for r in rows(out / "classes.csv")] == DOG_FOLDERS
    s = prep("dogs", raw, tmp_path / "dogs_crop", "--crop-bbox")
    with Image.open(tmp_path / "dogs_crop" / "test" / "n02086240-Shih-Tzu" / "n02086240_2.jpg") as im:
        assert im.size == (32, 24) and close(mean_colour(im), BOX_COLOUR)
    # a missing annotation file leaves that image out (and names it), or stops --strict
    (raw / "Annotation" / "n02085620-Chihuahua" / "n02085620_3").unlink()
    s = prep("dogs", raw, tmp_path / "dogs_crop2", "--crop-bbox")
    assert s["splits"]["test"] == 1
    assert rows(tmp_path / "dogs_crop2" / "skipped.csv")[0]["reason"] == \
        f"no annotation file {raw / 'Annotation' / 'n02085620-Chihuahua' / 'n02085620_3'}"
    assert tree_snapshot(raw) != before  # (only because this test deleted the annotation itself)


def test_dogs_missing_lists_name_the_path(tmp_path, capsys):
    raw = make_dogs(tmp_path / "raw")
    (raw / "lists" / "test_list.mat").unlink()
    err = one_error_line(capsys, ["stanford-dogs", "--source", str(raw), "--output-dir", str(tmp_path / "o")])
    assert err == (f"error: {raw / 'lists' / 'test_list.mat'}: expected the test list (test_list.mat from lists.tar) "
                   f"(also looked for test_list.mat), found nothing")


# ---------------------------------------------------------------------------------------------------------------
# The script


def test_unknown_dataset_and_missing_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        script("prepare_dataset").get_args_parser().parse_args(["imagenet", "--source", "x", "--output-dir", "y"])
    assert e.value.code == 2
    assert "'imagenet': unknown dataset; expected one of stanford-cars, cub-200-2011, fgvc-aircraft, stanford-dogs" \
        in capsys.readouterr().err
    err = one_error_line(capsys, ["cub", "--source", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "o")])
    assert err == f"error: {tmp_path / 'nope'}: expected the dataset's folder as it ships, found nothing (the path " \
                  f"does not exist)"


def test_help_shows_the_flags_and_defaults(capsys):
    with pytest.raises(SystemExit):
        script("prepare_dataset").get_args_parser().parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--source", "--output-dir", "--copy", "--trainval", "--crop-bbox", "--strict", "--overwrite",
                 "--workers", "--progress", "--verbose", "--quality"):
        assert flag in text
    assert "(default: 95)" in text


def test_benchmark_table_matches_the_published_counts():
    assert prepare.expected_counts("stanford-cars") == {"train": 8144, "test": 8041}
    assert prepare.expected_counts("CUB_200_2011") == {"train": 5994, "test": 5794}
    assert prepare.expected_counts("fgvc-aircraft", trainval=True) == {"train": 6667, "test": 3333}
    assert prepare.expected_counts("stanford-dogs") == {"train": 12000, "test": 8580}
    assert [b.classes for b in prepare.BENCHMARKS.values()] == [196, 200, 100, 120]
    assert prepare.count_mismatches("stanford-dogs", {"train": 12000, "test": 8580}, 120) == []


def test_class_folder_names_are_safe_and_distinct(caplog):
    with caplog.at_level(logging.WARNING, logger="data_tools.prepare"):
        names = prepare.class_folder_names(["../../etc", "F/A-18", "F_A-18", "f/a-18", ".hidden", "Acura TL"])
    assert "class 3 'F_A-18': folder name 'F_A-18' is taken by another class; using 'F_A-18__3'" in caplog.text
    assert names == ["____etc", "F_A-18", "F_A-18__3", "f_a-18__4", "hidden", "Acura TL"]
    assert all("/" not in n and not n.startswith(".") and ".." not in n for n in names)


def test_an_output_path_that_is_a_file_is_refused(cars, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("x")
    assert one_error_line(capsys, ["cars", "--source", str(cars), "--output-dir", str(out)]) == \
        f"error: {out}: expected an output folder, found a file"


def test_boxes_apply_to_the_stored_pixels_of_an_exif_rotated_photo(cars, tmp_path):
    # The annotators' MATLAB imread ignores EXIF orientation, so the box is in the stored pixel grid; the crop
    # written is upright (it carries no EXIF).
    path = cars / "stanford_cars" / "cars_train" / "00003.jpg"
    arr = np.empty((30, 40, 3), np.uint8)
    arr[:] = (30, 60, 200)
    arr[3:20, 4:24] = BOX_COLOUR
    arr[3:20, 4:8] = (255, 255, 255)  # a white stripe on the box's left edge shows which way is up
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    Image.fromarray(arr).save(path, quality=95, subsampling=0, exif=exif)
    prep("stanford-cars", cars, tmp_path / "out", "--crop-bbox")
    with Image.open(tmp_path / "out" / "train" / "Ram C_V Cargo Van Minivan 2012" / "00003.jpg") as im:
        assert im.size == (17, 20)  # the 20 x 17 box, turned upright
        assert close(mean_colour(im.crop((0, 5, 17, 20))), BOX_COLOUR)
        assert close(mean_colour(im.crop((0, 0, 17, 3))), (255, 255, 255), tol=20)  # the stripe is now on top


def test_real_car_photos_link_and_crop_to_their_boxes(tmp_path):
    """Real Stanford Cars JPEGs (../shared/data/cars_dev) in the devkit layout: links keep the bytes, crops keep
    the pixels of the box."""
    photos = sorted(shared("cars_dev", "train").glob("*/*.jpg"))[:3]
    raw = tmp_path / "raw"
    rows_ = []
    for k, p in enumerate(photos, 1):
        (raw / "cars_train").mkdir(parents=True, exist_ok=True)
        (raw / "cars_train" / f"{k:05d}.jpg").write_bytes(p.read_bytes())
        with Image.open(p) as im:
            w, h = im.size
        rows_.append((w // 4 + 1, h // 4 + 1, w // 4 * 3, h // 4 * 3, 1, f"{k:05d}.jpg"))  # the middle half
    save_struct(raw / "devkit" / "cars_train_annos.mat", "annotations", CAR_FIELDS, rows_)
    save_struct(raw / "cars_test_annos_withlabels.mat", "annotations", CAR_FIELDS, rows_[:1])
    (raw / "cars_test").mkdir()
    (raw / "cars_test" / "00001.jpg").write_bytes(photos[0].read_bytes())
    savemat(str(raw / "devkit" / "cars_meta.mat"), {"class_names": np.array([[photos[0].parent.name]], dtype=object)})
    s = prep("stanford-cars", raw, tmp_path / "linked")
    assert s["linked"] == 4
    assert (tmp_path / "linked" / "train" / photos[0].parent.name / "00002.jpg").read_bytes() == photos[1].read_bytes()
    prep("stanford-cars", raw, tmp_path / "cropped", "--crop-bbox")
    for k, p in enumerate(photos, 1):
        x1, y1, x2, y2 = rows_[k - 1][:4]
        with Image.open(p) as a, Image.open(tmp_path / "cropped" / "train" / p.parent.name / f"{k:05d}.jpg") as b:
            assert b.size == (x2 - x1 + 1, y2 - y1 + 1)
            expected = np.asarray(a.convert("RGB").crop((x1 - 1, y1 - 1, x2, y2)), np.int16)
            assert np.abs(expected - np.asarray(b, np.int16)).mean() < 3  # re-encoded at q95, 4:4:4
