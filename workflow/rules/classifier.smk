# Stability classifier stage: composition features -> calibrated LightGBM E_hull classifier.
#   featurize               every formula of the store (labels + entries) and of the extra labels
#   train_ehull_classifier  CV (stratified + chemsys-grouped), held-out test, calibration, ensemble
#   predict_stability       the target chemical system's known formulas through the model
from matdisco.config import config_hash

# optional extra training labels (e.g. Bartel 2020 ΔH_d) as a named input, or nothing
CLASSIFIER_EXTRA_LABELS = (
    {"extra_labels": config["classifier"]["extra_labels"]}
    if config["classifier"]["extra_labels"]
    else {}
)
# loop.use + loop.labels: the same labels plus knowledge-base E_hull labels (loop.smk)
CLASSIFIER_EXTRA_LABELS = LOOP_EXTRA_LABELS or CLASSIFIER_EXTRA_LABELS
# element tables of the features (the ElMD scale table is optional)
FEATURE_TABLES = {"magpie": config["features"]["magpie_table"]}
if config["features"]["elmd_table"]:
    FEATURE_TABLES["elmd"] = config["features"]["elmd_table"]
# config hash stamped into the model: the slices that shape it
CLASSIFIER_STAMP = config_hash(
    {"data": config["data"], "features": config["features"], "classifier": config["classifier"]}
)


TARGETS.extend(
    [
        out("classifier/model.pkl"),
        out("classifier/metrics.json"),
        out("classifier/roc.png"),
        out("classifier/pr.png"),
        out("classifier/reliability.png"),
        out("classifier/target_predictions.csv"),
    ]
)


rule featurize:
    input:
        **CLASSIFIER_EXTRA_LABELS,
        **FEATURE_TABLES,
        store=out("data/entries.h5"),
    output:
        features=out("features/composition_features.h5"),
        rejects=out("features/rejects.csv"),
    params:
        settings=config["features"],
        code=script_code("../scripts/featurize.py"),
    conda:
        ENV
    log:
        logf("featurize"),
    benchmark:
        out("benchmarks/featurize.tsv")
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    script:
        "../scripts/featurize.py"


rule train_ehull_classifier:
    input:
        **CLASSIFIER_EXTRA_LABELS,
        store=out("data/entries.h5"),
        features=out("features/composition_features.h5"),
    output:
        model=out("classifier/model.pkl"),
        metrics=out("classifier/metrics.json"),
        roc=report(
            out("classifier/roc.png"),
            caption="../report/classifier_roc.rst",
            category="Stability classifier",
        ),
        pr=report(
            out("classifier/pr.png"),
            caption="../report/classifier_pr.rst",
            category="Stability classifier",
        ),
        reliability=report(
            out("classifier/reliability.png"),
            caption="../report/classifier_reliability.rst",
            category="Stability classifier",
        ),
        importances=out("classifier/feature_importances.csv"),
        predictions=out("classifier/oof_predictions.csv"),
        rejects=out("classifier/label_rejects.csv"),
        timings=out("classifier/timings.json"),
    params:
        settings=config["classifier"],
        features=config["features"],
        stamp=CLASSIFIER_STAMP,
        code=script_code("../scripts/train_ehull_classifier.py"),
    conda:
        ENV
    log:
        logf("train_ehull_classifier"),
    benchmark:
        out("benchmarks/train_ehull_classifier.tsv")
    threads: 2
    resources:
        mem_mb=6000,
        runtime=30,
    script:
        "../scripts/train_ehull_classifier.py"


rule predict_stability:
    input:
        store=out("data/entries.h5"),
        model=out("classifier/model.pkl"),
    output:
        predictions=report(
            out("classifier/target_predictions.csv"),
            caption="../report/classifier_target.rst",
            category="Stability classifier",
        ),
    params:
        elements=config["target"]["elements"],
        code=script_code("../scripts/predict_stability.py"),
    conda:
        ENV
    log:
        logf("predict_stability"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/predict_stability.py"
