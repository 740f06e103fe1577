"""Training images of the WGAN-GP: encoded store structures of the target system and their
supercells (:class:`TrainingSet`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from matdisco.generate.pointcloud import PointCloudSpec, counts_of, sort_slots, supercells

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = ["TrainingSet", "build_training_set", "training_set_from_store"]


@dataclass
class TrainingSet:
    """Encoded training images.

    Attributes:
        spec: the image layout.
        images: (N, n_rows, 3) float64, atoms sorted within each element block.
        counts: (N, n_elements) atoms per element.
        ids: entry id of each image (supercells get a ``@n1xn2xn3`` suffix).
        n_base: images that are store structures themselves (the first n_base rows).
    """

    spec: PointCloudSpec
    images: np.ndarray
    counts: np.ndarray
    ids: list[str]
    n_base: int

    def masks(self) -> np.ndarray:
        """(N, n_rows) row masks."""
        return (
            np.stack([self.spec.mask(c) for c in self.counts])
            if len(self.counts)
            else np.zeros((0, self.spec.n_rows))
        )

    def fingerprint(self) -> str:
        """SHA-256 (16 hex) of the layout and the images."""
        h = hashlib.sha256()
        h.update(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        h.update(np.ascontiguousarray(self.images.round(8)).tobytes())
        h.update("\n".join(self.ids).encode())
        return h.hexdigest()[:16]


def build_training_set(
    structures: Sequence[Structure],
    ids: Sequence[str],
    elements: Sequence[str],
    *,
    max_sites: int,
    slots: Mapping[str, int] | None = None,
    length_scale: float = 30.0,
    use_supercells: bool = True,
    reduce: bool = True,
) -> TrainingSet:
    """Encode structures (and their supercells) of a chemical system as training images.

    Args:
        structures: candidate training structures (others than ``elements`` are skipped).
        ids: their ids.
        elements: element symbols of the image blocks.
        max_sites: structures (and supercells) with more sites are left out.
        slots: atoms per element block; None = the largest count among the structures kept.
        length_scale: lattice length scale of the images, Angstrom.
        use_supercells: add the diagonal supercells that fit the slots and ``max_sites``.
        reduce: Niggli-reduce each cell first.
    """
    kept: list[tuple[str, Structure, tuple[int, ...]]] = []
    for sid, s in zip(ids, structures, strict=True):
        counts = counts_of(s, elements)
        if counts is None or len(s) > max_sites:
            continue
        if reduce:
            s = s.get_reduced_structure()
        kept.append((sid, s, counts))
    if slots is None:
        slot_t = tuple(max([1] + [c[i] for _, _, c in kept]) for i in range(len(elements)))
    else:
        missing = set(elements) - set(slots)
        if missing:
            raise ValueError(f"slots missing for {sorted(missing)}")
        slot_t = tuple(int(slots[e]) for e in elements)
    spec = PointCloudSpec(tuple(elements), slot_t, length_scale=length_scale)
    kept = [k for k in kept if spec.fits(k[2])]
    rows: list[tuple[str, Structure]] = [(sid, s) for sid, s, _ in kept]
    n_base = len(rows)
    if use_supercells:
        for sid, s, _ in kept:
            for n, sc in supercells(s, spec, max_sites):
                rows.append((f"{sid}@{n[0]}x{n[1]}x{n[2]}", sc))
    images = np.stack([spec.encode(s) for _, s in rows]) if rows else np.zeros((0, spec.n_rows, 3))
    counts = np.array([counts_of(s, elements) for _, s in rows], dtype=np.int64).reshape(
        -1, len(elements)
    )
    masks = np.stack([spec.mask(c) for c in counts]) if len(counts) else np.zeros((0, spec.n_rows))
    images = sort_slots(images, masks, spec)
    return TrainingSet(spec, images, counts, [r[0] for r in rows], n_base)


def training_set_from_store(
    store: str | Path,
    elements: Sequence[str],
    *,
    max_sites: int,
    slots: Mapping[str, int] | None = None,
    length_scale: float = 30.0,
    use_supercells: bool = True,
) -> TrainingSet:
    """Training images from the store entries whose chemical system lies within ``elements``."""
    from matdisco.store import read_entries, read_structure_arrays

    entries = read_entries(store, ["id", "chemsys", "nsites"])
    allowed = set(elements)
    sel = np.flatnonzero(
        entries["chemsys"].map(lambda c: set(str(c).split("-")) <= allowed).to_numpy()
        & (entries["nsites"].to_numpy() <= max_sites)
    )
    structures = read_structure_arrays(store, sel).structures()
    return build_training_set(
        structures,
        entries["id"].iloc[sel].tolist(),
        elements,
        max_sites=max_sites,
        slots=slots,
        length_scale=length_scale,
        use_supercells=use_supercells,
    )
