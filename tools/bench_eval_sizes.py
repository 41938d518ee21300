"""Seconds per image of `tfod-wrap eval` on records of mixed image sizes (issue 18, item 10: every new size
retraced the model). Trains a 160x160 SSD MobileNet V2 for one step on tiny shapes, writes N images of N
different sizes, and times CheckpointDetector over them, and the building of the detector.

    .venv/bin/python tools/bench_eval_sizes.py [--images 8] [--work /tmp/bench_eval_sizes]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # conftest's image and VOC writers


def _records(work: Path, count: int) -> Path:
    from conftest import photo, voc_xml

    from tfod_wrap.data import convert

    folder = work / "mixed_voc"
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        width, height = 96 + 16 * index, 72 + 8 * (index % 5)
        photo(width, height, seed=index).save(folder / f"{index}.jpg")
        box = {"name": "ab"[index % 2], "xmin": 4, "ymin": 4, "xmax": width - 4, "ymax": height - 4}
        (folder / f"{index}.xml").write_text(voc_xml(f"{index}.jpg", (width, height), [box]))
    convert(folder, work / "mixed", workers=1)
    return work / "mixed"


def _model(work: Path, records: Path) -> tuple[Path, str]:
    from tfod_wrap import config, train

    pipeline = work / "pipeline.config"
    if not (work / "model" / "ckpt-1.index").is_file():
        config.configure(
            "ssd_mobilenet_v2",
            pipeline,
            data=records,
            checkpoint="none",
            batch_size=2,
            steps=1,
            overrides=[
                "model.image_resizer.fixed_shape_resizer.height=160",
                "model.image_resizer.fixed_shape_resizer.width=160",
            ],
            check=False,
        )
        train.train(pipeline, work / "model", log=lambda *_: None)
    return pipeline, str(work / "model" / "ckpt-1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_eval_sizes"))
    args = parser.parse_args()
    from tfod_wrap.core.detector import CheckpointDetector
    from tfod_wrap.core.records import decode_image, read_examples

    records = _records(args.work, args.images)
    pipeline, checkpoint = _model(args.work, records)
    began = time.perf_counter()
    detector = CheckpointDetector(pipeline, checkpoint)
    built = time.perf_counter() - began  # the current version traces here, once
    times = []
    for _, example in read_examples([str(records / "train.record")]):
        pixels = decode_image(example.features.feature)
        began = time.perf_counter()
        detector(pixels)
        times.append(time.perf_counter() - began)
    traces = detector.tracing_count()
    later = sorted(times[1:])
    print(
        f"built in {built:.1f} s; {len(times)} images of {len(times)} sizes: first {times[0]:.2f} s, median "
        f"{later[len(later) // 2]:.3f} s (max {later[-1]:.3f} s), total {sum(times):.1f} s; traces: {traces}"
    )


if __name__ == "__main__":
    main()
