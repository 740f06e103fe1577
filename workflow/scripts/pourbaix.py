"""Snakemake shim: Pourbaix decomposition energy of the candidates (see
matdisco.screen.pourbaix)."""

from dataclasses import replace

from matdisco.logutil import log_to
from matdisco.screen.pourbaix.stage import screen_pourbaix
from matdisco.settings import ScreenPourbaixSettings

with log_to(snakemake.log[0]):
    settings = replace(
        ScreenPourbaixSettings.from_config(snakemake.params.settings),
        solids=str(snakemake.input.solids),
        ion_references=str(snakemake.input.ion_references),
        elemental_references=str(snakemake.input.elemental_references),
    )
    screen_pourbaix(
        candidates=snakemake.input.candidates,
        out_csv=snakemake.output.table,
        out_summary=snakemake.output.summary,
        settings=settings,
        max_e_above_hull=snakemake.params.max_e_above_hull,
    )
