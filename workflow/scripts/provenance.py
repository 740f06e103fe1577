"""Snakemake shim: the run's provenance record, secrets redacted (see matdisco.archive)."""

from matdisco.archive import write_provenance
from matdisco.logutil import log_to

with log_to(snakemake.log[0]):
    write_provenance(snakemake.output[0], dict(snakemake.params.config))
