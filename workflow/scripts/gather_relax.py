"""Snakemake shim: merge the shard results into relax/relaxed.h5 (see matdisco.relax.shards)."""

from matdisco.logutil import log_to
from matdisco.relax.shards import gather_shards

with log_to(snakemake.log[0]):
    gather_shards(
        snakemake.input.shards,
        snakemake.input.results,
        snakemake.output.store,
        snakemake.output.table,
    )
