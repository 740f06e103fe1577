"""Uncertainty-aware proposals of new compositions in the target chemical space.

1. Enumerate every reduced composition of the target elements (each present, at most
   ``target.max_atoms`` atoms per formula unit) and keep the charge-balanced ones whose
   oxidation states fit ``target.oxidation_states`` (pymatgen's oxidation-state guesses with the
   configured windows as overrides; elements without a window use pymatgen's ICSD-common states,
   e.g. Mg +2, O -2).
2. Score each with the E_hull classifier (``p_stable`` +- ``p_stable_std``, the ensemble spread)
   and the tensor recommender (``recommender_score``: the Tucker score squashed to 0..1 relative to
   the typical known compound, +- ``recommender_std``: spread over bootstrap refits;
   ``recommender_percentile``: rank among all ~10^8 unknown cells of the tensor).
3. Rank by an acquisition function over the combined mean ``mu = w p + (1 - w) q`` and spread
   ``sigma = sqrt(w^2 sd_p^2 + (1 - w)^2 sd_q^2)`` (``w`` = classifier weight):
   ``exploit`` = mu, ``explore`` = sigma (uncertainty sampling, Terayama et al. PRM 3, 033802
   (2019)), ``ucb`` = mu + kappa sigma.
4. List each proposal's nearest known compounds by the Element Mover's Distance (ElMD,
   ``mod_petti``), and draw a ternary composition plot.

Output table (one row per candidate; unknown compositions ranked first, ``rank`` 1 = best,
known ones after them with an empty rank): rank, formula, composition, n_atoms,
oxidation_states, p_stable, p_stable_std, out_of_domain, recommender_score, recommender_std,
recommender_percentile, recommender_raw, mean, std, acquisition, known, in_store, selected,
nearest_known. Later stages
take the rows with ``selected == True`` (the top ``n_top`` unknown compositions).

Modules (the package is named after the rule ``propose`` and workflow/scripts/propose.py):

* :mod:`~matdisco.propose.candidates`: :func:`enumerate_compositions`,
  :func:`charge_balanced_candidates`, :func:`nearest_known`.
* :mod:`~matdisco.propose.acquisition`: :func:`acquisition_scores`, :func:`rank_candidates`.
* :mod:`~matdisco.propose.stage`: :func:`propose`, the stage itself (settings:
  :class:`matdisco.settings.ProposeSettings`).
* :mod:`~matdisco.propose.plots`: :func:`plot_proposals` (matplotlib only there).
"""

from matdisco.core.composition import charge_balance_possible, oxidation_state_guess
from matdisco.propose.acquisition import ACQUISITIONS, acquisition_scores, rank_candidates
from matdisco.propose.candidates import (
    charge_balanced_candidates,
    enumerate_compositions,
    nearest_known,
)
from matdisco.propose.plots import plot_proposals
from matdisco.propose.stage import propose

__all__ = [
    "ACQUISITIONS",
    "acquisition_scores",
    "charge_balance_possible",
    "charge_balanced_candidates",
    "enumerate_compositions",
    "nearest_known",
    "oxidation_state_guess",
    "plot_proposals",
    "propose",
    "rank_candidates",
]
