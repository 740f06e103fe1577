"""Snakemake shim: append the run's relaxed candidates to the knowledge base (matdisco.loop)."""

import json

from matdisco.logutil import log_to
from matdisco.loop import KnowledgeBase
from matdisco.store import atomic_write

with log_to(snakemake.log[0]):
    receipt = KnowledgeBase(snakemake.params.path).append(
        snakemake.input.ehull,
        run_name=snakemake.params.run_name,
        config_hash=snakemake.params.config_hash,
        max_e_above_hull=snakemake.params.max_e_above_hull,
        match=snakemake.params.match,
    )
    with atomic_write(snakemake.output.receipt) as tmp:
        tmp.write_text(json.dumps(receipt, indent=1) + "\n", encoding="utf-8")
