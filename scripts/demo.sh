#!/usr/bin/env bash
# nodekeep.backup demo (`make demo`): back up a live SQLite node with the real
# playbooks, verify it, restore it into staging and prove the copy is right.
#
#   scripts/demo.sh
#
# What it does, on this machine (the demo node animica-demo of inventories/demo,
# connection local, everything under NODEKEEP_DEMO_DIR):
#   1. makes the demo's age identity (age-keygen, 0600) if missing;
#   2. starts the node: scripts/demo_writer.py appends to node/node.db (WAL, two
#      rows per transaction) in the background until the demo exits;
#   3. playbooks/agent.yml: node virtualenv installed offline from a wheelhouse
#      (scripts/wheelhouse.sh), repository, signing key (public key recorded in
#      inventories/demo/keys/);
#   4. playbooks/backup.yml twice, a few seconds apart: two epochs of the live DB;
#   5. playbooks/verify.yml with a deep check (decrypt + PRAGMA integrity_check);
#   6. playbooks/restore.yml into NODEKEEP_DEMO_DIR/staging (nothing live touched);
#   7. checks with standard tools only: sqlite3 integrity_check of the restored DB,
#      every restored row equal to the same row of the live DB, both rows of every
#      transaction present; `age -d | zstd -d` of the artifact matches the manifest's
#      checksum; `ssh-keygen -Y verify` accepts the manifest signature;
#   8. playbooks/drill.yml: a restore drill of the node into the staging host
#      demo-staging (the same machine, its own directories): the latest epoch is
#      shipped there, restored, deep-checked, health-checked and timed; RTO and RPO
#      are compared with the node's targets (runbook 000 mainnet: RPO 5 min, RTO
#      30 min) and the signed report (JSON + HTML) is stored in the staging host's
#      repository under _drills/; `ssh-keygen -Y verify` checks its signature;
#   9. playbooks/stream.yml: the continuous replication service of the node's
#      database (its systemd unit's own ExecStart line, run in the background: the
#      demo has no systemd) ships sealed, signed WAL segments every 0.5 s while the
#      node writes; then playbooks/restore.yml rebuilds the database as of a commit
#      inside the chain (nodekeep_restore_point_in_time, into a file), and the demo
#      checks it names that exact commit, passes integrity_check and holds only
#      rows equal to the live ones, every transaction whole;
#  10. prints a summary (scripts/demo_summary.py) from the JSON results the
#      playbooks saved in NODEKEEP_DEMO_DIR/results.
#
# Environment (all optional):
#   NODEKEEP_DEMO_DIR     default /var/lib/nodekeep-demo
#   NODEKEEP_DEMO_VENV    use this existing virtualenv as the node's (no install;
#                         e.g. the project's .venv); default: a fresh node venv
#                         NODEKEEP_DEMO_DIR/venv installed from the wheelhouse
#   NODEKEEP_DEMO_PAUSE   seconds between the two backups (default 3)
#   ANSIBLE_PLAYBOOK      ansible-playbook to use (default .venv/bin/ansible-playbook)
# Non-interactive (CI=true, no stdin), re-runnable; exits non-zero on any failure.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DEMO_DIR=${NODEKEEP_DEMO_DIR:-/var/lib/nodekeep-demo}
PAUSE=${NODEKEEP_DEMO_PAUSE:-3}
INVENTORY=$ROOT/inventories/demo/hosts.yml
NODE=animica-demo
DB=$DEMO_DIR/node/node.db
PIDFILE=$DEMO_DIR/node/writer.pid
RESULTS=$DEMO_DIR/results
STAGING=$DEMO_DIR/staging
IDENTITY=$DEMO_DIR/age/identity.txt
RECIPIENT=$DEMO_DIR/age/recipient.txt
PUBKEY=$ROOT/inventories/demo/keys/$NODE.pub
SIGNING_KEY=$DEMO_DIR/signing/signing_key
STAGE=demo-staging
STAGE_PUBKEY=$ROOT/inventories/demo/keys/$STAGE.pub
STAGE_SIGNING_KEY=$DEMO_DIR/staging-host/signing/signing_key
DRILL_STORE=$DEMO_DIR/staging-host/repository/_drills

