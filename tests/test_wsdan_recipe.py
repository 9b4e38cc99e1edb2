"""The knobs of the WS-DAN recipe: stride-16 MobileNetV2, head/backbone learning rates, warm-up, the
logit scale, when the attention views start, and the divergence guard."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil

import pytest
import torch
from conftest import TINY_TRAIN, run_script, script, shared

from ws_dan.models.backbones import create_backbone
from ws_dan.models.checkpoint import load_checkpoint
from ws_dan.models.wsdan import WSDAN, ModelConfig
from ws_dan.training import recipe
from ws_dan.training.distributed import DistInfo
from ws_dan.training.engine import StepConfig, TrainingDiverged, _DivergenceGuard, train_step
from ws_dan.training.optim import LinearWarmup, adaptive_clip_grad_, clip_gradients_, param_groups, unitwise_norm


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_mobilenet_v2_s16_doubles_the_map_and_keeps_every_weight():
    torch.manual_seed(0)
    s32 = create_backbone("mobilenet_v2")
    s16 = create_backbone("mobilenet_v2_s16")
    assert s16.channels == s32.channels == 1280
    # the same parameters, so the ImageNet file of mobilenet_v2 loads strictly
    s16.features.load_state_dict(s32.features.state_dict(), strict=True)
    x = torch.randn(1, 3, 96, 96)
    s32.features.eval(), s16.features.eval()
    with torch.no_grad():
        a, b = s32.features(x), s16.features(x)
    assert a.shape == (1, 1280, 3, 3) and b.shape == (1, 1280, 6, 6)
    f14 = create_backbone("mobilenet_v2_f14")
    assert f14.channels == 96 and f14.features(x).shape == (1, 96, 6, 6)


def test_mobilenet_v2_s16_features_stay_imagenet_features():
    weights = shared("weights", "mobilenet_v2-b0353104.pth")
    s32 = create_backbone("mobilenet_v2", pretrained_path=weights).features.eval()
    s16 = create_backbone("mobilenet_v2_s16", pretrained_path=weights).features.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = s32(x).mean(dim=(2, 3)), s16(x).mean(dim=(2, 3))
    # dilation keeps each layer's receptive field, so the pooled descriptors barely change (a random
    # re-initialisation would give a correlation near 0)
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.9


def _wsdan(logit_scale=100.0):
    torch.manual_seed(0)
    return WSDAN(ModelConfig(backbone="tiny", num_classes=3, num_attentions=4, image_size=32, logit_scale=logit_scale))


def test_param_groups_split_backbone_and_new_layers():
    model = _wsdan()
    groups = param_groups(model, 0.01, head_lr_scale=0.1)
    assert [g["name"] for g in groups] == ["backbone", "head"]
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    named = dict(model.named_parameters())
    backbone = {id(p) for p in groups[0]["params"]}
    head = {id(p) for p in groups[1]["params"]}
    assert backbone == {id(p) for n, p in named.items() if n.startswith("features.")}
    assert head == {id(named[n]) for n in ("attentions.conv.weight", "attentions.bn.weight", "attentions.bn.bias",
                                           "fc.weight")}
    one = param_groups(model, 0.01, head_lr_scale=1.0)
    assert len(one) == 1 and len(one[0]["params"]) == len(named)
    with pytest.raises(ValueError, match="positive"):
        param_groups(model, 0.01, head_lr_scale=0)


def test_linear_warmup_ramps_the_step_and_leaves_the_schedule_alone():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    LinearWarmup(opt, warmup_steps=4)
    moves = []
    for _epoch in range(2):
        for _ in range(3):
            before = p.item()
            p.grad = torch.ones(1)
            opt.step()
            moves.append(before - p.item())
            assert opt.param_groups[0]["lr"] == pytest.approx(sched.get_last_lr()[0])  # restored after the step
        sched.step()
    cos1 = 0.1 * (1 + math.cos(math.pi / 4)) / 2  # cosine's rate in the second epoch
    assert moves == pytest.approx([0.025, 0.05, 0.075, cos1, cos1, cos1])
    # resuming after 2 steps continues the ramp where it stopped
    q = torch.nn.Parameter(torch.zeros(1))
    opt2 = torch.optim.SGD([q], lr=0.1)
    LinearWarmup(opt2, warmup_steps=4, start_step=2)
    q.grad = torch.ones(1)
    opt2.step()
    assert -q.item() == pytest.approx(0.075)


def test_logit_scale_scales_the_logits():
    x = torch.randn(2, 3, 32, 32)
    a, b = _wsdan(100.0).eval(), _wsdan(10.0).eval()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert torch.allclose(a(x).logits, 10 * b(x).logits, atol=1e-5)


def test_raw_only_step_skips_the_attention_views():
    model = _wsdan()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    calls = []
    hook = model.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    out = train_step(model, x, y, opt, StepConfig(attention_views=False))
    assert set(out.logits) == {"raw"} and calls == [4]  # one forward of the raw batch only
    assert model.feature_centers.abs().sum() > 0  # the centers still move
    calls.clear()
    out = train_step(model, x, y, opt, StepConfig(attention_views=True))
    hook.remove()
    assert set(out.logits) == {"raw", "crop", "drop"} and calls == [4, 8]


def test_adaptive_clip_grad_matches_the_formula_unit_by_unit():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3, 2, 2))
    w.grad = torch.randn(4, 3, 2, 2) * torch.tensor([0.01, 1.0, 10.0, 0.0]).view(4, 1, 1, 1)
    b = torch.nn.Parameter(torch.full((5,), 1e-5))  # a tiny vector: its norm is floored at eps
    b.grad = torch.ones(5)
    g_w, g_b, lam = w.grad.clone(), b.grad.clone(), 0.1
    adaptive_clip_grad_([w, b], lam)
    for i in range(4):  # each output unit separately: G_i * min(1, lam * max(|W_i|, eps) / |G_i|)
        wn, gn = max(w[i].norm().item(), 1e-3), g_w[i].norm().item()
        factor = 1.0 if gn == 0 or gn / wn <= lam else lam * wn / gn
        assert torch.allclose(w.grad[i], g_w[i] * factor, atol=1e-6)
    assert w.grad[0].equal(g_w[0]) and not w.grad[2].equal(g_w[2])  # the small one untouched, the big one cut
    assert b.grad.norm().item() == pytest.approx(lam * 1e-3, rel=1e-4)
    assert torch.allclose(b.grad, g_b * lam * 1e-3 / g_b.norm(), atol=1e-9)
    assert unitwise_norm(torch.tensor([3.0, 4.0])).item() == 5.0


def test_clip_gradients_modes():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=1.0)
    p.grad = torch.full((3,), 10.0)
    clip_gradients_(opt, "agc", 0.0)  # 0: nothing
    assert p.grad.equal(torch.full((3,), 10.0))
    clip_gradients_(opt, "norm", 2.0)
    assert p.grad.norm().item() == pytest.approx(2.0)
    with pytest.raises(ValueError, match="clip mode"):
        clip_gradients_(opt, "value", 1.0)


def test_clip_gradients_reports_the_norm_before_clipping():
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=1.0)
    for mode, value, clipped in (("norm", 0.0, 0.0), ("norm", 100.0, 0.0), ("norm", 2.0, 1.0), ("agc", 0.1, 1.0),
                                 ("agc", 1e3, 0.0), ("step", 2.0, 1.0)):
        p.grad = torch.full((4,), 3.0)  # norm 6
        stats = clip_gradients_(opt, mode, value)
        assert stats.norm.item() == pytest.approx(6.0) and stats.clipped.item() == clipped, (mode, value)


def test_step_clipping_caps_lr_times_the_gradient_at_every_rate():
    """G <- G * min(1, tau / ||(lr_g G_g)_g||): the step lr x G is capped at tau whatever the lr, per group."""
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.zeros(5)), torch.nn.Parameter(torch.zeros(3))
    for lr_a, lr_b in ((0.01, 0.01), (0.05, 0.5), (1e-4, 1e-4)):
        opt = torch.optim.SGD([{"params": [a], "lr": lr_a}, {"params": [b], "lr": lr_b}])
        ga, gb = torch.randn(5) * 10, torch.randn(3) * 10
        a.grad, b.grad = ga.clone(), gb.clone()
        step = math.sqrt((lr_a * ga.norm().item()) ** 2 + (lr_b * gb.norm().item()) ** 2)  # the SGD step's norm
        tau = 0.1
        stats = clip_gradients_(opt, "step", tau)
        factor = min(1.0, tau / step)
        assert torch.allclose(a.grad, ga * factor, rtol=1e-5) and torch.allclose(b.grad, gb * factor, rtol=1e-5)
        new_step = math.sqrt((lr_a * a.grad.norm().item()) ** 2 + (lr_b * b.grad.norm().item()) ** 2)
        assert new_step == pytest.approx(min(step, tau), rel=1e-4)
        assert stats.clipped.item() == float(step > tau)
    opt = torch.optim.SGD([a], lr=0.01)  # a step below the cap is left exactly as it was
    a.grad = torch.full((5,), 0.5)
    clip_gradients_(opt, "step", 1.0)
    assert a.grad.equal(torch.full((5,), 0.5))


def test_training_metrics_hold_the_gradient_norm_and_the_clipped_share():
    """train_one_epoch's result: the mean and largest global norm over its optimizer steps (measured before
    clipping, equal to a direct computation) and the % of steps clipped; the epoch's log line prints them."""
    from ws_dan.training.engine import _Meter
    from ws_dan.training.optim import ClipStats

    meter = _Meter(["raw"], torch.device("cpu"))
    y = torch.tensor([0, 1])
    for norm, clipped in ((2.0, 1.0), (4.0, 0.0), (math.inf, 0.0), (6.0, 1.0)):  # inf: an fp16 overflow, skipped
        meter.update(torch.tensor(1.0), {"raw": torch.randn(2, 3)}, y, ClipStats(torch.tensor(norm),
                                                                                 torch.tensor(clipped)))
    meter.update(torch.tensor(1.0), {"raw": torch.randn(2, 3)}, y)  # an accumulation micro-step: no optimizer step
    r = meter.result()
    assert (r["grad_norm"], r["grad_norm_max"], r["clipped"]) == (4.0, 6.0, 50.0)

    # A real step: the reported norm is the global norm of the gradients the step computed.
    torch.manual_seed(0)
    model = _wsdan()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay, the gradients can be recomputed
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    torch.manual_seed(1)
    result = train_step(model, x, y, opt, StepConfig())
    assert result.grad is not None and result.grad.clipped.item() == 0.0
    assert result.grad.norm.item() > 0


