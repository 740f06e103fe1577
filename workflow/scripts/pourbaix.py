"""Snakemake shim: Pourbaix decomposition energy of the candidates (see matdisco.screen.pourbaix)."""

from matdisco.logutil import log_to
from matdisco.screen.pourbaix import screen_pourbaix

with log_to(snakemake.log[0]):
    settings = {
        **snakemake.params.settings,
        "solids": snakemake.input.solids,
        "ion_references": snakemake.input.ion_references,
        "elemental_references": snakemake.input.elemental_references,
    }
    screen_pourbaix(
        candidates=snakemake.input.candidates,
        out_csv=snakemake.output.table,
        out_summary=snakemake.output.summary,
        settings=settings,
        max_e_above_hull=snakemake.params.max_e_above_hull,
    )
