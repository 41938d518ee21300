"""The loss-curve PNG written into the model dir (matplotlib, no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

from tfod_wrap.core.files import atomic_write_bytes


def loss_curve(rows: list[dict], output: Path) -> Path:
    """Loss parts and learning rate against step, from train_history.csv rows."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    steps = [int(row["step"]) for row in rows]
    loss_keys = [key for key in rows[0] if key.startswith("Loss/")]
    figure, (losses_axis, rate_axis) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for key in loss_keys:
        losses_axis.plot(steps, [float(row[key]) for row in rows], label=key.removeprefix("Loss/"))
    losses_axis.set_ylabel("loss")
    losses_axis.set_yscale("log")
    losses_axis.legend(loc="upper right", fontsize="small")
    losses_axis.grid(alpha=0.3)
    rate_axis.plot(steps, [float(row["learning_rate"]) for row in rows], color="tab:gray")
    rate_axis.set_ylabel("learning rate")
    rate_axis.set_xlabel("step")
    rate_axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(Path(output), buffer.getvalue())
    return Path(output)
