"""`tfod-wrap pretrained download`: offline it fails fast and clearly; a tarball copied over by hand is unpacked
and its config compared with our template. (The real download needs the internet, which tests never use.)"""

from __future__ import annotations

import socket
import tarfile
import time
from pathlib import Path

import pytest
import tensorflow as tf

from tfod_wrap import cli, config
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.weights import MATCH_FILE
from tfod_wrap.pretrained.download import download, tarball_name


def zoo_tarball(folder: Path, pipeline_text: str) -> Path:
    """A tarball laid out as the zoo's: one top folder with checkpoint/ckpt-0.*, saved_model/ and pipeline.config."""
    top = folder / "ssd_mobilenet_v2_320x320_coco17_tpu-8"
    (top / "saved_model").mkdir(parents=True)
    tf.train.Checkpoint(step=tf.Variable(1)).write(str(top / "checkpoint" / "ckpt-0"))
    (top / "pipeline.config").write_text(pipeline_text)
    tarball = folder / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(top, arcname=top.name)
    return tarball


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_names_map_templates_to_tarballs():
    assert tarball_name("ssd_mobilenet_v2") == "ssd_mobilenet_v2_320x320_coco17_tpu-8"
    assert tarball_name("efficientdet_d1_coco17_tpu-32.tar.gz") == "efficientdet_d1_coco17_tpu-32"


def test_offline_download_fails_fast_naming_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TFOD_WRAP_ZOO_URL", f"http://127.0.0.1:{closed_port()}/")
    monkeypatch.setenv("TFOD_WRAP_CACHE", str(tmp_path / "cache"))
    started = time.monotonic()
    with pytest.raises(UserError, match=r"cannot download .* looks offline: .* --archive PATH"):
        download("ssd_mobilenet_v2", log=lambda *_: None)
    assert time.monotonic() - started < 15
    assert not list((tmp_path / "cache" / "models").iterdir()), "a failed download leaves files behind"


def test_archive_is_unpacked_into_the_cache_and_matched_to_the_template(tmp_path, monkeypatch):
    monkeypatch.setenv("TFOD_WRAP_CACHE", str(tmp_path / "cache"))
    template = config.to_text(config.load("ssd_mobilenet_v2"))
    folder = download("ssd_mobilenet_v2", archive=zoo_tarball(tmp_path, template), log=lambda *_: None)
    assert folder == tmp_path / "cache" / "models" / "ssd_mobilenet_v2_320x320_coco17_tpu-8"
    assert (folder / "checkpoint" / "ckpt-0.index").is_file() and (folder / "saved_model").is_dir()
    assert "model section identical to pipelines/ssd_mobilenet_v2.config" in (folder / MATCH_FILE).read_text()
    # the folder is usable as --checkpoint right away
    pipeline, _ = config.configure("ssd_mobilenet_v2", checkpoint=folder, check=False)
    assert pipeline.train_config.fine_tune_checkpoint == str((folder / "checkpoint" / "ckpt-0").resolve())
    # a second call finds it and does nothing
    assert download("ssd_mobilenet_v2", log=lambda *_: None) == folder


def test_a_differing_config_is_reported_field_by_field(tmp_path, monkeypatch):
    monkeypatch.setenv("TFOD_WRAP_CACHE", str(tmp_path / "cache"))
    changed = config.load("ssd_mobilenet_v2")
    changed.model.ssd.num_classes = 7
    folder = download("ssd_mobilenet_v2", archive=zoo_tarball(tmp_path, config.to_text(changed)), log=lambda *_: None)
    note = (folder / MATCH_FILE).read_text()
    assert "differs from pipelines/ssd_mobilenet_v2.config in 1 fields" in note and "num_classes: 90 -> 7" in note


def test_cli_reports_a_broken_archive(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"not a tarball")
    monkeypatch.setenv("TFOD_WRAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    code = cli.main(["pretrained", "download", "ssd_mobilenet_v2", "--archive", str(broken)])
    assert code == 2 and "not a readable model-zoo tarball" in capsys.readouterr().err
    assert not list((tmp_path / "cache" / "models").iterdir())
