"""train.py's flags, ws_dan.training.recipe.TrainSettings and the cleaner's copy of the flags stay one list; the recipe
runs from a TrainSettings alone (a notebook, the cleaner) and records it."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import script

from ws_dan.training.recipe import DEFAULTS, WSDAN_RECIPE, TrainSettings, train_classifier


def _actions(parser) -> dict:
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def _plain(value):
    return tuple(value) if isinstance(value, list) else value


def test_every_flag_is_a_setting_with_the_same_default():
    flags = _actions(script("train").get_args_parser())
    fields = {f.name: f for f in dataclasses.fields(TrainSettings)}
    assert set(flags) == set(fields)
    assert [n for n, f in fields.items() if f.default is dataclasses.MISSING] == ["data_dir", "save_dir"]
    for name, action in flags.items():
        if name not in ("data_dir", "save_dir"):
            assert _plain(action.default) == fields[name].default, name
    assert flags["model"].default is None and "default efficientnet-b3" in flags["model"].help


def test_flag_groups_are_the_settings_groups():
    groups = {g.title: [a.dest for a in g._group_actions] for g in script("train").get_args_parser()._action_groups}
    assert groups["model"][:2] == ["model", "method"] and "lr" in groups["optimization"]
    assert "crop_theta" in groups["WS-DAN step"] and "data_dir" in groups["data"]
    assert "amp" in groups["speed"] and groups["output"][0] == "save_dir"


def test_from_namespace_takes_the_parsed_flags():
    args = script("train").get_args_parser().parse_args(
        ["--dd", "D", "--sd", "S", "--crop-theta", "0.3", "0.7", "--lr", "0.01", "-m", "tiny", "--gpu", "0,1"])
    settings = TrainSettings.from_namespace(args)
    assert settings == TrainSettings(data_dir="D", save_dir="S", crop_theta=(0.3, 0.7), lr=0.01, model="tiny",
                                     gpu_ids="0,1")
    assert settings.to_dict() == vars(args)  # args.json keeps train.py's keys and values
    assert settings.to_dict()["crop_theta"] == [0.3, 0.7]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.lr = 1.0  # type: ignore[misc]


def test_the_cleaner_takes_every_train_flag():
    """Both scripts take the flags from add_train_arguments: same names, types, choices and help; only the
    defaults (and help texts) the cleaner documents differ."""
    cleaner = script("train_cleaner")
    train_flags, cleaner_flags = _actions(script("train").get_args_parser()), _actions(cleaner.get_args_parser())
    assert set(cleaner_flags) - set(train_flags) == {"test_ratio", "link", "threshold", "select"}
    for name, a in train_flags.items():
        b = cleaner_flags[name]
        assert (a.option_strings, a.type, a.choices, a.nargs, a.required, a.metavar, type(a)) == \
               (b.option_strings, b.type, b.choices, b.nargs, b.required, b.metavar, type(b)), name
        if name not in cleaner.HELP and name not in ("data_dir", "save_dir"):
            assert a.help == b.help, name
        assert b.default == cleaner.CLEANER_DEFAULTS.get(name, a.default), name


def test_train_classifier_runs_from_settings_alone(tiny_data, tmp_path):
    """The notebook use: no argparse; args.json records the settings and the model defaults fill what is unset."""
    save = tmp_path / "run"
    settings = TrainSettings(data_dir=str(tiny_data), save_dir=str(save), model="tiny", pretrained=False,
                             image_size=64, epochs=1, batch_size=8, workers=0, progress=False, device="cpu",
                             save_freq=0)
    row = train_classifier(settings)
    assert row["epoch"] == 1 and 0 <= row["val_top1"] <= 100
    recorded = json.loads((save / "args.json").read_text())
    assert recorded["resolved_model_config"]["num_attentions"] == DEFAULTS["num_attentions"]
    del recorded["resolved_model_config"], recorded["world_size"]
    # the settings as given, with the unset recipe knobs as WS-DAN's recipe filled them (the values used)
    used = dataclasses.replace(settings, **WSDAN_RECIPE).to_dict()
    assert recorded == used and recorded["head_lr_scale"] == WSDAN_RECIPE["head_lr_scale"]
    assert sorted(p.name for p in save.iterdir()) == ["args.json", "best.pt", "curves.png", "last.pt", "metrics.csv",
                                                       "report.html", "train.log"]
    page = (save / "report.html").read_text(encoding="utf-8")
    assert "after epoch 1 (last.pt)" in page and "data:image/png;base64," in page  # the curves are embedded
