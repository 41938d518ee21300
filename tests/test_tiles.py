"""Tiles of large images: the grid, box visibility and merging (NumPy), sliced inference through a real Detector,
`tfrecords --tile` read back with TensorFlow and the TFOD decoder, its memory on a large image, and eval's maxDets.

The real detector's sliced detect and eval are in test_tiles_detector.py (they need the trained detector)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import feature, photo, read_examples, voc_xml
from PIL import Image

from tfod_wrap.cli import main
from tfod_wrap.core.detections import Detections
from tfod_wrap.core.detector import Detector
from tfod_wrap.core.sliced import SlicedDetector, Tiling
from tfod_wrap.core.tiles import Tile, TileError, ios, iou, merge, tile_grid, visible_part
from tfod_wrap.data import convert
from tfod_wrap.data.annotations import DataError
from tfod_wrap.evaluate.metrics import evaluate_detections

# ---- the grid --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, size, overlap", [(1000, 700, 320, 0.2), (2048, 1536, 512, 0.25), (641, 640, 640, 0)]
)
def test_grid_covers_the_image_with_the_overlap_asked(width, height, size, overlap):
    tiles = tile_grid(width, height, size, overlap)
    covered = np.zeros((height, width), bool)
    for tile in tiles:
        assert (tile.width, tile.height) == (size, size)  # no tile sticks out of the image, none is padded
        assert tile.x + tile.width <= width and tile.y + tile.height <= height
        covered[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width] = True
    assert covered.all()
    columns = sorted({tile.x for tile in tiles})
    assert columns[0] == 0 and columns[-1] + size == width
    assert all(size - (b - a) >= overlap * size - 1 for a, b in zip(columns, columns[1:]))


def test_an_image_smaller_than_a_tile_is_one_tile_the_whole_image():
    assert tile_grid(200, 150, 320) == [Tile(0, 0, 200, 150)]
    assert [(t.x, t.width, t.height) for t in tile_grid(900, 150, 320, 0.2)] == [
        (0, 320, 150),
        (193, 320, 150),
        (387, 320, 150),
        (580, 320, 150),
    ]


@pytest.mark.parametrize("size, overlap", [(16, 0.2), (320, 1.0), (320, -0.1)])
def test_bad_tiling_options_are_named(size, overlap):
    with pytest.raises(TileError, match="--tile"):
        tile_grid(1000, 1000, size, overlap)


def test_visibility_of_a_box_larger_than_a_tile_and_of_a_sliver():
    tile = Tile(100, 100, 320, 320)
    part, visible = visible_part((0, 0, 1000, 1000), tile)  # larger than the tile: fills it
    assert part == (0, 0, 320, 320) and visible == 1.0
    part, visible = visible_part((400, 150, 460, 210), tile)  # 20 of 60 px wide inside
    assert part == (300, 50, 320, 110) and visible == pytest.approx(1 / 3)
    assert visible_part((500, 500, 560, 560), tile) == (None, 0.0)


# ---- merging (pixel boxes, NumPy) -------------------------------------------------------------------------------


def test_nms_keeps_an_object_seen_by_two_tiles_once_and_drops_the_cut_part():
    whole = [300, 100, 400, 180]  # whole in the right tile
    part = [300, 100, 320, 180]  # what the left tile (ending at x=320) saw: IoU 0.2 with the whole box
    other = [500, 100, 560, 150]
    boxes, scores, classes = merge(
        np.array([part, whole, other]), np.array([0.9, 0.8, 0.7]), np.array([1, 1, 1]), np.array([True, False, False])
    )
    assert boxes.tolist() == [part, other] or boxes.tolist() == [whole, other]
    assert len(boxes) == 2 and scores.tolist() == [0.9, 0.7]
    # without the cut flag the part is a box of its own (plain NMS at IoU 0.5)
    assert len(merge(np.array([part, whole]), np.array([0.9, 0.8]), np.array([1, 1]))[0]) == 2


def test_fuse_joins_the_two_parts_of_an_object_that_no_tile_saw_whole():
    left = [250, 100, 330, 160]  # left tile ends at 330
    right = [280, 102, 400, 158]  # right tile starts at 280
    boxes, scores, _ = merge(
        np.array([left, right]), np.array([0.6, 0.9]), np.array([2, 2]), np.array([True, True]), method="fuse"
    )
    assert boxes.tolist() == [[250, 100, 400, 160]] and scores.tolist() == [0.9]
    boxes, _, _ = merge(np.array([left, right]), np.array([0.6, 0.9]), np.array([2, 2]), np.array([True, True]))
    assert boxes.tolist() == [right]  # nms: the best part


def test_fuse_leaves_out_weak_members_and_keeps_classes_apart():
    strong, weak = [0, 0, 50, 50], [0, 0, 90, 50]  # the weak one scores under half the best: suppressed, not joined
    same_place_other_class = [0, 0, 50, 50]
    boxes, scores, classes = merge(
        np.array([strong, weak, same_place_other_class]),
        np.array([0.8, 0.3, 0.7]),
        np.array([1, 1, 2]),
        np.array([True, True, False]),
        method="fuse",
    )
    assert boxes.tolist() == [strong, same_place_other_class] and classes.tolist() == [1, 2]


def test_merge_caps_nothing():
    boxes = np.array([[x, y, x + 10, y + 10] for x in range(0, 400, 20) for y in range(0, 300, 20)], float)
    for method in ("nms", "fuse"):
        kept, _, _ = merge(boxes, np.linspace(1, 0.1, len(boxes)), np.ones(len(boxes)), method=method)
        assert len(kept) == len(boxes) == 300


def _brute_force_nms(boxes, scores, cut, threshold=0.5):
    """Greedy grouping comparing every kept box with every later free box: what merge must equal."""
    order = np.lexsort((cut, -scores))
    free, kept = np.ones(len(boxes), bool), []
    for position, index in enumerate(order):
        if not free[index]:
            continue
        kept.append(index)
        others = order[position + 1 :]
        others = others[free[others]]  # each compared with the kept box on its own: one row of pairs at a time
        match = iou(boxes[index], boxes[others]) >= threshold
        inside = ios(boxes[index], boxes[others]) >= threshold
        free[others] = ~(match | ((cut[index] | cut[others]) & inside))
    return sorted(kept)


@pytest.mark.parametrize("seed", range(5))
def test_merge_groups_as_comparing_every_pair_would(seed):
    rng = np.random.default_rng(seed)
    count = 300
    corners = rng.integers(0, 400, (count, 2)).astype(float)
    boxes = np.concatenate([corners, corners + rng.integers(0, 60, (count, 2))], axis=1)  # zero-width ones too
    scores, cut = rng.random(count).round(2), rng.random(count) < 0.3  # ties in the scores too
    kept, kept_scores, _ = merge(boxes, scores, np.ones(count), cut)
    expected = _brute_force_nms(boxes, scores, cut)
    assert sorted(kept_scores.tolist()) == sorted(scores[expected].tolist())
    assert len(kept) == len(expected)


def test_merge_rejects_an_unknown_method():
    with pytest.raises(TileError, match="--tile-merge 'wbf'"):
        merge(np.zeros((1, 4)), np.ones(1), np.ones(1), method="wbf")


# ---- sliced inference through a Detector -------------------------------------------------------------------------


class ColourDetector(Detector):
    """A real, exact detector for test images: each colour of its palette is one object of that colour's class,
    found as the bounding box of its pixels in the image it is given (so a tile sees the part of an object inside
    it), at most `limit` a call as TFOD's max_total_detections. Keeps the sizes it was given."""

    def __init__(self, palette: dict[tuple[int, int, int], int] | None = None, limit: int = 100):
        self.palette = palette or {RED: 1, BLUE: 2}
        self.limit = limit
        self.shapes: list[tuple[int, int]] = []

    def __call__(self, image: np.ndarray) -> Detections:
        self.shapes.append(image.shape[:2])
        height, width = image.shape[:2]
        codes = image.astype(np.int64) @ [65536, 256, 1]
        boxes, classes = [], []
        for code in np.unique(codes):
            colour = (int(code) >> 16, (int(code) >> 8) & 255, int(code) & 255)
            if colour in self.palette:
                ys, xs = np.nonzero(codes == code)
                boxes.append([ys.min() / height, xs.min() / width, (ys.max() + 1) / height, (xs.max() + 1) / width])
                classes.append(self.palette[colour])
        boxes, classes = boxes[: self.limit], classes[: self.limit]
        return Detections(np.array(boxes).reshape(-1, 4), np.array(classes), np.full(len(classes), 0.9))


