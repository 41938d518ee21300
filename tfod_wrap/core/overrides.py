"""One generic override mechanism for pipeline.config, checked against the TFOD proto schema.

`PATH=VALUE`, like mmdetection's `--cfg-options`:
- PATH is dotted field names; repeated fields take an index (`eval_input_reader[0].shuffle`), and the
  index one past the end appends. A name that is not a field of a message but of the message's active
  oneof member reaches into it, so `model.num_classes` means `model.ssd.num_classes` for an SSD.
- VALUE is parsed by the field's type: numbers, `true`/`false`, enum names, strings (quotes optional),
  a sub-message as text proto (`{ adam_optimizer { epsilon: 1e-7 } }`), and `[a, b]` for a whole
  repeated scalar field.
Unknown fields name the closest valid ones; type errors say the expected type.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator

from google.protobuf import descriptor, message, text_format

from tfod_wrap.core.pipeline import ConfigError

_F = descriptor.FieldDescriptor
_STEP = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?:\[(\d+)\])?$")
_INTEGER_TYPES = {
    _F.TYPE_INT32,
    _F.TYPE_INT64,
    _F.TYPE_UINT32,
    _F.TYPE_UINT64,
    _F.TYPE_SINT32,
    _F.TYPE_SINT64,
    _F.TYPE_FIXED32,
    _F.TYPE_FIXED64,
    _F.TYPE_SFIXED32,
    _F.TYPE_SFIXED64,
}
_FLOAT_TYPES = {_F.TYPE_FLOAT, _F.TYPE_DOUBLE}


def parse_assignment(text: str) -> tuple[str, str]:
    path, equals, value = text.partition("=")
    if not equals or not path.strip():
        raise ConfigError(f"--set {text!r}: expected PATH=VALUE, e.g. train_config.batch_size=8")
    return path.strip(), value.strip()


def apply_override(config: message.Message, path: str, value: str) -> str:
    """Set one field in place; returns the resolved full path (e.g. 'model.ssd.num_classes')."""
    steps = path.split(".")
    parent, resolved = config, []
    for step in steps[:-1]:
        name, index = _split_step(step, path)
        parent, name = _enter_oneof(parent, name, path, resolved)
        field = _field(parent, name, path, resolved)
        if field.type != _F.TYPE_MESSAGE:
            raise ConfigError(f"{path}: {'.'.join(resolved + [name])} is {_type_name(field)}, not a message")
        parent = _child(parent, field, index, path, resolved)
        resolved.append(name if index is None else f"{name}[{index}]")
    name, index = _split_step(steps[-1], path)
    parent, name = _enter_oneof(parent, name, path, resolved)
    field = _field(parent, name, path, resolved)
    _assign(parent, field, index, value, path)
    return ".".join(resolved + [name if index is None else f"{name}[{index}]"])


def _split_step(step: str, path: str) -> tuple[str, int | None]:
    match = _STEP.match(step)
    if not match:
        raise ConfigError(f"{path}: {step!r} is not a field name (use name or name[index])")
    return match.group(1), None if match.group(2) is None else int(match.group(2))


def _enter_oneof(parent: message.Message, name: str, path: str, resolved: list[str]):
    """Descend into the active member of a oneof when `name` is a field of that member, not of parent."""
    fields = parent.DESCRIPTOR.fields_by_name
    if name in fields:
        return parent, name
    for oneof in parent.DESCRIPTOR.oneofs:
        active = parent.WhichOneof(oneof.name)
        if active and fields[active].type == _F.TYPE_MESSAGE:
            member = getattr(parent, active)
            if name in member.DESCRIPTOR.fields_by_name:
                resolved.append(active)
                return member, name
    return parent, name


def _field(parent: message.Message, name: str, path: str, resolved: list[str]) -> descriptor.FieldDescriptor:
    fields = parent.DESCRIPTOR.fields_by_name
    if name in fields:
        return fields[name]
    candidates = list(fields)
    for oneof in parent.DESCRIPTOR.oneofs:
        active = parent.WhichOneof(oneof.name)
        if active and fields[active].type == _F.TYPE_MESSAGE:
            candidates += list(getattr(parent, active).DESCRIPTOR.fields_by_name)
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    where = ".".join(resolved) or "the pipeline config"
    hint = f"did you mean {' or '.join(close)}?" if close else f"valid fields: {', '.join(sorted(candidates))}"
    raise ConfigError(f"{path}: {where} ({parent.DESCRIPTOR.name}) has no field {name!r}; {hint}")


def _child(parent: message.Message, field, index: int | None, path: str, resolved: list[str]) -> message.Message:
    container = getattr(parent, field.name)
    if field.label != _F.LABEL_REPEATED:
        if index is not None:
            raise ConfigError(f"{path}: {field.name} is not a repeated field; drop the [{index}]")
        return container
    if index is None:
        raise ConfigError(f"{path}: {field.name} is repeated ({len(container)} items); say which, e.g. {field.name}[0]")
    if index == len(container):
        return container.add()
    if index > len(container):
        raise ConfigError(f"{path}: {field.name} has {len(container)} items; index {index} is out of range")
    return container[index]


def _assign(parent: message.Message, field, index: int | None, value: str, path: str) -> None:
    repeated = field.label == _F.LABEL_REPEATED
    if repeated and index is None:
        container = getattr(parent, field.name)
        if field.type == _F.TYPE_MESSAGE:
            if value.strip() == "[]":  # e.g. train_config.data_augmentation_options=[] drops every augmentation
                del container[:]
                return
            raise ConfigError(
                f"{path}: {field.name} is a repeated message; "
                f"set items by index, e.g. {field.name}[0], or clear it with []"
            )
        items = _list_items(value, path)
        converted = [_scalar(field, item, path) for item in items]
        with _range_checked(path):
            del container[:]
            container.extend(converted)
        return
    if field.type == _F.TYPE_MESSAGE:
        target = _child(parent, field, index, path, []) if repeated else getattr(parent, field.name)
        replacement = type(target)()
        text = value.strip()
        if text.startswith("{") and text.endswith("}"):
            text = text[1:-1]
        try:
            text_format.Parse(text, replacement)
        except text_format.ParseError as error:
            raise ConfigError(f"{path}: not a valid {field.message_type.name} text proto: {error}") from None
        target.CopyFrom(replacement)
        if not repeated:
            target.SetInParent()  # an empty message still selects its oneof member
        return
    converted = _scalar(field, value, path)
    if repeated:
        container = getattr(parent, field.name)
        if index > len(container):
            raise ConfigError(f"{path}: {field.name} has {len(container)} items; index {index} is out of range")
        with _range_checked(path):
            if index == len(container):
                container.append(converted)
            else:
                container[index] = converted
    else:
        with _range_checked(path):
            setattr(parent, field.name, converted)


@contextlib.contextmanager
def _range_checked(path: str) -> Iterator[None]:
    """Protobuf checks the value against the field's type on assignment (an int32 takes at most 2**31 - 1) and
    raises ValueError or TypeError: the user's value, so a ConfigError naming the path."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: {error}") from None


