"""Plots of the stability classifier (ROC, precision-recall, reliability); matplotlib lives here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from matdisco.classifier.calibration import expected_calibration_error, reliability_curve

__all__ = ["plot_curves"]


def plot_curves(
    curves: dict[str, Any], roc_path: str | Path, pr_path: str | Path, reliability_path: str | Path
) -> None:
    """ROC, precision-recall and reliability plots from :attr:`TrainResult.curves`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    bins = int(curves["bins"])
    series = [
        ("stratified CV (OOF)", curves["stratified_oof"][0], curves["stratified_oof"][1]),
        (
            "chemsys-grouped CV (OOF)",
            curves["chemsys_grouped_oof"][0],
            curves["chemsys_grouped_oof"][1],
        ),
        (
            "held-out test (calibrated ensemble)",
            curves["held_out_test"][0],
            curves["held_out_test"][2],
        ),
    ]
    series = [
        (n, np.asarray(y), np.asarray(p))
        for n, y, p in series
        if p is not None and len(y) and len(np.unique(y)) == 2
    ]

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, y, p in series:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name}: AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="E_hull classifier ROC")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(roc_path, dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, y, p in series:
        prec, rec, _ = precision_recall_curve(y, p)
        ax.plot(rec, prec, label=f"{name}: AP {average_precision_score(y, p):.3f}")
    if series:
        ax.axhline(float(np.mean(series[0][1])), color="k", ls=":", lw=0.8)
    ax.set(
        xlabel="recall",
        ylabel="precision",
        title="E_hull classifier precision-recall",
        ylim=(0, 1.02),
    )
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(pr_path, dpi=120)
    plt.close(fig)

    y, raw, cal = curves["stratified_oof"]
    rel = [("OOF raw", y, raw), ("OOF calibrated (cross-fit)", y, cal)]
    yt, _, pt = curves["held_out_test"]
    if len(yt):
        rel.append(("held-out test (calibrated ensemble)", yt, pt))
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, yy, pp in rel:
        rc = reliability_curve(np.asarray(yy), np.asarray(pp), bins)
        ece = expected_calibration_error(yy, pp, bins)
        ax.plot(rc["p"], rc["y"], "-", lw=1)
        ax.scatter(
            rc["p"],
            rc["y"],
            s=10 + 200 * rc["n"] / rc["n"].max(),
            alpha=0.6,
            label=f"{name}: ECE {ece:.3f}",
        )
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(
        xlabel="mean predicted p_stable",
        ylabel="observed stable fraction",
        title="Reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(reliability_path, dpi=120)
    plt.close(fig)