def test_the_step_clips_before_the_update():
    """With AGC at lambda the update of every weight row is at most lr x lambda x its norm, whatever the lr."""
    torch.manual_seed(0)
    model = _wsdan()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=100.0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    train_step(model, x, y, opt, StepConfig(clip_grad=0.01, clip_mode="agc"))
    for n, p in model.named_parameters():
        if p.ndim < 2:
            continue
        change = unitwise_norm(p.detach() - before[n])
        bound = 100.0 * 0.01 * unitwise_norm(before[n]).clamp_min(1e-3)
        assert bool((change <= bound * 1.001 + 1e-6).all()), n


def test_divergence_guard_limits():
    guard = _DivergenceGuard(5.0, epoch=3, check_every=2)
    guard.update(torch.tensor(2.0), num_classes=20, step=0)  # limit 5 x max(2, ln 20 = 3.0) = 15
    assert guard.limit == pytest.approx(5 * math.log(20))
    guard.update(torch.tensor(14.0), 20, step=1)  # below the limit: fine
    guard.update(torch.tensor(16.0), 20, step=2)
    with pytest.raises(TrainingDiverged, match=r"epoch 3, step 3: loss 16, above the limit 14\.98"):
        guard.check()
    nan_guard = _DivergenceGuard(5.0, epoch=1)
    nan_guard.update(torch.tensor(float("nan")), 20, step=0)
    with pytest.raises(TrainingDiverged, match="step 1: loss non-finite"):
        nan_guard.check()
    off = _DivergenceGuard(0.0, epoch=1)
    off.update(torch.tensor(float("inf")), 20, step=0)
    off.check()  # disabled: no error


