"""Band gaps of candidates: an ML surrogate of the PBE gap, an HSE-level estimate, DFT inputs.

**Surrogate (default, ``screen.bandgap_method: surrogate``).** A two-stage LightGBM model
trained on the store's PBE band gaps (``band_gap``, Materials Project GGA/GGA+U): a classifier
for metal (gap = 0) vs non-metal and a regressor of the gap of non-metals. A member predicts
``regressor(x)`` where the classifier's P(non-metal) > 0.5, else 0. ``n_members`` members are
trained on different folds of the training split; their mean is ``gap_pbe_ml``.
``gap_pbe_ml_std`` is their standard deviation times ``spread_scale``, the 68.27% quantile of
|error| / spread on the formula-grouped held-out split, so ±1σ covers ~68% of held-out errors
(the raw spread of 3 members covered ~50%); the metrics report the coverage of the raw spread
and the cross-fitted coverage after rescaling (scale fit on one half of the held-out formulas,
measured on the other). Features:
Magpie-style composition features (:mod:`matdisco.features`) plus cheap structure features
of the (relaxed) cell: volume per atom, density, packing fraction of covalent spheres, volume
per atom relative to the elements' ground-state volumes, and two lattice-length ratios. Two
models (``screen.bandgap.model``): ``structure`` (default) adds the site-environment
statistics of :mod:`matdisco.screen.gap_structure` (coordination, normalised neighbour
distances, bond-length dispersion, electronegativity difference / ionic character over
bonds, cation-cation and anion-anion contacts; 61 columns from a periodic neighbour list);
``composition`` is the earlier model without them (the fallback). ``screen.bandgap.embeddings``
(default megnet16 + oliynyk, the element-embedding tables ElMD ships, in
``features.elmd_table``) adds their per-dimension fraction-weighted statistics
(:mod:`matdisco.features.embeddings`), as the stability classifier does; they lowered the
formula-grouped MAE by ~0.02 eV (docs/metrics_classifier_gap.md).
``screen.bandgap.structure_embedding: chgnet`` (default) adds learned structure features:
the mean and maximum over the atoms of CHGNet 0.3.0's atom features
(:mod:`matdisco.screen.gap_embedding`; precomputed for the bundled store, computed for the
candidates); they lowered the formula-grouped MAE by a further ~0.02 eV. The output
column ``gap_model`` names the model that gave each ``gap_pbe_ml``: the kind, ``+chgnet`` with
the structure embedding, plus ``+<table>`` for each embedding table (e.g.
``structure+chgnet+megnet16+oliynyk``).
The LightGBM members are fit and averaged by :mod:`matdisco.core.lgbm` (shared with the
stability classifier); settings are :class:`matdisco.settings.ScreenBandgapSettings`, the
parity plot lives in :mod:`matdisco.screen.plots`, the held-out evaluation helpers (errors,
bootstrap intervals, baselines, spread recalibration) in :mod:`matdisco.screen.bandgap_eval`.
The module stays at ~700 lines because the surrogate, the HSE mapping, the two DFT paths and
the stage function are the one ``bandgap`` rule.

The held-out test split is **grouped by reduced formula** (no formula in both training and
test; candidates are new compositions, so this is the honest number). With
``evaluate_random_split`` a random row split (polymorphs of one formula on both sides, as in
most published benchmarks) is held out too, from the rows outside the grouped split, and the
*same* ensemble (trained on the rows outside both) scores both splits: one protocol. Each
split reports the MAE overall, on true non-metals and on true gaps in ``gap_window`` (the
screening window, default 1.6-3.0 eV), with 95% row-bootstrap intervals, beside two baselines
on the same rows: the composition prior (mean training gap of the same formula, else of the
same chemical system, else the training median) and the training median.

**HSE-level estimate.** ``gap_hse_est = slope · gap_pbe + intercept`` applied to every member
with a non-zero predicted gap (metals stay 0), then averaged. Default: slope 1.348,
intercept 0.913 eV, the least-squares fit of *experimental* gaps against PBE gaps by
W. Setyawan, R. M. Gaume, S. Lam, R. S. Feigelson, S. Curtarolo, ACS Comb. Sci. 13, 382
(2011), doi:10.1021/co200012w (AFLOW's "fitted" gap). It stands in for an HSE06 gap (the
screening criterion), which targets the experimental gap; it is **an estimate, not an HSE06
calculation**, and both numbers are configurable (``screen.bandgap.hse_mapping``).

**DFT paths.** ``vasp_hse``: pymatgen ``MPHSEBSSet`` (HSE06, self-consistent, uniform k-mesh,
``mode="gap"``; MP's HSE settings) written offline with ``POTCAR.spec`` for a cluster run; when
``vasprun.xml`` files come back, their gap (``eigenvalue_band_properties``) is read into
``gap_hse_vasp``. ``gpaw_pbe``: an in-process GPAW PBE single point with the relax stage's
``gpaw`` backend settings; its gap goes through the same mapping (``gap_hse_est_gpaw``).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.core import lgbm
from matdisco.features.embeddings import EMBEDDING_STATS, ElementEmbeddings
from matdisco.screen.bandgap_eval import (
    ONE_SIGMA,
    _bootstrap_mae,
    _errors,
    composition_prior,
    coverage,
    crossfit_coverage,
    fit_spread_scale,
)
from matdisco.settings import (
    FeaturesSettings,
    ScreenBandgapHSEMappingSettings,
    ScreenBandgapSettings,
)
from matdisco.store import atomic_write

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from matdisco.store import StructureArrays

__all__ = [
    "GAP_MODELS",
    "SETYAWAN_2011",
    "STRUCTURE_FEATURES",
    "structure_features",
    "gap_features",
    "GapSurrogate",
    "train_gap_surrogate",
    "predict_gaps",
    "hse_estimate",
    "write_vasp_hse_inputs",
    "read_vasp_gap",
    "gpaw_pbe_gap",
    "screen_bandgap",
    "fit_spread_scale",
    "coverage",
    "crossfit_coverage",
    "composition_prior",
    "ONE_SIGMA",
]

log = logging.getLogger(__name__)

#: Setyawan et al., ACS Comb. Sci. 13, 382 (2011): E_g(expt) ~= 1.348 E_g(PBE) + 0.913 eV
#: (the default ``screen.bandgap.hse_mapping``)
SETYAWAN_2011: dict[str, Any] = ScreenBandgapHSEMappingSettings().to_dict()

#: values of ``screen.bandgap.model`` (and of the output column ``gap_model``)
GAP_MODELS = ("structure", "composition")

STRUCTURE_FEATURES = (
    "struct_volume_per_atom",
    "struct_density",
    "struct_packing_fraction",
    "struct_volume_ratio_elemental",
    "struct_lattice_ratio_min",
    "struct_lattice_ratio_mid",
)


# --------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------


def structure_features(arrays: StructureArrays, table: Any) -> np.ndarray:
    """Cheap per-cell structure features (:data:`STRUCTURE_FEATURES`), vectorised.

    Args:
        arrays: structures as flat arrays (``matdisco.store.StructureArrays``).
        table: a :class:`matdisco.features.ElementTable` (atomic weight, covalent radius in pm,
            ground-state volume per atom in Å^3).

    Returns:
        (N, 6) float array; NaN where an element lacks data.
    """
    from matdisco.screen.gap_structure import element_column

    def by_z(prop: str) -> np.ndarray:
        return element_column(table, prop)

    n = len(arrays)
    if n == 0:
        return np.zeros((0, len(STRUCTURE_FEATURES)))
    z = arrays.species_z.astype(np.int64)
    starts = arrays.site_offset[:-1]
    nat = np.diff(arrays.site_offset).astype(float)
    vol = np.abs(np.linalg.det(arrays.lattice))
    mass = np.add.reduceat(by_z("AtomicWeight")[z], starts)
    rcov = by_z("CovalentRadius")[z] / 100.0  # pm -> Å
    sphere = np.add.reduceat(4.0 / 3.0 * np.pi * rcov**3, starts)
    gsv = np.add.reduceat(by_z("GSvolume_pa")[z], starts) / nat
    lengths = np.sort(np.linalg.norm(arrays.lattice, axis=2), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.column_stack(
            [
                vol / nat,
                mass / vol * 1.66053907,  # amu/Å^3 -> g/cm^3
                sphere / vol,
                (vol / nat) / gsv,
                lengths[:, 0] / lengths[:, 2],
                lengths[:, 1] / lengths[:, 2],
            ]
        )


def gap_features(
    formulas: Sequence[str],
    arrays: StructureArrays | None,
    table: Any,
    feature_settings: FeaturesSettings | Mapping[str, Any] | None,
    *,
    use_structure: bool = True,
    use_sites: bool = False,
    embeddings: ElementEmbeddings | None = None,
    embedding_stats: Sequence[str] = EMBEDDING_STATS,
    structure_embedding: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Feature matrix of the gap surrogate.

    Composition features come from :func:`matdisco.features.featurize` (its settings except
    the per-element fractions, which add ~90 sparse columns and no accuracy here), followed by
    the ``embedding_stats`` of every table in ``embeddings`` when given; cell
    features from :func:`structure_features` when ``use_structure``; site-environment
    features (:func:`matdisco.screen.gap_structure.site_environment_features`, without the
    local property differences, which did not help) when ``use_sites``; the columns of
    ``structure_embedding`` (one row per formula,
    :func:`matdisco.screen.gap_embedding.embedding_columns`) last, when given.

    Returns:
        (X float32, feature names, valid mask).
    """
    from matdisco.features import feature_kwargs, featurize_with_embeddings

    kw = feature_kwargs(feature_settings)
    kw["element_fractions"] = False
    fs = featurize_with_embeddings(list(formulas), table, embeddings, embedding_stats, **kw)
    X, names = fs.X, list(fs.feature_names)
    if (use_structure or use_sites) and (arrays is None or len(arrays) != len(formulas)):
        raise ValueError("structure features need one structure per formula")
    if use_structure:
        X = np.hstack([X, structure_features(arrays, table)])
        names += list(STRUCTURE_FEATURES)
    if use_sites:
        from matdisco.screen.gap_structure import site_environment_features, site_feature_names

        X = np.hstack([X, site_environment_features(arrays, table, local_differences=False)])
        names += site_feature_names(local_differences=False)
    if structure_embedding is not None:
        from matdisco.screen.gap_embedding import embedding_columns

        emb = np.asarray(structure_embedding, dtype=np.float32)
        if emb.shape != (len(formulas), len(embedding_columns())):
            raise ValueError(
                f"structure embedding has shape {emb.shape}, expected "
                f"({len(formulas)}, {len(embedding_columns())})"
            )
        X = np.hstack([X, emb])
        names += embedding_columns()
    return X.astype(np.float32), names, fs.valid.copy()


