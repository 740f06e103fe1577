"""Snakemake shim: classifier extra labels plus knowledge-base E_hull labels (matdisco.loop)."""

from matdisco.logutil import log_to
from matdisco.loop import write_extra_labels

with log_to(snakemake.log[0]):
    write_extra_labels(
        snakemake.params.loop,
        snakemake.input.store,
        snakemake.input.reference,
        snakemake.output.labels,
        extra_labels=snakemake.input.get("configured"),
    )
