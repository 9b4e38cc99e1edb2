"""Training recipes: AdaBound, class weights, augmentations, CAL, test-time views, the baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_TRAIN, run_script
from PIL import Image

from ws_dan.data.augment import AUGMENTATIONS, NightAugment, build_train_transform, parse_augment
from ws_dan.models.attention import attention_crop
from ws_dan.models.wsdan import WSDAN, BaselineClassifier, ModelConfig, bilinear_attention_pooling
from ws_dan.training.engine import StepConfig, train_step
from ws_dan.training.optim import AdaBound, balanced_class_weights, build_optimizer


def _adabound_reference(p, grads, lr=1e-3, final_lr=0.1, gamma=1e-3, betas=(0.9, 0.999), eps=1e-8, wd=0.0):
    """AdaBound's update rule (Luo et al. 2019, Algorithm 2 / the authors' code), in numpy float64."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g + wd * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        step = lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t)
        eta = np.clip(step / (np.sqrt(v) + eps), final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t)))
        p = p - eta * m
    return p


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adabound_follows_its_update_rule(wd):
    rng = np.random.default_rng(0)
    start = rng.normal(size=(4, 3))
    grads = [rng.normal(size=(4, 3)) * 10 ** rng.uniform(-3, 1) for _ in range(30)]
    param = torch.nn.Parameter(torch.tensor(start, dtype=torch.float64))
    opt = AdaBound([param], lr=1e-2, final_lr=0.1, gamma=1e-2, weight_decay=wd)
    for g in grads:
        param.grad = torch.tensor(g)
        opt.step()
    expected = _adabound_reference(start, grads, lr=1e-2, final_lr=0.1, gamma=1e-2, wd=wd)
    assert np.allclose(param.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_adabound_minimises_and_builds_by_name():
    torch.manual_seed(0)
    x = torch.randn(64, 5)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1
    model = torch.nn.Linear(5, 1)
    opt = build_optimizer("adabound", model.parameters(), lr=1e-2)
    assert isinstance(opt, AdaBound)
    losses = []
    for _ in range(300):
        loss = F.mse_loss(model(x).squeeze(1), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.01 * losses[0]
    assert isinstance(build_optimizer("adamw", model.parameters(), lr=1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer("rmsprop", model.parameters(), lr=1e-3)


def test_balanced_class_weights_and_weighted_loss():
    targets = [0] * 6 + [1] * 3 + [2] * 1
    w = balanced_class_weights(targets, 3)
    assert torch.allclose(w, torch.tensor([10 / (3 * 6), 10 / (3 * 3), 10 / (3 * 1)]))
    logits, y = torch.randn(10, 3), torch.tensor(targets)
    cfg = StepConfig(class_weight=w)
    per_image = -F.log_softmax(logits, dim=1)[torch.arange(10), y] * w[y]
    assert torch.allclose(cfg.cross_entropy(logits, y), per_image.sum() / w[y].sum())
    assert balanced_class_weights([0, 0, 2], 4).tolist()[1] == 0.0  # a class with no image: weight 0


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    base = np.linspace(60, 230, 80 * 3).reshape(1, 80, 3).repeat(60, axis=0)
    return Image.fromarray(np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", AUGMENTATIONS)
def test_each_augmentation_keeps_shape_dtype_and_is_seeded(photo, name):
    transform = build_train_transform(48, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), [name])
    torch.manual_seed(7)
    a = transform(photo)
    torch.manual_seed(7)
    b = transform(photo)
    assert a.shape == (3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, b)
    outs = []
    for seed in range(6):
        torch.manual_seed(seed)
        outs.append(transform(photo))
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # it is random at all


def test_night_turns_day_into_night(photo):
    night = NightAugment(p=1.0)
    torch.manual_seed(0)
    out = night(photo)
    assert out.size == photo.size and out.mode == "RGB"
    day, dark = np.asarray(photo, dtype=float), np.asarray(out, dtype=float)
    assert dark.mean() < 0.6 * day.mean()
    torch.manual_seed(0)
    assert np.array_equal(np.asarray(night(photo)), np.asarray(out))
    assert NightAugment(p=0.0)(photo) is photo
    torch.manual_seed(1)
    no_glow = np.asarray(NightAugment(p=1.0, glow_p=0.0, noise=(0.0, 0.0))(photo), dtype=float)
    assert no_glow[..., 2].mean() / no_glow[..., 0].mean() > day[..., 2].mean() / day[..., 0].mean()  # cooler
    torch.manual_seed(1)
    glow = np.asarray(NightAugment(p=1.0, glow_p=1.0, noise=(0.0, 0.0))(photo), dtype=float)
    assert glow.mean() > no_glow.mean() + 1  # lamps add light


def test_parse_augment_and_unknown_names():
    assert parse_augment("flip, night") == ("flip", "night") and parse_augment("none") == ()
    with pytest.raises(ValueError, match="unknown augmentation"):
        build_train_transform(32, (0.5,) * 3, (0.5,) * 3, ["mixup"])


def _tiny(method="wsdan", seed=0):
    torch.manual_seed(seed)
    cls = BaselineClassifier if method == "baseline" else WSDAN
    return cls(ModelConfig(backbone="tiny", method=method, num_classes=3, num_attentions=4, image_size=32))


def test_counterfactual_effect_logits():
    model = _tiny().eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x, counterfactual=True)
        feats = model.features(x)
        ones = torch.ones_like(out.attention_maps)
        direct = out.logits - model.fc(bilinear_attention_pooling(feats, ones) * 100)
    assert torch.allclose(out.effect_logits, direct, atol=1e-5)  # evaluation: all-ones counterfactual
    model.train()
    torch.manual_seed(3)
    a = model(x, counterfactual=True).effect_logits
    torch.manual_seed(4)
    b = model(x, counterfactual=True).effect_logits
    assert not torch.allclose(a, b)  # training: random counterfactual maps
    assert model(x).effect_logits is None


def test_cal_adds_its_loss_term():
    model = _tiny()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    losses = {}
    for cal in (False, True):
        m = _tiny()
        opt = torch.optim.SGD(m.parameters(), lr=0.0)  # no update: both see the same network
        torch.manual_seed(1)
        losses[cal] = train_step(m, x, y, opt, StepConfig(cal=cal)).loss.item()
    assert losses[True] > losses[False] + 0.1  # the extra cross-entropy on effect logits (> 0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    history = [train_step(model, x, y, opt, StepConfig(cal=True)).loss.item() for _ in range(25)]
    assert np.mean(history[-5:]) < np.mean(history[:5])


def test_tta_views_average_and_probabilities_sum_to_one():
    model = _tiny().eval()
    x = torch.randn(3, 3, 32, 32)
    default, _ = model.predict_logits(x)
    explicit, _ = model.predict_logits(x, thetas=[0.1], flip=False)
    assert torch.equal(default, explicit)
    tta, _ = model.predict_logits(x, thetas=[0.3, 0.2, 0.1], flip=True)
    views = []
    with torch.no_grad():
        for v in (x, x.flip(-1)):
            out = model(v)
            mean = out.attention_maps.mean(dim=1, keepdim=True)
            views.append(out.logits)
            views += [model(attention_crop(v, mean, t, 0.05)).logits for t in (0.3, 0.2, 0.1)]
    assert torch.allclose(tta, torch.stack(views).mean(0), atol=1e-5)
    assert torch.allclose(torch.softmax(tta, 1).sum(1), torch.ones(3))


def test_baseline_model_shapes_and_cam():
    model = _tiny("baseline").eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 3) and out.features.shape == (2, 32) and out.attention_maps.shape == (2, 3, 4, 4)
    logits, cam = model.predict_logits(torch.randn(2, 3, 32, 32), flip=True)
    assert logits.shape == (2, 3) and cam.shape == (2, 1, 4, 4) and (cam >= 0).all()


def test_baseline_and_cal_through_the_scripts(tiny_data, tmp_path):
    common = ["--dd", str(tiny_data), "-e", "1", "--sf", "0", *TINY_TRAIN]
    row = run_script("train", [*common, "--sd", str(tmp_path / "base"), "--method", "baseline", "--optimizer",
                               "adabound", "--class-weights", "balanced", "--augment", "flip,random-erasing,night",
                               "--label-smoothing", "0.1"])
    assert "train_raw_top1" in row and "train_crop_top1" not in row
    row = run_script("train", [*common, "--sd", str(tmp_path / "cal"), "--cal", "--optimizer", "adamw"])
    assert "train_crop_top1" in row
    for run in ("base", "cal"):
        out = tmp_path / f"pred_{run}"
        metrics = run_script("predict", ["--dd", str(tiny_data / "test"), "--cp", str(tmp_path / run / "last.pt"),
                                         "--od", str(out), "-j", "0", "--no-progress", "--tta",
                                         "--save-attention", "2"])
        probs = np.load(out / "probabilities.npy")
        assert np.allclose(probs.sum(1), 1, atol=1e-5) and metrics["num_images"] == 12
        assert len(list((out / "attention").glob("*.png"))) == 2
    assert json.loads((tmp_path / "base" / "args.json").read_text())["resolved_model_config"]["method"] == "baseline"
