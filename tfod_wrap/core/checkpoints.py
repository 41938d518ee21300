"""Which checkpoints a training run kept: the later stages (eval, export) pick theirs here."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from tfod_wrap.core.errors import UserError


def find_checkpoints(model_dir: str | Path, which: str = "latest") -> list[str]:
    """Checkpoint prefixes for 'latest', 'all' (every one the model dir still keeps) or a name like 'ckpt-N'."""
    state = tf.train.get_checkpoint_state(str(model_dir))
    if state is None or not state.all_model_checkpoint_paths:
        raise UserError(f"{model_dir}: no checkpoints (train first: tfod-wrap train)")
    # the state file may hold absolute paths from another machine: the files are the ones beside it
    kept = [str(Path(model_dir) / Path(path).name) for path in state.all_model_checkpoint_paths]
    if which == "latest":
        return kept[-1:]
    if which == "all":
        return kept
    chosen = [path for path in kept if Path(path).name == which]
    if not chosen:
        names = ", ".join(Path(path).name for path in kept)
        raise UserError(f"{model_dir}: no checkpoint {which!r}; kept: {names}")
    return chosen
