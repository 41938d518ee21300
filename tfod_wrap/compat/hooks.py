"""Patches applied right after a module is first imported, so `import tfod_wrap` imports nothing heavy.

Each entry of `PATCHES` names a module and a function that fixes it (or a neighbour) once it has loaded:
- tf-slim 1.1.0 calls `control_flow_ops.case/cond/while_loop/Assert`, removed from that module in TF 2.13;
  reading TFRecords through `object_detection.inputs` fails without them.
- TFOD's visualization_utils (drawn by model_lib_v2's eval loop) calls `FreeTypeFont.getsize`, removed in
  Pillow 10.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable


def patch_control_flow_ops(_module=None) -> None:
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_ops

    replacements = {
        "case": tf.case,
        "cond": tf.cond,
        "while_loop": tf.while_loop,
        "Assert": tf.debugging.Assert,
    }
    for name, function in replacements.items():
        if not hasattr(control_flow_ops, name):
            setattr(control_flow_ops, name, function)


def patch_pillow_getsize(_module=None) -> None:
    """Give Pillow's fonts back `getsize(text) -> (width, height)`, as the bottom-right of the text's box."""
    from PIL import ImageFont

    def getsize(font, text, *args, **kwargs):
        left, top, right, bottom = font.getbbox(text, *args, **kwargs)
        return right, bottom

    for font_class in (ImageFont.FreeTypeFont, ImageFont.ImageFont, ImageFont.TransposedFont):
        if not hasattr(font_class, "getsize"):
            font_class.getsize = getsize


PATCHES: dict[str, Callable] = {
    "tf_slim": patch_control_flow_ops,
    "object_detection.utils.visualization_utils": patch_pillow_getsize,
}


class _PatchAfterLoad(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, patch: Callable):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        self._patch(module)


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of `PATCHES` through the other finders and patches them once loaded."""

    def find_spec(self, fullname, path, target=None):
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _PatchAfterLoad(spec.loader, patch)
                return spec
        return None


def install() -> None:
    """Patch what is already loaded; hook the rest."""
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, PostImportFinder())
