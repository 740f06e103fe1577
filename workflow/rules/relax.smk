# Relaxation stage: the candidate pool is split into shards (checkpoint), each shard relaxed
# resumably in a "relax" group job, the known phases recomputed once on the same energy scale,
# then E_hull, decomposition and metastable rates per generator (matdisco.relax).
from matdisco.relax.shards import shard_files

TARGETS.extend(
    [
        out("relax/ehull.csv"),
        out("relax/metastable_rates.json"),
        out("relax/hull.png"),
        out("relax/ehull_by_generator.png"),
    ]
)

# Settings of config["relax"] that shape a relaxation result (other keys, e.g. max_candidates,
# do not rerun finished shards), and the configured backend's own section.
RELAX_OPTIMIZER = {
    k: config["relax"][k]
    for k in (
        "fmax",
        "steps",
        "rattle",
        "seed",
        "relax_cell",
        "timeout_s",
        "min_energy_per_atom",
        "max_volume_ratio",
        "min_distance",
        "require_convergence",
        "batched",
        "max_batch",
    )
}
RELAX_BACKEND_OPTIONS = config["relax"].get(config["relax"]["backend"], {})
# The pre-screen compares single points with the reference hull, so shards then wait for it.
RELAX_SHARD_REFERENCE = (
    out("relax/reference.csv") if config["relax"]["prescreen"]["enabled"] else []
)
# Shard files and results, known once the split_pool checkpoint has run.
RELAX_GATHER_INPUTS = lambda wildcards: shard_files(
    checkpoints.split_pool.get().output.shards, out("relax/results")
)


checkpoint split_pool:
    input:
        pool=out("candidates/pool.h5"),
    output:
        shards=directory(out("relax/shards")),
        selected=out("relax/selected.csv"),
    params:
        shard_size=config["relax"]["shard_size"],
        max_candidates=config["relax"]["max_candidates"],
        only_valid=config["relax"]["only_valid"],
        max_sites=config["relax"]["max_sites"],
        selection=config["relax"]["selection"],
        code=script_code("../scripts/split_pool.py"),
    log:
        logf("split_pool"),
    benchmark:
        out("benchmarks/split_pool.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/split_pool.py"


rule relax_reference:
    input:
        store=out("data/entries.h5"),
        loop=LOOP_VERSIONS,  # knowledge-base versions read (loop.use; loop.smk)
    output:
        records=out("relax/reference.jsonl"),
        table=out("relax/reference.csv"),
    params:
        elements=config["target"]["elements"],
        backend=config["relax"]["backend"],
        backend_options=RELAX_BACKEND_OPTIONS,
        relax=RELAX_OPTIMIZER,
        reference=config["ehull"]["reference"],
        # template stand-ins for known formulas without a stored structure (matdisco.known)
        templates=config["templates"],
        oxidation_states=config["target"]["oxidation_states"],
        match=POOL_MATCH,
        known=KNOWN,
        # kept when the job fails or is killed (not an output): the rerun resumes from it
        progress=out("relax/progress/reference.jsonl"),
        code=script_code("../scripts/relax_reference.py"),
    log:
        logf("relax_reference"),
    benchmark:
        out("benchmarks/relax_reference.tsv")
    conda:
        ENV
    # 1 thread: it runs beside the generator stages (it needs only the store), well before
    # the pool exists
    threads: 1
    resources:
        # measured peak 2.2 GB for CHGNet on the 33 Mg-Mn-O phases (up to 72-atom cells)
        mem_mb=3000,
        runtime=60,
    script:
        "../scripts/relax_reference.py"


rule relax_shard:
    input:
        shard=out("relax/shards/{shard}.h5"),
        reference=RELAX_SHARD_REFERENCE,
    output:
        out("relax/results/{shard}.jsonl"),
    params:
        backend=config["relax"]["backend"],
        backend_options=RELAX_BACKEND_OPTIONS,
        relax=RELAX_OPTIMIZER,
        prescreen=config["relax"]["prescreen"],
        # kept when the job fails or is killed (not an output): the rerun resumes from it
        progress=out("relax/progress/{shard}.jsonl"),
        code=script_code("../scripts/relax_shard.py"),
    wildcard_constraints:
        shard="shard_[0-9]+",
    log:
        logf("relax_shard_{shard}"),
    benchmark:
        out("benchmarks/relax_shard_{shard}.tsv")
    group:
        "relax"
    conda:
        ENV
    threads: 1
    resources:
        # measured peak 1.2 GB for CHGNet on 40-atom cells (batch_size 1)
        mem_mb=2500,
        runtime=120,
    script:
        "../scripts/relax_shard.py"


rule gather_relax:
    input:
        unpack(RELAX_GATHER_INPUTS),
    output:
        store=out("relax/relaxed.h5"),
        table=out("relax/relaxed.csv"),
    params:
        code=script_code("../scripts/gather_relax.py"),
    log:
        logf("gather_relax"),
    benchmark:
        out("benchmarks/gather_relax.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/gather_relax.py"


# Generator summaries for the S.U.N. funnel (pool "generator" value -> summary JSON).
EHULL_SUMMARIES = lambda wildcards: {
    "template": out("generate/templates/summary.json"),
    **({"wgan_gp": out("generate/gan/summary.json")} if rules.has("generate_gan") else {}),
}


rule ehull:
    input:
        unpack(EHULL_SUMMARIES),
        relaxed=out("relax/relaxed.h5"),
        reference=out("relax/reference.csv"),
        # known-ness (matdisco.known), reference structures, pool matches, the funnel
        store=out("data/entries.h5"),
        reference_records=out("relax/reference.jsonl"),
        pool=out("candidates/pool.csv"),
        selected=out("relax/selected.csv"),
        loop=LOOP_VERSIONS,  # knowledge-base versions read (loop.use; loop.smk)
    output:
        table=report(
            out("relax/ehull.csv"),
            caption="../report/relax_ehull.rst",
            category="Relaxation",
        ),
        store=out("relax/ehull.h5"),
        rates=report(
            out("relax/metastable_rates.json"),
            caption="../report/relax_rates.rst",
            category="Relaxation",
        ),
    params:
        thresholds=config["ehull"]["thresholds"],
        reference_mode=config["ehull"]["reference"]["mode"],
        code=script_code("../scripts/ehull.py"),
        known=KNOWN,
        match=POOL_MATCH,
        below_hull_tolerance=config["ehull"]["below_hull_tolerance"],
    log:
        logf("ehull"),
    benchmark:
        out("benchmarks/ehull.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/ehull.py"


rule plot_relax:
    input:
        table=out("relax/ehull.csv"),
        reference=out("relax/reference.csv"),
    output:
        hull=report(
            out("relax/hull.png"),
            caption="../report/relax_hull.rst",
            category="Relaxation",
        ),
        distribution=report(
            out("relax/ehull_by_generator.png"),
            caption="../report/relax_ehull_distribution.rst",
            category="Relaxation",
        ),
    params:
        thresholds=config["ehull"]["thresholds"],
        plot_max_e_above_hull=config["ehull"]["plot_max_e_above_hull"],
        code=script_code("../scripts/plot_relax.py"),
    log:
        logf("plot_relax"),
    benchmark:
        out("benchmarks/plot_relax.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/plot_relax.py"
