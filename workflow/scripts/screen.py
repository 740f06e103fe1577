"""Snakemake shim: the final candidate table, CIFs and powder XRD (see matdisco.screen.final)."""

from matdisco.logutil import log_to
from matdisco.screen.final import screen_candidates
from matdisco.settings import ScreenSettings

with log_to(snakemake.log[0]):
    pourbaix_settings = {
        **snakemake.params.settings["pourbaix"],
        "solids": snakemake.input.solids,
        "ion_references": snakemake.input.ion_references,
        "elemental_references": snakemake.input.elemental_references,
    }
    screen_candidates(
        candidates=snakemake.input.candidates,
        pourbaix_csv=snakemake.input.pourbaix,
        bandgap_csv=snakemake.input.bandgap,
        bandgap_metrics=snakemake.input.metrics,
        settings=ScreenSettings.from_config(snakemake.params.settings),
        method=snakemake.params.method,
        out_csv=snakemake.output.table,
        out_all=snakemake.output.all,
        out_columns=snakemake.output.columns,
        out_summary=snakemake.output.summary,
        out_cifs=snakemake.output.cifs,
        out_xrd=snakemake.output.xrd,
        out_xrd_plot=snakemake.output.xrd_plot,
        out_scatter=snakemake.output.scatter,
        out_pourbaix_plot=snakemake.output.pourbaix_plot,
        pourbaix_settings=pourbaix_settings,
    )
