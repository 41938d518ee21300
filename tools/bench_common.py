"""What the benchmarks share: deterministic synthetic detection data (shapes drawn on a background,
annotated as Pascal VOC the way LabelImg writes it) and a description of the machine."""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil
from PIL import Image, ImageDraw


def in_workdir(workdir: Path | None, prefix: str, benchmark: Callable[[Path], dict]) -> dict:
    """benchmark(folder) in --workdir (which must be new or empty, and is kept) or in a temporary folder (removed)."""
    folder = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    if workdir and workdir.exists() and any(workdir.iterdir()):
        raise SystemExit(f"{workdir} is not empty; pass a new or empty --workdir")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return benchmark(folder)
    finally:
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


def load_and_total(results: dict) -> str:
    """The closing words of a run that recorded `loadavg_before`, `loadavg_after` and `total_seconds`: how busy the
    machine was around it, and how long it took."""
    return (
        f"load average before {results['loadavg_before'][0]:.2f}, after {results['loadavg_after'][0]:.2f}; "
        f"total {results['total_seconds']:.0f} s"
    )


def machine() -> dict:
    """CPU count and model, memory, Python and OS, for the record of a benchmark run."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        # TensorFlow turns its oneDNN kernels on by itself only with AVX-512 VNNI or newer: timings differ by CPU kind
        "cpu_avx512": [flag for flag in flags if flag.startswith("avx512")],
        "cpu_amx": [flag for flag in flags if flag.startswith("amx")],  # bfloat16 matrix units (oneDNN uses them)
        "ram_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def random_boxes(
    rng: np.random.Generator,
    image_size: tuple[int, int],
    classes: tuple[str, ...],
    max_boxes: int,
    box_widths: tuple[int, int],
    box_heights: tuple[int, int],
) -> list[tuple[str, int, int, int, int]]:
    """1..max_boxes boxes (class, xmin, ymin, xmax, ymax) that fit in the image."""
    image_width, image_height = image_size
    boxes = []
    for _ in range(rng.integers(1, max_boxes + 1)):
        width, height = int(rng.integers(*box_widths)), int(rng.integers(*box_heights))
        xmin, ymin = int(rng.integers(0, image_width - width)), int(rng.integers(0, image_height - height))
        boxes.append((str(rng.choice(classes)), xmin, ymin, xmin + width, ymin + height))
    return boxes


def draw_objects(image: Image.Image, boxes: list, rng: np.random.Generator) -> None:
    """Each box filled with a random colour: an ellipse, a rectangle or a triangle, after its class."""
    draw = ImageDraw.Draw(image)
    for name, xmin, ymin, xmax, ymax in boxes:
        colour = tuple(int(value) for value in rng.integers(0, 256, size=3))
        if name == "ellipse":
            draw.ellipse((xmin, ymin, xmax, ymax), fill=colour)
        elif name == "rectangle":
            draw.rectangle((xmin, ymin, xmax, ymax), fill=colour)
        else:
            draw.polygon([((xmin + xmax) // 2, ymin), (xmin, ymax), (xmax, ymax)], fill=colour)


def voc_xml(filename: str, boxes: list, image_size: tuple[int, int]) -> ET.ElementTree:
    """A LabelImg-style Pascal VOC annotation."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "images"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image_size[0]), ("height", image_size[1]), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for name, *coordinates in boxes:
        obj = ET.SubElement(root, "object")
        for tag, value in (("name", name), ("pose", "Unspecified"), ("truncated", "0"), ("difficult", "0")):
            ET.SubElement(obj, tag).text = value
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), coordinates, strict=True):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root)
    return ET.ElementTree(root)
