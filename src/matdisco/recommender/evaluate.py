"""Held-out evaluation of the recommender: ranking metrics (recall@k, enrichment), the random
and chemical-system splits, the simple baselines (element popularity, random order over the
charge-balanced cells), 95 % bootstrap intervals over the held-out compounds, and
:func:`evaluate_recommender` (recommender/metrics.json).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matdisco.recommender.model import _known_scale, classifier_scores, combine_scores, squash
from matdisco.recommender.space import (
    ChargeBalance,
    TernarySpace,
    _sample_unknown,
    _space_for,
    _ternary_formulas,
)
from matdisco.recommender.tucker import (
    CellScorer,
    _BoundMatrix,
    fit_matrix,
    fit_popularity,
    tucker_hooi,
)
from matdisco.settings import RecommenderSettings
from matdisco.store import atomic_write, read_entries

__all__ = ["evaluate_recommender", "expected_recall", "rank_counts"]

log = logging.getLogger("matdisco.recommender")

#: bootstrap resamples of the held-out compounds behind every 95 % interval
N_BOOTSTRAP = 1000
#: the baselines every model is reported beside (the headline compares the tensor with the first)
BASELINES = ("popularity", "charge_balanced_random")


def rank_counts(
    pos_scores: np.ndarray, neg_scores: np.ndarray | Iterable[np.ndarray], neg_weight: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """For every positive: weight of items scoring strictly higher, and of items tying with it.

    Items are all positives (weight 1, each tying with itself) plus the negatives (each standing
    for ``neg_weight`` candidates, e.g. ``N / n_sampled`` for a uniform sample). ``neg_scores``
    may be an iterable of chunks, so the negatives never need to be in memory at once.

    Returns:
        ``(greater, equal)`` arrays aligned with ``pos_scores``; ``equal`` includes the item itself.
    """
    pos = np.asarray(pos_scores, dtype=np.float64)
    order = np.argsort(pos, kind="stable")
    sp = pos[order]
    m = len(sp)
    above = np.zeros(m + 1)  # above[t]: weight of values v with (#positives < v) == t
    eq_diff = np.zeros(m + 1)

    def add(values: np.ndarray, weight: float) -> None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if not len(values):
            return
        a = np.searchsorted(sp, values, side="left")  # positives strictly below v
        b = np.searchsorted(sp, values, side="right")  # positives <= v
        above[:] += weight * np.bincount(a, minlength=m + 1)
        eq = a < b
        eq_diff[:] += weight * (
            np.bincount(a[eq], minlength=m + 1) - np.bincount(b[eq], minlength=m + 1)
        )

    add(sp, 1.0)
    if isinstance(neg_scores, np.ndarray):
        add(neg_scores, neg_weight)
    else:
        for chunk in neg_scores:
            add(chunk, neg_weight)
    # greater for the positive at sorted position t = weight of values with a(v) > t
    tail = np.cumsum(above[::-1])[::-1]  # tail[t] = sum_{s >= t} above[s]
    greater_sorted = tail[1:]
    equal_sorted = np.cumsum(eq_diff)[:m]
    greater = np.empty(m)
    equal = np.empty(m)
    greater[order] = greater_sorted
    equal[order] = np.maximum(equal_sorted, 1.0)
    return greater, equal


def expected_recall(greater: np.ndarray, equal: np.ndarray, k: float) -> float:
    """Expected fraction of positives in the top ``k`` when ties are broken at random."""
    if len(greater) == 0:
        return float("nan")
    p = np.clip((k - greater) / equal, 0.0, 1.0)
    return float(p.mean())


def _metrics_from_counts(
    greater: np.ndarray, equal: np.ndarray, n_candidates: float, fractions: Sequence[float]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fractions:
        k = max(1.0, round(f * n_candidates))
        recall = expected_recall(greater, equal, k)
        tag = f"{100 * f:g}%"
        out[f"recall@{tag}"] = recall
        out[f"enrichment@{tag}"] = recall / (k / n_candidates) if n_candidates else float("nan")
    if len(greater):
        pct = (
            greater + (equal + 1) / 2
        ) / n_candidates  # mean position as a fraction of candidates
        out["median_rank_fraction"] = float(np.median(pct))
        out["mean_rank_fraction"] = float(np.mean(pct))
    return out


def _random_metrics(n_candidates: float, fractions: Sequence[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fractions:
        k = max(1.0, round(f * n_candidates))
        tag = f"{100 * f:g}%"
        out[f"recall@{tag}"] = k / n_candidates
        out[f"enrichment@{tag}"] = 1.0
    out["median_rank_fraction"] = 0.5
    out["mean_rank_fraction"] = 0.5
    return out


def _tag(f: float) -> str:
    return f"{100 * f:g}%"


def _hit_probabilities(
    greater: np.ndarray, equal: np.ndarray, n_candidates: float, fractions: Sequence[float]
) -> dict[str, np.ndarray]:
    """Per held-out compound and top-k fraction: probability it is in the top k (random ties)."""
    out = {}
    for f in fractions:
        k = max(1.0, round(f * n_candidates))
        out[_tag(f)] = np.clip((k - greater) / equal, 0.0, 1.0)
    return out


def _charge_balanced_random(
    hidden_cb: np.ndarray, n_cb: float, n_candidates: float, fractions: Sequence[float]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Random order over the charge-balanced candidates first, then over the rest.

    ``n_cb`` charge-balanced candidates among ``n_candidates``; ``hidden_cb`` marks the held-out
    compounds that are charge-balanced. Returns (metrics, per-compound hit probabilities); both
    are exact expectations given ``n_cb``.
    """
    n_rest = n_candidates - n_cb
    hits: dict[str, np.ndarray] = {}
    metrics: dict[str, Any] = {}
    for f in fractions:
        k = max(1.0, round(f * n_candidates))
        p_cb = min(1.0, k / n_cb) if n_cb > 0 else 0.0
        p_rest = min(1.0, max(0.0, k - n_cb) / n_rest) if n_rest > 0 else 1.0
        hits[_tag(f)] = np.where(hidden_cb, p_cb, p_rest)
        recall = float(hits[_tag(f)].mean()) if len(hidden_cb) else float("nan")
        metrics[f"recall@{_tag(f)}"] = recall
        metrics[f"enrichment@{_tag(f)}"] = recall / (k / n_candidates)
    if len(hidden_cb):
        pos = np.where(hidden_cb, (n_cb + 1) / 2, n_cb + (n_rest + 1) / 2) / n_candidates
        metrics["median_rank_fraction"] = float(np.median(pos))
        metrics["mean_rank_fraction"] = float(np.mean(pos))
    return metrics, hits


