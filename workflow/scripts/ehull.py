"""Snakemake shim: E_hull, decomposition and metastable rates (see matdisco.relax.ehull)."""

from matdisco.logutil import log_to
from matdisco.relax.ehull import compute_ehull

with log_to(snakemake.log[0]):
    compute_ehull(
        snakemake.input.relaxed,
        snakemake.input.reference,
        snakemake.output.table,
        snakemake.output.store,
        snakemake.output.rates,
        thresholds=snakemake.params.thresholds,
        reference_mode=snakemake.params.reference_mode,
    )
