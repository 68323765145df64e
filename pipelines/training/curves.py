"""Training curves: loss and learning rate against tokens, as a PNG beside the metrics."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from pipelines.core.outputs import atomic_path  # noqa: E402


def plot_training(records: list[dict], path: Path, title: str, baseline: float | None = None) -> None:
    """Train loss (light), its moving average, validation loss (markers), LR on a second axis."""
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    x = [r["tokens"] for r in train]
    y = [r["loss"] for r in train]
    ax.plot(x, y, color="tab:blue", alpha=0.3, lw=1, label="train loss")
    window = max(1, len(y) // 20)
    if len(y) >= window > 1:
        smooth = [sum(y[max(0, i - window + 1):i + 1]) / len(y[max(0, i - window + 1):i + 1]) for i in range(len(y))]
        ax.plot(x, smooth, color="tab:blue", lw=1.8, label=f"train loss ({window}-step mean)")
    if val:
        ax.plot([r["tokens"] for r in val], [r["val_loss"] for r in val], "o-", color="tab:red", label="val loss")
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label=f"unigram entropy {baseline:.2f}")
    ax.set_xlabel("tokens")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    lr_ax = ax.twinx()
    lr_ax.plot(x, [r["lr"] for r in train], color="tab:green", lw=1, alpha=0.7)
    lr_ax.set_ylabel("learning rate", color="tab:green")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)
