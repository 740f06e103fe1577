# Work-around for Snakemake issues #1217 / #1628 (seen with 9.27.1): --group-components with a
# checkpoint fan-out (relax.smk: split_pool -> relax_shard in group "relax") that is already
# complete when Snakemake starts. On its second DAG pass Snakemake merges its cached, already
# merged group jobs again: shards are submitted twice and the DAG build turns quadratic.
# Cause: DAG._update_group_components mutates cached GroupJob objects (hashed by their job set).
# Fix: merged groups are new (cached) objects; no group is changed after creation. Checked by
# tests/test_slurm.py and benchmarks/dag_scale.py. Remove once fixed upstream.
# Written for Snakemake 9.27.1 (the pinned version): any other version gets a warning, and the
# patch is applied only where the two patched functions still exist.
from collections import defaultdict as _defaultdict

import snakemake as _snakemake
import snakemake.dag as _sm_dag
import snakemake.jobs as _sm_jobs
from snakemake.common import group_into_chunks as _group_into_chunks
from snakemake.logging import logger as _logger

SNAKEMAKE_FIXES_FOR = "9.27.1"


def _groupjob_new(self, id, jobs, resources):
    jobs = frozenset(jobs)
    key = (id, jobs)
    obj = self.cache.get(key)
    if obj is None or obj.jobs != jobs:  # never hand out a group that was merged in place
        obj = _sm_jobs.GroupJob(id, jobs, resources)
        self.cache[key] = obj
    return obj


def _group_order(group):
    return sorted(str(f) for job in group.jobs for f in job.output)


def _update_group_components(self):
    groups_by_id = _defaultdict(set)
    for group in self._group.values():
        groups_by_id[group.groupid].add(group)
    for groupid, components in groups_by_id.items():
        lookup_id = self.workflow.parent_groupids.get(groupid, groupid)
        n_components = self.workflow.group_settings.group_components.get(lookup_id, 1)
        if n_components > 1:
            # same chunks on every DAG pass -> the same cached group objects
            for chunk in _group_into_chunks(n_components, sorted(components, key=_group_order)):
                if len(chunk) > 1:
                    merged = self.group_job_factory.new(
                        groupid, (j for g in chunk for j in g.jobs), self.workflow.global_resources
                    )
                    for job in merged.jobs:
                        self._group[job] = merged
    for group in set(self._group.values()):
        group.finalize()


_SM_VERSION = getattr(_snakemake, "__version__", "unknown")
_SM_PATCHABLE = (
    hasattr(_sm_jobs, "GroupJobFactory")
    and hasattr(_sm_jobs.GroupJobFactory, "new")
    and hasattr(_sm_dag.DAG, "_update_group_components")
)
if _SM_VERSION != SNAKEMAKE_FIXES_FOR:
    _SM_STATE = (
        "applied anyway: check that it is still needed and right for this version "
        "(tests/test_slurm.py, benchmarks/dag_scale.py) and update SNAKEMAKE_FIXES_FOR"
        if _SM_PATCHABLE
        else "NOT applied (GroupJobFactory.new or DAG._update_group_components is gone): "
        "--group-components with a complete checkpoint may submit shards twice"
    )
    _logger.warning(
        f"workflow/rules/snakemake_fixes.smk was written for Snakemake {SNAKEMAKE_FIXES_FOR}, "
        f"this is {_SM_VERSION}; its group-components work-around is {_SM_STATE}."
    )
if _SM_PATCHABLE:
    _sm_jobs.GroupJobFactory.new = _groupjob_new
    _sm_dag.DAG._update_group_components = _update_group_components
