"""Point-cloud crystal representation of the composition-conditioned WGAN-GP (Kim et al. 2020).

A crystal is an image of ``2 + sum(slots)`` rows by 3 columns (Kim, Noh, Gu, Aspuru-Guzik,
Jung, ACS Cent. Sci. 6, 1412 (2020)):

* row 0: lattice lengths a, b, c divided by ``length_scale`` (Angstrom; the paper uses 30 Å);
* row 1: lattice angles alpha, beta, gamma divided by ``angle_scale`` (180 degrees);
* then one block of rows per element (in ``elements`` order), ``slots[i]`` rows for element i:
  the fractional coordinates of that element's atoms, mapped as ``(frac * 10 + 2.5) / 15`` so
  an atom lies in [1/6, 5/6) per coordinate; unused rows are all zero (padding). An atom at the
  origin is therefore (1/6, 1/6, 1/6), never confused with padding.

Encoding then decoding is exact up to float rounding (the structure is rebuilt from its lattice
parameters, i.e. in a standard orientation). :func:`PointCloudSpec.decode` either trusts a given
composition (the occupied slots) or, like the paper, keeps the rows whose coordinate sum exceeds
``threshold`` (0.4).

Also here: data augmentation on images (random translation, cyclic axis permutation) and on
structures (supercells within the slot limits), and the structure validity checks used on
generated samples (interatomic distances, composition, lattice).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matdisco.settings import GANValiditySettings

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "COORD_SCALE",
    "COORD_OFFSET",
    "COORD_DIV",
    "PointCloudSpec",
    "encode_frac",
    "decode_frac",
    "counts_of",
    "supercells",
    "translate",
    "permute_axes",
    "sort_slots",
    "augment",
    "ValiditySettings",
    "check_validity",
    "min_distances",
]

COORD_SCALE = 10.0
COORD_OFFSET = 2.5
COORD_DIV = 15.0
_LO = COORD_OFFSET / COORD_DIV  # 1/6: encoded value of fractional coordinate 0
_SPAN = COORD_SCALE / COORD_DIV  # 2/3: encoded width of one unit of fractional coordinate


def encode_frac(frac: np.ndarray) -> np.ndarray:
    """Fractional coordinates (wrapped into [0, 1)) -> image values in [1/6, 5/6)."""
    frac = np.mod(np.asarray(frac, dtype=np.float64), 1.0)
    frac = np.where(frac >= 1.0, 0.0, frac)  # np.mod(-1e-17, 1) == 1.0
    return (frac * COORD_SCALE + COORD_OFFSET) / COORD_DIV


def decode_frac(values: np.ndarray) -> np.ndarray:
    """Image values -> fractional coordinates wrapped into [0, 1)."""
    frac = np.mod(
        (np.asarray(values, dtype=np.float64) * COORD_DIV - COORD_OFFSET) / COORD_SCALE, 1.0
    )
    return np.where(frac >= 1.0, 0.0, frac)


def counts_of(structure: Structure, elements: Sequence[str]) -> tuple[int, ...] | None:
    """Atoms per element of a structure in ``elements`` order (None if it has other elements)."""
    amounts = {
        el.symbol: int(round(n)) for el, n in structure.composition.element_composition.items()
    }
    if set(amounts) - set(elements):
        return None
    return tuple(amounts.get(e, 0) for e in elements)


@dataclass(frozen=True)
class PointCloudSpec:
    """Layout of the point-cloud image.

    Attributes:
        elements: element symbols, one slot block each, in this order.
        slots: the largest number of atoms of each element (rows of its block).
        length_scale: lattice lengths are divided by this, Angstrom.
        angle_scale: lattice angles are divided by this, degrees.
        threshold: a row counts as an atom when its coordinate sum exceeds this (paper: 0.4);
            used only when decoding without a known composition.
    """

    elements: tuple[str, ...]
    slots: tuple[int, ...]
    length_scale: float = 30.0
    angle_scale: float = 180.0
    threshold: float = 0.4
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # noqa: D105
        object.__setattr__(self, "elements", tuple(self.elements))
        object.__setattr__(self, "slots", tuple(int(s) for s in self.slots))
        if len(self.elements) != len(self.slots) or not self.elements:
            raise ValueError("elements and slots must be non-empty and of equal length")
        if len(set(self.elements)) != len(self.elements):
            raise ValueError(f"repeated element in {self.elements}")
        if min(self.slots) < 1:
            raise ValueError(f"every element needs at least one slot: {self.slots}")
        starts = 2 + np.concatenate([[0], np.cumsum(self.slots)[:-1]])
        object.__setattr__(self, "_starts", tuple(int(s) for s in starts))

    # -- layout -----------------------------------------------------------------------------
    @property
    def n_slots(self) -> int:
        """Atom rows in total."""
        return int(sum(self.slots))

    @property
    def n_rows(self) -> int:
        """Rows of the image (2 lattice rows + atom rows)."""
        return 2 + self.n_slots

    def block(self, i: int) -> slice:
        """Rows of element ``i``."""
        return slice(self._starts[i], self._starts[i] + self.slots[i])

    def fits(self, counts: Sequence[int]) -> bool:
        """Whether a composition (atoms per element) fits the slots and has atoms."""
        return (
            len(counts) == len(self.slots)
            and sum(counts) > 0
            and all(0 <= c <= s for c, s in zip(counts, self.slots, strict=True))
        )

    def mask(self, counts: Sequence[int]) -> np.ndarray:
        """(n_rows,) float mask: 1 on the lattice rows and the first ``counts[i]`` rows of block i.

        Args:
            counts: atoms per element.
        """
        m = np.zeros(self.n_rows)
        m[:2] = 1.0
        for i, c in enumerate(counts):
            m[self._starts[i] : self._starts[i] + int(c)] = 1.0
        return m

    def slot_species(self) -> list[str]:
        """Element symbol of every atom row."""
        return [e for e, s in zip(self.elements, self.slots, strict=True) for _ in range(s)]

    def counts_from_mask(self, mask: np.ndarray) -> tuple[int, ...]:
        """Atoms per element of a row mask (inverse of :meth:`mask`)."""
        mask = np.asarray(mask)
        return tuple(int(mask[self.block(i)].sum()) for i in range(len(self.elements)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = asdict(self)
        d.pop("_starts", None)
        d["elements"] = list(self.elements)
        d["slots"] = list(self.slots)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PointCloudSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: v for k, v in d.items() if k != "_starts"})

    # -- encode / decode --------------------------------------------------------------------
    def encode(self, structure: Structure) -> np.ndarray:
        """A structure -> (n_rows, 3) image; raises ValueError if it does not fit the slots."""
        counts = counts_of(structure, self.elements)
        if counts is None or not self.fits(counts):
            raise ValueError(
                f"{structure.composition.formula} does not fit slots "
                f"{dict(zip(self.elements, self.slots, strict=True))}"
            )
        img = np.zeros((self.n_rows, 3))
        lat = structure.lattice
        img[0] = np.array(lat.abc) / self.length_scale
        img[1] = np.array(lat.angles) / self.angle_scale
        frac = np.asarray(structure.frac_coords)
        symbols = np.array([site.specie.symbol for site in structure])
        for i, el in enumerate(self.elements):
            rows = frac[symbols == el]
            start = self._starts[i]
            img[start : start + len(rows)] = encode_frac(rows)
        return img

    def lattice_parameters(self, image: np.ndarray) -> np.ndarray:
        """(a, b, c, alpha, beta, gamma) of an image, Angstrom and degrees."""
        image = np.asarray(image, dtype=np.float64)
        return np.concatenate([image[0] * self.length_scale, image[1] * self.angle_scale])

    def occupied(self, image: np.ndarray, counts: Sequence[int] | None = None) -> np.ndarray:
        """Boolean (n_slots,) atom rows: the first counts[i] per block, or the paper's threshold."""
        if counts is not None:
            return self.mask(counts)[2:] > 0.5
        return np.asarray(image)[2:].sum(axis=1) > self.threshold

    def decode(self, image: np.ndarray, counts: Sequence[int] | None = None) -> Structure:
        """An image -> pymatgen Structure.

        Args:
            image: (n_rows, 3) array.
            counts: atoms per element; when given, the first ``counts[i]`` rows of each block are
                the atoms (composition by construction); when None, rows whose coordinate sum
                exceeds ``threshold`` are atoms (the paper's rule).

        Raises:
            ValueError: on a lattice that cannot exist (non-finite or non-positive volume) or
                when no row is an atom.
        """
        from pymatgen.core import Lattice, Structure

        image = np.asarray(image, dtype=np.float64)
        a, b, c, al, be, ga = self.lattice_parameters(image)
        lattice = Lattice.from_parameters(a, b, c, al, be, ga)
        if not np.isfinite(lattice.matrix).all() or not lattice.volume > 0:
            raise ValueError(f"degenerate lattice {(a, b, c, al, be, ga)}")
        occ = self.occupied(image, counts)
        if not occ.any():
            raise ValueError("no atoms in image")
        species = np.array(self.slot_species())[occ]
        frac = decode_frac(image[2:][occ])
        return Structure(lattice, list(species), frac)