def _percentile_interval(values: np.ndarray) -> list[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(finite, [2.5, 97.5])
    return [float(lo), float(hi)]


def _add_intervals(
    methods: dict[str, Any],
    hits: dict[str, dict[str, np.ndarray]],
    n_candidates: float,
    fractions: Sequence[float],
    rng: np.random.Generator,
) -> dict[str, Any]:
    """95 % bootstrap intervals (resampling the held-out compounds) of every recall/enrichment,
    and paired comparisons of the tensor with each baseline (ratio and difference of recalls).

    Intervals cover the sampling of held-out compounds only; the uniform sample of negatives
    (``n_sample_candidates``) adds a little more noise that is not included.
    """
    n = len(next(iter(next(iter(hits.values())).values())))
    idx = rng.integers(0, n, size=(N_BOOTSTRAP, n))
    boot: dict[str, dict[str, np.ndarray]] = {}
    for name, per_tag in hits.items():
        boot[name] = {}
        for f in fractions:
            tag = _tag(f)
            means = per_tag[tag][idx].mean(axis=1)
            boot[name][tag] = means
            k = max(1.0, round(f * n_candidates))
            ci = _percentile_interval(means)
            methods[name][f"recall@{tag}_ci95"] = ci
            methods[name][f"enrichment@{tag}_ci95"] = [c / (k / n_candidates) for c in ci]
    comparisons: dict[str, Any] = {}
    for base in BASELINES:
        if "tensor" not in hits or base not in hits:
            continue
        comp: dict[str, Any] = {}
        for f in fractions:
            tag = _tag(f)
            rt, rb = float(hits["tensor"][tag].mean()), float(hits[base][tag].mean())
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio_boot = boot["tensor"][tag] / boot[base][tag]
            comp[tag] = {
                "recall_tensor": rt,
                "recall_baseline": rb,
                "ratio": rt / rb if rb > 0 else float("nan"),
                "ratio_ci95": _percentile_interval(ratio_boot),
                "difference": rt - rb,
                "difference_ci95": _percentile_interval(boot["tensor"][tag] - boot[base][tag]),
            }
        comparisons[f"tensor_vs_{base}"] = comp
    return comparisons


def _stream_unknown(
    scorer: CellScorer, space: TernarySpace, exclude_flat: np.ndarray
) -> Iterable[np.ndarray]:
    """Scores of every cell of the space except ``exclude_flat`` (sorted), block by block."""
    L = len(space.ratios)
    for i in range(len(space.elements)):
        start, stop = space.system_ids(i)
        if stop <= start:
            continue
        block = scorer.score_block(space, i).ravel()
        lo, hi = np.searchsorted(exclude_flat, [start * L, stop * L])
        if hi > lo:
            keep = np.ones(block.size, bool)
            keep[exclude_flat[lo:hi] - start * L] = False
            block = block[keep]
        yield block


def _split(
    flat: np.ndarray, space: TernarySpace, kind: str, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Boolean mask over ``flat`` of the held-out cells."""
    n = len(flat)
    hide = np.zeros(n, bool)
    if n < 2:
        return hide
    if kind == "random":
        m = min(n - 1, max(1, round(fraction * n)))
        hide[rng.choice(n, m, replace=False)] = True
    elif kind == "chemsys":
        sys = flat // len(space.ratios)
        systems = np.unique(sys)
        if len(systems) < 2:
            return hide
        m = min(len(systems) - 1, max(1, round(fraction * len(systems))))
        hide = np.isin(sys, rng.choice(systems, m, replace=False))
    else:
        raise ValueError(kind)
    return hide


def _evaluate_split(
    kind: str,
    space: TernarySpace,
    flat: np.ndarray,
    s: RecommenderSettings,
    rng: np.random.Generator,
    classifier_model: str | Path | None,
) -> dict[str, Any]:
    ev = s.evaluation
    fractions = [float(f) for f in ev.top_k]
    hide = _split(flat, space, kind, ev.holdout_fraction, rng)
    train_flat, hidden_flat = flat[~hide], flat[hide]
    if np.intersect1d(train_flat, hidden_flat).size:  # guaranteed by np.unique; checked anyway
        raise RuntimeError("held-out recommender cells leaked into the training tensor")
    if len(hidden_flat) == 0:
        return {"skipped": "fewer than two known cells (or systems) to split"}
    train_cells, hidden_cells = space.unflat(train_flat), space.unflat(hidden_flat)
    n_candidates = space.n_cells - len(train_flat)
    t0 = time.perf_counter()
    tucker = tucker_hooi(space.shape, train_cells, ranks=s.ranks, n_iter=s.n_iter, tol=s.tol)
    t_fit = time.perf_counter() - t0
    matrix = _BoundMatrix(fit_matrix(space, train_cells, s.matrix_rank), space)
    popularity = fit_popularity(space, train_cells)
    models: dict[str, CellScorer] = {"tensor": tucker, "matrix": matrix, "popularity": popularity}
    exclude = np.sort(np.concatenate([train_flat, hidden_flat]))
    # hidden cells against a uniform sample of the other unknown cells (weighted up to all of them)
    sample = _sample_unknown(space, exclude, ev.n_sample_candidates, rng)
    weight = (n_candidates - len(hidden_flat)) / max(len(sample), 1)
    sample_cells = space.unflat(sample)
    methods: dict[str, Any] = {"random": _random_metrics(n_candidates, fractions)}
    hits: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, model in models.items():
        scores[name] = (model.score_cells(hidden_cells), model.score_cells(sample_cells))
        g, e = rank_counts(*scores[name], weight)
        methods[name] = _metrics_from_counts(g, e, n_candidates, fractions)
        hits[name] = _hit_probabilities(g, e, n_candidates, fractions)
    # random order over the charge-balanced cells: their number estimated from the uniform sample
    balanced = ChargeBalance(space)
    hidden_cb = balanced(hidden_cells)
    sample_cb = balanced(sample_cells)
    frac_cb = float(sample_cb.mean()) if len(sample_cb) else 0.0
    n_cb = frac_cb * (n_candidates - len(hidden_flat)) + float(hidden_cb.sum())
    methods["charge_balanced_random"], hits["charge_balanced_random"] = _charge_balanced_random(
        hidden_cb, n_cb, n_candidates, fractions
    )
    charge_balance = {
        "criterion": (
            "integer per-site oxidation states (ICSD-common states of each element, mixed valence "
            "allowed) summing to zero, as matdisco.core.composition.charge_balance_possible"
        ),
        "fraction_of_unknown_cells": frac_cb,
        "fraction_of_unknown_cells_se": (
            float(np.sqrt(frac_cb * (1 - frac_cb) / len(sample_cb))) if len(sample_cb) else None
        ),
        "n_candidates_charge_balanced": n_cb,
        "fraction_of_held_out": float(hidden_cb.mean()),
    }
    clf_note = "no classifier model given"
    n_clf = 0
    if classifier_model is not None:
        # the classifier is slow per formula: a uniform subsample of the sampled negatives
        sub = np.sort(rng.permutation(len(sample))[: ev.n_classifier_candidates])
        n_clf = len(sub)
        weight_clf = (n_candidates - len(hidden_flat)) / max(n_clf, 1)
        clf = classifier_scores(
            classifier_model,
            space.formula_strings(hidden_cells) + space.formula_strings(sample_cells[sub]),
        )
        if clf is None:
            clf_note = "classifier unavailable"
        else:
            p = clf["p_stable"].to_numpy()
            p_pos, p_neg = p[: len(hidden_cells)], p[len(hidden_cells) :]
            g, e = rank_counts(p_pos, p_neg, weight_clf)
            methods["classifier"] = _metrics_from_counts(g, e, n_candidates, fractions)
            hits["classifier"] = _hit_probabilities(g, e, n_candidates, fractions)
            # the recommender on its 0..1 scale (as in `propose`), mixed with p_stable
            t_pos, t_neg = scores["tensor"][0], scores["tensor"][1][sub]
            scale = _known_scale(tucker, train_cells)
            w = ev.combination_weight
            c_pos = combine_scores(p_pos, squash(t_pos, scale), w)
            c_neg = combine_scores(p_neg, squash(t_neg, scale), w)
            g, e = rank_counts(c_pos, c_neg, weight_clf)
            methods["combination"] = _metrics_from_counts(g, e, n_candidates, fractions)
            hits["combination"] = _hit_probabilities(g, e, n_candidates, fractions)
            # the tensor alone on the same subsample, for a like-for-like comparison
            g, e = rank_counts(t_pos, t_neg, weight_clf)
            methods["tensor_on_classifier_sample"] = _metrics_from_counts(
                g, e, n_candidates, fractions
            )
            clf_note = (
                "the classifier was trained on MP E_hull labels that include most held-out "
                "compositions (their stability is not hidden from it), so its numbers are "
                "optimistic"
            )
    # separate stream: the intervals do not move the splits or samples drawn after them
    boot_rng = np.random.default_rng([ev.seed, len(hidden_flat), 95])
    comparisons = _add_intervals(methods, hits, n_candidates, fractions, boot_rng)
    out: dict[str, Any] = {
        "n_train_cells": len(train_flat),
        "n_hidden_cells": len(hidden_flat),
        "n_hidden_systems": len(np.unique(hidden_flat // len(space.ratios))),
        "n_candidates": int(n_candidates),
        "n_sampled_unknown": len(sample),
        "weight_per_sample": float(weight),
        "n_classifier_sampled": int(n_clf),
        "tensor_ranks": list(tucker.ranks),
        "tensor_rel_error": tucker.rel_error,
        "tensor_fit_seconds": round(t_fit, 2),
        "methods": methods,
        "comparisons": comparisons,
        "charge_balance": charge_balance,
        "n_bootstrap": N_BOOTSTRAP,
        "classifier_note": clf_note,
    }
    if ev.exact:
        # every unknown cell ranked (no sampling): tensor, matrix and popularity only
        exact: dict[str, Any] = {"random": _random_metrics(n_candidates, fractions)}
        for name, model in models.items():
            g, e = rank_counts(scores[name][0], _stream_unknown(model, space, exclude))
            exact[name] = _metrics_from_counts(g, e, n_candidates, fractions)
        out["exact"] = exact
    return out


def evaluate_recommender(
    store: str | Path,
    out_metrics: str | Path,
    settings: RecommenderSettings | Mapping[str, Any] | None = None,
    *,
    classifier_model: str | Path | None = None,
    target_elements: Sequence[str] = (),
) -> dict[str, Any]:
    """Held-out evaluation of the recommender (and the classifier) on known compositions.

    Two splits: ``random`` hides ``holdout_fraction`` of the known cells; ``chemsys`` hides every
    known cell of ``holdout_fraction`` of the known chemical systems. For each, the models are
    refitted on the rest and the hidden cells are ranked among all unknown-plus-hidden cells
    (``N`` candidates). Scoring ~10^8 cells with the classifier is impractical, so every method
    ranks the hidden cells against a uniform sample of ``n_sample_candidates`` unknown cells, each
    standing for ``(N - hidden) / n_sampled`` candidates (an unbiased estimate of the ranks);
    the classifier and the combination use a subsample of ``n_classifier_candidates`` of them
    (``tensor_on_classifier_sample`` is the tensor model on that same subsample);
    with ``exact: true`` the tensor, matrix and popularity models are also ranked against every
    cell (``exact`` block). Ties are broken at random in expectation.

    Args:
        store: entry store.
        out_metrics: output JSON.
        settings: the ``recommender`` settings (a mapping is read as the config section).
        classifier_model: the E_hull classifier's model file (optional).
        target_elements: elements always included in the tensor.

    Returns:
        The metrics dictionary that was written.
    """
    s = RecommenderSettings.coerce(settings)
    t0 = time.perf_counter()
    entries = read_entries(store, ["formula", "is_experimental"])
    ternary = _ternary_formulas(entries, s.known)
    space = _space_for(ternary, s, target_elements)
    cells, _ = space.cells(ternary)
    flat = np.unique(space.flat(cells))
    rng = np.random.default_rng(s.evaluation.seed)
    metrics: dict[str, Any] = {
        "description": (
            "recall@k: expected fraction of held-out known compositions ranked in the top k of all "
            "unknown plus held-out cells (k = fraction of candidates); enrichment = "
            "recall / (k / N), 1 for uniform random order over all cells. Baselines: "
            "popularity (product of element "
            "and ratio frequencies of the training cells) and charge_balanced_random (random order "
            "over the charge-balanced candidates first). *_ci95: 95 % bootstrap interval over the "
            f"held-out compounds ({N_BOOTSTRAP} resamples); comparisons: tensor / baseline recall "
            "ratio and difference with paired bootstrap intervals"
        ),
        "settings": s.to_dict(),
        "tensor_shape": list(space.shape),
        "n_cells": int(space.n_cells),
        "n_known_cells": len(flat),
        "known": s.known,
        "splits": {},
    }
    for kind in ("random", "chemsys"):
        ts = time.perf_counter()
        metrics["splits"][kind] = _evaluate_split(kind, space, flat, s, rng, classifier_model)
        metrics["splits"][kind]["seconds"] = round(time.perf_counter() - ts, 2)
        log.info(
            "split %s: %s",
            kind,
            json.dumps(metrics["splits"][kind].get("methods", {}).get("tensor", {})),
        )
    metrics["headline"] = _headline(metrics["splits"], [float(f) for f in s.evaluation.top_k])
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    with atomic_write(out_metrics) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, default=_json_default) + "\n")
    return metrics


def _headline(splits: Mapping[str, Any], fractions: Sequence[float]) -> dict[str, Any]:
    """Tensor vs the popularity baseline (and charge-balanced random) per split and top-k."""
    out: dict[str, Any] = {}
    for kind, res in splits.items():
        comp = res.get("comparisons", {})
        if "tensor_vs_popularity" not in comp:
            continue
        rows = {}
        for f in fractions:
            tag = _tag(f)
            m = res["methods"]
            c = comp["tensor_vs_popularity"][tag]
            rows[tag] = {
                "recall_tensor": m["tensor"][f"recall@{tag}"],
                "recall_tensor_ci95": m["tensor"][f"recall@{tag}_ci95"],
                "recall_popularity": m["popularity"][f"recall@{tag}"],
                "recall_popularity_ci95": m["popularity"][f"recall@{tag}_ci95"],
                "recall_charge_balanced_random": m["charge_balanced_random"][f"recall@{tag}"],
                "tensor_over_popularity": c["ratio"],
                "tensor_over_popularity_ci95": c["ratio_ci95"],
                "text": (
                    f"top {tag}: tensor recall {m['tensor'][f'recall@{tag}']:.3f} vs popularity "
                    f"{m['popularity'][f'recall@{tag}']:.3f} (ratio {c['ratio']:.2f}, 95 % CI "
                    f"{c['ratio_ci95'][0]:.2f}-{c['ratio_ci95'][1]:.2f}); charge-balanced random "
                    f"{m['charge_balanced_random'][f'recall@{tag}']:.4f}"
                ),
            }
        out[kind] = rows
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))
