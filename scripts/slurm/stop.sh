#!/usr/bin/env bash
# Stop the local SLURM cluster that scripts/slurm/start.sh started:
#   1. cancel the jobs still queued or running, and wait (up to 30 s) for them to end;
#   2. stop slurmd, slurmctld, slurmdbd, mariadbd and munged, each by its PID file
#      (TERM, then KILL after 20 s). A munged this cluster did not start is left alone.
# Exits 1 when a daemon of one of these names is still alive afterwards (it prints them).
# Usage: scripts/slurm/stop.sh [--purge]   --purge also deletes $HARMCORE_SLURM_DIR
#                                          (job state, accounting database, logs).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=common.sh
. "$HERE/common.sh"

if running slurmctld; then
  jobs=$(timeout 10 squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// /}" ]; then
    log "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs
    for _ in $(seq 60); do
      [ -z "$(timeout 10 squeue -h -o '%A' 2>/dev/null)" ] && break
      sleep 0.5
    done
  fi
fi

for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do # reverse start order
  stop_daemon "${DAEMONS[i]}"
done

# Job step daemons end with their jobs; give the last ones a moment.
for _ in $(seq 20); do
  [ -z "$(leftover_daemons)" ] && break
  sleep 0.5
done

if [ "${1:-}" = --purge ]; then
  case $HARMCORE_SLURM_DIR in
    / | /var | /var/lib | /tmp | /etc | /root | "") log "not purging '$HARMCORE_SLURM_DIR'" ;;
    *) rm -rf "$HARMCORE_SLURM_DIR" && log "deleted $HARMCORE_SLURM_DIR" ;;
  esac
fi

left=$(leftover_daemons)
if [ -n "$left" ]; then
  log "still running (not started by start.sh, or not stoppable):"
  echo "$left" >&2
  exit 1
fi
log "stopped: no slurm, munge or mariadb daemons left"
exit 0
