"""The whole path through the installed `tfod-wrap`, from a scratch folder outside the checkout.

    python tools/smoke.py            # with the interpreter of the environment to check

Used by `make check-installs` on the other supported Pythons and on a wheel installed without the checkout:
small generated data -> tfrecords -> labelmap check -> config -> train (3 steps) -> eval -> export (SavedModel,
TF.js, TFLite, with --verify) -> detect -> serve (the page and the model answer). Each step is a real
`python -m tfod_wrap` process; the first failure stops the run with its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image


def write_voc(folder: Path, count: int = 8) -> None:
    """Textured images with one box each, two classes taking turns."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        pixels = rng.integers(0, 255, (72, 96, 3), dtype=np.uint8)
        pixels[8:60, 10:70] = (200, 40, 40) if index % 2 else (40, 40, 200)
        Image.fromarray(pixels).save(folder / f"{index}.jpg")
        name = "ab"[index % 2]
        (folder / f"{index}.xml").write_text(
            f"<annotation><filename>{index}.jpg</filename><size><width>96</width><height>72</height></size>"
            f"<object><name>{name}</name><bndbox><xmin>10</xmin><ymin>8</ymin><xmax>70</xmax><ymax>60</ymax>"
            "</bndbox></object></annotation>"
        )


def tfod_wrap(*arguments: str, cwd: Path) -> str:
    command = [sys.executable, "-m", "tfod_wrap", *arguments]
    print("$ tfod-wrap " + " ".join(arguments), flush=True)
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"smoke: `tfod-wrap {arguments[0]}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def check_serve(model: Path, cwd: Path) -> None:
    command = [sys.executable, "-m", "tfod_wrap", "serve", "--model", str(model), "--port", "0"]
    print(f"$ tfod-wrap serve --model {model} --port 0", flush=True)
    server = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()
        found = re.search(r"http://\S+", line)
        if not found:
            sys.exit(f"smoke: serve printed no address: {line}{server.stdout.read() if server.poll() else ''}")
        url = found.group(0).rstrip("/")
        for path in ("/", "/model/model.json"):
            with urllib.request.urlopen(url + path, timeout=30) as response:
                if response.status != 200:
                    sys.exit(f"smoke: serve answered {response.status} for {path}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tfod-wrap-smoke-") as scratch:
        root = Path(scratch)
        write_voc(root / "voc")
        print(tfod_wrap("--version", cwd=root).strip())
        tfod_wrap("tfrecords", "--input", "voc", "--output", "records", "--split", "train=0.5,val=0.5", cwd=root)
        tfod_wrap("labelmap", "check", "records/label_map.pbtxt", cwd=root)
        size = ["--set", "model.image_resizer.fixed_shape_resizer.height=160"]
        size += ["--set", "model.image_resizer.fixed_shape_resizer.width=160"]
        tfod_wrap(
            "config", "ssd_mobilenet_v2", "--data", "records", "--output", "run/pipeline.config",
            "--batch-size", "2", "--steps", "3", "--checkpoint", "none", *size, cwd=root,
        )  # fmt: skip
        tfod_wrap("train", "--pipeline", "run/pipeline.config", "--model-dir", "run", cwd=root)
        tfod_wrap("eval", "--pipeline", "run/pipeline.config", "--model-dir", "run", cwd=root)
        tfod_wrap(
            "export", "--pipeline", "run/pipeline.config", "--model-dir", "run", "--output", "run/export",
            "--formats", "saved_model,tfjs,tflite", "--verify", cwd=root,
        )  # fmt: skip
        tfod_wrap("detect", "voc/0.jpg", "--model", "run/export/saved_model", "--output", "detections", cwd=root)
        drawn = list((root / "detections" / "images").glob("*.jpg"))
        if not drawn or not (root / "detections" / "images.json").is_file():
            sys.exit(f"smoke: detect wrote no image: {sorted(p.name for p in (root / 'detections').iterdir())}")
        check_serve(root / "run" / "export" / "tfjs", cwd=root)
    print(f"smoke: the whole path ran in {time.perf_counter() - began:.0f} s with {sys.executable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
