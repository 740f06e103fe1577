"""Energy backends behind one interface, chosen by name (:func:`get_backend`).

A backend turns ASE ``Atoms`` into energies, forces and stresses on a named *energy scale*.
Energies on different scales must never share a convex hull: every result carries the scale
(:attr:`Backend.energy_scale`), and the E_hull stage builds its reference hull on that scale.

Backends (name: what; energy scale):

* ``chgnet`` (default): CHGNet 0.3.0 from the wheel; energies already MP2020-compatible;
  ``chgnet-0.3.0/mp2020``.
* ``sevennet``: SevenNet 7net-0 | 7net-l3i5 | 7net-mf-0 (``sevenn`` 0.13.0, weights in its
  wheel); trained on raw PBE(+U), MP2020 applied here per structure; ``sevennet-<model>/mp2020``.
* ``gpaw``: real DFT in-process (PBE, PBE+U, plane waves); GPAW's own reference energies;
  ``gpaw-pbe``.
* ``vasp``: MPRelaxSet inputs, a configured command, vasprun.xml parsed, MP2020 applied;
  ``vasp-pbe/mp2020``.
* ``emt``: ASE EMT (Cu, Ni, Al, ...), a fast stand-in for tests; ``emt``.

ML backends evaluate many structures in one call (:meth:`Backend.predict`), which the
batched optimiser (:func:`matdisco.relax.optimize.relax_batch`) uses; DFT backends are driven
one structure at a time through their ASE calculator (or, for VASP, the code's own relaxer).

Each backend with a config section reads its options as the typed section
(:attr:`Backend.settings_class`, e.g. :class:`matdisco.settings.RelaxCHGNetSettings` for
``relax.chgnet``): unknown keys and wrong types fail at construction, naming the key.

The module stays whole (~680 lines, over the ~600 guide) because it is one concept, the
registry of energy backends behind one interface: the base class, the four in-process
backends (CHGNet, SevenNet, GPAW, EMT), the MP2020 correction they share and
:func:`get_backend`; each backend is ~80-150 lines of model loading, batching and provenance,
and splitting them one per file would scatter the interface without making a part smaller to
read. VASP, which drives an external code, already lives in :mod:`matdisco.relax.vasp`.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from matdisco.settings import (
    RelaxCHGNetSettings,
    RelaxGPAWSettings,
    RelaxSevenNetSettings,
    SettingsBase,
)

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator
    from pymatgen.core import Structure

__all__ = [
    "Backend",
    "BackendUnavailable",
    "CHGNetBackend",
    "SevenNetBackend",
    "SEVENNET_MODELS",
    "GPAWBackend",
    "EMTBackend",
    "BACKENDS",
    "get_backend",
    "mp_parameters",
    "mp2020_correction",
]

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The backend's software is not installed (the message says how to install it)."""


def set_threads(n: int) -> None:
    """Use ``n`` torch threads and a single BLAS/OpenMP thread in this process.

    BLAS stays at one thread whatever ``n``: the optimiser's work is 3x3 linear algebra
    (FrechetCellFilter's expm/logm), which took 10 ms per call with 2 OpenBLAS threads on a busy
    machine and 0.4 ms with 1 (measured); GPAW too runs best on single-threaded BLAS
    (compute-backends notes: 28 s vs 156 s).
    """
    n = max(1, int(n))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"  # read by BLAS libraries loaded from now on (e.g. GPAW's)
    try:  # libraries already loaded ignore the variables: limit them at run time too
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def mp_parameters(structure: Structure) -> dict[str, Any]:
    """The Materials Project run parameters (run type, U values, POTCARs) for a structure.

    Computed from pymatgen's ``MPRelaxSet`` without POTCAR files; exactly what
    ``MaterialsProject2020Compatibility`` needs to decide the corrections.
    """
    from pymatgen.io.vasp.sets import MPRelaxSet

    vis = MPRelaxSet(structure)
    incar = vis.incar
    is_u = bool(incar.get("LDAU", False))
    hubbards = (
        dict(zip([str(s) for s in vis.poscar.site_symbols], incar["LDAUU"], strict=True))
        if is_u
        else {}
    )
    return {
        "run_type": "GGA+U" if is_u else "GGA",
        "is_hubbard": is_u,
        "hubbards": hubbards,
        "potcar_symbols": [f"PBE {s}" for s in vis.potcar_symbols],
    }


