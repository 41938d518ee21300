"""Run MediaPipe Tasks' ObjectDetector on images and print its detections as one JSON line.

    PYTHON_WITH_MEDIAPIPE mediapipe_detect.py MODEL.tflite IMAGE...

Run by tests/test_mediapipe.py with the interpreter of the MediaPipe venv (`make install-mediapipe`): mediapipe
cannot live in the project's venv (it needs opencv-contrib-python, another owner of the cv2 folder), so this file
imports nothing of tfod-wrap. Prints [{"image": path, "width": w, "height": h, "detections": [{"label", "score",
"box": [ymin, xmin, ymax, xmax] in pixels}, ...]}, ...]: everything the model returns (no score threshold, no
result limit), in MediaPipe's order.
"""

import json
import sys

import mediapipe as mp
from mediapipe.tasks.python import vision
from mediapipe.tasks.python.core import base_options


def main() -> None:
    model, images = sys.argv[1], sys.argv[2:]
    options = vision.ObjectDetectorOptions(
        base_options=base_options.BaseOptions(model_asset_path=model), score_threshold=0.0, max_results=-1
    )
    results = []
    with vision.ObjectDetector.create_from_options(options) as detector:
        for path in images:
            image = mp.Image.create_from_file(path)
            found = []
            for detection in detector.detect(image).detections:
                box, best = detection.bounding_box, detection.categories[0]
                found.append(
                    {
                        "label": best.category_name,
                        "score": best.score,
                        "box": [box.origin_y, box.origin_x, box.origin_y + box.height, box.origin_x + box.width],
                    }
                )
            results.append({"image": path, "width": image.width, "height": image.height, "detections": found})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
