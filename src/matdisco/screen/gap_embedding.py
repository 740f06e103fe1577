"""CHGNet structure embedding: learned per-structure features for the band-gap surrogate.

The relaxation model already encodes each atom's chemical environment. This module turns a
structure into ``2 x 64`` numbers: the mean and the maximum over its atoms of CHGNet's atom
features (the 64-dimensional features before its last interaction block, which also feed its
magnetic-moment head; ``CHGNet.forward(..., return_atom_feas=True)``, energy-only pass, no
forces). The values are rounded to float16 (the bundled file's precision) whatever their
origin, so that training rows and candidates see the same resolution.

The weights are the CHGNet 0.3.0 weights shipped in the ``chgnet`` wheel (no download), the
same model as the default relax backend; the embedding does not depend on which backend
relaxed a candidate (it is a featuriser here, not an energy).

Computing the embedding of the bundled store (36,715 MP structures) takes ~20-30 min on 2 CPU
cores, so the result ships as ``resources/bundled/chgnet_embeddings_mp2018.h5``
(``scripts/chgnet_embeddings.py`` rebuilds it). :func:`embed_store` reuses a row of such a file
only when both the entry id and a hash of the structure's arrays (:func:`structure_keys`) match,
and computes the others (a store from the Materials Project API or a CIF folder).

File format (HDF5, ``format = matdisco.chgnet_embedding/1``): ``ids`` (str), ``keys`` (str,
:func:`structure_keys`), ``X`` (float16, n x 128), ``ok`` (bool: False where CHGNet could not
build the structure's graph, X is NaN there), ``reason`` (str); attributes ``model``,
``chgnet_version``, ``columns`` (JSON list), ``n_reused``, ``n_computed``, ``created_utc``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from matdisco.store import StructureArrays

__all__ = [
    "EMBEDDING_DIM",
    "EMBEDDING_FORMAT",
    "MODEL_NAME",
    "StructureEmbedding",
    "compute_embeddings",
    "embed_store",
    "embedding_columns",
    "read_embedding_file",
    "read_store_embedding",
    "structure_keys",
    "write_embedding_file",
]

log = logging.getLogger("matdisco.screen")

EMBEDDING_FORMAT = "matdisco.chgnet_embedding/1"
#: the CHGNet weights of the embedding (shipped in the chgnet wheel)
MODEL_NAME = "0.3.0"
#: width of CHGNet 0.3.0's atom features
EMBEDDING_DIM = 64
#: structures per CHGNet forward pass
BATCH_SIZE = 64


def embedding_columns() -> list[str]:
    """Column names: ``chgnet_mean_<i>`` then ``chgnet_max_<i>``."""
    return [f"chgnet_{s}_{i}" for s in ("mean", "max") for i in range(EMBEDDING_DIM)]


#: resolution of the structure hash: lattice vectors (Å) and fractional coordinates
KEY_RESOLUTION = (1e-4, 1e-5)
_KEY_OFFSET = 1.0 / np.pi


def structure_keys(arrays: StructureArrays) -> list[str]:
    """A hash per structure of its species, lattice (to 1e-4 Å) and fractional coordinates
    (to 1e-5).

    Two structures with the same key give the same embedding (to float16 precision); a reused
    file row is trusted only when its key matches. The resolution is far below any structural
    difference and far above float noise: the store build changes some lattice vectors by
    ~1e-8 Å and coordinates by ~1e-16, which plain rounding at 1e-6 (or at 1e-4 / 1e-5, where
    six-decimal CIF values sit exactly on half-way points) turned into 19 (or 605) spurious
    mismatches of the 36,715 bundled entries; the bins are therefore offset.
    """
    keys = []
    for i in range(len(arrays)):
        a, b = arrays.site_offset[i], arrays.site_offset[i + 1]
        h = hashlib.sha1()
        h.update(np.asarray(arrays.species_z[a:b], dtype=np.int64).tobytes())
        for values, res in zip(
            (arrays.lattice[i], arrays.frac_coords[a:b]), KEY_RESOLUTION, strict=True
        ):
            # bins offset by 1/π of a bin: values written with few decimals (CIF data) never
            # sit on a bin edge, where float noise of 1e-16 would flip them
            cells = np.floor(np.asarray(values, float) / res + _KEY_OFFSET)
            h.update(cells.astype(np.int64).tobytes())
        keys.append(h.hexdigest()[:20])
    return keys


@dataclass
class StructureEmbedding:
    """Embeddings of a list of structures.

    Attributes:
        X: (n, 128) float32 (float16 values); NaN rows where ``ok`` is False.
        ok: CHGNet built the structure's graph.
        reasons: '' or why a row failed.
    """

    X: np.ndarray
    ok: np.ndarray
    reasons: list[str]


def _load_model(model: Any = None) -> Any:
    if model is not None:
        return model
    from chgnet.model import CHGNet

    return CHGNet.load(model_name=MODEL_NAME, use_device="cpu", verbose=False)


def compute_embeddings(
    arrays: StructureArrays,
    *,
    model: Any = None,
    batch_size: int = BATCH_SIZE,
    threads: int | None = None,
) -> StructureEmbedding:
    """CHGNet embeddings of every structure (see the module docstring).

    Args:
        arrays: the structures.
        model: a loaded ``chgnet.model.CHGNet`` (None = load the 0.3.0 weights of the wheel).
        batch_size: structures per forward pass.
        threads: torch CPU threads for the call (None = leave torch's setting).

    A structure whose graph CHGNet cannot build (e.g. an isolated atom beyond its cutoff) gets
    a NaN row and a reason; it never stops the others.
    """
    import torch

    n = len(arrays)
    X = np.full((n, 2 * EMBEDDING_DIM), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    reasons = [""] * n
    if n == 0:
        return StructureEmbedding(X, ok, reasons)
    net = _load_model(model)
    net.eval()
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            rows, graphs = [], []
            for i in range(start, min(n, start + batch_size)):
                try:
                    graph = net.graph_converter(arrays.structure(i))
                except Exception as err:  # noqa: BLE001 - one structure, recorded
                    reasons[i] = f"chgnet graph: {type(err).__name__}: {err}"[:200]
                    continue
                rows.append(i)
                graphs.append(graph)
            if not graphs:
                continue
            with torch.no_grad():
                pred = net.forward(graphs, task="e", return_atom_feas=True)
            for i, feas in zip(rows, pred["atom_fea"], strict=True):
                f = feas.detach().numpy()
                X[i, :EMBEDDING_DIM] = f.mean(axis=0)
                X[i, EMBEDDING_DIM:] = f.max(axis=0)
                ok[i] = True
            done = min(n, start + batch_size)
            if n > 20 * batch_size and (start // batch_size) % 20 == 19:
                log.info(
                    "CHGNet embeddings: %d / %d structures, %.0f s",
                    done,
                    n,
                    time.perf_counter() - t0,
                )
    finally:
        if threads:
            torch.set_num_threads(old_threads)
    X = X.astype(np.float16).astype(np.float32)
    log.info(
        "CHGNet embeddings of %d structures (%d failed) in %.1f s",
        n,
        int((~ok).sum()),
        time.perf_counter() - t0,
    )
    return StructureEmbedding(X, ok, reasons)


def write_embedding_file(
    path: str | Path,
    ids: Sequence[str],
    keys: Sequence[str],
    emb: StructureEmbedding,
    **attrs: Any,
) -> None:
    """Write an embedding file (format in the module docstring), atomically."""
    import h5py

    from matdisco.provenance import package_versions
    from matdisco.store import atomic_write

    chgnet_version = package_versions(["chgnet"]).get("chgnet", "unknown")
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = EMBEDDING_FORMAT
        h5.attrs["model"] = f"CHGNet {MODEL_NAME} (weights of the chgnet wheel)"
        h5.attrs["chgnet_version"] = chgnet_version
        h5.attrs["columns"] = json.dumps(embedding_columns())
        h5.attrs["created_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
        for k, v in attrs.items():
            h5.attrs[k] = v
        str_dt = h5py.string_dtype()
        h5.create_dataset("ids", data=np.asarray(list(ids), dtype=object), dtype=str_dt)
        h5.create_dataset("keys", data=np.asarray(list(keys), dtype=object), dtype=str_dt)
        h5.create_dataset("reason", data=np.asarray(emb.reasons, dtype=object), dtype=str_dt)
        h5.create_dataset("ok", data=emb.ok)
        h5.create_dataset(
            "X",
            data=emb.X.astype(np.float16),
            compression="gzip",
            compression_opts=9,
            shuffle=True,
        )


def read_embedding_file(path: str | Path) -> tuple[list[str], list[str], StructureEmbedding]:
    """(ids, keys, embedding) of an embedding file."""
    import h5py

    with h5py.File(path, "r") as h5:
        if h5.attrs.get("format") != EMBEDDING_FORMAT:
            raise ValueError(f"{path}: not a matdisco CHGNet embedding file ({EMBEDDING_FORMAT})")
        ids = list(h5["ids"].asstr()[()])
        keys = list(h5["keys"].asstr()[()])
        reasons = list(h5["reason"].asstr()[()])
        emb = StructureEmbedding(h5["X"][()].astype(np.float32), h5["ok"][()].astype(bool), reasons)
    return ids, keys, emb


def read_store_embedding(path: str | Path, ids: Sequence[str]) -> np.ndarray:
    """The (n, 128) embedding rows of an embedding file whose ids are exactly ``ids`` (in order).

    Raises:
        ValueError: the file was made for another store.
    """
    file_ids, _, emb = read_embedding_file(path)
    if file_ids != [str(i) for i in ids]:
        raise ValueError(f"{path}: its ids are not those of the store")
    return emb.X


def embed_store(
    store: str | Path,
    out: str | Path,
    *,
    reuse: str | Path | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Embedding file of every structure of an entry store, in store order.

    Rows of ``reuse`` (an embedding file) whose id *and* structure key match are copied; the
    rest are computed with CHGNet. Returns a summary (counts, seconds).
    """
    from matdisco.store import read_entries, read_structure_arrays

    t0 = time.perf_counter()
    ids = read_entries(store, ["id"])["id"].astype(str).tolist()
    arrays = read_structure_arrays(store)
    keys = structure_keys(arrays)
    n = len(ids)
    X = np.full((n, 2 * EMBEDDING_DIM), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    reasons = [""] * n
    have = np.zeros(n, dtype=bool)
    if reuse is not None and Path(reuse).exists():
        rids, rkeys, remb = read_embedding_file(reuse)
        pos = {(i, k): j for j, (i, k) in enumerate(zip(rids, rkeys, strict=True))}
        for r, (i, k) in enumerate(zip(ids, keys, strict=True)):
            j = pos.get((i, k))
            if j is not None:
                X[r], ok[r], reasons[r], have[r] = remb.X[j], remb.ok[j], remb.reasons[j], True
    elif reuse is not None:
        raise FileNotFoundError(f"embedding file to reuse not found: {reuse}")
    todo = np.flatnonzero(~have)
    if len(todo):
        log.info("computing CHGNet embeddings of %d of %d store structures", len(todo), n)
        emb = compute_embeddings(arrays.take(todo), threads=threads)
        X[todo], ok[todo] = emb.X, emb.ok
        for r, why in zip(todo, emb.reasons, strict=True):
            reasons[r] = why
    summary = {
        "n": n,
        "n_reused": int(have.sum()),
        "n_computed": len(todo),
        "n_failed": int((~ok).sum()),
        "reused_from": str(reuse) if reuse is not None else "",
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_embedding_file(
        out,
        ids,
        keys,
        StructureEmbedding(X, ok, reasons),
        n_reused=summary["n_reused"],
        n_computed=summary["n_computed"],
        reused_from=summary["reused_from"],
    )
    log.info(
        "store embeddings: %d reused, %d computed, %d failed (%.1f s)",
        summary["n_reused"],
        summary["n_computed"],
        summary["n_failed"],
        summary["seconds"],
    )
    return summary
