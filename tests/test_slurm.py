"""The SLURM profile (profiles/slurm) against a real single-node SLURM, plus fast profile checks.

The slow tests start a throw-away cluster with scripts/slurm-local.sh (root only: it installs
slurm-wlm, munge, mariadb + slurmdbd with apt on first use and runs the daemons, with
accounting and one fake GPU), run the tiny configuration (config/test.yaml, one candidate per
relax shard) through `snakemake --profile profiles/slurm` in a private copy of the tree, and
check:
* in the SLURM accounting (sacct) that every rule job went through sbatch and COMPLETED, in
  the given account and partition, and that train_gan asked for a GPU;
* that the relax shards were bundled into group jobs of the requested size, also when they
  rerun with the split_pool checkpoint already complete (no shard submitted twice);
then stop the cluster.

* not root -> skipped, with the reason; MATDISCO_SKIP_SLURM=1 -> skipped explicitly.
* apt or a daemon fails -> the tests FAIL with the log tails (they do not skip).

Only CI-specific settings are given on the command line: the partition/account of the test
cluster (the documented --default-resources route), this node's size as the per-submission
cap (--cores, --resources mem_mb), group-components relax=2 and a short first status check.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm-local.sh"
PROFILE = ROOT / "profiles" / "slurm"
LOCK = Path("/tmp/matdisco-slurm-test.lock")
#: the test cluster's partition and the account slurm-local.sh creates with accounting on
PARTITION, ACCOUNT = "debug", "ci"


def _tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def _log_tails(cluster_dir: Path, n: int = 25, names: tuple[str, ...] = ()) -> str:
    """Tails of the cluster's daemon logs (all, or those named)."""
    parts = []
    for f in sorted((cluster_dir / "log").glob("*.log")):
        if names and f.stem not in names:
            continue
        parts.append(f"--- {f.name} ---\n{_tail(f.read_text(errors='replace'), n)}")
    return "\n".join(parts)


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _kv(mapping: dict) -> list[str]:
    return [f"{k}={v}" for k, v in mapping.items()]


# --------------------------------------------------------------------- fast profile checks


def test_profile_is_valid_for_the_plugin():
    """Keys the brief and docs/cluster.md rely on; no account or partition hard-coded."""
    prof = _profile()
    assert prof["executor"] == "slurm"
    assert prof["jobs"] >= 1
    assert prof["latency-wait"] >= 30
    dr = prof["default-resources"]
    assert {"runtime", "mem_mb", "cpus_per_task"} <= set(dr)
    assert "slurm_account" not in dr and "slurm_partition" not in dr
    assert prof["set-resources"]["train_gan"]["gpu"] == 1
    for res in prof["set-resources"].values():
        assert "--gres" not in str(res.get("slurm_extra", "")), (
            "the plugin rejects --gres in slurm_extra"
        )
    assert prof["group-components"]["relax"] > 1
    text = (PROFILE / "config.yaml").read_text()
    # every entry explains itself: a comment right above each top-level key
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z-]+:", line):
            assert i > 0 and lines[i - 1].startswith("#"), f"no comment above '{line}'"


