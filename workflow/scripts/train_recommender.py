"""Snakemake shim: fit the tensor recommender (see matdisco.recommender.model.train_recommender)."""

from threadpoolctl import threadpool_limits

from matdisco.logutil import log_to
from matdisco.recommender.model import train_recommender
from matdisco.settings import RecommenderSettings

with log_to(snakemake.log[0]), threadpool_limits(limits=snakemake.threads):
    train_recommender(
        snakemake.input.store,
        snakemake.output.model,
        RecommenderSettings.from_config(snakemake.params.settings),
        target_elements=snakemake.params.elements,
        out_summary=snakemake.output.summary,
    )
