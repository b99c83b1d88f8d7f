#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, for tests/slurm and for trying
# harmcore/conf/hydra/launcher/local_slurm.yaml:
#
#   munged -> mariadbd (private, 127.0.0.1) -> slurmdbd -> slurmctld -> slurmd
#
# Debian 12, run as root, no systemd needed: the daemons are started here, not by apt.
# Missing packages are installed with apt-get. Idempotent: with everything already up
# it only checks that the controller answers and the node is usable, and exits 0.
# On failure it prints the daemons' logs and exits 1. Stop with scripts/slurm/stop.sh.
#
# Environment (defaults in scripts/slurm/common.sh):
#   HARMCORE_SLURM_DIR       state: PID files, logs, spool, accounting DB (/var/lib/harmcore-slurm)
#   HARMCORE_SLURM_CONF_DIR  where slurm.conf goes (/etc/slurm; elsewhere, clients need SLURM_CONF)
#   HARMCORE_SLURM_DB_PORT   port of the private MariaDB on 127.0.0.1 (16830)
#   HARMCORE_SLURM_INSTALL   0: never run apt-get, fail if a package is missing (1)
#   HARMCORE_SLURM_WAIT_S    seconds to wait for each daemon and for the node (90)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

diagnostics() {
  echo "----- harmcore-slurm diagnostics ($HARMCORE_SLURM_DIR) -----" >&2
  for f in "$LOG_DIR"/*.log /var/log/munge/munged.log; do
    [ -s "$f" ] && { echo "--- last lines of $f" >&2; tail -n 20 "$f" >&2; }
  done
  echo "--- PID files" >&2
  for d in "${DAEMONS[@]}"; do
    printf '%-10s %s\n' "$d" "$(cat "$(pid_file "$d")" 2>/dev/null || echo '-') $(running "$d" && echo alive || echo 'not running')" >&2
  done
  echo "--- daemon processes" >&2
  leftover_daemons >&2
  echo "--- munge round trip" >&2
  munge -n 2>&1 </dev/null | unmunge 2>&1 | head -n 2 >&2
  echo "--- scontrol ping / sinfo / node" >&2
  timeout 10 scontrol ping >&2 2>&1
  timeout 10 sinfo -N -l >&2 2>&1
  timeout 10 scontrol show node >&2 2>&1
  echo "--- $SLURM_CONF" >&2
  cat "$SLURM_CONF" >&2 2>/dev/null
}
fail() {
  log "FAILED: $*"
  diagnostics
  exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root: the daemons run as root (SlurmUser=root) and apt-get may be needed"
mkdir -p "$PID_DIR" "$LOG_DIR" "$DB_DIR" "$HARMCORE_SLURM_DIR/spool/slurmctld" \
  "$HARMCORE_SLURM_DIR/spool/slurmd" "$HARMCORE_SLURM_CONF_DIR" || fail "cannot create $HARMCORE_SLURM_DIR"

# ------------------------------------------------------------------ packages
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "${HARMCORE_SLURM_INSTALL:-1}" = 1 ] || fail "missing packages: ${missing[*]} (HARMCORE_SLURM_INSTALL=0)"
  log "installing ${missing[*]} (log: $LOG_DIR/apt.log)"
  # Package scripts must not start the daemons (there is no systemd; we start them below).
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  installed=0
  for attempt in 1 2 3; do # the apt lock may be held for a moment by someone else
    apt-get update >"$LOG_DIR/apt.log" 2>&1
    if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
      >>"$LOG_DIR/apt.log" 2>&1; then
      installed=1
      break
    fi
    log "apt-get install failed (attempt $attempt of 3)"
    sleep 5
  done
  [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$installed" = 1 ] || { tail -n 20 "$LOG_DIR/apt.log" >&2; fail "could not install ${missing[*]}"; }
fi

# ------------------------------------------------------------------ node and configuration
NODE=$(hostname -s)
[ -n "$NODE" ] || fail "this machine has no host name"
getent hosts "$NODE" >/dev/null || fail "host name $NODE does not resolve: add '127.0.0.1 $NODE' to /etc/hosts"
hardware=$(slurmd -C 2>/dev/null | head -n 1)
[[ $hardware == NodeName=* ]] || fail "'slurmd -C' did not describe this machine: $hardware"
# CPUs, Boards, Sockets, Cores, Threads as slurmd sees them; 90 % of the memory for jobs.
shape=$(sed -E 's/^NodeName=[^ ]+ //; s/ ?RealMemory=[0-9]+//; s/ ?UpTime=.*//' <<<"$hardware")
memory_mb=$(($(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hardware") * 9 / 10))

slurm_conf="$MARKER
ClusterName=$HARMCORE_SLURM_CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again after cred_expire seconds (default 120 s).
AuthInfo=cred_expire=10
MpiDefault=none
# No cgroups in containers: track job processes through /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# Cores and memory are the consumable resources; without DefMemPerCPU one job would
# be given the whole node's memory and the jobs of an array would run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
KillWait=5
ReturnToService=2
MailProg=/bin/true
# Accounting through slurmdbd, so that sacct (which submitit polls) knows every job.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
StateSaveLocation=$HARMCORE_SLURM_DIR/spool/slurmctld
SlurmdSpoolDir=$HARMCORE_SLURM_DIR/spool/slurmd
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
NodeName=$NODE NodeAddr=127.0.0.1 $shape RealMemory=$memory_mb State=UNKNOWN
PartitionName=$HARMCORE_SLURM_PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

slurmdbd_conf="$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$(pid_file slurmdbd)
LogFile=$LOG_DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$HARMCORE_SLURM_DB_PORT
StorageUser=slurm
StoragePass=harmcore-local
StorageLoc=slurm_acct_db"

# write_conf FILE CONTENT: 0 when FILE changed. A file we did not write is never replaced.
write_conf() {
  if [ -f "$1" ] && ! grep -qxF "$MARKER" "$1"; then
    fail "$1 exists and was not written by this script: move it away, or set HARMCORE_SLURM_CONF_DIR to another folder (clients then need SLURM_CONF)"
  fi
  [ "$(cat "$1" 2>/dev/null)" = "$2" ] && return 1
  printf '%s\n' "$2" >"$1"
  log "wrote $1"
}
slurm_conf_changed=0
dbd_conf_changed=0
write_conf "$SLURM_CONF" "$slurm_conf" && slurm_conf_changed=1
write_conf "$HARMCORE_SLURM_CONF_DIR/slurmdbd.conf" "$slurmdbd_conf" && dbd_conf_changed=1
chmod 600 "$HARMCORE_SLURM_CONF_DIR/slurmdbd.conf" # slurmdbd refuses a file others can read
started=0

# ------------------------------------------------------------------ munge
munge_ok() { munge -n </dev/null | unmunge >/dev/null; }
if munge_ok 2>/dev/null; then
  running munged || log "munged is running but was not started here: using it, and stop.sh will leave it"
else
  install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --force </dev/null >>"$LOG_DIR/munged.out" 2>&1 || fail "munged did not start"
  retry "munged" munge_ok || fail "munged does not answer"
  cp /run/munge/munged.pid "$(pid_file munged)" # so that stop.sh stops only this one
  started=1
  log "munged up"
fi

# ------------------------------------------------------------------ MariaDB for slurmdbd
cat >"$DB_DIR/my.cnf" <<EOF
[mysqld]
user=root
datadir=$DB_DIR/data
socket=$DB_SOCKET
pid-file=$(pid_file mariadbd)
log-error=$LOG_DIR/mariadbd.log
bind-address=127.0.0.1
port=$HARMCORE_SLURM_DB_PORT
skip-name-resolve
innodb_buffer_pool_size=128M
innodb_lock_wait_timeout=900
EOF
db_ok() { mariadb-admin --socket="$DB_SOCKET" ping; }
if ! running mariadbd || ! db_ok >/dev/null 2>&1; then
  if [ ! -d "$DB_DIR/data/mysql" ]; then
    mariadb-install-db --defaults-file="$DB_DIR/my.cnf" --auth-root-authentication-method=socket \
      --skip-test-db >"$LOG_DIR/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed: $LOG_DIR/mariadb-install.log"
  fi
  stop_daemon mariadbd
  setsid /usr/sbin/mariadbd --defaults-file="$DB_DIR/my.cnf" </dev/null >>"$LOG_DIR/mariadbd.out" 2>&1 &
  retry "mariadbd" db_ok || fail "mariadbd does not answer on $DB_SOCKET"
  retry "mariadbd PID file" running mariadbd || fail "mariadbd wrote no PID file"
  started=1
  log "mariadbd up (127.0.0.1:$HARMCORE_SLURM_DB_PORT)"
fi
mariadb --socket="$DB_SOCKET" -u root <<'EOF' || fail "could not create the slurm database user"
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'harmcore-local';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'harmcore-local';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF

# ------------------------------------------------------------------ slurmdbd
dbd_ok() { sacctmgr -n -P list cluster format=cluster; }
if [ "$dbd_conf_changed" = 1 ] || ! running slurmdbd; then
  stop_daemon slurmdbd
  slurmdbd </dev/null >>"$LOG_DIR/slurmdbd.out" 2>&1 || fail "slurmdbd did not start"
  retry "slurmdbd" dbd_ok || fail "slurmdbd does not answer"
  started=1
  log "slurmdbd up"
fi
if ! dbd_ok 2>/dev/null | grep -qx "$HARMCORE_SLURM_CLUSTER"; then
  sacctmgr -i add cluster "$HARMCORE_SLURM_CLUSTER" >/dev/null || fail "could not register cluster $HARMCORE_SLURM_CLUSTER"
  log "cluster $HARMCORE_SLURM_CLUSTER registered"
fi

# ------------------------------------------------------------------ slurmctld and slurmd
if [ "$slurm_conf_changed" = 1 ]; then # a new slurm.conf: restart both to read it
  stop_daemon slurmd
  stop_daemon slurmctld
fi
ctld_ok() { scontrol ping | grep -q 'is UP'; }
if ! running slurmctld; then
  slurmctld -i </dev/null >>"$LOG_DIR/slurmctld.out" 2>&1 || fail "slurmctld did not start"
  started=1
fi
retry "slurmctld" ctld_ok || fail "slurmctld does not answer"
if ! running slurmd; then
  slurmd -N "$NODE" </dev/null >>"$LOG_DIR/slurmd.out" 2>&1 || fail "slurmd did not start"
  started=1
fi

# The node is usable when the controller sees it idle (or running jobs); a node left
# down or drained by an earlier run is resumed.
node_ok() {
  local state
  state=$(sinfo -h -n "$NODE" -o '%T' | head -n 1)
  case $state in
    idle | mixed | allocated | completing) return 0 ;;
    down* | drain* | fail*) scontrol update NodeName="$NODE" State=RESUME ;;
  esac
  return 1
}
retry "node $NODE" node_ok || fail "node $NODE is not usable: $(sinfo -h -n "$NODE" -o '%T %E')"
retry "sacct" sacct -n -X -S now-1hours || fail "sacct does not answer"

# ------------------------------------------------------------------ a first job, end to end
if [ "$started" = 1 ]; then
  job=$(timeout 60 srun -p "$HARMCORE_SLURM_PARTITION" -N 1 -n 1 -t 1 sh -c 'echo $SLURM_JOB_ID' 2>"$LOG_DIR/srun.err") ||
    fail "the first job (srun) failed: $(tail -n 5 "$LOG_DIR/srun.err")"
  [[ $job =~ ^[0-9]+$ ]] || fail "the first job printed '$job' instead of its job id"
  accounted() { sacct -n -X -j "$job" -o State | grep -q COMPLETED; }
  retry "job $job in sacct" accounted || fail "job $job never reached sacct as COMPLETED"
  log "job $job ran and is in sacct"
fi
what=$([ "$started" = 1 ] && echo started || echo "already running")
log "ready ($what): $(sinfo -h -n "$NODE" -o 'node %n %T, %c CPUs, %m MB'), partition" \
  "$HARMCORE_SLURM_PARTITION, state in $HARMCORE_SLURM_DIR"
[ "$SLURM_CONF" = /etc/slurm/slurm.conf ] || log "Slurm clients need: export SLURM_CONF=$SLURM_CONF"
exit 0
