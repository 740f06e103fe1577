"""Snakemake shim: hull with candidates and E_hull per generator (see matdisco.relax.plots)."""

from matdisco.logutil import log_to
from matdisco.relax.plots import plot_ehull_distribution, plot_hull

with log_to(snakemake.log[0]):
    plot_hull(
        snakemake.input.reference,
        snakemake.input.table,
        snakemake.output.hull,
        max_e_above_hull=snakemake.params.plot_max_e_above_hull,
    )
    plot_ehull_distribution(
        snakemake.input.table, snakemake.output.distribution, thresholds=snakemake.params.thresholds
    )
