"""Patches applied right after a module is first imported, so `import tfod_wrap` imports nothing heavy, and
imports run with the native log silenced (`quiet_native_startup`).

Each entry of `PATCHES` names a module and a function that fixes it (or a neighbour) once it has loaded:
- tf-slim 1.1.0 calls `control_flow_ops.case/cond/while_loop/Assert`, removed from that module in TF 2.13;
  reading TFRecords through `object_detection.inputs` fails without them.
- TFOD's visualization_utils (drawn by model_lib_v2's eval loop) calls `FreeTypeFont.getsize`, removed in
  Pillow 10.
- TFOD's Keras MobileNet FPN feature extractors upsample by reshape + stack unless built with
  `use_native_resize_op`, which `model_builder` never passes; see `native_fpn_resize`.
- AutoGraph rewrites the source of every TFOD function a traced model or input pipeline calls; see
  `no_autograph_for_tfod`.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import inspect
import os
import sys
from collections.abc import Callable, Iterator


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


def seed_tfod_input_pipeline() -> None:
    """Make TFOD's augmentation follow the global seed (tf.random.set_seed), as other random ops do:
    - the graphs of `Dataset.map_with_legacy_function`, which TFOD's input pipeline maps its decoding and
      augmentation with, get no seed of their own, so their random ops ignored the global one;
    - `tf.compat.v1.image.sample_distorted_bounding_box` (TFOD's random crops) takes a missing seed as "seed
      from the clock" instead of deriving it from the graph's.
    With no global seed set, both behave exactly as before. Idempotent."""
    import tensorflow as tf
    from tensorflow.python.eager import context
    from tensorflow.python.framework import function, random_seed

    original_init = function._FuncGraph.__init__  # noqa: SLF001
    if getattr(original_init, "seeded", False):
        return

    def init(graph, *args, **kwargs):
        original_init(graph, *args, **kwargs)
        if graph.seed is None and context.global_seed() is not None:
            graph.seed = context.global_seed()

    sample = tf.compat.v1.image.sample_distorted_bounding_box

    def seeded_sample(image_size, bounding_boxes, seed=None, seed2=None, *args, **kwargs):
        if not seed and not seed2:
            seed, seed2 = random_seed.get_seed(None)
        return sample(image_size, bounding_boxes, seed, seed2, *args, **kwargs)

    init.seeded = True
    function._FuncGraph.__init__ = init  # noqa: SLF001
    tf.compat.v1.image.sample_distorted_bounding_box = seeded_sample


def patch_pillow_getsize(_module=None) -> None:
    """Give Pillow's fonts back `getsize(text) -> (width, height)`, as the bottom-right of the text's box."""
    from PIL import ImageFont

    def getsize(font, text, *args, **kwargs):
        left, top, right, bottom = font.getbbox(text, *args, **kwargs)
        return right, bottom

    for font_class in (ImageFont.FreeTypeFont, ImageFont.ImageFont, ImageFont.TransposedFont):
        if not hasattr(font_class, "getsize"):
            font_class.getsize = getsize


def native_fpn_resize(module) -> None:
    """Build the module's Keras SSD FPN feature extractors that take the option (MobileNet V1 and V2) with
    `use_native_resize_op=True` unless told otherwise: the FPN's 2x nearest-neighbour upsampling as one
    ResizeNearestNeighbor op instead of reshape + stack, which Grappler turns into `Tile`, a slow generic kernel in
    TF.js's wasm backend (17 ms of FPNLite 320's 122 ms). A 2x nearest resize without half-pixel centres repeats
    each value twice, as the reshape does, so the outputs are the same, and it has no weights, so every checkpoint
    restores as before. Idempotent."""
    for name in dir(module):
        extractor = getattr(module, name)
        if not (isinstance(extractor, type) and name.endswith("FpnKerasFeatureExtractor")):
            continue
        original = extractor.__dict__.get("__init__")
        if original is None or getattr(original, "native_resize", False):
            continue
        if "use_native_resize_op" not in inspect.signature(original).parameters:
            continue  # the ResNet FPNs build their top-down maps without the option

        def init(self, *args, _original=original, **kwargs):
            kwargs.setdefault("use_native_resize_op", True)
            _original(self, *args, **kwargs)

        init.native_resize = True
        init.__wrapped__ = original
        extractor.__init__ = init


def no_autograph_for_tfod(config) -> None:
    """Trace the TFOD API's and tf-slim's functions as they are written instead of through AutoGraph. Both were
    written for TF1 graphs, with explicit tf.cond and tf.while_loop, so AutoGraph's source-to-source conversion
    of each function a traced model or input pipeline calls (parsing, static analysis, code generation) changes
    nothing in the graph: same ops, same trained bits. It only costs time: about 8 s of the first training step
    and most of an export's or eval's first trace in each process. Functions of other packages, and tfod-wrap's
    own, are converted as before. Hooked on AutoGraph's config module, so that importing TFOD's protos (as
    `tfod-wrap tfrecords` does) still does not load TensorFlow. Idempotent."""
    from tensorflow.python.autograph.core import config_lib

    rules = tuple(config_lib.DoNotConvert(name) for name in NOT_CONVERTED)
    if not any(str(rule) == str(rules[0]) for rule in config.CONVERSION_RULES):
        config.CONVERSION_RULES = rules + tuple(config.CONVERSION_RULES)


NOT_CONVERTED = ("object_detection", "tf_slim")

PATCHES: dict[str, Callable] = {
    "tensorflow.python.autograph.core.config": no_autograph_for_tfod,
    "tf_slim": patch_control_flow_ops,
    "object_detection.utils.visualization_utils": patch_pillow_getsize,
    "object_detection.models.ssd_mobilenet_v1_fpn_keras_feature_extractor": native_fpn_resize,
    "object_detection.models.ssd_mobilenet_v2_fpn_keras_feature_extractor": native_fpn_resize,
}


# Modules whose import prints native (C++) start-up lines that no setting turns off: TensorFlow 2.19 registers
# its CUDA plugins twice and logs it through absl before absl's log is initialised, even on a CPU-only machine.
QUIET: set[str] = set()


def quiet_native_startup(modules: tuple[str, ...] = ("tensorflow",)) -> None:
    """Import these modules with file descriptor 2 sent to /dev/null (the command line calls this: its users
    should see tfod-wrap's messages, not six lines about CUDA factories)."""
    QUIET.update(modules)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _WrappedLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, patch: Callable | None, quiet: bool):
        self._loader = loader
        self._patch = patch
        self._quiet = quiet

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with _stderr_silenced() if self._quiet else contextlib.nullcontext():
            self._loader.exec_module(module)
        if self._patch is not None:
            self._patch(module)


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of `PATCHES` and `QUIET` through the other finders and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        patch = PATCHES.get(fullname)
        if patch is None and fullname not in QUIET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                spec.loader = _WrappedLoader(spec.loader, patch, quiet=fullname in QUIET)
                return spec
        return None


def install() -> None:
    """Patch what is already loaded; hook the rest."""
    for name, patch in PATCHES.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, PostImportFinder())
