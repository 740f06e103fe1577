"""Structure relaxation: seeded rattle, then FIRE on a FrechetCellFilter (cell + positions).

Two drivers give the same algorithm:

* :func:`relax_one`: ASE's ``FIRE(FrechetCellFilter(atoms))`` with the backend's ASE calculator,
  one structure at a time (DFT backends, and the naive reference path).
* :func:`relax_batch`: the same FIRE update (a port of ``ase.optimize.FIRE.step`` with its
  defaults) run in lockstep over many structures, so that an ML backend evaluates all active
  structures in one batched model call per step. A structure leaves the batch as soon as it
  converges, fails or runs out of steps, and its result is handed to a callback at once.

Every relaxation records the number of steps, convergence, final forces, stress, magnetic
moments (when the model gives them), and fails cleanly (``status="failed"`` plus a reason) on
calculator errors, exploding energies, exploding cells, non-convergence or a time limit.

Both drivers take the typed ``relax`` section, :class:`matdisco.settings.RelaxSettings`
(re-exported here); they read its optimiser fields (:data:`OPTIMIZER_FIELDS`).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from matdisco.settings import RelaxSettings

if TYPE_CHECKING:
    from ase import Atoms

    from matdisco.relax.backends import Backend

__all__ = [
    "RelaxSettings",
    "RelaxResult",
    "OPTIMIZER_FIELDS",
    "optimizer_settings",
    "rattle",
    "relax_one",
    "relax_batch",
    "check_sane",
]

# ASE FIRE defaults (ase/optimize/fire.py), used by both drivers
_FIRE = {
    "dt": 0.1,
    "maxstep": 0.2,
    "dtmax": 1.0,
    "Nmin": 5,
    "finc": 1.1,
    "fdec": 0.5,
    "astart": 0.1,
    "fa": 0.99,
}


#: the optimiser's fields of :class:`~matdisco.settings.RelaxSettings` (what a relaxation
#: result depends on; progress-file fingerprints hash these)
OPTIMIZER_FIELDS: tuple[str, ...] = (
    "fmax",
    "steps",
    "rattle",
    "seed",
    "relax_cell",
    "timeout_s",
    "min_energy_per_atom",
    "max_volume_ratio",
    "min_distance",
    "require_convergence",
)


def optimizer_settings(settings: RelaxSettings) -> dict[str, Any]:
    """The optimiser's part of the ``relax`` settings as a plain dict (for fingerprints)."""
    return {name: getattr(settings, name) for name in OPTIMIZER_FIELDS}


