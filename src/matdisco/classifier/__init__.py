"""E_hull stability classifier: LightGBM on composition features, calibrated, with uncertainty.

Label: ``y = 1`` (stable) when the energy above hull is at most ``label_threshold`` eV/atom.
Labels come from the entry store's ``/labels`` table (MP E_hull per reduced formula);
optionally a second table (Bartel et al. 2020 decomposition enthalpies, stable <=> ΔH_d <= 0,
so ``E_hull = max(ΔH_d, 0)``) adds formulas to the *training* folds only. Formulas are
deduplicated by composition (:func:`matdisco.features.composition_keys`), store labels
first, so one composition can never sit on both sides of a split.

Evaluation (all on store-labelled formulas):

* held-out test split (``test_fraction``, stratified) scored with the shipped model;
* stratified random k-fold CV on the rest (the development set); its fold models, each
  seeded differently and trained on (k-1)/k of the data, are the shipped ensemble, and their
  out-of-fold (OOF) predictions fit the probability calibrator (isotonic or Platt);
* ``n_grouped_folds``-fold CV grouped by chemical system (no chemical system in both train
  and test); evaluation only.

All fold models are fit in one batch on rows binned once, ``threads`` fits at a time
(:mod:`~matdisco.classifier.boost`); nothing is trained twice (the ensemble *is* the
stratified fold models). Features are the featurize stage's cached composition features,
with the opt-in element-embedding statistics (``features.embeddings``) appended.

Calibration quality is measured honestly: calibrated OOF metrics use a cross-fitted
calibrator (fit on the other folds' OOF predictions), and the held-out test is never seen.
A prediction's ``p_stable`` is the calibrator applied to the *ensemble output* (the
logit-space mean of the members' raw probabilities; :func:`calibrate_ensemble`), so the
held-out ECE is that of the shipped number; ``p_stable_std`` is the standard deviation of the
members' calibrated probabilities. The metrics give the held-out ECE beside its noise floor
(the mean ECE a perfectly calibrated model would show on as many rows).

Every split is reported beside two simple baselines scored on the same rows
(:mod:`~matdisco.classifier.baselines`: the chemical-system prior and a nearest-neighbour
logistic regression on ElMD neighbours of the training rows) with 95% row-bootstrap intervals
(:mod:`~matdisco.classifier.intervals`) and the paired model-minus-baseline difference; the
``headline`` section holds the numbers to quote. The harder subsystem-family hold-out
(:func:`family_holdout`) is measured by ``benchmarks/ehull_classifier.py``, not the rule.

Optional label-dependent neighbour features (:func:`neighbour_features`; off by default)
describe the labelled compounds of the same chemical system, always computed from the
training rows of the fold at hand.

Modules: :mod:`~matdisco.classifier.labels` (labels), :mod:`~matdisco.classifier.folds`
(CV splits), :mod:`~matdisco.classifier.calibration` (calibrators, metrics),
:mod:`~matdisco.classifier.intervals` (bootstrap intervals),
:mod:`~matdisco.classifier.baselines` (baselines),
:mod:`~matdisco.classifier.neighbours` (neighbour features), :mod:`~matdisco.classifier.boost`
(binned, parallel fold fits), :mod:`~matdisco.classifier.train`
(CV, ensemble, reports), :mod:`~matdisco.classifier.model` (model file, prediction),
:mod:`~matdisco.classifier.plots` (ROC / PR / reliability plots). LightGBM members are fit by
:mod:`matdisco.core.lgbm`, shared with the band-gap surrogate; settings are
:class:`matdisco.settings.ClassifierSettings`.

The model file (``model.pkl``) is a plain dict (see :func:`save_model`) holding LightGBM
model strings, the calibrator arrays, the element table and the feature settings, so
:func:`predict_stability` needs nothing but the file.
"""

from __future__ import annotations

from matdisco.classifier.calibration import (
    apply_calibrator,
    binary_metrics,
    calibrate_ensemble,
    ece_noise_floor,
    expected_calibration_error,
    fit_calibrator,
    reliability_curve,
)
from matdisco.classifier.folds import (
    chemsys_folds,
    family_holdout,
    labelled_subsystem_fraction,
    stratified_folds,
)
from matdisco.classifier.intervals import (
    BinaryScorer,
    bootstrap_binary_metrics,
    paired_bootstrap_difference,
)
from matdisco.classifier.labels import LabelSet, load_labels
from matdisco.classifier.model import (
    MODEL_FORMAT,
    StabilityModel,
    load_model,
    predict_stability,
    predict_target_formulas,
    save_model,
)
from matdisco.classifier.neighbours import NEIGHBOUR_FEATURES, Compositions, neighbour_features
from matdisco.classifier.plots import plot_curves
from matdisco.classifier.train import (
    TrainResult,
    train_from_files,
    train_stability_classifier,
    write_json,
)

__all__ = [
    "MODEL_FORMAT",
    "BinaryScorer",
    "bootstrap_binary_metrics",
    "paired_bootstrap_difference",
    "calibrate_ensemble",
    "ece_noise_floor",
    "family_holdout",
    "labelled_subsystem_fraction",
    "LabelSet",
    "StabilityModel",
    "load_labels",
    "binary_metrics",
    "expected_calibration_error",
    "fit_calibrator",
    "apply_calibrator",
    "chemsys_folds",
    "train_stability_classifier",
    "save_model",
    "load_model",
    "predict_stability",
    "predict_target_formulas",
    "train_from_files",
    "plot_curves",
    "reliability_curve",
    "stratified_folds",
    "TrainResult",
    "write_json",
    "NEIGHBOUR_FEATURES",
    "Compositions",
    "neighbour_features",
]
