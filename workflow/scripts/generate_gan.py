"""Snakemake shim: sample structures for the target compositions (see matdisco.generate.gan)."""

from matdisco.generate.gan import generate_from_model
from matdisco.generate.targets import target_compositions
from matdisco.logutil import log_to

with log_to(snakemake.log[0]):
    proposals = list(snakemake.input.proposals)  # empty when generate.compositions is set
    generate_from_model(
        snakemake.input.model,
        target_compositions(
            proposals[0] if proposals else None,
            n_top=snakemake.params.n_top,
            compositions=snakemake.params.compositions,
        ),
        max_atoms=snakemake.params.max_atoms,
        sample=snakemake.params.sample,
        validity=snakemake.params.validity,
        dedupe=snakemake.params.dedupe,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        out_store=snakemake.output.store,
        out_cifs=snakemake.output.cifs,
        out_summary=snakemake.output.summary,
        threads=snakemake.threads,
    )
