"""Snakemake shim: band-gap surrogate and DFT gap inputs (see matdisco.screen.bandgap)."""

from matdisco.logutil import log_to
from matdisco.screen.bandgap import screen_bandgap
from matdisco.settings import FeaturesSettings, ScreenBandgapSettings

with log_to(snakemake.log[0]):
    screen_bandgap(
        store=snakemake.input.store,
        candidates=snakemake.input.candidates,
        magpie_table=snakemake.input.magpie,
        elmd_table=snakemake.input.get("elmd"),
        feature_settings=FeaturesSettings.from_config(snakemake.params.features),
        settings=ScreenBandgapSettings.from_config(snakemake.params.settings),
        method=snakemake.params.method,
        max_e_above_hull=snakemake.params.max_e_above_hull,
        out_csv=snakemake.output.table,
        out_model=snakemake.output.model,
        out_metrics=snakemake.output.metrics,
        out_parity=snakemake.output.parity,
        out_dft_dir=snakemake.output.dft,
        gpaw_options=snakemake.params.gpaw,
        threads=snakemake.threads,
        store_embeddings=snakemake.input.get("embeddings"),
    )
