"""Super-resolution: DBPN shapes and parameter counts, published-weight loading, tiled inference, PSNR/SSIM,
and the SR scripts end to end on tiny inputs (DBPN-S at 2x, a few pixels: the whole file runs in seconds)."""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_script, shared
from PIL import Image

from super_resolution import (
    DBPN,
    SRWeightsError,
    bicubic_upsample,
    build_dbpn,
    count_parameters,
    describe_state_dict,
    load_dbpn_weights,
    load_sr_model,
    needs_enlarging,
    psnr,
    psnr_y,
    rgb_to_y,
    ssim,
    ssim_y,
    super_resolve_image,
    tile_spans,
    tiled_forward,
)
from super_resolution.inference import image_to_tensor
from super_resolution.metrics import gaussian_window_1d

SCRIPTS = ["super_resolve", "train_sr", "eval_sr", "benchmark_sr"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: one thread avoids OpenMP's spin-waiting, which on a busy 2-core machine made
    each layer 50x slower (a 2x3 D-DBPN forward: 1.1 s with 2 threads, 0.02 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------------
# Networks


@pytest.mark.parametrize("variant", ["dbpn", "dbpnll", "dbpn-s", "dbpn-res-mr64-3"])
@pytest.mark.parametrize("scale", [2, 4, 8])
def test_output_shape_every_variant_and_scale(variant, scale):
    model = build_dbpn(variant, scale).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 2, 3))
    assert out.shape == (1, 3, 2 * scale, 3 * scale)
    assert torch.isfinite(out).all()


def test_parameter_counts_match_the_published_table():
    counts = {v: count_parameters(build_dbpn(v, 4)) for v in ("dbpn", "dbpn-res-mr64-3", "dbpnll", "dbpn-s")}
    assert counts == {"dbpn": 10_426_358, "dbpn-res-mr64-3": 10_419_446, "dbpnll": 15_348_302,
                      "dbpn-s": 2_386_958}


def test_bicubic_upsample_matches_pil():
    rng = np.random.default_rng(0)
    # a smooth-ish real-looking image (noise blurred by a PIL reduction) so rounding, not overshoot, dominates
    img = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((20, 15), Image.BICUBIC)
    pil = np.asarray(img.resize((80, 60), Image.BICUBIC), dtype=np.float64)
    ours = bicubic_upsample(image_to_tensor(img).double(), 4)[0].permute(1, 2, 0).numpy() * 255
    diff = np.abs(ours - pil)
    assert diff.max() <= 1.5 and diff.mean() < 0.5  # PIL rounds its 8-bit intermediate; we do not


# ---------------------------------------------------------------------------------------------------------
# Published weights: a state dict built from the reference facts (key names and shapes), random values


def published_state_dict(stages: int, scale: int, iterations: int = 1, seed: int = 0) -> dict:
    """The release's key names and shapes (../shared/reference/dbpn.md), saved from DataParallel."""
    k = {2: 6, 4: 8, 8: 12}[scale]
    g = torch.Generator().manual_seed(seed)
    shapes: dict[str, tuple] = {}

    def block(prefix, kind, cin, cout, ksize, act=True):
        shapes[f"{prefix}.{kind}.weight"] = (cin, cout, ksize, ksize) if kind == "deconv" else (cout, cin, ksize, ksize)
        shapes[f"{prefix}.{kind}.bias"] = (cout,)
        if act:
            shapes[f"{prefix}.act.weight"] = (1,)

    block("feat0", "conv", 3, 256, 3)
    block("feat1", "conv", 256, 64, 1)
    for i in range(1, stages + 1):
        if i >= 3:
            block(f"up{i}.conv", "conv", 64 * (i - 1), 64, 1)
        block(f"up{i}.up_conv1", "deconv", 64, 64, k)
        block(f"up{i}.up_conv2", "conv", 64, 64, k)
        block(f"up{i}.up_conv3", "deconv", 64, 64, k)
        if i < stages:
            if i >= 2:
                block(f"down{i}.conv", "conv", 64 * i, 64, 1)
            block(f"down{i}.down_conv1", "conv", 64, 64, k)
            block(f"down{i}.down_conv2", "deconv", 64, 64, k)
            block(f"down{i}.down_conv3", "conv", 64, 64, k)
    block("output_conv", "conv", 64 * (stages if iterations == 1 else iterations), 3, 3, act=False)
    return {f"module.{name}": torch.randn(shape, generator=g) * 0.01 for name, shape in shapes.items()}


