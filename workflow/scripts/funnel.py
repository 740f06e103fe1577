"""Snakemake shim: the S.U.N. funnel per generator and target (see matdisco.relax.claims)."""

import json
from pathlib import Path

import pandas as pd

from matdisco.logutil import log_to
from matdisco.relax.claims import funnel, plot_funnel
from matdisco.store import atomic_write

with log_to(snakemake.log[0]):
    summaries = {
        k: json.loads(Path(snakemake.input[k]).read_text())
        for k in ("template", "wgan_gp")
        if k in snakemake.input.keys()
    }
    table = funnel(
        pd.read_csv(snakemake.input.pool, dtype={"id": str}),
        pd.read_csv(snakemake.input.ehull, dtype={"id": str}),
        summaries,
        selected_ids=pd.read_csv(snakemake.input.selected, dtype={"id": str})["id"].tolist(),
        final=pd.read_csv(snakemake.input.final, dtype={"id": str}),
        thresholds=snakemake.params.thresholds,
    )
    with atomic_write(snakemake.output.table) as tmp:
        table.to_csv(tmp, index=False)
    plot_funnel(snakemake.output.plot, table)
