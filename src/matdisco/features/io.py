"""HDF5 cache of a :class:`FeatureSet`, rejects csv, and the featurize stage
(:func:`featurize_store`) with its settings (:func:`feature_kwargs`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.features.compute import FeatureSet
from matdisco.features.elements import ElementTable
from matdisco.features.embeddings import ElementEmbeddings, featurize_with_embeddings
from matdisco.settings import FeaturesSettings

__all__ = [
    "write_features",
    "read_features",
    "write_rejects",
    "feature_kwargs",
    "featurize_store",
    "read_feature_meta",
    "load_embeddings",
]

log = logging.getLogger("matdisco.features")


def write_features(path: str | Path, fs: FeatureSet, attrs: dict[str, Any] | None = None) -> None:
    """Write a FeatureSet to HDF5 atomically (``attrs`` as JSON in the root attributes)."""
    import h5py

    from matdisco.store import atomic_write

    s = h5py.string_dtype(encoding="utf-8")
    comp = {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        kw = comp if len(fs.formulas) else {}
        h5.create_dataset("X", data=fs.X, **kw)
        h5.create_dataset("feature_names", data=np.asarray(fs.feature_names, dtype=object), dtype=s)
        for name in ("formulas", "reasons", "keys", "elements"):
            h5.create_dataset(name, data=np.asarray(getattr(fs, name), dtype=object), dtype=s, **kw)
        h5.create_dataset("valid", data=fs.valid, **kw)
        h5.attrs["format"] = "matdisco.features/1"
        h5.attrs["meta"] = json.dumps(attrs or {}, sort_keys=True, default=str)


def read_features(path: str | Path) -> FeatureSet:
    """Read a FeatureSet written by :func:`write_features`."""
    import h5py

    with h5py.File(path, "r") as h5:
        if h5.attrs.get("format") != "matdisco.features/1":
            raise ValueError(f"{path}: not a matdisco feature file")
        strs = {
            k: list(h5[k].asstr()[()])
            for k in ("formulas", "reasons", "keys", "elements", "feature_names")
        }
        return FeatureSet(
            strs["formulas"],
            h5["X"][()],
            strs["feature_names"],
            h5["valid"][()].astype(bool),
            strs["reasons"],
            strs["keys"],
            strs["elements"],
        )


def write_rejects(path: str | Path, fs: FeatureSet) -> None:
    """CSV of rejected formulas (formula, reason); header only when none."""
    from matdisco.store import atomic_write

    with atomic_write(path) as tmp:
        fs.rejects().to_csv(tmp, index=False)


def feature_kwargs(settings: FeaturesSettings | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of :func:`featurize` from the ``features`` settings.

    Args:
        settings: :class:`~matdisco.settings.FeaturesSettings`, or a mapping read with its
            ``from_config`` (e.g. the settings stored in a model file); None = the defaults.
    """
    s = FeaturesSettings.coerce(settings)
    return {
        "stats": list(s.stats),
        "stoichiometry_norms": list(s.stoichiometry_norms),
        "valence_orbitals": s.valence_orbitals,
        "ionic": s.ionic,
        "charge_balance": s.charge_balance,
        "element_fractions": s.element_fractions,
        "formula_unit": s.formula_unit,
    }


def load_embeddings(
    elmd_table: str | Path | None,
    settings: FeaturesSettings | Mapping[str, Any] | None = None,
    *,
    names: Sequence[str] | None = None,
    key: str = "features.embeddings",
) -> ElementEmbeddings | None:
    """The element embeddings named by ``features.embeddings`` (None when it is empty).

    Args:
        elmd_table: the ElMD scale file holding the vector tables.
        settings: ``features`` settings whose ``embeddings`` name the tables.
        names: the tables to read instead (e.g. ``screen.bandgap.embeddings``).
        key: the config key of the names, for the error message.

    Raises:
        ValueError: embeddings are requested but no ElMD scale table is configured.
    """
    wanted = list(names) if names is not None else FeaturesSettings.coerce(settings).embeddings
    if not wanted:
        return None
    if not elmd_table:
        raise ValueError(f"{key} needs features.elmd_table (the vector tables)")
    return ElementEmbeddings.from_file(elmd_table, wanted)


def featurize_store(
    *,
    store: str | Path,
    extra_labels: str | Path | None,
    magpie_table: str | Path,
    elmd_table: str | Path | None,
    settings: FeaturesSettings | Mapping[str, Any] | None,
    out_features: str | Path,
    out_rejects: str | Path,
) -> FeatureSet:
    """The featurize stage: features of every distinct formula the pipeline knows.

    Formulas come from the store's ``/labels`` and ``/entries`` tables and from the optional
    extra label csv (column ``formula``). Rejected formulas go to ``out_rejects`` with their
    reason; they never stop the stage.
    """
    import time

    from matdisco.store import read_entries, read_labels

    t0 = time.perf_counter()
    s = FeaturesSettings.coerce(settings)
    if elmd_table:
        table = ElementTable.from_files(magpie_table, elmd_table, s.elmd_scale)
    else:
        table = ElementTable.from_files(magpie_table)
    formulas = list(read_labels(store)["formula"].astype(str)) + list(
        read_entries(store, ["formula"])["formula"].astype(str)
    )
    if extra_labels:
        formulas += list(
            pd.read_csv(extra_labels, usecols=["formula"], keep_default_na=False, na_values=[""])[
                "formula"
            ].astype(str)
        )
    formulas = list(dict.fromkeys(formulas))  # distinct, first-seen order
    emb = load_embeddings(elmd_table, s)
    t1 = time.perf_counter()
    fs = featurize_with_embeddings(formulas, table, emb, s.embedding_stats, **feature_kwargs(s))
    dt = time.perf_counter() - t1
    meta = {
        "settings": s.to_dict(),
        "element_table": table.to_dict(),
        "n_formulas": len(formulas),
        "rejected": int((~fs.valid).sum()),
    }
    if emb is not None:
        meta["embeddings"] = emb.to_dict()
    write_features(out_features, fs, meta)
    write_rejects(out_rejects, fs)
    log.info(
        "%d formulas, %d features, %d rejected; featurised in %.2f s (%.0f formulas/s), "
        "stage %.1f s",
        len(formulas),
        len(fs.feature_names),
        int((~fs.valid).sum()),
        dt,
        len(formulas) / max(dt, 1e-9),
        time.perf_counter() - t0,
    )
    return fs


def read_feature_meta(path: str | Path) -> dict[str, Any]:
    """The JSON metadata stored with a feature file (settings, element table, counts)."""
    import h5py

    with h5py.File(path, "r") as h5:
        return json.loads(h5.attrs.get("meta", "{}"))
