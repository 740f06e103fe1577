"""Snakemake shim: the GAN's substitution training set (see matdisco.generate.gan.training_set)."""

from matdisco.generate.gan.training_set import build_gan_training_set
from matdisco.logutil import log_to
from matdisco.settings import GANTrainingSetSettings

p = snakemake.params
with log_to(snakemake.log[0]):
    build_gan_training_set(
        snakemake.input.store,
        elements=p.elements,
        oxidation_states=p.oxidation_states,
        max_atoms=p.max_atoms,
        settings=GANTrainingSetSettings.from_config(p.settings),
        out_store=snakemake.output.store,
        out_summary=snakemake.output.summary,
    )
