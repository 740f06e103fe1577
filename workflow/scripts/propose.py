"""Snakemake shim: rank candidate compositions of the target space (see matdisco.propose.propose)."""

from threadpoolctl import threadpool_limits

from matdisco.logutil import log_to
from matdisco.propose import propose

with log_to(snakemake.log[0]), threadpool_limits(limits=snakemake.threads):
    propose(
        store=snakemake.input.store,
        recommender_model=snakemake.input.recommender,
        classifier_model=snakemake.input.get("classifier"),
        out_csv=snakemake.output.proposals,
        out_png=snakemake.output.plot,
        elements=snakemake.params.target["elements"],
        oxidation_states=snakemake.params.target.get("oxidation_states", {}),
        max_atoms=snakemake.params.target["max_atoms"],
        settings=snakemake.params.settings,
        known=snakemake.config.get("known"),
    )
