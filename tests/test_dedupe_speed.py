"""Dedupe at decode speed: draft-decoded hashes agree with the full decode, exact duplicates are still
found with digests taken only where needed, and the side-by-side benchmark runs."""

from __future__ import annotations

import io
import json
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script, shared
from PIL import Image

from data_tools.dedupe import (
    DRAFT_DEVIATION,
    EXACT_CANDIDATE_DISTANCE,
    HASH_WORKING_SIZE,
    exact_pairs,
    file_hashes,
    find_duplicates,
    find_leaks,
    hash_file,
    hash_images,
    image_hashes,
    popcount,
    working_reduction,
)
from data_tools.dedupe.hashing import CROP_FRACTION, HASH_SIZES, _centre
from data_tools.dedupe.resample import resize_many
from ws_dan.common.images import UnreadableImageError, decode_image, open_image


def _real_jpegs(n_big: int = 24, n_small: int = 8) -> list[Path]:
    """Large cars_dev photos (decoded at 1/4 or 1/8 scale) and small cars ones (mostly 1/1 or 1/2)."""
    dev = sorted(shared("cars_dev").rglob("*.jpg"))
    big = sorted(dev, key=lambda p: -p.stat().st_size)[:n_big]
    small = sorted(shared("cars").rglob("*.jpg"))[::25][:n_small]
    return big + small


def _whole_distance(a: np.ndarray, b: np.ndarray) -> int:
    """Summed Hamming distance of the four whole-image hashes (the metric exact_candidates' bound rests on)."""
    return int(popcount(np.asarray(a)[0] ^ np.asarray(b)[0]).sum())