def _list_items(value: str, path: str) -> list[str]:
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ConfigError(f"{path}: a repeated field takes a list, e.g. [a, b], or an index, e.g. [0]")
    return [item.strip() for item in text[1:-1].split(",") if item.strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _scalar(field, value: str, path: str):
    value = _unquote(value.strip())
    kind = _type_name(field)
    try:
        if field.type in _INTEGER_TYPES:
            return int(value, 0)
        if field.type in _FLOAT_TYPES:
            return float(value)
    except ValueError:
        raise ConfigError(f"{path}: expected {kind}, got {value!r}") from None
    if field.type == _F.TYPE_BOOL:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{path}: expected a bool (true or false), got {value!r}")
        return value.lower() in ("true", "1")
    if field.type == _F.TYPE_ENUM:
        names = [item.name for item in field.enum_type.values]
        if value in names:
            return field.enum_type.values_by_name[value].number
        close = difflib.get_close_matches(value.upper(), names, n=3, cutoff=0.5)
        hint = f"did you mean {' or '.join(close)}?" if close else f"one of {', '.join(names)}"
        raise ConfigError(f"{path}: {value!r} is not a valid {field.enum_type.name} value; {hint}")
    if field.type == _F.TYPE_BYTES:
        return value.encode()
    return value


def _type_name(field) -> str:
    if field.type in _INTEGER_TYPES:
        return "an integer"
    if field.type in _FLOAT_TYPES:
        return "a number"
    if field.type == _F.TYPE_BOOL:
        return "a bool"
    if field.type == _F.TYPE_ENUM:
        return f"an enum {field.enum_type.name}"
    if field.type == _F.TYPE_MESSAGE:
        return f"a message {field.message_type.name}"
    return "a string"


def override(config, assignments: list[str]) -> list[str]:
    """Apply PATH=VALUE overrides to a copy; only if all succeed is `config` changed. Returns resolved paths."""
    trial = type(config)()
    trial.CopyFrom(config)
    resolved = [apply_override(trial, *parse_assignment(assignment)) for assignment in assignments]
    config.CopyFrom(trial)
    return resolved
