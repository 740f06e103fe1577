"""Site-environment features of crystal structures for the structure-aware band-gap model.

The composition of a crystal fixes much of its PBE gap, but not how its atoms are bonded:
polymorphs differ, metal-metal contacts close gaps, low coordination and isolated units open
them. These features describe the local environment of every site from a periodic neighbour
list and reduce them to per-structure statistics; they feed the ``structure`` model of
:mod:`matdisco.screen.bandgap` beside the Magpie-style composition features.

Neighbour search: ``pymatgen.optimization.neighbors.find_points_in_spheres`` (compiled,
periodic) called directly on the flat arrays of :class:`matdisco.store.StructureArrays` (no
pymatgen ``Structure`` objects), with a per-structure cutoff of ``CUTOFF_TOL · 2 · r_max``
(r_max = the largest covalent radius in the cell) clipped to [``CUTOFF_MIN``, ``CUTOFF_MAX``]
Å; everything after the search is vectorised over all pairs of all structures.

Per site i (neighbours j within the cutoff, distance d_ij in Å, covalent radii r from the
Magpie table, Pauling electronegativity χ):

* ``d1``: nearest-neighbour distance; ``d1_norm`` = min_j d_ij / (r_i + r_j);
* ``cn_bond``: neighbours with d_ij ≤ ``BOND_TOL`` · (r_i + r_j) (covalent-radius contacts;
  the covalent radii of electropositive metals are large, so this counts cation-cation
  contacts too: 6 in NaCl, but 6 O + 12 Mg = 18 around Mg in MgO, whose first shell
  ``cn_shell`` is 6);
* ``cn_shell``: neighbours with d_ij ≤ ``SHELL_TOL`` · d1 (first shell);
* ``econ``: effective coordination Σ_j exp(1 − (d_ij / d1)^6) (one-pass, Hoppe-style);
* ``bond_disp``: std / mean of d_ij over the first shell (polyhedral distortion);
* ``dchi``: mean |χ_i − χ_j| over the first shell; ``ionic``: mean 1 − exp(−(Δχ)²/4)
  (Pauling ionic character); ``chi_env``: mean χ_j − χ_i (signed);
* ``hetero``: fraction of first-shell neighbours of another element;
* ``like``: fraction of first-shell neighbours of the same type, where the type is *anion*
  for the most electronegative element of the cell and *cation* for the others (cation-cation
  contacts signal metallic bonding, anion-anion contacts polyanions/peroxides);
* ``d_like_norm``: nearest same-type distance / radii sum (censored at the cutoff).

Per structure: mean, std, min and max over the sites of the main quantities, the means over
cation and anion sites of a few, the fraction of sites without any bond, and the fraction of
sites whose neighbour search hit the cutoff with no neighbour. Unary cells have no anion
(all sites are cations; the anion statistics are NaN, which LightGBM handles).

``local_differences=True`` adds Ward-style local property differences (w-weighted mean
|p_i − p_j| over neighbours for 14 Magpie properties; mean/std/max over sites, 42 columns).
The gap model does not use them: on the formula-grouped split they changed the MAE by
+0.001 eV (0.287 vs 0.286, within noise) for 25% more training time.

Cost: ~7 CPU-s for the 36.7k structures of the bundled MP-2018 store (shared machine), so
the bandgap rule computes them itself and no feature cache is needed. The relaxation
model's per-structure embedding (CHGNet ``crystal_fea``) was measured at ~69 ms CPU per
structure (1 thread) = ~42 CPU-minutes for the store: far over the rule's budget, not used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matdisco.store import StructureArrays

__all__ = ["SITE_FEATURES", "site_environment_features", "element_column"]

#: bonds: d ≤ BOND_TOL · (r_i + r_j) (covalent radii)
BOND_TOL = 1.15
#: the neighbour-search cutoff is CUTOFF_TOL · 2 · (largest covalent radius of the cell)
CUTOFF_TOL = 1.25
#: first shell: d ≤ SHELL_TOL · d1
SHELL_TOL = 1.2
#: the cutoff of the neighbour search is clipped to this range, Å
CUTOFF_MIN, CUTOFF_MAX = 3.0, 6.0

_SITE_QUANTITIES = (
    "d1_norm",
    "cn_bond",
    "cn_shell",
    "econ",
    "bond_disp",
    "dchi",
    "ionic",
    "chi_env",
    "hetero",
    "like",
    "d_like_norm",
)
_STATS = ("mean", "std", "min", "max")
_BY_TYPE = ("d1_norm", "cn_bond", "econ", "bond_disp", "ionic", "like", "d_like_norm")

#: per-structure feature names (order of the columns of :func:`site_environment_features`)
SITE_FEATURES: tuple[str, ...] = (
    *(f"site_{q}_{s}" for q in _SITE_QUANTITIES for s in _STATS),
    *(f"site_cation_{q}_mean" for q in _BY_TYPE),
    *(f"site_anion_{q}_mean" for q in _BY_TYPE),
    "site_d1_mean_A",
    "site_frac_unbonded",
    "site_frac_censored",
)

#: element properties of the local property differences (Magpie table columns)
LPD_PROPERTIES = (
    "Electronegativity",
    "CovalentRadius",
    "MendeleevNumber",
    "Row",
    "Column",
    "NValence",
    "NsValence",
    "NpValence",
    "NdValence",
    "NUnfilled",
    "GSbandgap",
    "GSvolume_pa",
    "MeltingT",
    "AtomicWeight",
)
_LPD_STATS = ("mean", "std", "max")
#: names of the local-property-difference columns (appended after :data:`SITE_FEATURES`)
LPD_FEATURES: tuple[str, ...] = tuple(f"lpd_{p}_{s}" for p in LPD_PROPERTIES for s in _LPD_STATS)


def element_column(table: Any, prop: str) -> np.ndarray:
    """Property ``prop`` of an element table indexed by atomic number (index 0 and missing
    elements are NaN)."""
    from matdisco.features import SYMBOLS

    col = table.column(prop)
    out = np.full(len(SYMBOLS) + 1, np.nan)
    for i, sym in enumerate(SYMBOLS):
        j = table.index.get(sym)
        if j is not None:
            out[i + 1] = col[j]
    return out


def _neighbour_pairs(
    arrays: StructureArrays, rcov: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All neighbour pairs (global site indices i, j; distance Å) and each structure's cutoff."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    off = arrays.site_offset
    pbc = np.ones(3, dtype=np.int64)
    ii: list[np.ndarray] = []
    jj: list[np.ndarray] = []
    dd: list[np.ndarray] = []
    cutoffs = np.empty(len(arrays))
    for k in range(len(arrays)):
        a, b = int(off[k]), int(off[k + 1])
        lat = np.ascontiguousarray(arrays.lattice[k], dtype=float)
        cart = np.ascontiguousarray(arrays.frac_coords[a:b] @ lat, dtype=float)
        rmax = np.nanmax(rcov[a:b]) if b > a else 1.0
        r = float(
            np.clip(CUTOFF_TOL * 2.0 * (rmax if np.isfinite(rmax) else 1.5), CUTOFF_MIN, CUTOFF_MAX)
        )
        cutoffs[k] = r
        i1, i2, _img, d = find_points_in_spheres(cart, cart, r, pbc, lat, tol=1e-8)
        keep = d > 1e-6
        ii.append(i1[keep].astype(np.int64) + a)
        jj.append(i2[keep].astype(np.int64) + a)
        dd.append(d[keep])

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0)

    return cat(ii).astype(np.int64), cat(jj).astype(np.int64), cat(dd), cutoffs


def _site_reduce(values: np.ndarray, idx: np.ndarray, n: int, how: str, fill: float) -> np.ndarray:
    """Reduce pair ``values`` onto sites ``idx`` (sum | min | max); empty sites get ``fill``."""
    out = np.full(n, fill, dtype=float)
    if how == "sum":
        out[:] = 0.0
        np.add.at(out, idx, values)
        return out
    ufunc = np.minimum if how == "min" else np.maximum
    init = np.inf if how == "min" else -np.inf
    tmp = np.full(n, init)
    ufunc.at(tmp, idx, values)
    return np.where(np.isfinite(tmp), tmp, fill)


def site_feature_names(local_differences: bool = True) -> list[str]:
    """Column names of :func:`site_environment_features`."""
    return list(SITE_FEATURES) + (list(LPD_FEATURES) if local_differences else [])


def site_environment_features(
    arrays: StructureArrays, table: Any, *, local_differences: bool = True
) -> np.ndarray:
    """Per-structure site-environment features (:data:`SITE_FEATURES`), see the module doc.

    Args:
        arrays: structures as flat arrays (ordered sites).
        table: a :class:`matdisco.features.ElementTable` (CovalentRadius in pm,
            Electronegativity: Pauling).

    Returns:
        (N, len(site_feature_names(local_differences))) float64 array; NaN where undefined
        (e.g. anion statistics of a unary cell, or elements without radius or
        electronegativity data).
    """
    n_struct = len(arrays)
    if n_struct == 0:
        return np.zeros((0, len(site_feature_names(local_differences))))
    z = arrays.species_z.astype(np.int64)
    n_sites = len(z)
    rcov = element_column(table, "CovalentRadius")[z] / 100.0  # pm -> Å
    chi = element_column(table, "Electronegativity")[z]
    struct_of_site = np.repeat(np.arange(n_struct), np.diff(arrays.site_offset))
    i, j, d, cutoffs = _neighbour_pairs(arrays, rcov)

    # site type: anion = the most electronegative element of a multi-element cell
    chi_f = np.where(np.isfinite(chi), chi, -np.inf)
    starts = arrays.site_offset[:-1]
    chi_max = np.maximum.reduceat(chi_f, starts)[struct_of_site]
    zmin = np.minimum.reduceat(z, starts)[struct_of_site]
    zmax = np.maximum.reduceat(z, starts)[struct_of_site]
    anion = (chi_f >= chi_max) & (zmin != zmax)

    rsum = rcov[i] + rcov[j]
    dn = d / rsum
    cut_site = cutoffs[struct_of_site]
    d1 = _site_reduce(d, i, n_sites, "min", np.nan)
    censored = ~np.isfinite(d1)
    d1 = np.where(censored, cut_site, d1)
    d1_norm = _site_reduce(dn, i, n_sites, "min", np.nan)
    d1_norm = np.where(censored, cut_site / (2 * rcov), d1_norm)
    bonded = dn <= BOND_TOL
    cn_bond = _site_reduce(bonded.astype(float), i, n_sites, "sum", 0.0)
    ratio = d / d1[i]
    shell = ratio <= SHELL_TOL
    w = np.exp(1.0 - ratio**6)
    econ = _site_reduce(w, i, n_sites, "sum", 0.0)
    si, sj, sd = i[shell], j[shell], d[shell]
    cn_shell = _site_reduce(np.ones(len(si)), si, n_sites, "sum", 0.0)

    def shell_mean(v: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return _site_reduce(v, si, n_sites, "sum", 0.0) / cn_shell

    mean_d = shell_mean(sd)
    with np.errstate(invalid="ignore"):
        bond_disp = np.sqrt(np.maximum(shell_mean(sd**2) - mean_d**2, 0.0)) / mean_d
    dchi_pair = chi[sj] - chi[si]
    dchi = shell_mean(np.abs(dchi_pair))
    ionic = shell_mean(1.0 - np.exp(-(dchi_pair**2) / 4.0))
    chi_env = shell_mean(dchi_pair)
    hetero = shell_mean((z[sj] != z[si]).astype(float))
    like = shell_mean((anion[sj] == anion[si]).astype(float))
    same = anion[j] == anion[i]
    d_like_norm = _site_reduce(dn[same], i[same], n_sites, "min", np.nan)
    d_like_norm = np.where(np.isnan(d_like_norm), cut_site / (2 * rcov), d_like_norm)

    site = {
        "d1_norm": d1_norm,
        "cn_bond": cn_bond,
        "cn_shell": cn_shell,
        "econ": econ,
        "bond_disp": bond_disp,
        "dchi": dchi,
        "ionic": ionic,
        "chi_env": chi_env,
        "hetero": hetero,
        "like": like,
        "d_like_norm": d_like_norm,
    }
    counts = np.diff(arrays.site_offset).astype(float)
    cols: list[np.ndarray] = []

    def mean_by(v: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        m = np.isfinite(v) if mask is None else (np.isfinite(v) & mask)
        s = np.bincount(struct_of_site, np.where(m, v, 0.0), n_struct)
        c = np.bincount(struct_of_site, m.astype(float), n_struct)
        with np.errstate(invalid="ignore", divide="ignore"):
            return s / c

    for q in _SITE_QUANTITIES:
        v = site[q]
        mu = mean_by(v)
        var = mean_by(v**2) - mu**2
        vf = np.where(np.isfinite(v), v, np.nan)
        lo = np.fmin.reduceat(vf, starts)
        hi = np.fmax.reduceat(vf, starts)
        cols += [mu, np.sqrt(np.maximum(var, 0.0)), lo, hi]
    for mask in (~anion, anion):
        cols += [mean_by(site[q], mask) for q in _BY_TYPE]
    cols.append(mean_by(d1))
    cols.append(np.bincount(struct_of_site, (cn_bond == 0).astype(float), n_struct) / counts)
    cols.append(np.bincount(struct_of_site, censored.astype(float), n_struct) / counts)
    if local_differences:
        wsum = np.where(econ > 0, econ, np.nan)
        for prop in LPD_PROPERTIES:
            pz = element_column(table, prop)[z]
            v = _site_reduce(w * np.abs(pz[i] - pz[j]), i, n_sites, "sum", 0.0) / wsum
            mu = mean_by(v)
            cols += [
                mu,
                np.sqrt(np.maximum(mean_by(v**2) - mu**2, 0.0)),
                np.fmax.reduceat(v, starts),
            ]
    return np.column_stack(cols)
