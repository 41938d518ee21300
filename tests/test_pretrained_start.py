"""The pretrained start a template gets by default: offline import for SSD MobileNet V2 made once and cached,
the zoo checkpoint preferred when cached, a refusal naming the options where there is none, and `none`."""

from __future__ import annotations

import shutil
import time

import pytest
from conftest import tiny_voc

from tfod_wrap import cli, config
from tfod_wrap.core.weights import MATCH_FILE, OBJECTRON_FOLDER, TEMPLATE_TARBALLS, default_start
from tfod_wrap.data import convert


@pytest.fixture(scope="module")
def offline_cache(pretrained_cache):
    """The session's cache, in which the first default start of ssd_mobilenet_v2 imported the offline model (the
    import is made once per test run: conftest.pretrained_cache), and a model zoo that refuses connections at once:
    this machine offline, in every CI."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFOD_WRAP_CACHE", str(pretrained_cache))
        patch.setenv("TFOD_WRAP_ZOO_URL", "http://127.0.0.1:9/")
        yield pretrained_cache


@pytest.fixture(scope="module")
def imported_start(offline_cache):
    return default_start("ssd_mobilenet_v2", log=lambda *_: None)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    convert(tiny_voc(root / "voc", 4), root / "records", split="train=0.5,val=0.5", workers=1)
    return root / "records"


def test_ssd_mobilenet_v2_imports_offline_once_into_the_cache(offline_cache, imported_start):
    start = imported_start
    assert start.folder == offline_cache / "models" / OBJECTRON_FOLDER
    assert (start.folder / "checkpoint" / "ckpt-0.index").is_file() and start.checkpoint_type == "detection"
    assert "@mediapipe/objectron" in start.origin and "imported offline" in start.origin
    began = time.perf_counter()
    again = default_start("ssd_mobilenet_v2", log=lambda *_: None)
    assert again == start and time.perf_counter() - began < 5  # the cached import, not a second one


def test_config_sets_the_pretrained_start_by_default_and_says_where_from(imported_start, records, tmp_path, capsys):
    start = imported_start
    output = tmp_path / "pipeline.config"
    assert cli.main(["config", "ssd_mobilenet_v2", "--data", str(records), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "pretrained start: @mediapipe/objectron" in printed
    written = config.load(output).train_config
    assert written.fine_tune_checkpoint == str(start.folder / "checkpoint" / "ckpt-0")
    assert written.fine_tune_checkpoint_type == "detection"
    assert cli.main(["config", "show", str(output)]) == 0
    shown = capsys.readouterr().out
    assert f"fine-tune checkpoint: {written.fine_tune_checkpoint} (detection; @mediapipe/objectron" in shown


def test_checkpoint_none_means_random_weights_said_explicitly(records, tmp_path, capsys):
    output = tmp_path / "pipeline.config"
    argv = ["config", "efficientdet_d0", "--data", str(records), "--output", str(output), "--checkpoint", "none"]
    assert cli.main(argv) == 0
    assert "random initialisation, as asked by --checkpoint none" in capsys.readouterr().out
    assert not config.load(output).train_config.fine_tune_checkpoint
    assert cli.main(["config", "show", str(output)]) == 0
    assert "fine-tune checkpoint: none (random initialisation)" in capsys.readouterr().out


def test_no_pretrained_weights_stops_with_the_options(offline_cache, records, tmp_path, capsys):
    output = tmp_path / "pipeline.config"
    assert cli.main(["config", "efficientdet_d0", "--data", str(records), "--output", str(output)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: efficientdet_d0: no pretrained weights") and error.count("\n") == 1
    assert "pretrained download efficientdet_d0 --archive PATH" in error and "--checkpoint none" in error
    assert not output.exists()


def test_a_cached_zoo_checkpoint_is_preferred(offline_cache, imported_start):
    start = imported_start
    zoo = offline_cache / "models" / TEMPLATE_TARBALLS["ssd_mobilenet_v2"]
    shutil.copytree(start.folder / "checkpoint", zoo / "checkpoint")
    (zoo / MATCH_FILE).write_text("model section identical to pipelines/ssd_mobilenet_v2.config\n")
    try:
        chosen = default_start("ssd_mobilenet_v2", log=lambda *_: None)
        assert chosen.folder == zoo and chosen.origin.startswith("TF2 model zoo ssd_mobilenet_v2_320x320")
    finally:
        shutil.rmtree(zoo)