def test_huge_learning_rate_stops_with_one_line(tiny_data, tmp_path, capsys):
    argv = ["--dd", str(tiny_data), "--sd", str(tmp_path / "run"), "-e", "2", *TINY_TRAIN, "--lr", "1e6"]
    with pytest.raises(SystemExit) as exc:
        run_script("train", argv)
    assert exc.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()  # the log's info lines, then the error
    err = lines[-1]
    assert [line for line in lines if "error" in line or "Traceback" in line] == [err]
    assert err.startswith("error: training diverged at epoch 1, step ")
    assert ("with --lr 1e+06 (new layers x1, warm-up 0 epochs, gradient clipping step 0.15); try a 3-10x smaller "
            "--lr" in err) and "--clip-mode step --clip-grad 0.05" in err
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing from the diverged epoch is saved


def test_recipe_flags_reach_the_model_the_optimizer_and_the_metrics(tiny_data, tmp_path):
    save = tmp_path / "run"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "2", *TINY_TRAIN, "--lr", "0.01",
                         "--head-lr-scale", "0.5", "--logit-scale", "16", "--warmup-epochs", "0.5",
                         "--views-start-epoch", "2", "--lr-scheduler", "cosine"])
    state = load_checkpoint(save / "last.pt")
    assert state["config"]["logit_scale"] == 16.0
    lrs = [g["initial_lr"] for g in state["optimizer"]["param_groups"]]
    assert lrs == [0.01, pytest.approx(0.005)]
    rows = _rows(save / "metrics.csv")
    assert math.isnan(float(rows[0]["train_crop_top1"])) and math.isnan(float(rows[0]["train_drop_top1"]))
    assert math.isfinite(float(rows[1]["train_crop_top1"])) and math.isfinite(float(rows[0]["train_raw_top1"]))
    args = json.loads((save / "args.json").read_text())
    assert (args["head_lr_scale"], args["warmup_epochs"], args["views_start_epoch"]) == (0.5, 0.5, 2)
    for row in rows:  # every epoch's gradient norms and the share of steps the default step cap clipped
        assert 0 < float(row["train_grad_norm"]) <= float(row["train_grad_norm_max"]) < math.inf
        assert 0.0 <= float(row["train_clipped"]) <= 100.0
    assert "grad norm" in (save / "train.log").read_text()
    # resuming keeps the two groups and continues
    row = run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "3", *TINY_TRAIN, "--lr", "0.01",
                               "--head-lr-scale", "0.5", "-c", str(save / "last.pt"), "--lr-scheduler", "cosine"])
    assert row["epoch"] == 3


