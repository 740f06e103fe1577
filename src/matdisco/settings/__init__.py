"""Typed, frozen settings of every pipeline stage, built from the validated config.

Design
------
* One frozen dataclass per config section, nested dataclasses for nested sections
  (``ClassifierSettings.lightgbm`` is a :class:`ClassifierLightGBMSettings`). Field names,
  types, allowed values and defaults are those of ``workflow/schemas/config.schema.yaml``;
  ``tests/test_settings.py`` fails when the two disagree, so there is exactly one set of
  defaults (the schema's), mirrored here. Modules keep **no** ``DEFAULT`` dict copies.
* Library functions take the typed section they need, never a ``dict``::

      def generate_templates(store, targets, settings: TemplateSettings) -> ...
      def train_classifier(X, y, settings: ClassifierSettings) -> ...
      # defaults for tests / notebooks: settings=TemplateSettings() or
      # TemplateSettings.from_config({"top_k": 3})

  and read attributes (``settings.lightgbm.n_estimators``), not ``settings.get(...)``. A
  function that needs values of two sections takes both (``pool: PoolSettings, target:
  TargetSettings``) rather than the whole config.
* Workflow scripts build them once from the validated Snakemake config and pass them on::

      settings = Settings.from_config(snakemake.config)      # every stage
      templates = TemplateSettings.from_config(snakemake.params.settings)  # one section

  Rules should pass their section as ``params: settings=config["templates"]`` (the validated
  mapping, so an edit reruns the rule) and provenance records should store
  ``settings.to_dict()``.
* ``from_config`` rejects unknown keys and values of the wrong type with a
  :class:`SettingsError` (a :class:`matdisco.config.ConfigError`) naming every dotted key, and
  reads strings as the declared type (``"0.5"`` -> 0.5, ``"true"`` -> True, ``"null"`` -> None),
  which is what ``snakemake --config 'classifier={decision_threshold: 0.5}'`` delivers.
  Ranges and cross-field rules stay the schema's job (:func:`matdisco.config.validate_config`).
* Lists of the config are tuples here (hashable, immutable); mapping-valued keys
  (``target.oxidation_states``, ``relax.gpaw.hubbard_u``, ``*.user_incar_settings``,
  ``gan.data.slots``) are plain dicts: treat them as read-only. ``to_dict()`` gives the JSON-like
  form back (lists, dicts), equal to the validated config section.
* The section classes were drafted by ``scripts/gen_settings.py`` from the schema; after a
  schema change rerun it or edit both by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from matdisco.settings._base import SettingsBase, SettingsError, schema_mismatches
from matdisco.settings.candidates import (
    EHullReferenceSettings,
    EHullSettings,
    PoolSettings,
    RelaxCHGNetSettings,
    RelaxGPAWSettings,
    RelaxPrescreenSettings,
    RelaxSettings,
    RelaxSevenNetSettings,
    RelaxVASPSettings,
)
from matdisco.settings.core import (
    DataBundledSettings,
    DataCifDirSettings,
    DataDedupeSettings,
    DataMPSettings,
    DataSettings,
    KnownSettings,
    LoopSettings,
    TargetSettings,
)
from matdisco.settings.discovery import (
    ClassifierLightGBMSettings,
    ClassifierSettings,
    FeaturesSettings,
    ProposeSettings,
    RecommenderEvaluationSettings,
    RecommenderSettings,
)
from matdisco.settings.generators import (
    GANAugmentSettings,
    GANDataSettings,
    GANDedupeSettings,
    GANModelSettings,
    GANSampleSettings,
    GANSettings,
    GANTrainingSetSettings,
    GANTrainSettings,
    GANValiditySettings,
    GenerateSettings,
    TemplateSettings,
)
from matdisco.settings.screen import (
    ScreenBandgapHSEMappingSettings,
    ScreenBandgapLightGBMSettings,
    ScreenBandgapSettings,
    ScreenBandgapVASPSettings,
    ScreenPourbaixSettings,
    ScreenSettings,
    ScreenThresholdsSettings,
    ScreenXRDSettings,
)

__all__ = [
    "Settings",
    "SettingsBase",
    "SettingsError",
    "schema_mismatches",
    "TargetSettings",
    "DataSettings",
    "KnownSettings",
    "LoopSettings",
    "DataBundledSettings",
    "DataMPSettings",
    "DataCifDirSettings",
    "DataDedupeSettings",
    "GenerateSettings",
    "RecommenderSettings",
    "RecommenderEvaluationSettings",
    "ProposeSettings",
    "FeaturesSettings",
    "ClassifierSettings",
    "ClassifierLightGBMSettings",
    "TemplateSettings",
    "PoolSettings",
    "RelaxSettings",
    "RelaxPrescreenSettings",
    "RelaxCHGNetSettings",
    "RelaxSevenNetSettings",
    "RelaxGPAWSettings",
    "RelaxVASPSettings",
    "EHullSettings",
    "EHullReferenceSettings",
    "GANSettings",
    "GANTrainingSetSettings",
    "GANDataSettings",
    "GANAugmentSettings",
    "GANModelSettings",
    "GANTrainSettings",
    "GANSampleSettings",
    "GANValiditySettings",
    "GANDedupeSettings",
    "ScreenSettings",
    "ScreenThresholdsSettings",
    "ScreenPourbaixSettings",
    "ScreenBandgapSettings",
    "ScreenBandgapHSEMappingSettings",
    "ScreenBandgapLightGBMSettings",
    "ScreenBandgapVASPSettings",
    "ScreenXRDSettings",
]


@dataclass(frozen=True)
class Settings(SettingsBase):
    """The whole configuration, one attribute per stage section.

    Build it with ``Settings.from_config(config)`` from the config after
    :func:`matdisco.config.validate_config`.

    Attributes:
        run_name: name of the run; outputs go to results/<run_name>/.
        target: the chemical space in which new compounds are proposed.
        data: where entries come from and how they are deduplicated.
        known: the one definition of known compositions and structures.
        loop: the closed loop's knowledge base of relaxed candidates.
        generate: target compositions shared by the structure generators.
        recommender: tensor recommender of unreported ternary compositions.
        propose: candidate compositions of the target space, scored and ranked.
        features: composition features for the stability classifier.
        classifier: LightGBM E_hull stability classifier.
        templates: template-based structure prediction.
        pool: the candidate pool (merge, dedupe, validity and novelty).
        relax: relaxation of the candidate pool.
        ehull: energy above hull of relaxed candidates.
        gan: composition-conditioned WGAN-GP crystal generator.
        screen: screening of relaxed candidates.
    """

    section: ClassVar[str] = ""

    run_name: str = "default"
    target: TargetSettings = field(default_factory=TargetSettings)
    data: DataSettings = field(default_factory=DataSettings)
    known: KnownSettings = field(default_factory=KnownSettings)
    loop: LoopSettings = field(default_factory=LoopSettings)
    generate: GenerateSettings = field(default_factory=GenerateSettings)
    recommender: RecommenderSettings = field(default_factory=RecommenderSettings)
    propose: ProposeSettings = field(default_factory=ProposeSettings)
    features: FeaturesSettings = field(default_factory=FeaturesSettings)
    classifier: ClassifierSettings = field(default_factory=ClassifierSettings)
    templates: TemplateSettings = field(default_factory=TemplateSettings)
    pool: PoolSettings = field(default_factory=PoolSettings)
    relax: RelaxSettings = field(default_factory=RelaxSettings)
    ehull: EHullSettings = field(default_factory=EHullSettings)
    gan: GANSettings = field(default_factory=GANSettings)
    screen: ScreenSettings = field(default_factory=ScreenSettings)
