"""The adaptive recipe's choices (train/adapt.py) and the time budget's plan (train/budget.py), on small objects:
anchor shapes checked against the TFOD API's own anchor generators, boxes read from real TFRecords."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_voc

from tfod_wrap.core.overrides import override
from tfod_wrap.core.pipeline import load
from tfod_wrap.core.recipe import RecipeError, TrainRecipe, budget_seconds, explicit_fields
from tfod_wrap.data import convert
from tfod_wrap.train import adapt
from tfod_wrap.train.budget import WARMUP_STEPS, Budget, BudgetTooShort, Undo


def boxes(sides: list[float], aspects: list[float] | None = None, image=(1280, 960)) -> adapt.Boxes:
    """Normalised boxes of these sides (as a share of the image) and width/height aspects."""
    sides = np.asarray(sides, np.float64)
    aspects = np.ones_like(sides) if aspects is None else np.asarray(aspects, np.float64)
    return adapt.Boxes(
        widths=sides * np.sqrt(aspects),
        heights=sides / np.sqrt(aspects),
        labels=np.ones_like(sides),
        image_sizes=np.tile(np.asarray(image, np.float64), (4, 1)),
    )


def tfod_anchor_shapes(config, feature_maps, input_hw) -> np.ndarray:
    """The (width, height) of every anchor the TFOD API's own generator makes for this config."""
    from object_detection.builders import anchor_generator_builder

    generator = anchor_generator_builder.build(config.model.ssd.anchor_generator)
    if generator.name_scope() == "MultiscaleGridAnchorGenerator" or hasattr(generator, "_anchor_grid_info"):
        lists = generator.generate(feature_maps, im_height=input_hw[0], im_width=input_hw[1])
    else:
        lists = generator.generate(feature_maps)
    corners = np.concatenate([boxlist.get().numpy() for boxlist in lists])
    return np.stack([corners[:, 3] - corners[:, 1], corners[:, 2] - corners[:, 0]], axis=1)


def same_shapes(ours: np.ndarray, theirs: np.ndarray) -> bool:
    """Every shape of each set is in the other (float32 against float64: within 1e-5)."""
    distances = np.abs(ours[:, None, :] - theirs[None, :, :]).max(axis=2)
    return bool(distances.min(axis=1).max() < 1e-5 and distances.min(axis=0).max() < 1e-5)


def test_anchor_shapes_are_those_the_tfod_ssd_anchor_generator_makes():
    config = load("ssd_mobilenet_v2")
    feature_maps = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    expected = tfod_anchor_shapes(config, feature_maps, (300, 300))
    assert same_shapes(
        adapt.anchor_shapes(config.model.ssd.anchor_generator.ssd_anchor_generator, (300, 300)), expected
    )


