"""Reference phases for the convex hull, on the same energy scale as the candidates.

An E_hull is only meaningful when the candidate and the hull share one energy scale:

* ML backends (and GPAW): the known phases of the target chemical system are taken from the
  store and recomputed with the *same* backend (relaxed with the same settings, or single
  points), once per run (their own rule output, reused by every shard and by ``ehull``).
* VASP: the store's MP formation energies define the hull; total energies on the MP2020 scale
  are rebuilt as ``E_f + sum_el x_el mu_el`` with MP elemental reference energies ``mu`` (from
  the store's elemental entries when it carries total energies, else a JSON file).

Only phases near the hull are recomputed (``max_e_above_hull``: on the store's own
formation-energy hull *or* by the label E_hull, the store's ``e_above_hull`` column), plus the
lowest entry of each element; the rest cannot move the hull much and would cost most of the
budget. Known formulas with a label within the window but no stored structure (the bundled
2018 set lacks e.g. MgMn2O4) get a template-built stand-in, relaxed the same way and marked
``origin = template:<parent>`` (:func:`template_phases`, in
:mod:`matdisco.relax.reference_templates`, re-exported here).

With the closed loop (``loop.use``, :mod:`matdisco.loop`) every knowledge-base record of the
chemical system *on the backend's energy scale* joins the reference as computed by its run (not
recomputed; ``origin = loop:<run>/<candidate id>``, ``steps`` 0); records on another scale are
skipped and counted in the log. A formula so covered gets no template stand-in.

The module is ~660 lines (over the ~600-line guide; the template stand-ins already live in
:mod:`matdisco.relax.reference_templates`) because the selection of phases, the per-backend
energy-scale rules and the reference file format are one contract that the ehull stage checks.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from matdisco.relax.optimize import RelaxResult, optimizer_settings
from matdisco.relax.reference_templates import missing_known_phases, template_phases
from matdisco.relax.shards import ProgressFile, content_hash, process_structures, write_records
from matdisco.settings import EHullReferenceSettings, RelaxPrescreenSettings, RelaxSettings
from matdisco.store import atomic_write, read_entries, read_structure_arrays

if TYPE_CHECKING:
    from pymatgen.analysis.phase_diagram import PhaseDiagram

    from matdisco.relax.backends import Backend

__all__ = [
    "REFERENCE_COLUMNS",
    "REFERENCE_REQUIRED",
    "validate_reference",
    "store_hull",
    "select_reference",
    "missing_known_phases",
    "template_phases",
    "compute_reference",
    "vasp_reference",
    "load_reference",
    "phase_diagram",
    "hull_screen",
    "elemental_references",
]

log = logging.getLogger(__name__)

REFERENCE_COLUMNS = (
    "id",
    "formula",
    "composition",
    "nsites",
    "energy_per_atom",
    "energy_scale",
    "status",
    "reason",
    "steps",
    "store_formation_energy_per_atom",
    "store_e_above_hull",
    "store_hull_e_above_hull",
    "e_above_hull_model",
    "origin",
    "label_e_above_hull",
)
#: columns a reference table must have (the others of :data:`REFERENCE_COLUMNS` are optional;
#: documented in docs/interfaces.md)
REFERENCE_REQUIRED = ("id", "composition", "energy_per_atom", "energy_scale", "status")


def _in_system(chemsys: str, elements: set[str]) -> bool:
    return set(chemsys.split("-")) <= elements


def store_hull(store_path: str | Path, elements: Sequence[str]) -> pd.DataFrame:
    """Store entries of the chemical system with their E_hull on the store's formation energies.

    Returns:
        The entry rows (index = store row) with an added ``store_hull_e_above_hull`` column.
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition, Element

    els = set(elements)
    df = read_entries(store_path)
    df = df[df["chemsys"].map(lambda c: _in_system(c, els))]
    df = df[np.isfinite(df["formation_energy_per_atom"].to_numpy(dtype=float))].copy()
    missing = els - {c for c in df["chemsys"] if "-" not in c}
    if missing:
        raise ValueError(
            f"store {store_path} has no elemental entry for {sorted(missing)}: the hull needs one"
        )
    pd_entries = [
        PDEntry(Composition(c), float(ef) * Composition(c).num_atoms, name=i)
        for i, c, ef in zip(
            df["id"], df["composition"], df["formation_energy_per_atom"], strict=True
        )
    ]
    # formation energies are relative to the elements: pin each element at 0 as well
    pd_entries += [PDEntry(Composition(el), 0.0, name=f"ref-{el}") for el in els]
    pdg = PhaseDiagram(pd_entries, elements=[Element(e) for e in sorted(els)])
    df["store_hull_e_above_hull"] = [
        pdg.get_e_above_hull(e, allow_negative=True) for e in pd_entries[: len(df)]
    ]
    return df


