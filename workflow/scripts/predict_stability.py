"""Snakemake shim: stability predictions for the target chemical system's known formulas."""

from matdisco.classifier.model import predict_target_formulas
from matdisco.logutil import log_to

with log_to(snakemake.log[0]):
    predict_target_formulas(
        store=snakemake.input.store,
        model=snakemake.input.model,
        elements=snakemake.params.elements,
        out_csv=snakemake.output.predictions,
    )
