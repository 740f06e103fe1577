"""Composition features: Magpie-style element-property statistics, vectorised.

Each formula is parsed once (:func:`matdisco.core.composition.element_amounts`, the one
parser of matdisco) into a sparse composition matrix (CSR: row pointer, element index, atomic
fraction).
Every feature is then a handful of NumPy operations over all rows at once:

* element-property statistics from the bundled Magpie table, plus the modified Pettifor
  number of the ElMD scale (the 1-D space in which ElMD is an earth mover's distance):
  fraction-weighted ``mean``, mean absolute deviation ``avg_dev`` (= the ElMD between the
  composition and a point mass at its mean, for the Pettifor scale), ``minimum``,
  ``maximum``, ``range`` and ``mode`` (property of the most abundant element; ties take the
  smallest value), as in matminer's ``ElementProperty.from_preset("magpie")``;
* stoichiometry norms ``L_p = (sum_i f_i^p)^(1/p)`` for p in (0, 2, 3, 5, 7, 10); L0 is the
  number of elements;
* valence-orbital fractions ``frac_{s,p,d,f}_valence = <N_x valence> / <N valence>``;
* ionic character (matminer ``IonProperty``): ``max_ionic_char = 1 - exp(-(dchi_max)^2/4)``,
  ``avg_ionic_char = sum_{i<j} f_i f_j (1 - exp(-(chi_i - chi_j)^2/4))`` and
  ``charge_balanced`` (1 if one common oxidation state per element makes the formula
  neutral, 0 if none does, NaN for formulas with more than 8 elements);
* the size of the reduced formula unit (atoms, largest and smallest element count), which
  separates simple stoichiometries from large enumerated (often hypothetical) cells;
* the atomic fraction of every element (``frac_<symbol>``), so trees can learn
  element-specific effects the statistics average away.

A formula that cannot be featurised (syntax error, unknown element, element without data,
no positive amount) is never an exception: its row is NaN, ``valid`` is False and
``reasons`` says why. :func:`write_features` / :func:`read_features` cache a
:class:`FeatureSet` in HDF5.

Modules: :mod:`~matdisco.features.elements` (element table), :mod:`~matdisco.features.parse`
(parsed formulas, keys, chemical systems, ElMD profiles), :mod:`~matdisco.features.compute`
(:func:`featurize`, :func:`elmd`), :mod:`~matdisco.features.embeddings` (opt-in element-embedding
statistics, e.g. MEGNet-16 and Oliynyk vectors, appended after the columns above),
:mod:`~matdisco.features.io` (HDF5 cache, the featurize stage
and its :class:`matdisco.settings.FeaturesSettings`).
"""

from matdisco.features.compute import FeatureSet, elmd, featurize
from matdisco.features.elements import MAGPIE_PROPERTIES, STATS, SYMBOLS, ElementTable
from matdisco.features.embeddings import (
    EMBEDDING_STATS,
    ElementEmbeddings,
    embedding_features,
    featurize_with_embeddings,
)
from matdisco.features.io import (
    feature_kwargs,
    featurize_store,
    load_embeddings,
    read_feature_meta,
    read_features,
    write_features,
    write_rejects,
)
from matdisco.features.parse import (
    ParsedFormulas,
    composition_keys,
    keys_and_systems,
    parse_formulas,
    pettifor_cdf,
)

__all__ = [
    "EMBEDDING_STATS",
    "ElementEmbeddings",
    "embedding_features",
    "featurize_with_embeddings",
    "load_embeddings",
    "SYMBOLS",
    "MAGPIE_PROPERTIES",
    "STATS",
    "ElementTable",
    "ParsedFormulas",
    "FeatureSet",
    "parse_formulas",
    "composition_keys",
    "featurize",
    "write_features",
    "read_features",
    "write_rejects",
    "elmd",
    "feature_kwargs",
    "featurize_store",
    "read_feature_meta",
    "pettifor_cdf",
    "keys_and_systems",
]
