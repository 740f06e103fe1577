"""Snakemake shim: build the entry store (see matdisco.data.build)."""

from matdisco.data.build import build_store
from matdisco.logutil import log_to

with log_to(snakemake.log[0]):
    build_store(
        source=snakemake.params.source,
        settings=snakemake.params.settings,
        dedupe=snakemake.params.dedupe,
        labels_path=snakemake.input.labels,
        out_store=snakemake.output.store,
        out_rejected=snakemake.output.rejected,
        out_summary=snakemake.output.summary,
        workers=snakemake.threads,
    )
