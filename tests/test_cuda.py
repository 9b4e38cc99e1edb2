"""Checks that need a CUDA GPU (skipped elsewhere); scripts/gpu_check.sh runs them on a GPU machine."""

from __future__ import annotations

import pytest
import torch

from ws_dan.models.attention import attention_crop, attention_drop
from ws_dan.models.wsdan import WSDAN, ModelConfig
from ws_dan.training.engine import StepConfig, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model():
    torch.manual_seed(0)
    return WSDAN(ModelConfig(backbone="tiny", num_classes=5, num_attentions=8, image_size=64))


def test_crop_and_drop_agree_with_the_cpu():
    g = torch.Generator().manual_seed(0)
    images, maps = torch.rand(8, 3, 64, 64, generator=g), torch.rand(8, 1, 8, 8, generator=g) ** 3
    theta = torch.linspace(0.3, 0.6, 8)
    for fn in (lambda i, m, t: attention_crop(i, m, t, 0.1), attention_drop):
        cpu = fn(images, maps, theta)
        gpu = fn(images.cuda(), maps.cuda(), theta.cuda()).cpu()
        assert torch.allclose(cpu, gpu, atol=1e-4)


def test_inference_agrees_with_the_cpu():
    model = _model().eval()
    x = torch.randn(4, 3, 64, 64)
    cpu, _ = model.predict_logits(x)
    gpu, _ = model.cuda().predict_logits(x.cuda())
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_mixed_precision_steps_learn(dtype, channels_last):
    if dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bf16 on this GPU")
    model = _model().cuda()
    x, y = torch.randn(8, 3, 64, 64, device="cuda"), torch.arange(8, device="cuda") % 5
    if channels_last:
        model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    losses = [train_step(model, x, y, opt, StepConfig(), scaler, dtype).loss.item() for _ in range(20)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-5:]) < sum(losses[:5])
    assert model.feature_centers.abs().sum() > 0
