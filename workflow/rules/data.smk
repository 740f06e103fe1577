# Data stage: one normalised entry store from the configured source.

TARGETS.extend([out("data/entries.h5"), out("data/summary.json")])


rule build_store:
    input:
        unpack(data_inputs),
    output:
        store=out("data/entries.h5"),
        rejected=out("data/rejected.csv"),
        summary=out("data/summary.json"),
    params:
        source=config["data"]["source"],
        settings=config["data"][config["data"]["source"]],
        dedupe=config["data"]["dedupe"],
        code=script_code("../scripts/build_store.py"),
    log:
        logf("build_store"),
    benchmark:
        out("benchmarks/build_store.tsv")
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/build_store.py"
