"""Rerun semantics: a config or library-code edit reruns exactly the stage it affects.

After one full tiny run (config/test.yaml) in a private copy of the repository tree, dry runs
(`snakemake -n`) with one edit each must schedule the rule that uses the edited value or code
and the rules downstream of it, and nothing else:

* config edits (an extra --configfile layered over config/test.yaml, changing the current
  value): data.dedupe.ltol -> build_store; gan.train.epochs -> train_gan;
  classifier.decision_threshold -> train_ehull_classifier. Snakemake sees them because every
  rule gets its config slice through `params:` (rerun trigger "params").
* library-code edits (a comment appended to a module of the COPIED src/, which is first on
  PYTHONPATH): each rule passes `code=script_code("../scripts/<rule>.py")` through params, a
  hash of every matdisco module its script imports directly or not (a static import closure),
  so the rules whose scripts reach the module rerun: matdisco.generate.targets is imported by
  the GAN's script only through its own import line, which a hand-kept module list once missed.

The copy: Snakefile, workflow/, config/, profiles/, envs/ and src/ are copied, resources/ is a
symlink (read-only data). Nothing in the real checkout is modified. A case whose rule does not
exist in the workflow yet is skipped with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from matdisco.config import deep_update, validate_config
from matdisco.provenance import import_closure

ROOT = Path(__file__).resolve().parents[1]
RUN = "rerun"

pytestmark = pytest.mark.slow

# (config key, new value from the current one, rule that must rerun)
CONFIG_CASES = [
    ("data.dedupe.ltol", lambda v: round(v + 0.05, 3), "build_store"),
    ("gan.train.epochs", lambda v: v + 1, "train_gan"),
    ("classifier.decision_threshold", lambda v: 0.5 if v != 0.5 else 0.6, "train_ehull_classifier"),
]
# (case id, module file under src/ to edit, rule that must rerun)
CODE_CASES = [
    ("matdisco.data.dedupe", "matdisco/data/dedupe.py", "build_store"),
    ("matdisco.generate.gan", "matdisco/generate/gan/train.py", "train_gan"),
    ("matdisco.classifier", "matdisco/classifier/train.py", "train_ehull_classifier"),
    ("matdisco.generate.targets", "matdisco/generate/targets.py", "generate_gan"),
]


class Workflow:
    """A private copy of the workflow with its own results/ and .snakemake/."""

    def __init__(self, path: Path, snakemake: str):
        self.path = path
        self.snakemake = snakemake
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(path / "src"), os.environ.get("PYTHONPATH")])
            ),
        }
        self.env.pop("SNAKEMAKE_PROFILE", None)

    def run(self, *args: str, timeout: int = 3000) -> subprocess.CompletedProcess:
        return subprocess.run(
            [self.snakemake, "--cores", "2", *args],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def dry_run(self, *configfiles: str) -> dict[str, str]:
        """{rule: reason} of every job a dry run schedules (configfiles layered over test.yaml)."""
        proc = self.run(
            "-n", "--configfile", "config/test.yaml", *configfiles, "--config", f"run_name={RUN}"
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-4000:]
        return scheduled_jobs(out)


def scheduled_jobs(text: str) -> dict[str, str]:
    """{rule: first reason} from the job blocks of `snakemake -n` output."""
    jobs: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^\s*(?:rule|localrule|checkpoint) (\w+):$", line)
        if m:
            current = m.group(1)
            jobs.setdefault(current, "")
            continue
        m = re.match(r"^\s*reason: (.*)$", line)
        if m and current and not jobs[current]:
            jobs[current] = m.group(1)
    return jobs


def _rulegraph(wf: Workflow, *extra: str) -> dict[str, set[str]]:
    proc = wf.run(
        "--rulegraph", *extra, "--configfile", "config/test.yaml", "--config", f"run_name={RUN}"
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", proc.stdout, flags=re.M))
    children: dict[str, set[str]] = {n: set() for n in names.values()}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", proc.stdout, flags=re.M):
        children[names[a]].add(names[b])
    return children


def rule_graph(wf: Workflow) -> dict[str, set[str]]:
    """{rule: rules that consume its outputs}.

    A checkpoint hides part of the graph either way: once it is complete, `--rulegraph` drops
    it (split_pool) and its consumers' edges to it; before that (`--forceall`), the rules it
    fans out to (relax_shard) are unknown. So: the union of both graphs, plus an edge from each
    rule seen only before to each rule seen only after (checkpoint -> its fan-out).
    """
    done, fresh = _rulegraph(wf), _rulegraph(wf, "--forceall")
    graph = {r: set(done.get(r, ())) | set(fresh.get(r, ())) for r in set(done) | set(fresh)}
    for checkpoint in set(fresh) - set(done):
        graph[checkpoint] |= set(done) - set(fresh)
    return graph


def downstream(graph: dict[str, set[str]], rules: set[str]) -> set[str]:
    """The rules plus every rule that (transitively) consumes their outputs."""
    seen, todo = set(rules), list(rules)
    while todo:
        for child in graph.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def rules_using_module(rules_dir: Path, src: Path, relpath: str) -> set[str]:
    """Rules whose params pass code=script_code(<script>) with src/relpath in its import closure."""
    users = set()
    target = (src / relpath).resolve()
    for smk in rules_dir.glob("*.smk"):
        blocks = re.split(r"^(?=(?:rule|checkpoint) \w+:)", smk.read_text(), flags=re.M)
        for block in blocks:
            m = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if not m:
                continue
            for script in re.findall(r"code=script_code\(\"([^\"]+)\"\)", block):
                closure = import_closure((rules_dir / script).resolve(), root=src)
                if target in {p.resolve() for p in closure}:
                    users.add(m.group(1))
    return users


@pytest.fixture(scope="module")
def workflow(tmp_path_factory, snakemake_bin):
    """The copied tree after one full tiny run."""
    dst = tmp_path_factory.mktemp("rerun") / "wf"
    dst.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copy2(ROOT / "Snakefile", dst / "Snakefile")
    for d in ("workflow", "config", "profiles", "envs", "src"):
        if (ROOT / d).exists():
            shutil.copytree(ROOT / d, dst / d, ignore=ignore, symlinks=True)
    (dst / "resources").symlink_to(ROOT / "resources", target_is_directory=True)
    wf = Workflow(dst, snakemake_bin)
    # the copy's matdisco must be the one imported, or code edits would go unnoticed
    where = subprocess.run(
        [
            str(Path(snakemake_bin).parent / "python"),
            "-c",
            "import matdisco; print(matdisco.__file__)",
        ],
        env=wf.env,
        capture_output=True,
        text=True,
        cwd=dst,
    )
    assert where.stdout.strip().startswith(str(dst / "src")), (
        f"matdisco not imported from the copy: {where}"
    )
    proc = wf.run("--configfile", "config/test.yaml", "--config", f"run_name={RUN}")
    assert proc.returncode == 0, f"full tiny run failed:\n{(proc.stdout + proc.stderr)[-6000:]}"
    wf.graph = rule_graph(wf)
    return wf


def test_nothing_to_do_after_a_full_run(workflow):
    jobs = workflow.dry_run()
    assert not jobs, f"a dry run right after the full run still schedules jobs: {jobs}"


def _edit(key: str, change) -> dict:
    """A config overlay changing one dotted key from its current value (or its schema default)."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    deep_update(config, yaml.safe_load((ROOT / "config/test.yaml").read_text()) or {})
    node = validate_config(
        config, ROOT / "workflow/schemas/config.schema.yaml"
    )  # as the tiny run sees it
    parts = key.split(".")
    for p in parts:
        node = node[p]
    overlay = value = change(node)
    assert value != node, f"edit of {key} is a no-op ({node})"
    for p in reversed(parts):
        overlay = {p: overlay}
    return overlay


