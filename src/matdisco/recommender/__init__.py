"""Tensor recommender of unreported ternary compositions (Seko et al., PRM 2, 013805 (2018)).

The known ternary compositions (by default the experimentally reported entries of the store,
``is_experimental == 1``) are the ``y = 1`` entries of a sparse binary tensor

    X[A, B, C, r] = 1  if the composition A_a B_b C_c with (a, b, c) = ratio r is known,

where the three elements are put in a canonical order (Pauling electronegativity by default,
so O, S, halogens come last) and ``r`` indexes a fixed grid of reduced integer ratios with at
most ``max_atoms`` atoms per formula unit. Every other cell is unknown (0). A Tucker
decomposition of that tensor (higher-order orthogonal iteration on the sparse tensor, exact:
unknown cells count as zeros, as in Seko et al.) reconstructs a score for every cell; unknown
cells with a high score are compositions that "look like" known compounds across elements and
ratios: a recommender of compositions to try.

For comparison the module also fits the matrix variant (chemical system x ratio, truncated SVD)
and a popularity baseline (product of element and ratio marginals), and evaluates all of them
on held-out known compositions (random 10 % of compositions, or 10 % of whole chemical systems):
recall of the held-out cells in the top-k of all unknown-plus-held-out cells and the enrichment
over random order. The E_hull classifier's probability and its combination with the recommender
are evaluated on a uniform sample of the same candidates.

Scores are reported raw, as percentiles among all unknown cells of the tensor, and squashed to
0..1 relative to the typical score of a known compound (:func:`squash`), the scale on which they
are combined with the classifier probability; the uncertainty is the spread of the squashed score
over bootstrap refits.

Modules (names follow the rules ``train_recommender`` / ``evaluate_recommender``):

* :mod:`~matdisco.recommender.space`: :class:`TernarySpace`, :func:`ratio_grid`,
  :func:`known_formulas` (the tensor index and what counts as known).
* :mod:`~matdisco.recommender.tucker`: :func:`tucker_hooi`, :class:`TuckerModel`,
  :class:`MatrixModel`, :func:`fit_matrix`, :func:`fit_popularity` (models and linear algebra).
* :mod:`~matdisco.recommender.model`: :class:`Recommender`, :func:`fit_recommender`,
  :func:`train_recommender`, :func:`load_recommender`, :func:`squash`,
  :func:`classifier_scores`, :func:`combine_scores`.
* :mod:`~matdisco.recommender.evaluate`: :func:`rank_counts`, :func:`expected_recall`,
  :func:`evaluate_recommender` (held-out splits and metrics).
* :mod:`~matdisco.recommender.plots`: :func:`plot_enrichment` (matplotlib only there).

Settings come from :class:`matdisco.settings.RecommenderSettings`.
"""

from matdisco.core.composition import integer_composition
from matdisco.recommender.evaluate import evaluate_recommender, expected_recall, rank_counts
from matdisco.recommender.model import (
    Recommender,
    classifier_scores,
    combine_scores,
    fit_recommender,
    load_recommender,
    squash,
    train_recommender,
)
from matdisco.recommender.plots import plot_enrichment
from matdisco.recommender.space import (
    ELEMENT_ORDERS,
    KNOWN_SOURCES,
    TernarySpace,
    known_formulas,
    ratio_grid,
)
from matdisco.recommender.tucker import (
    MatrixModel,
    TuckerModel,
    fit_matrix,
    fit_popularity,
    tucker_hooi,
)

__all__ = [
    "ELEMENT_ORDERS",
    "KNOWN_SOURCES",
    "MatrixModel",
    "Recommender",
    "TernarySpace",
    "TuckerModel",
    "classifier_scores",
    "combine_scores",
    "evaluate_recommender",
    "expected_recall",
    "fit_matrix",
    "fit_popularity",
    "fit_recommender",
    "integer_composition",
    "known_formulas",
    "load_recommender",
    "plot_enrichment",
    "rank_counts",
    "ratio_grid",
    "squash",
    "train_recommender",
    "tucker_hooi",
]
