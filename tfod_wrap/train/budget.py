"""`train --time-budget`: the number of steps that fills a budget, from step times measured on this machine.

The run's first step traces the model; the next WARMUP_STEPS are timed, and their median (with a checkpoint write
every checkpoint_every steps and one at the end) gives the steps that fit in what is left of the budget. The
schedule is stretched to that count by the loop (see loop.py). After every checkpoint the plan is made again from
the wall time of the recent loop iterations, everything they did included (summaries, the history, the checks
before a save, the save and the loss curve), so a machine that gets busier or quieter moves the end, not the
budget.
"""

from __future__ import annotations

import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from tfod_wrap.core.errors import UserError
from tfod_wrap.core.files import atomic_write_bytes
from tfod_wrap.core.recipe import budget_seconds

WARMUP_STEPS = 5
RECENT_STEPS = 20  # the step times a re-plan looks at
REPLAN_TOLERANCE = 0.05  # a re-plan that moves the end by less keeps it


@dataclass
class Budget:
    text: str
    began: float = field(default_factory=time.perf_counter)
    end: int | None = None  # the step to train to, once planned

    @property
    def seconds(self) -> float:
        return budget_seconds(self.text)

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def next_end(self, step: int, iterations: list[float], save_seconds: float, every: int, saved: bool) -> int | None:
        """A new step to train to when one is due, else None. `iterations`: the wall time of each loop iteration
        so far (the first traces the step; an iteration that wrote a checkpoint includes the write).
        - The first plan, once the warm-up's steps are timed: their median, with a checkpoint write of
          `save_seconds` every `every` steps and one at the end. Planning no more steps than done is a
          BudgetTooShort.
        - After a checkpoint write (`saved`), a re-plan from the mean of the iterations since the one before, the
          write included; it moves the end only when that changes it by more than REPLAN_TOLERANCE."""
        if self.end is None:
            if len(iterations) <= WARMUP_STEPS:
                return None
            seconds = statistics.median(iterations[1:]) + save_seconds / every
            end = step + max(0, int((self.seconds - self.elapsed() - save_seconds) // seconds))
            if end <= step:
                raise BudgetTooShort(self.too_short_message(step))
        elif saved and step < self.end:
            seconds = statistics.fmean(iterations[1:][-max(every, RECENT_STEPS) :])
            end = max(step + 1, step + int((self.seconds - self.elapsed()) // seconds))
            if abs(end - self.end) <= REPLAN_TOLERANCE * self.end:
                return None
        else:
            return None
        self.end = end
        return end

    def too_short_message(self, step: int) -> str:
        done = f"tracing the step and {step} steps" if step else "building the model"
        return (
            f"--time-budget {self.text} is shorter than the warm-up: {done} took {self.elapsed():.0f} s. Give a "
            "longer budget, or a number of steps (--num-steps)"
        )

    def step_seconds(self, iterations: list[float]) -> float:
        """The recent seconds per step, for the log."""
        return statistics.fmean(iterations[1:][-RECENT_STEPS:])


class BudgetTooShort(UserError):
    """The budget ran out during the warm-up."""


class Undo:
    """What a run wrote into its folder before it could know it must refuse (a budget shorter than the warm-up):
    files and folders it added are removed and the ones it replaced get their old bytes back."""

    KEPT = ("pipeline.config", "recipe.json")

    def __init__(self, folder: Path):
        self.folder = folder
        self.existed = folder.exists()
        self.before = {path.name for path in folder.iterdir()} if self.existed else set()
        self.saved = {name: (folder / name).read_bytes() for name in self.KEPT if (folder / name).is_file()}

    def __call__(self) -> None:
        if not self.existed:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        for path in self.folder.iterdir():
            if path.name not in self.before:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
        for name, data in self.saved.items():
            atomic_write_bytes(self.folder / name, data)