# --------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------


def _model_kind(settings: Mapping[str, Any] | ScreenBandgapSettings) -> str:
    """``structure`` | ``composition`` of a settings object or dict (older pickles: composition)."""
    kind = settings.get("model", "composition") if isinstance(settings, Mapping) else settings.model
    if kind not in GAP_MODELS:
        raise ValueError(f"unknown screen.bandgap.model {kind!r} ({' | '.join(GAP_MODELS)})")
    return str(kind)


def _uses_structures(settings: Mapping[str, Any] | ScreenBandgapSettings) -> bool:
    """Whether the model needs the structures (cell or site features)."""
    cell = (
        settings["structure_features"]
        if isinstance(settings, Mapping)
        else settings.structure_features
    )
    return bool(cell) or _model_kind(settings) == "structure" or bool(_embedding_kind(settings))


def _embedding_kind(settings: Mapping[str, Any] | ScreenBandgapSettings) -> str | None:
    """``chgnet`` | None: the structure embedding of a settings object or dict (older: None)."""
    if isinstance(settings, Mapping):
        return settings.get("structure_embedding")
    return settings.structure_embedding


class GapSurrogate:
    """Ensemble of two-stage LightGBM gap models (picklable).

    Attributes:
        members: list of (classifier metal/non-metal, regressor of non-metal gaps).
        feature_names: the columns the members expect.
        settings: the ``screen.bandgap`` settings it was trained with (plain dict).
        feature_settings: the ``features`` settings (composition featuriser; plain dict).
        element_table: ``ElementTable.to_dict()`` used for the features.
        embeddings: ``ElementEmbeddings.to_dict()`` of the embedding features (None = none).
    """

    def __init__(
        self,
        members: list[tuple[Any, Any]],
        feature_names: list[str],
        settings: dict[str, Any],
        feature_settings: dict[str, Any],
        element_table: dict[str, Any],
        embeddings: dict[str, Any] | None = None,
    ) -> None:
        self.members = members
        self.feature_names = feature_names
        self.settings = settings
        self.feature_settings = feature_settings
        self.element_table = element_table
        self.embeddings = embeddings
        #: multiplies the member spread into gap_pbe_ml_std (fitted on held-out errors)
        self.spread_scale = 1.0

    @property
    def kind(self) -> str:
        """``structure`` (composition + cell + site-environment features) | ``composition``."""
        return _model_kind(self.settings)

    @property
    def structure_embedding(self) -> str | None:
        """``chgnet`` when the model uses the CHGNet structure embedding, else None."""
        return _embedding_kind(self.settings)

    @property
    def label(self) -> str:
        """What ``gap_model`` says: the kind, ``+chgnet`` with the structure embedding, plus
        ``+<table>`` per element-embedding table."""
        emb = getattr(self, "embeddings", None) or {}  # older pickles have no embeddings
        extra = [self.structure_embedding] if self.structure_embedding else []
        return "+".join([self.kind, *extra, *emb])

    def element_embeddings(self) -> ElementEmbeddings | None:
        """The embedding tables of the features (None when the model uses none)."""
        emb = getattr(self, "embeddings", None)
        return ElementEmbeddings.from_dict(emb) if emb else None

    def member_predictions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-member PBE gaps (n_members, N) and P(metal) (n_members, N)."""
        clfs, regs = zip(*self.members, strict=True) if self.members else ((), ())
        p_nonmetal = lgbm.predict_members(clfs, X)
        g = np.clip(lgbm.predict_members(regs, X), 0.0, None)
        return np.where(p_nonmetal > 0.5, g, 0.0), 1.0 - p_nonmetal


def _fit_members(
    X: np.ndarray,
    y: np.ndarray,
    rows: list[np.ndarray],
    seeds: list[int],
    settings: ScreenBandgapSettings,
    threads: int,
) -> list[tuple[Any, Any]]:
    """Two-stage members: member m = (metal classifier, non-metal gap regressor) on ``rows[m]``.

    The classifier of member m is seeded ``seeds[m]``, its regressor ``seeds[m] + 1``. Each
    fit is single-threaded; ``threads`` fits run at once, so the model does not depend on it.
    """
    nonmetal = y > 0
    for idx in rows:
        if nonmetal[idx].all() or not nonmetal[idx].any():
            raise ValueError("the training data need both metals (gap 0) and non-metals")
    params = settings.lightgbm
    label = nonmetal.astype(int)
    specs = [
        lgbm.MemberSpec(X, label, idx, params, "classifier", sd)
        for idx, sd in zip(rows, seeds, strict=True)
    ]
    specs += [
        lgbm.MemberSpec(X, y, idx[nonmetal[idx]], params, "regressor", sd + 1)
        for idx, sd in zip(rows, seeds, strict=True)
    ]
    # all 2k fits in one pool: one LightGBM thread each, so threads change the time only
    fitted = lgbm.fit_members_parallel(specs, threads)
    k = len(rows)
    return list(zip(fitted[:k], fitted[k:], strict=True))


def _systems(formulas: Sequence[str], table: Any) -> np.ndarray:
    """Chemical system ('-'-joined sorted elements) of each formula ('' when unparsable)."""
    from matdisco.features import keys_and_systems, parse_formulas

    return np.asarray(
        keys_and_systems(parse_formulas(list(formulas), table), table)[1], dtype=object
    )


def _group_split(groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    uniq = np.unique(groups)
    rng.shuffle(uniq)
    test_groups = set(uniq[: max(1, round(fraction * len(uniq)))].tolist())
    return np.array([g in test_groups for g in groups])


def train_gap_surrogate(
    formulas: Sequence[str],
    gaps: np.ndarray,
    arrays: StructureArrays | None,
    table: Any,
    *,
    settings: ScreenBandgapSettings | Mapping[str, Any] | None = None,
    feature_settings: FeaturesSettings | Mapping[str, Any] | None = None,
    embeddings: ElementEmbeddings | None = None,
    structure_embedding: np.ndarray | None = None,
    threads: int = 1,
) -> tuple[GapSurrogate, dict[str, Any], pd.DataFrame]:
    """Train the ensemble on PBE gaps, measure it on held-out splits, rescale its spread.

    One ensemble scores the formula-grouped split and (``evaluate_random_split``) a random
    row split, beside the baselines, with bootstrap intervals; ``spread_scale`` (fit on the
    grouped split's errors) is stored in the model and multiplies ``gap_pbe_ml_std``.

    Args:
        formulas: reduced formulas of the training entries.
        gaps: their PBE band gaps, eV (NaN rows are dropped).
        arrays: their structures (needed by the ``structure`` model and the cell features).
        table: the element table of the featuriser.
        settings: ``screen.bandgap`` settings (a mapping is read with
            :meth:`ScreenBandgapSettings.from_config`; None = the defaults).
        feature_settings: the ``features`` settings (or config section; None = the defaults).
        embeddings: the tables ``settings.embeddings`` names (read with
            :meth:`ElementEmbeddings.from_file` from ``features.elmd_table``); required when
            that list is not empty.
        structure_embedding: (n_formulas, 128) CHGNet embedding rows aligned with ``formulas``
            (:func:`matdisco.screen.gap_embedding.read_embedding_file`); required exactly
            when ``settings.structure_embedding`` is set.
        threads: LightGBM threads.

    Raises:
        ValueError: ``settings.embeddings`` and the tables passed differ, or the structure
            embedding is missing / not asked for.

    Returns:
        (model, metrics dict, held-out predictions table: formula, gap_pbe, gap_pbe_ml,
        gap_pbe_ml_std).
    """
    s = ScreenBandgapSettings.coerce(settings)
    fset = FeaturesSettings.coerce(feature_settings)
    have = embeddings.names() if embeddings is not None else []
    if list(s.embeddings) != have:
        raise ValueError(
            f"screen.bandgap.embeddings is {list(s.embeddings)} but the tables passed are {have} "
            "(read them with ElementEmbeddings.from_file(features.elmd_table, names))"
        )
    if bool(s.structure_embedding) != (structure_embedding is not None):
        raise ValueError(
            f"screen.bandgap.structure_embedding is {s.structure_embedding!r} but a structure "
            f"embedding was {'not ' if structure_embedding is None else ''}passed"
        )
    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(s.seed)
    gaps = np.asarray(gaps, dtype=float)
    keep = np.flatnonzero(np.isfinite(gaps))
    if s.max_train is not None and len(keep) > s.max_train:
        keep = np.sort(rng.choice(keep, s.max_train, replace=False))
    formulas = [formulas[i] for i in keep]
    y = gaps[keep]
    if _uses_structures(s) and arrays is None:
        raise ValueError("the structure model and the cell features need the structures")
    sub = arrays.take(keep) if arrays is not None else None
    kind = _model_kind(s)
    X, names, valid = gap_features(
        formulas,
        sub,
        table,
        fset,
        use_structure=s.structure_features,
        use_sites=kind == "structure",
        embeddings=embeddings,
        embedding_stats=s.embedding_stats,
        structure_embedding=None
        if structure_embedding is None
        else np.asarray(structure_embedding)[keep],
    )
    X, y, formulas = X[valid], y[valid], [f for f, v in zip(formulas, valid, strict=True) if v]
    t_feat = time.perf_counter() - t0
    test = _group_split(np.asarray(formulas), s.test_fraction, rng)
    rtest = np.zeros(len(y), dtype=bool)
    if s.evaluate_random_split:
        # a random row split outside the grouped test: the same ensemble scores both
        cand = np.flatnonzero(~test)
        rtest[rng.permutation(cand)[: max(1, round(s.test_fraction * len(cand)))]] = True
    train_idx = np.flatnonzero(~test & ~rtest)
    k = max(1, s.n_members)
    folds = np.array_split(rng.permutation(train_idx), k) if k > 1 else [np.array([], dtype=int)]
    rows = [np.setdiff1d(train_idx, folds[m]) if k > 1 else train_idx for m in range(k)]
    members = _fit_members(X, y, rows, [s.seed + 10 * m for m in range(k)], s, threads)
    model = GapSurrogate(
        members,
        names,
        s.to_dict(),
        fset.to_dict(),
        table.to_dict(),
        embeddings.to_dict() if have else None,
    )
    fa = np.asarray(formulas)
    systems = _systems(formulas, table)
    if len(s.gap_window) != 2 or not 0 <= s.gap_window[0] < s.gap_window[1]:
        raise ValueError(
            "screen.bandgap.gap_window must be [low, high] eV with 0 <= low < high, "
            f"got {list(s.gap_window)}"
        )
    window = (float(s.gap_window[0]), float(s.gap_window[1]))

    def score(
        mask: np.ndarray, seed: int
    ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
        """Errors, baselines and intervals of the ensemble on the rows in ``mask``."""
        g_members, p_metal = model.member_predictions(X[mask])
        pred, std = lgbm.ensemble_mean_std(g_members)
        yt = y[mask]
        base = {
            "composition_prior": composition_prior(
                fa[train_idx], systems[train_idx], y[train_idx], fa[mask], systems[mask]
            ),
            "training_median": np.full(len(yt), float(np.median(y[train_idx]))),
        }
        errs = {"model": np.abs(pred - yt), **{b: np.abs(v - yt) for b, v in base.items()}}
        win = (yt > 0) & (yt >= window[0]) & (yt <= window[1])
        iv = {
            "mae": _bootstrap_mae(errs, None, s.n_bootstrap, seed),
            "mae_window": _bootstrap_mae(errs, win, s.n_bootstrap, seed),
            "baselines": {b: _errors(v, yt, window) for b, v in base.items()},
        }
        return {**_errors(pred, yt, window), "intervals": iv}, pred, std, p_metal

    grouped, pred, std, p_metal = score(test, s.seed)
    err = np.abs(pred - y[test])
    try:
        scale = fit_spread_scale(err, std)
        scale_note = "fitted"
    except ValueError as exc:  # e.g. a tiny ensemble with zero spread on many rows
        scale, scale_note = 1.0, f"not fitted, raw spread kept (scale 1): {exc}"
        log.warning("band gap: spread scale %s", scale_note)
    model.spread_scale = scale
    metrics: dict[str, Any] = {
        "target": "PBE band gap (store column band_gap; Materials Project GGA/GGA+U), eV",
        "gap_model": model.label,
        "embeddings": {"tables": have, "stats": list(s.embedding_stats) if have else []},
        "structure_embedding": s.structure_embedding,
        "model": f"{k}-member ensemble of two-stage LightGBM "
        "(metal classifier + non-metal gap regressor)",
        "features": f"{len(names)} (composition"
        + (" + cell" if s.structure_features else "")
        + (" + site-environment" if kind == "structure" else "")
        + (" + CHGNet structure embedding (mean, max)" if s.structure_embedding else "")
        + (f" + {'/'.join(have)} embedding statistics" if have else "")
        + ")",
        "protocol": "one ensemble, trained on the rows outside both test splits, scores the "
        "formula-grouped and the random-row test split; MAE intervals: 95% row bootstrap "
        f"({s.n_bootstrap} replicates); window MAE: true gap in [{window[0]:g}, {window[1]:g}] eV",
        "n_train": len(train_idx),
        "n_test": int(test.sum()),
        "test_split": f"{s.test_fraction:g} of reduced formulas held out "
        "(grouped: no formula in both sets)",
        "gap_window_eV": list(window),
        "test_grouped": grouped,
        "uncertainty": {
            "what": "gap_pbe_ml_std = spread_scale x standard deviation over the ensemble members; "
            "spread_scale is the 68.27% quantile of |error| / spread on the grouped held-out split",
            "spread_scale": round(scale, 4),
            "spread_scale_fit": scale_note,
            "mean_raw_std_test": round(float(std.mean()), 4),
            "coverage_1sigma_raw": round(coverage(err, std), 4),
            "coverage_2sigma_raw": round(coverage(err, 2 * std), 4),
            "coverage_1sigma_rescaled_crossfit": round(
                crossfit_coverage(err, std, fa[test], s.seed), 4
            ),
        },
        "goal_mae_eV": 0.25,
    }
    metrics["goal_met_grouped"] = grouped["mae"] <= 0.25
    if s.evaluate_random_split:
        rnd, rpred, rstd, _ = score(rtest, s.seed + 1)
        rerr = np.abs(rpred - y[rtest])
        metrics["test_random_rows"] = {
            **rnd,
            "n": int(rtest.sum()),
            "what": "the same ensemble on a random row split (polymorphs of a formula may sit "
            "on both sides)",
        }
        metrics["uncertainty"]["random_rows"] = {
            "coverage_1sigma_raw": round(coverage(rerr, rstd), 4),
            "coverage_1sigma_rescaled": round(coverage(rerr, rstd, scale), 4),
        }
        metrics["goal_met_random_rows"] = rnd["mae"] <= 0.25
    metrics["seconds"] = {"features": round(t_feat, 2), "total": round(time.perf_counter() - t0, 2)}
    metrics["cpu_seconds"] = round(time.process_time() - c0, 2)
    held = pd.DataFrame(
        {
            "formula": fa[test],
            "gap_pbe": y[test],
            "gap_pbe_ml": pred,
            "gap_pbe_ml_std": scale * std,
            "p_metal_ml": p_metal.mean(axis=0),
        }
    )
    log.info(
        "gap surrogate: %d train, %d test (formula-grouped) MAE %.3f eV; %.1f s",
        metrics["n_train"],
        metrics["n_test"],
        metrics["test_grouped"]["mae"],
        metrics["seconds"]["total"],
    )
    return model, metrics, held


def hse_estimate(
    gap_pbe: np.ndarray, mapping: ScreenBandgapHSEMappingSettings | Mapping[str, Any]
) -> np.ndarray:
    """``slope · gap + intercept`` for gaps > 0; metals (gap 0) stay 0. NaN stays NaN."""
    m = ScreenBandgapHSEMappingSettings.coerce(mapping)
    g = np.asarray(gap_pbe, dtype=float)
    out = m.slope * g + m.intercept
    return np.where(g > 0, out, np.where(np.isnan(g), np.nan, 0.0))


def predict_gaps(
    model: GapSurrogate,
    formulas: Sequence[str],
    arrays: StructureArrays | None,
) -> pd.DataFrame:
    """Surrogate gaps of new formulas/structures.

    A model with the CHGNet structure embedding computes it from ``arrays``.

    Returns:
        DataFrame with ``gap_pbe_ml``, ``gap_pbe_ml_std``, ``p_metal_ml``, ``gap_hse_est``,
        ``gap_hse_est_std`` (eV; NaN where the formula cannot be featurised) and ``gap_model``
        (the model that gave the row's numbers, :attr:`GapSurrogate.label`; empty where
        there is no number).
    """
    from matdisco.features import ElementTable

    table = ElementTable.from_dict(model.element_table)
    structure_embedding = None
    if model.structure_embedding:
        from matdisco.screen.gap_embedding import compute_embeddings

        if arrays is None:
            raise ValueError("the CHGNet structure embedding needs the structures")
        structure_embedding = compute_embeddings(arrays).X
    X, names, valid = gap_features(
        formulas,
        arrays,
        table,
        model.feature_settings,
        use_structure=bool(model.settings["structure_features"]),
        use_sites=model.kind == "structure",
        embeddings=model.element_embeddings(),
        embedding_stats=model.settings.get("embedding_stats", EMBEDDING_STATS),
        structure_embedding=structure_embedding,
    )
    if names != model.feature_names:
        raise ValueError("feature columns differ from the model's (featuriser settings changed?)")
    n = len(formulas)
    cols = {
        c: np.full(n, np.nan)
        for c in ("gap_pbe_ml", "gap_pbe_ml_std", "p_metal_ml", "gap_hse_est", "gap_hse_est_std")
    }
    if valid.any():
        g, pm = model.member_predictions(X[valid])
        hse = hse_estimate(g, model.settings["hse_mapping"])
        scale = float(getattr(model, "spread_scale", 1.0))
        mean, sd = lgbm.ensemble_mean_std(g)
        cols["gap_pbe_ml"][valid], cols["gap_pbe_ml_std"][valid] = mean, scale * sd
        cols["p_metal_ml"][valid] = pm.mean(axis=0)
        mean, sd = lgbm.ensemble_mean_std(hse)
        cols["gap_hse_est"][valid], cols["gap_hse_est_std"][valid] = mean, scale * sd
    out = pd.DataFrame(cols)
    out["gap_model"] = np.where(np.isfinite(out["gap_pbe_ml"].to_numpy()), model.label, "")
    return out


# --------------------------------------------------------------------------------------
# DFT paths
# --------------------------------------------------------------------------------------


def write_vasp_hse_inputs(
    structure: Structure,
    directory: str | Path,
    *,
    reciprocal_density: float = 50,
    user_incar_settings: dict[str, Any] | None = None,
) -> Path:
    """HSE06 gap inputs: pymatgen ``MPHSEBSSet`` (``mode="gap"``), POTCAR.spec, no POTCAR files.

    ``MPHSEBSSet`` is MP's self-consistent HSE06 set (LHFCALC, HFSCREEN 0.2) on a uniform
    k-mesh; in ``gap`` mode it adds the PBE VBM/CBM k-points when started from a previous
    run (``prev_dir``), so the cluster workflow can chain it after a PBE static. ``LASPH`` is
    switched on (user settings override).
    """
    from pymatgen.io.vasp.sets import MPHSEBSSet

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    # LASPH (aspherical PAW gradient corrections) belongs to every hybrid run; pymatgen warns
    # without it
    incar = {"LASPH": True, **dict(user_incar_settings or {})}
    vis = MPHSEBSSet(
        structure, mode="gap", reciprocal_density=reciprocal_density, user_incar_settings=incar
    )
    vis.write_input(d, potcar_spec=True)
    return d


def read_vasp_gap(directory: str | Path) -> float:
    """Band gap (eV) of a finished run in ``directory`` (vasprun.xml[.gz]); NaN when absent."""
    from pymatgen.io.vasp.outputs import Vasprun

    for name in ("vasprun.xml", "vasprun.xml.gz"):
        p = Path(directory) / name
        if p.exists():
            gap, _cbm, _vbm, _direct = Vasprun(
                p, parse_potcar_file=False
            ).eigenvalue_band_properties
            return float(gap)
    return float("nan")


def gpaw_pbe_gap(
    structure: Structure, options: dict[str, Any] | None = None, *, threads: int = 1
) -> float:
    """PBE band gap (eV) of ``structure`` from a GPAW single point (the relax ``gpaw`` backend).

    Uses ``matdisco.relax.backends.GPAWBackend`` settings (``relax.gpaw``: ecut, k-points,
    Hubbard U, spin) and ASE's ``bandgap`` on the converged eigenvalues.

    Raises:
        matdisco.relax.backends.BackendUnavailable: GPAW is not installed.
    """
    from ase.dft.bandgap import bandgap
    from pymatgen.io.ase import AseAtomsAdaptor

    from matdisco.relax.backends import get_backend

    be = get_backend("gpaw", {"txt": None, **(options or {})}, threads=threads)
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = be.calculator(atoms)
    atoms.get_potential_energy()
    gap, _p1, _p2 = bandgap(atoms.calc, output=None)
    return float(gap)


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------

BANDGAP_COLUMNS = (
    "id",
    "formula",
    "gap_pbe_ml",
    "gap_pbe_ml_std",
    "p_metal_ml",
    "gap_hse_est",
    "gap_hse_est_std",
    "gap_model",
    "gap_hse_vasp",
    "gap_pbe_gpaw",
    "gap_hse_est_gpaw",
    "dft_status",
)


def screen_bandgap(
    *,
    store: str | Path,
    candidates: str | Path,
    magpie_table: str | Path,
    elmd_table: str | Path | None,
    feature_settings: FeaturesSettings | Mapping[str, Any] | None,
    settings: ScreenBandgapSettings | Mapping[str, Any] | None,
    method: str,
    max_e_above_hull: float,
    out_csv: str | Path,
    out_model: str | Path,
    out_metrics: str | Path,
    out_parity: str | Path,
    out_dft_dir: str | Path,
    gpaw_options: dict[str, Any] | None = None,
    threads: int = 1,
    store_embeddings: str | Path | None = None,
) -> pd.DataFrame:
    """The bandgap stage: train the surrogate, predict every candidate, DFT inputs if asked.

    Args:
        store: the run's entry store (training data: ``band_gap`` + structures).
        candidates: relaxed candidates (entry-store format).
        magpie_table, elmd_table: element property files of the featuriser.
        feature_settings: the ``features`` settings (or config section).
        settings: ``screen.bandgap`` settings (or config section).
        method: ``surrogate`` | ``vasp_hse`` | ``gpaw_pbe``.
        max_e_above_hull: DFT inputs/runs only for candidates with E_hull <= this (eV/atom),
            lowest first, at most ``dft_max_candidates``.
        out_csv: per-candidate gaps (:data:`BANDGAP_COLUMNS`).
        out_model: pickled :class:`GapSurrogate`.
        out_metrics: metrics JSON (held-out MAE etc.).
        out_parity: parity plot of the held-out split.
        out_dft_dir: folder for VASP inputs (one sub-folder per candidate) and a README.
        gpaw_options: ``relax.gpaw`` settings for ``gpaw_pbe``.
        threads: LightGBM / GPAW threads.
        store_embeddings: the store's CHGNet embedding file
            (:func:`matdisco.screen.gap_embedding.embed_store`); required when
            ``screen.bandgap.structure_embedding`` is set.
    """
    from matdisco.features import ElementTable, load_embeddings
    from matdisco.screen.plots import plot_bandgap_parity
    from matdisco.store import read_entries, read_structure_arrays

    if method not in ("surrogate", "vasp_hse", "gpaw_pbe"):
        raise ValueError(f"unknown bandgap method {method!r} (surrogate | vasp_hse | gpaw_pbe)")
    s = ScreenBandgapSettings.coerce(settings)
    fset = FeaturesSettings.coerce(feature_settings)
    if elmd_table:
        table = ElementTable.from_files(magpie_table, elmd_table, fset.elmd_scale)
    else:
        table = ElementTable.from_files(magpie_table)
    embeddings = load_embeddings(elmd_table, names=s.embeddings, key="screen.bandgap.embeddings")
    train = read_entries(store, ["id", "formula", "band_gap"])
    arrays = read_structure_arrays(store) if _uses_structures(s) else None
    store_emb = None
    if s.structure_embedding:
        from matdisco.screen.gap_embedding import read_store_embedding

        if store_embeddings is None:
            raise ValueError(
                "screen.bandgap.structure_embedding needs the store's embedding file "
                "(rule gap_embeddings / matdisco.screen.gap_embedding.embed_store)"
            )
        store_emb = read_store_embedding(store_embeddings, train["id"].astype(str).tolist())
    model, metrics, held = train_gap_surrogate(
        train["formula"].astype(str).tolist(),
        train["band_gap"].to_numpy(dtype=float),
        arrays,
        table,
        settings=s,
        feature_settings=fset,
        embeddings=embeddings,
        structure_embedding=store_emb,
        threads=threads,
    )
    metrics["hse_mapping"] = s.hse_mapping.to_dict()
    metrics["method"] = method
    cand = read_entries(candidates)
    carr = read_structure_arrays(candidates) if _uses_structures(s) else None
    pred = predict_gaps(model, cand["formula"].astype(str).tolist(), carr)
    table_out = pd.concat([cand[["id", "formula"]].reset_index(drop=True), pred], axis=1)
    for c in ("gap_hse_vasp", "gap_pbe_gpaw", "gap_hse_est_gpaw"):
        table_out[c] = np.nan
    table_out["dft_status"] = ""
    dft_dir = Path(out_dft_dir)
    dft_dir.mkdir(parents=True, exist_ok=True)
    eh = (
        cand["e_above_hull"].to_numpy(dtype=float)
        if "e_above_hull" in cand.columns
        else np.full(len(cand), np.nan)
    )
    ok = np.flatnonzero(np.isfinite(eh) & (eh <= max_e_above_hull + 1e-9))
    chosen = ok[np.argsort(eh[ok], kind="stable")][: s.dft_max_candidates]
    readme = [
        f"# band-gap DFT folder (screen.bandgap_method: {method})",
        "",
        "surrogate: nothing here; gaps are the ML estimates in bandgap.csv.",
    ]
    if method != "surrogate" and len(chosen):
        structures = read_structure_arrays(candidates, chosen).structures()
        for i, st in zip(chosen, structures, strict=True):
            rid = str(cand["id"].iloc[i])
            if method == "vasp_hse":
                v = s.vasp
                run = write_vasp_hse_inputs(
                    st,
                    dft_dir / rid,
                    reciprocal_density=v.reciprocal_density,
                    user_incar_settings=v.user_incar_settings,
                )
                done = read_vasp_gap(Path(v.results_dir) / rid) if v.results_dir else float("nan")
                table_out.loc[i, "gap_hse_vasp"] = done
                table_out.loc[i, "dft_status"] = (
                    "hse06 done" if math.isfinite(done) else f"inputs written: {run.name}/"
                )
            else:
                try:
                    g = gpaw_pbe_gap(st, gpaw_options, threads=threads)
                    table_out.loc[i, "gap_pbe_gpaw"] = g
                    table_out.loc[i, "gap_hse_est_gpaw"] = float(
                        hse_estimate(np.array([g]), s.hse_mapping)[0]
                    )
                    table_out.loc[i, "dft_status"] = "gpaw pbe done"
                except Exception as err:  # noqa: BLE001 - per candidate
                    table_out.loc[i, "dft_status"] = f"gpaw failed: {err}"
        readme.append(
            f"{method}: {len(chosen)} candidates (E_hull <= {max_e_above_hull:g} eV/atom, "
            "lowest first, "
            f"at most {s.dft_max_candidates})."
        )
        if method == "vasp_hse":
            readme.append(
                "Each folder holds MPHSEBSSet (HSE06, mode=gap) inputs with POTCAR.spec: "
                "assemble POTCARs on the cluster, run VASP, then point "
                "screen.bandgap.vasp.results_dir at the finished folders."
            )
    (dft_dir / "README.md").write_text("\n".join(readme) + "\n", encoding="utf-8")
    table_out = table_out[list(BANDGAP_COLUMNS)]
    with atomic_write(out_csv) as tmp:
        table_out.to_csv(tmp, index=False)
    with atomic_write(out_model) as tmp, open(tmp, "wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    with atomic_write(out_metrics) as tmp:
        Path(tmp).write_text(json.dumps(metrics, indent=2, default=str) + "\n", encoding="utf-8")
    plot_bandgap_parity(out_parity, held, metrics)
    return table_out
