"""Typed settings of the screen of relaxed candidates.

Drafted from workflow/schemas/config.schema.yaml by scripts/gen_settings.py; the schema
and these classes are kept in agreement by tests/test_settings.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from matdisco.settings._base import SettingsBase
from matdisco.settings.discovery import EmbeddingName, EmbeddingStat

__all__ = [
    "ScreenThresholdsSettings",
    "ScreenPourbaixSettings",
    "ScreenBandgapHSEMappingSettings",
    "ScreenBandgapLightGBMSettings",
    "ScreenBandgapVASPSettings",
    "ScreenBandgapSettings",
    "ScreenXRDSettings",
    "ScreenSettings",
]


@dataclass(frozen=True)
class ScreenThresholdsSettings(SettingsBase):
    """``screen.thresholds``: the screen's criteria (defaults = the seed photoanode screen).

    Attributes:
        e_above_hull_max: largest energy above hull, eV/atom (also the filter before the Pourbaix
            stage)
        dG_pbx_max: largest Pourbaix decomposition energy ΔG_pbx, eV/atom
        gap_min: smallest (HSE-level) band gap, eV
        gap_max: largest (HSE-level) band gap, eV
    """

    section: ClassVar[str] = "screen.thresholds"

    e_above_hull_max: float = 0.08
    dG_pbx_max: float = 0.59
    gap_min: float = 1.6
    gap_max: float = 3.0


@dataclass(frozen=True)
class ScreenPourbaixSettings(SettingsBase):
    """``screen.pourbaix``: Pourbaix decomposition energy (pymatgen PourbaixDiagram, MP aqueous
    scheme, offline data).

    Attributes:
        potential_vs_rhe: electrode potential of the screen, V vs RHE (V_SHE = U_RHE - 0.0591 pH)
        ph_min: lower end of the pH range
        ph_max: upper end of the pH range
        n_ph: pH grid points (ΔG_pbx is the maximum over them; both ends included)
        ion_concentration: concentration of every dissolved ion, mol/L
        solids: entry store whose formation energies give the known solids (incl. hydroxides, H2O)
        ion_references: MP aqueous ion reference data (JSON)
        elemental_references: MP elemental reference entries (JSON), to rebuild MP-scale total
            energies
        max_candidates: evaluate at most this many E_hull-passing candidates (lowest E_hull first)
    """

    section: ClassVar[str] = "screen.pourbaix"

    potential_vs_rhe: float = 1.5
    ph_min: float = 0.0
    ph_max: float = 14.0
    n_ph: int = 141
    ion_concentration: float = 1e-06
    solids: str = "resources/bundled/mp2018_structures.h5"
    ion_references: str = "resources/bundled/mp_aqueous_ion_references.json.gz"
    elemental_references: str = (
        "resources/bundled/mp_elemental_reference_entries_2023-02-07.json.gz"
    )
    max_candidates: int = 200


@dataclass(frozen=True)
class ScreenBandgapHSEMappingSettings(SettingsBase):
    """``screen.bandgap.hse_mapping``: gap_hse_est = slope * PBE gap + intercept (non-metals); an
    estimate, cite source.

    Attributes:
        slope: dimensionless
        intercept: eV
        source: where slope and intercept come from (recorded in the outputs)
    """

    section: ClassVar[str] = "screen.bandgap.hse_mapping"

    slope: float = 1.348
    intercept: float = 0.913
    source: str = (
        "Setyawan et al., ACS Comb. Sci. 13, 382 (2011), doi:10.1021/co200012w: least-squares "
        "fit of experimental gaps vs PBE gaps (AFLOW's fitted gap), used as a stand-in for "
        "HSE06"
    )


@dataclass(frozen=True)
class ScreenBandgapLightGBMSettings(SettingsBase):
    """``screen.bandgap.lightgbm``: LightGBM hyperparameters of every member (classifier and
    regressor); threads come from the rule.

    Attributes:
        n_estimators: boosting rounds
        learning_rate: shrinkage
        num_leaves: leaves per tree
        min_child_samples: fewest rows per leaf
        subsample: row fraction per tree
        colsample_bytree: feature fraction per tree
        max_bin: histogram bins per feature
    """

    section: ClassVar[str] = "screen.bandgap.lightgbm"

    n_estimators: int = 400
    learning_rate: float = 0.075
    num_leaves: int = 127
    min_child_samples: int = 10
    subsample: float = 0.8
    colsample_bytree: float = 0.5
    max_bin: int = 63


@dataclass(frozen=True)
class ScreenBandgapVASPSettings(SettingsBase):
    """``screen.bandgap.vasp``: HSE06 inputs (pymatgen MPHSEBSSet, mode gap, POTCAR.spec) for
    cluster runs.

    Attributes:
        reciprocal_density: k-points per reciprocal Angstrom^3
        user_incar_settings: INCAR overrides on top of MPHSEBSSet
        results_dir: folder with <candidate id>/vasprun.xml of finished runs (null = none yet)
    """

    section: ClassVar[str] = "screen.bandgap.vasp"

    reciprocal_density: float = 50.0
    user_incar_settings: dict[str, Any] = field(default_factory=dict)
    results_dir: str | None = None


@dataclass(frozen=True)
class ScreenBandgapSettings(SettingsBase):
    """``screen.bandgap``: band-gap surrogate (LightGBM on the store's MP PBE gaps) and the DFT
    paths.

    Attributes:
        model: structure = composition + cell + site-environment features of the relaxed
            structure (neighbour-list statistics); composition = the earlier composition (+ cell)
            model, kept as the fallback
        structure_features: add cheap structure features (volume/atom, density, packing, lattice
            ratios) to the composition features
        test_fraction: fraction of reduced formulas held out for the reported MAE (grouped split)
        n_members: ensemble members (each trained without one fold of the training split); their
            spread is gap_pbe_ml_std
        evaluate_random_split: also hold out a random row split (test_fraction of the rows outside
            the grouped test) and score the same ensemble on it
        n_bootstrap: row-bootstrap replicates of the 95% intervals of the held-out MAEs
        gap_window: true PBE gap window (eV) of the extra non-metal MAE (the screening window)
        max_train: random subset of this many training entries (quick runs); null = all
        seed: seed of the splits and of LightGBM
        hse_mapping: gap_hse_est = slope * PBE gap + intercept (non-metals); an estimate, cite
            source
        embeddings: element-embedding tables of features.elmd_table whose per-dimension
            statistics (embedding_stats) are added to the gap features; [] = none
        embedding_stats: statistics of every embedding dimension (fraction-weighted mean and
            standard deviation, minimum, maximum)
        structure_embedding: learned per-structure features added to the gap features: chgnet =
            mean and maximum over the atoms of CHGNet 0.3.0's atom features (weights of the
            chgnet wheel; any relax backend); null = none
        structure_embedding_file: precomputed structure embeddings (scripts/chgnet_embeddings.py)
            reused for store entries whose id and structure hash match; the others are computed
            (about 20 structures/s on 2 cores); null = compute every one
        lightgbm: LightGBM hyperparameters of every member (classifier and regressor); threads come
            from the rule
        dft_max_candidates: vasp_hse / gpaw_pbe: at most this many E_hull-passing candidates (lowest
            first)
        vasp: HSE06 inputs (pymatgen MPHSEBSSet, mode gap, POTCAR.spec) for cluster runs
    """

    section: ClassVar[str] = "screen.bandgap"

    model: Literal["structure", "composition"] = "structure"
    structure_features: bool = True
    test_fraction: float = 0.1
    n_members: int = 5
    evaluate_random_split: bool = True
    n_bootstrap: int = 1000
    gap_window: tuple[float, ...] = (1.6, 3.0)
    max_train: int | None = None
    seed: int = 0
    hse_mapping: ScreenBandgapHSEMappingSettings = field(
        default_factory=ScreenBandgapHSEMappingSettings
    )
    embeddings: tuple[EmbeddingName, ...] = ("megnet16", "oliynyk")
    embedding_stats: tuple[EmbeddingStat, ...] = ("minimum", "maximum")
    structure_embedding: str | None = "chgnet"
    structure_embedding_file: str | None = "resources/bundled/chgnet_embeddings_mp2018.h5"
    lightgbm: ScreenBandgapLightGBMSettings = field(default_factory=ScreenBandgapLightGBMSettings)
    dft_max_candidates: int = 20
    vasp: ScreenBandgapVASPSettings = field(default_factory=ScreenBandgapVASPSettings)


@dataclass(frozen=True)
class ScreenXRDSettings(SettingsBase):
    """``screen.xrd``: simulated powder XRD of the finalists (pymatgen XRDCalculator).

    Attributes:
        radiation: X-ray source
        two_theta_min: degrees
        two_theta_max: degrees
        max_structures: CIFs and XRD patterns for at most this many finalists
    """

    section: ClassVar[str] = "screen.xrd"

    radiation: Literal["CuKa", "CuKa1", "MoKa", "CrKa", "FeKa", "CoKa", "AgKa"] = "CuKa"
    two_theta_min: float = 10.0
    two_theta_max: float = 80.0
    max_structures: int = 10


@dataclass(frozen=True)
class ScreenSettings(SettingsBase):
    """``screen``: screening of relaxed candidates (matdisco.screen): E_hull filter, Pourbaix
    stability (ΔG_pbx), band gap, and the final table with CIFs and powder XRD.

    Attributes:
        candidates: relaxed candidates to screen (entry-store .h5 with e_above_hull, energy_scale);
            null = the relax stage's relax/ehull.h5 (a fixture file made by matdisco.screen.fixtures
            lets the screen run without the relax stage)
        thresholds: the screen's criteria (defaults = the seed photoanode screen)
        bandgap_method: the gap used by the screen: surrogate (ML PBE gap + linear HSE-level
            mapping; runs in the default pipeline), vasp_hse (writes MPHSEBSSet HSE06 inputs; reads
            finished runs from screen.bandgap.vasp.results_dir), gpaw_pbe (GPAW PBE single points
            with relax.gpaw settings + the mapping); the surrogate always runs as the fallback
        n_best: rows of final/candidates.csv besides the finalists (best-ranked first); every
            finalist is always listed
        n_fallback_structures: when no candidate passes every criterion, CIFs and XRD of this many
            best-ranked ones (marked not finalists)
        pourbaix: Pourbaix decomposition energy (pymatgen PourbaixDiagram, MP aqueous scheme,
            offline data)
        bandgap: band-gap surrogate (LightGBM on the store's MP PBE gaps) and the DFT paths
        xrd: simulated powder XRD of the finalists (pymatgen XRDCalculator)
    """

    section: ClassVar[str] = "screen"

    candidates: str | None = None
    thresholds: ScreenThresholdsSettings = field(default_factory=ScreenThresholdsSettings)
    bandgap_method: Literal["surrogate", "vasp_hse", "gpaw_pbe"] = "surrogate"
    n_best: int = 20
    n_fallback_structures: int = 3
    pourbaix: ScreenPourbaixSettings = field(default_factory=ScreenPourbaixSettings)
    bandgap: ScreenBandgapSettings = field(default_factory=ScreenBandgapSettings)
    xrd: ScreenXRDSettings = field(default_factory=ScreenXRDSettings)
    include_known_structures: bool = False
