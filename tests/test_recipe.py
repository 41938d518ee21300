"""The run recipe as data: save and load, the registry, bad files, and the command line built from its fields."""

from __future__ import annotations

import dataclasses
import json
import shlex
import subprocess
from pathlib import Path
from typing import get_type_hints

import pytest
from conftest import REPO

from tfod_wrap import cli
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.options import faces, field_docs
from tfod_wrap.core.options import given as given_fields
from tfod_wrap.core.recipe import (
    PRESETS,
    RECIPES,
    RecipeError,
    TrainRecipe,
    field_type,
    find_recipe,
    saved_recipe,
)

TRAIN = ["train", "--pipeline", "p.config", "--model-dir", "run"]
# A value for each field's type, and how it is written on the command line.
SAMPLES = {
    tuple: (("backbone:3", "fpn"), lambda flag, value: [word for item in value for word in (flag, item)]),
    bool: (True, lambda flag, value: [flag]),
    int: (7, lambda flag, value: [flag, "7"]),
    float: (0.125, lambda flag, value: [flag, "0.125"]),
}


def given(*argv: str) -> TrainRecipe:
    """What `tfod-wrap train` would train with, from the defaults and these options."""
    args = cli.build_parser().parse_args([*TRAIN, *argv])
    return TrainRecipe().replace(**given_fields(args, TrainRecipe))


def test_save_load_round_trip_and_the_saved_file(tmp_path):
    recipe = RECIPES["demo"].replace(train_only=["box_head"], overrides=["model.ssd.num_classes=3"], steps=9)
    path = recipe.save(tmp_path)
    assert path == tmp_path / "recipe.json"
    assert TrainRecipe.load(path) == recipe == saved_recipe(tmp_path) == find_recipe(tmp_path) == find_recipe(path)
    data = json.loads(path.read_text())
    assert data["kind"] == "tfod-wrap train recipe"
    assert data["freeze"] == ["backbone:10"] and data["num_steps"] == 1300 and data["learning_rate"] == 0.01
    assert saved_recipe(tmp_path / "elsewhere") is None


def test_the_registered_demo_recipe():
    demo = find_recipe("demo")
    assert demo is RECIPES["demo"]
    assert (demo.freeze, demo.num_steps, demo.batch_size) == (("backbone:10",), 1300, 8)
    assert (demo.learning_rate, demo.warmup_rate, demo.steps) == (0.01, 0.0025, None)
    assert demo.pipeline_changes() and not TrainRecipe().pipeline_changes()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "steps must be at least 1, got 0"),
        ({"batch_size": -2}, "batch_size must be at least 1"),
        ({"learning_rate": float("nan")}, "learning_rate is nan"),
        ({"warmup_rate": -0.1}, "warmup_rate is -0.1"),
        ({"strategy": "tpu"}, "unknown strategy 'tpu'"),
        ({"freeze": "backbone"}, "freeze must be a list of strings"),
        ({"keep_box_head": 1}, "keep_box_head must be a bool"),
        ({"checkpoint_every": 2.5}, "checkpoint_every must be an int"),
        ({"epochs": 3}, "no recipe field epochs"),
    ],
)
def test_bad_values_are_refused_naming_the_field(changes, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        TrainRecipe().replace(**changes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a tfod-wrap recipe"),
        ('{"freeze": []}', "not a tfod-wrap recipe"),
        ('{"kind": "tfod-wrap train recipe", "steps": "ten"}', "steps must be an int"),
        ('{"kind": "tfod-wrap train recipe", "epochs": 1}', "no recipe field epochs"),
    ],
)
def test_a_bad_recipe_file_is_one_error_naming_it(tmp_path, text, message):
    path = tmp_path / "r.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as caught:  # a RecipeError, or read_json's for bad JSON
        find_recipe(path)
    assert str(caught.value).startswith(str(path))


def test_an_unknown_name_lists_the_registered_recipes(tmp_path):
    with pytest.raises(RecipeError, match="unknown recipe 'quick'.*demo"):
        find_recipe("quick")
    with pytest.raises(UserError, match="cannot read the recipe"):
        find_recipe(tmp_path / "missing.json")


STRING_SAMPLES = {"strategy": "mirrored", "time_budget": "10m"}


def test_every_recipe_field_is_reachable_by_a_train_option():
    hints = get_type_hints(TrainRecipe)
    for face in faces(TrainRecipe):
        flag = face.flag()
        kind = field_type(hints[face.name])
        text = STRING_SAMPLES.get(face.name)
        value, write = SAMPLES[kind] if kind is not str else (text, lambda flag, value: [flag, value])
        argv = write(flag, value)
        assert getattr(given(*argv), face.name) == value, (face.name, argv)
    assert given() == TrainRecipe()  # nothing given: nothing overridden


def test_options_override_a_recipe_and_lists_can_be_emptied():
    demo = RECIPES["demo"]
    args = cli.build_parser().parse_args(
        [*TRAIN, "--recipe", "demo", "--num-steps", "20", "--no-freeze", "--set", "a=1"]
    )
    changed = find_recipe(args.recipe).replace(**given_fields(args, TrainRecipe))
    assert changed == dataclasses.replace(demo, num_steps=20, freeze=(), overrides=("a=1",))
    assert given("--keep-box-head", "--no-keep-box-head").keep_box_head is False


