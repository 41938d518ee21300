"""Seeded, stratified train/val/test splits.

Iterative stratification (Sechidis et al., 2011), fitted to detection where an image holds several
classes: the rarest class is placed first, each of its images going to the split that still wants
the most of that class. A class with at least one image per split is put in every split before the
proportions take over, so no split lacks a class that could have had it. Each image lands in exactly
one split, and the result depends only on the images, the fractions and the seed.
"""

from __future__ import annotations

import random
import re

from tfod_wrap.data.annotations import DataError

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_split(spec: str) -> dict[str, float]:
    """'train=0.8,val=0.2' -> {'train': 0.8, 'val': 0.2}; fractions must be positive and sum to 1."""
    fractions: dict[str, float] = {}
    for part in spec.split(","):
        name, equals, value = part.strip().partition("=")
        name = name.strip()
        if not equals or not _NAME.match(name):
            raise DataError(f"--split: {part.strip()!r} is not NAME=FRACTION (e.g. train=0.8,val=0.2)")
        if name in fractions:
            raise DataError(f"--split: split {name!r} is named twice")
        try:
            fraction = float(value)
        except ValueError:
            raise DataError(f"--split: {value.strip()!r} is not a number") from None
        if not 0 < fraction <= 1:
            raise DataError(f"--split: the fraction of {name!r} must be in (0, 1], got {fraction}")
        fractions[name] = fraction
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise DataError(f"--split: fractions must sum to 1, got {total:g}")
    return fractions


def _target_counts(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding, so the counts add up to `total` exactly."""
    exact = {name: total * fraction for name, fraction in fractions.items()}
    counts = {name: int(value) for name, value in exact.items()}
    by_remainder = sorted(fractions, key=lambda name: (-(exact[name] - counts[name]), name))
    for name in by_remainder[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def stratified_split(
    keys: list[str], classes: list[set[str]], fractions: dict[str, float], seed: int
) -> dict[str, str]:
    """{image key: split name}. `keys` are unique image keys, `classes` the class set of each image."""
    rng = random.Random(seed)
    order = sorted(range(len(keys)), key=keys.__getitem__)
    rng.shuffle(order)
    splits = list(fractions)
    wanted_total = {name: float(count) for name, count in _target_counts(len(keys), fractions).items()}
    images_of: dict[str, list[int]] = {}
    for index in order:
        for name in sorted(classes[index]):
            images_of.setdefault(name, []).append(index)
    wanted = {c: {s: fractions[s] * len(images) for s in splits} for c, images in images_of.items()}
    held = {c: dict.fromkeys(splits, 0) for c in images_of}
    assignment: dict[int, str] = {}

    def assign(index: int, split: str) -> None:
        assignment[index] = split
        wanted_total[split] -= 1
        for name in classes[index]:
            wanted[name][split] -= 1
            held[name][split] += 1

    unassigned = {c: list(images) for c, images in images_of.items()}
    while True:
        for name in unassigned:
            unassigned[name] = [i for i in unassigned[name] if i not in assignment]
        pending = [c for c in unassigned if unassigned[c]]
        if not pending:
            break
        rarest = min(pending, key=lambda c: (len(unassigned[c]), c))
        # Rarity is judged on the class's whole image count: a class with an image per split
        # must reach every split.
        reaches_all = len(images_of[rarest]) >= len(splits)
        for index in unassigned[rarest]:
            split = max(
                splits,
                key=lambda s: (
                    reaches_all and held[rarest][s] == 0,
                    wanted[rarest][s],
                    wanted_total[s],
                    -splits.index(s),
                ),
            )
            assign(index, split)
    for index in order:  # images without boxes (negatives) fill the remaining room
        if index not in assignment:
            assign(index, max(splits, key=lambda s: (wanted_total[s], -splits.index(s))))
    return {keys[index]: split for index, split in assignment.items()}