def mp2020_correction(structure: Structure, energy: float) -> float:
    """MP2020 correction (eV, total) for a raw PBE(+U) energy of ``structure``.

    Args:
        structure: the (relaxed) structure.
        energy: its raw total energy, eV, on the VASP/MP PBE(+U) scale.

    Returns:
        The total correction in eV (add it to ``energy``).

    Raises:
        ValueError: when MaterialsProject2020Compatibility rejects the entry.
    """
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    entry = ComputedStructureEntry(structure, energy, parameters=mp_parameters(structure))
    out = MaterialsProject2020Compatibility(check_potcar=False).process_entry(entry)
    if out is None:
        raise ValueError(f"MP2020 compatibility rejected {structure.composition.reduced_formula}")
    return float(out.correction)


@dataclass
class Backend:
    """Base class: a named energy model with an ASE calculator.

    Attributes:
        name: registry name (``chgnet``, ``gpaw``, ...).
        energy_scale: label of the energy scale of :meth:`corrected_energy` results.
        batched: whether :meth:`predict` evaluates many structures in one model call.
        options: backend-specific settings from config (``relax.<name>``), as given (recorded by
            :meth:`describe`); a settings object is stored as its ``to_dict()``.
        threads: torch threads of this worker (BLAS always uses one).
        settings: ``options`` read as :attr:`settings_class` (None for a backend without one).
    """

    options: dict[str, Any] = field(default_factory=dict)
    threads: int = 1
    settings: Any = field(default=None, init=False, repr=False)
    name: ClassVar[str] = "base"
    #: the typed ``relax.<name>`` section of this backend (None: options are not read here)
    settings_class: ClassVar[type[SettingsBase] | None] = None
    energy_scale: ClassVar[str] = "undefined"
    batched: ClassVar[bool] = False
    #: whether the backend runs its own relaxation (VASP) instead of ASE's optimiser
    external_relax: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.options, SettingsBase):
            self.options = self.options.to_dict()
        self.options = dict(self.options or {})
        if self.settings_class is not None:
            self.settings = self.settings_class.coerce(self.options)
        set_threads(self.threads)

    def calculator(self, atoms: Atoms) -> Calculator:
        """A fresh ASE calculator suitable for ``atoms``."""
        raise NotImplementedError

    def predict(self, atoms_list: list[Atoms]) -> list[dict[str, Any] | Exception]:
        """Single points for many structures.

        Returns, per structure, a dict with ``energy`` (eV, total, raw), ``forces`` (N, 3) eV/Å,
        ``stress`` (6,) eV/Å^3 Voigt (ASE sign convention) and optionally ``magmoms`` (N,),
        or the exception that structure raised. The default loops over :meth:`calculator`.
        """
        out: list[dict[str, Any] | Exception] = []
        for atoms in atoms_list:
            a = atoms.copy()
            a.calc = self.calculator(a)
            try:
                res = {
                    "energy": a.get_potential_energy(),
                    "forces": a.get_forces(),
                    "stress": a.get_stress(),
                }
                mag = a.calc.results.get("magmoms")
                if mag is not None:
                    res["magmoms"] = np.asarray(mag)
                out.append(res)
            except Exception as err:  # noqa: BLE001 - reported per structure
                out.append(err)
        return out

    def magmoms(self, atoms: Atoms) -> list[float] | None:
        """Magnetic moments (µB per site) at ``atoms``, when the backend predicts them."""
        return None

    def predict_energy(self, atoms_list: list[Atoms]) -> list[float]:
        """Raw total energies (eV) of many structures; NaN where a structure failed."""
        return [
            float(r["energy"]) if isinstance(r, dict) else float("nan")
            for r in self.predict(atoms_list)
        ]

    def correction(self, structure: Structure, energy: float) -> float:
        """Correction (eV, total) that puts a raw energy on :attr:`energy_scale` (default 0)."""
        return 0.0

    def describe(self) -> dict[str, Any]:
        """Name, scale and settings, for provenance."""
        return {"backend": self.name, "energy_scale": self.energy_scale, "options": self.options}