def _gradient_photo(size=(1024, 768), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    low = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    arr = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC)).astype(np.int16)
    arr += rng.integers(-10, 10, arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


# --------------------------------------------------------------------------------------------------------------
# the reduced decode


def test_decode_image_scales_a_jpeg_by_the_working_reduction(tmp_path):
    path = tmp_path / "big.jpg"
    _gradient_photo((1024, 768)).save(path, quality=92)
    d = decode_image(path, draft=64, gray=True)
    # 768 // 8 = 96 >= 64: the decoder's largest factor, luma only
    assert (d.scale, d.image.size, d.image.mode, d.full_size) == (8, (128, 96), "L", (1024, 768))
    rgb = decode_image(path, draft=200)
    assert (rgb.scale, rgb.image.size, rgb.image.mode) == (2, (512, 384), "RGB")  # 768 // 4 = 192 < 200
    assert open_image(path, draft=200).size == (512, 384)
    assert open_image(path).size == (1024, 768)  # no draft: the full decode, as before
    png = tmp_path / "big.png"
    _gradient_photo((1024, 768)).save(png)
    assert decode_image(png, draft=64, gray=True).scale == 1  # no DCT scaling outside JPEG


def test_draft_decode_applies_exif_orientation_and_reports_the_upright_size(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    _gradient_photo((800, 600)).save(path, quality=92, exif=exif.tobytes())
    full = open_image(path)
    d = decode_image(path, draft=64, gray=True)
    assert full.size == (600, 800) and d.full_size == (600, 800) and d.image.size == (75, 100)
    h = hash_file(path, digest=False)
    assert (h.width, h.height, h.digest) == (600, 800, None)
    assert _whole_distance(h.hashes, image_hashes(full)) <= DRAFT_DEVIATION


def test_truncated_jpeg_still_fails_when_draft_decoded(tmp_path):
    src = tmp_path / "whole.jpg"
    _gradient_photo((1024, 768)).save(src, quality=92)
    data = src.read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(UnreadableImageError, match=r"cut\.jpg: corrupt or truncated image"):
        decode_image(bad, draft=64, gray=True)
    hashed = hash_images([src, bad], workers=1, digests=False)
    assert [p.name for p in hashed.paths] == ["whole.jpg"] and [s.path.name for s in hashed.skipped] == ["cut.jpg"]


def test_working_size_is_the_same_for_draft_and_full_decode():
    n = HASH_WORKING_SIZE
    for short in range(1, 4000):
        f = working_reduction(short)
        assert f & (f - 1) == 0  # a power of two: the decoder's 1/2, 1/4, 1/8 and box reduces compose exactly
        assert (short // f >= n or f == 1) and short // (2 * f) < n
    # reduce(a) then reduce(b) has the size of reduce(a * b): ceil(ceil(n / a) / b) == ceil(n / (a * b))
    img = _gradient_photo((3159, 1176))
    f = working_reduction(1176)
    assert f == 16
    full = img.convert("L").reduce(f)
    two_step = img.convert("L").reduce(8).reduce(f // 8)
    assert full.size == two_step.size == (198, 74)


# --------------------------------------------------------------------------------------------------------------
# hashes: the draft decode against the full decode, and against the imagehash library


def test_draft_hashes_agree_with_full_decode_on_real_photos():
    paths = _real_jpegs()
    scales, dists = [], []
    for p in paths:
        hashes, size = file_hashes(p)
        full = open_image(p)
        assert size == full.size
        scales.append(decode_image(p, draft=HASH_WORKING_SIZE, gray=True).scale)
        dists.append(_whole_distance(hashes, image_hashes(full)))
    assert max(dists) <= DRAFT_DEVIATION, dists
    assert 2 * DRAFT_DEVIATION <= EXACT_CANDIDATE_DISTANCE
    assert sum(s >= 4 for s in scales) >= 20  # the large photos really were decoded at reduced scale
    assert np.mean(dists) < 1.5  # most draft-decoded photos hash exactly as their full decode


@pytest.mark.parametrize("pattern", ["noise", "ramp", "binary"])
def test_matrix_resize_is_pil_lanczos_bit_for_bit(pattern):
    """Both pass orders (Pillow 13 picks one by the shrink), down and up, every hash size and odd ones."""
    rng = np.random.default_rng({"noise": 0, "ramp": 1, "binary": 2}[pattern])
    for _ in range(40):
        h, w = int(rng.integers(6, 240)), int(rng.integers(6, 240))
        if pattern == "noise":
            pixels = rng.integers(0, 256, (h, w), dtype=np.uint8)
        elif pattern == "ramp":
            pixels = (np.add.outer(np.arange(h) * 7, np.arange(w) * 3) % 256).astype(np.uint8)
        else:  # hard edges: the Lanczos lobes overshoot, so the clip to 0..255 matters
            pixels = np.where(rng.random((h, w)) < 0.5, 0, 255).astype(np.uint8)
        sizes = [*HASH_SIZES, (w, h), (w, int(rng.integers(2, 90))), (int(rng.integers(2, 90)), h),
                 (int(rng.integers(2, 300)), int(rng.integers(2, 300)))]
        image = Image.fromarray(pixels)
        for size, got in zip(sizes, resize_many(pixels, sizes)):
            want = np.asarray(image.resize(size, Image.Resampling.LANCZOS))
            assert got.dtype == np.uint8 and got.shape == want.shape
            assert np.array_equal(got, want), ((w, h), size)


def test_hashes_are_imagehash_on_the_working_image():
    imagehash = pytest.importorskip("imagehash")
    funcs = (imagehash.phash, imagehash.dhash, imagehash.dhash_vertical, partial(imagehash.whash, image_scale=64))
    differing = np.zeros(4, int)
    for p in _real_jpegs(12, 4) + sorted(shared("flowers").rglob("*.jpg"))[:8]:
        image = open_image(p)
        gray = image.convert("L")
        f = working_reduction(min(gray.size))
        gray = gray.reduce(f) if f > 1 else gray
        ours = image_hashes(image)
        for v, view in enumerate((gray, _centre(gray, CROP_FRACTION))):
            for k, fn in enumerate(funcs):
                theirs = int(str(fn(view)), 16)
                differing[k] += bin(int(ours[v, k]) ^ theirs).count("1")
    # dHashes bit for bit; pHash and wHash may differ only where imagehash's float rounding breaks an exact tie
    assert differing[1] == differing[2] == 0 and differing[0] + differing[3] <= 2, differing


# --------------------------------------------------------------------------------------------------------------
# exact duplicates, with digests only where needed


@pytest.fixture(scope="module")
def _copies_once(tmp_path_factory) -> Path:
    # Built once per module (a 3.7-megapixel PNG takes seconds to write); each test gets its own copy.
    big = sorted(shared("cars_dev").rglob("*.jpg"), key=lambda p: -p.stat().st_size)
    root = tmp_path_factory.mktemp("copies")
    folder, off = root / "data", root / "off"
    folder.mkdir()
    off.mkdir()
    src = folder / "photo.jpg"
    src.write_bytes(big[0].read_bytes())
    pixels = open_image(src)
    pixels.save(folder / "photo_same_pixels.png", compress_level=1)
    shutil.copyfile(folder / "photo_same_pixels.png", off / "photo_same_pixels.png")
    arr = np.asarray(pixels).copy()
    arr[10, 10, 0] = arr[10, 10, 0] + 1 if arr[10, 10, 0] < 255 else 254
    Image.fromarray(arr).save(off / "photo_one_value_off.png", compress_level=1)
    for k, other in enumerate(big[1:4]):
        (folder / f"other{k}.jpg").write_bytes(other.read_bytes())
    return root


@pytest.fixture
def jpeg_and_copies(_copies_once, tmp_path) -> Path:
    """data/: a large real JPEG (draft-decoded at 1/8), its pixels re-encoded as PNG (exact) and three other real
    photos; off/: that PNG and a copy of it with one value changed by 1 (not exact). Returns data/."""
    shutil.copytree(_copies_once, tmp_path / "copies")
    return tmp_path / "copies" / "data"


def _kinds(report) -> dict:
    return {report.images[m].path.name: (k, d) for g in report.groups for m, k, d in zip(g.members, g.kinds,
                                                                                          g.distances)}


def test_png_copy_of_a_jpeg_is_exact(jpeg_and_copies):
    assert decode_image(jpeg_and_copies / "photo.jpg", draft=HASH_WORKING_SIZE, gray=True).scale == 8
    for exact_only in (False, True):
        report = find_duplicates(jpeg_and_copies, workers=1, exact_only=exact_only)
        # same pixels: the larger file (the PNG) is kept, the JPEG is its exact copy at distance 0
        assert _kinds(report) == {"photo_same_pixels.png": ("keep", 0), "photo.jpg": ("exact", 0)}


def test_one_value_off_is_not_exact(jpeg_and_copies):
    off = jpeg_and_copies.parent / "off"
    report = find_duplicates(off, workers=1)
    kinds = _kinds(report)
    assert sorted(k for k, _ in kinds.values()) == ["keep", "near"]
    assert len({d for d in report.digests}) == 2 and None not in report.digests  # both digested, different
    assert find_duplicates(off, workers=1, exact_only=True).groups == []


def test_digests_are_taken_only_for_exact_candidates(jpeg_and_copies):
    report = find_duplicates(jpeg_and_copies, workers=1, exact_only=True)
    digested = sorted(report.images[k].path.name for k, d in enumerate(report.digests) if d is not None)
    # the same-size pair is the only candidate; the three unrelated photos are never decoded in full
    assert digested == ["photo.jpg", "photo_same_pixels.png"]


def test_exact_pairs_equal_digesting_everything(jpeg_and_copies):
    for folder in (jpeg_and_copies, jpeg_and_copies.parent / "off"):
        # the old way: every image decoded in full and digested
        everything = hash_images(sorted(folder.iterdir()), workers=1)
        assert all(d is not None for d in everything.digests)
        i, j = exact_pairs(everything.digests)
        old = {frozenset((everything.paths[a].name, everything.paths[b].name)) for a, b in zip(i, j)}
        report = find_duplicates(folder, workers=1, exact_only=True)
        assert {frozenset(report.images[m].path.name for m in g.members) for g in report.groups} == old
    assert old == set()  # off/: one value differs


def test_exact_copy_is_grouped_even_at_threshold_zero(jpeg_and_copies):
    report = find_duplicates(jpeg_and_copies, threshold=0, workers=1)
    assert _kinds(report) == {"photo_same_pixels.png": ("keep", 0), "photo.jpg": ("exact", 0)}


def test_leak_mode_finds_the_exact_copy(jpeg_and_copies, tmp_path):
    ref, query = tmp_path / "train", tmp_path / "test"
    ref.mkdir()
    query.mkdir()
    (jpeg_and_copies / "photo.jpg").rename(ref / "photo.jpg")
    (jpeg_and_copies / "other0.jpg").rename(ref / "other0.jpg")
    (jpeg_and_copies / "photo_same_pixels.png").rename(query / "copy.png")
    (jpeg_and_copies / "other1.jpg").rename(query / "other1.jpg")
    report = find_leaks(ref, query, workers=1, exact_only=True)
    s = report.summary()
    assert (s["leaked_query_images"], s["leaked_exact"]) == (1, 1)
    assert [report.images[m].path.name for m in report.groups[0].members] == ["photo.jpg", "copy.png"]


def test_dedupe_script_outputs_keep_their_format(jpeg_and_copies, tmp_path):
    out = tmp_path / "out"
    s = run_script("dedupe", ["--dd", str(jpeg_and_copies), "--od", str(out), "-j", "1", "--no-progress"])
    import csv

    rows = list(csv.DictReader(open(out / "duplicates.csv")))
    assert list(rows[0]) == ["group", "role", "kind", "distance", "path", "side", "split", "label", "width",
                             "height", "label_conflict"]
    by_name = {Path(r["path"]).name: r for r in rows}
    full = open_image(jpeg_and_copies / "photo.jpg")
    assert (int(by_name["photo.jpg"]["width"]), int(by_name["photo.jpg"]["height"])) == full.size
    assert by_name["photo.jpg"]["kind"] == "exact" and by_name["photo.jpg"]["distance"] == "0"
    assert s["exact_pairs_to_keeper"] == 1 and s["near_pairs_to_keeper"] == 0
    assert json.loads((out / "dedupe_report.json").read_text())["images"] == 5


# --------------------------------------------------------------------------------------------------------------
# the benchmark


def test_benchmark_prints_the_side_by_side_table(tmp_path, capsys):
    base = shared("dedup", "base_images")
    r = run_script("benchmark_dedupe", ["--data-dir", str(base), "--speed-dirs", str(base), "--od",
                                        str(tmp_path / "b"), "-j", "1", "--no-progress", "--synthetic", "500",
                                        "--thresholds", "36", "--methods", "draft", "old"])
    text = capsys.readouterr().out
    assert "side by side" in text and "x old" in text
    rows = {row["method"]: row for row in r["comparison"]}
    assert set(rows) == {"draft", "old"}
    assert rows["draft"]["images"] == rows["old"]["images"] == 10
    assert rows["draft"]["copy_recall"] == rows["old"]["copy_recall"] == 1.0
    assert rows["old"]["speedup_vs_old"] == 1.0 and rows["draft"]["speedup_vs_old"] > 0
    saved = json.loads((tmp_path / "b" / "benchmark_dedupe.json").read_text())
    assert [row["method"] for row in saved["comparison"]] == ["draft", "old"]


def test_in_memory_image_bytes_hash_like_the_file(tmp_path):
    # download.py hashes an in-memory full decode; the index holds files hashed the same way (digests=True)
    path = tmp_path / "a.jpg"
    _gradient_photo((900, 700), seed=3).save(path, quality=90)
    from_memory = image_hashes(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
    assert np.array_equal(hash_file(path).hashes, from_memory)


# --------------------------------------------------------------------------------------------------------------
# at scale: one BLAS thread per hashing process, the scale set, the per-stage and growth measurements


def _blas_threads(_):
    from threadpoolctl import threadpool_info

    return max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"), default=1)


def test_worker_processes_run_one_blas_thread_each():
    """Two hashing processes each with a BLAS thread per core spun against each other (3x slower on 2 cores):
    the pool's workers are limited to one."""
    from data_tools.parallel import parallel_map

    assert list(parallel_map(_blas_threads, list(range(4)), workers=2)) == [1, 1, 1, 1]


def test_scale_set_is_distinct_real_jpegs_and_a_rerun_adds_only_what_is_missing(tmp_path):
    from data_tools.dedupe_eval import SCALE_SIDES, make_scale_set

    sources = []
    for k in range(3):
        p = tmp_path / "src" / f"{k}.png"
        p.parent.mkdir(exist_ok=True)
        smooth = np.random.default_rng(k).integers(0, 255, (6, 8, 3), dtype=np.uint8)  # JPEG keeps it close
        Image.fromarray(smooth).resize((400, 300), Image.BICUBIC).save(p)
        sources.append(p)
    out = tmp_path / "scale"
    paths = make_scale_set(sources, out, 10, workers=1)
    assert len(paths) == 10 and len({p.read_bytes() for p in paths}) == 10
    for k, p in enumerate(paths):
        with Image.open(p) as im:
            assert im.format == "JPEG" and max(im.size) == SCALE_SIDES[(k // 3) % len(SCALE_SIDES)]
    # variant 0 of source 0 is the top-left three quarters of it, resized
    with Image.open(paths[0]) as im, Image.open(sources[0]) as src:
        ref = src.crop((0, 0, 300, 225)).resize(im.size, Image.LANCZOS)
        assert np.abs(np.asarray(im, float) - np.asarray(ref, float)).mean() < 3
    stamp = paths[4].stat().st_mtime_ns
    paths[7].unlink()
    assert make_scale_set(sources, out, 10, workers=1) == paths
    assert paths[7].is_file() and paths[4].stat().st_mtime_ns == stamp


def test_stage_times_and_search_growth_report_every_stage_and_size(tmp_path):
    from data_tools.dedupe_eval import search_growth, stage_times

    paths = []
    for k in range(4):
        p = tmp_path / f"{k}.jpg"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    rows = [r for r in stage_times(paths) if r["tool"] == "finder"]
    assert [r["stage"] for r in rows] == ["read", "decode", "resize", "hash"]
    assert all(r["ms_per_image"] > 0 for r in rows)
    growth = search_growth([200, 400], brute_max=0, workers=1)
    assert [g["n"] for g in growth] == [200, 400] and [g["pairs"] for g in growth] == [19900, 79800]
    assert [g["planted_found"] for g in growth] == ["100/100", "200/200"]
    assert all(g["imagededup_seconds"] is None for g in growth)
