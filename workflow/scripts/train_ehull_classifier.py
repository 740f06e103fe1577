"""Snakemake shim: train, evaluate and calibrate the E_hull classifier (see matdisco.classifier)."""

from matdisco.classifier.train import train_from_files
from matdisco.logutil import log_to
from matdisco.settings import ClassifierSettings, FeaturesSettings

with log_to(snakemake.log[0]):
    train_from_files(
        store=snakemake.input.store,
        features=snakemake.input.features,
        extra_labels=snakemake.input.get("extra_labels"),
        settings=ClassifierSettings.from_config(snakemake.params.settings),
        feature_settings=FeaturesSettings.from_config(snakemake.params.features),
        config_hash=snakemake.params.stamp,
        threads=snakemake.threads,
        outputs=dict(snakemake.output.items()),
    )
