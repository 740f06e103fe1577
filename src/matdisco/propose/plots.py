"""Plots of the proposal stage (matplotlib is imported only here)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from matdisco.core.composition import element_amounts
from matdisco.store import atomic_write

__all__ = ["plot_proposals"]


def _fractions(formula: str, elements: Sequence[str]) -> np.ndarray:
    amounts = element_amounts(formula)
    v = np.array([amounts.get(e, 0.0) for e in elements], dtype=float)
    return v / v.sum() if v.sum() > 0 else v


def plot_proposals(
    table: pd.DataFrame,
    elements: Sequence[str],
    path: str | Path,
    *,
    known_compounds: Iterable[str] = (),
    hypothetical: Iterable[str] = (),
    n_label: int = 10,
    title: str = "",
) -> None:
    """Ternary composition plot of the candidates (for three elements; a bar chart otherwise).

    Candidates are coloured by acquisition value, the selected proposals are circled in red and
    labelled; known compounds of the system and its subsystems are black stars, hypothetical
    (computed-only) store entries grey crosses.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    elements = list(elements)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    unknown = table[~table["known"]]
    top = unknown[unknown["selected"]] if "selected" in unknown else unknown.head(n_label)
    if len(elements) != 3:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        shown = unknown.head(max(n_label, 1))
        ax.barh(
            shown["formula"][::-1],
            shown["acquisition"][::-1],
            xerr=shown["std"][::-1],
            color="tab:blue",
        )
        ax.set_xlabel("acquisition")
        ax.set_title(title or f"top proposals in {'-'.join(elements)}")
        fig.tight_layout()
        with atomic_write(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=150, format="png")
        plt.close(fig)
        return
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])

    def xy(formulas: Iterable[str]) -> np.ndarray:
        fr = np.array([_fractions(f, elements) for f in formulas]).reshape(-1, 3)
        return fr @ corners

    cand = xy(unknown["formula"]) if len(unknown) else np.zeros((0, 2))
    acq = unknown["acquisition"].to_numpy(dtype=float)
    finite = acq[np.isfinite(acq)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    kn, hyp = list(known_compounds), list(hypothetical)
    kn_xy, hyp_xy = xy(kn), xy(hyp)
    top_xy = xy(top["formula"]) if len(top) else np.zeros((0, 2))

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1, 1.05]})
    sc = None
    for ax, zoom in zip(axes, (False, True), strict=True):
        ax.plot(*np.vstack([corners, corners[:1]]).T, color="black", lw=1)
        for t in np.linspace(0.05, 0.95, 19):  # grid every 5 at.% (10 % lines darker)
            shade = "0.85" if round(t * 20) % 2 == 0 else "0.94"
            for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
                p0 = corners[a] * t + corners[b] * (1 - t)
                p1 = corners[a] * t + corners[c] * (1 - t)
                ax.plot([p0[0], p1[0]], [p0[1], p1[1]], color=shade, lw=0.5, zorder=0)
        if len(cand):
            sc = ax.scatter(
                cand[:, 0],
                cand[:, 1],
                c=acq,
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                s=22 if not zoom else 40,
                zorder=2,
            )
        if len(hyp_xy):
            ax.scatter(
                hyp_xy[:, 0],
                hyp_xy[:, 1],
                marker="x",
                color="0.45",
                s=30,
                zorder=3,
                label="computed only (store)",
            )
        if len(kn_xy):
            ax.scatter(
                kn_xy[:, 0],
                kn_xy[:, 1],
                marker="*",
                color="black",
                s=90,
                zorder=4,
                label="reported (known)",
            )
        if len(top_xy):
            ax.scatter(
                top_xy[:, 0],
                top_xy[:, 1],
                facecolors="none",
                edgecolors="red",
                s=110 if not zoom else 190,
                lw=1.5,
                zorder=5,
                label="selected",
            )
        ax.set_aspect("equal")
        ax.axis("off")
        if zoom and len(cand):
            lo, hi = cand.min(axis=0), cand.max(axis=0)
            pad = 0.08 * max(hi - lo) + 0.02
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[1] - pad, hi[1] + pad)
            for (x, y), r in zip(top_xy, top["rank"], strict=True):
                ax.annotate(
                    str(int(r)),
                    (x, y),
                    xytext=(6, 5),
                    textcoords="offset points",
                    fontsize=9,
                    color="red",
                    weight="bold",
                    zorder=6,
                )
            for (x, y), f in zip(kn_xy, kn, strict=True):
                if lo[0] - pad <= x <= hi[0] + pad and lo[1] - pad <= y <= hi[1] + pad:
                    ax.annotate(
                        f, (x, y), xytext=(5, -10), textcoords="offset points", fontsize=7, zorder=6
                    )
            ax.set_title("candidate region (red: rank of selected proposals)", fontsize=10)
        else:
            for name, corner, off in zip(
                elements, corners, ([-0.04, -0.04], [0.04, -0.04], [0, 0.035]), strict=True
            ):
                ax.text(
                    corner[0] + off[0],
                    corner[1] + off[1],
                    name,
                    ha="center",
                    va="center",
                    fontsize=14,
                    weight="bold",
                )
            ax.legend(loc="upper right", fontsize=8, frameon=False)
            lines = [f"{int(r)}. {f}" for r, f in zip(top["rank"], top["formula"], strict=True)]
            if lines:
                ax.text(
                    0.0,
                    0.88,
                    "selected:\n" + "\n".join(lines[:15]),
                    fontsize=8,
                    va="top",
                    family="monospace",
                )
    if sc is not None:
        fig.colorbar(sc, ax=axes, shrink=0.75, label="acquisition")
    fig.suptitle(title or f"Proposals in {'-'.join(elements)}")
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130, format="png", bbox_inches="tight")
    plt.close(fig)
