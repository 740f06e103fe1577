"""Snakemake shim: template-based structure prediction (see matdisco.generate.templates)."""

from matdisco.generate.targets import target_compositions
from matdisco.generate.templates.stage import generate_templates
from matdisco.logutil import log_to
from matdisco.settings import PoolSettings, TemplateSettings

with log_to(snakemake.log[0]):
    gen = snakemake.params.generate
    proposals = list(snakemake.input.proposals)  # empty when generate.compositions is set
    targets = target_compositions(
        proposals[0] if proposals else None, n_top=gen["n_top"], compositions=gen["compositions"]
    )
    generate_templates(
        snakemake.input.store,
        targets,
        out_store=snakemake.output.candidates,
        out_summary=snakemake.output.summary,
        settings=TemplateSettings.from_config(snakemake.params.templates),
        match=PoolSettings.from_config(snakemake.params.match),
        oxidation_states=snakemake.params.oxidation_states,
    )
