"""Shared image I/O: every odd kind of file becomes an upright RGB image or a clear, named error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import shared
from PIL import Image

from ws_dan.common.images import UnreadableImageError, check_image, find_images, open_image, sniff_format


def _jpeg_bytes(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.fixture
def odd_images(tmp_path):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    files = {}
    rgb.convert("L").save(tmp_path / "gray.png")
    files["gray"] = tmp_path / "gray.png"
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg")
    files["cmyk"] = tmp_path / "cmyk.jpg"
    rgb.convert("P", palette=Image.ADAPTIVE).save(tmp_path / "palette.png")
    files["palette"] = tmp_path / "palette.png"
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent
    rgba.save(tmp_path / "alpha.png")
    files["alpha"] = tmp_path / "alpha.png"
    Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100).save(tmp_path / "gray16.png")
    files["gray16"] = tmp_path / "gray16.png"
    rgb.save(tmp_path / "really_png.jpg", "PNG")
    files["png_named_jpg"] = tmp_path / "really_png.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    (tmp_path / "rotated.jpg").write_bytes(_jpeg_bytes(rgb, exif=exif.tobytes()))
    files["rotated"] = tmp_path / "rotated.jpg"
    full = _jpeg_bytes(rgb, quality=95)
    (tmp_path / "truncated.jpg").write_bytes(full[: len(full) // 2])
    files["truncated"] = tmp_path / "truncated.jpg"
    (tmp_path / "empty.jpg").write_bytes(b"")
    files["empty"] = tmp_path / "empty.jpg"
    (tmp_path / "notes.jpg").write_text("<html>404 not found</html>")
    files["html"] = tmp_path / "notes.jpg"
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    files["corrupt"] = tmp_path / "corrupt.png"
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")
    files["hidden"] = tmp_path / ".DS_Store"
    return files


@pytest.mark.parametrize("kind", ["gray", "cmyk", "palette", "alpha", "gray16", "png_named_jpg"])
def test_odd_modes_become_rgb(odd_images, kind):
    im = open_image(odd_images[kind])
    assert im.mode == "RGB" and im.size == (30, 20)


def test_transparent_pixels_become_white(odd_images):
    assert np.all(np.asarray(open_image(odd_images["alpha"])) == 255)


def test_16_bit_grayscale_is_scaled_not_clipped(odd_images):
    arr = np.asarray(open_image(odd_images["gray16"]))[..., 0].astype(int)
    source = np.arange(600).reshape(20, 30) * 100
    assert np.abs(arr - np.round(source / 65535 * 255)).max() <= 1


def test_exif_orientation_is_applied(odd_images):
    raw = Image.open(odd_images["rotated"])
    assert raw.size == (30, 20)
    assert open_image(odd_images["rotated"]).size == (20, 30)


@pytest.mark.parametrize("kind,reason", [("truncated", "truncated"), ("empty", "empty file"),
                                         ("html", "not an image"), ("corrupt", "corrupt")])
def test_unreadable_files_raise_with_path_and_reason(odd_images, kind, reason):
    with pytest.raises(UnreadableImageError) as info:
        open_image(odd_images[kind])
    assert str(odd_images[kind]) in str(info.value) and reason in info.value.reason
    assert reason in check_image(odd_images[kind])


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UnreadableImageError, match="file not found"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(NotADirectoryError, match="does not exist"):
        find_images(tmp_path / "nope")


def test_decompression_bomb_limit(tmp_path):
    Image.new("RGB", (200, 200)).save(tmp_path / "big.png")
    with pytest.raises(UnreadableImageError, match="exceeds the limit"):
        open_image(tmp_path / "big.png", max_pixels=100 * 100)


def test_find_images_sniffs_content(odd_images, tmp_path):
    images, skipped = find_images(tmp_path)
    names = {p.name for p in images}
    # the PNG named .jpg counts, the HTML page named .jpg and the empty file do not, hidden files are ignored
    assert "really_png.jpg" in names and "notes.jpg" not in names and "empty.jpg" not in names
    assert ".DS_Store" not in names and ".DS_Store" not in {s.path.name for s in skipped}
    reasons = {s.path.name: s.reason for s in skipped}
    assert reasons["empty.jpg"].startswith("empty") and "not an image" in reasons["notes.jpg"]
    # the truncated and corrupt files have valid signatures: they are found here and fail at decode time
    assert {"truncated.jpg", "corrupt.png"} <= names
    assert sniff_format(odd_images["cmyk"]) == "jpeg"


def test_real_photos_and_the_corrupt_file_from_shared():
    folder = shared("dedup", "mixed_images")
    images, skipped = find_images(folder)
    # the deliberately corrupt file is random bytes: no image signature, so the scan already skips it
    assert [(s.path.name, s.reason) for s in skipped] == [
        ("ukbench09268_corrupt.jpg", "not an image (unrecognised file signature)")]
    assert check_image(folder / "ukbench09268_corrupt.jpg") == "not an image (unrecognised file signature)"
    assert len(images) == 5 and all(open_image(p).mode == "RGB" for p in images)