@pytest.mark.parametrize("key,change,rule", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config_edit_reruns_only_its_stage(workflow, tmp_path, key, change, rule):
    if rule not in workflow.graph:
        pytest.skip(f"rule {rule} is not in the workflow yet (its .smk is missing or not included)")
    extra = tmp_path / "edit.yaml"
    extra.write_text(yaml.safe_dump(_edit(key, change)))
    jobs = workflow.dry_run(str(extra))
    allowed = downstream(workflow.graph, {rule}) | {"all"}
    assert rule in jobs, f"editing {key} does not rerun {rule}; scheduled: {jobs}"
    assert "params" in jobs[rule].lower(), f"{rule} reruns for another reason: {jobs[rule]}"
    unrelated = set(jobs) - allowed
    assert not unrelated, f"editing {key} also reruns unrelated rules: {sorted(unrelated)}"


@pytest.mark.parametrize("module,relpath,rule", CODE_CASES, ids=[c[0] for c in CODE_CASES])
def test_library_code_edit_reruns_its_stage(workflow, module, relpath, rule):
    if rule not in workflow.graph:
        pytest.skip(f"rule {rule} is not in the workflow yet (its .smk is missing or not included)")
    src = workflow.path / "src" / relpath
    if not src.exists():
        pytest.skip(f"{relpath} does not exist")
    rules_dir, src_dir = workflow.path / "workflow" / "rules", workflow.path / "src"
    users = rules_using_module(rules_dir, src_dir, relpath) & set(workflow.graph)
    assert rule in users, f"rule {rule} does not pass script_code(...) covering {module} via params"
    original = src.read_bytes()
    try:
        src.write_bytes(original + b"\n# edited by tests/test_rerun.py\n")
        jobs = workflow.dry_run()
    finally:
        src.write_bytes(original)
    assert rule in jobs, f"editing {relpath} does not rerun {rule}; scheduled: {jobs}"
    # its own code hash changed, or an upstream rule whose code hash changed too reruns first
    # (e.g. build_gan_training_set imports the gan package as train_gan does)
    upstream_params = any(u != rule and u in jobs and "params" in jobs[u].lower() for u in users)
    assert "params" in jobs[rule].lower() or (
        upstream_params and "updated by another job" in jobs[rule].lower()
    ), f"{rule} reruns for another reason: {jobs[rule]}"
    allowed = downstream(workflow.graph, users) | {"all"}
    unrelated = set(jobs) - allowed
    assert not unrelated, f"editing {relpath} also reruns unrelated rules: {sorted(unrelated)}"
    # and back to nothing to do once the edit is undone
    assert not workflow.dry_run(), "the restored source still schedules jobs"
