"""Image handling: pass-through, EXIF orientation, and modes TensorFlow would otherwise misread."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tensorflow as tf
from conftest import feature, photo, read_examples
from PIL import Image, ImageOps

from tfod_wrap.data import convert

BOX = {"name": "thing", "xmin": 2, "ymin": 2, "xmax": 20, "ymax": 30}


def exif_jpeg(path, orientation: int, size=(64, 48)):
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo(*size).save(path, quality=90, exif=exif.tobytes())


def only_example(out):
    (example,) = read_examples([out / "train.record"])
    return example


def decoded(example) -> np.ndarray:
    """The image as TensorFlow decodes it for training (three channels)."""
    return tf.io.decode_image(feature(example, "image/encoded")[0], channels=3).numpy()


def test_rgb_jpeg_passes_through_byte_for_byte(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": [BOX], "save": {"quality": 83}}])
    report = convert(voc, tmp_path / "out", workers=1)
    example = only_example(tmp_path / "out")
    assert feature(example, "image/encoded")[0] == (voc / "img000.jpg").read_bytes()
    assert report["image_handling"] == {"passed through": 1}


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_applied_when_annotation_matches_displayed_image(voc_dataset, tmp_path, orientation):
    voc = voc_dataset([{"objects": [BOX], "write_image": False}])
    displayed_size = (48, 64) if orientation in (6, 8) else (64, 48)
    voc_dataset([{"objects": [BOX], "write_image": False, "annotated_size": displayed_size}])
    exif_jpeg(voc / "img000.jpg", orientation)
    convert(voc, tmp_path / "out", workers=1)
    example = only_example(tmp_path / "out")
    pixels = decoded(example)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(voc / "img000.jpg")).convert("RGB"))
    assert pixels.shape == expected.shape == (displayed_size[1], displayed_size[0], 3)
    assert (feature(example, "image/width")[0], feature(example, "image/height")[0]) == displayed_size
    assert np.abs(pixels.astype(int) - expected).mean() < 4  # one JPEG re-encode at quality 95


def test_exif_ignored_when_annotation_matches_raw_pixels(voc_dataset, tmp_path):
    voc = voc_dataset([{"objects": [BOX], "write_image": False, "annotated_size": (64, 48)}])
    exif_jpeg(voc / "img000.jpg", 6)
    convert(voc, tmp_path / "out", workers=1)
    example = only_example(tmp_path / "out")
    assert feature(example, "image/encoded")[0] == (voc / "img000.jpg").read_bytes()
    assert decoded(example).shape == (48, 64, 3)


def save_mode(mode: str, fmt: str):
    def save(path):
        image = photo(64, 48)
        if mode == "RGBA":
            image = image.convert("RGBA")
            image.putalpha(Image.linear_gradient("L").resize((64, 48)))
        elif mode == "I;16":
            image = Image.fromarray(np.asarray(image.convert("L"), dtype="<u2") * 257)
        else:
            image = image.convert(mode)
        image.save(path, fmt)

    return save


@pytest.mark.parametrize(
    ("file", "mode", "fmt", "out_format", "passed"),
    [
        ("g.png", "L", "PNG", b"png", True),
        ("g.jpg", "L", "JPEG", b"jpeg", True),
        ("c.jpg", "CMYK", "JPEG", b"jpeg", False),
        ("a.png", "RGBA", "PNG", b"png", False),
        ("p.png", "P", "PNG", b"png", False),
        ("d.png", "I;16", "PNG", b"png", False),
        ("b.bmp", "RGB", "BMP", b"png", False),
        ("w.webp", "RGB", "WEBP", b"png", False),
    ],
)
def test_modes_decode_with_three_channels_and_right_size(voc_dataset, tmp_path, file, mode, fmt, out_format, passed):
    voc = voc_dataset([{"file": file, "objects": [BOX], "write_image": False}])
    save_mode(mode, fmt)(voc / file)
    report = convert(voc, tmp_path / "out", workers=1)
    example = only_example(tmp_path / "out")
    assert feature(example, "image/format") == [out_format]
    assert decoded(example).shape == (48, 64, 3)
    assert (feature(example, "image/encoded")[0] == (voc / file).read_bytes()) is passed
    assert report["images_written"] == 1


def test_rgba_is_flattened_onto_white(voc_dataset, tmp_path):
    voc = voc_dataset([{"file": "t.png", "objects": [BOX], "write_image": False}])
    transparent = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    transparent.save(voc / "t.png")
    convert(voc, tmp_path / "out", workers=1)
    assert decoded(only_example(tmp_path / "out")).min() == 255


def test_cmyk_colours_survive(voc_dataset, tmp_path):
    voc = voc_dataset([{"file": "c.jpg", "objects": [BOX], "write_image": False}])
    Image.new("RGB", (64, 48), (200, 30, 30)).convert("CMYK").save(voc / "c.jpg", quality=95)
    convert(voc, tmp_path / "out", workers=1)
    mean = decoded(only_example(tmp_path / "out")).reshape(-1, 3).mean(axis=0)
    assert mean == pytest.approx([200, 30, 30], abs=8)


def test_sha256_key_matches_encoded_bytes(voc_dataset, tmp_path):
    import hashlib

    voc = voc_dataset([{"file": "a.png", "objects": [BOX], "write_image": False}])
    save_mode("RGBA", "PNG")(voc / "a.png")
    convert(voc, tmp_path / "out", workers=1)
    example = only_example(tmp_path / "out")
    encoded = feature(example, "image/encoded")[0]
    assert feature(example, "image/key/sha256") == [hashlib.sha256(encoded).hexdigest().encode()]
    assert Image.open(io.BytesIO(encoded)).mode == "RGB"
