"""`tfod-wrap`: one flat command line over the library. The options of each command are declared as a typed
class in tfod_wrap.commands; this module builds the parser from them and prints results. The work is done by the
stage packages, which the tests call directly."""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

# TensorFlow's C++ start-up chatter (CUDA probes, oneDNN notices) buries the tool's own output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tfod_wrap import __version__, commands, config, data  # noqa: E402  (the variable must be set before TF loads)
from tfod_wrap.compat.hooks import quiet_native_startup  # noqa: E402
from tfod_wrap.core import labelmap, options, records  # noqa: E402
from tfod_wrap.core.errors import Interrupted, UserError  # noqa: E402
from tfod_wrap.core.processes import ctrl_c_delivered  # noqa: E402
from tfod_wrap.core.recipe import RECIPES, TrainRecipe, find_recipe  # noqa: E402
from tfod_wrap.core.textfiles import read_text  # noqa: E402
from tfod_wrap.export.formats import ALWAYS, DEFAULT_FORMATS, FORMATS, QUANTIZE  # noqa: E402
from tfod_wrap.web import site as web_site  # noqa: E402


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
        raise config.ConfigError(f"usage: {commands.CONFIG_USAGE.splitlines()[0]}")
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
        args.pipeline, args.model_dir, recipe, resume=args.resume, progress=True, **options.given(args, TrainRecipe)
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
        print(f"wrote {evaluate.eval_folder(args.model_dir, args.output)} (metrics.json, plots, TensorBoard scalars)")
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


# Each command: its option classes (tfod_wrap.commands) and what runs it. "a b" is the subcommand b of a, whose
# own entry runs nothing.
COMMANDS: dict[str, tuple[tuple[type, ...], Callable[[argparse.Namespace], int] | None]] = {
    "sample": ((commands.Sample,), _sample),
    "tfrecords": ((commands.Tfrecords,), _tfrecords),
    "pretrained": ((commands.Pretrained,), None),
    "pretrained download": ((commands.PretrainedDownload,), _pretrained_download),
    "pretrained import-tflite": ((commands.PretrainedImport,), _pretrained_import),
    "labelmap": ((commands.Labelmap,), None),
    "labelmap build": ((commands.LabelmapBuild,), _labelmap_build),
    "labelmap check": ((commands.LabelmapCheck,), _labelmap_check),
    "config": ((commands.Config,), _config),
    "train": ((commands.Train,), _train),
    "variables": ((commands.Variables,), _variables),
    "eval": ((commands.Eval, commands.SlicedInference), _eval),
    "export": ((commands.Export,), _export),
    "detect": ((commands.Detect, commands.SlicedInference), _detect),
    "inspect": ((commands.Inspect,), _inspect),
    "serve": ((commands.Serve,), _serve),
    "install-web": ((commands.InstallWeb,), _install_web),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfod-wrap",
        description="The TensorFlow Object Detection API from annotations to a detector in the browser.",
    )
    parser.add_argument("--version", action="version", version=f"tfod-wrap {__version__}")
    texts = {
        "templates": ", ".join(config.templates()),
        "recipes": ", ".join(RECIPES),
        "formats": ", ".join(FORMATS),
        "default_formats": ",".join(DEFAULT_FORMATS),
    }
    groups = {"": parser.add_subparsers(dest="command", required=True, metavar="COMMAND")}
    parsers = {}
    for name, (classes, run) in COMMANDS.items():
        group, _, word = name.rpartition(" ")
        short, description = options.class_help(classes[0], texts)
        usage = commands.CONFIG_USAGE if name == "config" else None
        parsers[name] = groups[group].add_parser(word, help=short, description=description, usage=usage)
        for cls in classes:
            options.add_options(parsers[name], cls, texts)
        if run is None:
            groups[name] = parsers[name].add_subparsers(dest="action", required=True, metavar="ACTION")
        else:
            parsers[name].set_defaults(run=run)
    options.add_overrides(parsers["train"], TrainRecipe)
    options.add_overrides(parsers["variables"], TrainRecipe, ("freeze", "train_only"), clearable=False)
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
        with ctrl_c_delivered():
            return args.run(args)
    except UserError as error:
        return _fail(str(error))
    except OSError as error:
        # An OS refusal on a path the user named (a folder where a file goes, a full disk, no permission) is
        # theirs to fix. Without a file name it is no such refusal, and the traceback stays.
        if error.filename is None:
            raise
        return _fail(f"{error.filename}: {error.strerror or error}")
    except Interrupted as interrupted:
        print(f"interrupted; {interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return 130


def run() -> None:
    """The `tfod-wrap` program: main() on the command line's arguments, then exit with its status."""
    code = main()
    # The command is over; a Ctrl-C while Python shuts down (flushing logs, joining threads) would raise inside an
    # exit handler and print a traceback. Let it end the process at once instead.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.exit(code)


if __name__ == "__main__":
    run()
