#!/usr/bin/env bash
# Run the Molecule scenarios in podman containers, offline.
#
#   scripts/molecule.sh                 every scenario molecule/*/ not starting with "_"
#   scripts/molecule.sh NAME...         only these (e.g. _smoke, which is skipped by default)
#   scripts/molecule.sh --env           print the exports `molecule` needs, for
#                                       eval "$(scripts/molecule.sh --env)"; molecule converge -s NAME
#
# Before the scenarios it runs scripts/setup-podman.sh (podman, node images,
# collections from the `ansible` wheel) and scripts/wheelhouse.sh (node wheels);
# both are quick once done. Each scenario runs `molecule test -s NAME` (destroy
# always); its output is shown and kept in .cache/logs/molecule-NAME.log. At the
# end: a per-scenario, per-stage timing summary; the exit status is non-zero if
# any scenario failed.
#
# Environment: MOLECULE_TEST_ARGS adds options to `molecule test` (e.g.
# "--destroy=never" to keep the containers for a look with `podman exec`).
#
# One run at a time per host (container names are global): a second run, from
# any checkout, waits on /run/lock/nodekeep-molecule.lock.
set -euo pipefail
shopt -s extglob

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf '[molecule.sh] %s\n' "$*" >&2; }

ensure_collection_link() {
    if [ -x scripts/collection-path.sh ]; then
        scripts/collection-path.sh >/dev/null
    else
        mkdir -p build/collections/ansible_collections/nodekeep
        ln -sfn ../../../.. build/collections/ansible_collections/nodekeep/backup
    fi
}

# What molecule (and the ansible-playbook it runs) needs here.
molecule_env() {
    cat <<EOF
export PATH=$ROOT/.venv/bin:\$PATH
export ANSIBLE_COLLECTIONS_PATH=$ROOT/build/collections:$ROOT/.cache/collections
export ANSIBLE_ROLES_PATH=$ROOT/roles
export MOLECULE_GLOB='molecule/*/molecule.yml'
EOF
}

if [ "${1:-}" = --env ]; then
    ensure_collection_link
    molecule_env
    exit 0
fi

eval "$(molecule_env)"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
[ -t 1 ] || export ANSIBLE_NOCOLOR=1 TERM=dumb

# ---- scenarios ----------------------------------------------------------------
scenarios=()
if [ $# -gt 0 ]; then
    for s in "$@"; do
        [ -f "molecule/$s/molecule.yml" ] || { log "ERROR: no scenario molecule/$s/molecule.yml"; exit 2; }
        scenarios+=("$s")
    done
else
    for f in molecule/*/molecule.yml; do
        [ -f "$f" ] || continue
        s=$(basename "$(dirname "$f")")
        [[ $s == _* ]] || scenarios+=("$s")
    done
fi
if [ ${#scenarios[@]} -eq 0 ]; then
    log "no Molecule scenarios yet (molecule/NAME/molecule.yml, NAME not starting with _): nothing to run"
    exit 0
fi

# ---- set-up -------------------------------------------------------------------
t_setup=$SECONDS
if ! command -v molecule >/dev/null; then
    [ -x scripts/bootstrap.sh ] || { log "ERROR: molecule not found and no scripts/bootstrap.sh"; exit 1; }
    log "molecule not found: running scripts/bootstrap.sh core"
    scripts/bootstrap.sh core
fi
bash scripts/setup-podman.sh
# The wheelhouse is downloaded with the .venv's pip (a system python3 need not have pip).
PYTHON=$ROOT/.venv/bin/python bash scripts/wheelhouse.sh
ensure_collection_link
log "set-up took $((SECONDS - t_setup)) s"

# ---- run ----------------------------------------------------------------------
mkdir -p .cache/logs
# Container and network names are global on the host: two runs at once (two
# checkouts, a CI copy and a work tree) would remove each other's containers. One
# run at a time per host; a second one waits here.
mkdir -p /run/lock
exec 8>/run/lock/nodekeep-molecule.lock
if ! flock --nonblock 8; then
    log "another scripts/molecule.sh runs on this host (/run/lock/nodekeep-molecule.lock): waiting for it"
    flock 8
fi
declare -a summary=()
failed=0

# Reads molecule's output, shows it, and records each stage's wall time from its
# "SCENARIO ➜ STAGE: Executing" / "...: Executed" lines into $STAGES.
timed_stages() {
    local line plain stage="" start=0 now
    STAGES=""
    while IFS= read -r line; do
        printf '%s\n' "$line"
        plain=${line//$'\e'\[*([0-9;])m/}
        # "INFO [NAME > STAGE] Executing" (no tty) or "INFO NAME ➜ STAGE: Executing"
        if [[ $plain =~ \ ([a-z_]+)(\]|:)\ Executing$ ]]; then
            stage=${BASH_REMATCH[1]}
            start=${EPOCHREALTIME/./}
        elif [[ -n $stage && $plain =~ \ ${stage}(\]|:)\ Executed:\ (.*) ]]; then
            case ${BASH_REMATCH[2]} in
                *Missing* | *disabled* | *Skipping*) ;;
                *)
                    now=${EPOCHREALTIME/./}
                    STAGES+="$(printf '%s %d.%01ds, ' "$stage" $(((now - start) / 1000000)) $(((now - start) / 100000 % 10)))"
                    ;;
            esac
            stage=""
        fi
    done
    printf '%s\n' "${STAGES%, }" >"$STAGE_FILE"
}

for s in "${scenarios[@]}"; do
    log "scenario $s: molecule test -s $s ${MOLECULE_TEST_ARGS:-}"
    STAGE_FILE=$(mktemp)
    t0=$SECONDS
    set +e
    # shellcheck disable=SC2086 # MOLECULE_TEST_ARGS is a list of options
    molecule test -s "$s" ${MOLECULE_TEST_ARGS:-} 2>&1 |
        tee ".cache/logs/molecule-$s.log" | timed_stages
    rc=${PIPESTATUS[0]}
    set -e
    result=passed
    if [ "$rc" -ne 0 ]; then result="FAILED (rc $rc)"; failed=$((failed + 1)); fi
    summary+=("$(printf '%-24s %-14s %4d s   %s' "$s" "$result" $((SECONDS - t0)) "$(cat "$STAGE_FILE")")")
    rm -f "$STAGE_FILE"
done

log "summary (set-up and ${#scenarios[@]} scenario(s), $SECONDS s in all):"
printf '  %s\n' "${summary[@]}" >&2
if [ "$failed" -ne 0 ]; then
    log "$failed scenario(s) failed; logs in .cache/logs/molecule-NAME.log"
    exit 1
fi
