"""The fitted recommender: main Tucker model + bootstrap refits + score percentiles; fitting,
training from the store (pickle + summary), loading, and the classifier-score combination.
"""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.core.composition import integer_composition
from matdisco.recommender.space import (
    TernarySpace,
    _sample_unknown,
    _space_for,
    known_formulas,
)
from matdisco.recommender.tucker import TuckerModel, tucker_hooi
from matdisco.settings import RecommenderSettings
from matdisco.store import atomic_write, read_entries

__all__ = [
    "Recommender",
    "classifier_scores",
    "combine_scores",
    "fit_recommender",
    "load_recommender",
    "squash",
    "train_recommender",
]

log = logging.getLogger("matdisco.recommender")


@dataclass
class Recommender:
    """A fitted composition recommender (pickled by ``train_recommender``).

    Attributes:
        space: the composition tensor index.
        known_flat: sorted flat indices of the known (training) cells.
        known: the known reduced formulas (all element counts, for ``known`` flags downstream).
        model: Tucker model fitted on all known cells.
        bootstrap: Tucker models fitted on bootstrap resamples of the known cells.
        quantiles: per model (main first), sorted scores of a uniform sample of unknown cells,
            used to turn a score into a percentile among all unknown cells.
        scales: per model (main first), the median reconstructed score of the known cells: the
            unit of :func:`squash`.
        settings: the settings it was trained with.
        info: counts and timings.
    """

    space: TernarySpace
    known_flat: np.ndarray
    known: list[str]
    model: TuckerModel
    bootstrap: list[TuckerModel]
    quantiles: list[np.ndarray]
    scales: list[float]
    settings: RecommenderSettings
    info: dict[str, Any] = field(default_factory=dict)

    def score_formulas(self, formulas: Sequence[str]) -> pd.DataFrame:
        """Recommender scores of formulas.

        Returns:
            DataFrame with columns formula, in_space (ternary on the ratio grid with elements of
            the space), recommender_raw (Tucker reconstruction of the main model),
            recommender_percentile (fraction of all unknown cells scoring lower), recommender_score
            (:func:`squash` of the raw score, 0..1: 0 for a score <= 0, 0.63 for a score equal to
            the median score of the known compounds), recommender_std and recommender_mean
            (standard deviation and mean of that squashed score over the bootstrap models; NaN
            without bootstrap). Formulas outside the space get NaN.
        """
        formulas = list(formulas)
        cells, pos = self.space.cells(formulas)
        n = len(formulas)
        cols = {c: np.full(n, np.nan) for c in ("raw", "pct", "score", "std", "mean")}
        if len(cells):
            raw = self.model.score_cells(cells)
            cols["raw"][pos] = raw
            cols["pct"][pos] = _percentile(self.quantiles[0], raw)
            cols["score"][pos] = squash(raw, self.scales[0])
            if self.bootstrap:
                sq = np.stack(
                    [
                        squash(m.score_cells(cells), sc)
                        for m, sc in zip(self.bootstrap, self.scales[1:], strict=True)
                    ]
                )
                cols["std"][pos] = sq.std(axis=0, ddof=1) if len(sq) > 1 else 0.0
                cols["mean"][pos] = sq.mean(axis=0)
        in_space = np.zeros(n, bool)
        in_space[pos] = True
        return pd.DataFrame(
            {
                "formula": formulas,
                "in_space": in_space,
                "recommender_raw": cols["raw"],
                "recommender_percentile": cols["pct"],
                "recommender_score": cols["score"],
                "recommender_std": cols["std"],
                "recommender_mean": cols["mean"],
            }
        )

    def top_unknown(self, n: int = 20) -> pd.DataFrame:
        """The ``n`` best-scoring unknown cells of the whole tensor (a full sweep)."""
        best_scores = np.zeros(0)
        best_flat = np.zeros(0, np.int64)
        L = len(self.space.ratios)
        for i in range(len(self.space.elements)):
            start, stop = self.space.system_ids(i)
            if stop <= start:
                continue
            block = self.model.score_block(self.space, i).ravel()
            lo, hi = np.searchsorted(self.known_flat, [start * L, stop * L])
            # only cells above the current n-th best can enter (cheap filter first: a selection
            # over millions of tied zeros is slow)
            threshold = best_scores.min() if len(best_scores) >= n else -np.inf
            top = (
                np.flatnonzero(block > threshold)
                if np.isfinite(threshold)
                else np.arange(len(block))
            )
            # the best n + (known cells in this block) cells contain the best n unknown ones
            m = min(len(top), n + int(hi - lo))
            if m < len(top):
                top = top[np.argpartition(block[top], -m)[-m:]]
            flat = top + start * L
            keep = ~np.isin(flat, self.known_flat[lo:hi])
            block, flat = block[top][keep], flat[keep]
            best_scores = np.concatenate([best_scores, block])
            best_flat = np.concatenate([best_flat, flat])
            if len(best_scores) > n:
                top = np.argpartition(best_scores, -n)[-n:]
                best_scores, best_flat = best_scores[top], best_flat[top]
        order = np.argsort(-best_scores)
        cells = self.space.unflat(best_flat[order])
        return pd.DataFrame(
            {
                "formula": [self.space.formula(c) for c in cells],
                "recommender_raw": best_scores[order],
            }
        )


