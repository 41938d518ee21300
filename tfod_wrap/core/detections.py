"""What a detector finds in one image, whatever ran it: one typed value that eval, detect and the parity checks
share (`Detector` in detector.py returns it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# TFOD's output names (the exported signature's, and the checkpoint model's postprocess)
BOXES, CLASSES, SCORES, COUNT = "detection_boxes", "detection_classes", "detection_scores", "num_detections"


@dataclass(frozen=True)
class Detections:
    """One image's detections, best first as TFOD returns them.

    boxes: float32 [N, 4], normalised (ymin, xmin, ymax, xmax); classes: int64 [N], label-map ids (1-based);
    scores: float32 [N]. `raw` holds what a backend gives beyond that (raw_detection_scores and
    raw_detection_boxes before non-max suppression, for the parity checks).
    """

    boxes: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    raw: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        classes = np.asarray(self.classes).astype(np.int64)
        scores = np.asarray(self.scores, dtype=np.float32)
        if not len(boxes) == len(classes) == len(scores):
            raise ValueError(f"{len(boxes)} boxes, {len(classes)} classes and {len(scores)} scores")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "scores", scores)

    @classmethod
    def from_outputs(cls, outputs: Mapping[str, np.ndarray], *, class_offset: int = 0) -> Detections:
        """From one image's TFOD outputs (no batch axis): the first num_detections of each, classes plus
        `class_offset` (1 where they are 0-based, as the model's postprocess and TFLite's op give them); every
        other output goes to `raw`."""
        count = int(np.asarray(outputs[COUNT]).reshape(()))
        raw = {key: np.asarray(value) for key, value in outputs.items() if key not in (BOXES, CLASSES, SCORES, COUNT)}
        return cls(
            np.asarray(outputs[BOXES])[:count],
            np.asarray(outputs[CLASSES])[:count].astype(np.int64) + class_offset,
            np.asarray(outputs[SCORES])[:count],
            raw,
        )

    def __len__(self) -> int:
        return len(self.scores)

    def above(self, threshold: float) -> Detections:
        """The detections scoring at least `threshold` (raw outputs kept)."""
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.classes[keep], self.scores[keep], self.raw)

    def to_coco(self, image_id: int, width: int, height: int) -> list[dict]:
        """COCO results: bbox [x, y, width, height] in pixels. Whole arrays at once: detect writes every detection
        of every video frame (100 each), and element by element took 1 ms a frame."""
        ymin, xmin, ymax, xmax = self.boxes.astype(np.float64).T
        boxes = np.stack([xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height], axis=1)
        return [
            {"image_id": image_id, "category_id": label, "score": score, "bbox": box}
            for label, score, box in zip(self.classes.tolist(), self.scores.astype(np.float64).tolist(), boxes.tolist())
        ]
