# Template structure prediction and the candidate pool of all structure generators.
#   generate_templates  substitute target elements into the most similar known structures
#   pool_candidates     merge generator outputs, dedupe (within the pool and against the store),
#                       flag novelty / charge neutrality / minimum distance, per-generator metrics


# The proposal table is an input only when generate.compositions does not list the targets.
TEMPLATES_PROPOSALS = [] if config["generate"]["compositions"] else [out("proposals/proposals.csv")]


TARGETS.extend(
    [
        out("generate/templates/candidates.h5"),
        out("candidates/pool.h5"),
        out("candidates/pool.csv"),
        out("candidates/metrics.json"),
    ]
)


rule generate_templates:
    input:
        store=out("data/entries.h5"),
        proposals=TEMPLATES_PROPOSALS,
    output:
        candidates=out("generate/templates/candidates.h5"),
        summary=report(
            out("generate/templates/summary.json"),
            caption="../report/templates_summary.rst",
            category="Candidates",
        ),
    params:
        generate=config["generate"],
        templates=config["templates"],
        match=POOL_MATCH,
        oxidation_states=config["target"]["oxidation_states"],
        code=script_code("../scripts/generate_templates.py"),
    log:
        logf("generate_templates"),
    benchmark:
        out("benchmarks/generate_templates.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    script:
        "../scripts/generate_templates.py"


rule pool_candidates:
    input:
        # templates first (preferred representatives), then the GAN's file when that rule
        # exists; a lambda, because rules included after this file are only known later
        candidates=lambda wildcards: [out("generate/templates/candidates.h5")]
        + ([out("generate/gan/candidates.h5")] if rules.has("generate_gan") else []),
        loop=LOOP_VERSIONS,  # knowledge-base versions read (loop.use; loop.smk)
        store=out("data/entries.h5"),
    output:
        pool=out("candidates/pool.h5"),
        table=report(
            out("candidates/pool.csv"),
            caption="../report/pool_table.rst",
            category="Candidates",
        ),
        metrics=report(
            out("candidates/metrics.json"),
            caption="../report/pool_metrics.rst",
            category="Candidates",
        ),
        cifs=directory(out("candidates/cifs")),
    params:
        settings=config["pool"],
        code=script_code("../scripts/pool_candidates.py"),
        known=KNOWN,
    log:
        logf("pool_candidates"),
    benchmark:
        out("benchmarks/pool_candidates.tsv")
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=20,
    script:
        "../scripts/pool_candidates.py"