@dataclass
class CHGNetBackend(Backend):
    """CHGNet (default 0.3.0 weights shipped in the wheel; no download).

    CHGNet 0.3.0 was trained on MPtrj energies *with* MP2020 corrections, so its energies are
    already on the MP2020-compatible scale: no correction is applied here.
    """

    name: ClassVar[str] = "chgnet"
    energy_scale: ClassVar[str] = "chgnet-0.3.0/mp2020"
    batched: ClassVar[bool] = True
    settings_class: ClassVar[type[SettingsBase]] = RelaxCHGNetSettings
    _model: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            from chgnet.model import CHGNet
        except ImportError as err:  # pragma: no cover - chgnet is a dependency
            raise BackendUnavailable("chgnet is not installed: pip install chgnet") from err
        version = self.settings.model
        t0 = time.perf_counter()
        self._model = CHGNet.load(model_name=version, use_device="cpu", verbose=False)
        log.info("CHGNet %s loaded in %.1f s", version, time.perf_counter() - t0)
        # 1 on CPU: measured on the 33 Mg-Mn-O reference phases (one efs call, 1 thread),
        # batch 16 took 13.8 s CPU and 7.9 GB peak RSS, batch 4 5.6 s / 5.0 GB, batch 1 4.7 s /
        # 2.2 GB. Larger batches pay off on a GPU.
        self.batch_size = self.settings.batch_size

    @property
    def model(self) -> Any:
        """The loaded CHGNet model."""
        return self._model

    def calculator(self, atoms: Atoms) -> Calculator:
        """A CHGNetCalculator sharing the loaded model."""
        import contextlib
        import io

        from chgnet.model.dynamics import CHGNetCalculator

        with contextlib.redirect_stdout(io.StringIO()):  # it prints "CHGNet will run on cpu"
            return CHGNetCalculator(model=self._model, use_device="cpu")

    def predict(self, atoms_list: list[Atoms]) -> list[dict[str, Any] | Exception]:
        """Batched CHGNet single points (one forward pass per ``batch_size`` structures).

        Energies, forces and stresses only (task ``efs``): measured on 1 CPU thread, asking for
        magnetic moments as well ("efsm") made a batched step ~1.5x slower; they are computed
        once per finished structure instead (:meth:`magmoms`).
        """
        from ase import units
        from ase.stress import full_3x3_to_voigt_6_stress
        from pymatgen.io.ase import AseAtomsAdaptor

        if not atoms_list:
            return []
        structures = [AseAtomsAdaptor.get_structure(a) for a in atoms_list]
        try:
            preds = self._model.predict_structure(
                structures, task="efs", batch_size=self.batch_size
            )
        except Exception:  # noqa: BLE001 - isolate the failing structure(s) one by one
            if len(atoms_list) == 1:
                raise
            return [self._predict_one(s) for s in structures]
        if isinstance(preds, dict):
            preds = [preds]
        out: list[dict[str, Any] | Exception] = []
        for s, p in zip(structures, preds, strict=True):
            out.append(
                {
                    "energy": float(p["e"]) * len(s),
                    "forces": np.asarray(p["f"], dtype=float),
                    "stress": full_3x3_to_voigt_6_stress(
                        np.asarray(p["s"], dtype=float) * units.GPa
                    ),
                }
            )
        return out

    def _predict_one(self, structure: Structure) -> dict[str, Any] | Exception:
        from ase import units
        from ase.stress import full_3x3_to_voigt_6_stress

        try:
            p = self._model.predict_structure(structure, task="efs")
        except Exception as err:  # noqa: BLE001
            return err
        return {
            "energy": float(p["e"]) * len(structure),
            "forces": np.asarray(p["f"], dtype=float),
            "stress": full_3x3_to_voigt_6_stress(np.asarray(p["s"], dtype=float) * units.GPa),
        }

    def magmoms(self, atoms: Atoms) -> list[float] | None:
        """CHGNet magnetic moments (µB, one cheap energy+magmom pass; not computed per step)."""
        from pymatgen.io.ase import AseAtomsAdaptor

        p = self._model.predict_structure(AseAtomsAdaptor.get_structure(atoms), task="em")
        return np.asarray(p["m"], dtype=float).reshape(-1).tolist()

    def predict_energy(self, atoms_list: list[Atoms]) -> list[float]:
        """Batched energy-only CHGNet single points (no forces: cheapest pre-screen)."""
        from pymatgen.io.ase import AseAtomsAdaptor

        if not atoms_list:
            return []
        structures = [AseAtomsAdaptor.get_structure(a) for a in atoms_list]
        try:
            preds = self._model.predict_structure(structures, task="e", batch_size=self.batch_size)
        except Exception:  # noqa: BLE001
            out = []
            for s in structures:
                try:
                    out.append(float(self._model.predict_structure(s, task="e")["e"]) * len(s))
                except Exception:  # noqa: BLE001
                    out.append(float("nan"))
            return out
        if isinstance(preds, dict):
            preds = [preds]
        return [float(p["e"]) * len(s) for s, p in zip(structures, preds, strict=True)]


