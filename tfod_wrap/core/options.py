"""Typed option classes: a dataclass whose fields are a command's options. A field's type says how its option
parses, its default whether the option is required, the docstring under it (the attribute-docstring convention of
Sphinx and PEP 257) is its help text, and markers in `Annotated[...]` say the rest (another flag, a metavar,
choices, a list). So an option's type, default and meaning stand together in one place, and the command line maps
onto the library's own names without restating them. No TensorFlow here: `tfod-wrap --help` stays fast."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints


@dataclass(frozen=True)
class Flag:
    """The option's flag when it is not --FIELD-NAME; None makes it a positional argument."""

    name: str | None


@dataclass(frozen=True)
class Metavar:
    text: str


@dataclass(frozen=True)
class Choices:
    values: Sequence[str]


@dataclass(frozen=True)
class Parse:
    """Turns the option's text into the field's value (argparse `type`)."""

    function: Callable[[str], Any]


class Many:
    """A tuple field given as one or more values after the flag (argparse nargs="+")."""


class Repeat:
    """A tuple field given by repeating the flag (argparse action="append")."""


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring under it as one line, for the fields of `cls` that have one (none where the
    source is not installed, as in a bytecode-only install: the options then work without help texts)."""
    return _module_field_docs(cls.__module__).get(cls.__name__, {})


@functools.cache
def _module_field_docs(module_name: str) -> dict[str, dict[str, str]]:
    """field_docs of every class in a module, from one parse of its source (inspect.getsource of each class would
    parse the whole module again for every class, several times the parser's own build time)."""
    try:
        source = inspect.getsource(sys.modules[module_name])
    except (KeyError, OSError, TypeError):
        return {}
    classes: dict[str, dict[str, str]] = {}
    for node in ast.walk(ast.parse(source)):  # breadth first: a module-level class wins over a nested namesake
        if isinstance(node, ast.ClassDef):
            classes.setdefault(node.name, _attribute_docs(node.body))
    return classes


def _attribute_docs(body: list[ast.stmt]) -> dict[str, str]:
    docs = {}
    for field, after in zip(body, body[1:]):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = " ".join(after.value.value.split())
    return docs


def class_help(cls: type, values: dict[str, str]) -> tuple[str, str | None]:
    """A command class's docstring as (help, description): its first paragraph, and the rest (None if none)."""
    first, _, rest = inspect.cleandoc(cls.__doc__ or "").partition("\n\n")
    return " ".join(first.split()).format_map(values), " ".join(rest.split()).format_map(values) or None


@dataclass(frozen=True)
class Face:
    """What the command line needs of one field."""

    name: str
    kind: Any  # the field's type without its markers; for a tuple, the type of one item
    many: bool
    markers: tuple[Any, ...]
    default: Any
    help: str

    def marker(self, cls: type) -> Any:
        return next((item for item in self.markers if isinstance(item, cls) or item is cls), None)

    def flag(self) -> str | None:
        flag = self.marker(Flag)
        return flag.name if flag else "--" + self.name.replace("_", "-")


def faces(cls: type, values: dict[str, str] | None = None) -> list[Face]:
    """One Face per field of the dataclass `cls`, in order."""
    hints, helps = get_type_hints(cls, include_extras=True), field_docs(cls)
    result = []
    for item in dataclasses.fields(cls):
        hint, markers = hints[item.name], ()
        if get_origin(hint) is not None and hasattr(hint, "__metadata__"):
            hint, markers = get_args(hint)[0], hint.__metadata__
        kind, many = (hint, False) if any(isinstance(marker, Parse) for marker in markers) else one_type(hint)
        default = item.default if item.default_factory is dataclasses.MISSING else item.default_factory()
        result.append(Face(item.name, kind, many, markers, default, helps.get(item.name, "").format_map(values or {})))
    return result


def one_type(hint: Any) -> tuple[Any, bool]:
    """The type of one value of a field, and whether the field holds several: (int, False) for `int | None`,
    (Path, True) for `tuple[Path, ...]`."""
    args = [arg for arg in get_args(hint) if arg is not type(None)]
    if type(None) in get_args(hint):  # X | None
        hint = args[0]
    if get_origin(hint) is tuple:
        return get_args(hint)[0], True
    return hint, False


def add_options(parser: argparse.ArgumentParser, cls: type, values: dict[str, str] | None = None) -> None:
    """One argparse argument per field of `cls`, with the field's default (none: required)."""
    for face in faces(cls, values):
        flag, required = face.flag(), face.default is dataclasses.MISSING
        words: dict[str, Any] = {"help": face.help}
        if face.kind is bool:
            action = "store_false" if face.default else "store_true"
            parser.add_argument(flag, dest=face.name, action=action, **words)
            continue
        words |= _value_words(face)
        if face.many:
            words |= {"action": "append"} if face.marker(Repeat) else {"nargs": "+"}
        if flag is None:
            parser.add_argument(face.name, **words)
            continue
        if required:
            words["required"] = True
        elif face.default is not None:
            words["default"] = list(face.default) if face.marker(Repeat) else face.default
        parser.add_argument(flag, dest=face.name, **words)


def add_overrides(
    parser: argparse.ArgumentParser, cls: type, names: tuple[str, ...] = (), clearable: bool = True
) -> None:
    """One option per field of `cls` (all, or `names`) whose default is None, so that only what was given
    overrides a value the command starts from (see given): a list repeats (with --no-NAME to empty it), a bool gets
    --NAME/--no-NAME, anything else takes one value."""
    for face in faces(cls):
        if names and face.name not in names:
            continue
        flag, words = face.flag(), {"help": face.help, "dest": face.name}
        if face.kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **words)
            continue
        parser.add_argument(flag, action="append" if face.many else "store", **words | _value_words(face))
        if face.many and clearable:
            empty = f"empty the recipe's {flag} list"
            parser.add_argument("--no-" + flag[2:], dest=face.name, action="store_const", const=(), help=empty)


def _value_words(face: Face) -> dict[str, Any]:
    """argparse's type, metavar and choices for a field that takes a value."""
    words: dict[str, Any] = {}
    parse, metavar, choices = face.marker(Parse), face.marker(Metavar), face.marker(Choices)
    if parse:
        words["type"] = parse.function
    elif face.kind in (int, float, Path):
        words["type"] = face.kind
    if metavar:
        words["metavar"] = metavar.text
    if choices:
        words["choices"] = choices.values
    return words


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of `cls` given on the command line, by field name."""
    return {
        item.name: getattr(args, item.name) for item in dataclasses.fields(cls) if getattr(args, item.name) is not None
    }