def _without_lr(argv):
    i = argv.index("--lr")
    return argv[:i] + argv[i + 2:]


def test_defaults_are_the_recipe_for_wsdan_and_a_plain_fine_tune_for_the_baseline(tiny_data, tmp_path):
    save = tmp_path / "base"
    tiny = _without_lr(TINY_TRAIN)
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", *tiny, "--method", "baseline"])
    args = json.loads((save / "args.json").read_text())
    assert (args["lr"], args["head_lr_scale"], args["warmup_epochs"], args["clip_grad"]) == (0.01, 1.0, 0.0, 0.0)
    assert args["logit_scale"] is None and args["views_start_epoch"] is None  # WS-DAN's knobs: unused, so None
    assert len(load_checkpoint(save / "last.pt")["optimizer"]["param_groups"]) == 1
    save = tmp_path / "wsdan"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", *tiny])
    args = json.loads((save / "args.json").read_text())
    assert (args["lr"], args["logit_scale"], args["views_start_epoch"]) == (0.01, 25.0, 2)
    assert (args["clip_grad"], args["clip_mode"]) == (0.15, "step")
    assert load_checkpoint(save / "last.pt")["config"]["logit_scale"] == 25.0
    assert math.isnan(float(_rows(save / "metrics.csv")[0]["train_crop_top1"]))  # epoch 1: raw view only


