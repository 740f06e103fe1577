"""Plots of the WGAN-GP training (matplotlib is imported only here)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

__all__ = ["plot_history"]


def plot_history(history: pd.DataFrame, path: str | Path) -> None:
    """Training curves: losses, Wasserstein estimate, classifier accuracy, and the per-epoch
    validity and uniqueness of monitor samples when the history has them (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    if len(history):
        e = history["epoch"]
        axes[0].plot(e, history["critic_loss"], label="critic loss")
        axes[0].plot(e, history["generator_loss"], label="generator loss", alpha=0.7)
        axes[1].plot(e, history["wasserstein"], color="C2", label="W estimate")
        axes[1].plot(
            e, history["gradient_penalty"], color="C3", label="gradient penalty", alpha=0.7
        )
        axes[2].plot(e, history["classifier_acc_real"], label="real")
        axes[2].plot(e, history["classifier_acc_fake"], label="generated")
        if "monitor_valid_rate" in history:
            m = history.dropna(subset=["monitor_valid_rate"])
            axes[3].plot(m["epoch"], m["monitor_valid_rate"], "o-", label="valid")
            axes[3].plot(
                m["epoch"], m["monitor_unique_rate_of_valid"], "s-", label="unique of valid"
            )
    axes[0].set_title("losses")
    axes[1].set_title("Wasserstein estimate")
    axes[2].set_title("composition classifier accuracy")
    axes[2].set_ylim(-0.02, 1.02)
    axes[3].set_title("samples: validity, uniqueness (collapse)")
    axes[3].set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