def test_help_of_train_in_process(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--recipe NAME_OR_FILE", "--num-steps N", "--learning-rate RATE", "--no-freeze", "--keep N"):
        assert flag in out
    assert "registered recipe (demo)" in out


def test_train_with_an_unknown_recipe_is_one_line(capsys, tmp_path):
    pipeline = Path(__file__).resolve().parents[1] / "tfod_wrap" / "pipelines" / "ssd_mobilenet_v2.config"
    argv = ["train", "--pipeline", str(pipeline), "--model-dir", str(tmp_path / "run"), "--recipe", "quick"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown recipe 'quick'") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def demo_training(*variables: str) -> tuple[TrainRecipe, bool]:
    """The recipe and --resume of the `tfod-wrap train` line that `make demo` runs with these variables."""
    listed = subprocess.run(
        ["make", "-C", str(REPO), "--no-print-directory", "-n", "-o", "install", "demo", *variables],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (line,) = [line for line in listed.splitlines() if " train --pipeline " in line]
    args = cli.build_parser().parse_args(shlex.split(line)[1:])
    base = find_recipe(args.recipe) if args.recipe else TrainRecipe()
    return base.replace(**given_fields(args, TrainRecipe)), args.resume


def test_make_demo_trains_the_adaptive_recipe_for_a_time_and_its_variables_override_it():
    assert demo_training() == (TrainRecipe(time_budget="8m", seed=0, batch_size=8), False)
    assert demo_training("TIME=5m", "DEMO_SEED=3")[0] == TrainRecipe(time_budget="5m", seed=3, batch_size=8)
    overridden = demo_training("DEMO_LR=0.02", "DEMO_WARMUP_LR=0.001", "DEMO_FREEZE=fpn box_head")[0]
    expected = dict(learning_rate=0.02, warmup_rate=0.001, freeze=("fpn", "box_head"))
    assert overridden == TrainRecipe(time_budget="8m", seed=0, batch_size=8, **expected)
    # DEMO_STEPS: that many steps of the registered demo recipe instead of a time budget
    changed, resume = demo_training("DEMO_STEPS=40", "DEMO_BATCH=2", "DEMO_LR=0.02")
    assert (changed, resume) == (RECIPES["demo"].replace(num_steps=40, batch_size=2, learning_rate=0.02, seed=0), False)
    assert demo_training("DEMO_FREEZE=")[0].freeze == ()  # set but empty: nothing frozen
    # an interrupted demo resumes with what its run planned (recipe.json), so nothing else goes on the line
    assert demo_training("RESUME=1", "DEMO_LR=0.02") == (TrainRecipe(), True)


def test_the_pipeline_edits_once_and_twice_give_the_same_pipeline(tmp_path):
    from tfod_wrap.core.pipeline import load, save, to_text
    from tfod_wrap.train.recipe import edited_pipeline

    template = load("ssd_mobilenet_v2")
    save(template, tmp_path / "template.config")
    logged: list[str] = []
    edited, text = edited_pipeline(tmp_path / "template.config", RECIPES["demo"], logged.append)
    cosine = edited.train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate
    assert (edited.train_config.batch_size, edited.train_config.num_steps, cosine.total_steps) == (8, 1300, 1300)
    assert (cosine.learning_rate_base, cosine.warmup_learning_rate) == pytest.approx((0.01, 0.0025))
    assert text == to_text(edited) and any("learning_rate_base" in line and "-> 0.01" in line for line in logged)
    (tmp_path / "edited.config").write_text(text)
    assert edited_pipeline(tmp_path / "edited.config", RECIPES["demo"], logged.append)[1] is None  # nothing more


def test_rates_of_a_schedule_without_a_warmup_are_refused_naming_the_option(tmp_path):
    from tfod_wrap.core.overrides import override
    from tfod_wrap.core.pipeline import ConfigError, load
    from tfod_wrap.core.schedule import set_rates

    config = load("ssd_mobilenet_v2")
    override(config, ["train_config.optimizer.momentum_optimizer.learning_rate={constant_learning_rate {}}"])
    assert set_rates(config, base=0.03) == ["learning_rate 0.002 -> 0.03"]
    with pytest.raises(
        ConfigError, match="--warmup-rate: the pipeline.s ConstantLearningRate learning-rate schedule has no such rate"
    ):
        set_rates(config, warmup=0.001)


def make_train(*variables: str) -> str:
    """The `tfod-wrap train` line `make train` runs with these variables (read with make -n, nothing run)."""
    command = ["make", "-C", str(REPO), "--no-print-directory", "-n", "-o", "install", "train", *variables]
    printed = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return " ".join(printed.replace("\\\n", " ").split("\n")[-2].split())


def test_make_train_time_hands_the_budget_and_seed_to_train_and_leaves_freezing_to_it():
    timed = make_train("TIME=10m", "TRAIN_SEED=3")
    assert " train " in timed and "--time-budget 10m --seed 3" in timed and "--freeze" not in timed
    assert "--freeze backbone:4" in make_train("TIME=10m", "FREEZE=backbone:4")
    assert "--freeze backbone" in make_train() and "--time-budget" not in make_train()


def test_every_recipe_field_has_its_help_under_it(capsys):
    helps = field_docs(TrainRecipe)
    assert set(helps) == {item.name for item in dataclasses.fields(TrainRecipe)}
    assert helps["keep_checkpoints"] == "checkpoints to keep (5)"
    assert helps["freeze"].startswith("freeze variables: a preset (backbone, backbone:N, fpn,")  # lines joined
    assert all(preset in helps["freeze"] for preset in PRESETS)
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    train_help = capsys.readouterr().out
    assert "--keep N" in train_help and "--set PATH=VALUE" in train_help and "--time-budget DURATION" in train_help
    assert "--strategy {default,mirrored,multi_worker}" in train_help
