"""Figures of the relaxation stage: the reference hull with the candidates, E_hull per generator."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from matdisco.relax.reference import load_reference, phase_diagram

__all__ = ["plot_hull", "plot_ehull_distribution"]


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_hull(
    reference_csv: str | Path,
    ehull_csv: str | Path,
    out_png: str | Path,
    *,
    max_e_above_hull: float = 0.5,
) -> None:
    """Reference hull (pymatgen PDPlotter, matplotlib backend) with the relaxed candidates.

    Candidates with E_hull <= ``max_e_above_hull`` are drawn as coloured markers (colour =
    E_hull) at their composition (ternary: Gibbs triangle; binary: formation energy).
    """
    from pymatgen.analysis.phase_diagram import PDPlotter, triangular_coord
    from pymatgen.core import Composition

    plt = _mpl()
    ref = load_reference(reference_csv)
    cand = pd.read_csv(ehull_csv)
    pdg = phase_diagram(ref, name_col="formula")  # stable phases labelled by formula
    ax = PDPlotter(pdg, show_unstable=0, backend="matplotlib").get_plot(label_unstable=False)
    for text in ax.texts:
        text.set_fontsize(11)
    fig = ax.get_figure()
    dim = len(pdg.elements)
    ok = cand[np.isfinite(cand["e_above_hull"].to_numpy(dtype=float))]
    ok = ok[ok["e_above_hull"] <= max_e_above_hull]
    xs, ys, cs = [], [], []
    for _, row in ok.iterrows():
        comp = Composition(row["formula"])
        c = pdg.pd_coords(comp)
        if dim == 3:
            x, y = triangular_coord(np.array([c[:2]]))
            xs.append(float(np.ravel(x)[0])), ys.append(float(np.ravel(y)[0]))
        elif dim == 2:
            xs.append(float(c[0])), ys.append(float(row["formation_energy_per_atom"]))
        else:
            continue
        cs.append(float(row["e_above_hull"]))
    if xs:
        sc = ax.scatter(
            xs,
            ys,
            c=cs,
            cmap="viridis_r",
            vmin=min(0.0, min(cs)),
            vmax=max_e_above_hull,
            s=45,
            marker="D",
            edgecolors="k",
            zorder=10,
            label="candidates",
        )
        fig.colorbar(sc, ax=ax, shrink=0.6, label="candidate E_hull (eV/atom)")
        ax.legend(loc="upper right", fontsize=9)
    scale = str(ref["energy_scale"].iloc[0]) if len(ref) else ""
    ax.set_title(
        f"{'-'.join(str(e) for e in pdg.elements)} hull ({scale}); "
        f"{len(xs)} of {len(cand)} candidates "
        f"<= {max_e_above_hull:g} eV/atom",
        fontsize=10,
    )
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_ehull_distribution(
    ehull_csv: str | Path, out_png: str | Path, *, thresholds: Sequence[float] = (0.2, 0.08)
) -> None:
    """E_hull of the relaxed candidates per generator (box + points), with threshold lines."""
    plt = _mpl()
    df = pd.read_csv(ehull_csv)
    df["generator"] = df["generator"].fillna("").astype(str).replace("", "(none)")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    gens = sorted(df["generator"].unique())
    rng = np.random.default_rng(0)
    labels = []
    for k, g in enumerate(gens):
        sub = df[df["generator"] == g]
        v = sub["e_above_hull"].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if len(v):
            ax.boxplot(v, positions=[k], widths=0.5, showfliers=False)
            ax.scatter(k + rng.uniform(-0.15, 0.15, len(v)), v, s=14, alpha=0.7, zorder=3)
        labels.append(f"{g}\nn={len(sub)}, without E_hull: {len(sub) - len(v)}")
    for t, style in zip(thresholds, ("--", ":"), strict=False):
        ax.axhline(t, color="grey", ls=style, lw=1, label=f"{t * 1000:.0f} meV/atom")
    ax.set_xticks(range(len(gens)), labels)
    ax.set_ylabel("E_hull (eV/atom)")
    scale = str(df["energy_scale"].dropna().iloc[0]) if df["energy_scale"].notna().any() else ""
    ax.set_title(f"E_hull of relaxed candidates per generator ({scale})", fontsize=10)
    if len(gens):
        ax.legend(fontsize=8, loc="center right")
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    plt.close(fig)
