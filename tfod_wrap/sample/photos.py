"""The photos the sample data is made of, and the cut-outs: objects masked out of them with shapes whose
coordinates were read off the photos. Every photo is installed with scikit-image or scikit-learn."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

CLASSES = ("cat", "cup", "rocket")

# --- the photos -----------------------------------------------------------------------------------------

SKIMAGE = "scikit-image"
SKLEARN = "scikit-learn"
# name -> (package, file inside the installed package, licence / credit)
PHOTOS = {
    "chelsea": (SKIMAGE, "skimage/data/chelsea.png", "CC0, photographer Stefan van der Walt"),
    "coffee": (SKIMAGE, "skimage/data/coffee.png", "CC0, photographer Rachel Michetti (courtesy Pikolo Espresso Bar)"),
    "rocket": (SKIMAGE, "skimage/data/rocket.jpg", "public domain, SpaceX (DSCOVR launch on Falcon 9)"),
    "astronaut": (SKIMAGE, "skimage/data/astronaut.png", "public domain, NASA (Eileen Collins)"),
    "camera": (SKIMAGE, "skimage/data/camera.png", "CC0, photographer Lav Varshney"),
    "coins": (SKIMAGE, "skimage/data/coins.png", "no known copyright restrictions, Brooklyn Museum Collection"),
    "brick": (SKIMAGE, "skimage/data/brick.png", "CC0, CC0Textures Bricks25"),
    "grass": (SKIMAGE, "skimage/data/grass.png", "CC0, DeviantArt linolafett Grass-01"),
    "gravel": (SKIMAGE, "skimage/data/gravel.png", "CC0, CC0Textures Gravel04"),
    "china": (SKLEARN, "sklearn/datasets/images/china.jpg", "CC BY 2.0, danielbuechele on Flickr"),
    "flower": (SKLEARN, "sklearn/datasets/images/flower.jpg", "CC BY 2.0, vultilion on Flickr"),
}


def _package_dir(package: str) -> Path:
    module = __import__("skimage" if package == SKIMAGE else "sklearn")
    return Path(module.__file__).resolve().parent.parent


@functools.cache
def photo(name: str) -> np.ndarray:
    """The photo as HxWx3 uint8 RGB (grayscale ones repeated to 3 channels)."""
    package, relative, _ = PHOTOS[name]
    with Image.open(_package_dir(package) / relative) as image:
        return np.ascontiguousarray(np.asarray(image.convert("RGB")))


# --- the cut-outs: masks drawn from coordinates read off the photos ---------------------------------------


@dataclass(frozen=True)
class CutoutSpec:
    label: str  # a class name, or what the distractor is
    photo: str
    shapes: tuple  # ("ellipse", cx, cy, rx, ry) and ("polygon", ((x, y), ...)), united
    scale: tuple[float, float]  # longer side, as a fraction of the image's shorter side
    tint: bool = False  # a grayscale photo: give it a random colour


FALCON9 = (
    (322, 126), (327, 129), (330, 134), (332, 140), (334, 148), (335, 156), (335, 178), (334, 181), (334, 345),
    (311, 345), (311, 181), (310, 178), (310, 156), (311, 148), (313, 140), (315, 134), (318, 129),
)  # fmt: skip
SHUTTLE = (
    (410, 4), (420, 9), (428, 18), (434, 30), (437, 44), (441, 39), (446, 41), (449, 51), (450, 64), (450, 204),
    (457, 212), (464, 222), (465, 236), (450, 241), (425, 244), (405, 247), (380, 247), (360, 241), (352, 232),
    (356, 221), (366, 208), (368, 195), (368, 105), (373, 96), (378, 90), (378, 55), (380, 45), (384, 39),
    (389, 42), (392, 52), (396, 35), (400, 20), (404, 11),
)  # fmt: skip
SPOON_TIP = ((398, 82), (410, 66), (421, 66), (423, 77), (409, 112))
PAGODA_ROOF = (
    (205, 27), (212, 44), (214, 68), (235, 82), (262, 95), (300, 105), (320, 116), (302, 134), (205, 138),
    (100, 134), (95, 117), (140, 100), (172, 86), (195, 68), (198, 44),
)  # fmt: skip

OBJECTS = {
    "cat": (CutoutSpec("cat", "chelsea", (("ellipse", 195, 160, 175, 155),), (0.16, 0.6)),),
    "cup": (
        CutoutSpec(
            "cup",
            "coffee",
            (("ellipse", 277, 232, 198, 160), ("ellipse", 291, 116, 119, 99), ("polygon", SPOON_TIP)),
            (0.16, 0.6),
        ),
    ),
    "rocket": (
        CutoutSpec("rocket", "rocket", (("polygon", FALCON9),), (0.4, 0.95)),
        CutoutSpec("rocket", "astronaut", (("polygon", SHUTTLE),), (0.25, 0.7)),
    ),
}
DISTRACTORS = (
    CutoutSpec("dahlia", "flower", (("ellipse", 307, 222, 137, 137),), (0.15, 0.5)),
    CutoutSpec("coin", "coins", (("ellipse", 333, 43, 28, 28),), (0.12, 0.35), tint=True),
    CutoutSpec("coin", "coins", (("ellipse", 342, 185, 31, 31),), (0.12, 0.35), tint=True),
    CutoutSpec("coin", "coins", (("ellipse", 46, 260, 28, 28),), (0.12, 0.35), tint=True),
    CutoutSpec("face", "astronaut", (("ellipse", 222, 100, 56, 86),), (0.2, 0.5)),
    CutoutSpec("helmet", "astronaut", (("ellipse", 398, 468, 118, 124),), (0.2, 0.5)),  # cut by the photo's edge
    CutoutSpec("badge", "astronaut", (("polygon", ((281, 342), (325, 346), (327, 371), (283, 370))),), (0.12, 0.3)),
    CutoutSpec("roof", "china", (("polygon", PAGODA_ROOF),), (0.25, 0.6)),
)

# Background regions (x0, y0, x1, y1) that hold none of the objects above.
BACKGROUNDS = (
    ("china", (0, 0, 640, 427), 2.0),
    ("flower", (0, 0, 640, 427), 1.0),
    ("rocket", (0, 0, 298, 427), 0.7),
    ("rocket", (345, 0, 640, 427), 0.7),
    ("astronaut", (0, 0, 345, 340), 1.0),  # above the mission patch, which shows a shuttle
    ("astronaut", (215, 290, 512, 512), 0.3),
    ("camera", (0, 0, 512, 512), 1.5),
    ("brick", (0, 0, 512, 512), 0.7),
    ("grass", (0, 0, 512, 512), 0.7),
    ("gravel", (0, 0, 512, 512), 0.7),
    ("coffee", (482, 0, 600, 400), 0.5),
)
GRAYSCALE = {"camera", "coins", "brick", "grass", "gravel"}


@dataclass
class Cutout:
    label: str
    rgb: np.ndarray  # h x w x 3 float32, 0..255: the photo around the object
    alpha: np.ndarray  # h x w float32, 0..1: the object's mask, anti-aliased
    hull: np.ndarray  # n x 2 float32: convex hull of alpha >= 0.5, in pixel-centre coordinates
    scale: tuple[float, float]
    tint: bool


@functools.cache
def cutout(spec: CutoutSpec) -> Cutout:
    image = photo(spec.photo)
    factor = 4  # draw the mask at 4x and average down: anti-aliased edges
    big = np.zeros((image.shape[0] * factor, image.shape[1] * factor), np.uint8)
    for shape in spec.shapes:
        if shape[0] == "ellipse":
            _, cx, cy, rx, ry = shape
            centre = (round((cx + 0.5) * factor - 0.5), round((cy + 0.5) * factor - 0.5))
            cv2.ellipse(big, centre, (round(rx * factor), round(ry * factor)), 0, 0, 360, 255, -1)
        else:
            points = np.round((np.asarray(shape[1], np.float64) + 0.5) * factor - 0.5).astype(np.int32)
            cv2.fillPoly(big, [points], 255)
    mask = cv2.resize(big, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    mask = cv2.GaussianBlur(mask, (0, 0), 0.8)  # a soft edge, as a real object's outline has
    ys, xs = np.nonzero(mask > 0.02)
    y0, y1, x0, x1 = max(ys.min() - 2, 0), ys.max() + 3, max(xs.min() - 2, 0), xs.max() + 3
    alpha = np.ascontiguousarray(mask[y0:y1, x0:x1])
    rgb = np.ascontiguousarray(image[y0:y1, x0:x1].astype(np.float32))
    contours, _ = cv2.findContours((alpha >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    hull = cv2.convexHull(np.concatenate(contours)).reshape(-1, 2).astype(np.float32)
    return Cutout(spec.label, rgb, alpha, hull, spec.scale, spec.tint)
