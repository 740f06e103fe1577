"""Snakemake shim: split the candidate pool into relaxation shards (see matdisco.relax.shards)."""

from matdisco.logutil import log_to
from matdisco.relax.shards import split_pool

with log_to(snakemake.log[0]):
    split_pool(
        snakemake.input.pool,
        snakemake.output.shards,
        shard_size=snakemake.params.shard_size,
        max_candidates=snakemake.params.max_candidates,
        only_valid=snakemake.params.only_valid,
        max_sites=snakemake.params.max_sites,
        selection=snakemake.params.selection,
        selected_csv=snakemake.output.selected,
    )
