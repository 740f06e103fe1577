"""Relaxation of candidate structures and their energy above the convex hull.

Public API:

* backends: :func:`~matdisco.relax.backends.get_backend` (``chgnet``, ``sevennet``, ``gpaw``,
  ``vasp``, ``emt``), each with an ``energy_scale``.
* optimiser: :class:`~matdisco.relax.optimize.RelaxSettings`,
  :func:`~matdisco.relax.optimize.relax_one` (ASE FIRE + FrechetCellFilter),
  :func:`~matdisco.relax.optimize.relax_batch` (the same FIRE in lockstep, batched model calls).
* fan-out: :func:`~matdisco.relax.shards.split_pool`,
  :func:`~matdisco.relax.shards.run_shard` (resumable, one fsync'ed JSON line per finished
  structure), :func:`~matdisco.relax.shards.gather_shards`.
* hull: :func:`~matdisco.relax.reference.compute_reference` (known phases on the same scale),
  :func:`~matdisco.relax.ehull.compute_ehull`, :func:`~matdisco.relax.ehull.metastable_rates`.
* VASP: :func:`~matdisco.relax.vasp.write_inputs`, :func:`~matdisco.relax.vasp.parse_vasprun`.
* plots: :func:`~matdisco.relax.plots.plot_hull`,
  :func:`~matdisco.relax.plots.plot_ehull_distribution`.

Heavy dependencies (torch/CHGNet, GPAW, pymatgen I/O) are imported when used.
"""

from __future__ import annotations

from matdisco.relax.backends import BACKENDS, Backend, BackendUnavailable, get_backend
from matdisco.relax.optimize import RelaxResult, RelaxSettings, rattle, relax_batch, relax_one

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailable",
    "get_backend",
    "RelaxResult",
    "RelaxSettings",
    "rattle",
    "relax_batch",
    "relax_one",
]
