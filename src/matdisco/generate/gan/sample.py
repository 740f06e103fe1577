"""Sampling from a trained WGAN-GP: images for a composition, its cell sizes (formula
multiples), validity checks, deduplication (:func:`matdisco.core.matching.dedupe`) and the
``generate_gan`` stage."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from matdisco.core.matching import MatchSettings, dedupe
from matdisco.generate.gan.nets import GANModel, load_model, pick_device
from matdisco.generate.gan.train import write_json
from matdisco.generate.pointcloud import PointCloudSpec, check_validity
from matdisco.settings import GANDedupeSettings, GANSettings, GANValiditySettings

if TYPE_CHECKING:
    from pymatgen.core import Structure

__all__ = [
    "GAN_SYMPREC",
    "GAN_PRIMITIVE_TOL",
    "sample_images",
    "formula_multiples",
    "split_over_sizes",
    "dedupe_structures",
    "generate_structures",
    "generate_from_model",
]

log = logging.getLogger(__name__)


@torch.no_grad()
def sample_images(
    model: GANModel, counts: Sequence[int], n: int, *, seed: int = 0, batch: int = 1024
) -> np.ndarray:
    """``n`` generated images (float64, (n, n_rows, 3)) for one composition (atoms per element)."""
    spec = model.spec
    if not spec.fits(counts):
        raise ValueError(f"composition {counts} does not fit slots {spec.slots}")
    dev = next(model.generator.parameters()).device
    noise = torch.Generator().manual_seed(seed)
    mask = torch.as_tensor(spec.mask(counts), dtype=torch.float32)
    out = []
    for i in range(0, n, batch):
        b = min(batch, n - i)
        z = torch.randn(b, model.settings.model.latent_dim, generator=noise).to(dev)
        out.append(model.generator(z, mask.expand(b, -1).to(dev)).cpu().double().numpy())
    return np.concatenate(out) if out else np.zeros((0, spec.n_rows, 3))


def formula_multiples(formula: str, spec: PointCloudSpec, max_sites: int) -> list[tuple[int, ...]]:
    """Atoms-per-element vectors of 1, 2, 3 ... formula units of ``formula`` that fit the slots.

    Returns an empty list when the formula has elements outside the layout.
    """
    from pymatgen.core import Composition

    comp = Composition(formula).reduced_composition
    amounts = {el.symbol: amt for el, amt in comp.element_composition.items()}
    if set(amounts) - set(spec.elements):
        return []
    base = np.array([amounts.get(e, 0.0) for e in spec.elements])
    out = []
    for z in range(1, max_sites + 1):
        counts = base * z
        if not np.allclose(counts, np.round(counts)):
            continue
        counts_t = tuple(int(round(c)) for c in counts)
        if sum(counts_t) > max_sites:
            break
        if spec.fits(counts_t):
            out.append(counts_t)
    return out


def split_over_sizes(n: int, multiples: Sequence[Sequence[int]], how: str = "equal") -> np.ndarray:
    """Samples per cell size: ``n`` split over ``multiples`` (atoms per element of each size).

    ``equal``: the same number per size. ``sites``: in proportion to the number of sites (a
    cell of 2 formula units gets twice the samples of 1). Rounding by largest remainder; the
    split sums to ``n``. Why ``sites``: a small cell has few distinct arrangements (the 5-site
    MgMnO3 cell has three free atoms after fixing the origin), so its samples are mostly
    duplicates of each other; larger cells have more degrees of freedom.
    """
    k = len(multiples)
    if how == "equal":
        w = np.ones(k)
    elif how == "sites":
        w = np.array([sum(m) for m in multiples], dtype=float)
    else:
        raise ValueError(f"cell_sizes {how!r}: expected 'equal' or 'sites'")
    exact = n * w / w.sum()
    split = np.floor(exact).astype(int)
    rest = n - int(split.sum())
    split[np.argsort(-(exact - split), kind="stable")[:rest]] += 1
    return split


#: the GAN's structure comparison: space-group pre-filter at spglib symprec 0.1, no fingerprints
GAN_SYMPREC = 0.1
#: primitive-cell tolerance of the GAN's comparison, Angstrom (tighter than pymatgen's 0.25:
#: noisy generated supercells stay supercells instead of some of them being reduced)
GAN_PRIMITIVE_TOL = 0.1


def match_settings(dedupe: GANDedupeSettings | None = None) -> MatchSettings:
    """The GAN's structure comparison (dedupe and novelty): ``gan.dedupe`` tolerances,
    space-group pre-filter at symprec :data:`GAN_SYMPREC`, no fingerprint pre-filter."""
    d = dedupe or GANDedupeSettings()
    return MatchSettings(
        ltol=d.ltol,
        stol=d.stol,
        angle_tol=d.angle_tol,
        fingerprint_tol=None,
        symprec=GAN_SYMPREC,
        primitive_tol=GAN_PRIMITIVE_TOL,
    )


def dedupe_structures(
    structures: Sequence[Structure], *, ltol: float = 0.2, stol: float = 0.3, angle_tol: float = 5.0
) -> list[list[int]]:
    """Groups of matching structures (indices), by :func:`matdisco.core.matching.dedupe`.

    Structures are compared as primitive cells (volume scaled) with pymatgen's
    StructureMatcher, only within one reduced formula, primitive size and space group (spglib,
    symprec 0.1; a structure on which spglib fails is compared with every same-size one). The
    space-group pre-filter can split matches that the matcher's tolerances would merge across
    a symmetry boundary, so uniqueness is, if anything, overstated slightly.
    The first index of each group is its representative; groups are in order of first index.
    """
    if not structures:
        return []
    settings = match_settings(GANDedupeSettings(ltol=ltol, stol=stol, angle_tol=angle_tol))
    return dedupe(list(structures), settings).groups()


def generate_structures(
    model: GANModel,
    formulas: Sequence[str],
    *,
    n_per_composition: int,
    max_sites: int,
    validity: GANValiditySettings,
    dedupe: GANDedupeSettings | None = None,
    seed: int = 0,
    cell_sizes: str = "equal",
) -> tuple[pd.DataFrame, list[Structure], dict[str, Any]]:
    """Sample, validate and deduplicate structures for each target formula.

    Each formula's ``n_per_composition`` samples are split over its cell sizes (1, 2, ...
    formula units) that fit the slots and ``max_sites`` by :func:`split_over_sizes`.

    Args:
        model: the trained model.
        formulas: target reduced formulas.
        n_per_composition: samples per formula.
        max_sites: largest generated cell, sites.
        validity: ``gan.validity`` thresholds.
        dedupe: ``gan.dedupe`` tolerances (None = the defaults).
        seed: seed of the noise.
        cell_sizes: ``equal`` | ``sites`` (``gan.sample.cell_sizes``, see
            :func:`split_over_sizes`).

    Returns:
        (entries, structures, summary): entries/structures are the valid, unique structures
        (store columns plus generator, target_formula, parent, formula_units, min_distance,
        duplicate_ids); summary holds per-formula and total counts of samples, validity by
        check (lattice, composition, distance) and unique structures.
    """
    spec = model.spec
    dd = (dedupe or GANDedupeSettings()).to_dict()
    use_counts = model.settings.model.mask_composition
    rows: list[dict[str, Any]] = []
    keep: list[Structure] = []
    per_formula: dict[str, Any] = {}
    totals = dict.fromkeys(
        ["samples", "lattice_ok", "composition_ok", "distance_ok", "valid", "unique"], 0
    )
    for fi, formula in enumerate(formulas):
        multiples = formula_multiples(formula, spec, max_sites)
        if not multiples:
            log.warning(
                "%s: no cell of <= %d sites fits the slots %s; skipped",
                formula,
                max_sites,
                spec.slots,
            )
            per_formula[formula] = {"skipped": "does not fit the slots", "samples": 0}
            continue
        split = split_over_sizes(n_per_composition, multiples, cell_sizes)
        stats = dict.fromkeys(
            ["samples", "lattice_ok", "composition_ok", "distance_ok", "valid"], 0
        )
        reasons: dict[str, int] = {}
        valid_structs: list[tuple[Structure, tuple[int, ...], float]] = []
        for mi, (counts, n) in enumerate(zip(multiples, split, strict=True)):
            if n == 0:
                continue
            imgs = sample_images(model, counts, int(n), seed=seed * 100003 + fi * 101 + mi)
            for img in imgs:
                res = check_validity(img, spec, counts, validity, use_counts=use_counts)
                stats["samples"] += 1
                for key in ("lattice_ok", "composition_ok", "distance_ok", "valid"):
                    stats[key] += int(res[key])
                if res["valid"]:
                    valid_structs.append((res["structure"], counts, res["min_distance"]))
                else:
                    why = res["reason"].split(":")[0]
                    reasons[why] = reasons.get(why, 0) + 1
        t0 = time.perf_counter()
        groups = dedupe_structures([v[0] for v in valid_structs], **dd)
        t_dd = time.perf_counter() - t0
        for gi, group in enumerate(groups):
            s, counts, dmin = valid_structs[group[0]]
            rows.append(
                {
                    "id": f"gan-{formula}-{gi:04d}",
                    "formula": s.composition.reduced_formula,
                    "composition": s.composition.formula,
                    "chemsys": "-".join(sorted(el.symbol for el in s.composition.elements)),
                    "nelements": len(s.composition.elements),
                    "nsites": len(s),
                    "generator": "wgan_gp",
                    "target_formula": formula,
                    "parent": "",
                    "formula_units": int(round(sum(counts) / _atoms_per_formula_unit(formula))),
                    "min_distance": dmin,
                    "n_duplicates": len(group) - 1,
                }
            )
            keep.append(s)
        stats["unique"] = len(groups)
        stats["multiples"] = [list(m) for m in multiples]
        stats["samples_per_multiple"] = [int(n) for n in split]
        stats["invalid_reasons"] = reasons
        stats["dedupe_seconds"] = round(t_dd, 2)
        for key in ("lattice_ok", "composition_ok", "distance_ok", "valid"):
            stats[f"{key}_rate"] = (
                round(stats[key] / stats["samples"], 4) if stats["samples"] else None
            )
        stats["unique_rate_of_valid"] = (
            round(stats["unique"] / stats["valid"], 4) if stats["valid"] else None
        )
        per_formula[formula] = stats
        for key in totals:
            totals[key] += stats[key]
    columns = [
        "id",
        "formula",
        "composition",
        "chemsys",
        "nelements",
        "nsites",
        "generator",
        "target_formula",
        "parent",
        "formula_units",
        "min_distance",
        "n_duplicates",
    ]
    entries = pd.DataFrame(rows, columns=columns).astype(
        {
            "nelements": np.int64,
            "nsites": np.int64,
            "formula_units": np.int64,
            "min_distance": np.float64,
            "n_duplicates": np.int64,
        }
    )
    entries.insert(1, "source", "gan")
    rates = {
        f"{key}_rate": (round(totals[key] / totals["samples"], 4) if totals["samples"] else None)
        for key in ("lattice_ok", "composition_ok", "distance_ok", "valid")
    }
    summary = {
        "totals": {**totals, **rates},
        "unique_rate_of_valid": round(totals["unique"] / totals["valid"], 4)
        if totals["valid"]
        else None,
        "per_formula": per_formula,
        "composition_by_construction": use_counts,
        "cell_sizes": cell_sizes,
        "validity": validity.to_dict(),
        "dedupe": {**dd, "symprec": GAN_SYMPREC, "primitive_tol": GAN_PRIMITIVE_TOL},
    }
    return entries, keep, summary


def _atoms_per_formula_unit(formula: str) -> float:
    """Atoms in one formula unit of the reduced formula."""
    from pymatgen.core import Composition

    return float(Composition(formula).reduced_composition.num_atoms)


def generate_from_model(
    model_path: str | Path,
    formulas: Sequence[str],
    *,
    settings: GANSettings,
    out_store: str | Path,
    out_cifs: str | Path,
    out_summary: str | Path,
    max_atoms: int = 20,
    threads: int | None = None,
    training_store: str | Path | None = None,
    known_store: str | Path | None = None,
) -> dict[str, Any]:
    """The ``generate_gan`` stage: sample, validate, deduplicate, write store + CIFs + summary.

    Args:
        model_path: model written by ``train_gan``.
        formulas: target reduced formulas.
        settings: the ``gan`` config section (sample, validity, dedupe, seed, device are used).
        out_store: candidates in the store format (source ``gan``).
        out_cifs: folder for one CIF per candidate.
        out_summary: JSON summary (validity, uniqueness).
        max_atoms: ``target.max_atoms``, the default of ``settings.sample.max_sites``.
        threads: torch CPU threads.
        training_store: the training structures (store format), for novelty; None = skip.
        known_store: the entry store, whose structures of the model's chemical system are the
            known structures for novelty and coverage; None = skip.
    """
    from matdisco.generate.gan.metrics import novelty_and_coverage, system_structures
    from matdisco.provenance import package_versions
    from matdisco.store import StructureArrays, write_store

    if threads is not None:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    seed = settings.seed
    model = load_model(model_path, device=str(pick_device(settings.device)))
    entries, structures, summary = generate_structures(
        model,
        list(formulas),
        n_per_composition=settings.sample.per_composition,
        max_sites=settings.sample.max_sites or max_atoms,
        validity=settings.validity,
        dedupe=settings.dedupe,
        seed=seed,
        cell_sizes=settings.sample.cell_sizes,
    )
    seconds = time.perf_counter() - t0
    elements = list(model.spec.elements)
    training = system_structures(training_store, elements)[1] if training_store else []
    known = system_structures(known_store, elements)[1] if known_store else []
    t1 = time.perf_counter()
    novelty, novel_t, novel_k = novelty_and_coverage(
        structures, training, known, match_settings(settings.dedupe)
    )
    entries["novel_vs_training"] = novel_t if training_store else np.nan
    entries["novel_vs_known"] = novel_k if known_store else np.nan
    novelty["seconds"] = round(time.perf_counter() - t1, 2)
    novelty["training_structures"] = len(training) if training_store else None
    novelty["known_structures"] = len(known) if known_store else None
    summary["novelty"] = novelty
    tot = summary["totals"]
    summary["funnel"] = {
        "sampled": tot["samples"],
        "valid": tot["valid"],
        "unique": tot["unique"],
        "novel_vs_training": novelty["totals"]["novel_vs_training"] if training_store else None,
        "novel_vs_known": novelty["totals"]["novel_vs_known"] if known_store else None,
        "novel": novelty["totals"]["novel"] if training_store and known_store else None,
    }
    summary["targets"] = list(formulas)
    summary["seconds"] = round(seconds, 2)
    n = summary["totals"]["samples"]
    summary["samples_per_second"] = round(n / seconds, 1) if seconds > 0 else None
    summary["model"] = {
        "path": str(model_path),
        "fingerprint": model.info.get("fingerprint"),
        "spec": model.spec.to_dict(),
    }
    provenance = {
        "generator": "wgan_gp",
        "model_fingerprint": model.info.get("fingerprint"),
        "targets": list(formulas),
        "seed": seed,
        "sample": settings.sample.to_dict(),
        "validity": settings.validity.to_dict(),
        "dedupe": settings.dedupe.to_dict(),
        "packages": package_versions(["torch", "numpy", "pymatgen", "matdisco"]),
    }
    write_store(
        out_store,
        entries,
        StructureArrays.from_structures(structures),
        data_source="gan",
        provenance=provenance,
    )
    cif_dir = Path(out_cifs)
    cif_dir.mkdir(parents=True, exist_ok=True)
    from pymatgen.io.cif import CifWriter

    for sid, s in zip(entries.get("id", []), structures, strict=True):
        CifWriter(s).write_file(cif_dir / f"{sid}.cif")
    write_json(out_summary, summary)
    log.info(
        "%d samples: %.1f%% valid (distance %.1f%%, composition %.1f%%, lattice %.1f%%), %d unique",
        n,
        100 * (summary["totals"]["valid_rate"] or 0),
        100 * (summary["totals"]["distance_ok_rate"] or 0),
        100 * (summary["totals"]["composition_ok_rate"] or 0),
        100 * (summary["totals"]["lattice_ok_rate"] or 0),
        summary["totals"]["unique"],
    )
    return summary
