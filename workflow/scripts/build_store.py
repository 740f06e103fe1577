"""Snakemake shim: build the entry store (see matdisco.data.build)."""

from matdisco.data.build import build_store
from matdisco.logutil import log_to
from matdisco.settings import DataSettings

with log_to(snakemake.log[0]):
    source = snakemake.params.source
    # the validated data.<source> and data.dedupe sections, typed (unknown keys are named)
    data = DataSettings.from_config(
        {"source": source, source: snakemake.params.settings, "dedupe": snakemake.params.dedupe}
    )
    build_store(
        source=data.source,
        settings=getattr(data, data.source),
        dedupe=data.dedupe,
        labels_path=snakemake.input.labels,
        out_store=snakemake.output.store,
        out_rejected=snakemake.output.rejected,
        out_summary=snakemake.output.summary,
        workers=snakemake.threads,
    )
