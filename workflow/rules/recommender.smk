# Recommender stage: tensor recommender of unreported compositions, and the proposals.
#   train_recommender     Tucker decomposition of the known-composition tensor (+ bootstrap refits)
#   evaluate_recommender  held-out recall@k / enrichment of tensor, matrix, popularity, classifier, combination
#   propose               enumerate the target space, score (classifier + recommender), rank by acquisition


# the E_hull classifier's model as a named input when its stage is in the workflow (classifier.smk
# is included before this file); propose uses it only with propose.use_classifier
RECOMMENDER_CLASSIFIER = (
    {"classifier": out("classifier/model.pkl")} if rules.has("train_ehull_classifier") else {}
)
PROPOSE_CLASSIFIER = RECOMMENDER_CLASSIFIER if config["propose"]["use_classifier"] else {}


TARGETS.extend(
    [
        out("recommender/model.pkl"),
        out("recommender/metrics.json"),
        out("recommender/enrichment.png"),
        out("proposals/proposals.csv"),
        out("proposals/proposals.png"),
    ]
)


rule train_recommender:
    input:
        store=out("data/entries.h5"),
    output:
        model=out("recommender/model.pkl"),
        summary=out("recommender/summary.json"),
    params:
        settings=config["recommender"],
        elements=config["target"]["elements"],
        code=script_code("../scripts/train_recommender.py"),
    conda:
        ENV
    log:
        logf("train_recommender"),
    benchmark:
        out("benchmarks/train_recommender.tsv")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    script:
        "../scripts/train_recommender.py"


rule evaluate_recommender:
    input:
        **RECOMMENDER_CLASSIFIER,
        store=out("data/entries.h5"),
    output:
        metrics=out("recommender/metrics.json"),
        plot=report(
            out("recommender/enrichment.png"),
            caption="../report/recommender_enrichment.rst",
            category="Recommender",
        ),
    params:
        settings=config["recommender"],
        elements=config["target"]["elements"],
        code=script_code("../scripts/evaluate_recommender.py"),
    conda:
        ENV
    log:
        logf("evaluate_recommender"),
    benchmark:
        out("benchmarks/evaluate_recommender.tsv")
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    script:
        "../scripts/evaluate_recommender.py"


rule propose:
    input:
        **PROPOSE_CLASSIFIER,
        store=out("data/entries.h5"),
        recommender=out("recommender/model.pkl"),
        loop=LOOP_VERSIONS,  # knowledge-base versions read (loop.use; loop.smk)
    output:
        proposals=out("proposals/proposals.csv"),
        summary=out("proposals/summary.json"),
        plot=report(
            out("proposals/proposals.png"),
            caption="../report/proposals.rst",
            category="Proposals",
        ),
    params:
        target=config["target"],
        settings=config["propose"],
        known=KNOWN,
        code=script_code("../scripts/propose.py"),
    conda:
        ENV
    log:
        logf("propose"),
    benchmark:
        out("benchmarks/propose.tsv")
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/propose.py"