def select_reference(
    store_path: str | Path,
    elements: Sequence[str],
    *,
    max_e_above_hull: float | None = 0.1,
    max_sites: int | None = None,
    include_label_phases: bool = True,
) -> pd.DataFrame:
    """Known phases to recompute: near the store hull, plus the lowest entry of each element.

    Args:
        store_path: the entry store.
        elements: the target chemical system.
        max_e_above_hull: keep phases with store-hull E_hull <= this (eV/atom); None = all.
        max_sites: skip cells larger than this (the elemental minimum is always kept).
        include_label_phases: also keep phases whose label E_hull (the store's
            ``e_above_hull`` column: MP's E_hull, from the formula-level labels for the bundled
            data) is within ``max_e_above_hull``, wherever the store's formation-energy hull
            places them (e.g. Mg2Mn3O8: label 0, 0.31 eV/atom above the 2018 store hull).
    """
    df = store_hull(store_path, elements)
    keep = np.ones(len(df), dtype=bool)
    if max_e_above_hull is not None:
        near = df["store_hull_e_above_hull"].to_numpy() <= max_e_above_hull + 1e-9
        if include_label_phases and "e_above_hull" in df.columns:
            label = df["e_above_hull"].to_numpy(dtype=float)
            near |= np.isfinite(label) & (label <= max_e_above_hull + 1e-9)
        keep &= near
    if max_sites is not None:
        keep &= df["nsites"].to_numpy() <= max_sites
    elemental = df["nelements"].to_numpy() == 1
    for el in set(elements):
        rows = np.flatnonzero(elemental & (df["chemsys"].to_numpy() == el))
        best = rows[np.argmin(df["formation_energy_per_atom"].to_numpy()[rows])]
        keep[best] = True
    sel = df[keep].sort_values(["nelements", "formula", "store_hull_e_above_hull"], kind="stable")
    log.info(
        "reference: %d of %d store phases of %s", len(sel), len(df), "-".join(sorted(elements))
    )
    return sel


def phase_diagram(ref: pd.DataFrame, name_col: str = "id") -> PhaseDiagram:
    """PhaseDiagram from a reference table (rows with a finite ``energy_per_atom``).

    Entries are named by ``name_col`` (the id, so decompositions name the reference phases).
    """
    from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
    from pymatgen.core import Composition

    ok = ref[np.isfinite(ref["energy_per_atom"].to_numpy(dtype=float))]
    entries = [
        PDEntry(Composition(c), float(e) * Composition(c).num_atoms, name=str(i))
        for i, c, e in zip(ok[name_col], ok["composition"], ok["energy_per_atom"], strict=True)
    ]
    return PhaseDiagram(entries)


def _with_model_hull(ref: pd.DataFrame) -> pd.DataFrame:
    ref = ref.copy()
    finite = np.isfinite(ref["energy_per_atom"].to_numpy(dtype=float))
    ref["e_above_hull_model"] = np.nan
    if finite.any():
        from pymatgen.analysis.phase_diagram import PDEntry
        from pymatgen.core import Composition

        try:
            pdg = phase_diagram(ref)
        except ValueError as err:
            log.warning("no reference hull: %s", err)
            return ref
        ref.loc[finite, "e_above_hull_model"] = [
            pdg.get_e_above_hull(
                PDEntry(Composition(c), float(e) * Composition(c).num_atoms), allow_negative=True
            )
            for c, e in zip(
                ref.loc[finite, "composition"], ref.loc[finite, "energy_per_atom"], strict=True
            )
        ]
    return ref


