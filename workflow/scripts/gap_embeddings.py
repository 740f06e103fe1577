"""Snakemake shim: CHGNet structure embedding of the store (see matdisco.screen.gap_embedding)."""

import json

from matdisco.logutil import log_to
from matdisco.screen.gap_embedding import embed_store

with log_to(snakemake.log[0]):
    summary = embed_store(
        snakemake.input.store,
        snakemake.output.embeddings,
        reuse=snakemake.input.get("reuse"),
        threads=snakemake.threads,
    )
    with open(snakemake.output.summary, "w", encoding="utf-8") as fh:
        json.dump({"structure_embedding": snakemake.params.kind, **summary}, fh, indent=2)
        fh.write("\n")