RED, BLUE = (255, 0, 0), (0, 0, 255)


def canvas(width: int, height: int, objects: list[tuple[tuple[int, int, int], list[int]]]) -> np.ndarray:
    pixels = np.full((height, width, 3), 128, np.uint8)
    for colour, (xmin, ymin, xmax, ymax) in objects:
        pixels[ymin:ymax, xmin:xmax] = colour
    return pixels


def pixel_boxes(found: Detections, width: int, height: int) -> list[list[float]]:
    return np.round(found.boxes[:, [1, 0, 3, 2]] * [width, height, width, height], 3).tolist()


@pytest.mark.parametrize("method", ["nms", "fuse"])
def test_sliced_boxes_map_back_and_an_object_across_a_tile_border_is_kept_once(method):
    # tiles of 320 over 1000 x 700 start at x 0, 227, 453, 680 and y 0, 190, 380: the first object crosses x=320 and
    # lies whole in the second column; no tile holds the second whole (453 > 400, 547 < 640)
    objects = [(RED, [280, 100, 360, 160]), (BLUE, [400, 400, 640, 470]), (RED, [900, 600, 960, 690])]
    image = canvas(1000, 700, objects)
    detector = ColourDetector()
    found = SlicedDetector(detector, Tiling(320, merge=method))(image)
    assert set(detector.shapes) == {(320, 320)} and len(detector.shapes) == len(tile_grid(1000, 700, 320)) == 12
    boxes = pixel_boxes(found, 1000, 700)
    assert sorted(found.classes.tolist()) == [1, 1, 2]  # each object once
    assert [280, 100, 360, 160] in boxes and [900, 600, 960, 690] in boxes  # whole in some tile: exact
    blue = boxes[found.classes.tolist().index(2)]
    if method == "fuse":
        assert blue == [400, 400, 640, 470]  # the parts joined into the whole object
    else:
        assert blue == [400, 400, 547, 470]  # the best part (its tile came first)


