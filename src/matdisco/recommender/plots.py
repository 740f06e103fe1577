"""Plots of the recommender stage (matplotlib is imported only here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from matdisco.store import atomic_write

__all__ = ["plot_enrichment"]


def plot_enrichment(metrics: dict[str, Any], path: str | Path) -> None:
    """Bar chart of the enrichment over random order per method, split and top-k fraction."""
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
            ax.bar(np.arange(len(methods)) + t * width, vals, width, label=f"top {tag}")
        ax.axhline(1.0, color="black", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(np.arange(len(methods)) + width * (len(tags) - 1) / 2, methods, rotation=20)
        ax.set_ylabel("enrichment over random order")
        ax.set_title(
            f"{kind} split: {res['n_hidden_cells']} held-out of {res['n_candidates']:.3g} candidates",
            fontsize=9,
        )
        ax.legend(fontsize=8)
    if not splits:
        axes[0][0].text(0.5, 0.5, "no split could be evaluated", ha="center")
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
