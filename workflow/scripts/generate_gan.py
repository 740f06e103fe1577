"""Snakemake shim: sample structures for the target compositions (see matdisco.generate.gan)."""

from matdisco.generate.gan.sample import generate_from_model
from matdisco.generate.targets import target_compositions
from matdisco.logutil import log_to
from matdisco.settings import GANSettings

p = snakemake.params
with log_to(snakemake.log[0]):
    proposals = list(snakemake.input.proposals)  # empty when generate.compositions is set
    settings = GANSettings.from_config(
        {
            "seed": p.seed,
            "device": p.device,
            "sample": p.sample,
            "validity": p.validity,
            "dedupe": p.dedupe,
        }
    )
    generate_from_model(
        snakemake.input.model,
        target_compositions(
            proposals[0] if proposals else None,
            n_top=p.n_top,
            compositions=p.compositions,
        ),
        max_atoms=p.max_atoms,
        settings=settings,
        out_store=snakemake.output.store,
        out_cifs=snakemake.output.cifs,
        out_summary=snakemake.output.summary,
        threads=snakemake.threads,
        training_store=snakemake.input.training,
        known_store=snakemake.input.known,
    )