def test_reference_state_dict_has_155_tensors_with_the_documented_shapes():
    sd = published_state_dict(7, 4)
    assert len(sd) == 155
    assert sd["module.down6.conv.conv.weight"].shape == (64, 384, 1, 1)
    assert sd["module.up7.conv.conv.weight"].shape == (64, 384, 1, 1)
    assert sd["module.output_conv.conv.weight"].shape == (3, 448, 3, 3)
    assert sum(v.numel() for v in sd.values()) == 10_426_358


@pytest.mark.parametrize("variant,stages,iterations,scale", [
    ("dbpn", 7, 1, 4), ("dbpn-res-mr64-3", 7, 3, 4), ("dbpnll", 10, 1, 4), ("dbpn-s", 2, 1, 2), ("dbpn", 7, 1, 8),
])
def test_published_layout_loads_without_missing_or_unexpected_keys(tmp_path, variant, stages, iterations, scale):
    sd = published_state_dict(stages, scale, iterations)
    path = tmp_path / "weights.pth"
    torch.save(sd, path)
    model, found_scale = load_sr_model(path)  # variant and scale read off the tensors
    assert (model.variant, found_scale) == (variant, scale)
    own = model.state_dict()
    assert set(own) == {k[len("module."):] for k in sd}
    for key, value in sd.items():
        assert torch.equal(own[key[len("module."):]], value)
    # strict loading into an explicitly built model of the right kind works too
    load_dbpn_weights(DBPN(variant, scale), sd, path)


def test_wrong_variant_or_scale_names_what_the_file_is(tmp_path):
    path = tmp_path / "DBPN_x4.pth"
    torch.save(published_state_dict(7, 4), path)
    with pytest.raises(SRWeightsError, match=r"D-DBPN for 4x.*2x was asked"):
        load_sr_model(path, scale=2)
    with pytest.raises(SRWeightsError, match=r"D-DBPN for 4x .*kernel 8x8.*model is DBPN-S for 2x"):
        load_dbpn_weights(DBPN("dbpn-s", 2), torch.load(path, weights_only=True), path)
    with pytest.raises(SRWeightsError, match=r"DBPN-RES-MR64-3 for 4x.*model is D-DBPN for 4x"):
        load_dbpn_weights(DBPN("dbpn", 4), published_state_dict(7, 4, iterations=3), "mr.pth")
    assert describe_state_dict(published_state_dict(10, 8))["variant"] == "dbpnll"
    # not DBPN at all, and not a weights file at all
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(SRWeightsError, match="not DBPN weights"):
        load_sr_model(tmp_path / "other.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(SRWeightsError, match="not a readable PyTorch weights file"):
        load_sr_model(tmp_path / "junk.pth")
    with pytest.raises(SRWeightsError, match="not found"):
        load_sr_model(tmp_path / "missing.pth")


# ---------------------------------------------------------------------------------------------------------
# Tiled inference


def test_tile_spans_cover_the_axis_once():
    for n, tile, overlap in [(5, 8, 2), (100, 32, 8), (1024, 256, 16), (33, 32, 8)]:
        spans = tile_spans(n, tile, overlap)
        covered = [i for _, _, a, b in spans for i in range(a, b)]
        assert covered == list(range(n))
        for s0, s1, a, b in spans:
            assert s1 - s0 <= tile and s0 <= a and b <= s1
            assert a - s0 == min(overlap, a) and s1 - b == min(overlap, n - b)  # full context where it exists
    with pytest.raises(ValueError):
        tile_spans(10, 8, 4)


def test_tiled_inference_matches_untiled():
    """Tolerance: mean absolute difference < 1/255 (and max < 8/255) on [0, 1]; without overlap the seams
    differ clearly more, so the test can fail."""
    torch.manual_seed(0)
    model = build_dbpn("dbpn-s", 2).eval()
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).resize((40, 32), Image.BICUBIC)
    lr = image_to_tensor(img)
    full = tiled_forward(model, lr, 2, tile=0)
    tiled = tiled_forward(model, lr, 2, tile=32, overlap=8)  # 3 x 2 tiles
    seams = tiled_forward(model, lr, 2, tile=32, overlap=0)
    assert full.shape == tiled.shape == (1, 3, 64, 80)
    diff = (full - tiled).abs()
    assert diff.mean() < 1 / 255 and diff.max() < 4 / 255  # measured: mean 0.005/255, max 0.62/255
    assert (full - seams).abs().mean() > 1 / 255  # measured: mean 5.1/255, max 255/255
    # an image that fits in one tile goes through untouched (up to the 8-bit rounding of the PIL output)
    out = super_resolve_image(model, img, 2, tile=64)
    assert out.size == (80, 64) and out.mode == "RGB"
    assert np.abs(np.asarray(out, np.float64) - full[0].permute(1, 2, 0).numpy() * 255).max() <= 0.5 + 1e-4