@pytest.fixture(scope="module")
def two_group_run(tiny_data, tmp_path_factory):
    """One epoch with its own head learning rate, a 2-epoch warm-up, the views from epoch 2 and clipping at 2."""
    save = tmp_path_factory.mktemp("groups") / "run"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", *TINY_TRAIN, "--lr", "0.01",
                         "--head-lr-scale", "0.5", "--warmup-epochs", "2", "--views-start-epoch", "2",
                         "--clip-grad", "2"])
    return save


def test_resume_continues_the_recipe_it_started_with(two_group_run, tiny_data, tmp_path):
    """-c without the knobs: the run's own head learning rate, warm-up (continued where it stopped) and view
    schedule, not the method's recipe (whose single learning rate could not even load the two-group state)."""
    save = tmp_path / "run"
    shutil.copytree(two_group_run, save)
    argv = ["--dd", str(tiny_data), "--sd", str(save), "-e", "3", *TINY_TRAIN, "--lr", "0.01",
            "-c", str(save / "last.pt")]
    settings = recipe.TrainSettings.from_namespace(script("train").get_args_parser().parse_args(argv))
    assert settings.head_lr_scale is None and settings.warmup_epochs is None
    inputs = recipe.check_inputs(settings, DistInfo())
    config, model = recipe.resolve_model(settings, inputs)
    used = recipe.resolve_recipe(settings, config, inputs.resume)
    assert used == dataclasses.replace(settings, head_lr_scale=0.5, warmup_epochs=2.0, views_start_epoch=2,
                                       logit_scale=25.0, clip_grad=2.0, clip_mode="norm", detail_scale=1)
    # A new run gets the recipe's clipping (the step cap); the resumed one kept its own (norm 2).
    new = recipe.resolve_recipe(dataclasses.replace(settings, ckpt=None), config)
    assert (new.clip_grad, new.clip_mode) == (0.15, "step")
    # --clip-grad alone clips the norm (as in timm); a mode without its cap is refused unless it is the default's.
    fresh = dataclasses.replace(settings, ckpt=None, clip_grad=1.0)
    assert (recipe.resolve_recipe(fresh, config).clip_mode, recipe.resolve_recipe(fresh, config).clip_grad) == (
        "norm", 1.0)
    assert recipe.resolve_recipe(dataclasses.replace(settings, ckpt=None, clip_mode="step"), config).clip_grad == 0.15
    with pytest.raises(recipe.TrainSetupError, match="--clip-mode agc: give its cap with --clip-grad"):
        recipe.resolve_recipe(dataclasses.replace(settings, ckpt=None, clip_mode="agc"), config)
    loaders = recipe.build_loaders(used, recipe.build_datasets(used, config, inputs), inputs, DistInfo())
    optim = recipe.build_optimization(used, model, config, inputs, loaders)
    assert (optim.step.clip_grad, optim.step.clip_mode) == (2.0, "norm")  # reaches the training step
    steps = len(loaders.train)  # 24 images, batch 8: 3 optimizer steps per epoch
    assert steps == 3 and optim.warmup.warmup_steps == 6 and optim.warmup.step_count == 3
    assert optim.warmup.factor() == pytest.approx(4 / 6)  # the 4th of 6 ramp steps comes next
    assert [g["lr"] for g in optim.optimizer.param_groups] == [0.01, pytest.approx(0.005)]

    row = run_script("train", argv)
    assert row["epoch"] == 3
    args = json.loads((save / "args.json").read_text())
    assert (args["head_lr_scale"], args["warmup_epochs"], args["views_start_epoch"]) == (0.5, 2.0, 2)
    assert len(load_checkpoint(save / "last.pt")["optimizer"]["param_groups"]) == 2


