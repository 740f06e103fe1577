"""Snakemake shim: held-out evaluation of the recommender (see matdisco.recommender.evaluate_recommender)."""

from threadpoolctl import threadpool_limits

from matdisco.logutil import log_to
from matdisco.recommender import evaluate_recommender, plot_enrichment

with log_to(snakemake.log[0]), threadpool_limits(limits=snakemake.threads):
    metrics = evaluate_recommender(
        snakemake.input.store,
        snakemake.output.metrics,
        snakemake.params.settings,
        classifier_model=snakemake.input.get("classifier"),
        target_elements=snakemake.params.elements,
    )
    plot_enrichment(metrics, snakemake.output.plot)
