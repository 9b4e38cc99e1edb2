"""Conversion of other projects' WS-DAN checkpoints: keys load exactly, logits equal the old formula."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import run_script
from PIL import Image

from ws_dan.models.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint
from ws_dan.models.convert import ConversionError, convert_checkpoint, load_legacy_file

K, M = 5, 8  # classes, attention maps


def _grab_file(tmp_path, extra=None, fc_scale=1.0, calibrate=False):
    """A checkpoint laid out as the reference project saved it, with random values (EfficientNet-B0 for speed)."""
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(0)
    net = EfficientNet.from_name("efficientnet-b0", image_size=None)
    for module in net.modules():  # non-trivial BN statistics, so a mix-up of buffers would show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    if calibrate:  # BN statistics of real batches, so the features depend on the image (random init alone fades)
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average
        net.train()
        with torch.no_grad():
            net.extract_features(torch.randn(8, 3, 96, 96))
        net.eval()
    c = 192  # B0 channels before its last four blocks
    state = {f"module.net.{k}": v for k, v in net.state_dict().items()}  # saved from DataParallel
    state["module.attentions.weight"] = torch.randn(M, c, 1, 1) * 0.1
    state["module.fc.weight"] = torch.randn(K, M * c) * 0.01 * fc_scale  # logits of a trained size
    state["module.fc.bias"] = torch.randn(K)
    ckpt = {"epoch": 80, "save_dir": "x", "state_dict": state, "feature_center": torch.randn(K, M, c), **(extra or {})}
    torch.save(ckpt, tmp_path / "grab.ckpt")
    return tmp_path / "grab.ckpt", net.eval(), state


def _grab_formula(net, state, x):
    """The reference project's forward pass, written out from its code."""
    feats = net._swish(net._bn0(net._conv_stem(x)))
    for block in net._blocks[:-4]:
        feats = block(feats)
    attention = F.conv2d(feats, state["module.attentions.weight"])  # bare 1x1 conv
    b = x.shape[0]
    matrix = torch.stack([(feats * attention[:, i:i + 1]).mean(dim=(2, 3)) for i in range(M)], dim=1)  # GAP
    return matrix.view(b, -1) @ state["module.fc.weight"].T + state["module.fc.bias"]


def test_grab_conversion_matches_the_original_logits(tmp_path):
    path, net, state = _grab_file(tmp_path)
    model, ckpt = convert_checkpoint(path, "grab", backbone="efficientnet-b0", num_classes=K)
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, _grab_formula(net, state, x), atol=1e-4, rtol=1e-4)
    cfg = model.config
    assert (cfg.attention_bn, cfg.pool_normalize, cfg.fc_bias, cfg.logit_scale) == (False, False, True, 1.0)
    assert model.feature_centers.shape == (K, M * 192)
    assert torch.equal(model.feature_centers, torch.load(path, weights_only=True)["feature_center"].reshape(K, -1))


def _guyuc_file(tmp_path):
    torch.manual_seed(1)
    inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", None, "Conv2d_3b_1x1", "Conv2d_4a_3x3", None,
             "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]
    features = torch.nn.Sequential(*[getattr(inception, n) if n else torch.nn.MaxPool2d(3, 2) for n in names]).eval()
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["attentions.conv.weight"] = torch.randn(M, 768, 1, 1) * 0.05
    state["attentions.bn.weight"] = torch.rand(M) + 0.5
    state["attentions.bn.bias"] = torch.randn(M) * 0.1
    state["attentions.bn.running_mean"] = torch.randn(M) * 0.1
    state["attentions.bn.running_var"] = torch.rand(M) + 0.5
    state["attentions.bn.num_batches_tracked"] = torch.tensor(100)
    state["fc.weight"] = torch.randn(K, M * 768) * 0.01
    logs = {"epoch": 160, "val_acc": np.float64(93.1)}  # numpy scalars are common in old logs
    torch.save({"logs": logs, "state_dict": state, "feature_center": torch.randn(K, M * 768)}, tmp_path / "g.pth")
    return tmp_path / "g.pth", features, state


