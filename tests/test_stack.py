"""The installed stack and the compatibility layer: versions, the fixes of tfod_wrap.compat, and the wheel."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import REPO

import tfod_wrap
from tfod_wrap import compat


def test_check_stack_names_the_stack_and_runs_legacy_keras():
    import tensorflow as tf

    described = compat.check_stack()
    assert f"TensorFlow {tf.__version__}" in described
    assert "tf-keras" in described and "(upb)" in described
    assert ".engine." in tf.keras.layers.Layer.__module__  # Keras 2, which the TFOD models are written for
    assert sys.version_info[:2] in compat.SUPPORTED_PYTHONS


def test_setuptools_keeps_pkg_resources_for_tensorflow_hub_and_the_tfjs_converter():
    """setuptools 81 dropped pkg_resources; tensorflow_hub imports it, and tensorflowjs imports tensorflow_hub."""
    major = int(metadata.version("setuptools").split(".")[0])
    assert major < 81
    subprocess.run(
        [sys.executable, "-c", "import tfod_wrap, tensorflow_hub; from tensorflowjs.converters import converter"],
        check=True,
        capture_output=True,
        timeout=300,
    )


def test_one_opencv_distribution_owns_cv2():
    installed = []
    for name in ("opencv-python", "opencv-python-headless", "opencv-contrib-python"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            installed.append((name, metadata.version(name)))
    assert len(installed) == 1, installed


def test_every_installed_package_is_the_pinned_one():
    """make install uses constraints.txt: what is installed is what it pins (markers for this Python applied)."""
    from packaging.requirements import Requirement

    mismatched = []
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # pinned for another Python or another extra
        if version not in requirement.specifier:
            mismatched.append(f"{requirement.name} {version} (pinned {requirement.specifier})")
    assert not mismatched


def test_removed_modules_get_stand_ins_that_say_why():
    from tensorflow.compat.v1 import estimator

    with pytest.raises(AttributeError, match="no Estimator API"):
        estimator.export.ServingInputReceiver  # noqa: B018
    import tensorflow_io

    with pytest.raises(AttributeError, match="DeepMAC"):
        tensorflow_io.experimental  # noqa: B018


def test_pillow_fonts_measure_text_again_for_tfod_drawing():
    import object_detection.utils.visualization_utils  # noqa: F401  (the import applies the patch)
    from PIL import ImageFont

    font = ImageFont.load_default()
    width, height = font.getsize("person: 87%")
    left, top, right, bottom = font.getbbox("person: 87%")
    assert (width, height) == (right, bottom) and width > height > 0


def test_python_m_and_version():
    result = subprocess.run(
        [sys.executable, "-m", "tfod_wrap", "--version"], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == f"tfod-wrap {tfod_wrap.__version__}"
    assert "Apache License\n                           Version 2.0" in (REPO / "LICENSE").read_text()


def test_wheel_runs_outside_the_checkout(tmp_path):
    """A non-editable wheel, put first on sys.path, run from another folder: templates, label maps and the
    page come from the package, not the repo layout."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "d", REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "d").glob("tfod_wrap-*.whl")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    environment = {**os.environ, "PYTHONPATH": str(target)}

    def run(*arguments: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "tfod_wrap", *arguments],
            cwd=work,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    location = subprocess.run(
        [sys.executable, "-c", "import tfod_wrap; print(tfod_wrap.__file__)"],
        cwd=work,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert Path(location.strip()).is_relative_to(target)
    from conftest import tiny_voc

    tiny_voc(work / "voc", 4)
    run("tfrecords", "--input", "voc", "--output", "records")
    run("labelmap", "check", "records/label_map.pbtxt")
    # --no-check: the template comes from the package either way; building EfficientDet is not the point here
    options = ["--data", "records", "--output", "pipeline.config", "--checkpoint", "none", "--no-check"]
    run("config", "efficientdet_d0", *options)
    assert "num_classes: 2" in (work / "pipeline.config").read_text()
    for shipped in ("web/static/index.html", "web/run_page.cjs", "web/package-lock.json", "core/run_tfjs.cjs"):
        assert (target / "tfod_wrap" / shipped).is_file(), shipped


def _plan(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess:
    """tools/install.sh with PLAN=1: which interpreter and what it would do to the venv, without installing."""
    environment = {**os.environ, "PLAN": "1", "VENV": str(tmp_path / "venv"), **variables}
    return subprocess.run(
        ["bash", REPO / "tools" / "install.sh"], env=environment, capture_output=True, text=True, timeout=120
    )


def test_install_refuses_an_unsupported_python_with_a_way_out(tmp_path):
    for python in ("python3.9", str(tmp_path / "no-such-python")):
        planned = _plan(tmp_path, PYTHON=python)
        assert planned.returncode == 2
        assert "needs Python 3.10, 3.11 or 3.12" in planned.stderr and "make install PYTHON=" in planned.stderr
    assert not (tmp_path / "venv").exists()


def test_install_picks_the_asked_python_and_recreates_a_venv_of_another(tmp_path):
    planned = _plan(tmp_path, PYTHON="python3.10")
    assert planned.returncode == 0 and "would install Python 3.10" in planned.stderr
    older = subprocess.run(
        ["bash", "-c", 'ls -d "$(pyenv root)"/versions/3.9*/bin/python3.9 | tail -n 1'], capture_output=True, text=True
    ).stdout.strip()
    if not older:
        pytest.skip("no Python 3.9 to make a venv of another version with")
    subprocess.run([older, "-m", "venv", "--without-pip", tmp_path / "venv"], check=True)
    planned = _plan(tmp_path, PYTHON="python3.12")
    assert planned.returncode == 0
    assert "was made by Python 3.9; recreating it with Python 3.12" in planned.stderr