# ---------------------------------------------------------------------------------------------------------
# PSNR / SSIM against hand-computed values


def test_y_channel_and_psnr_by_hand():
    white = np.full((4, 4, 3), 255, np.uint8)
    assert np.allclose(rgb_to_y(white), 235.0) and np.allclose(rgb_to_y(white * 0), 16.0)
    a = np.full((20, 20), 100.0)
    assert psnr(a, a + 10) == pytest.approx(10 * math.log10(255**2 / 100))  # 28.1308 dB
    assert psnr(a, a) == math.inf
    # a difference only inside the cropped border does not count
    hr = np.zeros((20, 20, 3), np.uint8)
    sr = hr.copy()
    sr[:4] = 255
    assert psnr_y(sr, hr, 4) == math.inf and psnr_y(sr, hr, 2) < 20


def _ssim_by_hand(x: np.ndarray, y: np.ndarray) -> float:
    """The formula, window position by window position, with the 2-D Gaussian window (no separability)."""
    g = gaussian_window_1d(11, 1.5)
    w = np.outer(g, g)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_by_hand():
    assert abs(gaussian_window_1d().sum() - 1) < 1e-12
    a, b = np.full((16, 16), 50.0), np.full((16, 16), 200.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b) == pytest.approx((2 * 50 * 200 + c1) / (50**2 + 200**2 + c1))  # sigmas 0: luminance term
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (15, 17))
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    assert ssim(x, y) == pytest.approx(_ssim_by_hand(x, y), abs=1e-9)
    assert ssim(x, x) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        ssim(x[:8], y[:8])


def test_bicubic_baseline_matches_the_published_set5_figure():
    """Our PIL down/up-scaling + Y/border-cropped PSNR reproduce the papers' Set5 4x bicubic 28.42 / 0.8104."""
    from super_resolution.metrics import bicubic_down, bicubic_up, modcrop
    from ws_dan.common.images import open_image

    p, s = [], []
    for path in sorted(shared("sr", "Set5").glob("*.png")):
        hr = modcrop(open_image(path), 4)
        up = bicubic_up(bicubic_down(hr, 4), 4)
        p.append(psnr_y(up, hr, 4))
        s.append(ssim_y(up, hr, 4))
    assert len(p) == 5
    assert abs(np.mean(p) - 28.42) < 0.1 and abs(np.mean(s) - 0.8104) < 0.003


# ---------------------------------------------------------------------------------------------------------
# Scripts


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_runs(name):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout and "(default:" in out.stdout


def test_super_resolve_accepts_both_flag_spellings():
    from conftest import script

    parser = script("super_resolve").get_args_parser()
    a = parser.parse_args(["--data_dir", "D", "--model_path", "M"])
    b = parser.parse_args(["--data-dir", "D", "--model-path", "M", "--in-place"])
    assert (a.data_dir, a.model_path, a.max_area, a.scale, a.tile, a.in_place) == ("D", "M", 32768, 4, 256, False)
    assert (b.data_dir, b.model_path, b.in_place) == ("D", "M", True)


@pytest.fixture(scope="module")
def sr_ckpt(tmp_path_factory) -> Path:
    """A toolkit SR checkpoint: DBPN-S 2x with random weights."""
    from super_resolution.weights import sr_config
    from ws_dan.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_dbpn("dbpn-s", 2)
    path = tmp_path_factory.mktemp("ckpt") / "dbpns_x2.pt"
    save_checkpoint(path, {"config": sr_config(model), "model": model.state_dict()}, kind="sr")
    return path


def _write(path: Path, size, fmt="PNG", seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture
def photo_tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    _write(root / "a" / "small.png", (12, 10))              # area 120: enlarged
    _write(root / "a" / "b" / "small.jpg", (9, 7), "JPEG")  # nested, JPEG: enlarged, stays JPEG
    _write(root / "tiny.png", (1, 1))                       # 1x1: enlarged to 2x2
    _write(root / "edge.png", (20, 10))                     # area 200 == --max-area: not enlarged
    _write(root / "big.png", (40, 30))                      # copied byte for byte
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)  # JPEG header, no image
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    return root


