"""VASP backend: MPRelaxSet inputs written offline, a configured command, vasprun.xml parsed.

The Materials Project's relaxation settings come from pymatgen's ``MPRelaxSet``. Without
POTCAR files (``write_potcar: false``, the default) a ``POTCAR.spec`` names the POTCARs and
the cluster-side command must assemble the POTCAR (e.g. ``cat $PSP/{Mg_pv,Mn_pv,O}/POTCAR``);
with ``write_potcar: true`` pymatgen writes the POTCAR itself (needs ``PMG_VASP_PSP_DIR``).

The result is parsed with pymatgen's ``Vasprun`` into a ``ComputedStructureEntry`` and put on
the MP2020 scale with ``MaterialsProject2020Compatibility`` (the same corrections MP applies),
so VASP candidates compare with MP entries (scale ``vasp-pbe/mp2020``).
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from matdisco.relax.backends import Backend, BackendUnavailable
from matdisco.relax.optimize import RelaxResult, RelaxSettings, check_sane, rattle
from matdisco.settings import RelaxVASPSettings

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator
    from pymatgen.core import Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

__all__ = ["VASPBackend", "write_inputs", "parse_vasprun", "VaspOutcome", "find_vasprun"]

log = logging.getLogger(__name__)


def write_inputs(
    structure: Structure,
    directory: str | Path,
    *,
    user_incar_settings: dict[str, Any] | None = None,
    write_potcar: bool = False,
    nsw: int | None = None,
    ediffg: float | None = None,
) -> Path:
    """Write MPRelaxSet inputs (INCAR, KPOINTS, POSCAR, POTCAR.spec or POTCAR) to ``directory``.

    Args:
        structure: structure to relax.
        directory: run folder (created).
        user_incar_settings: INCAR overrides on top of MPRelaxSet.
        write_potcar: write a real POTCAR (needs PMG_VASP_PSP_DIR) instead of POTCAR.spec.
        nsw: ionic step limit (INCAR NSW); None keeps MPRelaxSet's.
        ediffg: force criterion (INCAR EDIFFG, negative = forces in eV/Å); None keeps MPRelaxSet's.
    """
    from pymatgen.io.vasp.sets import MPRelaxSet

    incar = dict(user_incar_settings or {})
    if nsw is not None:
        incar.setdefault("NSW", int(nsw))
    if ediffg is not None:
        incar.setdefault("EDIFFG", float(ediffg))
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    MPRelaxSet(structure, user_incar_settings=incar).write_input(d, potcar_spec=not write_potcar)
    return d


def find_vasprun(directory: str | Path) -> Path | None:
    """``vasprun.xml`` (or ``.gz``) in ``directory``, or None."""
    for name in ("vasprun.xml", "vasprun.xml.gz"):
        p = Path(directory) / name
        if p.exists():
            return p
    return None


@dataclass
class VaspOutcome:
    """What a VASP run produced, parsed (energies in eV; raw = uncorrected)."""

    entry: ComputedStructureEntry | None
    final_structure: Structure
    energy_raw: float
    energy_corrected: float
    correction: float
    n_ionic_steps: int
    converged_ionic: bool
    converged_electronic: bool
    forces: np.ndarray
    stress_kbar: np.ndarray
    magmoms: list[float] | None
    run_type: str
    correction_error: str = ""


def parse_vasprun(path: str | Path, *, apply_mp2020: bool = True) -> VaspOutcome:
    """Parse a (possibly gzipped) vasprun.xml into energies, final forces/stress and an entry.

    Args:
        path: ``vasprun.xml`` or ``vasprun.xml.gz``.
        apply_mp2020: apply MaterialsProject2020Compatibility (POTCAR hashes not checked).

    Returns:
        The parsed outcome; ``entry`` is None (and ``correction_error`` says why) when the
        compatibility scheme rejects the run (e.g. U values other than MP's).
    """
    from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
    from pymatgen.io.vasp import Vasprun

    vr = Vasprun(
        str(path),
        parse_dos=False,
        parse_eigen=False,
        parse_projected_eigen=False,
        exception_on_bad_xml=False,
    )
    entry = vr.get_computed_entry(inc_structure=True)
    last = vr.ionic_steps[-1]
    raw = float(entry.uncorrected_energy)
    corrected, corr, err = raw, 0.0, ""
    out_entry: Any = entry
    if apply_mp2020:
        processed = MaterialsProject2020Compatibility(check_potcar=False).process_entry(entry)
        if processed is None:
            out_entry, err = None, "MaterialsProject2020Compatibility rejected the run"
        else:
            out_entry, corrected, corr = (
                processed,
                float(processed.energy),
                float(processed.correction),
            )
    mag = None
    try:
        m = vr.final_structure.site_properties.get("magmom")
        mag = (
            None if m is None else [float(np.linalg.norm(x)) if np.ndim(x) else float(x) for x in m]
        )
    except Exception:  # noqa: BLE001
        mag = None
    return VaspOutcome(
        entry=out_entry,
        final_structure=vr.final_structure,
        energy_raw=raw,
        energy_corrected=corrected,
        correction=corr,
        n_ionic_steps=len(vr.ionic_steps),
        converged_ionic=bool(vr.converged_ionic),
        converged_electronic=bool(vr.converged_electronic),
        forces=np.asarray(last.get("forces", np.zeros((len(vr.final_structure), 3))), dtype=float),
        stress_kbar=np.asarray(last.get("stress", np.zeros((3, 3))), dtype=float),
        magmoms=mag,
        run_type=str(vr.run_type),
        correction_error=err,
    )


@dataclass
class VASPBackend(Backend):
    """Relax with VASP (its own optimiser, MPRelaxSet settings) through a configured command.

    Options (``relax.vasp``): ``command`` (shell command run in each structure's folder, e.g.
    ``srun vasp_std``; required), ``workdir`` (parent folder of the per-structure folders),
    ``write_potcar``, ``user_incar_settings``, ``timeout_s`` (per run; else relax.timeout_s).
    """

    name: ClassVar[str] = "vasp"
    energy_scale: ClassVar[str] = "vasp-pbe/mp2020"
    external_relax: ClassVar[bool] = True

    def calculator(self, atoms: Any) -> Calculator:
        """VASP runs through :meth:`relax`, not as an in-process ASE calculator."""
        raise BackendUnavailable("the vasp backend relaxes through its command; no ASE calculator")

    def predict(self, atoms_list: list[Any]) -> list[dict[str, Any] | Exception]:
        """Single points are not offered (a VASP static run per structure is not a pre-screen)."""
        return [BackendUnavailable("no single points with the vasp backend") for _ in atoms_list]

    def correction(self, structure: Structure, energy: float) -> float:
        """MP2020 correction for a raw VASP energy (used for externally parsed energies)."""
        from matdisco.relax.backends import mp2020_correction

        return mp2020_correction(structure, energy)

    def relax(self, rid: str, structure: Structure, settings: RelaxSettings) -> RelaxResult:
        """Write inputs, run the command, parse the result (a failure is returned, not raised).

        An existing ``vasprun.xml`` from a finished earlier run in the structure's folder is
        parsed without running VASP again.
        """
        from ase.units import GPa
        from pymatgen.io.ase import AseAtomsAdaptor

        t0 = time.perf_counter()
        o = RelaxVASPSettings.coerce(self.options)
        command = o.command
        workdir = Path(o.workdir or "vasp_runs") / rid
        base = RelaxResult(
            id=rid, status="failed", backend=self.name, energy_scale=self.energy_scale
        )
        try:
            atoms = rattle(
                AseAtomsAdaptor.get_atoms(structure), settings.rattle, settings.seed, rid
            )
            start = AseAtomsAdaptor.get_structure(atoms)
            done_marker = workdir / "matdisco.done"
            if not (done_marker.exists() and find_vasprun(workdir)):
                if not command:
                    raise BackendUnavailable("relax.vasp.command is not set (e.g. 'srun vasp_std')")
                write_inputs(
                    start,
                    workdir,
                    user_incar_settings=o.user_incar_settings,
                    write_potcar=o.write_potcar,
                    nsw=settings.steps,
                    ediffg=-abs(settings.fmax),
                )
                timeout = float(o.timeout_s or settings.timeout_s)
                with open(workdir / "matdisco_run.log", "w") as logf:
                    proc = subprocess.run(
                        shlex.split(command) if isinstance(command, str) else list(command),
                        cwd=workdir,
                        stdout=logf,
                        stderr=subprocess.STDOUT,
                        timeout=timeout,
                        check=False,
                        env={**os.environ, "OMP_NUM_THREADS": str(self.threads)},
                    )
                if proc.returncode != 0:
                    raise RuntimeError(
                        f"command exited with {proc.returncode} (see {workdir}/matdisco_run.log)"
                    )
                done_marker.write_text("ok\n")
            path = find_vasprun(workdir)
            if path is None:
                raise RuntimeError(f"no vasprun.xml in {workdir}")
            res = parse_vasprun(path)
        except subprocess.TimeoutExpired:
            base.reason = f"timeout after {o.get('timeout_s') or settings.timeout_s:g} s"
            base.wall_s = round(time.perf_counter() - t0, 3)
            return base
        except Exception as err:  # noqa: BLE001 - per-structure failure
            base.reason = f"calculator error: {type(err).__name__}: {err}"
            base.wall_s = round(time.perf_counter() - t0, 3)
            return base
        return outcome_to_result(
            rid, res, structure, settings, self, wall=time.perf_counter() - t0, gpa=GPa
        )


def outcome_to_result(
    rid: str,
    res: VaspOutcome,
    start: Structure,
    settings: RelaxSettings,
    backend: Backend,
    *,
    wall: float,
    gpa: float = 1.0,
) -> RelaxResult:
    """A :class:`RelaxResult` from a parsed VASP run (sanity checks included)."""
    from pymatgen.io.ase import AseAtomsAdaptor

    s = res.final_structure
    n = len(s)
    status, reason = "ok", ""
    atoms = AseAtomsAdaptor.get_atoms(s)
    bad = check_sane(atoms, res.energy_raw, start.volume, settings)
    if bad:
        status, reason = "failed", bad
    elif res.correction_error:
        status, reason = "failed", res.correction_error
    elif not res.converged_electronic:
        status, reason = "failed", "electronic SCF not converged"
    elif not res.converged_ionic:
        reason = f"ionic relaxation not converged in {res.n_ionic_steps} steps"
        if settings.require_convergence:
            status = "failed"
    fmax = float(np.sqrt((res.forces**2).sum(axis=1)).max()) if res.forces.size else float("nan")
    stress_gpa = -res.stress_kbar / 10.0  # VASP: kBar, positive = compressive; ASE sign convention
    voigt = [
        stress_gpa[0, 0],
        stress_gpa[1, 1],
        stress_gpa[2, 2],
        stress_gpa[1, 2],
        stress_gpa[0, 2],
        stress_gpa[0, 1],
    ]
    return RelaxResult(
        id=rid,
        status=status,
        reason=reason,
        converged=res.converged_ionic,
        steps=res.n_ionic_steps,
        energy_per_atom=res.energy_corrected / n
        if math.isfinite(res.energy_corrected)
        else float("nan"),
        energy_per_atom_raw=res.energy_raw / n,
        correction_per_atom=res.correction / n,
        fmax=fmax,
        max_force=fmax,
        stress_gpa=[float(x) for x in voigt],
        forces=np.round(res.forces, 5).tolist(),
        magmoms=res.magmoms,
        volume_ratio=s.volume / start.volume,
        lattice=s.lattice.matrix.tolist(),
        species=[str(x.specie) for x in s],
        frac_coords=s.frac_coords.tolist(),
        wall_s=round(wall, 3),
        backend=backend.name,
        energy_scale=backend.energy_scale,
        extra={"run_type": res.run_type, "converged_electronic": res.converged_electronic},
    )