def test_anchor_shapes_are_those_the_tfod_multiscale_generator_makes():
    config = load("ssd_mobilenet_v2_fpnlite_320")
    feature_maps = [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
    expected = tfod_anchor_shapes(config, feature_maps, (320, 320))
    shapes = adapt.anchor_shapes(config.model.ssd.anchor_generator.multiscale_anchor_generator, (320, 320))
    assert same_shapes(shapes, expected)


def test_small_boxes_get_smaller_anchors_and_more_of_them_match():
    template = load("ssd_mobilenet_v2")
    small = boxes(list(np.linspace(0.04, 0.08, 40)))
    overrides, reason = adapt.fit_anchors(template, small, None)
    assert any(".min_scale=" in item for item in overrides), reason
    fitted = load("ssd_mobilenet_v2")
    override(fitted, overrides)  # every override is a field path that `config --set` takes
    shapes = np.stack([small.widths, small.heights], axis=1)
    before, after = (
        adapt.best_possible_recall(
            shapes, adapt.anchor_shapes(config.model.ssd.anchor_generator.ssd_anchor_generator, (300, 300)), 0.5
        )
        for config in (template, fitted)
    )
    assert after[0] > before[0] + 0.5
    assert f"{before[0]:.2f} -> {after[0]:.2f}" in reason


def test_boxes_the_template_anchors_already_fit_keep_them():
    config = load("ssd_mobilenet_v2")
    fitting = boxes([0.2, 0.35, 0.5, 0.65, 0.8, 0.9] * 5, [1.0, 2.0, 0.5, 1.0, 2.0, 0.5] * 5)
    overrides, reason = adapt.fit_anchors(config, fitting, None)
    assert overrides == [] and reason.startswith("anchors: kept")


def test_template_anchors_that_match_nine_boxes_in_ten_are_kept_though_a_fit_would_match_more():
    config = load("ssd_mobilenet_v2")
    # one box in twenty far taller than any template anchor: the template matches 95%, a refit would match all
    mostly = boxes([0.3, 0.4, 0.5, 0.6] * 5, [1.0, 2.0, 0.5, 1.0] * 4 + [0.05, 1.0, 1.0, 1.0])
    overrides, reason = adapt.fit_anchors(config, mostly, None)
    assert overrides == [] and reason.startswith("anchors: kept, they match 90% of the boxes or more"), reason
    # a third of them that tall: refitted
    third = boxes([0.3, 0.4, 0.5] * 10, [1.0, 1.0, 0.05] * 10)
    assert adapt.fit_anchors(config, third, None)[0] != []


def test_an_input_size_or_anchors_the_user_set_are_kept_as_given():
    config = load("ssd_mobilenet_v2")
    small = boxes(list(np.linspace(0.04, 0.08, 40)))
    fitted = adapt.adapt(config, small, set(), 8).changes["overrides"]
    assert any(".fixed_shape_resizer." in item for item in fitted) and any(".min_scale=" in item for item in fitted)
    given = [
        "model.ssd.image_resizer.fixed_shape_resizer.height",
        "model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios",
    ]
    kept = adapt.adapt(config, small, set(), 8, given)
    assert "overrides" not in kept.changes
    assert kept.reasons[:2] == ["input size: as given (--set)", "anchors: as given (--set)"]


def test_tall_boxes_get_their_own_aspect_ratios():
    config = load("ssd_mobilenet_v2_fpnlite_320")
    tall = boxes([0.2, 0.25, 0.3] * 10, [0.12, 0.15, 0.18] * 10)
    overrides, reason = adapt.fit_anchors(config, tall, None)
    aspects = next(item for item in overrides if ".aspect_ratios=" in item)
    values = [float(value) for value in aspects.split("=")[1].strip("[]").split(",")]
    assert min(values) < 0.2, reason


def test_small_objects_grow_the_input_to_the_smallest_size_where_they_reach_32_px():
    config = load("ssd_mobilenet_v2")
    # median side 0.08 of the image: 24 px at 300, 30.7 at 384, 35.8 at 448
    size, reason = adapt.input_size(config, boxes([0.07, 0.08, 0.08, 0.09]))
    assert size == 448 and "300x300 -> 448x448" in reason


def test_large_objects_keep_the_input_and_tiny_ones_warn_with_their_statistics():
    config = load("ssd_mobilenet_v2")
    assert adapt.input_size(config, boxes([0.3, 0.4]))[0] is None
    size, reason = adapt.input_size(config, boxes([0.005, 0.006, 0.007]))
    assert size == 640 and "warning" in reason and "median" in reason and "5-95%" in reason
    # 1280x960 images: tiles of 640 px keep the boxes at their own 7 px instead of 4 px
    assert reason.endswith(
        "tiles of 640 px keep the images' resolution (median box 7 px): `tfrecords --tile 640`"
        ", README 'Large images, small objects'"
    ), reason
    assert "--tile" not in adapt.input_size(config, boxes([0.005], image=(700, 500)))[1]  # images near the input
    # never past the images' own size: 400 px images allow 384 at most
    assert adapt.input_size(config, boxes([0.01], image=(400, 300)))[0] == 384


def test_fpn_inputs_stay_multiples_of_their_coarsest_stride():
    config = load("ssd_mobilenet_v2_fpnlite_320")
    size, _ = adapt.input_size(config, boxes([0.06, 0.07]))
    assert size % 128 == 0 and size > 320


def test_input_size_and_anchors_are_left_to_models_they_do_not_fit():
    config = load("faster_rcnn_resnet50_v1_640")
    assert adapt.input_size(config, boxes([0.01]))[0] is None
    assert adapt.fit_anchors(config, boxes([0.01]), None)[0] == []


def test_freezing_follows_the_backbone_the_batch_and_the_start():
    assert adapt.freeze_spec(17, 8, pretrained=True)[0] == ("backbone:10",)
    assert adapt.freeze_spec(17, 2, pretrained=True)[0] == ("backbone:14",)
    assert adapt.freeze_spec(17, 8, pretrained=False)[0] == ()


def test_small_boxes_train_the_whole_backbone():
    config = load("ssd_mobilenet_v2")  # 300x300
    small, large = boxes([24 / 300] * 4), boxes([70 / 300] * 4)
    assert adapt.adapt(config, small, set(), 8).median_side == pytest.approx(24)
    assert adapt.adapt(config, large, set(), 8).median_side == pytest.approx(70)
    specs, why = adapt.freeze_spec(17, 8, pretrained=True, median_side=24)
    assert specs == () and "median 24 px" in why
    assert adapt.freeze_spec(17, 8, pretrained=True, median_side=70)[0] == ("backbone:10",)
    assert adapt.adapt(load("faster_rcnn_resnet50_v1_640"), small, set(), 8).median_side is None


def test_rates_scale_with_the_batch_unless_given():
    config = load("ssd_mobilenet_v2")
    assert adapt.pick_rates(config, 8, set())[0] == {"learning_rate": 0.01, "warmup_rate": 0.0025}
    assert adapt.pick_rates(config, 16, set())[0]["learning_rate"] == pytest.approx(0.02)
    assert adapt.pick_rates(config, 8, {"learning_rate"})[0] == {}
    assert adapt.pick_rates(load("centernet_resnet50_v2_512"), 8, set())[0] == {}  # Adam keeps its own


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("adapt")
    convert(tiny_voc(root / "voc", 6, box=(10, 8, 40, 30)), root / "records", workers=1)
    return root / "records"


def test_boxes_are_read_from_the_training_records(records):
    read = adapt.read_boxes([str(records / "train.record")], {"a": 1, "b": 2})
    assert len(read.widths) == len(read.labels) > 0
    assert np.allclose(read.widths, 30 / 96, atol=1e-5) and np.allclose(read.heights, 22 / 72, atol=1e-5)
    assert set(read.labels) <= {1.0, 2.0} and read.image_sizes.tolist()[0] == [96, 72]


def test_a_class_without_boxes_and_an_empty_split_are_one_line_each(records, tmp_path):
    with pytest.raises(adapt.AdaptError, match=r"no training boxes of class 'c' \(id 3\)"):
        adapt.read_boxes([str(records / "train.record")], {"a": 1, "b": 2, "c": 3})
    empty = tmp_path / "empty.record"
    empty.write_bytes(b"")
    with pytest.raises(adapt.AdaptError, match="holds no records"):
        adapt.read_boxes([str(empty)], {"a": 1})


def test_durations_parse_and_bad_ones_are_refused():
    assert [budget_seconds(text) for text in ("600", "90s", "10m", "1.5h", "1h30m")] == [600, 90, 600, 5400, 5400]
    for text in ("", "ten minutes", "0s"):
        with pytest.raises(RecipeError, match="time_budget"):
            TrainRecipe(time_budget=text)
    with pytest.raises(RecipeError, match="seed"):
        TrainRecipe(seed=-1)


def test_fields_given_count_as_chosen_even_at_their_default():
    recipe = TrainRecipe(learning_rate=0.01).replace(freeze=())
    assert explicit_fields(recipe, {"freeze": ()}) == {"learning_rate", "freeze"}


def test_the_plan_fills_what_is_left_of_the_budget():
    budget = Budget("100s", began=0.0)
    budget.elapsed = lambda: 40.0  # building and tracing took 40 s
    iterations = [20.0] + [0.5] * WARMUP_STEPS
    assert budget.next_end(WARMUP_STEPS - 1, iterations[:-1], 1.0, 50, saved=False) is None  # still warming up
    # 60 s left, less the last checkpoint write (1 s), at 0.5 s a step plus a 1 s write every 50 steps
    assert budget.next_end(WARMUP_STEPS, iterations, 1.0, 50, saved=False) == WARMUP_STEPS + int(59 // 0.52)
    # after a checkpoint, a re-plan from the mean of the recent iterations, which moves the end only when it
    # changes by more than 5%
    budget.elapsed = lambda: 70.0
    assert budget.next_end(60, iterations + [0.5] * 55, 1.0, 50, saved=True) is None
    assert budget.next_end(60, iterations + [1.0] * 55, 1.0, 50, saved=True) == 60 + int(29 // 1.02)
    # between checkpoints, a later end waits for the next write (or RECENT_STEPS steps); an earlier one (a slower
    # machine) is taken at once when it is more than 5% of the steps left
    assert budget.next_end(61, iterations + [0.5] * 56, 1.0, 50, saved=False) is None
    assert budget.next_end(62, iterations + [1.0] * 37 + [3.0] * 20, 1.0, 50, saved=False) == 62 + int(29 // 3.02)
    # near the end, two steps behind is reason enough (one is not)
    budget.elapsed = lambda: 97.5
    assert budget.next_end(69, iterations + [1.0] * 20, 1.0, 50, saved=False) is None
    assert budget.next_end(68, iterations + [1.0] * 20, 1.0, 50, saved=False) == 69
    # when one more step and the last write no longer fit, the end is the step the run is at
    budget.elapsed = lambda: 99.5
    assert budget.next_end(63, iterations + [1.0] * 58, 1.0, 50, saved=False) == 63
    assert budget.next_end(63, iterations + [1.0] * 58, 1.0, 50, saved=False) is None  # it is at its end


def test_a_plan_made_on_slow_first_steps_is_extended_before_the_first_checkpoint():
    # slow first steps (large images read cold) plan an end before the first checkpoint, at step 500
    budget = Budget("300s", began=0.0)
    budget.elapsed = lambda: 30.0
    iterations = [20.0] + [1.0] * WARMUP_STEPS
    first = budget.next_end(WARMUP_STEPS, iterations, 2.0, 500, saved=False)
    assert first == WARMUP_STEPS + int(268 // 1.004)
    # the steps get twice as fast: not yet a reason while the recent steps include the plan's own warm-up ...
    budget.elapsed = lambda: 40.0
    assert budget.next_end(WARMUP_STEPS + 19, iterations + [0.5] * 19, 2.0, 500, saved=False) is None
    # ... but RECENT_STEPS steps after the plan, the end moves out without waiting for a checkpoint write
    budget.elapsed = lambda: 40.5
    later = budget.next_end(WARMUP_STEPS + 20, iterations + [0.5] * 20, 2.0, 500, saved=False)
    assert later == WARMUP_STEPS + 20 + int((300 - 40.5 - 2.0) // 0.504)
    assert later > first
    # an end past the next checkpoint waits for that checkpoint's re-plan
    budget = Budget("300s", began=0.0)
    budget.elapsed = lambda: 30.0
    assert budget.next_end(WARMUP_STEPS, iterations, 2.0, 50, saved=False) > 50
    budget.elapsed = lambda: 40.5
    assert budget.next_end(WARMUP_STEPS + 20, iterations + [0.5] * 20, 2.0, 50, saved=False) is None


def test_a_budget_spent_in_the_warm_up_is_refused():
    budget = Budget("30s", began=0.0)
    budget.elapsed = lambda: 45.0
    with pytest.raises(BudgetTooShort, match="--time-budget 30s is shorter than the warm-up"):
        budget.next_end(WARMUP_STEPS, [20.0] + [0.5] * WARMUP_STEPS, 1.0, 50, saved=False)


def test_the_closing_line_names_the_slowest_step_and_write_past_the_first_steps_tracing():
    budget = Budget("60s", began=0.0)
    budget.elapsed = lambda: 142.4
    line = budget.summary(260, [9.0, 0.13, 0.14, 0.5], [1.5, 81.0, 1.4])
    assert line == (
        "time budget 60s: trained 260 steps in 142 s; slowest step 0.50 s (median 0.14 s); "
        "slowest checkpoint write 81.00 s (median 1.50 s)"
    )


def test_undo_takes_back_what_a_refused_run_wrote(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline.config").write_text("the user's")
    (run / "notes.txt").write_text("kept")
    undo = Undo(run)
    (run / "pipeline.config").write_text("rewritten by the run")
    (run / "recipe.json").write_text("{}")
    (run / "train").mkdir()
    (run / "ckpt-0.index").write_bytes(b"")
    undo()
    assert sorted(path.name for path in run.iterdir()) == ["notes.txt", "pipeline.config"]
    assert (run / "pipeline.config").read_text() == "the user's"
    fresh = tmp_path / "fresh"
    undo = Undo(fresh)
    fresh.mkdir()
    (fresh / "ckpt-0.index").write_bytes(b"")
    undo()
    assert not fresh.exists()
