#!/usr/bin/env bash
# slurm-local.sh - start/stop a throw-away single-node SLURM cluster (Debian/Ubuntu)
# for testing e.g. `snakemake --executor slurm` in CI. Tested on Debian 12
# (slurm-wlm 22.05.8, munge 0.5.15, mariadb 10.11) with snakemake 9.27.1 and
# snakemake-executor-plugin-slurm 2.8.0.
#
# matdisco copy (from ../shared/tools/slurm-local.sh): used by tests/test_slurm.py. Changes:
# with accounting, sacct also records the job comment (rule name) and GPU requests.
#
# Usage:
#   slurm-local.sh [DIR]            start (default DIR=/tmp/slurm-local); idempotent
#   slurm-local.sh --stop [DIR]     stop only the daemons this script started (pid files in DIR/run)
#   slurm-local.sh --purge [DIR]    --stop, then delete DIR
#   slurm-local.sh --status [DIR]   show daemons and sinfo
#
# Environment knobs (all optional):
#   SLURM_LOCAL_ACCOUNTING=1|0  1 (default): also run mariadb + slurmdbd so that `sacct`
#                               works (the snakemake slurm plugin's default status command).
#                               0: lighter (~22 MB RSS), but then sacct fails with
#                               "Slurm accounting storage is disabled" and Snakemake must use
#                               `--slurm-status-command squeue` or it waits forever.
#   SLURM_LOCAL_GPUS=N          fake N GPUs (gres/gpu backed by /dev/null-like device nodes)
#                               so rules with resources gpu=N / gres="gpu:N" get scheduled.
#                               Default 0: such jobs are rejected by sbatch
#                               ("Invalid generic resource (gres) specification").
#   SLURM_LOCAL_MEM_MB          node RealMemory (default 85% of what slurmd detects)
#   SLURM_LOCAL_PORT_BASE       slurmctld port (default 6817); slurmd=+1, slurmdbd=+2
#   SLURM_LOCAL_DB_PORT         mariadb TCP port on 127.0.0.1 (default 33061)
#   SLURM_LOCAL_NO_INSTALL=1    never call apt-get (fail if binaries are missing)
#
# Notes:
# * Node 'localhost', partition 'debug' (default), ClusterName=local, SlurmUser=root,
#   no cgroups (proctrack/linuxproc, task/none), select/cons_tres.
# * /etc/slurm/slurm.conf is made a symlink to DIR/etc/slurm.conf: the snakemake
#   slurm-jobstep plugin strips SLURM_CONF (all SLURM_* vars) before calling `srun` inside
#   the job, so the config must be found at the default path.
# * Snakemake (snakemake-executor-plugin-slurm 2.8.0), e.g. profile config.yaml:
#     executor: slurm
#     jobs: 4
#     default-resources: {slurm_partition: debug, mem_mb: 500, runtime: 10, cpus_per_task: 1}
#     slurm-init-seconds-before-status-checks: 2   # default 40s makes tiny workflows slow
#     slurm-status-command: squeue                 # REQUIRED with SLURM_LOCAL_ACCOUNTING=0
#   GPUs: use resources gpu=N (-> sbatch --gpus=N) or gres="gpu:N" (-> --gres=gpu:N);
#   slurm_extra="--gres=..." is rejected by the plugin. Accounts: omit slurm_account
#   (plugin warns and submits without -A) or, with accounting, use slurm_account="ci".
set -euo pipefail

SELF="$(readlink -f "$0" 2>/dev/null || echo "$0")"
die() { echo "slurm-local: ERROR: $*" >&2; exit 1; }
log() { echo "slurm-local: $*" >&2; }

MODE=start
case "${1:-}" in
  --stop) MODE=stop; shift ;;
  --purge) MODE=purge; shift ;;
  --status) MODE=status; shift ;;
  --start) MODE=start; shift ;;
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
  -*) die "unknown option $1" ;;
esac
DIR="${1:-/tmp/slurm-local}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
DIR="${DIR%/}"
[ -n "$DIR" ] && [ "$DIR" != "/" ] || die "refusing to use DIR='$DIR'"

# Needs root (daemons run as root, SlurmUser=root). Re-exec through sudo if possible.
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -n -E bash "$SELF" "--$MODE" "$DIR"
  fi
  die "must run as root (or with passwordless sudo)"
fi
export PATH="$PATH:/usr/sbin:/sbin"

ACCOUNTING="${SLURM_LOCAL_ACCOUNTING:-1}"
NGPUS="${SLURM_LOCAL_GPUS:-0}"
PORT_BASE="${SLURM_LOCAL_PORT_BASE:-6817}"
DB_PORT="${SLURM_LOCAL_DB_PORT:-33061}"
CONF="$DIR/etc/slurm.conf"
ETC_LINK=/etc/slurm/slurm.conf
export SLURM_CONF="$CONF"

