"""Backbone registry: channel counts, weight loading (offline), clear errors."""

from __future__ import annotations

import sys
import urllib.error

import pytest
import torch
import torchvision
from conftest import shared

from ws_dan.models import backbones
from ws_dan.models.backbones import (
    PretrainedWeightsError,
    canonical_name,
    create_backbone,
    list_backbones,
    load_weights_file,
)


def _out(bb, size):
    bb.features.eval()
    with torch.no_grad():
        return bb.features(torch.randn(1, 3, size, size))


@pytest.mark.parametrize("name,size,channels,spatial", [
    ("efficientnet-b3", 512, 232, 16),  # the reference project's cut: 232 channels, 16x16 at 512 px
    ("efficientnet-b0", 224, 192, 7),
    ("mobilenet_v2", 224, 1280, 7),
    ("mobilenet_v2_s16", 224, 1280, 14),
    ("efficientnet-b0-s16", 224, 192, 14),
    ("resnet50", 64, 2048, 2),
    ("inception", 299, 768, 17),  # Mixed_6e, the paper's setting
    ("tiny", 64, 32, 8),
])
def test_feature_channels_match_the_registry(name, size, channels, spatial):
    bb = create_backbone(name)
    y = _out(bb, size)
    assert bb.channels == channels
    assert y.shape == (1, channels, spatial, spatial)


def test_names_and_aliases():
    assert canonical_name("efficientnetb3") == "efficientnet-b3"
    assert canonical_name("inception_v3") == "inception"
    for name in ("efficientnet-b7", "inception_mixed_7c", "resnet101", "resnet152", "resnet152_cbam"):
        assert name in list_backbones()
    with pytest.raises(ValueError, match="unknown backbone 'vgg'.*efficientnet-b3"):
        canonical_name("vgg")


def test_inception_uses_its_own_normalisation():
    assert create_backbone("inception_mixed_7c").mean == (0.5, 0.5, 0.5)


def test_cbam_resnet_loads_resnet_weights_and_keeps_cbam_fresh(monkeypatch):
    reference = torchvision.models.resnet152(weights=None)
    monkeypatch.setattr(backbones, "_download_state_dict", lambda url: reference.state_dict())
    bb = create_backbone("resnet152_cbam", pretrained=True)
    layer1_0 = bb.features[4][0]
    assert torch.equal(layer1_0.conv1.weight, reference.layer1[0].conv1.weight)
    assert hasattr(layer1_0, "cbam")
    assert sum(1 for n, _ in bb.features.named_modules() if n.endswith(".cbam")) == 3 + 8 + 36 + 3
    assert _out(bb, 64).shape == (1, 2048, 2, 2)


def test_efficientnet_weights_load_into_the_cut_network(monkeypatch):
    from efficientnet_pytorch import EfficientNet

    full = EfficientNet.from_name("efficientnet-b0")
    monkeypatch.setattr(backbones, "_download_state_dict", lambda url: full.state_dict())
    bb = create_backbone("efficientnet-b0", pretrained=True)
    assert torch.equal(bb.features._conv_stem.weight, full._conv_stem.weight)
    assert len(bb.features._blocks) == len(full._blocks) - 4


@pytest.mark.parametrize("coarse,fine", [("mobilenet_v2", "mobilenet_v2_s16"),
                                         ("efficientnet-b0", "efficientnet-b0-s16")])
def test_stride16_keeps_every_weight_and_halves_the_stride(coarse, fine):
    a, b = create_backbone(coarse), create_backbone(fine)
    assert {k: v.shape for k, v in a.features.state_dict().items()} == \
        {k: v.shape for k, v in b.features.state_dict().items()}  # the same weight files load
    b.features.load_state_dict(a.features.state_dict())
    ya, yb = _out(a, 128), _out(b, 128)
    assert ya.shape[-1] == 4 and yb.shape[-1] == 8 and ya.shape[1] == yb.shape[1]


def test_mobilenet_v2_from_local_torchvision_file():
    path = shared("weights", "mobilenet_v2-b0353104.pth")
    bb = create_backbone("mobilenet_v2", pretrained_path=path)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(1, 3, 64, 64)
    bb.features.eval(), reference.eval()
    with torch.no_grad():
        assert torch.allclose(bb.features(x), reference.features(x))


def test_weights_file_variants(tmp_path):
    sd = torchvision.models.mobilenet_v2().state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    loaded = load_weights_file(tmp_path / "wrapped.pth")
    assert set(loaded) == set(sd)
    torch.save({"a": 1}, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError, match="expected a state dict"):
        load_weights_file(tmp_path / "bad.pth")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(PretrainedWeightsError, match="does not fit this backbone"):
        create_backbone("mobilenet_v2", pretrained_path=tmp_path / "resnet18.pth")
    with pytest.raises(FileNotFoundError, match="--pretrained-path .*missing.pth"):
        create_backbone("mobilenet_v2", pretrained_path=tmp_path / "missing.pth")


def test_failed_download_names_the_offline_options(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(PretrainedWeightsError) as info:
        create_backbone("mobilenet_v2", pretrained=True)
    message = str(info.value)
    assert "--pretrained-path" in message and "--no-pretrained" in message and "name resolution" in message


def test_timm_backbone_and_missing_timm(monkeypatch):
    pytest.importorskip("timm")
    bb = create_backbone("timm:resnet18")
    assert bb.channels == 512 and _out(bb, 64).shape == (1, 512, 2, 2)
    with pytest.raises(ValueError, match="timm has no model"):
        create_backbone("timm:no_such_model")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ImportError, match="pip install timm"):
        create_backbone("timm:resnet18")