def _guyuc_formula(features, state, x):
    feats = features(x)
    a = F.conv2d(feats, state["attentions.conv.weight"])
    a = F.relu(F.batch_norm(a, state["attentions.bn.running_mean"], state["attentions.bn.running_var"],
                            state["attentions.bn.weight"], state["attentions.bn.bias"], False, 0.0, 0.001))
    h, w = feats.shape[-2:]
    matrix = (torch.einsum("imjk,injk->imn", a, feats) / float(h * w)).view(x.shape[0], -1)
    matrix = torch.sign(matrix) * torch.sqrt(torch.abs(matrix) + 1e-12)
    matrix = F.normalize(matrix, dim=-1)
    return (matrix * 100.0) @ state["fc.weight"].T


def test_guyuc_conversion_matches_the_original_logits(tmp_path):
    path, features, state = _guyuc_file(tmp_path)
    model, _ = convert_checkpoint(path, "guyuc", class_names=[f"c{i}" for i in range(K)])
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, _guyuc_formula(features, state, x), atol=1e-4, rtol=1e-4)
    assert model.config.backbone == "inception" and model.config.mean == (0.485, 0.456, 0.406)
    assert model.config.class_names == [f"c{i}" for i in range(K)]


def test_script_writes_a_checkpoint_predict_can_use(tmp_path):
    path, net, state = _grab_file(tmp_path)
    (tmp_path / "names.txt").write_text("\n".join(f"car {i}" for i in range(K)) + "\n")
    out = run_script("convert_checkpoint", ["--from", "grab", "--input", str(path), "--output",
                                            str(tmp_path / "new.pt"), "--num-classes", str(K), "--class-names",
                                            str(tmp_path / "names.txt"), "-m", "efficientnet-b0"])
    ckpt = load_checkpoint(out)  # weights_only=True
    assert ckpt["converted_from"]["format"] == "grab" and ckpt["config"]["class_names"][0] == "car 0"
    model = model_from_checkpoint(out)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x).logits, _grab_formula(net, state, x), atol=1e-4, rtol=1e-4)


def test_clear_errors(tmp_path, capsys):
    path, _, _ = _grab_file(tmp_path)
    with pytest.raises(ConversionError, match="not a 'guyuc' WS-DAN checkpoint"):
        convert_checkpoint(path, "guyuc")
    with pytest.raises(ConversionError, match="classifier has 5 classes, --num-classes says 196"):
        convert_checkpoint(path, "grab", backbone="efficientnet-b0", num_classes=196)
    with pytest.raises(SystemExit):  # the default backbone (B3) does not fit a B0 checkpoint: names the keys
        run_script("convert_checkpoint", ["--from", "grab", "--input", str(path), "--output", str(tmp_path / "x.pt")])
    err = capsys.readouterr().err
    assert "weights do not fit the model" in err and "grab.ckpt" in err


class _Custom:
    pass


def test_pickled_objects_need_trust(tmp_path):
    path, _, _ = _grab_file(tmp_path, extra={"optimizer_factory": _Custom()})
    with pytest.raises(ConversionError, match="--trust-pickle"):
        load_legacy_file(path)
    assert "state_dict" in load_legacy_file(path, trust_pickle=True)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from ws_dan.models.checkpoint import save_checkpoint
    from ws_dan.models.wsdan import WSDAN, ModelConfig

    torch.manual_seed(0)
    model = WSDAN(ModelConfig(backbone="tiny", num_classes=3, class_names=["a", "b", "c"], num_attentions=4,
                              image_size=48))
    for module in model.modules():  # trained-looking batch-norm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("export") / "tiny.pt"
    save_checkpoint(path, {"config": model.config.to_dict(), "model": model.state_dict()})
    return path


