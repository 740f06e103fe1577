"""Diversity and novelty of generated structures: uniqueness, novelty against the training set
and against known structures, and coverage of held-out known structures.

Coverage follows CDVAE (Xie et al., ICLR 2022) with the structure matcher in place of the
fingerprint-distance threshold: COV-R (recall) is the fraction of known structures of the
sampled compositions that at least one unique generated structure matches; COV-P (precision)
the fraction of unique generated structures that match a known structure. All comparisons use
:class:`matdisco.core.matching.StructureIndex` (StructureMatcher within one reduced formula).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from matdisco.core.matching import MatchSettings, StructureIndex

if TYPE_CHECKING:
    from pymatgen.core import Structure

    from matdisco.generate.gan.nets import GANModel
    from matdisco.settings import GANSettings

__all__ = ["system_structures", "novelty_and_coverage", "diversity_monitor"]

#: samples per composition of the per-epoch diversity monitor
MONITOR_SAMPLES = 20
#: the monitor runs every this fraction of the epochs (at least every epoch)
MONITOR_EVERY_FRACTION = 0.1


def diversity_monitor(
    compositions: Sequence[tuple[int, ...]], settings: GANSettings, n: int = MONITOR_SAMPLES
) -> Callable[[GANModel], dict[str, float]]:
    """A training monitor: validity and uniqueness of ``n`` samples per composition.

    Args:
        compositions: atoms per element of the monitored compositions (e.g. the training set's
            most common ones).
        settings: the ``gan`` section (validity, dedupe, seed).
        n: samples per composition.

    Returns:
        A function of the model giving ``monitor_valid_rate`` and
        ``monitor_unique_rate_of_valid`` (NaN when nothing is valid). It draws its noise from
        its own seeded generator, never from torch's global state.
    """
    from matdisco.generate.gan.sample import dedupe_structures, sample_images
    from matdisco.generate.pointcloud import check_validity

    def run(model: GANModel) -> dict[str, float]:
        valid = unique = 0
        for i, counts in enumerate(compositions):
            ok = []
            for img in sample_images(model, counts, n, seed=settings.seed * 7919 + i):
                res = check_validity(
                    img,
                    model.spec,
                    counts,
                    settings.validity,
                    use_counts=settings.model.mask_composition,
                )
                if res["valid"]:
                    ok.append(res["structure"])
            valid += len(ok)
            unique += len(dedupe_structures(ok, **settings.dedupe.to_dict()))
        total = n * len(compositions)
        return {
            "monitor_valid_rate": valid / total if total else float("nan"),
            "monitor_unique_rate_of_valid": unique / valid if valid else float("nan"),
        }

    return run


def system_structures(
    store: str | Path, elements: Sequence[str]
) -> tuple[list[str], list[Structure]]:
    """Ids and structures of a store's entries whose chemical system lies within ``elements``."""
    from matdisco.store import read_entries, read_structure_arrays

    entries = read_entries(store, ["id", "chemsys"])
    allowed = set(elements)
    sel = np.flatnonzero(
        entries["chemsys"].map(lambda c: set(str(c).split("-")) <= allowed).to_numpy()
    )
    return entries["id"].iloc[sel].astype(str).tolist(), read_structure_arrays(
        store, sel
    ).structures()


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def novelty_and_coverage(
    generated: Sequence[Structure],
    training: Sequence[Structure],
    known: Sequence[Structure],
    settings: MatchSettings | None = None,
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Novelty and coverage of unique generated structures, per reduced formula and in total.

    Args:
        generated: unique generated structures.
        training: the training structures.
        known: known structures (held out from training).
        settings: matcher tolerances (default :class:`MatchSettings`).

    Returns:
        (metrics, novel_training, novel_known): metrics has ``per_formula`` and ``totals`` with
        unique, novel_vs_training, novel_vs_known, novel (both), their rates of unique,
        known (structures of that formula), covered_known, cov_recall, cov_precision;
        the two boolean arrays flag each generated structure.
    """
    st = settings or MatchSettings()
    gen = list(generated)
    novel_t = np.ones(len(gen), dtype=bool)
    novel_k = np.ones(len(gen), dtype=bool)
    if gen and training:
        novel_t = np.array(
            [m is None for m in StructureIndex(list(training), st).find_matches(gen)]
        )
    if gen and known:
        novel_k = np.array([m is None for m in StructureIndex(list(known), st).find_matches(gen)])
    g_formula = [s.composition.reduced_formula for s in gen]
    k_formula = [s.composition.reduced_formula for s in known]
    per: dict[str, Any] = {}
    for f in sorted(set(g_formula)):
        idx = [i for i, x in enumerate(g_formula) if x == f]
        kidx = [i for i, x in enumerate(k_formula) if x == f]
        covered = 0
        if kidx:
            index = StructureIndex([gen[i] for i in idx], st)
            covered = sum(m is not None for m in index.find_matches([known[i] for i in kidx]))
        n = len(idx)
        per[f] = {
            "unique": n,
            "novel_vs_training": int(novel_t[idx].sum()),
            "novel_vs_known": int(novel_k[idx].sum()),
            "novel": int((novel_t & novel_k)[idx].sum()),
            "known": len(kidx),
            "covered_known": int(covered),
        }
    tot = {
        key: sum(v[key] for v in per.values())
        for key in (
            "unique",
            "novel_vs_training",
            "novel_vs_known",
            "novel",
            "known",
            "covered_known",
        )
    }
    for d in [*per.values(), tot]:
        for key in ("novel_vs_training", "novel_vs_known", "novel"):
            d[f"{key}_rate"] = _rate(d[key], d["unique"])
        d["cov_recall"] = _rate(d["covered_known"], d["known"])
        d["cov_precision"] = _rate(d["unique"] - d["novel_vs_known"], d["unique"])
    return {"per_formula": per, "totals": tot, "match": asdict(st)}, novel_t, novel_k
