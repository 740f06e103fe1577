# Shared helpers: config validation (before any job), output paths, code fingerprints.
import logging
from pathlib import Path

from matdisco.config import ConfigError, validate_config
from matdisco.provenance import script_code_hash

SCHEMA = workflow.source_path("../schemas/config.schema.yaml")

# Validate first: an invalid config stops here with every problem listed by its key.
try:
    validate_config(config, SCHEMA)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RUN = Path("results") / config["run_name"]


def out(path):
    """A path inside this run's results folder, as a string."""
    return str(RUN / path)


def logf(name):
    """A log file of this run."""
    return str(RUN / "logs" / f"{name}.log")


def script_code(script):
    """Fingerprint of the matdisco modules a rule's script imports, directly or not.

    Pass it via params with the rule's `script:` path (relative to workflow/rules/), e.g.
    `code=script_code("../scripts/train_gan.py")`: an edit to any module in the script's import
    closure (found statically, so new modules count at once) reruns the rule.
    """
    return script_code_hash(workflow.source_path(script))


def data_inputs(wildcards=None):
    """Input files of the data stage for the configured source."""
    d = config["data"]
    if d["source"] == "bundled":
        return {"structures": d["bundled"]["structures"], "labels": d["bundled"]["labels"]}
    if d["source"] == "cif_dir":
        return {"labels": d["bundled"]["labels"]}
    return {"labels": d["bundled"]["labels"]}


# The structure-comparison part of the pool config (templates, pool, reference, E_hull rules).
POOL_MATCH = {k: config["pool"][k] for k in ("ltol", "stol", "angle_tol", "fingerprint_tol")}


# Final targets of the "all" target: each stage file appends the outputs a full run must make.
TARGETS = []

# Software environment of every rule for `--sdm conda` (relative to workflow/rules/). The
# default set-up (`make run`) uses the project's .venv instead.
ENV = "../../envs/matdisco.yaml"


# Closed loop (loop.smk, matdisco.loop): the knowledge-base view every stage file may read.
from matdisco.loop import workflow_view

LOOP = config["loop"]
# version files read by this run (rule inputs) and the KB entry for matdisco.known
LOOP_VERSIONS, LOOP_ENTRY = workflow_view(LOOP, config["run_name"])
# the `known` slice of the rules: config["known"] itself when the loop is not read
KNOWN = {**config["known"], "loop": LOOP_ENTRY} if LOOP_ENTRY else config["known"]
# classifier extra labels with the KB labels (replaces classifier.extra_labels as the input)
LOOP_EXTRA_LABELS = (
    {"extra_labels": out("loop/extra_labels.csv")} if LOOP_ENTRY and LOOP["labels"] else {}
)


# Work-around for a Snakemake group-components bug (see the file).
include: "snakemake_fixes.smk"
