"""Give tf-slim 1.1.0 back the `control_flow_ops` names removed in TF 2.13 (fix 2 in stack.md)."""

from __future__ import annotations

import importlib.abc
import sys


def patch_control_flow_ops() -> None:
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


class _PatchAfterLoad(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        patch_control_flow_ops()


class TfSlimFinder(importlib.abc.MetaPathFinder):
    """Applies the patch right after `tf_slim` is first imported, so TensorFlow is imported only then."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "tf_slim":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _PatchAfterLoad(spec.loader)
                return spec
        return None
