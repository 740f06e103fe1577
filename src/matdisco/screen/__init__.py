"""Screening of relaxed candidates: aqueous (Pourbaix) stability, band gap, final table.

Public API:

* Pourbaix: :func:`~matdisco.screen.pourbaix.build_aqueous_system` (offline MP-style ion and
  solid Pourbaix entries), :func:`~matdisco.screen.pourbaix.candidate_pourbaix_entry`,
  :func:`~matdisco.screen.pourbaix.dg_pbx` (max over pH of the energy above the Pourbaix hull at
  a fixed potential vs RHE), :func:`~matdisco.screen.pourbaix.screen_pourbaix` (the stage).
* band gap: :func:`~matdisco.screen.bandgap.train_gap_surrogate`,
  :func:`~matdisco.screen.bandgap.predict_gaps`, :func:`~matdisco.screen.bandgap.hse_estimate`,
  :func:`~matdisco.screen.bandgap.write_vasp_hse_inputs`,
  :func:`~matdisco.screen.bandgap.gpaw_pbe_gap`,
  :func:`~matdisco.screen.bandgap.screen_bandgap` (the stage).
* final table: :func:`~matdisco.screen.final.screen_candidates` (thresholds, pass/fail per
  criterion, CIFs, powder XRD), :func:`~matdisco.screen.final.scale_slug`.

Heavy dependencies (pymatgen analysis, LightGBM, matplotlib) are imported when used.
"""

from __future__ import annotations

__all__ = ["pourbaix", "bandgap", "final"]