T0=$(date +%s%N)
step() { printf '\n\033[1m==> %s\033[0m  (at %s s)\n' "$*" "$((($(date +%s%N) - T0) / 1000000000))"; }
note() { printf '    %s\n' "$*"; }
die() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
if [[ -n ${ANSIBLE_PLAYBOOK:-} ]]; then
    PLAYBOOK=$ANSIBLE_PLAYBOOK
elif [[ -x $ROOT/.venv/bin/ansible-playbook ]]; then
    PLAYBOOK=$ROOT/.venv/bin/ansible-playbook
elif [[ -x /tmp/probe-venv/bin/ansible-playbook ]]; then
    PLAYBOOK=/tmp/probe-venv/bin/ansible-playbook
else
    die "no ansible-playbook: run \`make setup\` first"
fi
CONTROLLER_PYTHON=$(dirname "$PLAYBOOK")/python
for tool in age age-keygen zstd sqlite3 ssh-keygen; do
    command -v "$tool" >/dev/null || die "$tool is missing: run \`make setup\` (requirements/apt-core.txt)"
done
bash scripts/collection-path.sh
export ANSIBLE_COLLECTIONS_PATH=$ROOT/build/collections
export ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-$([[ -t 1 ]] && echo 0 || echo 1)}
export ANSIBLE_DISPLAY_SKIPPED_HOSTS=false
export ANSIBLE_LOCALHOST_WARNING=false
export ANSIBLE_RETRY_FILES_ENABLED=false
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

playbook() { # playbook NAME [ansible-playbook args...]
    local name=$1
    shift
    "$PLAYBOOK" -i "$INVENTORY" "playbooks/$name.yml" -e "nodekeep_demo_dir=$DEMO_DIR" "${AGENT_ARGS[@]}" "$@" </dev/null ||
        die "playbooks/$name.yml failed (output above)"
}

