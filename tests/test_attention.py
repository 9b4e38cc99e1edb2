"""Attention crop / drop / sampling: invariants and equality with direct per-image computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ws_dan.models.attention import (
    attention_crop,
    attention_crop_boxes,
    attention_drop,
    crop_and_resize,
    normalized_attention,
    random_theta,
    raw_view,
    sample_attention_maps,
)


def _maps(batch=6, h=7, w=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.rand(batch, 1, h, w, generator=g) ** 4  # peaky, like trained attention
    return maps


def test_crop_boxes_contain_every_above_threshold_pixel_and_stay_inside():
    maps = _maps()
    size = (48, 64)
    for theta in (0.1, 0.4, 0.6, 0.9):
        for pad in (0.0, 0.1):
            boxes = attention_crop_boxes(maps, size, theta, pad)
            mask = normalized_attention(maps, size)[:, 0] > theta
            for b in range(maps.shape[0]):
                x0, y0, x1, y1 = boxes[b].tolist()
                assert 0 <= x0 < x1 <= size[1] and 0 <= y0 < y1 <= size[0]
                ys, xs = torch.nonzero(mask[b], as_tuple=True)
                assert len(ys) > 0
                assert x0 <= xs.min() and xs.max() + 1 <= x1 and y0 <= ys.min() and ys.max() + 1 <= y1
                # tight: the unpadded box is exactly the mask's bounding box
                if pad == 0.0:
                    assert (x0, y0, x1, y1) == (xs.min().item(), ys.min().item(), xs.max().item() + 1,
                                                ys.max().item() + 1)


def test_crop_box_padding_is_a_fraction_of_the_image_and_clipped():
    maps = torch.zeros(1, 1, 10, 10)
    maps[0, 0, 4:6, 4:6] = 1.0  # a block in the middle
    tight = attention_crop_boxes(maps, (100, 200), 0.5, 0.0)[0]
    padded = attention_crop_boxes(maps, (100, 200), 0.5, 0.1)[0]
    assert torch.allclose(padded, torch.stack([tight[0] - 20, tight[1] - 10, tight[2] + 20, tight[3] + 10]))
    corner = torch.zeros(1, 1, 10, 10)
    corner[0, 0, 0, 0] = 1.0
    box = attention_crop_boxes(corner, (100, 100), 0.5, 0.2)[0]
    assert box[0] == 0 and box[1] == 0  # clipped at the image edge


def test_zero_attention_keeps_the_whole_image():
    images = torch.randn(3, 3, 32, 40)
    maps = torch.zeros(3, 1, 4, 5)
    boxes = attention_crop_boxes(maps, (32, 40), 0.5, 0.1)
    assert torch.equal(boxes, torch.tensor([[0.0, 0.0, 40.0, 32.0]] * 3))
    assert torch.allclose(attention_crop(images, maps, 0.5, 0.1), images, atol=1e-5)
    assert torch.equal(attention_drop(images, maps, 0.3), images)  # nothing above threshold: nothing erased


def test_crop_and_resize_matches_roi_align_sampling():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 30, 50, generator=g)
    boxes = torch.tensor([[0.0, 0.0, 50.0, 30.0], [10.0, 5.0, 30.0, 25.0], [3.5, 2.25, 17.0, 11.0],
                          [20.0, 0.0, 50.0, 12.0]])
    ours = crop_and_resize(images, boxes, (24, 24))
    rois = torch.cat([torch.arange(4.0).unsqueeze(1), boxes], dim=1)
    ref = roi_align(images, rois, output_size=(24, 24), spatial_scale=1.0, sampling_ratio=1, aligned=True)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_crop_and_resize_integer_box_matches_interpolate_of_the_slice():
    images = torch.rand(1, 3, 40, 40)
    # a crop scaled by exactly 2: every sample lies inside the slice, so both methods read the same pixels
    box = torch.tensor([[8.0, 4.0, 28.0, 24.0]])
    ours = crop_and_resize(images, box, (40, 40))
    ref = F.interpolate(images[:, :, 4:24, 8:28], size=(40, 40), mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # the slice's border is clamped by interpolate
    assert torch.allclose(ours[inner], ref[inner], atol=1e-5)


def test_batched_crop_equals_per_image_crop():
    images = torch.rand(5, 3, 32, 32)
    maps = _maps(batch=5, h=4, w=4, seed=3)
    theta = torch.tensor([0.4, 0.45, 0.5, 0.55, 0.6])
    batched = attention_crop(images, maps, theta, 0.1)
    for b in range(5):
        single = attention_crop(images[b:b + 1], maps[b:b + 1], float(theta[b]), 0.1)
        assert torch.allclose(batched[b:b + 1], single, atol=1e-6)


def test_drop_erases_exactly_the_above_threshold_region():
    images = torch.rand(6, 3, 28, 36) + 0.5  # strictly positive, so erased pixels are recognisable
    maps = _maps(batch=6, h=7, w=9, seed=5)
    theta = torch.linspace(0.2, 0.5, 6)
    dropped = attention_drop(images, maps, theta)
    norm = normalized_attention(maps, (28, 36))
    erase = (norm > theta.view(-1, 1, 1, 1)).expand_as(images)
    assert erase.any() and (~erase).any()
    assert torch.equal(dropped[erase], torch.zeros_like(dropped[erase]))
    assert torch.equal(dropped[~erase], images[~erase])


def test_sampling_follows_attention_mass():
    maps = torch.zeros(2, 3, 4, 4)
    maps[0, 2] = 1.0  # all mass on map 2
    maps[1, 0], maps[1, 1] = 1.0, 3.0  # 1 : 3
    g = torch.Generator().manual_seed(0)
    picks = torch.stack([sample_attention_maps(maps, 2, generator=g) for _ in range(2000)])  # (T, B, 2, h, w)
    assert picks.shape == (2000, 2, 2, 4, 4)
    assert torch.all(picks[:, 0] == 1.0)  # image 0 always gets map 2
    frac_map1 = (picks[:, 1, :, 0, 0] == 3.0).float().mean().item()
    assert abs(frac_map1 - 0.75) < 0.03
    zero = sample_attention_maps(torch.zeros(3, 5, 2, 2), 2)  # all-zero maps: uniform pick, no error
    assert zero.shape == (3, 2, 2, 2)


@pytest.mark.parametrize("low,high", [(0.4, 0.6), (0.2, 0.5)])
def test_random_theta_range(low, high):
    t = random_theta(1000, low, high, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert t.shape == (1000,) and t.min() >= low and t.max() < high and t.std() > 0.05


# ---------------------------------------------------------------------------------------------------------------
# Crops from the detail copy: pixels the raw view does not have


def _fine_pattern_photo(size=64):
    """A (1, 3, 2s, 2s) detail copy: grey everywhere, with a one-pixel checkerboard in the top-left quarter.
    Box-filtered to s px (the raw view) every 2 x 2 block of the checkerboard averages to the same grey."""
    detail = torch.full((1, 3, 2 * size, 2 * size), 0.5)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    detail[..., :size, :size] = ((ys + xs) % 2).float()
    return detail


def test_a_crop_from_the_detail_copy_shows_a_pattern_the_raw_view_cannot():
    size = 64
    detail = _fine_pattern_photo(size)
    raw = raw_view(detail, 2)
    assert raw.shape[-1] == size and raw[..., : size // 2, : size // 2].std() < 1e-6  # invisible at input size
    attention = torch.zeros(1, 1, 8, 8)
    attention[..., :4, :4] = 1.0  # the part: the top-left quarter
    from_raw = attention_crop(raw, attention, 0.5, 0.0)
    from_detail = attention_crop(raw, attention, 0.5, 0.0, source=detail)
    assert from_raw.shape == from_detail.shape == raw.shape
    assert from_raw.std() < 1e-6  # an enlargement of grey is grey
    inner = from_detail[..., 4:-4, 4:-4]  # away from the box edge, where the box meets the plain grey
    assert set(inner.unique().tolist()) == {0.0, 1.0}  # the box (32 raw px = 64 detail px) is sampled 1:1
    assert inner.std() > 0.45


def test_a_crop_of_the_whole_image_from_the_detail_copy_is_the_raw_view():
    g = torch.Generator().manual_seed(0)
    detail = torch.rand(3, 3, 96, 128, generator=g)
    raw = raw_view(detail, 2)
    assert torch.allclose(raw, F.avg_pool2d(detail, 2))
    nothing = torch.zeros(3, 1, 6, 8)  # an empty mask crops to the whole image
    assert torch.allclose(attention_crop(raw, nothing, 0.5, 0.1, source=detail), raw, atol=1e-6)
    assert torch.allclose(attention_crop(raw, nothing, 0.5, 0.1), raw, atol=1e-6)  # and without the copy, as before


def test_raw_view_is_the_identity_at_scale_1_and_refuses_a_size_that_does_not_divide():
    x = torch.rand(2, 3, 10, 10)
    assert raw_view(x, 1) is x
    with pytest.raises(ValueError, match=r"\(10, 10\) px is not a multiple of the scale 3"):
        raw_view(x, 3)