def test_sliced_image_smaller_than_a_tile_is_one_call_on_the_whole_image():
    image = canvas(200, 150, [(RED, [10, 20, 60, 80])])
    detector = ColourDetector()
    found = SlicedDetector(detector, Tiling(320, full_image=True))(image)
    assert detector.shapes == [(150, 200)]  # no second whole-image pass: the tile is the whole image
    assert pixel_boxes(found, 200, 150) == [[10, 20, 60, 80]]


@pytest.mark.parametrize("method", ["nms", "fuse"])
def test_whole_image_pass_finds_an_object_larger_than_a_tile(method):
    image = canvas(1000, 700, [(BLUE, [100, 50, 900, 650])])
    detector = ColourDetector()
    found = SlicedDetector(detector, Tiling(320, merge=method, full_image=True))(image)
    assert detector.shapes[-1] == (700, 1000)
    assert pixel_boxes(found, 1000, 700) == [[100, 50, 900, 650]]


def test_sliced_detections_are_not_capped_at_100_per_image():
    objects, palette = [], {}
    for i in range(25):
        for j in range(15):
            colour = (10 + i, 10 + j, 200)
            palette[colour] = 1 + (i + j) % 2
            objects.append((colour, [i * 40 + 5, j * 40 + 5, i * 40 + 25, j * 40 + 25]))
    found = SlicedDetector(ColourDetector(palette, limit=100), Tiling(200))(canvas(1000, 600, objects))
    assert sorted(map(tuple, pixel_boxes(found, 1000, 600))) == sorted(tuple(b) for _, b in objects)  # all 375, once


# ---- tfrecords --tile -------------------------------------------------------------------------------------------


