"""The export formats as data: one row per format, with what it writes, which quantisations it stores, whether
`--verify` runs it and which architectures it takes. No TensorFlow here, so the command line takes its choices from
this table; the function that writes each format sits in `tfod_wrap.export.exporter.WRITERS` under the same name.

Adding a format is one row here and one writer there.
"""

from __future__ import annotations

from dataclasses import dataclass

from tfod_wrap.core.errors import UserError

QUANTIZE = ("none", "float16", "uint8")
# exporter_lib_v2's input signatures: the first two take pixels (the only ones a browser or --verify can feed)
INPUT_TYPES = ("image_tensor", "float_image_tensor", "encoded_image_string_tensor", "tf_example")
PIXEL_INPUT_TYPES = INPUT_TYPES[:2]
# the names pipeline.config's `model` oneof uses, as messages say them
ARCHITECTURE_NAMES = {"ssd": "SSD", "faster_rcnn": "Faster R-CNN", "center_net": "CenterNet"}


class ExportError(UserError):
    """An export that cannot run, or whose formats disagree beyond tolerance; the message says which."""


class ParityError(ExportError):
    """--verify failed a format (beyond its tolerance, or a quantised one losing mAP@0.5); the export and its report
    were written. `reasons`: a few words per failed format."""

    def __init__(self, message: str, reasons: list[str]):
        super().__init__(message)
        self.reasons = reasons


@dataclass(frozen=True)
class Format:
    name: str  # what --formats takes, the key in export.json and the folder in the export
    title: str  # how messages name it
    model_file: str  # the file in the folder that a runtime loads
    quantize: tuple[str, ...]  # the --quantize modes it stores
    verify: bool  # whether --verify runs it against the checkpoint
    architectures: tuple[str, ...] | None = None  # the `model` oneof names it takes; None: every one
    why: str = ""  # why only those architectures, for the refusal

    def refusal(self, architecture: str) -> str | None:
        """The one-line refusal of a pipeline whose model is `architecture`, or None when it is taken."""
        if self.architectures is None or architecture in self.architectures:
            return None
        names = ", ".join(ARCHITECTURE_NAMES.get(name, name) for name in self.architectures)
        return f"{self.title} export supports {names} models{self.why}; this pipeline's model is {architecture}"


FORMATS: dict[str, Format] = {
    # the SavedModel is always written (float32): the other formats are made from it, eval and detect read it
    "saved_model": Format("saved_model", "SavedModel", "saved_model.pb", ("none",), verify=True),
    "tfjs": Format("tfjs", "TF.js", "model.json", QUANTIZE, verify=True),
    "tflite": Format(
        "tflite", "TFLite", "model.tflite", QUANTIZE, verify=True, architectures=("ssd",), why=" (TFOD's TFLite graph)"
    ),
    # the whole serving graph, NMS included, converted from the SavedModel: float32 only
    "onnx": Format("onnx", "ONNX", "model.onnx", ("none",), verify=True),
}
ALWAYS = "saved_model"
DEFAULT_FORMATS = ("saved_model", "tfjs")


def check_request(formats: tuple[str, ...] | list[str], quantize: str, input_type: str) -> tuple[str, ...]:
    """The requested formats, each once and in the table's order; ExportError for an unknown name, quantisation
    or input type, or a quantisation that a requested format cannot store."""
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"unknown format {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ExportError(f"unknown quantisation {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if input_type not in INPUT_TYPES:
        raise ExportError(f"unknown input type {input_type!r}; choose from {', '.join(INPUT_TYPES)}")
    requested = tuple(name for name in FORMATS if name in formats)
    # the SavedModel is the float32 source of the others: it refuses a quantisation only when asked for alone
    judged = [name for name in requested if name != ALWAYS] or list(requested)
    refusing = [FORMATS[name].title for name in judged if quantize not in FORMATS[name].quantize]
    if refusing:
        takers = [name for name, entry in FORMATS.items() if quantize in entry.quantize]
        raise ExportError(
            f"--quantize {quantize}: {', '.join(refusing)} cannot store it; formats that can: {', '.join(takers)}"
        )
    return requested


def check_architecture(formats: tuple[str, ...], architecture: str) -> None:
    """ExportError naming the first requested format that does not take this architecture."""
    for name in formats:
        refusal = FORMATS[name].refusal(architecture)
        if refusal:
            raise ExportError(refusal)
