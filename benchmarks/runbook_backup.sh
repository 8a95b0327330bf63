#!/usr/bin/env bash
# Runbook 000 section 4.1 / 6, as the benchmark times it: an online copy with the
# sqlite3 CLI, the integrity check of the copy, zstd | age into a sealed file and
# the SHA-256 checksums of the copy and of the sealed file (the runbook's checksums
# registry records both kinds). Every command runs under GNU time, which appends
# "STAGE SECONDS PEAK_RSS_KIB EXIT" to TIMING; zstd and age run concurrently (a pipe).
#
# usage: bash runbook_backup.sh DB OUT RECIPIENT TIMING BACKUP_TIMEOUT_SECONDS
# (BACKUP_TIMEOUT 0 = none; the benchmark bounds .backup because under a busy writer
# the CLI's backup restarts at every commit and may never finish.)
set -euo pipefail
db=$1 out=$2 recipient=$3 timing=$4 limit=$5

T() { local stage=$1; shift; /usr/bin/time -f "$stage %e %M %x" -a -o "$timing" "$@"; }

T backup timeout "$limit" sqlite3 "$db" ".timeout 5000" ".backup '$out'"
T integrity_check sqlite3 "$out" "PRAGMA integrity_check;" > "$out.check"
grep -qx ok "$out.check"
T zstd zstd -q -T0 -3 -c "$out" | T age age -r "$recipient" > "$out.zst.age"
T sha256_copy sha256sum "$out" > "$out.sha256"
T sha256_sealed sha256sum "$out.zst.age" >> "$out.sha256"