def write_voc(root: Path, specs: list[tuple[str, tuple[int, int], list[dict]]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index, (name, size, objects) in enumerate(specs):
        photo(*size, seed=index).save(root / name)
        (root / Path(name).with_suffix(".xml").name).write_text(voc_xml(name, size, objects))
    return root


def box(name: str, xmin: int, ymin: int, xmax: int, ymax: int) -> dict:
    return {"name": name, "xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}


SPECS = [
    # a box across the border of the first two tiles, a box larger than a tile, a small one in one tile
    (
        "large.png",
        (1000, 700),
        [box("a", 300, 100, 360, 160), box("b", 10, 10, 900, 690), box("a", 700, 500, 730, 530)],
    ),
    ("small.jpg", (200, 150), [box("a", 10, 10, 50, 50)]),  # smaller than a tile
    ("empty.png", (700, 500), []),
    ("other.png", (800, 400), [box("a", 600, 300, 650, 350)]),
]


@pytest.fixture(scope="module")
def tiled(tmp_path_factory) -> tuple[Path, Path, dict]:
    root = tmp_path_factory.mktemp("tiled")
    voc = write_voc(root / "voc", SPECS)
    report = convert(voc, root / "records", tile=320, split="train=0.5,val=0.5", workers=1)
    return voc, root / "records", report


def records_of(folder: Path) -> dict[str, list]:
    return {split: read_examples([folder / f"{split}.record"]) for split in ("train", "val")}


def test_every_tile_maps_back_to_its_source(tiled):
    voc, records, report = tiled
    sources = {name: (size, objects) for name, size, objects in SPECS}
    seen: dict[str, list[tuple[int, int]]] = {}
    for example in sum(records_of(records).values(), []):
        source = feature(example, "image/tile/source_filename")[0].decode()
        x, y = feature(example, "image/tile/x")[0], feature(example, "image/tile/y")[0]
        width, height = feature(example, "image/width")[0], feature(example, "image/height")[0]
        assert feature(example, "image/tile/source_id")[0].decode() == source
        size, objects = sources[source]
        assert (feature(example, "image/tile/source_width")[0], feature(example, "image/tile/source_height")[0]) == size
        pixels = np.asarray(Image.open(io.BytesIO(feature(example, "image/encoded")[0])).convert("RGB"))
        original = np.asarray(Image.open(voc / source).convert("RGB"))[y : y + height, x : x + width]
        if source.endswith(".png"):
            assert np.array_equal(pixels, original)  # lossless: the very pixels of the source at the offset
        for corners in zip(*(feature(example, f"image/object/bbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax"))):
            mapped = np.array(corners) * [width, height, width, height] + [x, y, x, y]
            # each tile box is a source box clipped to the tile
            clipped = [
                [max(o["xmin"], x), max(o["ymin"], y), min(o["xmax"], x + width), min(o["ymax"], y + height)]
                for o in objects
            ]
            assert min(np.abs(np.array(clipped) - mapped).max(axis=1)) < 1e-3
        seen.setdefault(source, []).append((x, y))
    assert sorted(seen["large.png"]) == sorted((t.x, t.y) for t in tile_grid(1000, 700, 320))
    assert seen["small.jpg"] == [(0, 0)] and len(seen["empty.png"]) == len(tile_grid(700, 500, 320))


def test_tiles_of_an_image_stay_in_its_split_the_split_it_gets_untiled(tiled, tmp_path):
    voc, records, report = tiled
    untiled = convert(voc, tmp_path / "whole", split="train=0.5,val=0.5", workers=1)
    for split, examples in records_of(records).items():
        tiled_sources = {feature(e, "image/tile/source_filename")[0].decode() for e in examples}
        whole = {
            feature(e, "image/filename")[0].decode() for e in read_examples([tmp_path / "whole" / f"{split}.record"])
        }
        assert tiled_sources == whole
        assert report["splits"][split]["source_images"] == untiled["splits"][split]["images"] == 2


def test_box_across_a_border_larger_than_a_tile_and_image_smaller_than_a_tile(tiled):
    voc, records, report = tiled
    examples = sum(records_of(records).values(), [])
    by_name = {feature(e, "image/filename")[0].decode(): e for e in examples}
    # smaller than a tile: one record of the file's own bytes
    small = by_name["small.tile-x0-y0.jpg"]
    assert feature(small, "image/encoded")[0] == (voc / "small.jpg").read_bytes()
    # tiles of 320 over 1000 x 700 start at x 0, 227, 453, 680 and y 0, 190, 380
    first, second = by_name["large.tile-x0-y0.png"], by_name["large.tile-x227-y0.png"]

    def boxes(example):
        names = [n.decode() for n in feature(example, "image/object/class/text")]
        sides = zip(*(feature(example, f"image/object/bbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")))
        return [
            (n, [round(v * 320, 3) for v in s], t)
            for n, s, t in zip(names, sides, feature(example, "image/object/truncated"))
        ]

    # the box across x=320 shows 20 of 60 px in the first tile: dropped there, whole in the second
    assert [b for b in boxes(first) if b[0] == "a"] == []
    assert ("a", [73, 100, 133, 160], 0) in boxes(second)
    # the box larger than a tile is kept, clipped and marked truncated, in every tile it fills
    assert ("b", [10, 10, 320, 320], 1) in boxes(first)
    assert all(any(b[0] == "b" for b in boxes(e)) for n, e in by_name.items() if n.startswith("large."))
    tiling = report["tiling"]
    assert tiling["source_images"] == 4 and tiling["tiles"] == report["images_written"] == len(examples)
    assert tiling["boxes_dropped"] >= 1 and tiling["boxes_clipped"] >= 12 and tiling["objects_in_no_tile"] == 0
    assert tiling["negative_tiles"] == sum(split["negatives"] for split in report["splits"].values()) > 0


def test_tfod_decoder_reads_tiles_and_ignores_the_tile_keys(tiled):
    import tensorflow as tf
    from object_detection.core import standard_fields as fields
    from object_detection.data_decoders.tf_example_decoder import TfExampleDecoder

    _, records, _ = tiled
    decoder = TfExampleDecoder()
    raw = next(iter(tf.data.TFRecordDataset([str(records / "train.record"), str(records / "val.record")])))
    example = tf.train.Example.FromString(raw.numpy())
    decoded = decoder.decode(raw)
    assert not any("tile" in key for key in decoded)
    assert decoded[fields.InputDataFields.image].shape[:2] == (
        feature(example, "image/height")[0],
        feature(example, "image/width")[0],
    )
    expected = np.stack([feature(example, f"image/object/bbox/{k}") for k in ("ymin", "xmin", "ymax", "xmax")], axis=-1)
    np.testing.assert_allclose(decoded[fields.InputDataFields.groundtruth_boxes].numpy(), expected.reshape(-1, 4))


def test_negative_ratio_keeps_that_share_of_empty_tiles_the_same_each_run(tmp_path):
    voc = write_voc(
        tmp_path / "voc", [("empty.png", (1200, 900), []), ("one.png", (640, 640), [box("a", 10, 10, 60, 60)])]
    )
    counts = {}
    for ratio in (0.0, 0.5, 1.0):
        tiling = convert(voc, tmp_path / f"r{ratio}", tile=256, negative_ratio=ratio, workers=1)["tiling"]
        counts[ratio] = (tiling["negative_tiles"], tiling["negative_tiles_left_out"])
    total = sum(counts[1.0])
    assert counts[0.0] == (0, total) and counts[1.0] == (total, 0)
    assert 0 < counts[0.5][0] < total
    again = convert(voc, tmp_path / "again", tile=256, negative_ratio=0.5, workers=2)["tiling"]
    assert (again["negative_tiles"], again["negative_tiles_left_out"]) == counts[0.5]
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "r0.5").glob("*.record")}
    assert sha == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "again").glob("*.record")}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tile", "8"], "--tile 8"),
        (["--tile", "320", "--tile-overlap", "1"], "--tile-overlap 1"),
        (["--tile", "320", "--min-visible", "0"], "--min-visible 0"),
        (["--tile", "320", "--negative-ratio", "2"], "--negative-ratio 2"),
    ],
)
def test_bad_tile_options_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    voc = write_voc(tmp_path / "voc", [("one.png", (64, 48), [box("a", 1, 1, 20, 20)])])
    assert main(["tfrecords", "--input", str(voc), "--output", str(tmp_path / "out"), *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError):
        convert(voc, tmp_path / "out", tile=int(flags[1]), **_options(flags[2:]))


def _options(flags: list[str]) -> dict:
    return {flags[i][2:].replace("-", "_"): float(flags[i + 1]) for i in range(0, len(flags), 2)}


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's peak-memory reset")
def test_memory_stays_flat_on_a_large_image_whatever_the_number_of_tiles(tmp_path):
    """A 6000 x 6000 JPEG (103 MiB decoded, 7 MiB of file): the peak memory of the conversion is the decoded image
    and little more, and the same for 64 tiles as for 900 (holding the tiles would grow with their count). Measured
    here: 123 and 113 MiB; a 10,000 x 10,000 JPEG (286 MiB decoded) took 324 MiB."""
    side = 6000
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8)).resize((side, side)).save(
        tmp_path / "big.jpg", quality=90
    )
    objects = [box("a", x, x, x + 30, x + 30) for x in range(100, side - 100, 499)]
    (tmp_path / "big.xml").write_text(voc_xml("big.jpg", (side, side), objects))
    # The peak (VmHWM) of the child alone: ru_maxrss would carry this process's peak over the exec, and
    # clear_refs 5 resets the peak after the imports
    script = textwrap.dedent(
        """
        import json, re, sys
        from tfod_wrap.data import convert

        def peak():
            return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) / 1024

        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        before = peak()
        report = convert(sys.argv[1], sys.argv[2], tile=int(sys.argv[3]), workers=1)
        print(json.dumps({"growth_mib": peak() - before, "tiles": report["tiling"]["tiles"]}))
        """
    )
    runs = {}
    for size in (1024, 256):
        out = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), str(tmp_path / f"out{size}"), str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs[size] = json.loads(out.stdout.strip().splitlines()[-1])
    decoded_mib = side * side * 3 / 2**20
    assert runs[1024]["tiles"] == 64 and runs[256]["tiles"] == 900
    for run in runs.values():
        assert run["growth_mib"] < 1.25 * decoded_mib + 16, runs
    assert abs(runs[256]["growth_mib"] - runs[1024]["growth_mib"]) < 32, runs


