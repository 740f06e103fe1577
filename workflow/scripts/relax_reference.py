"""Snakemake shim: known phases of the target system on the backend's energy scale.

See matdisco.relax.reference.compute_reference. Threads are fixed before numpy/torch load.
"""

import os

# single-threaded BLAS before numpy loads (snakemake.threads goes to torch; see
# matdisco.relax.backends.set_threads)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

from matdisco.logutil import log_to  # noqa: E402
from matdisco.relax.reference import compute_reference  # noqa: E402
from matdisco.settings import EHullReferenceSettings, RelaxSettings  # noqa: E402

with log_to(snakemake.log[0]):
    compute_reference(
        snakemake.input.store,
        snakemake.output.records,
        snakemake.output.table,
        snakemake.params.progress,
        elements=snakemake.params.elements,
        backend=snakemake.params.backend,
        backend_options=snakemake.params.backend_options,
        relax=RelaxSettings.from_config(snakemake.params.relax),
        reference=EHullReferenceSettings.from_config(snakemake.params.reference),
        threads=snakemake.threads,
        templates=snakemake.params.templates,
        oxidation_states=snakemake.params.oxidation_states,
        match=snakemake.params.match,
        known=snakemake.params.known,
    )