# -- augmentation ---------------------------------------------------------------------------
def supercells(
    structure: Structure, spec: PointCloudSpec, max_sites: int | None = None
) -> list[tuple[tuple[int, int, int], Structure]]:
    """Diagonal supercells (n1 x n2 x n3, not 1x1x1) of a structure that still fit the slots.

    Args:
        structure: the unit cell.
        spec: slot layout (limits the counts per element).
        max_sites: also keep the supercell at or below this many sites.

    Returns:
        (multipliers, supercell) pairs, in lexicographic order of the multipliers.
    """
    counts = counts_of(structure, spec.elements)
    if counts is None:
        return []
    out = []
    limit = max(spec.slots)
    for n in itertools.product(range(1, limit + 1), repeat=3):
        k = n[0] * n[1] * n[2]
        if k == 1:
            continue
        if not spec.fits([c * k for c in counts]) or (
            max_sites is not None and len(structure) * k > max_sites
        ):
            continue
        out.append((n, structure.make_supercell(list(n), in_place=False)))
    return out


def translate(images: np.ndarray, masks: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift every atom of each image by a fractional vector (periodic), leaving padding zero.

    Args:
        images: (B, n_rows, 3).
        masks: (B, n_rows) row masks (1 = lattice or atom row).
        shifts: (B, 3) fractional shifts.
    """
    out = np.array(images, dtype=np.float64, copy=True)
    atoms = np.asarray(masks)[:, 2:, None] > 0.5
    moved = encode_frac(decode_frac(out[:, 2:]) + np.asarray(shifts)[:, None, :])
    out[:, 2:] = np.where(atoms, moved, 0.0)
    return out


def permute_axes(images: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Cyclic relabelling of the cell axes (a, b, c) -> (b, c, a) applied ``shifts[i]`` times.

    Cyclic permutations keep the handedness of the cell (an odd permutation would mirror the
    structure). Lengths, angles (alpha is opposite a, so it follows a) and coordinates are
    rolled together.

    Args:
        images: (B, n_rows, 3).
        shifts: (B,) integers in {0, 1, 2}.
    """
    out = np.array(images, dtype=np.float64, copy=True)
    for k in (1, 2):
        sel = np.asarray(shifts) % 3 == k
        if sel.any():
            out[sel] = np.roll(out[sel], -k, axis=2)
    return out


def sort_slots(images: np.ndarray, masks: np.ndarray, spec: PointCloudSpec) -> np.ndarray:
    """Canonical atom order: within each element block, atoms sorted by (x, y, z) value.

    The order of atoms in a block carries no information; sorting removes that freedom so
    that an order-sensitive critic sees one arrangement per structure. Padding stays last.
    """
    out = np.array(images, dtype=np.float64, copy=True)
    masks = np.asarray(masks)
    for i in range(len(spec.elements)):
        blk = spec.block(i)
        rows = out[:, blk]  # (B, s, 3)
        occ = masks[:, blk] > 0.5
        # padding gets key +inf so it stays behind the atoms
        key_x = np.where(occ, rows[..., 0], np.inf)
        key_y = np.where(occ, rows[..., 1], np.inf)
        key_z = np.where(occ, rows[..., 2], np.inf)
        order = np.lexsort((key_z, key_y, key_x), axis=-1)
        out[:, blk] = np.take_along_axis(rows, order[..., None], axis=1)
    return out


def augment(
    images: np.ndarray,
    masks: np.ndarray,
    spec: PointCloudSpec,
    rng: np.random.Generator,
    *,
    translate_atoms: bool = True,
    permute: bool = True,
    sort: bool = True,
) -> np.ndarray:
    """One random augmentation of a batch of images (translation, axis permutation, sorting)."""
    out = np.asarray(images, dtype=np.float64)
    b = len(out)
    if translate_atoms:
        out = translate(out, masks, rng.random((b, 3)))
    if permute:
        out = permute_axes(out, rng.integers(0, 3, size=b))
    if sort:
        out = sort_slots(out, masks, spec)
    return out


# -- validity -------------------------------------------------------------------------------
#: thresholds of the validity checks: the typed ``gan.validity`` config section
ValiditySettings = GANValiditySettings


def _covalent_radius(symbol: str) -> float:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return float(CovalentRadius.radius[symbol])


def min_distances(structure: Structure) -> tuple[np.ndarray, np.ndarray]:
    """Shortest periodic distance of every atom pair, including an atom and its own images.

    Returns:
        (D, R): D is (n, n) with D[i, j] the shortest distance between atom i and any periodic
        image of atom j (D[i, i] = shortest lattice vector); R[i, j] the sum of covalent radii.
    """
    lat = structure.lattice.get_lll_reduced_lattice()
    # coordinates in the LLL-reduced cell; shortest vectors then lie within the +-1 neighbours
    frac = lat.get_fractional_coords(structure.cart_coords)
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    images = np.array(list(itertools.product((-1, 0, 1), repeat=3)), dtype=np.float64)
    cart = (d[:, :, None, :] + images[None, None]) @ lat.matrix  # (n, n, 27, 3)
    dist = np.linalg.norm(cart, axis=-1)
    n = len(structure)
    self_img = np.ones(27, dtype=bool)
    self_img[13] = False  # (0, 0, 0)
    dist[np.arange(n), np.arange(n)] = np.where(self_img, dist[np.arange(n), np.arange(n)], np.inf)
    D = dist.min(axis=-1)
    radii = np.array([_covalent_radius(site.specie.symbol) for site in structure])
    return D, radii[:, None] + radii[None, :]


def _lattice_ok(params: np.ndarray, n_atoms: int, settings: ValiditySettings) -> tuple[bool, str]:
    a, b, c, al, be, ga = params
    if not np.isfinite(params).all() or min(a, b, c) <= 0:
        return False, "non-finite or non-positive lattice length"
    lo, hi = settings.min_angle, 180.0 - settings.min_angle
    if not all(lo <= x <= hi for x in (al, be, ga)):
        return False, f"lattice angle outside [{lo}, {hi}]"
    cal, cbe, cga = np.cos(np.radians([al, be, ga]))
    shape = 1 - cal**2 - cbe**2 - cga**2 + 2 * cal * cbe * cga  # (V / abc)^2
    if shape <= 1e-3:
        return False, "flat cell (angles incompatible)"
    vpa = a * b * c * np.sqrt(shape) / n_atoms
    if not settings.min_volume_per_atom <= vpa <= settings.max_volume_per_atom:
        return False, f"volume per atom {vpa:.1f} outside range"
    return True, ""


def check_validity(
    image: np.ndarray,
    spec: PointCloudSpec,
    target_counts: Sequence[int],
    settings: ValiditySettings,
    *,
    use_counts: bool = True,
) -> dict[str, Any]:
    """Decode one generated image and check it.

    Args:
        image: (n_rows, 3) generated image.
        spec: its layout.
        target_counts: the atoms per element it was conditioned on.
        settings: validity thresholds.
        use_counts: decode with the target composition (composition by construction); False
            decodes with the paper's threshold rule, so the composition check is a real test.

    Returns:
        dict with ``structure`` (or None), booleans ``lattice_ok``, ``composition_ok``,
        ``distance_ok``, ``valid`` (all three), ``min_distance`` (Angstrom, NaN if not
        computed), ``min_distance_ratio`` (smallest distance / sum of covalent radii) and
        ``reason`` (first failure, '' when valid).
    """
    res: dict[str, Any] = {
        "structure": None,
        "lattice_ok": False,
        "composition_ok": False,
        "distance_ok": False,
        "valid": False,
        "min_distance": float("nan"),
        "min_distance_ratio": float("nan"),
        "reason": "",
    }
    params = spec.lattice_parameters(image)
    n_target = int(sum(target_counts))
    ok, why = _lattice_ok(params, n_target, settings)
    res["lattice_ok"] = ok
    occ = spec.occupied(image, target_counts if use_counts else None)
    res["composition_ok"] = spec.counts_from_mask(np.concatenate([[1.0, 1.0], occ])) == tuple(
        int(c) for c in target_counts
    )
    try:
        s = spec.decode(image, target_counts if use_counts else None)
    except ValueError as err:
        res["reason"] = (
            f"lattice: {err}" if ok is False or "lattice" in str(err) else f"decode: {err}"
        )
        return res
    res["structure"] = s
    D, R = min_distances(s)
    res["min_distance"] = float(D.min())
    ratio = D / R
    res["min_distance_ratio"] = float(ratio.min())
    res["distance_ok"] = bool(
        (ratio >= settings.min_distance_factor).all() and D.min() >= settings.min_distance
    )
    res["valid"] = bool(res["lattice_ok"] and res["composition_ok"] and res["distance_ok"])
    if not res["lattice_ok"]:
        res["reason"] = f"lattice: {why}"
    elif not res["composition_ok"]:
        res["reason"] = "composition"
    elif not res["distance_ok"]:
        res["reason"] = "distance"
    return res
