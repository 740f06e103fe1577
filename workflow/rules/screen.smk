# Screening stage: aqueous stability and band gap of the relaxed candidates, the final table.
#   pourbaix    ΔG_pbx (max over pH at U vs RHE) of candidates passing the E_hull filter
#   gap_embeddings  CHGNet structure embedding of every store structure (bundled rows reused)
#   bandgap     ML surrogate of the PBE gap (+ HSE-level estimate); VASP HSE06 inputs / GPAW PBE
#   screen      thresholds -> final/candidates.csv (pass/fail per criterion), CIFs, powder XRD
#   provenance  effective config, versions, git state, data hashes (last; `matdisco archive` reads it)
# The HTML report (`snakemake --report results/<run>/report.html`) and the archive
# (`matdisco archive results/<run>`) are commands run after the workflow: see the Makefile.

TARGETS.extend(
    [
        out("screen/pourbaix.csv"),
        out("screen/bandgap.csv"),
        out("final/candidates.csv"),
        out("final/summary.json"),
        out("final/funnel.csv"),
        out("final/funnel.png"),
        out("provenance/run.json"),
    ]
)


# Relaxed candidates: screen.candidates, else the relax stage's E_hull store (relax.smk).
SCREEN_CANDIDATES = config["screen"]["candidates"] or out("relax/ehull.h5")
SCREEN_POURBAIX = config["screen"]["pourbaix"]
# Element-property tables of the composition featuriser (the ElMD table is optional).
SCREEN_FEATURE_TABLES = lambda wildcards: {
    "magpie": config["features"]["magpie_table"],
    **({"elmd": config["features"]["elmd_table"]} if config["features"]["elmd_table"] else {}),
}
# relax.gpaw settings for the gpaw_pbe gap path.
SCREEN_GPAW = (
    config.get("relax", {}).get("gpaw", {})
    if config["screen"]["bandgap_method"] == "gpaw_pbe"
    else {}
)
# CHGNet structure embedding of the store (screen.bandgap.structure_embedding; null = none).
GAP_EMBEDDING = config["screen"]["bandgap"]["structure_embedding"]
GAP_EMBEDDING_FILE = config["screen"]["bandgap"]["structure_embedding_file"]
# Every other final target, so that the provenance record is written last.
PROVENANCE_INPUTS = lambda wildcards: [t for t in TARGETS if t != out("provenance/run.json")]


rule pourbaix:
    input:
        candidates=SCREEN_CANDIDATES,
        solids=SCREEN_POURBAIX["solids"],
        ion_references=SCREEN_POURBAIX["ion_references"],
        elemental_references=SCREEN_POURBAIX["elemental_references"],
    output:
        table=out("screen/pourbaix.csv"),
        summary=out("screen/pourbaix.json"),
    params:
        settings=config["screen"]["pourbaix"],
        max_e_above_hull=config["screen"]["thresholds"]["e_above_hull_max"],
        code=script_code("../scripts/pourbaix.py"),
    log:
        logf("pourbaix"),
    benchmark:
        out("benchmarks/pourbaix.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    script:
        "../scripts/pourbaix.py"


if GAP_EMBEDDING:

    rule gap_embeddings:
        input:
            **({"reuse": GAP_EMBEDDING_FILE} if GAP_EMBEDDING_FILE else {}),
            store=out("data/entries.h5"),
        output:
            embeddings=out("screen/store_embeddings.h5"),
            summary=out("screen/store_embeddings.json"),
        params:
            kind=GAP_EMBEDDING,
            code=script_code("../scripts/gap_embeddings.py"),
        log:
            logf("gap_embeddings"),
        benchmark:
            out("benchmarks/gap_embeddings.tsv")
        conda:
            ENV
        threads: 2
        resources:
            mem_mb=4000,
            runtime=120,
        script:
            "../scripts/gap_embeddings.py"


rule bandgap:
    input:
        unpack(SCREEN_FEATURE_TABLES),
        **({"embeddings": out("screen/store_embeddings.h5")} if GAP_EMBEDDING else {}),
        store=out("data/entries.h5"),
        candidates=SCREEN_CANDIDATES,
    output:
        table=out("screen/bandgap.csv"),
        model=out("screen/bandgap_model.pkl"),
        metrics=out("screen/bandgap_metrics.json"),
        parity=report(
            out("screen/bandgap_parity.png"),
            caption="../report/screen_bandgap.rst",
            category="Screening",
        ),
        dft=directory(out("screen/bandgap_dft")),
    params:
        method=config["screen"]["bandgap_method"],
        settings=config["screen"]["bandgap"],
        features=config["features"],
        max_e_above_hull=config["screen"]["thresholds"]["e_above_hull_max"],
        gpaw=SCREEN_GPAW,
        code=script_code("../scripts/bandgap.py"),
    log:
        logf("bandgap"),
    benchmark:
        out("benchmarks/bandgap.tsv")
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/bandgap.py"


rule screen:
    input:
        candidates=SCREEN_CANDIDATES,
        solids=SCREEN_POURBAIX["solids"],
        ion_references=SCREEN_POURBAIX["ion_references"],
        elemental_references=SCREEN_POURBAIX["elemental_references"],
        pourbaix=out("screen/pourbaix.csv"),
        bandgap=out("screen/bandgap.csv"),
        metrics=out("screen/bandgap_metrics.json"),
    output:
        table=report(
            out("final/candidates.csv"),
            caption="../report/screen_table.rst",
            category="Screening",
        ),
        all=out("final/all_candidates.csv"),
        columns=out("final/candidates_columns.json"),
        summary=out("final/summary.json"),
        cifs=directory(out("final/cifs")),
        xrd=directory(out("final/xrd")),
        xrd_plot=report(
            out("final/xrd.png"),
            caption="../report/screen_xrd.rst",
            category="Screening",
        ),
        scatter=report(
            out("final/candidates_scatter.png"),
            caption="../report/screen_scatter.rst",
            category="Screening",
        ),
        pourbaix_plot=report(
            out("final/pourbaix_best.png"),
            caption="../report/screen_pourbaix.rst",
            category="Screening",
        ),
    params:
        settings=config["screen"],
        method=config["screen"]["bandgap_method"],
        code=script_code("../scripts/screen.py"),
    log:
        logf("screen"),
    benchmark:
        out("benchmarks/screen.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=3000,
        runtime=20,
    script:
        "../scripts/screen.py"


# The S.U.N. funnel with the screen stage (relax/metastable_rates.json has it up to <= 80 meV).
rule funnel:
    input:
        unpack(EHULL_SUMMARIES),
        pool=out("candidates/pool.csv"),
        selected=out("relax/selected.csv"),
        ehull=out("relax/ehull.csv"),
        final=out("final/all_candidates.csv"),
    output:
        table=report(
            out("final/funnel.csv"),
            caption="../report/funnel.rst",
            category="Screening",
        ),
        plot=report(
            out("final/funnel.png"),
            caption="../report/funnel.rst",
            category="Screening",
        ),
    params:
        thresholds=config["ehull"]["thresholds"],
        code=script_code("../scripts/funnel.py"),
    log:
        logf("funnel"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/funnel.py"


rule provenance:
    input:
        PROVENANCE_INPUTS,
    output:
        out("provenance/run.json"),
    params:
        config=config,
        code=script_code("../scripts/provenance.py"),
    log:
        logf("provenance"),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/provenance.py"
