"""`train --time-budget`: the number of steps that fills a budget, from step times measured on this machine.

The run's first step traces the model; the next WARMUP_STEPS are timed, and their median (with a checkpoint write
every checkpoint_every steps and one at the end) gives the steps that fit in what is left of the budget. The
schedule is stretched to that count by the loop (see loop.py). After every checkpoint the plan is made again from
the wall time of the recent loop iterations, everything they did included (summaries, the history, the checks
before a save), and the time of the last write, so a machine that gets busier or quieter moves the end, not the
budget. Where the end comes before the next checkpoint, the plan is also made again once RECENT_STEPS steps have
run since the last one (the recent steps are then all steps of the current plan), so a run whose first steps
were slow (cold caches, large images) does not end early for want of a checkpoint to re-plan at. A machine that
slows down between checkpoints (another process taking the cores) brings the end forward at once, on the
iteration that shows it, and when not even one more step and the last save fit, the run ends at the step it is
at. Writes are planned at their median time, so one slowed write does not cut the run short; the
closing line names the slowest step and write, which is by how much a run can end past its budget.
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
    planned_at: int = 0  # the step of the last plan

    @property
    def seconds(self) -> float:
        return budget_seconds(self.text)

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def next_end(self, step: int, iterations: list[float], save_seconds: float, every: int, saved: bool) -> int | None:
        """A new step to train to when one is due, else None. `iterations`: the wall time of each loop iteration
        so far, less the checkpoint write of those that made one (the first iteration traces the step); the
        plans add a write of `save_seconds` (the last one's time) every `every` steps and one at the end.
        - The first plan, once the warm-up's steps are timed, from their median. Planning no more steps than
          done is a BudgetTooShort.
        - Later, from the mean of the recent iterations: after a checkpoint write (`saved`), or RECENT_STEPS steps
          after the last plan when the end comes before the next write, a plan that moves the end by more than
          REPLAN_TOLERANCE of it; on any iteration, one that brings the end forward by more than that share of
          the steps left (at least one). The end can become `step` itself: stop now."""
        if self.end is None:
            if len(iterations) <= WARMUP_STEPS:
                return None
            seconds = statistics.median(iterations[1:]) + save_seconds / every
            end = step + max(0, int((self.seconds - self.elapsed() - save_seconds) // seconds))
            if end <= step:
                raise BudgetTooShort(self.too_short_message(step))
        elif step < self.end:
            seconds = self.step_seconds(iterations) + save_seconds / every
            end = step + max(0, int((self.seconds - self.elapsed() - save_seconds) // seconds))
            moved = abs(end - self.end) > REPLAN_TOLERANCE * self.end
            # behind the plan: near the end, by a step is enough, or the run meets the budget mid-schedule
            behind = self.end - end > max(1.0, REPLAN_TOLERANCE * (self.end - step))
            # a later end waits for the next checkpoint's re-plan, unless the end comes before that checkpoint
            unwritten = self.end <= (step // every + 1) * every and step - self.planned_at >= RECENT_STEPS
            due = moved if saved else behind or (moved and unwritten)
            if not due and end > step:
                return None
        else:
            return None
        self.end, self.planned_at = end, step
        return end

    def summary(self, steps: int, iterations: list[float], writes: list[float]) -> str:
        """The closing line: the steps trained in the time taken, and the slowest step and checkpoint write (after
        the first step's tracing) against their medians. A single iteration or write slowed down by another
        process is the one thing a plan cannot foresee: a run ends past its budget by up to that much."""
        line = f"time budget {self.text}: trained {steps} steps in {self.elapsed():.0f} s"
        for name, times in (("step", iterations[1:]), ("checkpoint write", writes)):
            if times:
                line += f"; slowest {name} {max(times):.2f} s (median {statistics.median(times):.2f} s)"
        return line

    def step_seconds(self, iterations: list[float]) -> float:
        """The recent seconds per loop iteration (checkpoint writes left out), for the plan and the log."""
        return statistics.fmean(iterations[1:][-RECENT_STEPS:])

    def too_short_message(self, step: int) -> str:
        done = f"tracing the step and {step} steps" if step else "building the model"
        return (
            f"--time-budget {self.text} is shorter than the warm-up: {done} took {self.elapsed():.0f} s. Give a "
            "longer budget, or a number of steps (--num-steps)"
        )


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
