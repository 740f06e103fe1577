"""Uncertainty-aware proposals of new compositions in the target chemical space.

1. Enumerate every reduced composition of the target elements (each present, at most
   ``target.max_atoms`` atoms per formula unit) and keep the charge-balanced ones whose
   oxidation states fit ``target.oxidation_states`` (pymatgen's oxidation-state guesses with the
   configured windows as overrides; elements without a window use pymatgen's ICSD-common states,
   e.g. Mg +2, O -2).
2. Score each with the E_hull classifier (``p_stable`` +- ``p_stable_std``, the ensemble spread)
   and the tensor recommender (``recommender_score``: the Tucker score squashed to 0..1 relative to
   the typical known compound, +- ``recommender_std``: spread over bootstrap refits;
   ``recommender_percentile``: rank among all ~10^8 unknown cells of the tensor).
3. Rank by an acquisition function over the combined mean ``mu = w p + (1 - w) q`` and spread
   ``sigma = sqrt(w^2 sd_p^2 + (1 - w)^2 sd_q^2)`` (``w`` = classifier weight):
   ``exploit`` = mu, ``explore`` = sigma (uncertainty sampling, Terayama et al. PRM 3, 033802
   (2019)), ``ucb`` = mu + kappa sigma.
4. List each proposal's nearest known compounds by the Element Mover's Distance (ElMD,
   ``mod_petti``), and draw a ternary composition plot.

Output table (one row per candidate; unknown compositions ranked first, ``rank`` 1 = best,
known ones after them with an empty rank): rank, formula, composition, n_atoms,
oxidation_states, p_stable, p_stable_std, out_of_domain, recommender_score, recommender_std,
recommender_percentile, recommender_raw, mean, std, acquisition, known, in_store, selected,
nearest_known. Later stages
take the rows with ``selected == True`` (the top ``n_top`` unknown compositions).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.store import atomic_write, read_entries

__all__ = [
    "ACQUISITIONS",
    "DEFAULT_SETTINGS",
    "enumerate_compositions",
    "charge_balance_possible",
    "oxidation_state_guess",
    "charge_balanced_candidates",
    "acquisition_scores",
    "rank_candidates",
    "petti_emd_matrix",
    "nearest_known",
    "plot_proposals",
    "propose",
]

log = logging.getLogger("matdisco.propose")

ACQUISITIONS = ("exploit", "explore", "ucb")

#: Defaults of the ``propose:`` config section (the schema carries the same values).
DEFAULT_SETTINGS: dict[str, Any] = {
    "acquisition": "ucb",
    "kappa": 1.0,
    "classifier_weight": 0.5,
    "n_top": 10,
    "n_nearest": 3,
    "use_classifier": True,
    "n_label": 10,
}


def _settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**DEFAULT_SETTINGS, **dict(settings or {})}


# --------------------------------------------------------------------------------------------
# Candidate compositions
# --------------------------------------------------------------------------------------------


def enumerate_compositions(elements: Sequence[str], max_atoms: int) -> list[dict[str, int]]:
    """Every reduced integer composition with all ``elements`` present and <= ``max_atoms`` atoms.

    Args:
        elements: element symbols (order kept in the returned dicts).
        max_atoms: largest number of atoms per (reduced) formula unit.

    Returns:
        Compositions as ``{element: amount}`` with greatest common divisor 1, sorted by
        number of atoms then amounts.
    """
    from matdisco.recommender import ratio_grid

    grid = ratio_grid(int(max_atoms), len(elements))
    return [dict(zip(elements, (int(x) for x in row), strict=True)) for row in grid]


def _allowed_states(symbol: str, windows: Mapping[str, Sequence[int]]) -> list[int]:
    from pymatgen.core import Element

    if symbol in windows:
        lo, hi = (int(x) for x in windows[symbol])
        return list(range(min(lo, hi), max(lo, hi) + 1))
    el = Element(symbol)
    states = el.icsd_oxidation_states or el.common_oxidation_states or el.oxidation_states
    return [int(s) for s in states]


def _achievable_charges(states: Sequence[int], n: int) -> set[int]:
    """Every total charge of ``n`` sites that each take one of ``states``."""
    sums = {0}
    for _ in range(n):
        sums = {a + b for a in sums for b in set(states)}
    return sums


def charge_balance_possible(
    composition: Mapping[str, int], windows: Mapping[str, Sequence[int]] | None = None
) -> bool:
    """Whether integer per-site oxidation states (see :func:`oxidation_state_guess`) can sum to 0.

    Exact and fast (a sum-set over sites); the same criterion pymatgen's ``oxi_state_guesses``
    applies, used as a prefilter so pymatgen only runs on feasible compositions.
    """
    windows = dict(windows or {})
    totals = {0}
    for el, n in composition.items():
        charges = _achievable_charges(_allowed_states(el, windows), int(n))
        totals = {a + b for a in totals for b in charges}
    return 0 in totals


def oxidation_state_guess(
    composition: Mapping[str, int], windows: Mapping[str, Sequence[int]] | None = None
) -> dict[str, float] | None:
    """The most likely charge-balanced average oxidation states, or ``None`` if there is none.

    Every site takes an integer state; configured elements take states in their inclusive
    ``[min, max]`` window (so Mn in [2, 4] may be mixed-valent, e.g. Mn3O4 = Mn(2.67)), the others
    their ICSD-common states. With at most one element free to vary its average is forced by charge
    balance; otherwise pymatgen's ``oxi_state_guesses`` picks the most likely assignment.

    Args:
        composition: ``{element: amount}``.
        windows: allowed ``[min, max]`` oxidation state per element.
    """
    from pymatgen.core import Composition

    windows = dict(windows or {})
    if not charge_balance_possible(composition, windows):
        return None
    override = {el: _allowed_states(el, windows) for el in composition}
    flexible = [el for el, states in override.items() if len(set(states)) > 1]
    if len(flexible) <= 1:
        # at most one element can vary: its average state is forced by charge balance
        fixed = {el: float(override[el][0]) for el in composition if el not in flexible}
        out = dict(fixed)
        if flexible:
            el = flexible[0]
            out[el] = -sum(fixed[e] * composition[e] for e in fixed) / composition[el]
        return {el: out[el] for el in composition}
    guesses = Composition(dict(composition)).oxi_state_guesses(oxi_states_override=override)
    return {k: float(v) for k, v in guesses[0].items()} if guesses else None


def _format_states(states: Mapping[str, float]) -> str:
    parts = []
    for el, v in states.items():
        txt = f"{v:+.2f}".rstrip("0").rstrip(".")
        parts.append(f"{el}:{txt}")
    return ";".join(parts)


def _reduced_formula(composition: Mapping[str, int]) -> str:
    from pymatgen.core import Composition

    return Composition(dict(composition)).reduced_formula


def charge_balanced_candidates(
    elements: Sequence[str], max_atoms: int, windows: Mapping[str, Sequence[int]] | None = None
) -> tuple[pd.DataFrame, int]:
    """Enumerate the target compositions and keep the charge-balanced ones.

    Returns:
        ``(table, n_enumerated)``; table columns formula (pymatgen reduced formula), composition
        (``"Mg1 Mn2 O4"``), n_atoms, oxidation_states (``"Mg:+2;Mn:+3;O:-2"``, average per element).
    """
    comps = enumerate_compositions(elements, max_atoms)
    rows = []
    for comp in comps:
        states = oxidation_state_guess(comp, windows)
        if states is None:
            continue
        rows.append(
            {
                "formula": _reduced_formula(comp),
                "composition": " ".join(f"{el}{n}" for el, n in comp.items()),
                "n_atoms": int(sum(comp.values())),
                "oxidation_states": _format_states({el: states[el] for el in comp}),
            }
        )
    cols = ["formula", "composition", "n_atoms", "oxidation_states"]
    return pd.DataFrame(rows, columns=cols), len(comps)


# --------------------------------------------------------------------------------------------
# Acquisition
# --------------------------------------------------------------------------------------------


def acquisition_scores(
    p_stable: np.ndarray | None,
    p_std: np.ndarray | None,
    rec_score: np.ndarray | None,
    rec_std: np.ndarray | None,
    *,
    kind: str = "ucb",
    classifier_weight: float = 0.5,
    kappa: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Combined mean, spread and acquisition value of candidates.

    ``mu = w p + (1 - w) q`` and ``sigma = sqrt(w^2 sd_p^2 + (1 - w)^2 sd_q^2)``; where one of the
    two scores is missing (None or NaN) the other is used alone. Missing spreads count as 0.

    Args:
        p_stable: classifier probabilities (or None).
        p_std: their uncertainty (or None).
        rec_score: recommender percentiles in 0..1 (or None).
        rec_std: their uncertainty (or None).
        kind: ``exploit`` (mu), ``explore`` (sigma) or ``ucb`` (mu + kappa sigma).
        classifier_weight: ``w``, the classifier's share of the mean.
        kappa: exploration weight of ``ucb``.

    Returns:
        ``(mu, sigma, acquisition)`` arrays.
    """
    if kind not in ACQUISITIONS:
        raise ValueError(f"acquisition must be one of {ACQUISITIONS}, got {kind!r}")
    arrays = [a for a in (p_stable, p_std, rec_score, rec_std) if a is not None]
    if not arrays:
        raise ValueError("need at least one of p_stable and rec_score")
    n = len(arrays[0])

    def arr(a: np.ndarray | None) -> np.ndarray:
        return np.full(n, np.nan) if a is None else np.asarray(a, dtype=float)

    p, sp, q, sq = arr(p_stable), arr(p_std), arr(rec_score), arr(rec_std)
    sp, sq = np.nan_to_num(sp, nan=0.0), np.nan_to_num(sq, nan=0.0)
    w = float(classifier_weight)
    has_p, has_q = ~np.isnan(p), ~np.isnan(q)
    wp = np.where(has_p & has_q, w, np.where(has_p, 1.0, 0.0))
    wq = np.where(has_p & has_q, 1.0 - w, np.where(has_q, 1.0, 0.0))
    mu = wp * np.nan_to_num(p) + wq * np.nan_to_num(q)
    mu[~has_p & ~has_q] = np.nan
    sigma = np.sqrt((wp * sp) ** 2 + (wq * sq) ** 2)
    if kind == "exploit":
        acq = mu.copy()
    elif kind == "explore":
        acq = sigma.copy()
    else:
        acq = mu + float(kappa) * sigma
    return mu, sigma, acq