def test_onnx_export_matches_pytorch_for_any_batch(tiny_checkpoint, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    from ws_dan.models.export import InferenceModel

    result = run_script("export", ["--ckpt-path", str(tiny_checkpoint), "--format", "onnx", "--output",
                                   str(tmp_path / "m.onnx")])
    assert result["max_abs_diff"] < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    reference = InferenceModel(model_from_checkpoint(tiny_checkpoint))
    for n in (1, 5):
        x = torch.rand(n, 3, 48, 48)
        p = session.run(None, {"images": x.numpy()})[0]
        assert p.shape == (n, 3) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
        assert np.abs(p - reference(x).numpy()).max() < 1e-5
    with pytest.raises(CheckpointError, match=r"m\.onnx: an ONNX export of a model, not a checkpoint; pass the \.pt"):
        load_checkpoint(tmp_path / "m.onnx")


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_torchscript_export(tiny_checkpoint, tmp_path):
    result = run_script("export", ["--ckpt-path", str(tiny_checkpoint), "--format", "torchscript", "--output",
                                   str(tmp_path / "m.ts")])
    assert result["max_abs_diff"] < 1e-5
    loaded = torch.jit.load(str(tmp_path / "m.ts"))
    with torch.no_grad():
        assert loaded(torch.rand(4, 3, 48, 48)).shape == (4, 3)


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_an_export_given_as_a_checkpoint_is_named_and_the_checkpoint_suggested(tiny_checkpoint, tmp_path, capsys,
                                                                               recwarn):
    run_script("export", ["--ckpt-path", str(tiny_checkpoint), "--format", "torchscript", "--output",
                          str(tmp_path / "m.ts")])
    Image.new("RGB", (40, 30)).save(tmp_path / "photo.jpg")
    recwarn.clear()
    with pytest.raises(SystemExit):
        run_script("predict", [str(tmp_path / "photo.jpg"), "--ckpt-path", str(tmp_path / "m.ts"), "--output-dir",
                               str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'm.ts'}: a TorchScript export of a model, not a checkpoint; pass the .pt "
                   "checkpoint that train.py wrote (last.pt or best.pt), which export.py made this file from")
    assert "weights_only" not in err and not [w for w in recwarn if "TorchScript" in str(w.message)]
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------
# The reference pipeline end to end: LANCZOS resize, raw + the reference crop, averaged


def _grab_reference_logits(net, state, pil_images, size):
    """wsdan_predict.py of sun-yitao/GrabAIChallenge written out: PIL LANCZOS resize to (size, size), ImageNet
    normalisation, the model's min-max normalised mean attention map, F.upsample_bilinear (align_corners=True),
    > 0.5, torch.nonzero min/max, X[..., h_min:h_max, w_min:w_max] upsampled back with align_corners=True, the
    raw and crop logits averaged. Image by image, numpy/PIL for the preprocessing, as the reference did."""
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    out = []
    for image in pil_images:
        arr = np.asarray(image.resize((size, size), Image.LANCZOS), dtype=np.float64) / 255.0
        x = torch.from_numpy(((arr - mean) / std).transpose(2, 0, 1).copy()).float()[None]
        y_raw = _grab_formula(net, state, x)
        feats = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks[:-4]:
            feats = block(feats)
        attention = F.conv2d(feats, state["module.attentions.weight"]).mean(dim=1, keepdim=True)
        flat = attention.view(1, -1)
        attention = ((flat - flat.min()) / (flat.max() - flat.min())).view_as(attention)
        mask = F.interpolate(attention, size=(size, size), mode="bilinear", align_corners=True) > 0.5
        nz = torch.nonzero(mask[0, 0])
        h0, h1, w0, w1 = nz[:, 0].min(), nz[:, 0].max(), nz[:, 1].min(), nz[:, 1].max()
        crop = F.interpolate(x[:, :, h0:h1, w0:w1], size=(size, size), mode="bilinear", align_corners=True)
        out.append((y_raw + _grab_formula(net, state, crop)) / 2)
    return torch.cat(out)


def test_converted_grab_checkpoint_predicts_as_the_reference_pipeline(tmp_path):
    from ws_dan.data.datasets import build_transform

    path, net, state = _grab_file(tmp_path, fc_scale=0.05, calibrate=True)
    _, ckpt = convert_checkpoint(path, "grab", backbone="efficientnet-b0", num_classes=K, image_size=96)
    cfg = ckpt["config"]
    assert (cfg["resize_interpolation"], cfg["crop_convention"]) == ("lanczos", "grab")  # recorded in the file
    from ws_dan.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "grab.pt", ckpt)
    model = model_from_checkpoint(tmp_path / "grab.pt")
    rng = np.random.default_rng(0)
    images = []
    for w, h in [(173, 121), (90, 140), (260, 200)]:  # odd sizes: the resize filter matters
        base = rng.uniform(0, 255, (h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC), dtype=np.float64)
        images.append(Image.fromarray(np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)))
    transform = build_transform(96, model.config.mean, model.config.std, False,
                                interpolation=model.config.resize_interpolation)
    with torch.no_grad():
        ours, _ = model.predict_logits(torch.stack([transform(im) for im in images]))
        reference = _grab_reference_logits(net, state, images, 96)
    assert reference.std(dim=0).min() > 0.05  # the images get different logits: the test can see a difference
    assert torch.allclose(ours, reference, atol=1e-4, rtol=0), (ours - reference).abs().max()
    # the toolkit's own convention gives other numbers on the same model: the recorded convention matters
    model.config.crop_convention, model.config.resize_interpolation = "wsdan", "bilinear"
    plain = build_transform(96, model.config.mean, model.config.std, False)
    with torch.no_grad():
        other, _ = model.predict_logits(torch.stack([plain(im) for im in images]))
    assert (other - reference).abs().max() > 1e-3


