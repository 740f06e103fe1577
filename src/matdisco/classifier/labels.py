"""Stability labels: store E_hull labels (+ optional extra training-only labels), deduplicated
by composition, joined with their features and binarised (:func:`load_labels`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from matdisco.features import FeatureSet

__all__ = ["PRIMARY", "LabelSet", "load_labels", "read_extra_labels"]

log = logging.getLogger("matdisco.classifier")

PRIMARY = "store"


@dataclass
class LabelSet:
    """Deduplicated labelled formulas with their features.

    Attributes:
        table: one row per composition: formula, key, chemsys, e_above_hull, label_source,
            primary (bool: from the store, so evaluated), y (int 0/1).
        X: (n, n_features) float32 features, row-aligned with ``table``.
        feature_names: feature column names.
        rejected: label formulas that could not be featurised (formula, reason, label_source).
    """

    table: pd.DataFrame
    X: np.ndarray
    feature_names: list[str]
    rejected: pd.DataFrame


def read_extra_labels(path: str | Path) -> pd.DataFrame:
    """Bartel-style table: formula + decomposition_enthalpy (or e_above_hull) in eV/atom.

    A ``label_source`` column, when present, names each row's source (the merged table of
    :func:`matdisco.loop.write_extra_labels`: configured extra labels plus knowledge-base
    labels, ``loop:<run> (<energy scale>)``); otherwise the file's kind names it.
    """
    df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if "decomposition_enthalpy" in df.columns:
        energy = df["decomposition_enthalpy"].astype(float).clip(lower=0.0)  # E_hull = max(ΔH_d, 0)
        source = "bartel2020_decomposition_enthalpy"
    elif "e_above_hull" in df.columns:
        energy = df["e_above_hull"].astype(float)
        source = Path(path).name
    else:
        raise ValueError(f"{path}: needs a decomposition_enthalpy or e_above_hull column")
    if "label_source" in df.columns:
        source = df["label_source"].fillna(source).astype(str)
    return pd.DataFrame(
        {"formula": df["formula"].astype(str), "e_above_hull": energy, "label_source": source}
    )


def load_labels(
    store_labels: pd.DataFrame,
    features: FeatureSet,
    *,
    threshold: float,
    extra_labels: str | Path | None = None,
    max_labels: int | None = None,
    seed: int = 0,
) -> LabelSet:
    """Join labels with features, deduplicate by composition and binarise.

    Args:
        store_labels: the store's ``/labels`` table (formula, e_above_hull, source).
        features: features of (at least) every label formula, looked up by formula string.
        threshold: stable when e_above_hull <= threshold, eV/atom.
        extra_labels: optional csv of extra training labels (see module docstring).
        max_labels: keep a random subset of this many store labels (and as many extra
            ones), for quick test runs; None keeps all.
        seed: seed of that subsample.

    Returns:
        The :class:`LabelSet`. Compositions labelled in both tables keep the store label;
        repeated compositions within a table keep the lowest energy.
    """
    frames = [
        pd.DataFrame(
            {
                "formula": store_labels["formula"].astype(str),
                "e_above_hull": store_labels["e_above_hull"].astype(float),
                "label_source": store_labels["source"].astype(str)
                if "source" in store_labels
                else PRIMARY,
                "primary": True,
            }
        )
    ]
    if extra_labels is not None:
        extra = read_extra_labels(extra_labels)
        extra["primary"] = False
        frames.append(extra)
    lab = pd.concat(frames, ignore_index=True)
    lab = lab[np.isfinite(lab["e_above_hull"].to_numpy())]
    if max_labels is not None:
        rng = np.random.default_rng(seed)
        parts = []
        for _, g in lab.groupby("primary", sort=True):
            parts.append(g.iloc[np.sort(rng.permutation(len(g))[: int(max_labels)])])
        lab = pd.concat(parts).sort_index()
    pos = pd.Series(np.arange(len(features.formulas)), index=pd.Index(features.formulas))
    pos = pos[~pos.index.duplicated()]
    missing = ~lab["formula"].isin(pos.index)
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} label formulas are not in the feature file, e.g. "
            f"{lab.loc[missing, 'formula'].head(3).tolist()}; featurise every label formula first"
        )
    idx = pos.loc[lab["formula"]].to_numpy()
    valid = features.valid[idx]
    reasons = np.asarray(features.reasons, dtype=object)[idx]
    rejected = pd.DataFrame(
        {
            "formula": lab["formula"].to_numpy()[~valid],
            "reason": reasons[~valid],
            "label_source": lab["label_source"].to_numpy()[~valid],
        }
    )
    if len(rejected):
        log.warning(
            "%d label formulas rejected by the featuriser, e.g. %s",
            len(rejected),
            rejected.head(3).to_dict("records"),
        )
    lab = lab.assign(
        key=np.asarray(features.keys, dtype=object)[idx],
        chemsys=np.asarray(features.elements, dtype=object)[idx],
        _row=idx,
    )[valid]
    # dedupe by composition: store labels first, then the lowest energy
    lab = lab.sort_values(
        ["key", "primary", "e_above_hull"], ascending=[True, False, True], kind="mergesort"
    )
    lab = lab.drop_duplicates("key", keep="first").reset_index(drop=True)
    lab["y"] = (lab["e_above_hull"].to_numpy() <= threshold).astype(np.int64)
    X = features.X[lab["_row"].to_numpy()]
    table = lab[["formula", "key", "chemsys", "e_above_hull", "label_source", "primary", "y"]]
    return LabelSet(table, X, list(features.feature_names), rejected)
