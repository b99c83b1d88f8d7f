# Settings and helpers shared by start.sh and stop.sh (sourced, not run).
#
# Everything the local cluster writes lives in $HARMCORE_SLURM_DIR (PID files, logs,
# spool, the accounting database); only slurm.conf and slurmdbd.conf go to
# $HARMCORE_SLURM_CONF_DIR (default /etc/slurm, where the Slurm clients look without
# SLURM_CONF). Every daemon is started by start.sh and stopped by stop.sh through its
# PID file; nothing is found or killed by name.

HARMCORE_SLURM_DIR=${HARMCORE_SLURM_DIR:-/var/lib/harmcore-slurm}
HARMCORE_SLURM_CONF_DIR=${HARMCORE_SLURM_CONF_DIR:-/etc/slurm}
HARMCORE_SLURM_CLUSTER=${HARMCORE_SLURM_CLUSTER:-harmcore}
HARMCORE_SLURM_PARTITION=${HARMCORE_SLURM_PARTITION:-debug}
HARMCORE_SLURM_DB_PORT=${HARMCORE_SLURM_DB_PORT:-16830}   # the private MariaDB, on 127.0.0.1 only
HARMCORE_SLURM_WAIT_S=${HARMCORE_SLURM_WAIT_S:-90}        # per daemon, and for the node

export SLURM_CONF=$HARMCORE_SLURM_CONF_DIR/slurm.conf
PID_DIR=$HARMCORE_SLURM_DIR/pid
LOG_DIR=$HARMCORE_SLURM_DIR/log
DB_DIR=$HARMCORE_SLURM_DIR/mariadb
DB_SOCKET=$DB_DIR/mariadb.sock
MARKER="# written by harmcore scripts/slurm/start.sh"

# The daemons in start order: name (= the process's comm) and PID file.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
pid_file() { echo "$PID_DIR/$1.pid"; }

log() { printf '[harmcore-slurm %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# running NAME: its PID file names a live process called NAME (a stale file is not enough,
# nor a killed daemon that nobody has reaped yet: state Z).
running() {
  local f pid stat
  f=$(pid_file "$1")
  [ -s "$f" ] || return 1
  pid=$(tr -dc 0-9 2>/dev/null <"$f") # the daemon may remove its file between the test and the read
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) } # the fields after "(comm) "; the first is the state
  [ "${stat%% *}" != Z ]
}

# retry DESCRIPTION COMMAND...: run COMMAND every half second until it succeeds, or give up
# after HARMCORE_SLURM_WAIT_S seconds.
retry() {
  local what=$1 deadline=$((SECONDS + HARMCORE_SLURM_WAIT_S))
  shift
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "gave up waiting for $what after ${HARMCORE_SLURM_WAIT_S}s"
      return 1
    fi
    sleep 0.5
  done
}

# stop_daemon NAME: TERM the PID in its PID file, KILL it after 20 s, remove the file.
stop_daemon() {
  local f pid
  f=$(pid_file "$1")
  if ! running "$1"; then
    rm -f "$f"
    return 0
  fi
  pid=$(tr -dc 0-9 <"$f")
  log "stopping $1 (pid $pid)"
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do
    running "$1" || { rm -f "$f"; return 0; }
    sleep 0.2
  done
  log "$1 (pid $pid) is still there 20 s after TERM: KILL"
  kill -KILL "$pid" 2>/dev/null
  sleep 0.5
  rm -f "$f"
}

# Processes with these exact names still alive anywhere, one "pid command" per line.
LEFTOVER_NAMES=(munged mariadbd slurmdbd slurmctld slurmscriptd slurmd slurmstepd)
leftover_daemons() {
  local name
  for name in "${LEFTOVER_NAMES[@]}"; do
    pgrep -a -x "$name"
  done
  return 0
}