# ---------------------------------------------------------------- the live node
STREAM_PID=
stop_stream() {
    if [[ -n $STREAM_PID ]] && kill -0 "$STREAM_PID" 2>/dev/null; then
        kill -TERM "$STREAM_PID" 2>/dev/null || true
        wait "$STREAM_PID" 2>/dev/null || true
    fi
    STREAM_PID=
}
WRITER_PID=
stop_writer() {
    if [[ -n $WRITER_PID ]] && kill -0 "$WRITER_PID" 2>/dev/null; then
        kill -TERM "$WRITER_PID" 2>/dev/null || true
        wait "$WRITER_PID" 2>/dev/null || true
    fi
    WRITER_PID=
}
on_exit() {
    local rc=$?
    stop_stream
    stop_writer
    [[ $rc -eq 0 ]] || printf '\nThe demo stopped with status %d. Files: %s\n' "$rc" "$DEMO_DIR" >&2
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_stale_writer() { # a writer left behind by an interrupted run (kill -9 of the demo)
    [[ -f $PIDFILE ]] || return 0
    local pid
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if [[ $pid =~ ^[0-9]+$ ]] && grep -qs demo_writer.py "/proc/$pid/cmdline"; then
        note "stopping the writer of an earlier run (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
}

# ================================================================ 1. identities
step "1. Demo directory $DEMO_DIR and its age identity"
mkdir -p "$DEMO_DIR"/{node,age}
chmod 0700 "$DEMO_DIR/age"
if [[ ! -s $IDENTITY ]]; then
    (umask 077 && age-keygen -o "$IDENTITY" 2>/dev/null)
    note "made $IDENTITY (0600)"
fi
chmod 0600 "$IDENTITY"
age-keygen -y "$IDENTITY" >"$RECIPIENT"
note "recipient: $(cat "$RECIPIENT")"
# The demo owns both ends of the trust: a recorded key that is not this demo node's key
# comes from an earlier demo directory; forget it (a real fleet keeps it, and the agent
# role refuses the node until the change is accepted deliberately).
forget_stale_key() { # forget_stale_key RECORDED.pub PRIVATE-KEY
    [[ -f $1 ]] || return 0
    local key
    key=$(ssh-keygen -y -f "$2" 2>/dev/null | cut -d' ' -f1,2 || true)
    if [[ $key != "$(cut -d' ' -f1,2 "$1")" ]]; then
        note "forgetting $1: it is not the key of this demo's host ($2)"
        rm -f "$1"
    fi
}
forget_stale_key "$PUBKEY" "$SIGNING_KEY"
forget_stale_key "$STAGE_PUBKEY" "$STAGE_SIGNING_KEY"

# ================================================================ 2. the live node
step "2. Start the demo node: a live writer on $DB"
stop_stale_writer
if [[ -f $DB ]] && (($(stat -c %s "$DB") > 32 << 20)); then
    note "starting a fresh node database (the old one grew past 32 MiB over earlier runs)"
    rm -f "$DB" "$DB-wal" "$DB-shm"
fi
python3 scripts/demo_writer.py --db "$DB" --pidfile "$PIDFILE" --initial-mb 4 --rate 20 </dev/null &
WRITER_PID=$!
for _ in $(seq 600); do
    [[ -s $PIDFILE ]] && break
    kill -0 "$WRITER_PID" 2>/dev/null || die "the demo writer exited early"
    sleep 0.1
done
[[ -s $PIDFILE ]] || die "the demo writer did not become ready within 60 s"
note "writer pid $WRITER_PID, $(sqlite3 "$DB" 'SELECT count(*) FROM chain') rows so far"

# ================================================================ 3. agent
step "3. playbooks/agent.yml: node virtualenv, repository, signing key (node and staging host)"
AGENT_ARGS=()
if [[ -n ${NODEKEEP_DEMO_VENV:-} ]]; then
    [[ -x $NODEKEEP_DEMO_VENV/bin/python ]] || die "NODEKEEP_DEMO_VENV=$NODEKEEP_DEMO_VENV has no bin/python"
    note "using the existing virtualenv $NODEKEEP_DEMO_VENV (no install)"
    AGENT_ARGS=(-e "nodekeep_venv=$NODEKEEP_DEMO_VENV" -e nodekeep_agent_install=false)
else
    note "building the wheelhouse (air-gapped install path; quick when up to date)"
    PYTHON=$CONTROLLER_PYTHON bash scripts/wheelhouse.sh requirements/node.txt "$ROOT/.cache/wheelhouse" ||
        die "scripts/wheelhouse.sh failed"
    AGENT_ARGS=(-e "nodekeep_wheelhouse=$ROOT/.cache/wheelhouse")
fi
rm -rf "$RESULTS"
mkdir -p "$RESULTS"
playbook agent
playbook agent -e nodekeep_hosts=staging

# ================================================================ 4. backups
step "4. playbooks/backup.yml twice, ${PAUSE} s apart, while the node writes"
playbook backup --skip-tags agent
sleep "$PAUSE"
playbook backup --skip-tags agent

# ================================================================ 5. verify
step "5. playbooks/verify.yml: signature, checksums, deep check (decrypt + integrity_check)"
playbook verify -e nodekeep_verify_deep=true

# ================================================================ 6. restore
step "6. playbooks/restore.yml into $STAGING (staged: nothing live is touched)"
rm -rf "$STAGING"
playbook restore

# ================================================================ 7. independent checks
step "7. Check the restored database and the artifacts with standard tools"
RESTORED=$STAGING$DB
[[ -f $RESTORED ]] || die "the restored database $RESTORED does not exist"
integrity=$(sqlite3 "$RESTORED" 'PRAGMA integrity_check;')
[[ $integrity == ok ]] || die "PRAGMA integrity_check of $RESTORED: $integrity"
note "sqlite3 PRAGMA integrity_check: $integrity"
# Rows are only ever appended: every restored row must equal the live row with the same seq.
read -r restored_rows differing missing_pairs gaps max_seq live_rows restored_newest <<<"$(
    sqlite3 -separator ' ' "$RESTORED" "
        ATTACH 'file:$DB?mode=ro' AS live;
        SELECT (SELECT count(*) FROM main.chain),
               (SELECT count(*) FROM (SELECT * FROM main.chain EXCEPT SELECT * FROM live.chain)),
               (SELECT count(*) FROM (SELECT height FROM main.chain GROUP BY height HAVING count(*) != 2)),
               (SELECT max(seq) + 1 - count(*) FROM main.chain),
               (SELECT max(seq) FROM main.chain),
               (SELECT count(*) FROM live.chain),
               (SELECT max(created_at) FROM main.chain);"
)"
[[ $restored_rows -gt 0 ]] || die "the restored database has no rows"
[[ $differing -eq 0 ]] || die "$differing restored rows differ from the live database"
[[ $missing_pairs -eq 0 ]] || die "$missing_pairs transactions are half restored (a torn copy)"
[[ $gaps -eq 0 ]] || die "the restored seq has $gaps gaps"
note "rows: $restored_rows restored, all equal to the live rows; live has $live_rows now"
note "every transaction complete (2 rows per height), seq contiguous up to $max_seq"

