"""Pretrained starting points: model-zoo downloads, and the TFOD-exported TFLite SSD MobileNet V2 that npm's
@mediapipe/objectron bundles, rebuilt as a TF2 checkpoint (`tfod-wrap pretrained`)."""

from tfod_wrap.pretrained.download import TEMPLATE_TARBALLS, cache_dir, download, tarball_name
from tfod_wrap.pretrained.start import NoPretrainedStart, PretrainedStart, checkpoint_origin, default_start
from tfod_wrap.pretrained.tflite_import import import_objectron, sample_photos, verify_import

__all__ = ["TEMPLATE_TARBALLS", "cache_dir", "download", "tarball_name"]
__all__ += ["import_objectron", "sample_photos", "verify_import"]
__all__ += ["NoPretrainedStart", "PretrainedStart", "checkpoint_origin", "default_start"]