# ---------------------------------------------------------------- pid helpers
# pid_alive NAME: true if DIR/run/NAME.pid names a live process whose comm starts with NAME
pid_alive() {
  local f="$DIR/run/$1.pid" pid comm
  [ -s "$f" ] || return 1
  pid="$(tr -dc '0-9' < "$f")"
  [ -n "$pid" ] || return 1
  comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
  case "$comm" in "$1"|"$1-wlm") echo "$pid"; return 0 ;; esac
  return 1
}

stop_one() {
  local name="$1" pid i
  if pid="$(pid_alive "$name")"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 120); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) still alive after 30s, sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$DIR/run/$name.pid"
}

do_stop() {
  [ -d "$DIR" ] || { log "nothing to stop ($DIR does not exist)"; return 0; }
  # cancel jobs still in the cluster, so no slurmstepd/job processes outlive slurmd
  if pid_alive slurmctld >/dev/null && [ -e "$CONF" ]; then
    if [ -n "$(squeue -h -o %i 2>/dev/null | head -n1)" ]; then
      log "cancelling remaining jobs"
      scancel --partition=debug </dev/null >/dev/null 2>&1 || true
      for i in $(seq 1 60); do
        [ -z "$(squeue -h -t R,CG,PD -o %i 2>/dev/null | head -n1)" ] && break
        sleep 0.25
      done
    fi
  fi
  # order matters: compute node, controller, accounting, database, auth
  for d in slurmd slurmctld slurmdbd mariadbd munged; do stop_one "$d"; done
  if [ -L "$ETC_LINK" ] && [ "$(readlink "$ETC_LINK")" = "$CONF" ]; then
    rm -f "$ETC_LINK"
    if [ -e "$DIR/etc/slurm.conf.orig-etc" ]; then
      mv "$DIR/etc/slurm.conf.orig-etc" "$ETC_LINK"
      log "restored original $ETC_LINK"
    fi
  fi
  log "stopped (state and logs kept in $DIR)"
}

do_status() {
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    if pid="$(pid_alive "$d")"; then echo "$d: running (pid $pid)"; else echo "$d: not running"; fi
  done
  sinfo 2>&1 || true
}

case "$MODE" in
  stop) do_stop; exit 0 ;;
  status) do_status; exit 0 ;;
  purge)
    do_stop
    if [ -d "$DIR" ]; then
      [ -e "$DIR/.slurm-local" ] || die "$DIR was not created by slurm-local.sh; not deleting"
      rm -rf "$DIR"; log "deleted $DIR"
    fi
    exit 0 ;;
esac

# ---------------------------------------------------------------- start
T0=$(date +%s)

mkdir -p "$DIR"/{etc,state,spool,log,run,munge}
touch "$DIR/.slurm-local"

# 1. packages
need_bins="slurmctld slurmd sbatch srun sinfo squeue sacct scontrol munged mungekey"
pkgs="slurm-wlm munge"
if [ "$ACCOUNTING" = 1 ]; then
  need_bins="$need_bins slurmdbd sacctmgr mariadbd mariadb mariadb-install-db"
  pkgs="$pkgs slurmdbd mariadb-server mariadb-client"
fi
missing=""
for b in $need_bins; do command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing="$missing $b"; done
if [ -n "$missing" ]; then
  [ "${SLURM_LOCAL_NO_INSTALL:-0}" = 1 ] && die "missing binaries:$missing"
  command -v apt-get >/dev/null 2>&1 || die "missing binaries:$missing and no apt-get"
  log "installing$( [ -n "$pkgs" ] && echo " $pkgs") (missing:$missing)"
  # keep postinst scripts from starting system services with default configs
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt_ok=0
  # try without update first (fast when lists are fresh), then with update
  if apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $pkgs </dev/null >"$DIR/log/apt.log" 2>&1; then
    apt_ok=1
  else
    apt-get -o DPkg::Lock::Timeout=300 update -q </dev/null >>"$DIR/log/apt.log" 2>&1 || true
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $pkgs </dev/null >>"$DIR/log/apt.log" 2>&1 && apt_ok=1
  fi
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$apt_ok" = 1 ] || { tail -20 "$DIR/log/apt.log" >&2; die "apt-get install failed (log: $DIR/log/apt.log)"; }
  log "packages installed in $(( $(date +%s) - T0 ))s"
fi

# 2. directories + config
chmod 755 "$DIR" "$DIR/run" "$DIR/etc"   # munged requires an all-executable socket dir
chmod 700 "$DIR/munge"

