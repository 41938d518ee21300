"""Which annotated images may be read, and which are the same image; checked in the parent before the split.

The rule: an image is read only when it is a regular file that resolves, symlinks followed, inside its image
folder (the `--images` folder, else the folder it was found in: beside the annotations, or their `JPEGImages` /
`images` sibling). `../`, absolute paths and symlinks that lead elsewhere are refused unless the caller allows
outside images; devices, FIFOs and folders are refused always (a FIFO would block the run, /dev/zero never ends).
One file reached by several names (symlinks, hard links) or several files with the same bytes are written once,
from the first annotation, so the same pixels can never land in two splits.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import Counter
from collections.abc import Callable

from tfod_wrap.data.annotations import ImageAnnotation, Problem, describe

OUTSIDE = "image outside the image folder"
NOT_REGULAR = "not a regular file"
DUPLICATE = "duplicate image"

Identity = tuple[int, int, int]  # st_dev, st_ino, st_size


class SourceProblem(Exception):
    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def check_sources(
    images: list[ImageAnnotation], allow_outside: bool, imap: Callable
) -> tuple[list[ImageAnnotation], list[Problem]]:
    """The images that may be read, one per content, and a Problem for each one left out."""
    kept: list[ImageAnnotation] = []
    identities: list[Identity | None] = []
    problems: list[Problem] = []
    real_roots: dict[str, str] = {}
    for image in images:
        try:
            identity = _check_source(image, allow_outside, real_roots)
        except SourceProblem as problem:
            problems.append(Problem(image.annotation_file, problem.kind, problem.reason))
            continue
        kept.append(image)
        identities.append(identity)
    duplicates = _duplicates(kept, identities, imap)
    problems += [Problem(kept[index].annotation_file, DUPLICATE, reason) for index, reason in duplicates.items()]
    return [image for index, image in enumerate(kept) if index not in duplicates], problems


def _check_source(image: ImageAnnotation, allow_outside: bool, real_roots: dict[str, str]) -> Identity | None:
    """(device, inode, size) of a readable image; None when it is missing (the encoder reports that)."""
    path = str(image.image_path)
    root = image.root or os.path.dirname(path)
    try:
        info = os.lstat(path)
        linked = stat.S_ISLNK(info.st_mode)
        if linked:
            info = os.stat(path)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:  # a name too long, a NUL byte, no permission
        raise SourceProblem("missing image", f"{path}: cannot read image: {describe(error)}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SourceProblem(NOT_REGULAR, f"{path}: not a regular file (a device, FIFO or folder); not read")
    # A plain file name straight in its folder needs no resolving: one lstat per image, as most datasets are.
    plain = not linked and os.path.dirname(path) == root
    if not allow_outside and not plain and not _inside(path, root, real_roots):
        raise SourceProblem(
            OUTSIDE,
            f"{path} resolves to {os.path.realpath(path)}, outside the image folder {root}; not read "
            "(--allow-outside-images reads such images)",
        )
    return info.st_dev, info.st_ino, info.st_size


def _inside(path: str, root: str, real_roots: dict[str, str]) -> bool:
    if root not in real_roots:
        real_roots[root] = os.path.join(os.path.realpath(root), "")
    return os.path.realpath(path).startswith(real_roots[root])


def _duplicates(images: list[ImageAnnotation], identities: list[Identity | None], imap: Callable) -> dict[int, str]:
    """{index: reason} of every image whose file or bytes an earlier image already has. The same inode needs
    no reading; files of one size are told apart by sha256 (in the workers), so most images are never hashed
    here."""
    duplicates: dict[int, str] = {}
    first_of_inode: dict[tuple[int, int], int] = {}
    for index, identity in enumerate(identities):
        if identity is None:
            continue
        first = first_of_inode.setdefault(identity[:2], index)
        if first != index:
            duplicates[index] = _duplicate_reason(images[index], images[first], "is the same file as")
    distinct = sorted(first_of_inode.values())
    sizes = Counter(identities[index][2] for index in distinct)
    candidates = [index for index in distinct if sizes[identities[index][2]] > 1]
    digests = imap(file_sha256, [str(images[index].image_path) for index in candidates], chunksize=16)
    first_of_digest: dict[str, int] = {}
    for index, digest in zip(candidates, digests):
        if digest is None:
            continue
        first = first_of_digest.setdefault(digest, index)
        if first != index:
            duplicates[index] = _duplicate_reason(
                images[index], images[first], f"has the same bytes (sha256 {digest[:16]}...) as"
            )
    return duplicates


def _duplicate_reason(image: ImageAnnotation, first: ImageAnnotation, relation: str) -> str:
    return (
        f"{image.image_path} {relation} {first.image_path} (annotated in {first.annotation_file}); "
        "written once, from that annotation"
    )


def file_sha256(path: str) -> str | None:
    """Hex sha256 of a file's bytes; None when it cannot be read (the encoder then says why)."""
    try:
        with open(path, "rb") as stream:
            return hashlib.sha256(stream.read()).hexdigest()  # (hashlib.file_digest is 3.11+)
    except OSError:
        return None
