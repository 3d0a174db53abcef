#!/usr/bin/env bash
# Remove the lock that a killed Snakemake driver leaves in .snakemake/locks, so that
# the README's command simply resumes. Only when no Snakemake process runs in this
# folder: a lock held by a live run is left alone (Snakemake then refuses, as it should).
set -euo pipefail
locks=.snakemake/locks
if [ ! -d "$locks" ] || [ -z "$(ls -A "$locks" 2>/dev/null)" ]; then
  exit 0
fi
here=$(pwd -P)
for pid in $(pgrep -f 'bin/snakemake' || true); do
  if [ "$(readlink "/proc/$pid/cwd" 2>/dev/null || true)" = "$here" ]; then
    echo "Snakemake (pid $pid) is running in $here: leaving its lock alone." >&2
    exit 0
  fi
done
echo "Removing the stale lock of a Snakemake run that was killed ($locks)."
rm -f "$locks"/*