def test_older_checkpoints_keep_the_toolkit_convention(tiny_checkpoint):
    state = load_checkpoint(tiny_checkpoint)
    del state["config"]["resize_interpolation"], state["config"]["crop_convention"]  # as written before
    model = model_from_checkpoint(state)
    assert (model.config.resize_interpolation, model.config.crop_convention) == ("bilinear", "wsdan")


def test_grab_crop_edge_cases_do_not_fail():
    from ws_dan.models.attention import grab_attention_boxes, grab_attention_crop

    images = torch.rand(2, 3, 16, 16)
    maps = torch.zeros(2, 1, 4, 4)
    maps[1, 0, 1, 2] = 1.0  # one hot cell: a small box
    boxes = grab_attention_boxes(maps, (16, 16), 0.5)
    assert boxes[0].tolist() == [0.0, 0.0, 16.0, 16.0]  # constant map: the whole image (the reference divided by 0)
    x0, y0, x1, y1 = boxes[1].tolist()
    assert x1 > x0 and y1 > y0
    crops = grab_attention_crop(images, maps, 0.5)
    assert crops.shape == images.shape and torch.isfinite(crops).all()
    assert torch.allclose(crops[0], images[0], atol=1e-5)  # whole image, align_corners=True: the identity


def test_predict_uses_the_recorded_lanczos_resize():
    from ws_dan.data.datasets import build_transform

    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (61, 83, 3), dtype=np.uint8))
    lanczos = build_transform(32, (0, 0, 0), (1, 1, 1), False, interpolation="lanczos")(image)
    expected = torch.from_numpy(np.asarray(image.resize((32, 32), Image.LANCZOS), dtype=np.float32) / 255)
    assert torch.allclose(lanczos, expected.permute(2, 0, 1), atol=1e-6)
    bilinear = build_transform(32, (0, 0, 0), (1, 1, 1), False)(image)
    assert not torch.allclose(lanczos, bilinear, atol=1e-3)
