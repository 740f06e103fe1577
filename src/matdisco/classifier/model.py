"""The model file (a plain dict, see :func:`save_model`) and prediction with it
(:class:`StabilityModel`, :func:`predict_stability`, :func:`predict_target_formulas`)."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.classifier.calibration import ENSEMBLE_TARGET, apply_calibrator, calibrate_ensemble
from matdisco.classifier.neighbours import NEIGHBOUR_FEATURES, Compositions, neighbour_features
from matdisco.core.lgbm import ensemble_mean_std, predict_members
from matdisco.features import (
    EMBEDDING_STATS,
    ElementEmbeddings,
    ElementTable,
    feature_kwargs,
    featurize_with_embeddings,
)

__all__ = [
    "MODEL_FORMAT",
    "StabilityModel",
    "save_model",
    "load_model",
    "predict_stability",
    "predict_target_formulas",
]

log = logging.getLogger("matdisco.classifier")

MODEL_FORMAT = "matdisco.ehull_classifier/1"


class StabilityModel:
    """A loaded classifier (wraps the plain model dict).

    Args:
        model: the dict written by :func:`save_model`.
        ref: the neighbour-reference compositions when already parsed (training uses this);
            otherwise they are parsed from the model on first use.
    """

    def __init__(self, model: dict[str, Any], ref: Compositions | None = None) -> None:
        if model.get("format") != MODEL_FORMAT:
            raise ValueError(
                f"not a matdisco stability model (format {model.get('format')!r}, "
                f"want {MODEL_FORMAT})"
            )
        import lightgbm as lgb

        self.model = model
        self.boosters = [lgb.Booster(model_str=s) for s in model["boosters"]]
        self.table = ElementTable.from_dict(model["element_table"])
        self.feature_kwargs = feature_kwargs(model["feature_settings"])
        emb = model.get("embeddings")
        self.embeddings = ElementEmbeddings.from_dict(emb) if emb else None
        self.embedding_stats = tuple(
            model["feature_settings"].get("embedding_stats", EMBEDDING_STATS)
        )
        self._ref = ref

    @property
    def decision_threshold(self) -> float:
        """Probability above which a formula is called stable."""
        return float(self.model["decision_threshold"])

    @property
    def uses_neighbours(self) -> bool:
        """Whether the model has label-dependent neighbour features."""
        return "neighbours" in self.model

    def _reference(self) -> Compositions:
        if self._ref is None:
            self._ref = Compositions.from_formulas(self.model["neighbours"]["formulas"], self.table)
        return self._ref

    def predict_features(
        self, X: np.ndarray, comps: Compositions | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ensemble probability, ensemble std and raw member probabilities per row.

        ``p_stable`` is the calibrator applied to the ensemble output (the logit-space mean of
        the members' raw probabilities; see :func:`calibrate_ensemble`), ``p_stable_std`` the
        standard deviation of the members' calibrated probabilities.

        Args:
            X: (n, n_base_features) composition features.
            comps: the rows' compositions (needed when the model uses neighbour features).

        Returns:
            ``(p_stable, p_stable_std, raw)``; raw is (n_members, n).
        """
        if not self.uses_neighbours:
            raw = predict_members(self.boosters, X)
        else:
            raw = np.empty((len(self.boosters), len(X)))
            if comps is None:
                raise ValueError("this model uses neighbour features: pass the rows' compositions")
            nb = self.model["neighbours"]
            ref = self._reference()
            member = np.asarray(nb["member"])
            ref_y = np.asarray(nb["y"])
            ref_e = np.asarray(nb["e_above_hull"], float)
            Xw = np.empty((len(X), X.shape[1] + len(NEIGHBOUR_FEATURES)), dtype=np.float32)
            Xw[:, : X.shape[1]] = X
            for m, b in enumerate(self.boosters):
                rows = np.flatnonzero(member != m)
                Xw[:, X.shape[1] :] = neighbour_features(
                    comps, ref.take(rows), ref_y[rows], ref_e[rows]
                )
                raw[m] = b.predict(Xw) if len(X) else []
        cal = self.model["calibration"]
        if self.model.get("calibration_target") == ENSEMBLE_TARGET:
            p, sd = calibrate_ensemble(cal, raw)
        else:  # model files written before the ensemble-output calibration
            p, sd = ensemble_mean_std(
                np.vstack([apply_calibrator(cal, r) for r in raw]), space="logit"
            )
        return p, sd, raw

    def predict(self, formulas: Sequence[str]) -> pd.DataFrame:
        """See :func:`predict_stability`."""
        formulas = list(formulas)
        text = [f if isinstance(f, str) else "" for f in formulas]
        fs = featurize_with_embeddings(
            text, self.table, self.embeddings, self.embedding_stats, **self.feature_kwargs
        )
        if fs.feature_names != self.model["base_feature_names"]:
            raise ValueError(
                "feature names differ from the model's; was it trained with other feature settings?"
            )
        valid = fs.valid.copy()
        for i, f in enumerate(formulas):
            if not isinstance(f, str):
                valid[i] = False
                fs.reasons[i] = f"not a string ({type(f).__name__})"
        p = np.full(len(formulas), np.nan)
        sd = np.full(len(formulas), np.nan)
        rows = np.flatnonzero(valid)
        if len(rows):
            comps = (
                Compositions.from_formulas([text[i] for i in rows], self.table)
                if self.uses_neighbours
                else None
            )
            p[rows], sd[rows], _ = self.predict_features(fs.X[rows], comps)
        counts = self.model["element_counts"]
        nmin = self.model["min_element_count"]
        lo, hi = self.model.get("n_elements_range", (1, 1000))
        ood = np.ones(len(formulas), dtype=bool)
        for i in rows:
            els = fs.elements[i].split("-")
            ood[i] = not lo <= len(els) <= hi or any(counts.get(e, 0) < nmin for e in els)
        return pd.DataFrame(
            {
                "formula": formulas,
                "p_stable": p,
                "p_stable_std": sd,
                "out_of_domain": ood,
                "valid": valid,
                "reason": fs.reasons,
            }
        )


