"""Snakemake shim: rank candidate compositions of the target space (see matdisco.propose.stage)."""

from threadpoolctl import threadpool_limits

from matdisco.logutil import log_to
from matdisco.propose.stage import propose
from matdisco.settings import ProposeSettings, TargetSettings

with log_to(snakemake.log[0]), threadpool_limits(limits=snakemake.threads):
    target = TargetSettings.from_config(snakemake.params.target)
    propose(
        store=snakemake.input.store,
        recommender_model=snakemake.input.recommender,
        classifier_model=snakemake.input.get("classifier"),
        out_csv=snakemake.output.proposals,
        out_png=snakemake.output.plot,
        elements=target.elements,
        oxidation_states=target.oxidation_states,
        max_atoms=target.max_atoms,
        settings=ProposeSettings.from_config(snakemake.params.settings),
        out_summary=snakemake.output.get("summary"),
        known=snakemake.params.known,
    )