def rank_candidates(
    acquisition: np.ndarray, mean: np.ndarray, formulas: Sequence[str]
) -> np.ndarray:
    """Order (indices, best first): acquisition, then mean, then formula; NaNs last."""
    acq = np.nan_to_num(np.asarray(acquisition, dtype=float), nan=-np.inf)
    mu = np.nan_to_num(np.asarray(mean, dtype=float), nan=-np.inf)
    names = np.asarray(list(formulas), dtype=object)
    return np.asarray(
        sorted(range(len(acq)), key=lambda i: (-acq[i], -mu[i], str(names[i]))), dtype=np.int64
    )


# --------------------------------------------------------------------------------------------
# Nearest known compounds (ElMD, mod_petti)
# --------------------------------------------------------------------------------------------


def _petti_lookup() -> dict[str, int]:
    from ElMD import ElMD

    return {
        k: int(v)
        for k, v in ElMD("H", metric="mod_petti").petti_lookup.items()
        if isinstance(v, int | np.integer)
    }


def _petti_cdf(formulas: Sequence[str], lookup: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative composition along the modified Pettifor scale; (cdf (n, D), valid (n,))."""
    from matdisco.recommender import _parse

    d = max(lookup.values()) + 1
    out = np.zeros((len(formulas), d))
    valid = np.zeros(len(formulas), bool)
    for r, f in enumerate(formulas):
        try:
            items = _parse(f)
        except Exception:  # noqa: BLE001 - an unparsable reference is skipped
            continue
        total = sum(a for _, a in items)
        if total <= 0 or any(el not in lookup for el, _ in items):
            continue
        for el, a in items:
            out[r, lookup[el]] += a / total
        valid[r] = True
    return np.cumsum(out, axis=1), valid


def petti_emd_matrix(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """ElMD (``mod_petti``) between every formula of ``a`` and every formula of ``b``.

    On the one-dimensional modified Pettifor scale the earth mover's distance is the L1 distance
    between cumulative compositions, which is what ``ElMD(x).elmd(y)`` computes for this metric;
    vectorised here so that thousands of references cost milliseconds. NaN for invalid formulas.
    """
    lookup = _petti_lookup()
    ca, va = _petti_cdf(a, lookup)
    cb, vb = _petti_cdf(b, lookup)
    out = np.full((len(a), len(b)), np.nan)
    for i in np.flatnonzero(va):
        out[i, vb] = np.abs(cb[vb] - ca[i]).sum(axis=1)
    return out


def nearest_known(formulas: Sequence[str], known: Sequence[str], n: int = 3) -> list[str]:
    """The ``n`` nearest known compounds of each formula by ElMD (mod_petti).

    Distances are recomputed with the ElMD package's own feature vectors and EMD function
    (``simple_emd``, run as plain Python) for the reported neighbours. A known
    compound with the same composition as the query (distance 0) is not listed.

    Returns:
        One string per formula: ``"formula:distance;..."`` (distances with 3 decimals).
    """
    from ElMD import ElMD
    from ElMD.ElMD import simple_emd

    emd = getattr(simple_emd, "py_func", simple_emd)  # plain Python: no numba compilation
    if not len(formulas):
        return []
    known = list(dict.fromkeys(known))
    if not known or n <= 0:
        return [""] * len(formulas)
    dist = petti_emd_matrix(list(formulas), known)
    out = []
    for i, f in enumerate(formulas):
        d = dist[i]
        ok = np.flatnonzero(~np.isnan(d) & (d > 1e-9))
        picks = ok[np.lexsort((np.asarray(known, dtype=object)[ok].astype(str), d[ok]))][:n]
        parts = []
        for j in picks:
            try:
                a, b = ElMD(f, metric="mod_petti"), ElMD(known[j], metric="mod_petti")
                value = float(emd(a.feature_vector, b.feature_vector))
            except Exception:  # noqa: BLE001 - fall back to the vectorised value
                value = float(d[j])
            parts.append(f"{known[j]}:{value:.3f}")
        out.append(";".join(parts))
    return out


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def _fractions(formula: str, elements: Sequence[str]) -> np.ndarray:
    from matdisco.recommender import _parse

    amounts = dict(_parse(formula))
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


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def _key(formula: str) -> frozenset[tuple[str, int]] | None:
    from matdisco.recommender import integer_composition

    comp = integer_composition(formula)
    return frozenset(comp.items()) if comp is not None else None


def _elements_of(formula: str) -> set[str]:
    from matdisco.recommender import _parse

    try:
        return {el for el, _ in _parse(formula)}
    except Exception:  # noqa: BLE001 - an unparsable formula belongs to no space
        return {"?"}


def propose(
    *,
    store: str | Path,
    recommender_model: str | Path | None,
    classifier_model: str | Path | None,
    out_csv: str | Path,
    out_png: str | Path | None,
    elements: Sequence[str],
    oxidation_states: Mapping[str, Sequence[int]] | None = None,
    max_atoms: int = 20,
    settings: Mapping[str, Any] | None = None,
    known: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Enumerate, score and rank candidate compositions of the target space; write table and plot.

    Args:
        store: entry store (known compounds for flags, nearest neighbours and the plot).
        recommender_model: pickled :class:`matdisco.recommender.Recommender` (or None).
        classifier_model: E_hull classifier model file (or None).
        out_csv: output table.
        out_png: output ternary plot (None: no plot).
        elements: target elements.
        oxidation_states: ``{element: [min, max]}`` windows.
        max_atoms: largest number of atoms per formula unit.
        settings: the ``propose`` config section.
        known: the ``known`` config section (:mod:`matdisco.known`; a composition any source
            knows is ``known`` and never ranked as a proposal).

    Returns:
        The proposals table (also written to ``out_csv``).
    """
    s = _settings(settings)
    t0 = time.perf_counter()
    elements = list(elements)
    table, n_enum = charge_balanced_candidates(elements, max_atoms, oxidation_states)
    log.info(
        "%s: %d compositions with <= %d atoms, %d charge-balanced within %s",
        "-".join(elements),
        n_enum,
        max_atoms,
        len(table),
        dict(oxidation_states or {}),
    )
    formulas = table["formula"].tolist()
    # known compounds: the recommender's definition (experimental by default)
    entries = read_entries(store, ["formula", "is_experimental"])
    rec = None
    if recommender_model is not None and Path(recommender_model).exists():
        from matdisco.recommender import load_recommender

        rec = load_recommender(recommender_model)
        known_set = list(rec.known)
    else:
        from matdisco.recommender import known_formulas

        known_set = known_formulas(entries, "experimental")
    known_keys = {_key(f) for f in known_set}
    store_keys = {_key(f) for f in entries["formula"].astype(str)}
    keys = [_key(f) for f in formulas]
    # known = the recommender's known set or any source of matdisco.known (labels, user file, ...)
    from matdisco.known import KnownCompositions

    kc = KnownCompositions.from_config(store, known)
    table["known_composition_source"] = [kc.source_of(f) for f in formulas]
    table["known"] = [
        k in known_keys or bool(src) for k, src in zip(keys, table["known_composition_source"], strict=True)
    ]
    table["in_store"] = [k in store_keys for k in keys]
    # classifier
    p = p_std = None
    table["p_stable"] = np.nan
    table["p_stable_std"] = np.nan
    table["out_of_domain"] = pd.array([pd.NA] * len(table), dtype="boolean")
    if s["use_classifier"] and classifier_model is not None and len(table):
        from matdisco.recommender import classifier_scores

        clf = classifier_scores(classifier_model, formulas)
        if clf is not None:
            table["p_stable"] = clf["p_stable"].to_numpy()
            table["p_stable_std"] = clf["p_stable_std"].to_numpy()
            table["out_of_domain"] = clf["out_of_domain"].astype(bool).to_numpy()
            p, p_std = table["p_stable"].to_numpy(), table["p_stable_std"].to_numpy()
    if p is None:
        log.warning("no classifier scores: ranking by the recommender alone")
    # recommender
    q = q_std = None
    rec_cols = ("recommender_score", "recommender_std", "recommender_percentile", "recommender_raw")
    for c in rec_cols:
        table[c] = np.nan
    if rec is not None and len(table):
        sc = rec.score_formulas(formulas)
        for c in rec_cols:
            table[c] = sc[c].to_numpy()
        if sc["in_space"].any():
            q, q_std = table["recommender_score"].to_numpy(), table["recommender_std"].to_numpy()
        else:
            log.warning(
                "no candidate is in the recommender's ternary space (target has %d elements)",
                len(elements),
            )
    if p is None and q is None:
        if len(table):
            raise ValueError(
                "neither classifier nor recommender scores are available: nothing to rank by"
            )
        mu = sigma = acq = np.zeros(0)
    else:
        mu, sigma, acq = acquisition_scores(
            p,
            p_std,
            q,
            q_std,
            kind=s["acquisition"],
            classifier_weight=s["classifier_weight"],
            kappa=s["kappa"],
        )
    table["mean"], table["std"], table["acquisition"] = mu, sigma, acq
    # unknown compositions ranked first, known ones after them (no rank)
    order = rank_candidates(acq, mu, formulas)
    unknown_order = [i for i in order if not table["known"].iat[i]]
    known_order = [i for i in order if table["known"].iat[i]]
    table = table.iloc[unknown_order + known_order].reset_index(drop=True)
    n_unknown = len(unknown_order)
    table.insert(
        0,
        "rank",
        pd.array(list(range(1, n_unknown + 1)) + [pd.NA] * len(known_order), dtype="Int64"),
    )
    table["selected"] = False
    table.loc[: min(int(s["n_top"]), n_unknown) - 1, "selected"] = True
    table["nearest_known"] = nearest_known(
        table["formula"].tolist(), known_set, int(s["n_nearest"])
    )
    cols = [
        "rank",
        "formula",
        "composition",
        "n_atoms",
        "oxidation_states",
        "p_stable",
        "p_stable_std",
        "out_of_domain",
        "recommender_score",
        "recommender_std",
        "recommender_percentile",
        "recommender_raw",
        "mean",
        "std",
        "acquisition",
        "known",
        "in_store",
        "selected",
        "nearest_known",
    ]
    table = table[cols]
    with atomic_write(out_csv, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if out_png is not None:
        target = set(elements)
        in_space = sorted({f for f in entries["formula"].astype(str) if _elements_of(f) <= target})
        known_sub = [f for f in in_space if _key(f) in known_keys]
        hyp_sub = [f for f in in_space if _key(f) not in known_keys]
        plot_proposals(
            table,
            elements,
            out_png,
            known_compounds=known_sub,
            hypothetical=hyp_sub,
            n_label=int(s["n_label"]),
            title=f"{'-'.join(elements)}: {s['acquisition']} (w_clf={s['classifier_weight']}, kappa={s['kappa']})",
        )
    log.info(
        "%d candidates (%d unknown) ranked by %s in %.1f s; top: %s",
        len(table),
        n_unknown,
        s["acquisition"],
        time.perf_counter() - t0,
        ", ".join(table.loc[table["selected"], "formula"].head(5)),
    )
    return table
