"""Plots of the screening stages; matplotlib is imported here only (and only when called)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from matdisco.store import atomic_write

__all__ = ["plot_bandgap_parity"]


def plot_bandgap_parity(path: str | Path, held: pd.DataFrame, metrics: dict[str, Any]) -> None:
    """Parity plot of the band-gap surrogate on its held-out (formula-grouped) split.

    Args:
        path: output image (PNG); written atomically.
        held: held-out predictions of :func:`matdisco.screen.bandgap.train_gap_surrogate`
            (columns gap_pbe, gap_pbe_ml, gap_pbe_ml_std).
        metrics: its metrics (``test_grouped`` gives the MAE and n in the title).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 5))
    if len(held):
        ax.errorbar(
            held["gap_pbe"],
            held["gap_pbe_ml"],
            yerr=held["gap_pbe_ml_std"],
            fmt="o",
            ms=2.5,
            alpha=0.35,
            elinewidth=0.5,
            color="tab:blue",
        )
        top = float(max(held["gap_pbe"].max(), held["gap_pbe_ml"].max(), 1.0)) * 1.05
        ax.plot([0, top], [0, top], "k--", lw=1)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
    m = metrics["test_grouped"]
    title = f"held-out (formula-grouped) PBE gap: MAE {m['mae']:.3f} eV, n={m['n']}"
    iv = m.get("intervals", {}).get("mae", {})
    if "model" in iv and "composition_prior" in iv:
        mo, b = iv["model"], iv["composition_prior"]
        title = (
            f"held-out (formula-grouped) PBE gap, n={m['n']}\n"
            f"MAE {mo['value']:.3f} [{mo['lo']:.3f}, {mo['hi']:.3f}] eV; "
            f"composition prior {b['value']:.3f} eV"
        )
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("PBE gap, MP (eV)")
    ax.set_ylabel("surrogate PBE gap gap_pbe_ml (eV)")
    fig.tight_layout()
    with atomic_write(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