# The epoch the restore used, and its first artifact, from the saved restore result.
json_get() { # json_get FILE PYTHON-EXPRESSION-ON-d
    "$CONTROLLER_PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}
restore_jsons=("$RESULTS/$NODE"/restore-*.json) # the results directory holds this run only
restore_json=${restore_jsons[-1]}
epoch=$(json_get "$restore_json" 'd["epoch"]')
EPOCH_DIR=$DEMO_DIR/repository/$NODE/$epoch
artifact=$EPOCH_DIR/$(json_get "$EPOCH_DIR/manifest.json" 'd["artifacts"][0]["file"]')
expected=$(json_get "$EPOCH_DIR/manifest.json" 'd["artifacts"][0]["content_sha256"]')
actual=$(age -d -i "$IDENTITY" "$artifact" | zstd -d -q | sha256sum | cut -d' ' -f1)
[[ $actual == "$expected" ]] || die "age -d | zstd -d of $artifact: SHA-256 $actual, the manifest says $expected"
note "age -d -i IDENTITY $(basename "$artifact") | zstd -d: SHA-256 matches the manifest"
ALLOWED=$DEMO_DIR/allowed_signers
printf '%s %s\n' "$NODE" "$(cut -d' ' -f1,2 "$PUBKEY")" >"$ALLOWED"
sigcheck=$(ssh-keygen -Y verify -f "$ALLOWED" -I "$NODE" -n nodekeep-manifest \
    -s "$EPOCH_DIR/manifest.json.sig" <"$EPOCH_DIR/manifest.json" 2>&1) ||
    die "ssh-keygen -Y verify rejected $EPOCH_DIR/manifest.json: $sigcheck"
note "ssh-keygen -Y verify: $sigcheck"

# Saved for the summary (values passed as arguments, never pasted into code).
"$CONTROLLER_PYTHON" -c '
import json, sys
keys = ["restored_db", "live_db", "epoch", "integrity_check", "restored_rows", "live_rows_now",
        "rows_differing_from_live", "half_restored_transactions", "seq_gaps", "restored_newest_row",
        "artifact", "artifact_sha256", "ssh_keygen_verify", "allowed_signers", "identity", "public_key"]
values = dict(zip(keys, sys.argv[2:]))
for key in ("restored_rows", "live_rows_now", "rows_differing_from_live", "half_restored_transactions", "seq_gaps"):
    values[key] = int(values[key])
values["format"] = "nodekeep.demo-checks/v1"
values["age_zstd_sha256_matches_manifest"] = True
json.dump(values, open(sys.argv[1], "w"), indent=2)
' "$RESULTS/$NODE/checks.json" "$RESTORED" "$DB" "$epoch" "$integrity" "$restored_rows" "$live_rows" \
    "$differing" "$missing_pairs" "$gaps" "$restored_newest" "$artifact" "$actual" "$sigcheck" "$ALLOWED" \
    "$IDENTITY" "$PUBKEY"

# ================================================================ 8. drill
step "8. playbooks/drill.yml: restore drill into $STAGE, RTO/RPO against the targets"
playbook drill
drill_jsons=("$RESULTS/$NODE"/drill-*.json) # the results directory holds this run only
[[ -f ${drill_jsons[-1]} ]] || die "playbooks/drill.yml saved no report in $RESULTS/$NODE"
drill_id=$(json_get "${drill_jsons[-1]}" 'd["drill_id"]')
drill_series=$(json_get "${drill_jsons[-1]}" 'd["series"]')
DRILL_DIR=$DRILL_STORE/$drill_series/$drill_id
for name in report.json report.html report.json.sig; do
    [[ -f $DRILL_DIR/$name ]] || die "the drill report $DRILL_DIR/$name does not exist"
done
"$CONTROLLER_PYTHON" -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' \
    "$DRILL_DIR/report.json" "${drill_jsons[-1]}" || die "the controller's copy of the drill report differs from $DRILL_DIR"
DRILL_ALLOWED=$DEMO_DIR/allowed_signers.drill
printf '%s %s\n' "$STAGE" "$(cut -d' ' -f1,2 "$STAGE_PUBKEY")" >"$DRILL_ALLOWED"
drillsig=$(ssh-keygen -Y verify -f "$DRILL_ALLOWED" -I "$STAGE" -n nodekeep-drill \
    -s "$DRILL_DIR/report.json.sig" <"$DRILL_DIR/report.json" 2>&1) ||
    die "ssh-keygen -Y verify rejected the drill report $DRILL_DIR/report.json: $drillsig"
note "drill report $DRILL_DIR (report.json, report.html, report.json.sig)"
note "ssh-keygen -Y verify -n nodekeep-drill: $drillsig"
"$CONTROLLER_PYTHON" -c '
import json, sys
keys = ["dir", "ssh_keygen_verify", "allowed_signers", "signer"]
json.dump(dict(zip(keys, sys.argv[2:]), format="nodekeep.demo-drill-checks/v1"), open(sys.argv[1], "w"), indent=2)
' "$RESULTS/$NODE/checks-drill.json" "$DRILL_DIR" "$drillsig" "$DRILL_ALLOWED" "$STAGE"

# ================================================================ 9. point in time
step "9. playbooks/stream.yml: continuous replication, then restore.yml to a point in time"
STREAM=$DEMO_DIR/stream
rm -rf "$STREAM" "$DEMO_DIR/pitr" "$DEMO_DIR/results-pitr"
mkdir -p "$STREAM"/units "$DEMO_DIR/pitr"
playbook stream -e "{\"nodekeep_schedule_systemd\": false, \"nodekeep_schedule_lib\": \"$STREAM/lib\",
    \"nodekeep_schedule_config_dir\": \"$STREAM/etc\", \"nodekeep_schedule_unit_dir\": \"$STREAM/units\",
    \"nodekeep_stream_state_dir\": \"$STREAM/state\", \"nodekeep_metrics_dir\": \"$STREAM/metrics\",
    \"nodekeep_stream_assets\": [\"node-db\"], \"nodekeep_stream_interval\": 0.5}"
UNIT=$STREAM/units/nodekeep-stream@.service
read -r -a stream_env <<<"$(sed -n 's/^Environment=//p' "$UNIT" | tr '\n' ' ')"
read -r -a stream_cmd <<<"$(sed -n 's/^ExecStart=//p' "$UNIT" | sed 's/%i/node-db/g')"
env "${stream_env[@]}" "${stream_cmd[@]}" 2>"$STREAM/service.log" </dev/null &
STREAM_PID=$!
note "nodekeep-stream@node-db running (the unit's ExecStart, pid $STREAM_PID); log $STREAM/service.log"
# Its status file names the chain and the last signed segment; wait for a few segments.
STATUS=$STREAM/state/stream-node-db.status.json
for _ in $(seq 600); do
    kill -0 "$STREAM_PID" 2>/dev/null || die "the replication service exited: $(cat "$STREAM/service.log")"
    [[ -f $STATUS ]] && [[ $(json_get "$STATUS" 'd["seq"] if d.get("pid") == '"$STREAM_PID"' else 0') -ge 4 ]] && break
    sleep 0.2
done
[[ $(json_get "$STATUS" 'd["seq"]') -ge 4 ]] || die "the replication service shipped no 4 segments in 2 min"
chain=$(json_get "$STATUS" 'd["chain"]')
# The point: the last commit of the chain's second segment (later commits exist, in the chain and live).
point=$("$CONTROLLER_PYTHON" -c '
import glob, json, os, sys
records = sorted(r for r in glob.glob(sys.argv[1] + "/node-db.wal.00000002.*.json") if os.path.exists(r + ".sig"))
print(json.load(open(records[0]))["artifacts"][0]["source"]["commits"][-1][1])
' "$DEMO_DIR/repository/$NODE/$chain")
note "chain $chain (base epoch + $(json_get "$STATUS" 'd["seq"]') signed segments); restoring to $point"
stop_stream
PITR_DB=$DEMO_DIR/pitr/node-db.db
playbook restore -e "{\"nodekeep_restore_assets\": [\"node-db\"]}" -e "nodekeep_restore_point_in_time=$point" \
    -e "nodekeep_restore_output=$PITR_DB" -e "nodekeep_results_dir=$DEMO_DIR/results-pitr"
pitr_jsons=("$DEMO_DIR/results-pitr/$NODE"/restore-*.json)
reached=$(json_get "${pitr_jsons[-1]}" 'd["point_in_time"]["restored_commit_time"]')
[[ $reached == "$point" ]] || die "asked for the commit at $point, the restore reached $reached"
pitr_integrity=$(sqlite3 "$PITR_DB" 'PRAGMA integrity_check;')
[[ $pitr_integrity == ok ]] || die "PRAGMA integrity_check of $PITR_DB: $pitr_integrity"
read -r pitr_rows pitr_differing pitr_half pitr_gaps pitr_seq live_rows_later <<<"$(
    sqlite3 -separator ' ' "$PITR_DB" "
        ATTACH 'file:$DB?mode=ro' AS live;
        SELECT (SELECT count(*) FROM main.chain),
               (SELECT count(*) FROM (SELECT * FROM main.chain EXCEPT SELECT * FROM live.chain)),
               (SELECT count(*) FROM (SELECT height FROM main.chain GROUP BY height HAVING count(*) != 2)),
               (SELECT max(seq) + 1 - count(*) FROM main.chain),
               (SELECT max(seq) FROM main.chain),
               (SELECT count(*) FROM live.chain WHERE seq > (SELECT max(seq) FROM main.chain));"
)"
[[ $pitr_differing -eq 0 && $pitr_half -eq 0 && $pitr_gaps -eq 0 ]] ||
    die "the point-in-time copy: $pitr_differing rows differ, $pitr_half half transactions, $pitr_gaps gaps"
note "restored the commit seen at $reached (asked $point): integrity_check $pitr_integrity, $pitr_rows rows up to seq $pitr_seq"
note "every row equal to the live one, every transaction whole; the live DB has $live_rows_later later rows"
"$CONTROLLER_PYTHON" -c '
import json, sys
keys = ["asked", "restored_commit_time", "chain", "segments", "output", "integrity_check", "rows", "max_seq",
        "rows_differing_from_live", "half_restored_transactions", "seq_gaps", "live_rows_after", "result"]
values = dict(zip(keys, sys.argv[2:]), format="nodekeep.demo-pitr-checks/v1")
for key in ("segments", "rows", "max_seq", "rows_differing_from_live", "half_restored_transactions", "seq_gaps",
            "live_rows_after"):
    values[key] = int(values[key])
json.dump(values, open(sys.argv[1], "w"), indent=2)
' "$RESULTS/$NODE/checks-pitr.json" "$point" "$reached" "$chain" "$(json_get "$STATUS" 'd["seq"]')" "$PITR_DB" \
    "$pitr_integrity" "$pitr_rows" "$pitr_seq" "$pitr_differing" "$pitr_half" "$pitr_gaps" "$live_rows_later" \
    "${pitr_jsons[-1]}"

# ================================================================ 10. summary
stop_writer
step "Summary"
"$CONTROLLER_PYTHON" scripts/demo_summary.py --results "$RESULTS" --node "$NODE" --demo-dir "$DEMO_DIR" \
    --inventory "$INVENTORY" || die "scripts/demo_summary.py failed"