SR_FLAGS = ["--scale", "2", "--max-area", "200", "--device", "cpu", "--tile", "16", "--overlap", "4",
            "--no-progress"]


def test_super_resolve_mirrors_the_tree(photo_tree, sr_ckpt, tmp_path):
    out = tmp_path / "out"
    before = {p: p.read_bytes() for p in photo_tree.rglob("*") if p.is_file()}
    summary = run_script("super_resolve", ["--data_dir", str(photo_tree), "--model_path", str(sr_ckpt),
                                           "--output-dir", str(out), *SR_FLAGS])
    assert (summary["enlarged"], summary["copied"], summary["failed"], summary["not_images"]) == (3, 2, 2, 1)
    assert {f["path"] for f in summary["failures"]} == {"corrupt.jpg", "empty.png"}
    assert Image.open(out / "a" / "small.png").size == (24, 20)
    with Image.open(out / "a" / "b" / "small.jpg") as im:
        assert im.size == (18, 14) and im.format == "JPEG"
    assert Image.open(out / "tiny.png").size == (2, 2)
    assert (out / "edge.png").read_bytes() == (photo_tree / "edge.png").read_bytes()  # the threshold is strict
    assert (out / "big.png").read_bytes() == (photo_tree / "big.png").read_bytes()
    assert not (out / "corrupt.jpg").exists() and not (out / "notes.txt").exists()
    assert {p: p.read_bytes() for p in photo_tree.rglob("*") if p.is_file()} == before  # originals untouched
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_super_resolve_never_overwrites_without_in_place(photo_tree, sr_ckpt):
    with pytest.raises(SystemExit):
        run_script("super_resolve", ["--data-dir", str(photo_tree), "--model-path", str(sr_ckpt),
                                     "--output-dir", str(photo_tree), *SR_FLAGS])
    # default output: a sibling folder
    summary = run_script("super_resolve", ["--data-dir", str(photo_tree), "--model-path", str(sr_ckpt), *SR_FLAGS])
    assert Path(summary["output_dir"]) == photo_tree.parent / "photos_sr"
    # a scale that does not match the weights is refused with what the file holds
    with pytest.raises(SystemExit):
        run_script("super_resolve", ["--data-dir", str(photo_tree), "--model-path", str(sr_ckpt),
                                     "--scale", "4", "--no-progress"])


def test_in_place_replaces_atomically_and_survives_a_failure(photo_tree, sr_ckpt, monkeypatch):
    import super_resolution.folder as folder

    originals = {p: p.read_bytes() for p in photo_tree.rglob("*") if p.is_file()}
    real_save = folder.save_image
    calls = []

    def failing_save(img, path, fmt):
        calls.append(path)
        if len(calls) == 2:  # the second enlargement dies half-way through writing its file
            path.write(b"\x89PNG\r\n\x1a\n half a file")  # the temporary file atomic_write opened
            raise KeyboardInterrupt
        real_save(img, path, fmt)

    monkeypatch.setattr(folder, "save_image", failing_save)
    with pytest.raises(KeyboardInterrupt):
        run_script("super_resolve", ["--data_dir", str(photo_tree), "--model_path", str(sr_ckpt), "--in-place",
                                     *SR_FLAGS])
    changed = [p for p, data in originals.items() if p.read_bytes() != data]
    assert len(changed) == 1  # the first enlargement finished and replaced its original
    assert Image.open(changed[0]).size[0] == 2 * Image.open(io.BytesIO(originals[changed[0]])).size[0]
    leftovers = [p for p in photo_tree.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []
    assert set(p for p in photo_tree.rglob("*") if p.is_file()) == set(originals)

    # a write error (disk full...) is counted, leaves the original, and the run goes on
    def oserror_save(img, path, fmt):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder, "save_image", oserror_save)
    summary = run_script("super_resolve", ["--data_dir", str(photo_tree), "--model_path", str(sr_ckpt),
                                           "--in-place", *SR_FLAGS])
    assert summary["enlarged"] == 0 and summary["failed"] == 2 + 3
    assert all(p.read_bytes() == originals[p] for p in originals if p not in changed)
    assert not [p for p in photo_tree.rglob("*") if p.name.startswith(".")]

    monkeypatch.setattr(folder, "save_image", real_save)
    summary = run_script("super_resolve", ["--data_dir", str(photo_tree), "--model_path", str(sr_ckpt),
                                           "--in-place", *SR_FLAGS])
    # tiny.png, enlarged before the interruption, is still under the threshold: a rerun enlarges it again
    assert summary["enlarged"] == 3 and Image.open(photo_tree / "tiny.png").size == (4, 4)
    assert Image.open(photo_tree / "a" / "small.png").size == (24, 20)