def squash(raw: np.ndarray, scale: float) -> np.ndarray:
    """Map Tucker scores to 0..1: ``1 - exp(-max(raw, 0) / scale)``.

    ``scale`` is the median reconstructed score of the known compounds, so the score reads as
    "how much this cell looks like a known compound": 0 for cells the model does not recommend,
    0.63 at the median known compound. Unlike the percentile among the ~10^8 unknown cells (most
    of which sit at 0), it is smooth in the raw score, so the spread over bootstrap models is a
    usable uncertainty on the same scale as a probability.
    """
    scale = float(scale) if scale and scale > 0 else 1.0
    return 1.0 - np.exp(-np.clip(np.asarray(raw, dtype=float), 0.0, None) / scale)


def _known_scale(model: TuckerModel, cells: np.ndarray) -> float:
    if len(cells) == 0:
        return 1.0
    med = float(np.median(model.score_cells(cells)))
    return med if med > 0 else 1.0


def _percentile(sorted_sample: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Fraction of the sample scoring below each score (ties count half)."""
    if len(sorted_sample) == 0:
        return np.full(len(scores), 0.5)
    lo = np.searchsorted(sorted_sample, scores, side="left")
    hi = np.searchsorted(sorted_sample, scores, side="right")
    return (lo + hi) / (2.0 * len(sorted_sample))


def fit_recommender(
    known: Sequence[str],
    settings: RecommenderSettings | Mapping[str, Any] | None = None,
    *,
    extra_elements: Iterable[str] = (),
    space: TernarySpace | None = None,
    warm_start: Recommender | None = None,
) -> Recommender:
    """Fit the Tucker recommender (plus bootstrap refits) on known formulas.

    Args:
        known: known reduced formulas (non-ternary or off-grid ones are ignored by the tensor but
            kept in ``Recommender.known``).
        settings: the ``recommender`` settings (a mapping is read as the config section;
            None: the defaults).
        extra_elements: elements to include in the space even if no known ternary has them
            (e.g. the target elements).
        space: use this space instead of building one from the formulas.
        warm_start: a recommender on the same space whose factors start the iterations
            (refits after a few new compositions converge in a sweep or two).

    Returns:
        The fitted :class:`Recommender`.
    """
    s = RecommenderSettings.coerce(settings)
    t0 = time.perf_counter()
    known = sorted(set(known))
    ternary = [f for f in known if (c := integer_composition(f)) is not None and len(c) == 3]
    space = space or _space_for(ternary, s, extra_elements)
    cells, _ = space.cells(ternary)
    flat = np.unique(space.flat(cells))
    cells = space.unflat(flat)
    log.info(
        "tensor %s: %d known ternary cells (%d ternary formulas off the grid or outside the space)",
        space.shape,
        len(flat),
        len(ternary) - len(flat),
    )
    warm = warm_start if warm_start is not None and warm_start.space.shape == space.shape else None
    model = tucker_hooi(
        space.shape,
        cells,
        ranks=s.ranks,
        n_iter=s.n_iter,
        tol=s.tol,
        init=warm.model.factors if warm is not None else None,
    )
    log.info(
        "Tucker ranks %s: relative error %.4f after %d sweeps",
        model.ranks,
        model.rel_error,
        len(model.history),
    )
    rng = np.random.default_rng(s.seed)
    boot = []
    for b in range(s.n_bootstrap):
        weights = np.bincount(rng.integers(0, len(cells), len(cells)), minlength=len(cells)).astype(
            float
        )
        keep = weights > 0
        boot.append(
            tucker_hooi(
                space.shape,
                cells[keep],
                weights[keep],
                ranks=model.ranks,
                n_iter=max(2, s.n_iter // 3),
                tol=s.tol,
                init=warm.bootstrap[b].factors
                if warm is not None and b < len(warm.bootstrap)
                else model.factors,
            )
        )
        log.info("bootstrap %d: relative error %.4f", b, boot[-1].rel_error)
    sample = _sample_unknown(space, flat, s.n_quantile_samples, rng)
    sample_cells = space.unflat(sample)
    quantiles = [np.sort(m.score_cells(sample_cells)).astype(np.float64) for m in [model, *boot]]
    scales = [_known_scale(m, cells) for m in [model, *boot]]
    info = {
        "tensor_shape": list(space.shape),
        "n_cells": int(space.n_cells),
        "n_known_formulas": len(known),
        "n_known_ternary": len(ternary),
        "n_known_cells": len(flat),
        "n_off_grid": int(len(ternary) - len(flat)),
        "ranks": list(model.ranks),
        "known_score_scale": scales[0],
        "rel_error": model.rel_error,
        "sweeps": len(model.history),
        "bootstrap_rel_error": [m.rel_error for m in boot],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return Recommender(space, flat, known, model, boot, quantiles, scales, s, info)


def train_recommender(
    store: str | Path,
    out_model: str | Path,
    settings: RecommenderSettings | Mapping[str, Any] | None = None,
    *,
    target_elements: Sequence[str] = (),
    out_summary: str | Path | None = None,
) -> Recommender:
    """Fit the recommender on the store's known compositions and pickle it.

    Args:
        store: entry store (``entries.h5``).
        out_model: output pickle.
        settings: the ``recommender`` settings (a mapping is read as the config section).
        target_elements: elements always included in the tensor.
        out_summary: optional JSON with counts, fit error and the top unknown cells.
    """
    s = RecommenderSettings.coerce(settings)
    entries = read_entries(store, ["formula", "is_experimental"])
    rec = fit_recommender(known_formulas(entries, s.known), s, extra_elements=target_elements)
    with atomic_write(out_model) as tmp, open(tmp, "wb") as fh:
        pickle.dump(rec, fh, protocol=pickle.HIGHEST_PROTOCOL)
    if out_summary is not None:
        top = rec.top_unknown(25)
        # "unknown" to the model (its known set) is not "unreported": name every source that
        # knows a listed formula (matdisco.known) and list the unreported ones apart
        from matdisco.known import KnownCompositions

        kc = KnownCompositions.from_store(store)
        top["known_composition_source"] = [kc.source_of(f) for f in top["formula"].astype(str)]
        summary = {
            **rec.info,
            "settings": s.to_dict(),
            "top_unknown": top.to_dict(orient="records"),
            "top_unreported": top[top["known_composition_source"] == ""].to_dict(orient="records"),
        }
        with atomic_write(out_summary) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    log.info("recommender written: %s (%.1f s)", out_model, rec.info["seconds"])
    return rec


def load_recommender(path: str | Path) -> Recommender:
    """Load a pickled :class:`Recommender`."""
    with open(path, "rb") as fh:
        rec = pickle.load(fh)
    if not isinstance(rec, Recommender):
        raise TypeError(f"{path} does not hold a Recommender")
    return rec


# --------------------------------------------------------------------------------------------
# Classifier scores and combination
# --------------------------------------------------------------------------------------------


def classifier_scores(
    model_path: str | Path | None, formulas: Sequence[str]
) -> pd.DataFrame | None:
    """E_hull classifier probabilities for formulas, or ``None`` without a classifier.

    Uses :func:`matdisco.classifier.predict_stability`; missing probabilities (invalid
    formulas) become 0 with uncertainty 0.
    """
    if model_path is None or not Path(model_path).exists():
        return None
    try:
        from matdisco.classifier import predict_stability
    except ImportError:
        log.warning("matdisco.classifier is not available: classifier scores skipped")
        return None
    df = predict_stability(model_path, list(formulas)).reset_index(drop=True)
    df["p_stable"] = pd.to_numeric(df["p_stable"], errors="coerce").fillna(0.0)
    df["p_stable_std"] = pd.to_numeric(df["p_stable_std"], errors="coerce").fillna(0.0)
    return df


def combine_scores(p_stable: np.ndarray, rec_score: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """Weighted mean of the classifier probability and the recommender percentile.

    ``weight`` is the classifier's share (1: classifier alone, 0: recommender alone). A NaN
    on one side falls back to the other side alone.
    """
    p = np.asarray(p_stable, dtype=float)
    q = np.asarray(rec_score, dtype=float)
    out = weight * p + (1 - weight) * q
    out = np.where(np.isnan(p), q, out)
    return np.where(np.isnan(q), p, out)