def compute_reference(
    store_path: str | Path,
    out_jsonl: str | Path,
    out_csv: str | Path,
    progress_path: str | Path,
    *,
    elements: Sequence[str],
    backend: str,
    backend_options: Mapping[str, Any] | None = None,
    relax: RelaxSettings | Mapping[str, Any] | None = None,
    reference: EHullReferenceSettings | Mapping[str, Any] | None = None,
    threads: int = 1,
    backend_obj: Backend | None = None,
    templates: dict[str, Any] | None = None,
    oxidation_states: dict[str, Sequence[int]] | None = None,
    match: dict[str, Any] | None = None,
    known: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Recompute the known phases of the chemical system with the candidates' backend.

    Known formulas without a stored structure (:func:`missing_known_phases`, e.g. from the
    label table) get a template stand-in (:func:`template_phases`, at most
    ``reference.max_template_phases``), relaxed like the stored phases; their ``origin`` says
    so. VASP uses no template phases (its reference is MP's energies).

    For ``backend == "vasp"`` nothing is computed: see :func:`vasp_reference`.

    Args:
        store_path: the entry store.
        out_jsonl: per-phase records (JSON lines, meta first), written at the end.
        out_csv: the reference table (:data:`REFERENCE_COLUMNS`).
        progress_path: resumable progress file (as for candidate shards).
        elements: the target chemical system.
        backend: backend name.
        backend_options: ``relax.<backend>``.
        relax: the ``relax`` settings (optimiser settings reused for the phases; a mapping is
            read by :meth:`RelaxSettings.coerce`).
        reference: ``ehull.reference`` settings (``mode`` relax|static, ``max_e_above_hull``,
            ``max_sites``, and for VASP ``elemental_references``; a mapping is read by
            :meth:`EHullReferenceSettings.coerce`).
        threads: torch threads (BLAS always uses one).
        backend_obj: an already created backend (tests, benchmarks).
        templates: the ``templates`` config section (template phases).
        oxidation_states: ``target.oxidation_states`` (template phases).
        match: StructureMatcher tolerances (the ``pool`` section).
        known: the ``known`` config section (sources of known formulas), with the ``loop``
            entry of :func:`matdisco.loop.workflow_view` when ``loop.use`` is on (knowledge-base
            phases on the backend's scale join the reference).
    """
    from matdisco.relax.backends import get_backend

    reference = EHullReferenceSettings.coerce(reference)
    settings = RelaxSettings.coerce(relax)
    sel = select_reference(
        store_path,
        elements,
        max_e_above_hull=reference.max_e_above_hull,
        max_sites=reference.max_sites,
        include_label_phases=reference.include_label_phases,
    )
    sel["origin"] = "store"
    sel["label_e_above_hull"] = sel["e_above_hull"] if "e_above_hull" in sel.columns else np.nan
    loop_entry = (known or {}).get("loop")
    if backend == "vasp":
        ref = vasp_reference(store_path, sel, elements, reference.elemental_references)
        loop_rows, loop_structs = _loop_phases(loop_entry, elements, "vasp-pbe/mp2020")
        ref = (
            _with_model_hull(pd.concat([ref, loop_rows], ignore_index=True))
            if len(loop_rows)
            else ref
        )
        write_records(
            out_jsonl,
            _loop_results(loop_rows, loop_structs),
            {"backend": "vasp", "mode": "store", "n": len(ref)},
        )
        _write_csv(out_csv, ref)
        return ref
    be = backend_obj or get_backend(backend, backend_options, threads=threads)
    loop_rows, loop_structs = _loop_phases(loop_entry, elements, be.energy_scale)
    arrays = read_structure_arrays(store_path, sel.index.to_numpy())
    structures = arrays.structures()
    n_tpl = reference.max_template_phases
    if n_tpl:
        missing = missing_known_phases(
            store_path,
            elements,
            max_e_above_hull=reference.max_e_above_hull,
            known=known,
        )
        covered = set(loop_rows["formula"]) if len(loop_rows) else set()
        if covered & set(missing["formula"]):
            log.info(
                "reference: no template stand-in for %s (knowledge-base phases on this scale)",
                sorted(covered & set(missing["formula"])),
            )
            missing = missing[~missing["formula"].isin(covered)].reset_index(drop=True)
        tpl, tpl_structs = template_phases(
            store_path,
            missing,
            max_formulas=n_tpl,
            templates=templates,
            oxidation_states=oxidation_states,
            match=match,
            max_sites=reference.max_sites,
        )
        if len(tpl):
            from matdisco.store import StructureArrays

            tpl["label_e_above_hull"] = tpl["e_above_hull"]
            sel = pd.concat([sel, tpl], ignore_index=True)
            structures = structures + tpl_structs
            arrays = StructureArrays.from_structures(structures)
    ids = sel["id"].astype(str).tolist()
    mode = reference.mode
    fingerprint = content_hash(
        ids, arrays, {"backend": be.describe(), "relax": optimizer_settings(settings), "mode": mode}
    )
    progress = ProgressFile(progress_path, fingerprint)
    try:
        if mode == "static":
            results = _static(ids, structures, be, progress)
        else:
            results = process_structures(
                ids,
                structures,
                be,
                settings,
                progress,
                batched=settings.batched,
                max_batch=settings.max_batch,
            )
    finally:
        progress.close()
    by_id = {r.id: r for r in results}
    ref = pd.DataFrame(
        {
            "id": ids,
            "formula": sel["formula"].to_numpy(),
            "composition": sel["composition"].to_numpy(),
            "nsites": sel["nsites"].to_numpy(),
            "energy_per_atom": [
                by_id[i].energy_per_atom if by_id[i].status == "ok" else np.nan for i in ids
            ],
            "energy_scale": be.energy_scale,
            "status": [by_id[i].status for i in ids],
            "reason": [by_id[i].reason for i in ids],
            "steps": [by_id[i].steps for i in ids],
            "store_formation_energy_per_atom": sel["formation_energy_per_atom"].to_numpy(),
            "store_e_above_hull": sel["e_above_hull"].to_numpy(),
            "store_hull_e_above_hull": sel["store_hull_e_above_hull"].to_numpy(),
            "origin": sel["origin"].to_numpy(),
            "label_e_above_hull": sel["label_e_above_hull"].to_numpy(dtype=float),
        }
    )
    if len(loop_rows):
        ref = pd.concat([ref, loop_rows.assign(energy_scale=be.energy_scale)], ignore_index=True)
    ref = _with_model_hull(ref)
    write_records(
        out_jsonl,
        list(results) + _loop_results(loop_rows, loop_structs, be.name),
        {
            **be.describe(),
            "mode": mode,
            "elements": list(elements),
            "reference": reference.to_dict(),
        },
    )
    _write_csv(out_csv, ref)
    failed = ref[ref["status"] != "ok"]
    if len(failed):
        log.warning(
            "reference phases that failed (left out of the hull): %s", failed["id"].tolist()
        )
    return ref


def _loop_phases(
    entry: Mapping[str, Any] | None, elements: Sequence[str], energy_scale: str
) -> tuple[pd.DataFrame, list[Any]]:
    """Knowledge-base phases in the reference layout (empty without ``loop.use``)."""
    if not entry:
        return pd.DataFrame(columns=list(REFERENCE_COLUMNS)), []
    from matdisco.loop import reference_rows

    rows, structs = reference_rows(entry, elements, energy_scale)
    rows = rows.assign(
        energy_scale=energy_scale,
        status="ok",
        steps=0,
        store_formation_energy_per_atom=np.nan,
        store_e_above_hull=np.nan,
        store_hull_e_above_hull=np.nan,
        label_e_above_hull=np.nan,
    )
    return rows, structs


def _loop_results(rows: pd.DataFrame, structs: list[Any], backend: str = "") -> list[RelaxResult]:
    """Records of the knowledge-base phases for the reference JSON lines (their structures are
    compared with the candidates by :mod:`matdisco.known`)."""
    return [
        RelaxResult(
            id=str(r["id"]),
            status="ok",
            reason=str(r["reason"]),
            converged=True,
            energy_per_atom=float(r["energy_per_atom"]),
            lattice=s.lattice.matrix.tolist(),
            species=[str(x.specie) for x in s],
            frac_coords=s.frac_coords.tolist(),
            backend=backend,
            energy_scale=str(r["energy_scale"]),
            extra={"origin": str(r["origin"])},
        )
        for (_, r), s in zip(rows.iterrows(), structs, strict=True)
    ]


def _static(
    ids: list[str], structures: list[Any], be: Backend, progress: ProgressFile
) -> list[RelaxResult]:
    """Batched single points of the known phases (no relaxation)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    todo = [i for i, rid in enumerate(ids) if rid not in progress.done]
    energies = be.predict_energy([AseAtomsAdaptor.get_atoms(structures[i]) for i in todo])
    for i, e in zip(todo, energies, strict=True):
        s = structures[i]
        ok = math.isfinite(e)
        corr = be.correction(s, e) if ok else 0.0
        progress.append(
            RelaxResult(
                id=ids[i],
                status="ok" if ok else "failed",
                reason="" if ok else "single point failed",
                converged=True,
                energy_per_atom=(e + corr) / len(s),
                energy_per_atom_raw=e / len(s),
                correction_per_atom=corr / len(s),
                initial_energy_per_atom=e / len(s),
                lattice=s.lattice.matrix.tolist(),
                species=[str(x.specie) for x in s],
                frac_coords=s.frac_coords.tolist(),
                backend=be.name,
                energy_scale=be.energy_scale,
            )
        )
    return [RelaxResult.from_json_dict(progress.done[rid]) for rid in ids]


def elemental_references(
    store_path: str | Path, elements: Sequence[str], path: str | Path | None = None
) -> dict[str, float]:
    """MP2020-scale elemental reference energies (eV/atom) for rebuilding total energies.

    Taken from the store's elemental entries when it carries total energies (``data.source:
    mp``), else from ``path``: a JSON mapping element -> eV/atom, or a matbench-discovery style
    mapping element -> ComputedEntry dict (``energy`` + ``composition``).
    """
    out: dict[str, float] = {}
    if path is not None:
        raw = json.loads(_read_text(path))
        for el, v in raw.items():
            if isinstance(v, dict):
                n = sum(v["composition"].values())
                out[el] = (float(v["energy"]) + float(v.get("correction", 0.0))) / n
            else:
                out[el] = float(v)
    df = read_entries(store_path)
    elem = df[(df["nelements"] == 1) & np.isfinite(df["energy_per_atom"].to_numpy(dtype=float))]
    for el in elements:
        rows = elem[elem["chemsys"] == el]
        if el not in out and len(rows):
            out[el] = float(rows["energy_per_atom"].min())
    missing = set(elements) - set(out)
    if missing:
        raise ValueError(
            f"no MP elemental reference energy for {sorted(missing)}: "
            "the store has no total energies "
            "(bundled data) - set ehull.reference.elemental_references to a JSON file"
        )
    return {el: out[el] for el in elements}


def _read_text(path: str | Path) -> str:
    import gzip

    p = Path(path)
    if p.suffix == ".gz":
        with gzip.open(p, "rt", encoding="utf-8") as fh:
            return fh.read()
    return p.read_text(encoding="utf-8")


def vasp_reference(
    store_path: str | Path,
    sel: pd.DataFrame,
    elements: Sequence[str],
    elemental_path: str | Path | None,
) -> pd.DataFrame:
    """Reference table on the MP2020 VASP scale from store formation energies (no computation).

    ``energy_per_atom = E_f + sum_el x_el mu_el``. With the bundled store the formation
    energies carry MP's 2018 (legacy) corrections while VASP candidates get MP2020 ones: the
    scale label then says ``mp-store-formation`` so the mismatch (tens of meV/atom for oxides)
    stays visible.
    """
    from pymatgen.core import Composition

    mu = elemental_references(store_path, elements, elemental_path)
    e = []
    for c, ef in zip(sel["composition"], sel["formation_energy_per_atom"], strict=True):
        comp = Composition(c)
        e.append(
            float(ef) + sum(comp.get_atomic_fraction(el) * mu[str(el)] for el in comp.elements)
        )
    ref = pd.DataFrame(
        {
            "id": sel["id"].to_numpy(),
            "formula": sel["formula"].to_numpy(),
            "composition": sel["composition"].to_numpy(),
            "nsites": sel["nsites"].to_numpy(),
            "energy_per_atom": e,
            "energy_scale": "vasp-pbe/mp2020",
            "status": "ok",
            "reason": "rebuilt from store formation energies + MP elemental references",
            "steps": 0,
            "store_formation_energy_per_atom": sel["formation_energy_per_atom"].to_numpy(),
            "store_e_above_hull": sel["e_above_hull"].to_numpy(),
            "store_hull_e_above_hull": sel["store_hull_e_above_hull"].to_numpy(),
            "origin": "store",
            "label_e_above_hull": sel["e_above_hull"].to_numpy(dtype=float),
        }
    )
    return _with_model_hull(ref)


def _write_csv(path: str | Path, ref: pd.DataFrame) -> None:
    with atomic_write(path) as tmp:
        ref[[c for c in REFERENCE_COLUMNS if c in ref.columns]].to_csv(tmp, index=False)


def validate_reference(ref: pd.DataFrame, source: str | Path = "reference") -> None:
    """Check a reference table before it is used.

    Raises:
        ValueError: naming ``source`` and the problem: a missing column of
            :data:`REFERENCE_REQUIRED`, no usable phase (status ``ok`` with a finite
            ``energy_per_atom``), or more than one ``energy_scale``.
    """
    missing = [c for c in REFERENCE_REQUIRED if c not in ref.columns]
    if missing:
        raise ValueError(
            f"{source}: reference table lacks column(s) {missing} "
            f"(required: {list(REFERENCE_REQUIRED)}; see docs/interfaces.md)"
        )
    ok = (ref["status"].astype(str) == "ok") & np.isfinite(
        pd.to_numeric(ref["energy_per_atom"], errors="coerce").to_numpy(dtype=float)
    )
    if not ok.any():
        raise ValueError(
            f"{source}: no reference phase with status 'ok' and a finite energy_per_atom"
        )
    scales = set(ref["energy_scale"].astype(str))
    if len(scales) != 1:
        raise ValueError(f"{source}: reference mixes energy scales {sorted(scales)}")


def load_reference(path: str | Path) -> pd.DataFrame:
    """Read and validate a reference table (written by :func:`compute_reference`).

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: see :func:`validate_reference`.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"reference table {path} not found")
    ref = pd.read_csv(path, dtype={"id": str})
    validate_reference(ref, path)
    return ref


def hull_screen(
    reference_path: str | Path,
    energy_scale: str,
    cfg: RelaxPrescreenSettings | Mapping[str, Any] | None = None,
) -> tuple[Callable[..., list[str]], Callable[..., str] | None]:
    """Pre-screen and early-stop functions against the reference hull.

    Args:
        reference_path: reference table (CSV).
        energy_scale: the backend's scale; must equal the reference's.
        cfg: ``relax.prescreen`` settings (a mapping is read by
            :meth:`RelaxPrescreenSettings.coerce`): ``max_e_above_hull`` (unrelaxed single point,
            eV/atom; None rejects nothing), ``early_stop_e_above_hull`` and
            ``early_stop_after_steps`` (None = no early stop).

    Returns:
        ``(prescreen, early_stop)`` callables for :func:`~matdisco.relax.shards.process_structures`.
    """
    from pymatgen.analysis.phase_diagram import PDEntry
    from pymatgen.core import Composition

    ref = load_reference(reference_path)
    scales = set(ref["energy_scale"].astype(str))
    if scales != {energy_scale}:
        raise ValueError(
            f"reference energies are on {sorted(scales)}, candidates on {energy_scale}: "
            "refusing to mix"
        )
    pdg = phase_diagram(ref)
    hull_els = {str(e) for e in pdg.elements}

    def e_hull(comp: Composition, e_pa: float) -> float:
        if not {str(e) for e in comp.elements} <= hull_els or not math.isfinite(e_pa):
            return float("nan")
        return pdg.get_e_above_hull(PDEntry(comp, e_pa * comp.num_atoms), allow_negative=True)

    cfg = RelaxPrescreenSettings.coerce(cfg)
    thr = cfg.max_e_above_hull  # None: record the unrelaxed E_hull, reject nothing

    def prescreen(ids: list[str], structures: list[Any], e_pa: list[float]) -> list[str]:
        out = []
        for s, e in zip(structures, e_pa, strict=True):
            if not math.isfinite(e):
                out.append("pre-screen: single point failed")
                continue
            eh = e_hull(s.composition, e)
            bad = thr is not None and eh > float(thr)
            out.append(f"pre-screen: unrelaxed E_hull {eh:.3f} > {thr:g} eV/atom" if bad else "")
        return out

    after = cfg.early_stop_after_steps
    e_thr = cfg.early_stop_e_above_hull
    if after is None or e_thr is None:
        return prescreen, None

    def early_stop(rid: str, atoms: Any, energy: float, step: int) -> str:
        if step < int(after) or step % 10:
            return ""
        comp = Composition(atoms.get_chemical_formula())
        eh = e_hull(comp, energy / len(atoms))  # early stop is for backends without corrections
        return (
            f"early stop: E_hull {eh:.3f} > {e_thr:g} eV/atom after {step} steps"
            if eh > float(e_thr)
            else ""
        )

    return prescreen, early_stop
