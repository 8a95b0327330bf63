#!/usr/bin/env bash
# Runbook 000 sections 5.1 / 5.4 / 7, as the benchmark times it: decrypt and
# decompress the sealed file (age -d | zstd -d, concurrently), compare the SHA-256
# of the result with the recorded one, and run PRAGMA integrity_check on it.
# Every command runs under GNU time, which appends "STAGE SECONDS PEAK_RSS_KIB EXIT"
# to TIMING.
#
# usage: bash runbook_restore.sh SEALED IDENTITY_FILE DEST EXPECTED_SHA256 TIMING
set -euo pipefail
sealed=$1 identity=$2 dest=$3 expected=$4 timing=$5

T() { local stage=$1; shift; /usr/bin/time -f "$stage %e %M %x" -a -o "$timing" "$@"; }

T age_decrypt age -d -i "$identity" "$sealed" | T zstd_decompress zstd -q -d -o "$dest"
T sha256 sha256sum "$dest" > "$dest.sha256"
read -r actual _ < "$dest.sha256"
if [[ $actual != "$expected" ]]; then
    echo "restored SHA-256 $actual does not match the recorded $expected" >&2
    exit 1
fi
T integrity_check sqlite3 "$dest" "PRAGMA integrity_check;" > "$dest.check"
grep -qx ok "$dest.check"
