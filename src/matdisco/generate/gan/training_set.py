"""Training set of the WGAN-GP built by substitution into known prototypes (rule
``build_gan_training_set``).

After Kim et al. (ACS Cent. Sci. 6, 1412 (2020)), who trained on ~1,240 Mg-Mn-O structures
made by putting Mg/Mn onto the cation sites of known oxide prototypes: the ~30 structures of
the target system alone make the generator memorise a few modes.

Prototypes are the store's entries with at most ``target.max_atoms`` sites whose elements are
the target's anion(s) (the target elements whose allowed oxidation states are all negative,
O for Mg-Mn-O) plus 1 .. ``max_cations`` metals / metalloids, except the entries of the
target system itself (held out: novelty and coverage are measured against them), together
with any entry whose formula or id ``gan.training_set.prototypes`` names.
Their cation site orbits (spglib,
:meth:`matdisco.generate.templates.TemplateLibrary._orbits_of`) are assigned to the
target cations in every way (all ``n_cations ** n_orbits`` of them, prototypes with more than
``max_orbits`` cation orbits take element-wise assignments only). An assignment is kept when
its composition can be charge balanced within ``target.oxidation_states``
(:func:`matdisco.core.composition.charge_balance_possible`, the template generator's rule);
the cell is rescaled by the template generator's volume rule
(:meth:`~matdisco.generate.templates.TemplateLibrary._build`) and duplicates are removed with
:func:`matdisco.core.matching.dedupe` (StructureMatcher). Every structure records its parent
entry and substitution.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from matdisco.core.composition import allowed_oxidation_states, charge_balance_possible
from matdisco.core.matching import MatchSettings, dedupe
from matdisco.settings import GANTrainingSetSettings

__all__ = ["target_ions", "substituted_structures", "build_gan_training_set"]

log = logging.getLogger(__name__)


def target_ions(
    elements: Sequence[str], windows: dict[str, Sequence[int]] | None = None
) -> tuple[list[str], list[str]]:
    """(cations, anions) of the target: anions are the elements whose allowed states are < 0."""
    anions = [e for e in elements if max(allowed_oxidation_states(e, windows)) < 0]
    return [e for e in elements if e not in anions], anions


def _is_cation_element(symbol: str) -> bool:
    from pymatgen.core import Element

    el = Element(symbol)
    return bool(el.is_metal or el.is_metalloid)


def prototype_rows(
    entries: pd.DataFrame,
    elements: Sequence[str],
    anions: Sequence[str],
    *,
    max_sites: int,
    max_cations: int,
    named: Sequence[str] = (),
) -> np.ndarray:
    """Rows of the store entries used as prototypes (see the module docstring).

    Entries of the target system itself are left out (unless named): they are the held-out
    known structures that novelty and coverage are measured against.
    """
    named_set = set(named)
    target = set(elements)
    keep = []
    for i, (sid, formula, chemsys, nsites) in enumerate(
        entries[["id", "formula", "chemsys", "nsites"]].itertuples(index=False)
    ):
        if nsites > max_sites:
            continue
        if sid in named_set or formula in named_set:
            keep.append(i)
            continue
        els = str(chemsys).split("-")
        if set(els) <= target:
            continue
        cations = [e for e in els if e not in anions]
        if (
            set(anions) <= set(els)
            and 1 <= len(cations) <= max_cations
            and all(_is_cation_element(e) for e in cations)
        ):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def substituted_structures(
    library: Any,
    row: int,
    cations: Sequence[str],
    anions: Sequence[str],
    windows: dict[str, Sequence[int]] | None,
    max_orbits: int,
) -> list[tuple[Any, str]]:
    """Charge-balanced substitutions of one prototype: [(structure, substitution text)].

    Args:
        library: a :class:`matdisco.generate.templates.TemplateLibrary` over the store.
        row: the prototype's row.
        cations: target cation symbols.
        anions: target anion symbols (the prototype's anion sites keep their element).
        windows: ``target.oxidation_states``.
        max_orbits: most cation orbits enumerated (more: element-wise assignment only).
    """
    from pymatgen.core import Element

    from matdisco.generate.templates import _Option

    orbits = library._orbits_of(row)
    a, b = library.arrays.site_offset[row], library.arrays.site_offset[row + 1]
    zs = library.arrays.species_z[a:b].astype(int)
    anion_z = {Element(x).Z for x in anions}
    if orbits is None:  # too many orbits: element-wise
        groups = [(int(z), [i for i in range(len(zs)) if zs[i] == z]) for z in sorted(set(zs))]
    else:
        groups = [(z, idx) for z, idx, _ in orbits]
    cat_groups = [(z, idx) for z, idx in groups if z not in anion_z]
    if len(cat_groups) > max_orbits:  # element-wise: all orbits of one element together
        by_el: dict[int, list[int]] = {}
        for z, idx in cat_groups:
            by_el.setdefault(z, []).extend(idx)
        cat_groups = sorted(by_el.items())
    cat_z = [Element(c).Z for c in cations]
    out = []
    for choice in itertools.product(range(len(cations)), repeat=len(cat_groups)):
        species = [int(z) for z in zs]
        for (_, idx), j in zip(cat_groups, choice, strict=True):
            for i in idx:
                species[i] = cat_z[j]
        counts = Counter(Element.from_Z(z).symbol for z in species)
        if set(counts) - set(cations) - set(anions):
            continue  # an anion site of another element (e.g. F in an oxyfluoride)
        if not charge_balance_possible(dict(counts), windows):
            continue
        formula = "".join(f"{el}{n}" for el, n in sorted(counts.items()))
        ox_t = library._ox_target(formula)
        text = " ".join(
            f"{Element.from_Z(z).symbol}[{len(idx)}]->{cations[j]}"
            for (z, idx), j in zip(cat_groups, choice, strict=True)
        )
        option = _Option(0.0, 0.0, row, "site_split", species, text)
        structure, _ = library._build(option, ox_t)
        out.append((structure, text))
    return out


def build_gan_training_set(
    store: str | Path,
    *,
    elements: Sequence[str],
    oxidation_states: dict[str, Sequence[int]] | None,
    max_atoms: int,
    settings: GANTrainingSetSettings,
    out_store: str | Path,
    out_summary: str | Path,
) -> dict[str, Any]:
    """The ``build_gan_training_set`` stage: substitute, deduplicate, write store + JSON.

    Args:
        store: the entry store (the prototypes).
        elements: target elements.
        oxidation_states: ``target.oxidation_states`` windows.
        max_atoms: ``target.max_atoms``, the largest prototype cell.
        settings: ``gan.training_set``.
        out_store: the training structures in the store format (columns ``parent``,
            ``substitution``, ``parent_formula``).
        out_summary: JSON with the counts (prototypes, substituted, unique, compositions).

    Raises:
        ValueError: the target has no anion or no cation, or no structure results.
    """
    from matdisco.generate.gan.train import write_json
    from matdisco.generate.templates import TemplateLibrary
    from matdisco.provenance import package_versions
    from matdisco.store import StructureArrays, read_entries, read_structure_arrays, write_store

    t0 = time.perf_counter()
    windows = {k: list(v) for k, v in (oxidation_states or {}).items()}
    cations, anions = target_ions(elements, windows)
    if not cations or not anions:
        raise ValueError(
            f"target.elements {list(elements)}: the substitution training set needs at least "
            f"one cation and one anion (found cations {cations}, anions {anions})"
        )
    entries = read_entries(store, ["id", "formula", "chemsys", "nsites"])
    rows = prototype_rows(
        entries,
        elements,
        anions,
        max_sites=max_atoms,
        max_cations=settings.max_cations,
        named=settings.prototypes,
    )
    sub_entries = entries.iloc[rows].reset_index(drop=True)
    arrays = read_structure_arrays(store, rows)
    library = TemplateLibrary(sub_entries, arrays, None, windows)
    structures, parents, texts = [], [], []
    for r in range(len(sub_entries)):
        for s, text in substituted_structures(
            library, r, cations, anions, windows, settings.max_orbits
        ):
            structures.append(s)
            parents.append(r)
            texts.append(text)
    t_sub = time.perf_counter() - t0
    if not structures:
        raise ValueError(f"{store}: no prototype gives a charge-balanced {elements} structure")
    groups = dedupe(structures, MatchSettings()).groups()
    keep = [g[0] for g in groups]
    rows_out = []
    for k, i in enumerate(keep):
        s = structures[i]
        comp = s.composition
        parent = sub_entries.iloc[parents[i]]
        rows_out.append(
            {
                "id": f"ganset-{k:05d}",
                "formula": comp.reduced_formula,
                "composition": comp.formula,
                "chemsys": "-".join(sorted(el.symbol for el in comp.elements)),
                "nelements": len(comp.elements),
                "nsites": len(s),
                "parent": str(parent["id"]),
                "parent_formula": str(parent["formula"]),
                "substitution": texts[i],
                "n_duplicates": len(groups[k]) - 1,
            }
        )
    table = pd.DataFrame(rows_out)
    kept = [structures[i] for i in keep]
    formulas = Counter(table["formula"])
    summary = {
        "cations": cations,
        "anions": anions,
        "prototypes": len(sub_entries),
        "prototypes_used": int(table["parent"].nunique()),
        "substituted": len(structures),
        "unique": len(kept),
        "compositions": len(formulas),
        "structures_per_composition": dict(sorted(formulas.items(), key=lambda kv: -kv[1])),
        "settings": settings.to_dict(),
        "seconds_substitution": round(t_sub, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    write_store(
        out_store,
        table,
        StructureArrays.from_structures(kept),
        data_source="gan_training_set",
        provenance={
            "store": str(store),
            "elements": list(elements),
            "oxidation_states": windows,
            "max_atoms": max_atoms,
            "training_set": settings.to_dict(),
            "packages": package_versions(["numpy", "pymatgen", "matdisco"]),
        },
    )
    write_json(out_summary, summary)
    log.info(
        "GAN training set: %d prototypes -> %d substituted -> %d unique over %d compositions",
        summary["prototypes"],
        summary["substituted"],
        summary["unique"],
        summary["compositions"],
    )
    return summary
