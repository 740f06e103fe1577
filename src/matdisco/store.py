"""The normalised entry store (HDF5, h5py): the contract every stage reads.

Layout of ``entries.h5`` (schema version 1; documented in docs/store.md):

``/entries``  one dataset per column, all of length N (row i is entry i):
    id, source, formula (reduced), composition (cell formula), chemsys, nelements, nsites,
    energy_per_atom, formation_energy_per_atom, e_above_hull, e_above_hull_method, band_gap,
    is_experimental (1 yes, 0 no, -1 unknown), has_partial_occupancy, duplicate_ids
    (';'-joined ids merged into this entry), source_file, source_hash
``/structures`` ordered crystal structures as ragged arrays:
    lattice (N,3,3) Angstrom; site_offset (N+1,) so that entry i owns sites
    site_offset[i]:site_offset[i+1]; species_z (M,) atomic numbers; frac_coords (M,3)
``/labels``   formula-level labels for the classifier: formula, e_above_hull, source
root attributes: schema_version, matdisco_version, created_utc, data_source, provenance (JSON)

Files are written to a temporary name and renamed, so a failed or killed write never
leaves a partial store behind.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "SCHEMA_VERSION",
    "ENTRY_COLUMNS",
    "StructureArrays",
    "write_store",
    "read_entries",
    "read_labels",
    "read_structures",
    "read_structure_arrays",
    "read_attrs",
    "atomic_write",
    "json_safe",
]

SCHEMA_VERSION = 1

#: column name -> (kind, description). kind: str | int | float | bool
ENTRY_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("str", "entry id (mp-..., cif-<file stem>, ...), unique in the store"),
    "source": ("str", "bundled | mp | cif_dir"),
    "formula": ("str", "reduced formula (pymatgen)"),
    "composition": ("str", "formula of the stored cell, e.g. 'Mg2 Mn4 O8'"),
    "chemsys": ("str", "sorted element symbols joined by '-'"),
    "nelements": ("int", "number of distinct elements"),
    "nsites": ("int", "number of sites in the stored cell"),
    "energy_per_atom": ("float", "total energy per atom, eV/atom (NaN when unknown)"),
    "formation_energy_per_atom": ("float", "formation energy per atom, eV/atom (NaN when unknown)"),
    "e_above_hull": ("float", "energy above the convex hull, eV/atom (NaN when unknown)"),
    "e_above_hull_method": ("str", "how e_above_hull was obtained ('' when unknown)"),
    "band_gap": ("float", "PBE band gap, eV (NaN when unknown)"),
    "is_experimental": ("int", "1 experimentally reported (ICSD/COD), 0 hypothetical, -1 unknown"),
    "has_partial_occupancy": ("bool", "source structure had partial occupancy (never stored)"),
    "duplicate_ids": ("str", "';'-joined ids of duplicates merged into this entry"),
    "source_file": ("str", "file the entry came from"),
    "source_hash": ("str", "SHA-256 of that file"),
}


@dataclass
class StructureArrays:
    """Ordered crystal structures as flat arrays (cheap to store and to slice)."""

    lattice: np.ndarray  # (N, 3, 3)
    site_offset: np.ndarray  # (N + 1,)
    species_z: np.ndarray  # (M,)
    frac_coords: np.ndarray  # (M, 3)

    def __len__(self) -> int:
        return len(self.lattice)

    @classmethod
    def from_structures(cls, structures: Sequence[Structure]) -> StructureArrays:
        """Pack ordered pymatgen structures."""
        n = len(structures)
        lattice = np.zeros((n, 3, 3))
        counts = np.zeros(n, dtype=np.int64)
        zs: list[np.ndarray] = []
        fcs: list[np.ndarray] = []
        for i, s in enumerate(structures):
            if not s.is_ordered:
                raise ValueError(f"structure {i} ({s.composition.reduced_formula}) is disordered")
            lattice[i] = s.lattice.matrix
            counts[i] = len(s)
            zs.append(np.array([site.specie.Z for site in s], dtype=np.int16))
            fcs.append(np.asarray(s.frac_coords, dtype=np.float64))
        offset = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        species = np.concatenate(zs) if zs else np.zeros(0, dtype=np.int16)
        frac = np.concatenate(fcs) if fcs else np.zeros((0, 3))
        return cls(lattice, offset, species, frac)

    def take(self, index: Sequence[int] | np.ndarray) -> StructureArrays:
        """A new StructureArrays with the rows in ``index`` (in that order)."""
        index = np.asarray(index, dtype=np.int64)
        starts, stops = self.site_offset[index], self.site_offset[index + 1]
        counts = stops - starts
        if len(index):
            sel = np.concatenate([np.arange(a, b) for a, b in zip(starts, stops, strict=True)])
        else:
            sel = np.zeros(0, dtype=np.int64)
        offset = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return StructureArrays(
            self.lattice[index], offset, self.species_z[sel], self.frac_coords[sel]
        )

    def structure(self, i: int) -> Structure:
        """Row ``i`` as a pymatgen Structure."""
        from pymatgen.core import Lattice, Structure

        a, b = self.site_offset[i], self.site_offset[i + 1]
        return Structure(
            Lattice(self.lattice[i]),
            [int(z) for z in self.species_z[a:b]],
            self.frac_coords[a:b],
        )

    def structures(self) -> list[Structure]:
        """All rows as pymatgen Structures."""
        return [self.structure(i) for i in range(len(self))]

    @classmethod
    def concat(cls, parts: Iterable[StructureArrays]) -> StructureArrays:
        """Concatenate several StructureArrays."""
        parts = list(parts)
        if not parts:
            return cls(
                np.zeros((0, 3, 3)),
                np.zeros(1, dtype=np.int64),
                np.zeros(0, np.int16),
                np.zeros((0, 3)),
            )
        offsets = [parts[0].site_offset]
        base = parts[0].site_offset[-1]
        for p in parts[1:]:
            offsets.append(p.site_offset[1:] + base)
            base += p.site_offset[-1]
        return cls(
            np.concatenate([p.lattice for p in parts]),
            np.concatenate(offsets).astype(np.int64),
            np.concatenate([p.species_z for p in parts]).astype(np.int16),
            np.concatenate([p.frac_coords for p in parts]),
        )


def json_safe(v: Any) -> Any:
    """``v`` with plain JSON values: NaN/inf -> None, numpy scalars -> Python, tuples -> lists,
    dict keys -> str (recursively), for ``json.dumps`` without ``allow_nan``."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    return v