def test_installed_profile_reaches_the_jobs(tmp_path, snakemake_bin):
    """install_profile.sh + `snakemake --profile slurm`: the account/partition of the installed copy
    (and the profile's defaults) end up in the jobs' resources.

    Fails while profiles/default (the workflow profile, which wins over a user profile) sets
    default-resources of its own: those silently replace the whole default-resources block of
    the SLURM profile, account and partition included.
    """
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    inst = subprocess.run(
        [
            "bash",
            str(ROOT / "scripts/install_profile.sh"),
            "--account",
            "acct1",
            "--partition",
            "part1",
        ],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert inst.returncode == 0, inst.stderr
    installed = home / ".config/snakemake/slurm/config.yaml"
    assert yaml.safe_load(installed.read_text())["default-resources"]["slurm_account"] == "acct1"
    # no overwrite without an answer / with "n"; overwrite with --force
    again = subprocess.run(
        ["bash", str(ROOT / "scripts/install_profile.sh")],
        env=env,
        input="n\n",
        capture_output=True,
        text=True,
    )
    assert again.returncode != 0 and "slurm_account" in installed.read_text()
    forced = subprocess.run(
        ["bash", str(ROOT / "scripts/install_profile.sh"), "--force", "--account", "acct2"],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert forced.returncode == 0 and (installed.parent / "config.yaml.bak").exists()
    assert yaml.safe_load(installed.read_text())["default-resources"]["slurm_account"] == "acct2"

    dry = subprocess.run(
        [
            snakemake_bin,
            "-n",
            "--profile",
            "slurm",
            "--configfile",
            "config/test.yaml",
            "--config",
            f"run_name=slurmprofile-{os.getpid()}",
            "--nolock",
            "build_store",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    out = dry.stdout + dry.stderr
    assert dry.returncode == 0, _tail(out)
    assert "Using profile slurm" in out or "Using profiles slurm" in out, _tail(out)
    res = next((ln for ln in out.splitlines() if ln.strip().startswith("resources:")), "")
    default_res = yaml.safe_load((ROOT / "profiles/default/config.yaml").read_text()) or {}
    hint = (
        "profiles/default/config.yaml sets `default-resources`; the workflow profile overrides the "
        "user's SLURM profile key by key, so its default-resources replace the SLURM profile's "
        "(account/partition included). Remove default-resources from profiles/default."
        if "default-resources" in default_res
        else ""
    )
    assert "slurm_account=acct2" in res, f"{hint}\n{res}"
    assert "cpus_per_task=" in res, f"{hint}\n{res}"


# ------------------------------------------------------------------- the real SLURM run


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running single-node SLURM with accounting and one fake GPU; stopped afterwards."""
    if os.environ.get("MATDISCO_SKIP_SLURM") == "1":
        pytest.skip("MATDISCO_SKIP_SLURM=1: real-SLURM test switched off explicitly")
    if os.geteuid() != 0:
        pytest.skip(
            "the real-SLURM test needs root (it installs slurm-wlm/munge/mariadb with apt and runs "
            "the daemons); CI runs it as root. Run `sudo make test` or set MATDISCO_SKIP_SLURM=1."
        )
    # one test cluster per machine at a time (/etc/slurm/slurm.conf and the ports are global)
    LOCK.touch(exist_ok=True)
    lock = open(LOCK, "w")
    deadline = time.monotonic() + 1800
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"another SLURM test held {LOCK} for 30 min")
            time.sleep(5)
    # not under pytest's tmp dir: munged wants every folder above its socket world-executable
    cluster = Path(tempfile.mkdtemp(prefix="matdisco-slurm-", dir="/tmp"))
    try:
        if _port_in_use(6817):
            left = " ".join(str(p) for p in Path("/tmp").glob("matdisco-slurm-*") if p != cluster)
            pytest.fail(
                "port 6817 (slurmctld) is already in use: another SLURM controller runs on this "
                "machine; stop it first with scripts/slurm-local.sh --stop DIR"
                + (f" (left over from an interrupted test run: {left})" if left else "")
            )
        env = {**os.environ, "SLURM_LOCAL_ACCOUNTING": "1", "SLURM_LOCAL_GPUS": "1"}
        t0 = time.monotonic()
        proc = subprocess.run(
            ["bash", str(SCRIPT), str(cluster)],
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=1200,
        )
        started_s = time.monotonic() - t0
        if proc.returncode != 0:
            pytest.fail(
                f"scripts/slurm-local.sh failed (exit {proc.returncode}):\n"
                f"{_tail(proc.stdout + proc.stderr)}"
                f"\n{_log_tails(cluster)}\napt log tail:\n"
                + _tail(
                    (cluster / "log/apt.log").read_text(errors="replace")
                    if (cluster / "log/apt.log").exists()
                    else "",
                    20,
                )
            )
        print(f"SLURM test cluster up in {started_s:.0f} s:\n{proc.stderr[-2000:]}")
        node = subprocess.run(
            ["scontrol", "show", "node", "localhost"], capture_output=True, text=True
        ).stdout
        mem = int(re.search(r"RealMemory=(\d+)", node).group(1))
        cpus = int(re.search(r"CPUTot=(\d+)", node).group(1))
        yield {
            "dir": cluster,
            "conf": cluster / "etc/slurm.conf",
            "mem_mb": mem,
            "cpus": cpus,
            "start_s": started_s,
        }
    finally:
        # stop the daemons and delete the cluster folder (failures above carry the log tails)
        stop = subprocess.run(
            ["bash", str(SCRIPT), "--purge", str(cluster)], capture_output=True, text=True
        )
        if stop.returncode != 0:
            print(f"slurm-local.sh --purge failed:\n{stop.stdout}{stop.stderr}")
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def _submissions(log: str) -> list[tuple[str, str, str]]:
    """(snakemake job id or group uuid, SLURM job id, rule or group_<name>) per sbatch call."""
    subs = []
    pat = r"Job (\S+) has been submitted with SLURM jobid (\d+) \(log: \S*/(rule|group)_([^/]+)/"
    for m in re.finditer(pat, log):
        key = m.group(4) if m.group(3) == "rule" else f"group_{m.group(4)}"
        subs.append((m.group(1), m.group(2), key))
    return subs


def _by_rule(subs: list[tuple[str, str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, slurm_id, key in subs:
        out.setdefault(key, []).append(slurm_id)
    return out


def _group_blocks(log: str, rule: str = "relax_shard") -> list[list[str]]:
    """Shard wildcards of each 'Group job relax' block Snakemake printed when submitting."""
    blocks = []
    for part in log.split("Group job relax")[1:]:
        body = re.split(r"\n\[[^\]]+\]\n(?:rule|localrule|checkpoint) ", part)[0]
        blocks.append(
            re.findall(rf"^\s+rule {rule}:(?:.|\n)*?wildcards: shard=(\S+)", body, flags=re.M)
        )
    return blocks


def _job_stats(log: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    lines = log.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3 :]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


#: CI variant on top of config/test.yaml: one candidate per shard, so the 3 shards of the tiny
#: run make 2 group jobs with group-components relax=2 (the real grouping code path)
CI_OVERLAY = {"relax": {"shard_size": 1}}
CI_GROUP = 2


def _snakemake_cmd(
    snakemake_bin: str, cluster: dict, run_name: str, overlay: Path, logdir: Path
) -> list[str]:
    prof = _profile()
    return [
        snakemake_bin,
        "--profile",
        "profiles/slurm",
        "--configfile",
        "config/test.yaml",
        str(overlay),
        "--config",
        f"run_name={run_name}",
        "--nolock",
        # the documented way to give account + partition on the command line (it replaces the
        # profile's default-resources, so those are repeated)
        "--default-resources",
        *_kv(prof["default-resources"]),
        f"slurm_partition={PARTITION}",
        f"slurm_account={ACCOUNT}",
        # this node's size is the per-submission cap (the profile's cores: 32 and the rules'
        # memory would not fit on a CI machine)
        "--cores",
        str(cluster["cpus"]),
        "--resources",
        f"mem_mb={cluster['mem_mb']}",
        "--group-components",
        f"relax={CI_GROUP}",
        # seconds-long jobs: first status check after 2 s instead of 40 s
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-logdir",
        str(logdir),
        "--slurm-keep-successful-logs",
    ]


def _run_on_slurm(
    cmd: list[str], env: dict, cluster: dict, logdir: Path, cwd: Path
) -> tuple[str, float]:
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"snakemake on SLURM did not finish in 25 min:\n{_tail(str(err.stderr or ''))}")
    wall = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        job_logs = "\n".join(
            f"--- {p.relative_to(logdir)} ---\n{_tail(p.read_text(errors='replace'), 30)}"
            for p in sorted(logdir.rglob("*.log"))
        )
        pytest.fail(
            f"snakemake --profile profiles/slurm failed:\n{_tail(log, 80)}\n{job_logs}\n"
            f"{_log_tails(cluster['dir'], names=('slurmctld', 'slurmd', 'slurmdbd'))}"
        )
    return log, wall


def _copy_tree(dst: Path) -> Path:
    """A private copy of the workflow (code, config, profiles; resources/ symlinked), so that
    edits in the checkout during the run (other people's work) cannot break the jobs."""
    dst.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copy2(ROOT / "Snakefile", dst / "Snakefile")
    for d in ("workflow", "config", "profiles", "envs", "src"):
        if (ROOT / d).exists():
            shutil.copytree(ROOT / d, dst / d, ignore=ignore, symlinks=True)
    (dst / "resources").symlink_to(ROOT / "resources", target_is_directory=True)
    return dst


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, snakemake_bin, tmp_path_factory):
    """The tiny configuration through profiles/slurm on the test cluster (in a private copy)."""
    tmp = tmp_path_factory.mktemp("slurm_run")
    wf = _copy_tree(tmp / "wf")
    run_name = "slurmci"
    overlay = tmp / "ci.yaml"
    overlay.write_text(yaml.safe_dump(CI_OVERLAY))
    env = {
        **os.environ,
        "SLURM_CONF": str(slurm_cluster["conf"]),
        # the copy's matdisco (sbatch --export=ALL hands this on to the jobs)
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(wf / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    cmd = _snakemake_cmd(snakemake_bin, slurm_cluster, run_name, overlay, tmp / "slurm_logs")
    log, wall = _run_on_slurm(cmd, env, slurm_cluster, tmp / "slurm_logs", wf)
    print(f"tiny workflow through SLURM in {wall:.0f} s")
    return {
        "log": log,
        "run_dir": wf / "results" / run_name,
        "wall_s": wall,
        "env": env,
        "cmd": cmd,
        "cluster": slurm_cluster,
        "wf": wf,
        "logdir": tmp / "slurm_logs",
    }


def _sacct(env: dict, job_ids: list[str]) -> list[dict[str, str]]:
    fields = ["JobID", "JobName", "State", "Account", "Partition", "Comment", "ReqTRES", "ExitCode"]
    rows: list[dict[str, str]] = []
    for _ in range(20):  # slurmdbd receives job records asynchronously
        out = subprocess.run(
            ["sacct", "-n", "-X", "-P", f"--format={','.join(fields)}", "-j", ",".join(job_ids)],
            env=env,
            capture_output=True,
            text=True,
        )
        rows = [
            dict(zip(fields, ln.split("|"), strict=False))
            for ln in out.stdout.splitlines()
            if ln.strip()
        ]
        if len(rows) >= len(job_ids) and all(r["State"] == "COMPLETED" for r in rows):
            break
        time.sleep(1)
    return rows


@pytest.mark.slow
def test_tiny_workflow_runs_through_sbatch(slurm_run):
    log = slurm_run["log"]
    stats = _job_stats(log)
    assert stats, f"no job stats in the snakemake output:\n{_tail(log)}"
    subs = _submissions(log)
    assert subs, f"no job went through sbatch:\n{_tail(log)}"
    by_rule = _by_rule(subs)
    # every rule except the local target `all` was submitted (group jobs count for their rules)
    submitted = {k for k in by_rule if not k.startswith("group_")}
    grouped = {k for k in by_rule if k.startswith("group_")}
    expected = {r for r in stats if r not in ("all", "total")}
    missing = {r for r in expected - submitted if not any(g.endswith(r) for g in grouped)}
    assert not missing, f"rules not submitted to SLURM: {sorted(missing)}\n{by_rule}"
    # no Snakemake job or group job went to SLURM twice
    keys = [k for k, _, _ in subs]
    assert len(keys) == len(set(keys)), (
        f"submitted twice: {sorted(k for k in keys if keys.count(k) > 1)}"
    )
    ids = [i for _, i, _ in subs]
    rows = _sacct(slurm_run["env"], ids)
    assert len(rows) == len(ids), f"sacct knows {len(rows)} of {len(ids)} jobs: {rows}"
    bad = [r for r in rows if r["State"] != "COMPLETED"]
    assert not bad, f"jobs not COMPLETED in sacct: {bad}"
    assert {r["Account"] for r in rows} == {ACCOUNT}
    assert {r["Partition"] for r in rows} == {PARTITION}
    comments = {r["Comment"] for r in rows}
    assert {f"rule_{r}" for r in submitted} <= comments, comments


@pytest.mark.slow
def test_gpu_rule_got_a_gpu(slurm_run):
    by_rule = _by_rule(_submissions(slurm_run["log"]))
    if "train_gan" not in by_rule:
        pytest.skip(
            "rule train_gan is not part of the workflow yet (workflow/rules/gan.smk not included)"
        )
    rows = _sacct(slurm_run["env"], by_rule["train_gan"])
    assert rows and all("gres/gpu=1" in r["ReqTRES"] for r in rows), rows
    others = [i for r, v in by_rule.items() if r != "train_gan" for i in v]
    assert all("gres/gpu" not in r["ReqTRES"] for r in _sacct(slurm_run["env"], others))


@pytest.mark.slow
def test_relax_shards_are_bundled(slurm_run):
    run_dir = slurm_run["run_dir"]
    if not (run_dir / "relax" / "shards").is_dir():
        pytest.skip("the relax stage (workflow/rules/relax.smk) is not part of the workflow yet")
    shards = sorted(p.stem for p in (run_dir / "relax" / "shards").glob("shard_*.h5"))
    if len(shards) <= CI_GROUP:
        pytest.skip(f"only {len(shards)} relax shard(s) in the tiny run: nothing to bundle")
    blocks = _group_blocks(slurm_run["log"])
    assert sorted(s for b in blocks for s in b) == shards, blocks
    assert all(len(b) <= CI_GROUP for b in blocks), blocks
    assert len(blocks) == -(-len(shards) // CI_GROUP), blocks


@pytest.mark.slow
def test_rerun_of_relax_stage_submits_each_shard_once(slurm_run):
    """Shards rerun while the checkpoint split_pool is already complete (a resumed run, a rerun
    after failed shards): the groups keep their size and no shard is submitted twice. Snakemake
    9.27 gets this wrong without the work-around (issues #1217/#1628)."""
    shard_dir = slurm_run["run_dir"] / "relax" / "shards"
    if not shard_dir.is_dir():
        pytest.skip("the relax stage (workflow/rules/relax.smk) is not part of the workflow yet")
    shards = sorted(p.stem for p in shard_dir.glob("shard_*.h5"))
    if len(shards) <= CI_GROUP:
        pytest.skip(f"only {len(shards)} relax shard(s) in the tiny run: nothing to bundle")
    # the shards rerun quickly: their progress files are kept
    cmd = [*slurm_run["cmd"], "--forcerun", "relax_shard", "--until", "gather_relax"]
    log, _ = _run_on_slurm(
        cmd, slurm_run["env"], slurm_run["cluster"], slurm_run["logdir"], slurm_run["wf"]
    )
    blocks = _group_blocks(log)
    submitted = sorted(s for b in blocks for s in b)
    assert submitted == shards, (
        f"shards submitted {submitted} for {shards} (a shard twice: Snakemake's "
        f"group-components/checkpoint bug is not worked around); groups: {blocks}"
    )
    assert all(len(b) <= CI_GROUP for b in blocks), blocks
    keys = [k for k, _, _ in _submissions(log)]
    assert len(keys) == len(set(keys)), f"a job was submitted twice: {keys}"


@pytest.mark.slow
def test_outputs_of_the_run_exist(slurm_run):
    run_dir = slurm_run["run_dir"]
    assert (run_dir / "data" / "entries.h5").exists()
    assert list((run_dir / "logs").glob("*.log")), "no rule logs written"
