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
        store_path=snakemake.input.store,
        reference_records=snakemake.input.reference_records,
        pool_csv=snakemake.input.pool,
        generator_summaries={
            k: snakemake.input[k] for k in ("template", "wgan_gp") if k in snakemake.input.keys()
        },
        selected_csv=snakemake.input.selected,
        known=snakemake.params.known,
        match=snakemake.params.match,
        below_hull_tolerance=snakemake.params.below_hull_tolerance,
    )
