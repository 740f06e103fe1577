"""Plots of the recommender stage (matplotlib is imported only here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from matdisco.store import atomic_write

__all__ = ["plot_enrichment"]


def plot_enrichment(metrics: dict[str, Any], path: str | Path) -> None:
    """Bar chart of the enrichment over uniform random order per method, split and top-k fraction
    (baselines included), with the 95 % bootstrap intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = {k: v for k, v in metrics.get("splits", {}).items() if "methods" in v}
    fig, axes = plt.subplots(
        1, max(len(splits), 1), figsize=(5.5 * max(len(splits), 1), 4.2), squeeze=False
    )
    for ax, (kind, res) in zip(axes[0], splits.items(), strict=False):
        methods = [m for m in res["methods"] if m != "random"]
        tags = [k.split("@")[1] for k in res["methods"]["random"] if k.startswith("enrichment@")]
        width = 0.8 / max(len(tags), 1)
        for t, tag in enumerate(tags):
            vals = [max(res["methods"][m].get(f"enrichment@{tag}", np.nan), 1e-2) for m in methods]
            # 95 % bootstrap interval over the held-out compounds (where reported)
            ci = np.array(
                [
                    res["methods"][m].get(f"enrichment@{tag}_ci95", [np.nan, np.nan])
                    for m in methods
                ],
                dtype=float,
            )
            yerr = np.clip(np.vstack([vals - ci[:, 0], ci[:, 1] - vals]), 0, None)
            yerr = np.nan_to_num(yerr)
            ax.bar(
                np.arange(len(methods)) + t * width,
                vals,
                width,
                yerr=yerr,
                capsize=2,
                error_kw={"lw": 0.8},
                label=f"top {tag}",
            )
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_yscale("log")
        short = {
            "charge_balanced_random": "charge-bal. random",
            "tensor_on_classifier_sample": "tensor (clf sample)",
        }
        ax.set_xticks(
            np.arange(len(methods)) + width * (len(tags) - 1) / 2,
            [short.get(m, m) for m in methods],
            rotation=30,
            ha="right",
            fontsize=8,
        )
        ax.set_ylabel("enrichment over random order")
        ax.set_title(
            f"{kind} split: {res['n_hidden_cells']} held-out of "
            f"{res['n_candidates']:.3g} candidates",
            fontsize=9,
        )
        ax.legend(fontsize=8)
    if not splits:
        axes[0][0].text(0.5, 0.5, "no split could be evaluated", ha="center")
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
