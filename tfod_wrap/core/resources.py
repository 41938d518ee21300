"""Files shipped inside the package (templates, the web page, Node scripts, label maps), found through
`importlib.resources`, so a wheel installed anywhere finds them as well as a checkout does."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_file(*parts: str) -> Path:
    """The path of a file or folder shipped in the `tfod_wrap` package, e.g. package_file("pipelines")."""
    return Path(str(resources.files("tfod_wrap").joinpath(*parts)))
