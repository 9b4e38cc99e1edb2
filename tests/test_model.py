"""WS-DAN model, pooling, losses and the training step."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ws_dan.evaluation.inference import topk_correct
from ws_dan.models.attention import attention_crop
from ws_dan.models.losses import center_loss, update_centers
from ws_dan.models.wsdan import WSDAN, ModelConfig, bilinear_attention_pooling
from ws_dan.training.engine import StepConfig, train_step


def tiny_model(num_classes=3, m=4, seed=0) -> WSDAN:
    torch.manual_seed(seed)
    return WSDAN(ModelConfig(backbone="tiny", num_classes=num_classes, num_attentions=m, image_size=32))


def test_bap_equals_direct_per_map_computation():
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 6, 7, generator=g)
    attentions = torch.rand(2, 3, 6, 7, generator=g)
    pooled = bilinear_attention_pooling(features, attentions)
    for b in range(2):
        rows = []
        for k in range(3):
            f_k = (attentions[b, k] * features[b]).sum(dim=(1, 2)) / (6 * 7)  # g(A_k * F): average pooling
            rows.append(torch.sign(f_k) * torch.sqrt(f_k.abs() + 1e-12))
        direct = torch.cat(rows)
        direct = direct / direct.norm()
        assert torch.allclose(pooled[b], direct, atol=1e-6)
    assert torch.allclose(pooled.norm(dim=1), torch.ones(2))


def test_forward_shapes_and_feature_centers_buffer():
    model = tiny_model(num_classes=3, m=4)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 3)
    assert out.features.shape == (2, 4 * 32)
    assert out.attention_maps.shape == (2, 4, 4, 4)
    assert (out.attention_maps >= 0).all()  # ReLU
    assert "feature_centers" in model.state_dict()
    assert "feature_centers" not in dict(model.named_parameters())
    assert model.feature_centers.shape == (3, 128)


def test_predict_logits_average_raw_and_mean_attention_crop():
    model = tiny_model().eval()
    images = torch.randn(3, 3, 32, 32)
    logits, mean_att = model.predict_logits(images)
    with torch.no_grad():
        raw = model(images)
        mean = raw.attention_maps.mean(dim=1, keepdim=True)
        crop = model(attention_crop(images, mean, 0.1, 0.05)).logits
    assert torch.allclose(mean_att, mean)
    assert torch.allclose(logits, (raw.logits + crop) / 2, atol=1e-5)


def test_config_round_trip_and_alias():
    cfg = ModelConfig(backbone="efficientnetb3", num_classes=2, class_names=["a", "b"], num_attentions=8)
    assert cfg.backbone == "efficientnet-b3"
    again = ModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert ModelConfig.from_dict({**cfg.to_dict(), "added_by_a_future_version": 1}) == cfg


def test_center_loss_and_update_rule():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    centers = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    targets = torch.tensor([0, 0, 1])
    loss = center_loss(feats, centers[targets])
    direct = ((feats - centers[targets]) ** 2).sum(dim=1).mean()
    assert torch.allclose(loss, direct)
    update_centers(centers, feats, targets, beta=0.5)
    # class 0: mean(f - c) = (0.5, 0.5) -> c = 0.25; class 1: (1 - 2) * 0.5 -> c = 1.5
    assert torch.allclose(centers, torch.tensor([[0.25, 0.25], [1.5, 1.5]]))
    # order of the images in the batch does not matter
    c1, c2 = torch.zeros(2, 2), torch.zeros(2, 2)
    update_centers(c1, feats, targets, 0.05)
    update_centers(c2, feats[[2, 1, 0]], targets[[2, 1, 0]], 0.05)
    assert torch.equal(c1, c2)


def test_topk_correct_counts():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    targets = torch.tensor([1, 3])
    assert topk_correct(logits, targets, (1, 2, 3)).tolist() == [1.0, 2.0, 2.0]
    assert topk_correct(logits, targets, (5,)).tolist() == [2.0]  # k above the class count: all


def test_loss_falls_on_a_fixed_batch():
    model = tiny_model(num_classes=3, m=4, seed=0)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(12, 3, 32, 32, generator=g)
    targets = torch.arange(12) % 3
    images[targets == 1, 0, :8, :8] += 3  # learnable signal in a corner
    images[targets == 2, 1, -8:, -8:] += 3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = StepConfig()
    torch.manual_seed(0)

    def eval_loss():
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model.predict_logits(images)[0], targets).item()

    before = eval_loss()
    losses = []
    for _ in range(60):  # 30 left the eval loss (BN running statistics lag) at the threshold on some CPUs
        model.train()
        losses.append(train_step(model, images, targets, optimizer, cfg).loss.item())
    after = eval_loss()
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    assert after < 0.5 * before
    assert model.feature_centers.abs().sum() > 0  # centers moved


def test_detail_copy_model_sees_the_box_filtered_view_and_crops_from_the_copy():
    torch.manual_seed(0)
    config = ModelConfig(backbone="tiny", num_classes=3, num_attentions=4, image_size=32, detail_scale=2)
    assert config.load_size == 64
    model = WSDAN(config).eval()
    detail = torch.rand(2, 3, 64, 64)
    raw = F.avg_pool2d(detail, 2)
    logits, mean_attention = model.predict_logits(detail)
    out = model(raw)
    crops = attention_crop(raw, out.attention_maps.mean(dim=1, keepdim=True), config.eval_crop_theta,
                           config.eval_crop_padding, source=detail)
    assert crops.shape == raw.shape
    assert torch.allclose(logits, (out.logits + model(crops).logits) / 2, atol=1e-5)
    assert torch.allclose(mean_attention, out.attention_maps.mean(dim=1, keepdim=True))


def test_train_step_with_a_detail_copy_trains_at_the_input_size():
    torch.manual_seed(0)
    model = WSDAN(ModelConfig(backbone="tiny", num_classes=3, num_attentions=4, image_size=32, detail_scale=2))
    seen = []
    model.features.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[-2:])))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    result = train_step(model, torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 0]), opt, StepConfig())
    assert torch.isfinite(result.loss) and result.logits["crop"].shape == (4, 3)
    assert seen == [(32, 32), (32, 32)]  # the raw batch, then crop + drop together: all at the input size


def test_detail_scale_is_checked():


    for bad in (0, 5, 1.5, True):
        with pytest.raises(ValueError, match="detail_scale must be an integer from 1 to 4"):
            ModelConfig(backbone="tiny", num_classes=3, detail_scale=bad)
    with pytest.raises(ValueError, match="needs WS-DAN's own crop"):
        ModelConfig(backbone="tiny", num_classes=3, method="baseline", detail_scale=2)
    with pytest.raises(ValueError, match="needs WS-DAN's own crop"):
        ModelConfig(backbone="tiny", num_classes=3, crop_convention="grab", detail_scale=2)
    assert ModelConfig.from_dict({"backbone": "tiny", "num_classes": 3}).detail_scale == 1  # older checkpoints
