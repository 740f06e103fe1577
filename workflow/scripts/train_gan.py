"""Snakemake shim: train the WGAN-GP structure generator (see matdisco.generate.gan.train)."""

from matdisco.generate.gan.train import train_from_store
from matdisco.logutil import log_to
from matdisco.settings import GANSettings

p = snakemake.params
with log_to(snakemake.log[0]):
    settings = GANSettings.from_config(
        {
            "seed": p.seed,
            "device": p.device,
            "data": p.data,
            "augment": p.augment,
            "model": p.model,
            "train": p.train,
        }
    )
    train_from_store(
        snakemake.input.store,
        elements=p.elements,
        max_atoms=p.max_atoms,
        settings=settings,
        ckpt_dir=p.ckpt_dir,
        out_model=snakemake.output.model,
        out_history=snakemake.output.history,
        out_plot=snakemake.output.plot,
        out_summary=snakemake.output.summary,
        threads=snakemake.threads,
    )
