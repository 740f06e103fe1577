"""The Snakemake work-around (workflow/rules/snakemake_fixes.smk) checks the version it targets.

The file is plain Python (no Snakemake directives), so it is executed here as Snakemake would
include it, against the installed Snakemake with its version string or functions altered
(restored afterwards by monkeypatch).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXES = ROOT / "workflow" / "rules" / "snakemake_fixes.smk"

sm = pytest.importorskip("snakemake")
import snakemake.api  # noqa: E402,F401  (loads dag/jobs in the order Snakemake does)
import snakemake.dag as sm_dag  # noqa: E402
import snakemake.jobs as sm_jobs  # noqa: E402
from snakemake.logging import logger  # noqa: E402


@pytest.fixture
def include(monkeypatch):
    """Run the .smk file; returns (its namespace, warnings it logged). Patches are undone."""
    # register the originals so that monkeypatch restores them after the file patched them
    monkeypatch.setattr(sm_jobs.GroupJobFactory, "new", sm_jobs.GroupJobFactory.new)
    monkeypatch.setattr(sm_dag.DAG, "_update_group_components", sm_dag.DAG._update_group_components)
    warnings: list[str] = []
    monkeypatch.setattr(logger, "warning", lambda msg, *a, **k: warnings.append(str(msg)))

    def run() -> tuple[dict, list[str]]:
        namespace: dict = {"__name__": "snakemake_fixes"}
        exec(compile(FIXES.read_text(), str(FIXES), "exec"), namespace)
        return namespace, warnings

    return run


def test_pinned_version_matches_the_workflow_extra():
    pinned = ROOT.joinpath("pyproject.toml").read_text()
    ns_version = FIXES.read_text().split('SNAKEMAKE_FIXES_FOR = "')[1].split('"')[0]
    assert f'"snakemake=={ns_version}"' in pinned, (
        "snakemake_fixes.smk targets another version than the pin"
    )


def test_target_version_applies_quietly(include, monkeypatch):
    monkeypatch.setattr(sm, "__version__", "9.27.1")
    ns, warnings = include()
    assert warnings == []
    assert sm_jobs.GroupJobFactory.new is ns["_groupjob_new"]
    assert sm_dag.DAG._update_group_components is ns["_update_group_components"]


def test_other_version_warns_and_still_applies(include, monkeypatch):
    monkeypatch.setattr(sm, "__version__", "9.99.0")
    ns, warnings = include()
    assert len(warnings) == 1 and "9.27.1" in warnings[0] and "9.99.0" in warnings[0]
    assert "applied anyway" in warnings[0]
    assert sm_dag.DAG._update_group_components is ns["_update_group_components"]


def test_missing_functions_warn_and_patch_nothing(include, monkeypatch):
    monkeypatch.setattr(sm, "__version__", "10.0.0")
    monkeypatch.delattr(sm_dag.DAG, "_update_group_components")
    original_new = sm_jobs.GroupJobFactory.new
    ns, warnings = include()
    assert len(warnings) == 1 and "NOT applied" in warnings[0]
    assert sm_jobs.GroupJobFactory.new is original_new
    assert not hasattr(sm_dag.DAG, "_update_group_components")
