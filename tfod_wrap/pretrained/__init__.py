"""Pretrained starting points: model-zoo downloads, and the TFOD-exported TFLite SSD MobileNet V2 that npm's
@mediapipe/objectron bundles, rebuilt as a TF2 checkpoint (`tfod-wrap pretrained`)."""

from tfod_wrap.pretrained.download import download, tarball_name
from tfod_wrap.pretrained.tflite_import import import_objectron, sample_photos, verify_import

__all__ = ["download", "import_objectron", "sample_photos", "tarball_name", "verify_import"]
