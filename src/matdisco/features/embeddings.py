"""Element-embedding composition features (opt-in; ``features.embeddings``).

Learned or curated element vectors shipped in the bundled ElMD scale table (the same tables
the ElMD 0.5 package ships: ``megnet16`` = the 16-d element embedding of a trained MEGNet
model, ``oliynyk`` = 44 curated element properties, ``mat2vec`` = 200-d word2vec vectors from
the materials literature, ``cgcnn``, ``elemnet``, ``matscholar``, ``magpie``, ``jarvis``)
are summarised per formula like the Magpie properties, but per embedding *dimension*:
fraction-weighted ``mean`` and standard deviation ``std`` (sqrt of sum_i f_i (e_i - mean)^2),
element-wise ``minimum`` and ``maximum``. This is the pooled input Roost/CrabNet-style
models start from, without the learned attention.

Columns are named ``<embedding>_<stat>_<dim>``; a formula with an element that the
embedding lacks gets NaN in that embedding's columns (LightGBM treats NaN as missing).
These columns are *separate* from :func:`matdisco.features.featurize` (whose columns and
values are unchanged and shared with the band-gap surrogate); :func:`featurize_with_embeddings`
appends them.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from matdisco.features.compute import FeatureSet, featurize
from matdisco.features.elements import ElementTable
from matdisco.features.parse import parse_formulas

__all__ = [
    "EMBEDDING_STATS",
    "ElementEmbeddings",
    "embedding_features",
    "featurize_with_embeddings",
]

#: statistics of each embedding dimension
EMBEDDING_STATS: tuple[str, ...] = ("mean", "std", "minimum", "maximum")


@dataclass
class ElementEmbeddings:
    """Named element-vector tables: name -> (symbols, (n_symbols, dim) float array)."""

    tables: dict[str, tuple[list[str], np.ndarray]]

    @classmethod
    def from_file(cls, path: str | Path, names: Sequence[str]) -> ElementEmbeddings:
        """Read vector-valued scales ``names`` from an ElMD scale JSON (optionally gzipped).

        Raises:
            ValueError: a name is missing from the file or is a scalar scale.
        """
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            scales = json.load(fh)
        tables: dict[str, tuple[list[str], np.ndarray]] = {}
        for name in names:
            if name not in scales:
                raise ValueError(f"{path}: no element embedding {name!r} (have {sorted(scales)})")
            rows = {s: v for s, v in scales[name].items() if isinstance(v, list)}
            if not rows:
                raise ValueError(f"{path}: {name!r} is a scalar scale, not an embedding")
            dims = {len(v) for v in rows.values()}
            if len(dims) != 1:
                raise ValueError(f"{path}: {name!r} has vectors of lengths {sorted(dims)}")
            symbols = sorted(rows)
            tables[name] = (symbols, np.asarray([rows[s] for s in symbols], dtype=np.float64))
        return cls(tables)

    def to_dict(self) -> dict[str, Any]:
        """Plain (picklable, JSON-able) form."""
        return {n: {"symbols": list(s), "values": v.tolist()} for n, (s, v) in self.tables.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ElementEmbeddings:
        """Inverse of :meth:`to_dict`."""
        return cls({n: (list(t["symbols"]), np.asarray(t["values"], float)) for n, t in d.items()})

    def names(self) -> list[str]:
        """Embedding names in order."""
        return list(self.tables)


def embedding_features(
    formulas: Sequence[str],
    table: ElementTable,
    embeddings: ElementEmbeddings,
    stats: Sequence[str] = EMBEDDING_STATS,
    dtype: type = np.float32,
) -> tuple[np.ndarray, list[str]]:
    """Per-dimension statistics of the element embeddings of each formula (vectorised).

    Args:
        formulas: chemical formulas (parsed with the element table ``table``, as
            :func:`featurize` parses them; invalid formulas give NaN rows).
        table: the featuriser's element table (defines which formulas are valid).
        embeddings: the vector tables.
        stats: subset of :data:`EMBEDDING_STATS`.
        dtype: float dtype of the matrix.

    Returns:
        ``(X, names)``; X is (n, sum over embeddings of len(stats) * dim).
    """
    unknown = [s for s in stats if s not in EMBEDDING_STATS]
    if unknown:
        raise ValueError(f"unknown embedding statistics {unknown} (allowed: {EMBEDDING_STATS})")
    parsed = parse_formulas(formulas, table)
    rows = np.flatnonzero(parsed.valid)
    starts = parsed.row_ptr[rows]
    rep = np.repeat(np.arange(len(rows)), parsed.n_elements[rows])
    frac = parsed.frac[:, None]
    blocks, names = [], []
    for name, (symbols, vec) in embeddings.tables.items():
        dim = vec.shape[1]
        pos = {s: i for i, s in enumerate(symbols)}
        E = np.full((len(table.symbols), dim), np.nan)
        for s, i in table.index.items():
            if s in pos:
                E[i] = vec[pos[s]]
        names += [f"{name}_{st}_{j}" for st in stats for j in range(dim)]
        if not len(rows):
            continue
        P = E[parsed.elem]  # (nnz, dim)
        mean = np.add.reduceat(frac * P, starts, axis=0)
        got = {"mean": mean}
        if "std" in stats:
            var = np.add.reduceat(frac * (P - mean[rep]) ** 2, starts, axis=0)
            got["std"] = np.sqrt(np.maximum(var, 0.0))
        if "minimum" in stats:
            got["minimum"] = np.minimum.reduceat(P, starts, axis=0)
        if "maximum" in stats:
            got["maximum"] = np.maximum.reduceat(P, starts, axis=0)
        blocks += [got[st] for st in stats]
    X = np.full((len(parsed), len(names)), np.nan, dtype=dtype)
    if len(rows) and blocks:
        X[rows] = np.hstack(blocks)
    return X, names


def featurize_with_embeddings(
    formulas: Sequence[str],
    table: ElementTable,
    embeddings: ElementEmbeddings | None,
    embedding_stats: Sequence[str] = EMBEDDING_STATS,
    **featurize_kwargs: Any,
) -> FeatureSet:
    """:func:`featurize` with the embedding columns appended (unchanged when ``embeddings`` is
    None or empty), so the Magpie-style columns keep their names, order and values."""
    fs = featurize(formulas, table, **featurize_kwargs)
    if embeddings is None or not embeddings.tables:
        return fs
    E, names = embedding_features(fs.formulas, table, embeddings, embedding_stats, fs.X.dtype.type)
    E[~fs.valid] = np.nan
    fs.X = np.hstack([fs.X, E])
    fs.feature_names = list(fs.feature_names) + names
    return fs
