"""Import-only stand-ins for modules that `object_detection` imports at load time but that the stack lacks.

- `tensorflow.compat.v1.estimator`, removed in TensorFlow 2.16: `object_detection.inputs` and `model_lib`
  import it at module level but use it only inside the TF1 Estimator functions, which tfod-wrap never calls.
- `tensorflow_io`: `deepmac_meta_arch` (loaded by `model_builder`) imports it for one colour conversion of the
  DeepMAC mask model, which no template uses. Its wheels are built for TF 2.16 (the kernels fail to load
  under 2.19) and there are none for Python 3.13, so the stack leaves it out.

A stand-in is served only when the real module cannot be found. Touching any of its attributes raises an
error that says why.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types


def _estimator_missing() -> bool:
    import tensorflow.compat.v1 as tf_v1

    return getattr(tf_v1, "estimator", None) is None


def _not_installed(name: str) -> bool:
    return not any(
        finder.find_spec(name, None) is not None
        for finder in sys.meta_path
        if not isinstance(finder, StubFinder) and hasattr(finder, "find_spec")
    )


STUBS = {
    "tensorflow.compat.v1.estimator": (
        "TensorFlow 2.16+ has no Estimator API; use the TF2 paths (tfod-wrap train/eval/export)",
        _estimator_missing,
    ),
    "tensorflow_io": (
        "tensorflow-io is not part of tfod-wrap's stack (only the DeepMAC mask model uses it)",
        lambda: _not_installed("tensorflow_io"),
    ),
}


class _Stub(types.ModuleType):
    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        reason = STUBS[self.__name__][0]
        raise AttributeError(f"{self.__name__}.{attribute}: this is tfod-wrap's import-only stand-in: {reason}")


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module) -> None:
        pass


class StubFinder(importlib.abc.MetaPathFinder):
    _looking: set[str] = set()

    def find_spec(self, fullname, path, target=None):
        if fullname not in STUBS or fullname in self._looking:
            return None
        self._looking.add(fullname)
        try:
            missing = STUBS[fullname][1]()
        finally:
            self._looking.discard(fullname)
        return importlib.machinery.ModuleSpec(fullname, _StubLoader()) if missing else None