def test_area_threshold():
    assert needs_enlarging((127, 256), 128 * 256) and not needs_enlarging((128, 256), 128 * 256)
    assert needs_enlarging((1, 1), 2) and not needs_enlarging((1, 1), 1) and not needs_enlarging((5, 5), 0)


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory) -> Path:
    """Four 48x40 smooth colour images (a blurred noise field, so bicubic is meaningful)."""
    root = tmp_path_factory.mktemp("hr") / "hr"
    for i in range(4):
        arr = np.random.default_rng(i).integers(0, 256, (10, 12, 3), dtype=np.uint8)
        root.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).resize((48, 40), Image.BICUBIC).save(root / f"img{i}.png")
    return root


def test_train_sr_writes_a_weights_only_checkpoint_and_resumes(hr_folder, tmp_path):
    save = tmp_path / "sr_run"
    flags = ["--hr-dir", str(hr_folder), "--save-dir", str(save), "--model", "dbpn-s", "--scale", "2",
             "--patch-size", "8", "-b", "2", "--patches-per-image", "1", "-j", "0", "--device", "cpu",
             "--val-crop", "24", "--no-progress"]
    row = run_script("train_sr", [*flags, "-e", "1"])
    assert row["epoch"] == 1 and row["steps"] == 1 and np.isfinite(row["val_psnr"])  # 3 train + 1 held out
    raw = torch.load(save / "last.pt", map_location="cpu", weights_only=True)
    assert raw["kind"] == "sr" and raw["config"]["variant"] == "dbpn-s" and raw["config"]["scale"] == 2
    for name in ("best.pt", "metrics.csv", "args.json", "train.log"):
        assert (save / name).is_file()
    model, scale = load_sr_model(save / "last.pt")
    assert scale == 2 and model.variant == "dbpn-s" and not model.training
    row = run_script("train_sr", [*flags, "-e", "2", "-c", str(save / "last.pt")])
    assert row["epoch"] == 2
    assert torch.load(save / "last.pt", weights_only=True)["epoch"] == 2
    with pytest.raises(SystemExit):  # resuming with another variant is refused
        run_script("train_sr", [*flags, "-e", "3", "-c", str(save / "last.pt"), "--model", "dbpn"])


def test_eval_sr_writes_rows_mean_and_strip(hr_folder, sr_ckpt, tmp_path):
    out = tmp_path / "eval"
    res = run_script("eval_sr", ["--hr-dir", str(hr_folder), "--model_path", str(sr_ckpt), "--scale", "2",
                                 "--output-dir", str(out), "--strip-images", "2", "--strip-crop", "32",
                                 "--device", "cpu"])
    assert res["images"] == 4 and set(res["mean"]) >= {"bicubic_psnr", "bicubic_ssim", "sr_psnr", "sr_ssim"}
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + 4 + 1 and lines[-1].startswith("MEAN")
    with Image.open(out / "strip.png") as im:
        assert im.size[1] > 2 * 32


def test_eval_sr_with_the_release_lr_inputs(tmp_path):
    """Set5 through the DBPN release's own LR files: bicubic from them agrees with our PIL reduction."""
    res = run_script("eval_sr", ["--hr-dir", str(shared("sr", "Set5")), "--lr-dir", str(shared("sr", "Set5_LR_x4")),
                                 "--scale", "4", "--output-dir", str(tmp_path), "--strip-images", "0"])
    assert res["images"] == 5 and abs(res["mean"]["bicubic_psnr"] - 28.42) < 0.15


def test_in_place_keeps_the_mode_and_replaces_a_symlink_not_its_target(photo_tree, sr_ckpt, tmp_path):
    small = photo_tree / "a" / "small.png"
    other = tmp_path / "other_dataset"
    other.mkdir()
    shutil.copy(small, other / "shared.png")
    before = (other / "shared.png").read_bytes()
    os.symlink(other / "shared.png", photo_tree / "linked.png")
    os.chmod(small, 0o640)
    run_script("super_resolve", ["--data_dir", str(photo_tree), "--model_path", str(sr_ckpt), "--in-place", *SR_FLAGS])
    assert (other / "shared.png").read_bytes() == before  # another dataset's file is never written through a link
    assert not (photo_tree / "linked.png").is_symlink() and (photo_tree / "linked.png").is_file()
    assert os.stat(small).st_mode & 0o777 == 0o640
