"""Plots of the screening stages; matplotlib is imported here only (and only when called)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.store import atomic_write

__all__ = ["plot_bandgap_parity", "plot_final_scatter", "plot_xrd_patterns"]


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


def plot_final_scatter(
    path: str | Path, df: pd.DataFrame, eh_col: str, dg_col: str, th: dict[str, float], label: str
) -> None:
    """E_hull vs screening gap of the judged candidates, coloured by ΔG_pbx (final stage).

    Args:
        path: output image; written atomically.
        df: judged table of :func:`matdisco.screen.final.screen_candidates`.
        eh_col, dg_col: its E_hull and ΔG_pbx columns.
        th: ``screen.thresholds`` as a dict (lines and the gap window).
        label: the energy scale, for the axis label.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    eh = df[eh_col].to_numpy(dtype=float) * 1000
    gap = df["gap_for_screen"].to_numpy(dtype=float)
    std = df["gap_for_screen_std"].to_numpy(dtype=float)
    dg = df[dg_col].to_numpy(dtype=float)
    have = np.isfinite(eh) & np.isfinite(gap)
    if have.any():
        ax.errorbar(
            eh[have],
            gap[have],
            yerr=np.nan_to_num(std[have]),
            fmt="none",
            ecolor="0.7",
            elinewidth=0.8,
            zorder=1,
        )
        known = have & np.isfinite(dg)
        sc = ax.scatter(
            eh[known],
            gap[known],
            c=dg[known],
            cmap="viridis_r",
            s=28,
            zorder=2,
            edgecolor="k",
            lw=0.3,
        )
        if known.any():
            fig.colorbar(sc, ax=ax, label="ΔG_pbx (eV/atom)")
        unk = have & ~np.isfinite(dg)
        ax.scatter(
            eh[unk], gap[unk], c="0.6", marker="x", s=22, zorder=2, label="ΔG_pbx not computed"
        )
        fin = df["finalist"].to_numpy(dtype=bool) & have
        ax.scatter(
            eh[fin],
            gap[fin],
            facecolor="none",
            edgecolor="r",
            s=120,
            lw=1.5,
            zorder=3,
            label="finalist",
        )
        for i in np.flatnonzero(fin)[:15]:
            ax.annotate(
                str(df["formula"].iloc[i]),
                (eh[i], gap[i]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.axvline(th["e_above_hull_max"] * 1000, color="r", ls="--", lw=1)
    ax.axhspan(th["gap_min"], th["gap_max"], color="tab:orange", alpha=0.12, label="gap window")
    ax.set_xlabel(f"E_hull (meV/atom, {label})")
    ax.set_ylabel("band gap used by the screen (eV)")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(
        f"{int(have.sum())} candidates with E_hull and gap; {int(df['finalist'].sum())} finalists",
        fontsize=10,
    )
    fig.tight_layout()
    with atomic_write(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def plot_xrd_patterns(
    path: str | Path,
    patterns: list[tuple[str, pd.DataFrame]],
    radiation: str,
    note: str,
    two_theta: tuple[float, float],
) -> None:
    """Stick patterns of the simulated powder XRD of the finalists (or the closest ones).

    Args:
        path: output image; written atomically.
        patterns: (label, peak table of :func:`matdisco.screen.final.powder_xrd`) pairs.
        radiation: X-ray source name (title).
        note: what the structures are (finalists or closest), shown in the title.
        two_theta: the 2θ range, degrees.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(patterns), 1)
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 1.1 * n))
    if not patterns:
        ax.text(0.5, 0.5, note or "no structures", ha="center", va="center")
        ax.set_axis_off()
    for k, (label, pat) in enumerate(patterns):
        off = (n - 1 - k) * 110.0
        ax.vlines(pat["two_theta_deg"], off, off + pat["intensity"], lw=1.0, color=f"C{k % 10}")
        ax.text(two_theta[0] + 0.5, off + 85, label, fontsize=8)
    if patterns:
        ax.set_xlim(*two_theta)
        ax.set_yticks([])
        ax.set_xlabel(f"2θ (degrees, {radiation})")
        ax.set_ylabel("intensity (offset)")
        ax.set_title(note, fontsize=9)
    fig.tight_layout()
    with atomic_write(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