def test_resume_refuses_to_merge_the_groups_or_change_the_logit_scale(two_group_run, tiny_data, capsys):
    base = ["--dd", str(tiny_data), "--sd", str(two_group_run), "-e", "2", *TINY_TRAIN, "-c",
            str(two_group_run / "last.pt")]
    before = {p.name: p.read_bytes() for p in two_group_run.iterdir()}
    for extra, expected in [
        (["--head-lr-scale", "1"], f"error: {two_group_run / 'last.pt'}: its optimizer has separate backbone and "
                                   "head learning rates; --head-lr-scale 1 would merge them: give the run's own "
                                   "value (0.5) or leave the flag unset"),
        (["--logit-scale", "16"], f"error: {two_group_run / 'last.pt'}: checkpoint does not fit this run: "
                                  "logit_scale: checkpoint has 25.0, this run asks for 16.0"),
    ]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            run_script("train", [*base, *extra])
        assert exc.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1] == expected
    assert {p.name: p.read_bytes() for p in two_group_run.iterdir()} == before  # refused before writing


def test_one_group_checkpoint_keeps_one_learning_rate(tiny_data, tmp_path):
    """A run from before the split (one parameter group) resumes with --head-lr-scale given: one group kept."""
    save = tmp_path / "run"
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "1", *TINY_TRAIN])
    assert len(load_checkpoint(save / "last.pt")["optimizer"]["param_groups"]) == 1
    run_script("train", ["--dd", str(tiny_data), "--sd", str(save), "-e", "2", *TINY_TRAIN,
                         "--head-lr-scale", "10", "-c", str(save / "last.pt")])
    assert json.loads((save / "args.json").read_text())["head_lr_scale"] == 1.0
    assert len(load_checkpoint(save / "last.pt")["optimizer"]["param_groups"]) == 1


def test_resolve_recipe_fills_only_the_unset_knobs():
    wsdan, base = ModelConfig(backbone="tiny", num_classes=3), ModelConfig(backbone="tiny", method="baseline",
                                                                           num_classes=3)
    given = recipe.TrainSettings(data_dir="D", save_dir="S", warmup_epochs=0.5, views_start_epoch=3)
    used = recipe.resolve_recipe(given, dataclasses.replace(wsdan, logit_scale=16.0))
    assert (used.head_lr_scale, used.warmup_epochs, used.views_start_epoch, used.logit_scale) == (
        recipe.WSDAN_RECIPE["head_lr_scale"], 0.5, 3, 16.0)  # the model's logit scale is recorded
    used = recipe.resolve_recipe(given, base)
    assert (used.head_lr_scale, used.warmup_epochs, used.views_start_epoch, used.logit_scale) == (
        recipe.BASELINE_RECIPE["head_lr_scale"], 0.5, None, None)
    with pytest.raises(recipe.TrainSetupError, match=r"^head_lr_scale: expected a number > 0, got 0$"):
        recipe.resolve_recipe(dataclasses.replace(given, head_lr_scale=0), wsdan)
    with pytest.raises(recipe.TrainSetupError, match=r"^warmup_epochs: expected a number >= 0, got -1$"):
        recipe.resolve_recipe(dataclasses.replace(given, warmup_epochs=-1), wsdan)
