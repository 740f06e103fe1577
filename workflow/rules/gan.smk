# Structure generation with a composition-conditioned WGAN-GP on the point-cloud
# representation (Kim et al., ACS Cent. Sci. 6, 1412 (2020)); matdisco.generate.gan.
#
# train_gan is the GPU job of the workflow. Resources here stay portable (memory, runtime);
# profiles/slurm adds `gpu`/`gres` for this rule on a cluster. Without a GPU it trains on the
# CPU (gan.device: auto), with `threads` torch threads (1 is fastest for these small networks).
#
# Checkpoint: results/<run>/gan/ckpt/last.pt is deliberately NOT an output. Snakemake deletes
# the declared outputs of a failed or killed job (and those of a job before it reruns), so a
# checkpoint declared as output would be lost exactly when it is needed. A rerun after an
# interruption (or with more gan.train.epochs) resumes from it; it is used only when the
# training data, settings and code match, else training starts afresh. Delete the folder to
# force training from scratch.

TARGETS.extend(
    [
        out("gan/training_set.json"),
        out("gan/training.png"),
        out("generate/gan/candidates.h5"),
        out("generate/gan/summary.json"),
    ]
)

# The training structures: the substitution training set (gan.training_set.enabled) or the
# store entries of the target system.
GAN_TRAINING_STORE = (
    out("gan/training_set.h5")
    if config["gan"]["training_set"]["enabled"]
    else out("data/entries.h5")
)

# The proposal table is an input only when no explicit compositions are configured.
GAN_PROPOSALS = [] if config["generate"]["compositions"] else [out("proposals/proposals.csv")]


rule build_gan_training_set:
    input:
        store=out("data/entries.h5"),
    output:
        store=out("gan/training_set.h5"),
        summary=out("gan/training_set.json"),
    params:
        elements=config["target"]["elements"],
        oxidation_states=config["target"]["oxidation_states"],
        max_atoms=config["target"]["max_atoms"],
        settings=config["gan"]["training_set"],
        code=script_code("../scripts/build_gan_training_set.py"),
    log:
        logf("build_gan_training_set"),
    benchmark:
        out("benchmarks/build_gan_training_set.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    script:
        "../scripts/build_gan_training_set.py"


rule train_gan:
    input:
        store=GAN_TRAINING_STORE,
    output:
        model=out("gan/model.pt"),
        history=out("gan/training.csv"),
        plot=report(
            out("gan/training.png"),
            caption="../report/gan_training.rst",
            category="Structure generation",
        ),
        summary=out("gan/train_summary.json"),
    params:
        elements=config["target"]["elements"],
        max_atoms=config["target"]["max_atoms"],
        data=config["gan"]["data"],
        augment=config["gan"]["augment"],
        model=config["gan"]["model"],
        train=config["gan"]["train"],
        seed=config["gan"]["seed"],
        device=config["gan"]["device"],
        ckpt_dir=out("gan/ckpt"),
        code=script_code("../scripts/train_gan.py"),
    log:
        logf("train_gan"),
    benchmark:
        out("benchmarks/train_gan.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/train_gan.py"


rule generate_gan:
    input:
        model=out("gan/model.pt"),
        proposals=GAN_PROPOSALS,
        training=GAN_TRAINING_STORE,
        known=out("data/entries.h5"),
    output:
        store=out("generate/gan/candidates.h5"),
        cifs=directory(out("generate/gan/cifs")),
        summary=out("generate/gan/summary.json"),
    params:
        n_top=config["generate"]["n_top"],
        compositions=config["generate"]["compositions"],
        max_atoms=config["target"]["max_atoms"],
        sample=config["gan"]["sample"],
        validity=config["gan"]["validity"],
        dedupe=config["gan"]["dedupe"],
        seed=config["gan"]["seed"],
        device=config["gan"]["device"],
        code=script_code("../scripts/generate_gan.py"),
    log:
        logf("generate_gan"),
    benchmark:
        out("benchmarks/generate_gan.tsv")
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/generate_gan.py"
