"""Snakemake shim: held-out evaluation of the recommender (see matdisco.recommender.evaluate)."""

from threadpoolctl import threadpool_limits

from matdisco.logutil import log_to
from matdisco.recommender.evaluate import evaluate_recommender
from matdisco.recommender.plots import plot_enrichment
from matdisco.settings import RecommenderSettings

with log_to(snakemake.log[0]), threadpool_limits(limits=snakemake.threads):
    metrics = evaluate_recommender(
        snakemake.input.store,
        snakemake.output.metrics,
        RecommenderSettings.from_config(snakemake.params.settings),
        classifier_model=snakemake.input.get("classifier"),
        target_elements=snakemake.params.elements,
    )
    plot_enrichment(metrics, snakemake.output.plot)
