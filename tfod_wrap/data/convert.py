"""`tfod-wrap tfrecords`: annotations -> sharded TFRecords + label_map.pbtxt + report.json.

The work happens in a hidden staging folder next to the output, which replaces the output folder only
when everything succeeded: a failed, interrupted or `--strict` run leaves no output behind, and a
previous output stays intact until the new one is complete. Inputs are only ever read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

from tqdm import tqdm

import tfod_wrap
from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import check_output, claim_output, is_inside, read_json_object
from tfod_wrap.core.labelmap import label_map_from_names, read_label_map, write_label_map
from tfod_wrap.core.manifests import RecordsManifest
from tfod_wrap.core.processes import die_with_parent, raise_if_interrupted, terminate_as_interrupt, worker_pool
from tfod_wrap.core.tiles import DEFAULT_OVERLAP
from tfod_wrap.data.annotations import (
    DataError,
    Dataset,
    ImageAnnotation,
    Problem,
    annotation_files,
    detect_format,
    read_coco,
    read_csv,
    read_voc_file,
)
from tfod_wrap.data.encode import Chunk, Encoded, encode_chunk
from tfod_wrap.data.sources import check_sources
from tfod_wrap.data.split import parse_split, stratified_split
from tfod_wrap.data.tiling import COUNTS as TILE_COUNTS
from tfod_wrap.data.tiling import RecordTiling

REPORT = RecordsManifest.FILE
LABEL_MAP = "label_map.pbtxt"
TOOL = "tfod-wrap"
KIND = "tfrecords"  # the ownership marker's kind (tfod_wrap.core.files.claim_output)


def record_files(split: str, shards: int) -> list[str]:
    """File names of one split: `NAME.record`, or `NAME.record-0000i-of-0000K` when sharded."""
    if shards == 1:
        return [f"{split}.record"]
    return [f"{split}.record-{index:05d}-of-{shards:05d}" for index in range(shards)]


def record_pattern(split: str, shards: int) -> str:
    """The glob that TFOD's input_path accepts for one split."""
    return f"{split}.record" if shards == 1 else f"{split}.record-?????-of-{shards:05d}"


def convert(
    input_path: Path | str,
    output_dir: Path | str,
    *,
    images_dir: Path | str | None = None,
    fmt: str = "auto",
    label_map: Path | str | None = None,
    split: str | dict[str, float] = "train=1.0",
    seed: int = 0,
    shards: int = 1,
    strict: bool = False,
    workers: int | None = None,
    progress: bool = False,
    allow_outside_images: bool = False,
    tile: int | None = None,
    tile_overlap: float = DEFAULT_OVERLAP,
    min_visible: float = 0.5,
    negative_ratio: float = 1.0,
) -> dict:
    """Convert annotations to TFRecords; returns the report (also written to OUTDIR/report.json).

    Lenient by default: bad images are skipped and bad boxes clipped or dropped, each with a reason
    in the report. With `strict`, the first problem raises DataError naming the file and the problem.
    Images are read only inside their image folder (see `sources`) unless `allow_outside_images`.
    With `tile`, each image becomes the records of its tiles (see tiling.py); the split is still by image, so
    the tiles of one image are all in one split, the split the image gets without `tile`.
    """
    input_path, output_dir = Path(input_path), Path(output_dir)
    images_dir = Path(images_dir) if images_dir else None
    fractions = parse_split(split) if isinstance(split, str) else dict(split)
    if shards < 1:
        raise DataError(f"--shards must be at least 1, got {shards}")
    tiling = RecordTiling(tile, tile_overlap, min_visible, negative_ratio, seed) if tile is not None else None
    _check_paths(input_path, images_dir, output_dir)
    fmt = detect_format(input_path) if fmt == "auto" else fmt
    workers = workers or os.cpu_count() or 1

    # The workers write their parts into the staging folder, so the pool ends (its running chunks finished) before
    # the folder is removed: a part created while an interrupted run removed the folder kept it on disk.
    with terminate_as_interrupt(), claim_output(output_dir, KIND, legacy=_earlier_output) as staging:
        with _worker_pool(workers) as imap:
            dataset = _read(input_path, fmt, images_dir, imap)
            class_ids = read_label_map(Path(label_map)) if label_map else label_map_from_names(dataset.class_names)
            images, problems = _drop_duplicates(dataset.images)
            images, source_problems = check_sources(images, allow_outside_images, imap)
            problems = dataset.problems + problems + source_problems
            if strict and problems:
                raise _strict_error(problems[0])
            keys = _split_keys(images, input_path if input_path.is_dir() else input_path.parent)
            assignment = stratified_split(keys, [image.classes for image in images], fractions, seed)
            by_split = {name: [im for im, key in zip(images, keys) if assignment[key] == name] for name in fractions}
            chunks = _plan_chunks(by_split, staging, shards, workers, tiling)
            task = partial(encode_chunk, class_ids=class_ids, check_labels=label_map is not None)
            with tqdm(total=len(images), unit="img", desc="encoding", disable=not progress) as bar:
                results = _assemble(chunks, imap(task, chunks), staging, shards)
                summary = _summarise(results, fractions, strict, bar.update)
        write_label_map(class_ids, staging / LABEL_MAP)
        report = _report(input_path, fmt, fractions, shards, seed, class_ids, problems, summary, tiling)
        report.write(staging)
        _check_paths(input_path, images_dir, output_dir)  # still safe to replace?
    return report.to_json()


