"""Snakemake shim: train the WGAN-GP structure generator (see matdisco.generate.gan)."""

from matdisco.generate.gan import train_from_store
from matdisco.logutil import log_to

with log_to(snakemake.log[0]):
    train_from_store(
        snakemake.input.store,
        elements=snakemake.params.elements,
        max_atoms=snakemake.params.max_atoms,
        data=snakemake.params.data,
        augment_settings=snakemake.params.augment,
        model=snakemake.params.model,
        train=snakemake.params.train,
        seed=snakemake.params.seed,
        device=snakemake.params.device,
        ckpt_dir=snakemake.params.ckpt_dir,
        out_model=snakemake.output.model,
        out_history=snakemake.output.history,
        out_plot=snakemake.output.plot,
        out_summary=snakemake.output.summary,
        threads=snakemake.threads,
    )