@dataclass
class RelaxResult:
    """One structure's relaxation result (one JSON line in a shard's progress file).

    ``energy`` fields are raw backend totals per atom; ``energy_per_atom`` is on the backend's
    energy scale (``energy_per_atom_raw + correction_per_atom``).
    """

    id: str
    status: str  # ok | failed | prescreen_rejected
    reason: str = ""
    converged: bool = False
    steps: int = 0
    energy_per_atom: float = float("nan")
    energy_per_atom_raw: float = float("nan")
    correction_per_atom: float = 0.0
    initial_energy_per_atom: float = float("nan")
    prescreen_energy_per_atom: float = float("nan")
    fmax: float = float("nan")
    max_force: float = float("nan")
    stress_gpa: list[float] = field(default_factory=list)
    forces: list[list[float]] = field(default_factory=list)
    magmoms: list[float] | None = None
    volume_ratio: float = float("nan")
    lattice: list[list[float]] = field(default_factory=list)
    species: list[str] = field(default_factory=list)
    frac_coords: list[list[float]] = field(default_factory=list)
    wall_s: float = 0.0
    backend: str = ""
    energy_scale: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (NaN written as null)."""
        from matdisco.store import json_safe

        return json_safe(asdict(self))

    @classmethod
    def from_json_dict(cls, d: dict[str, Any]) -> RelaxResult:
        """Inverse of :meth:`to_json_dict` (null floats back to NaN)."""
        kw = {}
        for name, f in cls.__dataclass_fields__.items():
            if name not in d:
                continue
            v = d[name]
            if v is None and f.type == "float":
                v = float("nan")
            kw[name] = v
        return cls(**kw)

    def structure(self) -> Any:
        """The final structure as a pymatgen Structure (None if none was recorded)."""
        from pymatgen.core import Lattice, Structure

        if not self.lattice:
            return None
        return Structure(Lattice(self.lattice), self.species, self.frac_coords)


def _seed(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])


def rattle(atoms: Atoms, stdev: float, seed: int, key: str = "") -> Atoms:
    """Return a copy of ``atoms`` with Gaussian displacements (seeded by ``seed`` and ``key``).

    The seed depends on the structure id (``key``), not on its position in a batch, so a
    resumed or re-sharded run rattles every structure the same way.
    """
    out = atoms.copy()
    if stdev > 0:
        rng = _seed(seed, key)
        out.positions = out.positions + rng.normal(0.0, stdev, size=out.positions.shape)
    return out


def _min_distance(atoms: Atoms, cutoff: float) -> float:
    """Shortest interatomic distance below ``cutoff`` (periodic images included), else inf."""
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", atoms, cutoff)
    return float(d.min()) if len(d) else math.inf


def check_sane(atoms: Atoms, energy: float, v0: float, settings: RelaxSettings) -> str:
    """Return a failure reason ('' when fine) for an exploded or collapsed structure."""
    n = len(atoms)
    if not math.isfinite(energy):
        return "exploding energy: non-finite energy"
    if energy / n < settings.min_energy_per_atom:
        return f"exploding energy: {energy / n:.2f} eV/atom < {settings.min_energy_per_atom}"
    ratio = atoms.get_volume() / v0
    if ratio > settings.max_volume_ratio or ratio < 1.0 / settings.max_volume_ratio:
        return f"exploding cell: volume ratio {ratio:.2f}"
    dmin = _min_distance(atoms, settings.min_distance)
    if dmin < settings.min_distance:
        return f"collapsed: interatomic distance {dmin:.2f} A < {settings.min_distance}"
    return ""


def _filter(atoms: Atoms, relax_cell: bool) -> Any:
    from ase.filters import FrechetCellFilter

    return FrechetCellFilter(atoms) if relax_cell else atoms


def _fmax(forces: np.ndarray) -> float:
    return float(np.sqrt((np.asarray(forces).reshape(-1, 3) ** 2).sum(axis=1).max()))


def _finish(
    rid: str,
    atoms: Atoms,
    backend: Backend,
    *,
    status: str,
    reason: str,
    converged: bool,
    steps: int,
    energy: float,
    e0: float,
    fmax: float,
    v0: float,
    wall: float,
    magmoms: Any = None,
) -> RelaxResult:
    from ase.units import GPa
    from pymatgen.io.ase import AseAtomsAdaptor

    n = len(atoms)
    forces = stress = None
    try:
        forces = np.asarray(atoms.get_forces())
        stress = np.asarray(atoms.get_stress(voigt=True)) / GPa
    except Exception:  # noqa: BLE001 - a failed calculator leaves no results
        pass
    corr = 0.0
    structure = AseAtomsAdaptor.get_structure(atoms)
    if status == "ok" and math.isfinite(energy):
        try:
            corr = backend.correction(structure, energy)
        except ValueError as err:
            status, reason = "failed", f"correction rejected: {err}"
    return RelaxResult(
        id=rid,
        status=status,
        reason=reason,
        converged=converged,
        steps=steps,
        energy_per_atom=(energy + corr) / n if math.isfinite(energy) else float("nan"),
        energy_per_atom_raw=energy / n if math.isfinite(energy) else float("nan"),
        correction_per_atom=corr / n,
        initial_energy_per_atom=e0 / n if math.isfinite(e0) else float("nan"),
        fmax=fmax,
        max_force=_fmax(forces) if forces is not None and len(forces) else float("nan"),
        stress_gpa=[] if stress is None else [float(x) for x in stress],
        forces=[] if forces is None else np.round(forces, 5).tolist(),
        magmoms=None if magmoms is None else np.round(np.asarray(magmoms, dtype=float), 4).tolist(),
        volume_ratio=atoms.get_volume() / v0,
        lattice=structure.lattice.matrix.tolist(),
        species=[str(s.specie) for s in structure],
        frac_coords=structure.frac_coords.tolist(),
        wall_s=round(wall, 3),
        backend=backend.name,
        energy_scale=backend.energy_scale,
    )


class _Timeout(Exception):
    pass


class _Exploded(Exception):
    pass


def relax_one(
    atoms: Atoms, backend: Backend, settings: RelaxSettings, rid: str = ""
) -> RelaxResult:
    """Relax one structure with ASE FIRE (+ FrechetCellFilter) and the backend's calculator.

    Args:
        atoms: the starting structure (not modified).
        backend: the energy backend.
        settings: relaxation settings.
        rid: structure id (seeds the rattle; copied into the result).

    Returns:
        The result; ``status`` is ``failed`` with a reason instead of raising.
    """
    from ase.optimize import FIRE

    t0 = time.perf_counter()
    a = rattle(atoms, settings.rattle, settings.seed, rid)
    v0 = a.get_volume()
    e0 = float("nan")
    try:
        a.calc = backend.calculator(a)
        e0 = a.get_potential_energy()
        bad = check_sane(a, e0, v0, settings)
        if bad:
            raise _Exploded(bad)
        obj = _filter(a, settings.relax_cell)
        opt = FIRE(obj, logfile=None)

        def watch() -> None:
            if time.perf_counter() - t0 > settings.timeout_s:
                raise _Timeout(f"timeout after {settings.timeout_s:g} s")
            reason = check_sane(a, a.get_potential_energy(), v0, settings)
            if reason:
                raise _Exploded(reason)

        opt.attach(watch, interval=1)
        converged = bool(opt.run(fmax=settings.fmax, steps=settings.steps))
        fmax = _fmax(obj.get_forces())
        energy = a.get_potential_energy()
        status, reason = "ok", ""
        if not converged:
            reason = f"not converged in {settings.steps} steps (fmax {fmax:.3f})"
            if settings.require_convergence:
                status = "failed"
        mag = a.calc.results.get("magmoms") if a.calc is not None else None
        res = _finish(
            rid,
            a,
            backend,
            status=status,
            reason=reason,
            converged=converged,
            steps=opt.nsteps,
            energy=energy,
            e0=e0,
            fmax=fmax,
            v0=v0,
            wall=time.perf_counter() - t0,
            magmoms=mag,
        )
        extra = getattr(backend, "result_extra", None)
        if extra is not None and res.status == "ok":
            res.extra.update(extra(a))
        return res
    except (_Timeout, _Exploded) as err:
        msg = str(err)
    except Exception as err:  # noqa: BLE001 - calculator errors are per-structure failures
        msg = f"calculator error: {type(err).__name__}: {err}"
    a.calc = None  # never recompute a failed structure just to report its forces
    return _finish(
        rid,
        a,
        backend,
        status="failed",
        reason=msg,
        converged=False,
        steps=0,
        energy=float("nan"),
        e0=e0,
        fmax=float("nan"),
        v0=v0,
        wall=time.perf_counter() - t0,
    )


@dataclass
class _State:
    rid: str
    atoms: Atoms
    obj: Any
    v0: float
    t_start: float
    vel: np.ndarray | None = None
    dt: float = _FIRE["dt"]
    a: float = _FIRE["astart"]
    Nsteps: int = 0  # noqa: N815 - the name in ASE's FIRE
    nsteps: int = 0
    e0: float = float("nan")
    cost: float = 0.0


def _fire_step(s: _State, forces: np.ndarray) -> None:
    """One ASE FIRE step (ase.optimize.fire.FIRE.step, downhill_check=False) on ``s.obj``."""
    f = forces.ravel()
    if s.vel is None:
        s.vel = np.zeros_like(f)
    else:
        vf = np.vdot(f, s.vel)
        if vf > 0.0:
            s.vel = (1.0 - s.a) * s.vel + s.a * f / np.sqrt(np.vdot(f, f)) * np.sqrt(
                np.vdot(s.vel, s.vel)
            )
            if s.Nsteps > _FIRE["Nmin"]:
                s.dt = min(s.dt * _FIRE["finc"], _FIRE["dtmax"])
                s.a *= _FIRE["fa"]
            s.Nsteps += 1
        else:
            s.vel[:] *= 0.0
            s.a = _FIRE["astart"]
            s.dt *= _FIRE["fdec"]
            s.Nsteps = 0
    s.vel += s.dt * f
    dr = s.dt * s.vel
    norm = np.sqrt(np.vdot(dr, dr))
    if norm > _FIRE["maxstep"]:
        dr = _FIRE["maxstep"] * dr / norm
    r = s.obj.get_positions()
    s.obj.set_positions(r + dr.reshape(r.shape))


def relax_batch(
    items: list[tuple[str, Atoms]],
    backend: Backend,
    settings: RelaxSettings,
    on_result: Callable[[RelaxResult], None] | None = None,
    early_stop: Callable[[str, Atoms, float, int], str] | None = None,
) -> list[RelaxResult]:
    """Relax many structures in lockstep with one batched backend call per FIRE step.

    Args:
        items: (id, atoms) pairs.
        backend: a backend whose :meth:`~matdisco.relax.backends.Backend.predict` is batched.
        settings: relaxation settings.
        on_result: called with each result as soon as that structure is finished.
        early_stop: optional ``f(id, atoms, energy, step) -> reason``; a non-empty reason
            stops that structure (status ``failed``, e.g. still far above the hull).

    Returns:
        The results, in the order in which they finished.
    """
    from ase.calculators.singlepoint import SinglePointCalculator

    t_all = time.perf_counter()
    active: list[_State] = []
    for rid, atoms in items:
        a = rattle(atoms, settings.rattle, settings.seed, rid)
        active.append(_State(rid, a, _filter(a, settings.relax_cell), a.get_volume(), t_all))
    results: list[RelaxResult] = []

    def done(s: _State, **kw: Any) -> None:
        mag = s.atoms.calc.results.get("magmoms") if s.atoms.calc is not None else None
        if mag is None and kw.get("status") == "ok":
            try:
                mag = backend.magmoms(s.atoms)
            except Exception:  # noqa: BLE001 - magnetic moments are optional
                mag = None
        r = _finish(
            s.rid,
            s.atoms,
            backend,
            v0=s.v0,
            e0=s.e0,
            steps=s.nsteps,
            wall=s.cost,
            magmoms=mag,
            **kw,
        )
        results.append(r)
        if on_result is not None:
            on_result(r)

    while active:
        t0 = time.perf_counter()
        preds = backend.predict([s.atoms for s in active])
        spent = time.perf_counter() - t0
        n_total = sum(len(s.atoms) for s in active)
        still: list[_State] = []
        for s, p in zip(active, preds, strict=True):
            s.cost += spent * len(s.atoms) / n_total
            fail = dict(status="failed", converged=False, energy=float("nan"), fmax=float("nan"))
            if isinstance(p, Exception):
                s.atoms.calc = None
                done(s, reason=f"calculator error: {type(p).__name__}: {p}", **fail)
                continue
            energy = float(p["energy"])
            s.atoms.calc = SinglePointCalculator(s.atoms, **p)
            if s.nsteps == 0:
                s.e0 = energy
            bad = check_sane(s.atoms, energy, s.v0, settings)
            if bad:
                done(s, reason=bad, **fail)
                continue
            forces = np.asarray(s.obj.get_forces())
            fmax = _fmax(forces)
            common = dict(energy=energy, fmax=fmax)
            if fmax < settings.fmax:
                done(s, status="ok", reason="", converged=True, **common)
            elif s.nsteps >= settings.steps:
                reason = f"not converged in {settings.steps} steps (fmax {fmax:.3f})"
                done(
                    s,
                    status="failed" if settings.require_convergence else "ok",
                    reason=reason,
                    converged=False,
                    **common,
                )
            elif s.cost > settings.timeout_s:
                done(
                    s,
                    status="failed",
                    reason=f"timeout after {settings.timeout_s:g} s",
                    converged=False,
                    **common,
                )
            elif early_stop is not None and (why := early_stop(s.rid, s.atoms, energy, s.nsteps)):
                done(s, status="failed", reason=why, converged=False, **common)
            else:
                _fire_step(s, forces)
                s.nsteps += 1
                still.append(s)
        active = still
    return results
