"""Snakemake shim: composition features of every known formula (see matdisco.features)."""

from matdisco.features import featurize_store
from matdisco.logutil import log_to
from matdisco.settings import FeaturesSettings

with log_to(snakemake.log[0]):
    featurize_store(
        store=snakemake.input.store,
        extra_labels=snakemake.input.get("extra_labels"),
        magpie_table=snakemake.input.magpie,
        elmd_table=snakemake.input.get("elmd"),
        settings=FeaturesSettings.from_config(snakemake.params.settings),
        out_features=snakemake.output.features,
        out_rejects=snakemake.output.rejects,
    )
