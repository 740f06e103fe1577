# Closed loop (optional, matdisco.loop): a versioned local knowledge base (KB) at loop.path.
#   loop_append   (loop.enabled) this run's relaxed candidates -> a new immutable KB version
#   loop_labels   (loop.use, loop.labels) classifier extra labels + KB E_hull labels
# With loop.use, the KB version files of *other* runs are inputs of the rules that read them
# (pool_candidates, propose, relax_reference, ehull, featurize/train via loop_labels), so they
# rerun when a version is added; the KB entry reaches the library in the `known` slice (KNOWN).
# A run never reads its own versions, so loop_append (whose KB writes are not declared outputs)
# cannot put its own run out of date: no cycle.
from matdisco.config import config_hash

# LOOP, LOOP_VERSIONS, LOOP_ENTRY, KNOWN and LOOP_EXTRA_LABELS are defined in common.smk, so that
# every stage file can be included without this one (tests include single stages).

if LOOP["enabled"]:
    TARGETS.append(out("loop/append.json"))


# Local: it writes outside results/ (the KB folder, under a lock) and takes seconds.
localrules:
    loop_append,


rule loop_append:
    input:
        ehull=out("relax/ehull.h5"),
    output:
        receipt=out("loop/append.json"),
    params:
        path=LOOP["path"],
        run_name=config["run_name"],
        config_hash=config_hash(config),
        max_e_above_hull=LOOP["max_e_above_hull"],
        match=POOL_MATCH,
        code=script_code("../scripts/loop_append.py"),
    log:
        logf("loop_append"),
    benchmark:
        out("benchmarks/loop_append.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/loop_append.py"


rule loop_labels:
    input:
        LOOP_VERSIONS,
        **(
            {"configured": config["classifier"]["extra_labels"]}
            if config["classifier"]["extra_labels"]
            else {}
        ),
        store=out("data/entries.h5"),
        # the run's energy scale: only KB labels on it are used
        reference=out("relax/reference.csv"),
    output:
        labels=out("loop/extra_labels.csv"),
    params:
        loop=LOOP_ENTRY,
        code=script_code("../scripts/loop_labels.py"),
    log:
        logf("loop_labels"),
    benchmark:
        out("benchmarks/loop_labels.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/loop_labels.py"
