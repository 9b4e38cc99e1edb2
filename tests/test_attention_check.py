"""The crop-keeps-the-vehicle check and the attention contact sheet (scripts/attention_sheet.py)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY_TRAIN, run_script, shared

from ws_dan.evaluation.attention_check import VEHICLE_CLASSES, crop_check, peak_boxes, same_size_boxes, shows_vehicle
from ws_dan.models.wsdan import WSDAN, ModelConfig


def test_same_size_boxes_keep_width_and_height():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 100.0, 100.0]])
    center = same_size_boxes(boxes, (100, 100), "center")
    assert center.tolist() == [[30.0, 40.0, 70.0, 60.0], [0.0, 0.0, 100.0, 100.0]]
    rand = same_size_boxes(boxes, (100, 100), "random", torch.Generator().manual_seed(0))
    assert torch.allclose(rand[:, 2] - rand[:, 0], boxes[:, 2] - boxes[:, 0])
    assert (rand[:, :2] >= 0).all() and (rand[:, 2:] <= 100).all()
    with pytest.raises(ValueError, match="center"):
        same_size_boxes(boxes, (100, 100), "left")


def test_peak_boxes_centre_on_the_maximum_and_stay_inside():
    att = torch.zeros(2, 1, 4, 4)
    att[0, 0, 1, 2] = 1.0  # peak at cell (row 1, col 2) of a 4x4 map over a 40x40 image
    att[1, 0, 0, 0] = 1.0  # peak in the corner: the box is shifted inside
    boxes = peak_boxes(att, (40, 40), area=0.25)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert torch.allclose(w, torch.full((2,), 20.0)) and torch.allclose(h, torch.full((2,), 20.0))
    cx, cy = (boxes[0, 0] + boxes[0, 2]) / 2, (boxes[0, 1] + boxes[0, 3]) / 2
    assert 20 <= cx <= 30 and 10 <= cy <= 20  # the peak cell spans x 20-30, y 10-20
    assert boxes[1].tolist() == [0.0, 0.0, 20.0, 20.0]


class _FixedJudge(torch.nn.Module):
    """Top class from the mean intensity: bright -> class 3 (a 'vehicle') then 0; dark -> class 0 then 3."""

    def forward(self, x):
        logits = torch.full((x.shape[0], 10), -100.0)
        logits[:, 3] = x.mean(dim=(1, 2, 3)) * 10
        logits[:, 0] = -x.mean(dim=(1, 2, 3)) * 10
        return logits


def test_shows_vehicle_reads_the_top_k():
    judge = _FixedJudge()
    x = torch.stack([torch.ones(3, 8, 8), -torch.ones(3, 8, 8)])
    assert shows_vehicle(judge, torch.tensor([3]), x, k=1).tolist() == [True, False]
    assert shows_vehicle(judge, torch.tensor([3]), x, k=2).tolist() == [True, True]  # class 3 is 2nd for the dark one
    assert "sports car" in VEHICLE_CLASSES and "grille" in VEHICLE_CLASSES


def test_crop_check_judges_the_inference_crop_and_the_controls():
    torch.manual_seed(0)
    model = WSDAN(ModelConfig(backbone="tiny", num_classes=3, num_attentions=4, image_size=32)).eval()
    out = crop_check(model, _FixedJudge(), torch.tensor([3]), torch.randn(5, 3, 32, 32))
    assert out["boxes"].shape == (5, 4) and out["attention"].shape[:2] == (5, 1)
    assert ((out["area"] > 0) & (out["area"] <= 1)).all()
    for key in ("crop", "center", "random", "whole"):
        assert out[key].dtype == torch.bool and out[key].shape == (5,)
    peak = crop_check(model, _FixedJudge(), torch.tensor([3]), torch.randn(5, 3, 32, 32), peak_area=0.25)
    assert torch.allclose(peak["area"], torch.full((5,), 0.25))


def test_attention_sheet_on_a_trained_checkpoint(tiny_data, tmp_path):
    weights = shared("weights", "mobilenet_v2-b0353104.pth")
    save = tmp_path / "run"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", *TINY_TRAIN])
    out = tmp_path / "sheet.png"
    result = run_script("attention_sheet", ["-c", str(save / "last.pt"), "--data-dir", str(tiny_data / "test"),
                                            "--judge-weights", str(weights), "--output", str(out), "--tiles", "6"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved == result and saved["images"] == 12
    for key in ("crop", "center", "random", "whole"):
        assert 0 <= saved[f"{key}_keeps_vehicle"] <= 1
    assert 0 < saved["crop_area_mean"] <= 1


def test_attention_sheet_refuses_a_baseline(tiny_data, tmp_path, capsys):
    weights = shared("weights", "mobilenet_v2-b0353104.pth")
    save = tmp_path / "base"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", *TINY_TRAIN, "--method", "baseline"])
    with pytest.raises(SystemExit):
        run_script("attention_sheet", ["-c", str(save / "last.pt"), "--data-dir", str(tiny_data / "test"),
                                       "--judge-weights", str(weights), "--output", str(tmp_path / "s.png")])
    assert capsys.readouterr().err.strip().endswith(
        "a baseline checkpoint; the sheet needs a WS-DAN model (attention maps)")
