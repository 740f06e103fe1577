"""Snakemake shim: one deduplicated, flagged candidate pool (see matdisco.pool)."""

from matdisco.logutil import log_to
from matdisco.pool import build_pool
from matdisco.settings import PoolSettings

with log_to(snakemake.log[0]):
    build_pool(
        list(snakemake.input.candidates),
        snakemake.input.store,
        out_store=snakemake.output.pool,
        out_csv=snakemake.output.table,
        out_metrics=snakemake.output.metrics,
        out_cif_dir=snakemake.output.cifs,
        settings=PoolSettings.from_config(snakemake.params.settings),
        workers=snakemake.threads,
        known=snakemake.params.known,
    )
