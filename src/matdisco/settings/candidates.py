"""Typed settings of the candidate pool, relaxation and energy above hull.

Drafted from workflow/schemas/config.schema.yaml by scripts/gen_settings.py; the schema
and these classes are kept in agreement by tests/test_settings.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from matdisco.settings._base import SettingsBase

__all__ = [
    "PoolSettings",
    "RelaxPrescreenSettings",
    "RelaxCHGNetSettings",
    "RelaxSevenNetSettings",
    "RelaxGPAWSettings",
    "RelaxVASPSettings",
    "RelaxSettings",
    "EHullReferenceSettings",
    "EHullSettings",
]


@dataclass(frozen=True)
class PoolSettings(SettingsBase):
    """``pool``: the candidate pool (matdisco.pool): generator outputs merged, deduplicated and
    compared with the store's known structures, with validity and novelty flags.

    Attributes:
        ltol: StructureMatcher fractional length tolerance
        stol: StructureMatcher site tolerance (fraction of (V/n)^(1/3))
        angle_tol: StructureMatcher angle tolerance
        fingerprint_tol: pre-filter: only same-formula structures whose neighbour fingerprints
            (sorted nearest-neighbour distances in units of (V/N)^(1/3)) differ by at most this in
            every component are compared with StructureMatcher
        min_distance: validity threshold on the shortest interatomic distance, Angstrom (CDVAE uses
            0.5)
        charge_method: charge-neutrality check (SMACT oxidation states, mixed valence allowed; or
            pymatgen oxidation-state guesses)
        drop_invalid: leave candidates that are not valid and charge neutral out of the pool (they
            still count in the metrics)
        drop_known: leave candidates matching a known structure out of the pool (they still count in
            the metrics)
        write_cifs: write one CIF per pool row to candidates/cifs/
    """

    section: ClassVar[str] = "pool"

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    fingerprint_tol: float = 0.15
    min_distance: float = 0.5
    charge_method: Literal["smact", "pymatgen"] = "smact"
    drop_invalid: bool = False
    drop_known: bool = False
    write_cifs: bool = True


@dataclass(frozen=True)
class RelaxPrescreenSettings(SettingsBase):
    """``relax.prescreen``: single points of the unrelaxed candidates (one energy-only pass per
    shard) and an early stop of relaxations, both against the reference hull (the shards then wait
    for the reference energies).

    Attributes:
        enabled: switch the pre-screen and early stop on/off
        max_e_above_hull: skip candidates whose unrelaxed single-point E_hull exceeds this, eV/atom
            (null = skip none, only record it). Measured on the WGAN-GP pool: unrelaxed E_hull
            5.7-11.5 eV/atom (atoms 0.7-1.2 A apart) relaxed to 0.16-0.61, so no threshold below ~12
            is safe there
        early_stop_e_above_hull: stop relaxations still above this E_hull after
            early_stop_after_steps, eV/atom (null = never)
        early_stop_after_steps: first step at which the early stop is checked (then every 10 steps;
            null = never); measured on random Mg-Mn-O cells: after 100 FIRE steps E_hull was within
            0.05 eV/atom of its final value
    """

    section: ClassVar[str] = "relax.prescreen"

    enabled: bool = True
    max_e_above_hull: float | None = None
    early_stop_e_above_hull: float | None = 0.5
    early_stop_after_steps: int | None = 100


@dataclass(frozen=True)
class RelaxCHGNetSettings(SettingsBase):
    """Settings of config section ``relax.chgnet``.

    Attributes:
        model: CHGNet weights shipped in the chgnet wheel
        batch_size: structures per CHGNet forward pass; 1 on CPU (measured: batch 16 used 3x the CPU
            time and 3.6x the memory of batch 1); larger batches pay off on a GPU
    """

    section: ClassVar[str] = "relax.chgnet"

    model: Literal["0.3.0", "0.2.0"] = "0.3.0"
    batch_size: int = 1


@dataclass(frozen=True)
class RelaxSevenNetSettings(SettingsBase):
    """Settings of config section ``relax.sevennet``.

    Attributes:
        model: SevenNet checkpoint shipped in the sevenn 0.13.0 wheel (offline): 7net-l3i5,
            7net-0 or 7net-mf-0; energies get MP2020 corrections
        modal: 7net-mf-0 only: PBE (MP2020-corrected) or R2SCAN (raw r2SCAN energies)
        batch_size: structures evaluated per forward pass
    """

    section: ClassVar[str] = "relax.sevennet"

    model: str = "7net-l3i5"
    modal: str | None = None
    batch_size: int = 8


@dataclass(frozen=True)
class RelaxGPAWSettings(SettingsBase):
    """Settings of config section ``relax.gpaw``.

    Attributes:
        ecut: plane-wave cutoff
        kpts_density: k-point density
        kpts: explicit Gamma-centred k-point grid
        xc: exchange-correlation functional
        hubbard_u: Hubbard U on d orbitals, eV, e.g. {Mn: 3.9} for MP-like PBE+U (empty = plain PBE)
        smearing: Fermi-Dirac width
        energy_tolerance: SCF energy convergence
        spinpol: spin polarisation (auto = on when a 3d magnetic element is present)
        txt: GPAW text log file (null = none)
    """

    section: ClassVar[str] = "relax.gpaw"

    ecut: float = 400.0
    kpts_density: float = 2.5
    kpts: tuple[int, ...] | None = None
    xc: str = "PBE"
    hubbard_u: dict[str, float] = field(default_factory=dict)
    smearing: float = 0.05
    energy_tolerance: float = 1e-05
    spinpol: Literal["auto"] | bool = "auto"
    txt: str | None = None


@dataclass(frozen=True)
class RelaxVASPSettings(SettingsBase):
    """Settings of config section ``relax.vasp``.

    Attributes:
        command: command run in each structure's folder, e.g. 'srun vasp_std' (required for backend
            vasp)
        workdir: parent folder of the per-structure VASP folders (null = vasp_runs/)
        write_potcar: write real POTCARs (needs PMG_VASP_PSP_DIR); false writes POTCAR.spec
        user_incar_settings: INCAR overrides on top of MPRelaxSet
        timeout_s: wall-time limit per VASP run
    """

    section: ClassVar[str] = "relax.vasp"

    command: str | None = None
    workdir: str | None = None
    write_potcar: bool = False
    user_incar_settings: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None


@dataclass(frozen=True)
class RelaxSettings(SettingsBase):
    """``relax``: relaxation of the candidate pool (matdisco.relax): shards of the pool relaxed with
    one backend, resumably; seeded rattle, then FIRE with a FrechetCellFilter.

    Attributes:
        backend: energy backend: chgnet (CHGNet 0.3.0, MP2020-compatible energies), sevennet
            (optional package sevenn; MP2020 applied), gpaw (real DFT, own energy scale), vasp
            (MPRelaxSet + relax.vasp.command; MP2020 applied), emt (ASE EMT, tests only)
        max_candidates: relax at most this many valid candidates, the first in pool order (null =
            all)
        selection: which max_candidates to take: round_robin (in turn from each generator, and
            within it from each target formula, each in pool order; samples every generator for the
            rates) or pool_order (the first rows of the pool)
        only_valid: skip pool rows whose valid flag is false
        max_sites: skip candidate cells with more sites than this (null = no limit)
        shard_size: candidates per shard (one relax_shard job each; shards share cluster jobs via
            group "relax")
        fmax: force convergence, eV/Angstrom (FrechetCellFilter forces, cell rows included)
        steps: maximum optimiser steps per structure
        rattle: standard deviation of the seeded Gaussian rattle before relaxing, Angstrom (breaks
            symmetry-bound saddles)
        seed: base seed of the rattle (combined with each candidate id)
        relax_cell: relax the cell as well as the positions (FrechetCellFilter)
        timeout_s: per-structure time limit, seconds (batched runs count each structure's share of
            the batch time)
        min_energy_per_atom: an energy below this (eV/atom) counts as exploded and fails the
            structure
        max_volume_ratio: a cell that grows or shrinks by more than this factor counts as exploded
        min_distance: an interatomic distance below this (Angstrom) counts as collapsed
        require_convergence: fail structures that do not reach fmax within steps (false keeps them,
            flagged converged=false)
        batched: relax ML-backend structures of a shard in lockstep, one batched model call per FIRE
            step
        max_batch: most structures relaxed in lockstep at once
        prescreen: single points of the unrelaxed candidates (one energy-only pass per shard) and an
            early stop of relaxations, both against the reference hull (the shards then wait for the
            reference energies)
        chgnet: ``relax.chgnet``
        sevennet: ``relax.sevennet``
        gpaw: ``relax.gpaw``
        vasp: ``relax.vasp``
    """

    section: ClassVar[str] = "relax"

    backend: Literal["chgnet", "sevennet", "gpaw", "vasp", "emt"] = "chgnet"
    max_candidates: int | None = 24
    selection: Literal["round_robin", "pool_order"] = "round_robin"
    only_valid: bool = True
    max_sites: int | None = 60
    shard_size: int = 12
    fmax: float = 0.1
    steps: int = 200
    rattle: float = 0.02
    seed: int = 0
    relax_cell: bool = True
    timeout_s: float = 300.0
    min_energy_per_atom: float = -20.0
    max_volume_ratio: float = 3.0
    min_distance: float = 0.5
    require_convergence: bool = False
    batched: bool = True
    max_batch: int = 64
    prescreen: RelaxPrescreenSettings = field(default_factory=RelaxPrescreenSettings)
    chgnet: RelaxCHGNetSettings = field(default_factory=RelaxCHGNetSettings)
    sevennet: RelaxSevenNetSettings = field(default_factory=RelaxSevenNetSettings)
    gpaw: RelaxGPAWSettings = field(default_factory=RelaxGPAWSettings)
    vasp: RelaxVASPSettings = field(default_factory=RelaxVASPSettings)


@dataclass(frozen=True)
class EHullReferenceSettings(SettingsBase):
    """``ehull.reference``: the known phases of target.elements from the store, recomputed with the
    relax backend (ML, GPAW) or taken from MP formation energies (VASP).

    Attributes:
        mode: relax the known phases with the relax settings, or single points of the stored
            structures
        max_e_above_hull: recompute only phases within this of the store's hull, eV/atom (the lowest
            entry of each element is always kept; null = all phases)
        max_sites: skip reference cells with more sites than this (null = no limit)
        elemental_references: VASP backend only: JSON(.gz) of MP elemental reference energies
            (element -> eV/atom or ComputedEntry dict) when the store has no total energies (bundled
            data)
    """

    section: ClassVar[str] = "ehull.reference"

    mode: Literal["relax", "static"] = "relax"
    max_e_above_hull: float | None = 0.1
    max_sites: int | None = 80
    elemental_references: str | None = None
    include_label_phases: bool = True
    max_template_phases: int | None = 8


@dataclass(frozen=True)
class EHullSettings(SettingsBase):
    """``ehull``: energy above hull of relaxed candidates against reference phases on the same
    energy scale.

    Attributes:
        thresholds: metastability thresholds for the rates per generator, eV/atom
        plot_max_e_above_hull: candidates up to this E_hull (eV/atom) are drawn on the hull plot
        reference: the known phases of target.elements from the store, recomputed with the relax
            backend (ML, GPAW) or taken from MP formation energies (VASP)
    """

    section: ClassVar[str] = "ehull"

    thresholds: tuple[float, ...] = (0.2, 0.08)
    plot_max_e_above_hull: float = 0.5
    reference: EHullReferenceSettings = field(default_factory=EHullReferenceSettings)
    below_hull_tolerance: float = 0.005