# ---- eval: maxDets ----------------------------------------------------------------------------------------------


def test_eval_raises_max_dets_where_an_image_has_more_than_100_objects():
    boxes = [[x * 20.0, y * 20.0, 10.0, 10.0] for x in range(15) for y in range(10)]
    groundtruth = {
        "images": [{"id": 1, "width": 300, "height": 200}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": 100.0, "iscrowd": 0}
            for i, b in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "a"}],
    }
    detections = [{"image_id": 1, "category_id": 1, "bbox": b, "score": 0.9} for b in boxes]
    metrics = evaluate_detections(groundtruth, detections)
    assert metrics["max_detections"] == 150
    for name in ("mAP", "mAP@.50IOU", "mAP (small)"):  # mAP too: COCO's summarize() fixes it at 100 detections
        assert metrics["coco"][f"DetectionBoxes_Precision/{name}"] == pytest.approx(1.0)
    assert metrics["coco"]["DetectionBoxes_Recall/AR@100"] == pytest.approx(1.0)
    assert metrics["per_class"]["a"]["best_f1"]["recall"] == pytest.approx(1.0)
    few = evaluate_detections({**groundtruth, "annotations": groundtruth["annotations"][:5]}, detections[:5])
    assert few["max_detections"] == 100  # COCO's own where the data does not need more


def test_eval_tile_with_stored_detections_is_refused(tmp_path, capsys):
    code = main(["eval", "--detections", str(tmp_path), "--data", str(tmp_path), "--label-map", "x", "--tile", "320"])
    assert code == 2
    assert "--tile runs a model" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, flags, message",
    [
        (["detect", "in.jpg", "--model", "m", "--output", "out"], ["--tile", "8"], "--tile 8"),
        (["detect", "in.jpg", "--model", "m", "--output", "out"], ["--tile", "320", "--tile-overlap", "-1"], "overlap"),
        (["eval", "--saved-model", "m", "--data", "r", "--label-map", "l"], ["--tile", "0"], "--tile 0"),
    ],
)
def test_bad_sliced_options_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, command, flags, message):
    monkeypatch.chdir(tmp_path)
    assert main([*command, *flags]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists()