#: SevenNet checkpoints shipped inside the sevenn 0.13.0 wheel (no download at run time), with
#: the Matbench Discovery F1 each was published with (for provenance and the README table).
SEVENNET_MODELS: dict[str, dict[str, Any]] = {
    "7net-0": {"modals": None, "matbench_f1": 0.724},
    "7net-l3i5": {"modals": None, "matbench_f1": 0.760},
    "7net-mf-0": {"modals": ("PBE", "R2SCAN"), "matbench_f1": None},
}


@dataclass
class SevenNetBackend(Backend):
    """SevenNet (``sevenn`` 0.13.0; checkpoints 7net-0, 7net-l3i5, 7net-mf-0 from its wheel).

    SevenNet models are trained on *uncorrected* MPtrj PBE(+U) energies, so the raw energy of a
    structure is put on the MP2020 scale here: :meth:`correction` applies pymatgen's
    ``MaterialsProject2020Compatibility`` (oxide/anion corrections, GGA/GGA+U mixing for Mn, Fe,
    ...) and the optimiser records it per structure (``correction_per_atom``).

    Options (``relax.sevennet``): ``model`` (7net-0 | 7net-l3i5 | 7net-mf-0), ``modal`` (only
    7net-mf-0: ``PBE``, on the MP2020 scale, or ``R2SCAN``, raw r2SCAN energies with no
    correction and their own scale), ``batch_size`` (structures per forward pass of
    :meth:`predict`).

    The energy scale names model and correction, e.g. ``sevennet-7net-l3i5/mp2020``: a hull
    recomputed with another model (or CHGNet) is a different scale and is refused.
    """

    name: ClassVar[str] = "sevennet"
    energy_scale: ClassVar[str] = "sevennet-7net-0/mp2020"  # set per model in __post_init__
    batched: ClassVar[bool] = True
    settings_class: ClassVar[type[SettingsBase]] = RelaxSevenNetSettings
    _model: Any = field(default=None, init=False, repr=False)
    _calc: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        model = self.settings.model
        if model not in SEVENNET_MODELS:
            raise ValueError(
                f"relax.sevennet.model {model!r} is not one of the checkpoints shipped in the "
                f"sevenn wheel: {sorted(SEVENNET_MODELS)}"
            )
        modals = SEVENNET_MODELS[model]["modals"]
        modal = self.settings.modal
        if modals is None:
            if modal:
                raise ValueError(
                    f"relax.sevennet.modal {modal!r} given, but {model} is not multi-fidelity "
                    "(only 7net-mf-0 takes a modal)"
                )
            modal = None
        else:
            modal = str(modal or "PBE")
            if modal not in modals:
                raise ValueError(f"relax.sevennet.modal {modal!r}: {model} knows {list(modals)}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from sevenn import util as sevenn_util
                from sevenn.calculator import SevenNetCalculator
        except ImportError as err:
            raise BackendUnavailable(
                "relax.backend 'sevennet' needs the package sevenn==0.13.0 (a project "
                "dependency: rerun the install step, `make install`, or "
                "pip install -c requirements.lock sevenn==0.13.0 torch==2.13.0)"
            ) from err
        self.model_name = model
        self.modal = modal
        self.mp2020 = modal in (None, "PBE")
        tag = model if modal is None else f"{model}[{modal}]"
        self.energy_scale = f"sevennet-{tag}/" + ("mp2020" if self.mp2020 else "raw")
        self.batch_size = self.settings.batch_size
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no tensor-product accelerator" on CPU
            cp = sevenn_util.load_checkpoint(model)
            self._model = cp.build_model()
            self._calc = SevenNetCalculator(
                self._model, file_type="model_instance", device="cpu", modal=modal
            )
        self._model.eval()
        self._cutoff = float(self._calc.cutoff)
        self._type_map = dict(self._calc.type_map)
        log.info("SevenNet %s loaded in %.1f s", tag, time.perf_counter() - t0)

    def calculator(self, atoms: Atoms) -> Calculator:
        """The shared SevenNetCalculator (model in single-structure mode)."""
        self._model.set_is_batch_data(False)
        return self._calc

    def _check_species(self, atoms: Atoms) -> None:
        unknown = sorted(set(atoms.get_chemical_symbols()) - self._known_symbols())
        if unknown:
            raise ValueError(f"{self.model_name} has no parameters for {unknown}")

    def _known_symbols(self) -> set[str]:
        from ase.data import chemical_symbols

        return {chemical_symbols[int(z)] for z in self._type_map}

    def predict(self, atoms_list: list[Atoms]) -> list[dict[str, Any] | Exception]:
        """Batched SevenNet single points (``batch_size`` graphs per forward pass).

        A batch that raises is retried one structure at a time, so one bad cell only fails
        itself.
        """
        out: list[dict[str, Any] | Exception] = []
        for k in range(0, len(atoms_list), self.batch_size):
            chunk = atoms_list[k : k + self.batch_size]
            try:
                out.extend(self._forward(chunk))
            except Exception:  # noqa: BLE001 - isolate the failing structure(s)
                for a in chunk:
                    try:
                        out.extend(self._forward([a]))
                    except Exception as err:  # noqa: BLE001 - reported per structure
                        out.append(err)
        return out

    def _forward(self, atoms_list: list[Atoms]) -> list[dict[str, Any]]:
        import sevenn._keys as KEY
        import torch
        from sevenn.atom_graph_data import AtomGraphData
        from sevenn.train.dataload import unlabeled_atoms_to_graph
        from torch_geometric.data import Batch

        graphs = []
        for a in atoms_list:
            self._check_species(a)
            g = AtomGraphData.from_numpy_dict(
                unlabeled_atoms_to_graph(a, self._cutoff, with_shift=False)
            )
            if self.modal:
                g[KEY.DATA_MODALITY] = self.modal
            graphs.append(g)
        batch = Batch.from_data_list(graphs)
        self._model.set_is_batch_data(True)
        try:
            res = self._model(batch)
        finally:
            self._model.set_is_batch_data(False)
        n_at = [len(a) for a in atoms_list]
        energies = res[KEY.PRED_TOTAL_ENERGY].detach().reshape(-1).numpy()
        forces = torch.split(res[KEY.PRED_FORCE].detach(), n_at)
        stress = (-res[KEY.PRED_STRESS].detach()).reshape(len(atoms_list), 6).numpy()
        return [
            {
                "energy": float(energies[i]),
                "forces": forces[i].numpy().astype(float),
                # SevenNet's order is xx yy zz xy yz zx; ASE Voigt is xx yy zz yz xz xy
                "stress": stress[i][[0, 1, 2, 4, 5, 3]].astype(float),
            }
            for i in range(len(atoms_list))
        ]

    def correction(self, structure: Structure, energy: float) -> float:
        """MP2020 correction (oxide, anion, GGA/GGA+U mixing) for the raw SevenNet energy.

        Zero for 7net-mf-0's R2SCAN modal (its own scale, ``.../raw``).
        """
        return mp2020_correction(structure, energy) if self.mp2020 else 0.0

    def describe(self) -> dict[str, Any]:
        """Name, model, modal, scale and settings, for provenance."""
        return {
            **super().describe(),
            "model": self.model_name,
            "modal": self.modal,
            "correction": "MaterialsProject2020Compatibility" if self.mp2020 else "none",
        }


#: elements that get spin polarisation (initial moments) in the GPAW backend
_MAGNETIC = {"V": 3.0, "Cr": 4.0, "Mn": 5.0, "Fe": 5.0, "Co": 3.0, "Ni": 2.0, "Cu": 1.0}


@dataclass
class GPAWBackend(Backend):
    """GPAW plane-wave DFT in-process (PBE; PBE+U on the configured elements).

    GPAW energies are relative to its own atomic references: they live on the ``gpaw-pbe``
    scale and may only be compared with other GPAW energies (never with an MP hull).

    Options (``relax.gpaw``): ``ecut`` (eV), ``kpts_density`` (k-points per Å^-1) or ``kpts``
    ([n1, n2, n3]), ``xc``, ``hubbard_u`` ({element: U eV}, on d orbitals), ``smearing`` (eV),
    ``energy_tolerance`` (eV/electron), ``spinpol`` (auto | true | false), ``txt`` (GPAW log
    file or null).
    """

    name: ClassVar[str] = "gpaw"
    energy_scale: ClassVar[str] = "gpaw-pbe"
    settings_class: ClassVar[type[SettingsBase]] = RelaxGPAWSettings

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            import gpaw  # noqa: F401
        except ImportError as err:
            raise BackendUnavailable(
                "relax.backend 'gpaw' needs GPAW built into the venv: apt-get install libxc-dev "
                "libopenblas-dev libfftw3-dev; "
                "GPAW_CONFIG=envs/gpaw-siteconfig.py pip install gpaw "
                "(the Makefile target 'gpaw' does this)"
            ) from err
        # PBE+U energies are another scale again: the U values are part of the label
        hub = {k: v for k, v in self.settings.hubbard_u.items() if v}
        if hub:
            us = ",".join(f"{k}={v:g}" for k, v in sorted(hub.items()))
            self.energy_scale = f"gpaw-pbe+u({us})"

    def calculator(self, atoms: Atoms) -> Calculator:
        """A GPAW calculator set up for the elements of ``atoms`` (U and spin where needed)."""
        from gpaw import GPAW, PW

        o = self.settings
        symbols = set(atoms.get_chemical_symbols())
        hub = {el: u for el, u in o.hubbard_u.items() if el in symbols and u}
        spin = o.spinpol
        spinpol = bool(symbols & set(_MAGNETIC)) if spin == "auto" else bool(spin)
        if spinpol and not atoms.get_initial_magnetic_moments().any():
            atoms.set_initial_magnetic_moments(
                [_MAGNETIC.get(s, 0.0) for s in atoms.get_chemical_symbols()]
            )
        if o.kpts:
            kpts: Any = {"size": tuple(int(k) for k in o.kpts), "gamma": True}
        else:
            kpts = {"density": o.kpts_density, "gamma": True}
        return GPAW(
            mode=PW(o.ecut),
            xc=o.xc,
            kpts=kpts,
            occupations={"name": "fermi-dirac", "width": o.smearing},
            convergence={"energy": o.energy_tolerance},
            setups={el: f":d,{u}" for el, u in hub.items()} or "paw",
            spinpol=spinpol,
            txt=o.txt,
        )

    def result_extra(self, atoms: Atoms) -> dict[str, Any]:
        """PBE band gap (eV) from the converged calculator of a relaxed structure."""
        from ase.dft.bandgap import bandgap

        gap, p1, p2 = bandgap(atoms.calc, output=None)
        direct = bool(p1 is not None and p2 is not None and p1[1] == p2[1])  # same k-point
        return {"band_gap_pbe_ev": round(float(gap), 4), "band_gap_direct": direct}


@dataclass
class EMTBackend(Backend):
    """ASE's EMT potential: cheap, for tests of the machinery (not for science).

    It has no config section, so it takes no ``options``. ``delay_s`` (a keyword of the
    class, not a config key) sleeps that long per single point, for tests that kill a running
    job: ``EMTBackend(delay_s=0.1)`` or ``get_backend("emt", delay_s=0.1)``.
    """

    delay_s: float = 0.0
    name: ClassVar[str] = "emt"
    energy_scale: ClassVar[str] = "emt"
    batched: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.options:
            raise ValueError(
                f"relax backend 'emt' takes no options (there is no relax.emt section), got "
                f"{sorted(self.options)}"
            )

    def describe(self) -> dict[str, Any]:
        """Name, scale and the test delay (so a progress file is kept only for equal delays)."""
        return {**super().describe(), "delay_s": self.delay_s}

    def calculator(self, atoms: Atoms) -> Calculator:
        """A fresh EMT calculator."""
        from ase.calculators.emt import EMT

        return EMT()

    def predict(self, atoms_list: list[Atoms]) -> list[dict[str, Any] | Exception]:
        """EMT single points (looped; optional per-structure delay)."""
        if self.delay_s:
            time.sleep(self.delay_s * len(atoms_list))
        return super().predict(atoms_list)


def _vasp_backend() -> type[Backend]:
    from matdisco.relax.vasp import VASPBackend

    return VASPBackend


BACKENDS: dict[str, Any] = {
    "chgnet": CHGNetBackend,
    "sevennet": SevenNetBackend,
    "gpaw": GPAWBackend,
    "emt": EMTBackend,
    "vasp": _vasp_backend,
}


def get_backend(
    name: str,
    options: SettingsBase | Mapping[str, Any] | None = None,
    *,
    threads: int = 1,
    **kwargs: Any,
) -> Backend:
    """Create a backend by its config name.

    Args:
        name: one of :data:`BACKENDS` (``chgnet``, ``sevennet``, ``gpaw``, ``vasp``, ``emt``).
        options: backend settings (config ``relax.<name>``, or its settings object).
        threads: torch threads for this worker (BLAS always uses one).
        **kwargs: keywords of the backend class that are not config keys (``delay_s`` of
            :class:`EMTBackend`, for tests).

    Raises:
        ValueError: unknown name.
        BackendUnavailable: the backend's package is missing (message says how to install).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown relax backend {name!r}; choose one of {sorted(BACKENDS)}")
    cls = BACKENDS[name]
    if name == "vasp":
        cls = cls()
    return cls(options=options or {}, threads=threads, **kwargs)
