"""Super-resolution in front of the classifier: predict.py --sr-model and the low-resolution experiment."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_TRAIN, run_script
from PIL import Image

from super_resolution import EnlargeSmallImages, build_dbpn


@pytest.fixture(scope="module")
def sr_weights(tmp_path_factory):
    """A DBPN-S x2 saved the way the DBPN release saves its weights (DataParallel 'module.' keys)."""
    torch.manual_seed(0)
    model = build_dbpn("dbpn-s", 2)
    path = tmp_path_factory.mktemp("sr") / "DBPN-S_x2.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def classifier(tiny_data, tmp_path_factory):
    save = tmp_path_factory.mktemp("clf")
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", "--sf", "0", *TINY_TRAIN])
    return save / "last.pt"


def test_enlarge_small_images_only():
    torch.manual_seed(0)
    enlarge = EnlargeSmallImages(build_dbpn("dbpn-s", 2).eval(), 2, max_area=40 * 40)
    small, big = Image.new("RGB", (30, 20), "red"), Image.new("RGB", (50, 50), "blue")
    assert enlarge(small).size == (60, 40)
    assert enlarge(big) is big
    assert enlarge.enlarged == 1


def test_lowres_experiment_table(tiny_data, classifier, sr_weights, tmp_path):
    rows = run_script("lowres_experiment", ["--dd", str(tiny_data / "test"), "--cp", str(classifier), "--sr-model",
                                            str(sr_weights), "--od", str(tmp_path), "--size", "32", "-j", "0",
                                            "--no-progress", "--device", "cpu"])
    assert [r["n"] for r in rows] == [12, 12, 12]
    assert rows[2]["enlarged"] == 12  # every 32 px copy is under the area threshold
    for r in rows:
        assert 0 <= r["top1"] <= 100
    table = (tmp_path / "lowres_table.md").read_text()
    assert "| original |" in table and "| down-sampled to 32 px |" in table and "super-resolution |" in table
    with Image.open(next((tmp_path / "downsampled_32").rglob("*.jpg"))) as im:
        assert min(im.size) == 32


def test_predict_with_a_wrong_sr_file(tiny_data, classifier, tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not weights")
    with pytest.raises(SystemExit):
        run_script("predict", ["--dd", str(tiny_data / "test"), "--cp", str(classifier), "--od", str(tmp_path / "o"),
                               "-j", "0", "--no-progress", "--sr-model", str(tmp_path / "junk.pth")])
    assert "junk.pth" in capsys.readouterr().err
