"""Typed settings of composition discovery (recommender, proposals, features, classifier).

Drafted from workflow/schemas/config.schema.yaml by scripts/gen_settings.py; the schema
and these classes are kept in agreement by tests/test_settings.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from matdisco.settings._base import SettingsBase

#: element-embedding tables of the ElMD file (features.embeddings, screen.bandgap.embeddings)
EmbeddingName = Literal[
    "megnet16",
    "oliynyk",
    "olinyk_sc",
    "mat2vec",
    "matscholar",
    "cgcnn",
    "elemnet",
    "magpie",
    "magpie_sc",
    "jarvis",
    "jarvis_sc",
]
#: statistics of every embedding dimension
EmbeddingStat = Literal["mean", "std", "minimum", "maximum"]

__all__ = [
    "RecommenderEvaluationSettings",
    "RecommenderSettings",
    "ProposeSettings",
    "FeaturesSettings",
    "ClassifierLightGBMSettings",
    "ClassifierSettings",
]


@dataclass(frozen=True)
class RecommenderEvaluationSettings(SettingsBase):
    """``recommender.evaluation``: held-out evaluation (recommender/metrics.json).

    Attributes:
        holdout_fraction: fraction of known compositions (random split) or chemical systems (chemsys
            split) hidden
        top_k: top-k fractions of the candidates at which recall and enrichment are reported
        n_sample_candidates: unknown cells sampled uniformly as negatives (each stands for N / n of
            all candidates)
        n_classifier_candidates: subsample of those negatives scored by the (slower) classifier and
            the combination
        combination_weight: classifier share w of the combination w * p_stable + (1 - w) *
            recommender percentile
        exact: also rank against every cell of the tensor (tensor, matrix, popularity; slower)
        seed: random seed of the splits and the candidate sample
    """

    section: ClassVar[str] = "recommender.evaluation"

    holdout_fraction: float = 0.1
    top_k: tuple[float, ...] = (0.001, 0.01, 0.05)
    n_sample_candidates: int = 100000
    n_classifier_candidates: int = 20000
    combination_weight: float = 0.5
    exact: bool = False
    seed: int = 1


@dataclass(frozen=True)
class RecommenderSettings(SettingsBase):
    """``recommender``: tensor recommender of unreported ternary compositions (Tucker decomposition
    of the tensor of known compositions over element A x element B x element C x composition ratio;
    Seko et al. 2018).

    Attributes:
        known: which store entries count as known compositions (experimental = is_experimental == 1)
        max_atoms: ratio grid of the tensor, reduced ratios a:b:c with a + b + c at most this many
            atoms
        element_order: canonical order of the three elements of a cell (Pauling electronegativity or
            Mendeleev number)
        ranks: Tucker ranks (element A, element B, element C, ratio); clipped to what the data
            supports
        matrix_rank: rank of the truncated SVD of the (chemical system x ratio) matrix (comparison
            model)
        n_iter: maximum sweeps of the higher-order orthogonal iteration
        tol: stop the iteration when the relative reconstruction error changes by less than this
        n_bootstrap: bootstrap refits whose spread is the recommender uncertainty (0 = no
            uncertainty)
        n_quantile_samples: unknown cells sampled to convert scores into percentiles among all
            unknown cells
        seed: random seed (bootstrap, percentile sample)
        evaluation: held-out evaluation (recommender/metrics.json)
    """

    section: ClassVar[str] = "recommender"

    known: Literal["experimental", "all"] = "experimental"
    max_atoms: int = 20
    element_order: Literal["electronegativity", "mendeleev"] = "electronegativity"
    ranks: tuple[int, ...] = (12, 12, 12, 20)
    matrix_rank: int = 20
    n_iter: int = 10
    tol: float = 0.0001
    n_bootstrap: int = 3
    n_quantile_samples: int = 100000
    seed: int = 0
    evaluation: RecommenderEvaluationSettings = field(default_factory=RecommenderEvaluationSettings)


@dataclass(frozen=True)
class ProposeSettings(SettingsBase):
    """``propose``: candidate compositions of the target space, scored and ranked
    (proposals/proposals.csv).

    Attributes:
        acquisition: ranking rule over the combined mean mu and spread sigma of classifier and
            recommender: exploit = mu, explore = sigma (uncertainty sampling), ucb = mu + kappa *
            sigma
        kappa: exploration weight of ucb
        classifier_weight: classifier share w of mu = w * p_stable + (1 - w) * recommender_score
        n_top: number of best-ranked unknown compositions marked selected
        n_nearest: nearest known compounds (ElMD, mod_petti) listed per candidate
        use_classifier: score proposals with the E_hull classifier when that stage is in the
            workflow
        n_label: proposals labelled in the plot (for targets that are not ternary)
    """

    section: ClassVar[str] = "propose"

    acquisition: Literal["exploit", "explore", "ucb"] = "ucb"
    kappa: float = 1.0
    classifier_weight: float = 0.5
    n_top: int = 10
    n_nearest: int = 3
    use_classifier: bool = True
    n_label: int = 10


@dataclass(frozen=True)
class FeaturesSettings(SettingsBase):
    """``features``: composition features for the stability classifier (matdisco.features).

    Attributes:
        magpie_table: CSV of Magpie element properties (element column + 22 properties)
        elmd_table: JSON(.gz) of ElMD element scales; its elmd_scale becomes one more element
            property (null = none)
        elmd_scale: scalar ElMD scale added as an element property (mod_petti = modified Pettifor
            number)
        stats: fraction-weighted statistics of every element property
        stoichiometry_norms: p of the L_p norms of the atomic-fraction vector (0 = number of
            elements)
        valence_orbitals: add the s/p/d/f fractions of the valence electrons
        ionic: add maximum and mean ionic character (electronegativity differences)
        charge_balance: add a flag for charge balance with common oxidation states
        element_fractions: add the atomic fraction of every element as a feature
        formula_unit: add reduced formula-unit size features (atoms per reduced formula, largest and
            smallest count)
        embeddings: element-embedding tables of elmd_table whose per-dimension statistics are
            appended after the other columns (opt-in; [] = none); the band-gap surrogate never uses
            them
        embedding_stats: fraction-weighted mean and standard deviation, minimum and maximum of every
            embedding dimension
    """

    section: ClassVar[str] = "features"

    magpie_table: str = "resources/bundled/magpie_elements.csv"
    elmd_table: str | None = "resources/bundled/elmd_element_properties.json.gz"
    elmd_scale: str = "mod_petti"
    stats: tuple[Literal["mean", "avg_dev", "minimum", "maximum", "range", "mode"], ...] = (
        "mean",
        "avg_dev",
        "minimum",
        "maximum",
        "range",
        "mode",
    )
    stoichiometry_norms: tuple[int, ...] = (0, 2, 3, 5, 7, 10)
    valence_orbitals: bool = True
    ionic: bool = True
    charge_balance: bool = True
    element_fractions: bool = True
    formula_unit: bool = True
    embeddings: tuple[EmbeddingName, ...] = ()
    embedding_stats: tuple[EmbeddingStat, ...] = (
        "mean",
        "std",
        "minimum",
        "maximum",
    )


@dataclass(frozen=True)
class ClassifierLightGBMSettings(SettingsBase):
    """``classifier.lightgbm``: LightGBM (scikit-learn API) hyperparameters; threads come from the
    rule.

    Attributes:
        n_estimators: boosting rounds
        learning_rate: shrinkage
        num_leaves: leaves per tree
        min_child_samples: fewest rows per leaf
        subsample: row fraction per tree (bagging)
        colsample_bytree: feature fraction per tree
        reg_lambda: L2 regularisation
        max_bin: histogram bins per feature
    """

    section: ClassVar[str] = "classifier.lightgbm"

    n_estimators: int = 150
    learning_rate: float = 0.1
    num_leaves: int = 255
    min_child_samples: int = 20
    subsample: float = 0.8
    colsample_bytree: float = 0.3
    reg_lambda: float = 1.0
    max_bin: int = 63


@dataclass(frozen=True)
class ClassifierSettings(SettingsBase):
    """``classifier``: LightGBM E_hull stability classifier (matdisco.classifier).

    Attributes:
        label_threshold: a formula is stable (y = 1) when its E_hull is at most this, eV/atom
        extra_labels: optional csv of extra training-only labels (formula + decomposition_enthalpy
            or e_above_hull, eV/atom), e.g. Bartel 2020 ΔH_d; never used for evaluation; null = none
        max_labels: random subset of this many store labels (and extra labels) for quick test runs;
            null = all
        n_folds: folds of the stratified CV; its fold models are the shipped ensemble
        n_grouped_folds: folds of the chemsys-grouped CV (evaluation only; fewer folds = less
            training data per fold, a slightly pessimistic estimate)
        test_fraction: fraction of store labels held out (stratified) as the final test split
        seed: seed of splits, subsampling and LightGBM (same seed, same metrics)
        calibration: probability calibration fit on the out-of-fold predictions
        neighbour_features: add label-dependent features from the training formulas of the same
            chemical system (count, stable fraction, ElMD to the nearest (stable) one, its E_hull)
            and stable compounds in subsystems; computed from training rows only in every fold. Off
            by default: +0.001 random-split AUC but -0.013 chemsys-grouped AUC in our measurement
        decision_threshold: p_stable above which a formula is called stable (F1 is reported there);
            null = the F1-optimal value on the OOF predictions
        min_element_count: a prediction is out of domain when one of its elements is in fewer
            training formulas than this
        ece_bins: equal-width probability bins of the expected calibration error
        n_bootstrap: row-bootstrap replicates of the 95% intervals on the held-out test split (0 =
            point values only)
        n_bootstrap_cv: row-bootstrap replicates of the 95% intervals on the out-of-fold CV rows (0
            = point values only)
        lightgbm: LightGBM (scikit-learn API) hyperparameters; threads come from the rule
    """

    section: ClassVar[str] = "classifier"

    label_threshold: float = 0.01
    extra_labels: str | None = None
    max_labels: int | None = None
    n_folds: int = 5
    n_grouped_folds: int = 3
    test_fraction: float = 0.1
    seed: int = 42
    calibration: Literal["isotonic", "platt", "none"] = "isotonic"
    neighbour_features: bool = False
    decision_threshold: float | None = None
    min_element_count: int = 20
    ece_bins: int = 10
    n_bootstrap: int = 1000
    n_bootstrap_cv: int = 100
    lightgbm: ClassifierLightGBMSettings = field(default_factory=ClassifierLightGBMSettings)
