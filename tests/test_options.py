"""Typed option classes (tfod_wrap.core.options): how a field's type, default, markers and docstring become an
argparse option, on a small class of every kind; and that every command's options are documented."""

from __future__ import annotations

import argparse
import collections
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pytest

from tfod_wrap import cli, commands
from tfod_wrap.core.options import (
    Choices,
    Flag,
    Many,
    Metavar,
    Parse,
    Repeat,
    add_options,
    add_overrides,
    class_help,
    field_docs,
    given,
)


@dataclass(kw_only=True)
class Every:
    """one line of help

    The description, over
    two lines, naming {thing}."""

    inputs: Annotated[tuple[Path, ...], Flag(None), Metavar("INPUT")]
    """the inputs"""
    source: Annotated[Path, Flag("--from")]
    """where from"""
    count: int = 3
    """how many, {thing}"""
    rate: float | None = None
    """a rate"""
    mode: Annotated[str, Choices(("a", "b"))] = "a"
    """a or b"""
    tags: Annotated[tuple[str, ...], Repeat] = ()
    """repeat it"""
    files: Annotated[tuple[Path, ...] | None, Many] = None
    """one or more"""
    pair: Annotated[tuple[int, ...], Parse(lambda text: tuple(int(part) for part in text.split(",")))] = (1, 2)
    """two numbers"""
    loud: bool = False
    """say more"""
    checked: Annotated[bool, Flag("--no-check")] = True
    """skip the check"""


def parser_of(cls: type) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_options(parser, cls, {"thing": "THING"})
    return parser


def test_defaults_and_required_come_from_the_fields():
    args = parser_of(Every).parse_args(["x.jpg", "--from", "src"])
    assert vars(args) == {
        "inputs": [Path("x.jpg")],
        "source": Path("src"),
        "count": 3,
        "rate": None,
        "mode": "a",
        "tags": [],
        "files": None,
        "pair": (1, 2),
        "loud": False,
        "checked": True,
    }
    with pytest.raises(SystemExit):  # --from is required: no default
        parser_of(Every).parse_args(["x.jpg"])


def test_every_kind_of_value_parses():
    argv = ["a", "b", "--from", "s", "--count", "5", "--rate", "0.5", "--mode", "b", "--tags", "t1", "--tags", "t2"]
    argv += ["--files", "f1", "f2", "--pair", "7,8", "--loud", "--no-check"]
    args = parser_of(Every).parse_args(argv)
    assert args.inputs == [Path("a"), Path("b")] and args.count == 5 and args.rate == 0.5 and args.mode == "b"
    assert args.tags == ["t1", "t2"] and args.files == [Path("f1"), Path("f2")] and args.pair == (7, 8)
    assert args.loud is True and args.checked is False
    with pytest.raises(SystemExit):
        parser_of(Every).parse_args(["a", "--from", "s", "--mode", "c"])  # not a choice


def test_help_is_the_docstring_under_each_field_with_the_texts_filled_in():
    assert field_docs(Every)["inputs"] == "the inputs"
    assert class_help(Every, {"thing": "THING"}) == (
        "one line of help",
        "The description, over two lines, naming THING.",
    )
    text = parser_of(Every).format_help()
    assert "INPUT" in text and "--from SOURCE" in text and "how many, THING" in text and "{a,b}" in text
    assert class_help(commands.Labelmap, {}) == ("build a label_map.pbtxt from annotations, or check one", None)


@dataclass(frozen=True)
class Settings:
    specs: Annotated[tuple[str, ...], Metavar("SPEC")] = ()
    """specs"""
    fast: bool = False
    """go fast"""
    size: int = 4
    """a size"""


def test_overrides_give_only_what_was_given_and_lists_can_be_emptied():
    parser = argparse.ArgumentParser()
    add_overrides(parser, Settings)
    assert given(parser.parse_args([]), Settings) == {}
    assert given(parser.parse_args(["--specs", "a", "--specs", "b", "--no-fast", "--size", "2"]), Settings) == {
        "specs": ["a", "b"],
        "fast": False,
        "size": 2,
    }
    assert given(parser.parse_args(["--no-specs"]), Settings) == {"specs": ()}


def test_every_command_and_option_has_its_help():
    for name, (classes, _) in cli.COMMANDS.items():
        for cls in classes:
            assert class_help(cls, collections.defaultdict(str))[0], name
            documented = field_docs(cls)
            assert {item.name for item in dataclasses.fields(cls)} <= set(documented), name


def test_a_class_without_source_still_parses_without_help():
    namespace: dict = {}
    exec("from dataclasses import dataclass\n@dataclass\nclass Bare:\n    count: int = 2\n    'how many'\n", namespace)
    assert field_docs(namespace["Bare"]) == {}
    assert parser_of(namespace["Bare"]).parse_args(["--count", "5"]).count == 5
