"""Boxes and labels on frames, and the side-by-side grid of several models, drawn with OpenCV on BGR arrays.

OpenCV draws in place and releases the GIL while it does, so drawing runs beside inference in its own thread
without a copy to PIL and back. Sizes follow the image, so labels stay legible on 320x240 and 1920x1080 alike.
"""

from __future__ import annotations

import cv2
import numpy as np

from tfod_wrap.core.detections import Detections

# BGR; class id N gets COLOURS[N % len], so a class keeps its colour in every column and frame
COLOURS = [(75, 25, 230), (75, 180, 60), (216, 99, 67), (49, 130, 245), (180, 30, 145), (244, 212, 66), (230, 50, 240)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
HEADER = 28  # height in pixels of the header band above the columns of a grid


def draw_detections(image: np.ndarray, detections: Detections, names: dict[int, str], min_score: float) -> np.ndarray:
    """Draw, in place, each detection scoring at least `min_score`: box, class name (or id) and score."""
    height, width = image.shape[:2]
    thickness = max(1, round(min(height, width) / 240))
    scale = max(0.4, min(height, width) / 800)
    shown = detections.above(min_score)
    for (ymin, xmin, ymax, xmax), class_id, score in zip(shown.boxes, shown.classes, shown.scores):
        colour = COLOURS[int(class_id) % len(COLOURS)]
        left, top, right, bottom = (round(v) for v in (xmin * width, ymin * height, xmax * width, ymax * height))
        cv2.rectangle(image, (left, top), (right, bottom), colour, thickness)
        label = f"{names.get(int(class_id), f'class {int(class_id)}')} {score:.2f}"
        (text_width, text_height), baseline = cv2.getTextSize(label, FONT, scale, 1)
        # the label sits above the box, or inside it when the box touches the top edge
        y = top if top - text_height - baseline >= 0 else top + text_height + baseline
        cv2.rectangle(image, (left, y - text_height - baseline), (left + text_width, y), colour, cv2.FILLED)
        cv2.putText(image, label, (left, y - baseline), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def grid(columns: list[np.ndarray], headers: list[str]) -> np.ndarray:
    """The columns side by side under a white band with each column's header: (H + HEADER) x (W * columns)."""
    height, width = columns[0].shape[:2]
    band = np.full((HEADER, width * len(columns), 3), 255, dtype=np.uint8)
    for index, header in enumerate(headers):
        text = _fit(header, width - 8)
        cv2.putText(band, text, (index * width + 4, HEADER - 9), FONT, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
        if index:
            cv2.line(band, (index * width, 0), (index * width, HEADER), (160, 160, 160), 1)
    return np.vstack([band, np.hstack(columns)])


def _fit(text: str, width: int) -> str:
    """The header, shortened with an ellipsis until it fits `width` pixels."""
    shown = text
    while len(text) > 1 and cv2.getTextSize(shown, FONT, 0.55, 1)[0][0] > width:
        text = text[:-1]
        shown = text + "..."
    return shown