# node geometry from slurmd -C (first line: NodeName=... CPUs=... ... RealMemory=...)
hw="$(slurmd -C 2>/dev/null | head -n1 || true)"
geo="$(echo "$hw" | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ' || true)"
hwmem="$(echo "$hw" | tr ' ' '\n' | sed -n 's/^RealMemory=//p')"
[ -n "$geo" ] || geo="CPUs=$(nproc)"
[ -n "$hwmem" ] || hwmem=$(( $(awk '/MemTotal/{print $2}' /proc/meminfo) / 1024 ))
MEM="${SLURM_LOCAL_MEM_MB:-$(( hwmem * 85 / 100 ))}"

gres_node="" gres_types=""
if [ "$NGPUS" -gt 0 ] 2>/dev/null; then
  mkdir -p "$DIR/fakegpu"
  for i in $(seq 0 $((NGPUS - 1))); do
    f="$DIR/fakegpu/nvidia$i"
    if [ ! -e "$f" ]; then
      # char device 1:3 == /dev/null; a plain file also works (slurmd logs an error but counts it)
      mknod "$f" c 1 3 2>/dev/null || touch "$f"
    fi
  done
  gres_node=" Gres=gpu:$NGPUS"
  gres_types="GresTypes=gpu"
  echo "NodeName=localhost Name=gpu File=$DIR/fakegpu/nvidia[0-$((NGPUS - 1))]" > "$DIR/etc/gres.conf.new"
else
  : > "$DIR/etc/gres.conf.new"
fi

if [ "$ACCOUNTING" = 1 ]; then
  # job_comment: sacct shows the comment (the snakemake slurm plugin writes rule_<name> there);
  # gres/gpu: sacct's ReqTRES/AllocTRES show GPU requests (not tracked by default)
  acct="AccountingStoreFlags=job_comment
AccountingStorageTRES=$( [ "$NGPUS" -gt 0 ] 2>/dev/null && echo gres/gpu || echo cpu,mem,node )
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT_BASE + 2))
# with a private munge socket slurmctld->slurmdbd needs it here too (AuthInfo is not used)
AccountingStoragePass=$DIR/run/munge.socket.2"
else
  acct="AccountingStorageType=accounting_storage/none"
fi

cat > "$CONF.new" <<EOF
# generated by slurm-local.sh - single node test cluster
ClusterName=local
$gres_types
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/run/munge.socket.2
SlurmctldPort=$PORT_BASE
SlurmdPort=$((PORT_BASE + 1))
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# jobs without --mem would otherwise get the whole node's memory and serialize
DefMemPerCPU=1000
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
$acct
ReturnToService=2
# keep finished jobs visible to squeue for 10 min (plugin needs >= 3 x status interval)
MinJobAge=600
InactiveLimit=0
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 ${geo}RealMemory=$MEM$gres_node State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

running_any=0
for d in munged slurmctld slurmd slurmdbd mariadbd; do pid_alive "$d" >/dev/null && running_any=1; done
for f in "$CONF" "$DIR/etc/gres.conf"; do
  if [ -e "$f" ] && cmp -s "$f" "$f.new"; then rm -f "$f.new"; continue; fi
  if [ -e "$f" ] && [ "$running_any" = 1 ]; then
    log "WARNING: $f changed while daemons run; run '$SELF --stop $DIR' and start again to apply"
  fi
  mv -f "$f.new" "$f"
done

if [ "$ACCOUNTING" = 1 ]; then
  cat > "$DIR/etc/slurmdbd.conf.new" <<EOF
AuthType=auth/munge
AuthInfo=socket=$DIR/run/munge.socket.2
DbdHost=localhost
DbdPort=$((PORT_BASE + 2))
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  if cmp -s "$DIR/etc/slurmdbd.conf.new" "$DIR/etc/slurmdbd.conf" 2>/dev/null; then
    rm -f "$DIR/etc/slurmdbd.conf.new"
  else
    mv -f "$DIR/etc/slurmdbd.conf.new" "$DIR/etc/slurmdbd.conf"
  fi
  chmod 600 "$DIR/etc/slurmdbd.conf"   # slurmdbd refuses a world-readable config
fi

# /etc/slurm/slurm.conf -> our config (see header)
mkdir -p /etc/slurm
if [ -L "$ETC_LINK" ] || [ ! -e "$ETC_LINK" ]; then
  ln -sfn "$CONF" "$ETC_LINK"
elif ! cmp -s "$ETC_LINK" "$CONF"; then
  log "moving existing $ETC_LINK to $DIR/etc/slurm.conf.orig-etc (restored by --stop)"
  mv "$ETC_LINK" "$DIR/etc/slurm.conf.orig-etc"
  ln -sfn "$CONF" "$ETC_LINK"
fi