def atomic_write(path: str | Path, suffix: str = ".tmp"):
    """Context manager yielding a temporary path that is renamed to ``path`` on success."""
    from contextlib import contextmanager

    @contextmanager
    def _cm():
        path_ = Path(path)
        path_.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path_.name}.", suffix=suffix, dir=path_.parent)
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path_)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    return _cm()


def _extra_kind(col: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(col):
        return "bool"
    if pd.api.types.is_integer_dtype(col):
        return "int"
    if pd.api.types.is_float_dtype(col):
        return "float"
    return "str"


def _coerce(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in ENTRY_COLUMNS if c not in df.columns]
    defaults = {"str": "", "int": -1, "float": np.nan, "bool": False}
    df = df.copy()
    for c in missing:
        df[c] = defaults[ENTRY_COLUMNS[c][0]]
    out = {}
    kinds = {c: k for c, (k, _) in ENTRY_COLUMNS.items()}
    kinds.update({c: _extra_kind(df[c]) for c in df.columns if c not in ENTRY_COLUMNS})
    for c, kind in kinds.items():
        col = df[c]
        if kind == "str":
            out[c] = col.fillna("").astype(str).to_numpy(dtype=object)
        elif kind == "int":
            out[c] = col.fillna(-1).astype(np.int64).to_numpy()
        elif kind == "float":
            out[c] = col.astype(np.float64).to_numpy()
        else:
            out[c] = col.fillna(False).astype(bool).to_numpy()
    return pd.DataFrame(out)


def _strings(group: h5py.Group, name: str, values: np.ndarray) -> h5py.Dataset:
    """Fixed-length UTF-8 strings (variable-length ones would bypass compression)."""
    encoded = [str(v).encode("utf-8") for v in values]
    width = max((len(b) for b in encoded), default=1) or 1
    data = np.array(encoded, dtype=f"S{width}")
    kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if len(data) else {}
    ds = group.create_dataset(name, shape=data.shape, dtype=h5py.string_dtype("utf-8", width), **kw)
    if len(data):
        ds.id.write(h5py.h5s.ALL, h5py.h5s.ALL, data, mtype=ds.id.get_type())
    return ds


def _numbers(
    group: h5py.Group, name: str, values: np.ndarray, decimals: int | None = None
) -> h5py.Dataset:
    kw: dict[str, Any] = {}
    if len(values):
        kw = {"compression": "gzip", "compression_opts": 4}
        if decimals is not None and np.isfinite(values).all():
            kw["scaleoffset"] = decimals
        else:
            kw["shuffle"] = True
    return group.create_dataset(name, data=values, **kw)


def write_store(
    path: str | Path,
    entries: pd.DataFrame,
    structures: StructureArrays,
    labels: pd.DataFrame | None = None,
    *,
    data_source: str,
    provenance: dict[str, Any],
) -> None:
    """Write a store atomically.

    Args:
        path: output ``.h5`` file.
        entries: one row per entry; columns from :data:`ENTRY_COLUMNS` (missing ones are
            filled with their "unknown" value). Extra columns (e.g. a generator's template id)
            are stored too, as str, int, float or bool by their pandas dtype.
        structures: the entries' structures, row-aligned with ``entries``.
        labels: optional formula-level labels (formula, e_above_hull, source).
        data_source: the configured data source.
        provenance: JSON-serialisable description of where the data came from.
    """
    from matdisco import __version__

    if len(entries) != len(structures):
        raise ValueError(f"{len(entries)} entries but {len(structures)} structures")
    entries = _coerce(entries)
    if entries["id"].duplicated().any():
        dup = entries.loc[entries["id"].duplicated(), "id"].tolist()[:5]
        raise ValueError(f"duplicate entry ids, e.g. {dup}")
    with atomic_write(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["schema_version"] = SCHEMA_VERSION
        h5.attrs["matdisco_version"] = __version__
        h5.attrs["created_utc"] = datetime.now(UTC).isoformat(timespec="seconds")
        h5.attrs["data_source"] = data_source
        h5.attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
        g = h5.create_group("entries")
        for c in entries.columns:
            kind, desc = ENTRY_COLUMNS.get(c, (_extra_kind(entries[c]), "stage-specific column"))
            values = entries[c].to_numpy()
            ds = _strings(g, c, values) if kind == "str" else _numbers(g, c, values)
            ds.attrs["description"] = desc
        s = h5.create_group("structures")
        # coordinates and cells are stored to 1e-8 (fractional / Angstrom): the HDF5
        # scale-offset filter keeps 8 decimals, as many as the bundled CIFs carry
        _numbers(s, "lattice", structures.lattice, decimals=8)
        _numbers(s, "site_offset", structures.site_offset)
        _numbers(s, "species_z", structures.species_z.astype(np.int16))
        _numbers(s, "frac_coords", structures.frac_coords, decimals=8)
        s["lattice"].attrs["unit"] = "Angstrom"
        if labels is not None:
            lg = h5.create_group("labels")
            _strings(lg, "formula", labels["formula"].astype(str).to_numpy())
            _numbers(lg, "e_above_hull", labels["e_above_hull"].astype(float).to_numpy())
            _strings(lg, "source", labels["source"].astype(str).to_numpy())
            lg["e_above_hull"].attrs["unit"] = "eV/atom"


def _check_version(h5: h5py.File, path: str | Path) -> None:
    version = int(h5.attrs.get("schema_version", -1))
    if version != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: store schema version {version}, this matdisco reads {SCHEMA_VERSION}"
        )


def read_entries(path: str | Path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read the entry table (all or selected columns)."""
    with h5py.File(path, "r") as h5:
        _check_version(h5, path)
        g = h5["entries"]
        cols = list(columns) if columns is not None else list(g.keys())
        data = {}
        for c in cols:
            ds = g[c]
            data[c] = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) else ds[()]
    order = [c for c in ENTRY_COLUMNS if c in data] + [c for c in data if c not in ENTRY_COLUMNS]
    return pd.DataFrame(data)[order]


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read the formula-level labels table (empty frame when the store has none)."""
    with h5py.File(path, "r") as h5:
        _check_version(h5, path)
        if "labels" not in h5:
            return pd.DataFrame({"formula": [], "e_above_hull": [], "source": []})
        g = h5["labels"]
        return pd.DataFrame(
            {
                "formula": g["formula"].asstr()[()],
                "e_above_hull": g["e_above_hull"][()],
                "source": g["source"].asstr()[()],
            }
        )


def read_structure_arrays(
    path: str | Path, index: Sequence[int] | np.ndarray | None = None
) -> StructureArrays:
    """Read the structures (all, or the rows in ``index``) as flat arrays."""
    with h5py.File(path, "r") as h5:
        _check_version(h5, path)
        s = h5["structures"]
        arrays = StructureArrays(
            s["lattice"][()], s["site_offset"][()], s["species_z"][()], s["frac_coords"][()]
        )
    return arrays if index is None else arrays.take(index)


def read_structures(path: str | Path, ids: Sequence[str] | None = None) -> list[Structure]:
    """Read structures as pymatgen objects, all or those of the given entry ids (in that order)."""
    if ids is None:
        return read_structure_arrays(path).structures()
    all_ids = read_entries(path, ["id"])["id"]
    pos = pd.Series(np.arange(len(all_ids)), index=all_ids)
    unknown = [i for i in ids if i not in pos.index]
    if unknown:
        raise KeyError(f"ids not in store: {unknown[:5]}")
    return read_structure_arrays(path, pos.loc[list(ids)].to_numpy()).structures()


def read_attrs(path: str | Path) -> dict[str, Any]:
    """Root attributes, with the provenance JSON decoded."""
    with h5py.File(path, "r") as h5:
        attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in h5.attrs.items()}
    if "provenance" in attrs:
        attrs["provenance"] = json.loads(attrs["provenance"])
    return attrs
