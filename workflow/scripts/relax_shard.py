"""Snakemake shim: relax one shard, resumably (see matdisco.relax.shards.run_shard).

The progress file (params.progress) is not an output: Snakemake keeps it when the job fails
or is killed, and the rerun skips the structures already in it.
"""

import os

# single-threaded BLAS before numpy loads (snakemake.threads goes to torch; see
# matdisco.relax.backends.set_threads)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

from matdisco.logutil import log_to  # noqa: E402
from matdisco.relax.shards import run_shard  # noqa: E402
from matdisco.settings import RelaxPrescreenSettings, RelaxSettings  # noqa: E402

with log_to(snakemake.log[0]):
    run_shard(
        snakemake.input.shard,
        snakemake.output[0],
        snakemake.params.progress,
        backend=snakemake.params.backend,
        backend_options=snakemake.params.backend_options,
        relax=RelaxSettings.from_config(snakemake.params.relax),
        prescreen=RelaxPrescreenSettings.from_config(snakemake.params.prescreen),
        # an empty input (pre-screen off) means no reference
        reference_path=str(snakemake.input.reference) if snakemake.input.get("reference") else None,
        threads=snakemake.threads,
    )