def save_model(path: str | Path, model: dict[str, Any]) -> None:
    """Pickle the plain model dict atomically (no matdisco classes inside the pickle)."""
    from matdisco.store import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime_ns: int, size: int) -> StabilityModel:
    with open(path, "rb") as fh:
        return StabilityModel(pickle.load(fh))  # noqa: S301 - our own model files only


def load_model(path: str | Path) -> StabilityModel:
    """Load (and cache, keyed by path and modification time) a model file."""
    p = Path(path).resolve()
    st = p.stat()
    return _load_cached(str(p), st.st_mtime_ns, st.st_size)


def predict_stability(model_path: str | Path, formulas: Sequence[str]) -> pd.DataFrame:
    """Calibrated stability probability with ensemble uncertainty for formulas.

    Args:
        model_path: ``results/<run>/classifier/model.pkl``.
        formulas: chemical formulas (any notation :func:`matdisco.features.parse_formula`
            accepts); repeats allowed, order kept.

    Returns:
        One row per input formula with columns ``formula`` (as given), ``p_stable``
        (calibrated probability that E_hull <= the model's label threshold), ``p_stable_std``
        (standard deviation of the calibrated probabilities of the ensemble members),
        ``out_of_domain`` (True when an element was in fewer than ``min_element_count``
        training formulas, or absent, or when the number of elements lies outside the
        training range, e.g. a pure element; True for invalid formulas), ``valid`` (False for a
        formula that could not be featurised: p_stable and p_stable_std are NaN) and
        ``reason`` ('' or why the formula is invalid).
    """
    return load_model(model_path).predict(formulas)


def predict_target_formulas(
    *, store: str | Path, model: str | Path, elements: Sequence[str], out_csv: str | Path
) -> pd.DataFrame:
    """Predict every known formula of the target chemical system (and its subsystems).

    Known formulas are the store's entries and labels whose elements all lie in
    ``elements``; the store label (if any) is joined for comparison.
    """
    from matdisco.store import atomic_write, read_entries, read_labels

    allowed = set(elements)
    lab = read_labels(store)
    ent = read_entries(store, ["formula"])
    formulas = list(
        dict.fromkeys(list(lab["formula"].astype(str)) + list(ent["formula"].astype(str)))
    )
    sm = load_model(model)
    from matdisco.features import parse_formulas

    parsed = parse_formulas(formulas, sm.table)
    keep = []
    for i in np.flatnonzero(parsed.valid):
        a, b = parsed.row_ptr[i], parsed.row_ptr[i + 1]
        if {sm.table.symbols[e] for e in parsed.elem[a:b]} <= allowed:
            keep.append(formulas[i])
    pred = sm.predict(keep)
    ehull = lab.drop_duplicates("formula").set_index("formula")["e_above_hull"]
    pred["label_e_above_hull"] = pred["formula"].map(ehull)
    pred["label_stable"] = (pred["label_e_above_hull"] <= sm.model["label_threshold"]).where(
        pred["label_e_above_hull"].notna()
    )
    pred["predicted_stable"] = pred["p_stable"] >= sm.decision_threshold
    pred = pred.sort_values(
        ["p_stable", "formula"], ascending=[False, True], kind="mergesort"
    ).reset_index(drop=True)
    with atomic_write(out_csv) as tmp:
        pred.to_csv(tmp, index=False, float_format="%.6g")
    log.info(
        "%d target-system formulas predicted (%d predicted stable)",
        len(pred),
        int(pred["predicted_stable"].sum()),
    )
    return pred