def annotated_classes(input_path: Path | str, fmt: str = "auto", workers: int | None = None) -> list[str]:
    """Class names found in the annotations, in label-map order (sorted; COCO: category-id order)."""
    input_path = Path(input_path)
    if not input_path.exists():
        raise DataError(f"{input_path}: no such file or folder")
    fmt = detect_format(input_path) if fmt == "auto" else fmt
    with terminate_as_interrupt(), _worker_pool(workers or os.cpu_count() or 1) as imap:
        return _read(input_path, fmt, None, imap).class_names


def summary_table(report: dict) -> str:
    """The end-of-run table: images and boxes per class for each split, then problem counts."""
    splits = report["splits"]
    header = ["", *splits]
    tiling = report.get("tiling")
    rows = [["source images", *(str(split["source_images"]) for split in splits.values())]] if tiling else []
    rows.append(["tiles" if tiling else "images", *(str(split["images"]) for split in splits.values())])
    rows.append(["  without boxes", *(str(split["negatives"]) for split in splits.values())])
    for name in report["classes"]:
        rows.append([f"boxes: {name}", *(str(split["boxes_per_class"][name]) for split in splits.values())])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    lines.append(f"images skipped: {report['images_skipped']}")
    for kind, count in sorted(report["problem_counts"].items()):
        lines.append(f"  {kind}: {count}")
    handled = ", ".join(f"{action}: {count}" for action, count in sorted(report["image_handling"].items()))
    lines.append(f"image handling: {handled or 'none'}")
    if tiling:
        lines.append(
            f"tiles of {tiling['size']} px, overlap {tiling['overlap']:g}: {tiling['tiles']} written "
            f"({tiling['negative_tiles']} without boxes; {tiling['negative_tiles_left_out']} more left out by "
            f"--negative-ratio {tiling['negative_ratio']:g})"
        )
        lines.append(
            f"boxes in tiles: {tiling['boxes_whole']} whole, {tiling['boxes_clipped']} clipped (kept, truncated), "
            f"{tiling['boxes_dropped']} dropped (less than {tiling['min_visible']:g} visible); objects in no tile: "
            f"{tiling['objects_in_no_tile']}"
        )
    return "\n".join(lines)


def _check_paths(input_path: Path, images_dir: Path | None, output_dir: Path) -> None:
    if not input_path.exists():
        raise DataError(f"{input_path}: no such file or folder")
    for source in filter(None, (input_path, images_dir)):
        if is_inside(source, output_dir):
            raise DataError(f"{output_dir}: the output folder contains the input {source}; choose another --output")
    try:
        check_output(output_dir, KIND, legacy=_earlier_output)
    except UserError as error:
        raise DataError(str(error)) from None


def _earlier_output(folder: Path) -> bool:
    """An output of the versions before the ownership marker: report.json names tfod-wrap, and the folder holds
    nothing but what tfrecords writes."""
    written = re.compile(rf"({re.escape(REPORT)}|{re.escape(LABEL_MAP)}|[^/]+\.record(-\d{{5}}-of-\d{{5}})?)")
    names = [path.name for path in folder.iterdir()]
    return _report_tool(folder / REPORT) == TOOL and all(written.fullmatch(name) for name in names)


def _report_tool(path: Path) -> str | None:
    return (read_json_object(path) or {}).get("tool")


