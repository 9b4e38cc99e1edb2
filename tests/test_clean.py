"""The cleaner, end to end on generated data (the issue's evidence): a local server hands out wanted and unwanted
images, the downloader fetches them, a cleaner trained on a few sorted examples quarantines the unwanted ones
(precision and recall measured), merge_data adds the rest; plus the cleaner's safety rules and undo."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from test_download import ImageServer, encode

from data_tools.clean import (
    CLEANER_CLASSES,
    check_sorted_folder,
    image_contact_sheet,
    removal_metrics,
    unwanted_index,
)
from data_tools.merge import merge_data
from data_tools.synthetic import render_sample
from ws_dan.common.io import InputError, sha256_file

# ---------------------------------------------------------------------------------------------------------------
# Generated "web search" results: cars (wanted) and the junk a search also returns (unwanted)

UNWANTED_KINDS = ("advert", "texture", "wheel", "noise")


def wanted_image(seed: int, class_name: str = "red_circle", size: int = 64) -> Image.Image:
    """A synthetic car photo (data_tools.synthetic) of ``class_name``."""
    return render_sample(np.random.default_rng(10_000 + seed), class_name, size)[0]


def unwanted_image(seed: int, size: int = 64) -> Image.Image:
    """Junk a web search returns with car photos: an advert (text on a flat colour), a texture close-up, a wheel
    close-up (a car part filling the frame), sensor-like noise. The kind cycles with the seed."""
    rng = np.random.default_rng(20_000 + seed)
    kind = UNWANTED_KINDS[seed % len(UNWANTED_KINDS)]
    big = size * 2
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if kind == "advert":
        im = Image.new("RGB", (big, big), colour)
        d = ImageDraw.Draw(im)
        try:
            font = ImageFont.load_default(size=int(rng.integers(18, 30)))
        except TypeError:  # Pillow < 10.1: one small bitmap font
            font = ImageFont.load_default()
        ink = tuple(255 - c for c in colour)
        for line in range(int(rng.integers(2, 5))):
            text = "".join(rng.choice(list("SALE%0123456789BUYNOW$"), int(rng.integers(4, 9))))
            d.text((int(rng.integers(2, 30)), 6 + line * big // 4), text, fill=ink, font=font)
        d.rectangle([0, big - 16, big, big], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    elif kind == "texture":
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
        angle, freq = rng.uniform(0, math.pi), rng.uniform(0.15, 0.5)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq)[..., None]
        base, other = np.array(colour, np.float32), rng.integers(0, 256, 3).astype(np.float32)
        im = Image.fromarray(np.clip(base + (other - base) * (wave + 1) / 2, 0, 255).astype(np.uint8))
    elif kind == "wheel":
        im = Image.new("RGB", (big, big), tuple(int(c * 0.5) for c in colour))
        d = ImageDraw.Draw(im)
        c, r = big / 2 + rng.uniform(-8, 8), big * rng.uniform(0.38, 0.48)
        d.ellipse([c - r, c - r, c + r, c + r], fill=(20, 20, 22))
        d.ellipse([c - r * 0.6, c - r * 0.6, c + r * 0.6, c + r * 0.6], fill=(170, 170, 175))
        for k in range(5):
            a = 2 * math.pi * k / 5 + rng.uniform(0, 1)
            d.line([(c, c), (c + r * 0.6 * math.cos(a), c + r * 0.6 * math.sin(a))], fill=(60, 60, 60), width=4)
    else:  # noise
        arr = rng.normal(128, 60, (big // 4, big // 4, 3))
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).resize((big, big), Image.NEAREST)
        im = im.filter(ImageFilter.GaussianBlur(1))
    return im.resize((size, size), Image.LANCZOS)


def make_sorted_folder(root: Path, n_wanted: int, n_unwanted: int, classes=("red_circle", "blue_circle")) -> Path:
    """``root/wanted`` (cars of ``classes``) and ``root/unwanted`` (the four kinds of junk): the hand-sorted
    examples a cleaner is trained on."""
    for k in range(n_wanted):
        path = root / "wanted" / f"car_{k:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        wanted_image(k, classes[k % len(classes)]).save(path, quality=92)
    for k in range(n_unwanted):
        path = root / "unwanted" / f"junk_{k:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        unwanted_image(k).save(path)
    return root


def serve_search_results(server: ImageServer, classes, n_wanted: int, n_unwanted: int,
                         offset: int = 1000) -> tuple[list[tuple[str, str]], dict[str, bool]]:
    """Put ``n_wanted`` cars and ``n_unwanted`` junk images per class on the server (new seeds, unlike the sorted
    examples); returns the URL list rows ``(url, class)`` and the truth ``url -> is unwanted``."""
    rows, truth = [], {}
    for ci, name in enumerate(classes):
        for k in range(n_wanted):
            seed = offset + ci * 1000 + k
            url = server.add(f"/{name}/car_{k}.jpg", encode(wanted_image(seed, name), "JPEG", quality=90))
            rows.append((url, name))
            truth[url] = False
        for k in range(n_unwanted):
            seed = offset + ci * 1000 + k
            url = server.add(f"/{name}/junk_{k}.png", encode(unwanted_image(seed), "PNG"), "image/png")
            rows.append((url, name))
            truth[url] = True
    return rows, truth


def write_urls(path: Path, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["url", "class"])
        w.writerows(rows)
    return path


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


CLEANER_TRAIN = ["-m", "tiny", "--no-pretrained", "--image-size", "64", "-b", "8", "-j", "0", "--no-progress",
                 "--device", "cpu", "--optimizer", "adamw", "--lr", "0.003", "--lr-scheduler", "cosine", "--sf", "0"]


@pytest.fixture(scope="module")
def cleaner(tmp_path_factory):
    """A cleaner trained on 32 wanted and 16 unwanted sorted examples (tiny backbone, 64 px)."""
    root = tmp_path_factory.mktemp("cleaner")
    sorted_dir = make_sorted_folder(root / "sorted", 32, 16)
    before = tree(sorted_dir)
    result = run_script("train_cleaner", ["--data-dir", str(sorted_dir), "--save-dir", str(root / "run"), "-e", "10",
                                          "--seed", "0", *CLEANER_TRAIN])
    assert tree(sorted_dir) == before  # the sorted folder is only read
    return root / "run", result


# ---------------------------------------------------------------------------------------------------------------
# Tests


def test_train_cleaner_outputs(cleaner):
    run, result = cleaner
    import torch

    state = torch.load(run / "cleaner.pt", map_location="cpu", weights_only=True)
    assert state["config"]["class_names"] == list(CLEANER_CLASSES)
    assert state["config"]["method"] == "baseline" and state["config"]["backbone"] == "tiny"
    args = json.loads((run / "args.json").read_text())
    assert args["class_weights"] == "balanced" and args["method"] == "baseline"
    split = result["split"]
    assert split["train"] + split["test"] == 48 and split["test"] >= 8
    assert {p.name for p in (run / "data" / "test").iterdir()} == {"wanted", "unwanted"}
    heldout = json.loads((run / "cleaner_eval.json").read_text())
    assert heldout == result["heldout"] and heldout["images"] == split["test"]
    # a handful of held-out images: "most unwanted removed, almost nothing wanted"
    assert heldout["unwanted"] >= 3 and heldout["recall"] >= 0.66 and heldout["precision"] >= 0.75, heldout


def test_download_clean_merge_end_to_end(cleaner, tiny_data, tmp_path, capsys):
    """The issue's evidence: download -> clean (quarantine) -> merge, with the removal's precision and recall."""
    run, _ = cleaner
    classes = ("red_circle", "blue_circle")
    server = ImageServer()
    try:
        rows, truth = serve_search_results(server, classes, n_wanted=12, n_unwanted=6)
        # a search result that is already in the training split: the downloader leaves it out
        known = tiny_data / "train" / "red_circle" / "0000.jpg"
        rows.append((server.add("/red_circle/known.jpg", known.read_bytes()), "red_circle"))
        urls = write_urls(tmp_path / "urls.csv", rows)
        new = tmp_path / "downloads"
        d = run_script("download_images", ["--urls", str(urls), "--output-dir", str(new), "--reference",
                                           str(tiny_data / "train"), "--timeout", "5", "--no-progress", "-j", "1"])
    finally:
        server.close()
    assert d["ok"] == 36 and d["duplicate"] == 1
    with open(new / "download_manifest.csv", newline="") as f:
        url_of = {r["path"]: r["url"] for r in csv.DictReader(f) if r["status"] == "ok"}
    downloaded_before = tree(new)

    out = tmp_path / "cleaned"
    s = run_script("clean_images", ["--data-dir", str(new), "--ckpt-path", str(run / "cleaner.pt"), "--output-dir",
                                    str(out), "--action", "quarantine", "-j", "0", "--device", "cpu",
                                    "--no-progress"])
    assert s["images"] == 36 and s["to_remove"] == s["quarantine"]["moved"]
    with open(out / "clean_scores.csv", newline="") as f:
        scores = list(csv.DictReader(f))
    assert len(scores) == 36 and {r["class"] for r in scores} == set(classes)
    assert all(0.0 <= float(r["p_unwanted"]) <= 1.0 for r in scores)
    removed_paths = {r["path"] for r in scores if r["decision"] == "remove"}
    assert removed_paths == {r["path"] for r in scores if float(r["p_unwanted"]) >= 0.5}
    with open(out / "quarantine_manifest.csv", newline="") as f:
        moves = list(csv.DictReader(f))
    assert len(moves) == len(removed_paths)
    for m in moves:  # NEW/<class>/x.jpg -> OUT/quarantine/<class>/unwanted/x.jpg, byte for byte
        original, quarantined = Path(m["original"]), Path(m["quarantined"])
        assert not original.exists() and sha256_file(quarantined) == m["sha256"]
        assert quarantined.parent.name == "unwanted" and quarantined.parent.parent.name == original.parent.name
        assert out / "quarantine" in quarantined.parents
    if removed_paths:
        assert (out / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Precision and recall of the removal, against what each URL really served.
    removed_urls = {url_of[p] for p in removed_paths}
    unwanted_urls = {u for u, bad in truth.items() if bad}
    metrics = removal_metrics(removed_urls, unwanted_urls, total=len(url_of))
    print(f"\ncleaning on the downloads: {json.dumps(metrics)}")
    assert metrics["unwanted"] == 12 and metrics["images"] == 36
    # Measured here (seed 0): precision 1.0, recall 1.0. Other seeds give precision 1.0 and recall 0.75-1.0 (the
    # blurred-noise junk is the hardest kind for a 4-layer CNN trained on 48 images); the bound leaves that margin.
    assert metrics["recall"] >= 0.66 and metrics["precision"] >= 0.8, metrics

    # Merge what is left into the training split; the quarantined images are not in it.
    merged = tmp_path / "merged"
    m = merge_data(new, tiny_data / "train", merged, also_check=[tiny_data / "test"], workers=1)
    left = [p for p in new.rglob("*.jpg")]
    assert m["added"] == len(left) == 36 - len(moves)
    with open(merged / "merge_rejected.csv", newline="") as f:  # only the downloader's reports are left out
        assert sorted(Path(r["source"]).name for r in csv.DictReader(f)) == ["download_manifest.csv",
                                                                            "download_report.json"]
    merged_files = tree(merged / "train")
    quarantined_hashes = {mv["sha256"] for mv in moves}
    assert not quarantined_hashes & set(merged_files.values())
    assert sum(1 for p in merged_files if p.startswith("red_circle/")) == 8 + sum(
        1 for p in left if p.parent.name == "red_circle")

    # Undo puts every quarantined image back where it was, unchanged.
    counts = run_script("clean_images", ["--undo", str(out / "quarantine_manifest.csv"), "--no-progress"])
    assert counts["restored"] == len(moves) and not counts["problems"]
    assert tree(new) == downloaded_before


def test_report_action_moves_nothing_and_refuses_unsafe_outputs(cleaner, tmp_path, capsys):
    run, _ = cleaner
    new = tmp_path / "new" / "red_circle"
    new.mkdir(parents=True)
    for k in range(3):
        wanted_image(500 + k).save(new / f"car{k}.jpg")
    unwanted_image(501).save(new / "junk.png")
    (new / "notes.txt").write_text("not an image")
    before = tree(tmp_path / "new")
    s = run_script("clean_images", ["--data-dir", str(tmp_path / "new"), "--ckpt-path", str(run / "cleaner.pt"),
                                    "--output-dir", str(tmp_path / "report"), "-j", "0", "--no-progress"])
    assert tree(tmp_path / "new") == before  # --action report: only read
    assert s["images"] == 4 and s["unreadable"] == 1 and "quarantine" not in s
    with open(tmp_path / "report" / "clean_scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["decision"] for r in rows][-1].startswith("unreadable") and rows[-1]["path"] == "red_circle/notes.txt"
    # an output folder inside the data folder is refused, and so is a checkpoint that is not a cleaner's
    with pytest.raises(SystemExit):
        run_script("clean_images", ["--data-dir", str(tmp_path / "new"), "--ckpt-path", str(run / "cleaner.pt"),
                                    "--output-dir", str(tmp_path / "new" / "out"), "--no-progress"])
    assert "inside the input folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_script("clean_images", ["--data-dir", str(tmp_path / "new"), "--ckpt-path", str(run / "cleaner.pt"),
                                    "--output-dir", str(tmp_path / "o2"), "--action", "quarantine",
                                    "--quarantine-dir", str(tmp_path / "new" / "q"), "--no-progress"])
    assert "inside the input folder" in capsys.readouterr().err
    import torch

    state = torch.load(run / "cleaner.pt", map_location="cpu", weights_only=True)
    state["config"]["class_names"] = ["blue_circle", "red_circle"]
    torch.save(state, tmp_path / "classifier.pt")
    with pytest.raises(SystemExit):
        run_script("clean_images", ["--data-dir", str(tmp_path / "new"), "--ckpt-path", str(tmp_path / "classifier.pt"),
                                    "--output-dir", str(tmp_path / "o3"), "--no-progress"])
    assert "not a cleaner checkpoint" in capsys.readouterr().err and not (tmp_path / "o3").exists()
    assert tree(tmp_path / "new") == before


def test_sorted_folder_checks_and_helpers(tmp_path):
    with pytest.raises(InputError, match="no unwanted/ folder"):
        check_sorted_folder(make_sorted_folder(tmp_path / "a", 3, 0))
    root = make_sorted_folder(tmp_path / "b", 3, 1)
    with pytest.raises(InputError, match="1 image"):
        check_sorted_folder(root)
    root = make_sorted_folder(tmp_path / "c", 3, 2)
    (root / "maybe").mkdir()
    with pytest.raises(InputError, match="maybe"):
        check_sorted_folder(root)
    assert check_sorted_folder(make_sorted_folder(tmp_path / "d", 3, 2)) == {"unwanted": 2, "wanted": 3}
    with pytest.raises(InputError, match="not a cleaner checkpoint"):
        unwanted_index(["red_circle", "blue_circle"])
    assert unwanted_index(["unwanted", "wanted"]) == 0 and unwanted_index(["wanted", "unwanted"]) == 1
    m = removal_metrics({"a", "b", "c"}, {"b", "c", "d", "e"}, 10)
    assert (m["precision"], m["recall"], m["wrongly_removed"], m["missed"]) == (0.6667, 0.5, 1, 2)
    sheet = image_contact_sheet([(root / "unwanted" / "junk_000.png", "x\np=0.9"), (tmp_path / "gone.jpg", "y")],
                                tmp_path / "sheet.png")
    with Image.open(sheet) as im:
        assert im.size[0] > 2 * 112 and im.mode == "RGB"