wait_for() {  # wait_for SECONDS DESCRIPTION LOGFILE CMD...
  local secs="$1" what="$2" lf="$3" i; shift 3
  for i in $(seq 1 $((secs * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  log "timeout waiting for $what"; [ -f "$lf" ] && tail -n 25 "$lf" >&2
  die "$what did not come up (see $lf)"
}

# 3. munge (private key + private socket; does not touch a system munged)
if [ ! -s "$DIR/munge/munge.key" ]; then
  mungekey -c -b 1024 -k "$DIR/munge/munge.key" 2>/dev/null \
    || dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
fi
chown root:root "$DIR/munge/munge.key"; chmod 400 "$DIR/munge/munge.key"
if ! pid_alive munged >/dev/null; then
  rm -f "$DIR/run/munge.socket.2" "$DIR/run/munge.socket.2.lock"
  munged --socket="$DIR/run/munge.socket.2" --key-file="$DIR/munge/munge.key" \
    --log-file="$DIR/log/munged.log" --pid-file="$DIR/run/munged.pid" \
    --seed-file="$DIR/munge/munged.seed" </dev/null >/dev/null 2>&1 \
    || { tail -n 5 "$DIR/log/munged.log" >&2; die "munged failed to start"; }
fi
wait_for 30 munged "$DIR/log/munged.log" bash -c "munge -S '$DIR/run/munge.socket.2' -n </dev/null | unmunge -S '$DIR/run/munge.socket.2'"

# 4. optional accounting: mariadb + slurmdbd
if [ "$ACCOUNTING" = 1 ]; then
  mkdir -p "$DIR/mysql"
  if [ ! -d "$DIR/mysql/data/mysql" ]; then
    mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root \
      --auth-root-authentication-method=socket --skip-test-db </dev/null >"$DIR/log/mariadb-install.log" 2>&1 \
      || { tail -n 20 "$DIR/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
  fi
  if ! pid_alive mariadbd >/dev/null; then
    setsid nohup mariadbd --no-defaults --datadir="$DIR/mysql/data" --socket="$DIR/run/mysqld.sock" \
      --port="$DB_PORT" --bind-address=127.0.0.1 --user=root --pid-file="$DIR/run/mariadbd.pid" \
      --log-error="$DIR/log/mariadbd.log" --skip-log-bin --performance-schema=OFF \
      --innodb-buffer-pool-size=64M --innodb-lock-wait-timeout=900 \
      </dev/null >/dev/null 2>&1 &
  fi
  wait_for 60 mariadbd "$DIR/log/mariadbd.log" mariadb-admin --no-defaults --socket="$DIR/run/mysqld.sock" ping
  mariadb --no-defaults --socket="$DIR/run/mysqld.sock" </dev/null -e "
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    FLUSH PRIVILEGES;" || die "could not create the slurm database user"
  if ! pid_alive slurmdbd >/dev/null; then
    slurmdbd </dev/null >/dev/null 2>&1 || { tail -n 20 "$DIR/log/slurmdbd.log" >&2; die "slurmdbd failed"; }
  fi
  wait_for 60 slurmdbd "$DIR/log/slurmdbd.log" sacctmgr -n -P list cluster
fi

# 5. slurmctld (-c: start from a clean job/node state) and slurmd
if ! pid_alive slurmctld >/dev/null; then
  slurmctld -c -f "$CONF" </dev/null >/dev/null 2>&1 || { tail -n 20 "$DIR/log/slurmctld.log" >&2; die "slurmctld failed"; }
fi
wait_for 60 slurmctld "$DIR/log/slurmctld.log" scontrol ping
if ! pid_alive slurmd >/dev/null; then
  slurmd -f "$CONF" -N localhost </dev/null >/dev/null 2>&1 || { tail -n 20 "$DIR/log/slurmd.log" >&2; die "slurmd failed"; }
fi

node_idle() {
  local st
  st="$(sinfo -h -N -n localhost -o %T 2>/dev/null | head -n1)"
  case "$st" in
    idle|mixed|allocated) return 0 ;;
    drain*|down*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
  esac
  return 1
}
wait_for 90 "node localhost idle" "$DIR/log/slurmd.log" node_idle

if [ "$ACCOUNTING" = 1 ]; then
  # an account that CI jobs can name with resources slurm_account="ci"
  sacctmgr -i -Q add account ci Cluster=local Description=ci Organization=ci </dev/null >/dev/null 2>&1 || true
  for u in root ${SUDO_USER:-}; do
    sacctmgr -i -Q add user "$u" Account=ci </dev/null >/dev/null 2>&1 || true
  done
fi

sinfo
log "cluster up in $(( $(date +%s) - T0 ))s (accounting=$ACCOUNTING, fake GPUs=$NGPUS)"
cat <<EOF
SLURM test cluster is running.
  config : $CONF   (also linked at $ETC_LINK)
  logs   : $DIR/log/
  use    : export SLURM_CONF=$CONF   # optional, $ETC_LINK already points there
  stop   : $SELF --stop $DIR    (or --purge to also delete $DIR)
EOF