@contextlib.contextmanager
def _worker_pool(workers: int) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """An ordered map over `workers` processes (inline when there is one), taking an optional
    chunksize. A worker that dies (killed for memory, say) fails the run with BrokenProcessPool
    instead of hanging it; workers die with this process (kill -9 included). Callers enter
    `terminate_as_interrupt` first, so a SIGTERM cleans up as Ctrl-C does."""
    if workers <= 1:
        yield lambda function, items, chunksize=1: map(function, items)
        return
    with worker_pool(workers, _process_context(), die_with_parent, (os.getpid(),)) as executor:
        yield lambda function, items, chunksize=1: _until_stopped(executor.map(function, items, chunksize=chunksize))


def _until_stopped(results: Iterator) -> Iterator:
    for result in results:
        raise_if_interrupted()
        yield result


def _process_context() -> multiprocessing.context.BaseContext:
    """Fork where the OS has it. Spawned (or fork-server) workers re-import the caller's __main__
    module, and a user's script that imports TensorFlow would then load it again in every worker
    (seconds and hundreds of MB each). Forking a process that holds TensorFlow's threads is safe
    here because the workers run only PIL, lxml, hashlib and protobuf code, never TensorFlow."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def _read(input_path: Path, fmt: str, images_dir: Path | None, imap: Callable) -> Dataset:
    files = annotation_files(input_path, fmt)
    if fmt == "coco":
        return read_coco(files[0], images_dir)
    if fmt == "csv":
        return read_csv(files[0], images_dir)
    if fmt != "voc":
        raise DataError(f"unknown format {fmt!r}; use auto, voc, coco or csv")
    if not files:
        raise DataError(f"{input_path}: no .xml annotation files")
    images, problems = [], []
    for result in imap(partial(read_voc_file, images_dir=images_dir), files, chunksize=128):
        (problems if isinstance(result, Problem) else images).append(result)
    return Dataset(images, problems, sorted({box.name for image in images for box in image.boxes}))


def _drop_duplicates(images: list[ImageAnnotation]) -> tuple[list[ImageAnnotation], list[Problem]]:
    """One record per image file: an image annotated twice would otherwise land in two splits."""
    first: dict[str, ImageAnnotation] = {}
    problems = []
    for image in images:
        key = os.path.abspath(image.image_path)  # (Path.resolve costs a syscall per path component)
        if key in first:
            problems.append(
                Problem(
                    image.annotation_file,
                    "duplicate image",
                    f"{image.image_path} is already annotated in {first[key].annotation_file}; skipped",
                )
            )
        else:
            first[key] = image
    return list(first.values()), problems


def _split_keys(images: list[ImageAnnotation], root: Path) -> list[str]:
    """Image paths relative to the input, so the split does not change when the dataset folder moves.
    (A prefix cut where it applies: os.path.relpath costs more than parsing the annotation.)"""
    prefix = os.path.join(os.path.abspath(root), "")
    keys = []
    for image in images:
        absolute = os.path.abspath(image.image_path)
        keys.append(absolute[len(prefix) :] if absolute.startswith(prefix) else os.path.relpath(absolute, root))
    return keys


def _strict_error(problem: Problem) -> DataError:
    return DataError(f"{problem} (--strict: nothing was written; without --strict such inputs are skipped)")


def _plan_chunks(
    by_split: dict[str, list[ImageAnnotation]],
    staging: Path,
    shards: int,
    workers: int,
    tiling: RecordTiling | None = None,
) -> list[Chunk]:
    """Image j of a split goes to shard j % shards (round robin, as TFOD's own tools do); each shard's
    images are cut into chunks small enough to keep every worker busy to the end (one image each when tiled:
    a large image is many records)."""
    total = sum(len(members) for members in by_split.values())
    size = 1 if tiling else max(1, min(64, math.ceil(total / (workers * 4))))
    chunks = []
    for split, members in by_split.items():
        for shard, file in enumerate(record_files(split, shards)):
            shard_images = members[shard::shards]
            for number, start in enumerate(range(0, len(shard_images), size)):
                part = staging / f".{file}.part{number:06d}"
                chunks.append(Chunk(shard_images[start : start + size], split, file, part, tiling))
    return chunks


def _summarise(results: Iterable[list[Encoded]], fractions: dict[str, float], strict: bool, advance) -> dict:
    summary = {
        "splits": {name: {"images": 0, "negatives": 0, "boxes": Counter(), "sources": 0} for name in fractions},
        "skipped": [],
        "box_problems": [],
        "actions": Counter(),
        "tiles": Counter(),
    }
    for chunk_results in results:
        advance(len(chunk_results))
        for result in chunk_results:
            if strict and result.problems:
                raise _strict_error(result.problems[0])
            if not result.written:
                summary["skipped"].extend(result.problems)
                continue
            summary["box_problems"].extend(result.problems)
            split = summary["splits"][result.split]
            split["sources"] += 1
            if result.tiles is None:
                split["images"] += 1
                split["negatives"] += not result.classes
            else:
                split["images"] += result.tiles["tiles"]
                split["negatives"] += result.tiles["negative_tiles"]
                summary["tiles"].update(result.tiles)
            split["boxes"].update(result.classes)
            summary["actions"][result.action] += 1
    return summary


def _assemble(
    chunks: list[Chunk], results: Iterable[list[Encoded]], staging: Path, shards: int
) -> Iterator[list[Encoded]]:
    """Append each finished chunk's part file to its shard file while the workers go on encoding."""
    with contextlib.ExitStack() as stack:
        files = {
            file: stack.enter_context(open(staging / file, "wb"))
            for split in dict.fromkeys(chunk.split for chunk in chunks)
            for file in record_files(split, shards)
        }
        for chunk, chunk_results in zip(chunks, results):
            _append(chunk.part, files[chunk.shard_file])
            yield chunk_results


def _append(part: Path, output) -> None:
    """A kernel-side copy (sendfile) where the OS allows it: the bytes never pass through Python."""
    with open(part, "rb") as source:
        remaining, offset = os.fstat(source.fileno()).st_size, 0
        try:
            while remaining:
                sent = os.sendfile(output.fileno(), source.fileno(), offset, remaining)
                offset, remaining = offset + sent, remaining - sent
        except OSError:  # sendfile to a regular file is Linux-only
            output.flush()
            source.seek(offset)
            shutil.copyfileobj(source, output)
    part.unlink()


def _report(
    input_path: Path,
    fmt: str,
    fractions: dict[str, float],
    shards: int,
    seed: int,
    class_ids: dict[str, int],
    read_problems: list[Problem],
    summary: dict,
    tiling: RecordTiling | None = None,
) -> RecordsManifest:
    skipped = read_problems + summary["skipped"]
    all_problems = skipped + summary["box_problems"]
    boxes = Counter()
    for split in summary["splits"].values():
        boxes.update(split["boxes"])
    return RecordsManifest(
        tool=TOOL,
        version=tfod_wrap.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        input=str(input_path.resolve()),
        format=fmt,
        seed=seed,
        shards=shards,
        label_map=LABEL_MAP,
        classes=class_ids,
        images_written=sum(split["images"] for split in summary["splits"].values()),
        images_skipped=len(skipped),
        boxes_per_class={name: boxes[name] for name in class_ids},
        problem_counts=dict(Counter(problem.kind for problem in all_problems)),
        image_handling=dict(summary["actions"]),
        tiling=_tiling_report(tiling, summary["tiles"]) if tiling else None,
        splits={
            name: {
                "fraction": fractions[name],
                **({"source_images": split["sources"]} if tiling else {}),
                "images": split["images"],
                "negatives": split["negatives"],
                "boxes_per_class": {class_name: split["boxes"][class_name] for class_name in class_ids},
                "files": record_files(name, shards),
                "pattern": record_pattern(name, shards),
            }
            for name, split in summary["splits"].items()
        },
        skipped=[dataclasses.asdict(problem) for problem in skipped],
        box_problems=[dataclasses.asdict(problem) for problem in summary["box_problems"]],
    )


def _tiling_report(tiling: RecordTiling, counts: Counter) -> dict:
    """The options and what they did: records are tiles; boxes counted per tile (a box in two tiles twice)."""
    return {
        "size": tiling.size,
        "overlap": tiling.overlap,
        "min_visible": tiling.min_visible,
        "negative_ratio": tiling.negative_ratio,
        **{name: counts[name] for name in TILE_COUNTS},
        "dropped_boxes": f"a box showing less than {tiling.min_visible:g} of itself in a tile (of what a tile can "
        "show of it) is left out of that tile; kept clipped boxes are marked truncated",
    }
