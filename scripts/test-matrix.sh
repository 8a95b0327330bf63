#!/usr/bin/env bash
# `make test-matrix`: the collection against every ansible-core release that runs on this
# machine's Python (meta/runtime.yml requires_ansible says what passed here).
#
#   scripts/test-matrix.sh [2.16 2.17 ...]     (default: MATRIX_VERSIONS or 2.16 2.17 2.18 2.19)
#
# For each version X: a virtualenv .cache/matrix/core-X (made once, kept; `make clean` drops it)
# with the newest ansible-core X.*, pytest and the node packages (requirements/node.txt, exact
# pins), then, with that ansible-core:
#   sanity     ansible-test sanity --venv on a copy of the tree (scripts/collection-path.sh --sanity;
#              ansible-test's own per-version requirement venvs are cached in ~/.ansible/test/venv)
#   units      pytest tests/unit
#   playbooks  pytest tests/integration/test_playbooks.py: agent, backup, verify, staged restore and
#              cutover through the real playbooks (ansible-playbook of that version, connection local)
# The last line per version is "core X: sanity ok|FAILED units ... playbooks ..."; the script fails
# when any step of any version failed. Logs: .cache/matrix/core-X/*.log.
# MATRIX_DIR (default .cache/matrix) holds the virtualenvs and logs. MATRIX_STEPS (default
# "sanity units playbooks") picks steps; MATRIX_SANITY_ARGS adds ansible-test
# options (e.g. "--test pylint").
#
# ansible-core 2.20 and later need Python >= 3.12 on the controller; Debian 12 ships 3.11 only,
# so they are not in the default list (pass MATRIX_PYTHON=/path/to/python3.12 and the version
# to try them where such a Python exists).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${MATRIX_PYTHON:-python3}
STEPS=${MATRIX_STEPS:-sanity units playbooks}
SANITY_ARGS=${MATRIX_SANITY_ARGS:-}
if [ $# -gt 0 ]; then VERSIONS=("$@"); else read -r -a VERSIONS <<<"${MATRIX_VERSIONS:-2.16 2.17 2.18 2.19}"; fi
MATRIX_DIR=${MATRIX_DIR:-$ROOT/.cache/matrix}
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

log() { printf 'test-matrix: %s\n' "$*" >&2; }

# Tools the tests use beside ansible-core, at the versions of the main lock.
pin() { sed -n "s/^\($1==[^ ]*\).*/\1/p" requirements/test.txt requirements/constraints.txt | head -1; }
TEST_PINS=("$(pin pytest)" "$(pin pytest-timeout)")

make_venv() { # $1 version -> .cache/matrix/core-$1
    local v=$1 dir=$MATRIX_DIR/core-$1 want
    want="ansible-core==$v.* ${TEST_PINS[*]} $(sha256sum requirements/node.txt | cut -c1-16) $PYVER"
    if [[ -x $dir/bin/ansible-playbook && -f $dir/.nodekeep-stamp && $(<"$dir/.nodekeep-stamp") == "$want" ]]; then
        return 0
    fi
    log "making $dir (ansible-core $v.*, Python $PYVER)"
    rm -rf "$dir"
    "$PYTHON" -m venv "$dir"
    "$dir/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
        "ansible-core==$v.*" "${TEST_PINS[@]}" -r requirements/node.txt 2> >(grep -v 'is ignored' >&2)
    echo "$want" >"$dir/.nodekeep-stamp"
}

run_step() { # $1 version, $2 step -> 0/1, output in the step's log
    local v=$1 step=$2 dir=$MATRIX_DIR/core-$1 logf
    logf=$dir/$step.log
    local -a env=(env "PATH=$dir/bin:$PATH" "VIRTUAL_ENV=$dir" "ANSIBLE_COLLECTIONS_PATH=$ROOT/build/collections"
        "PYTHONPATH=$ROOT/build/collections" PIP_DISABLE_PIP_VERSION_CHECK=1)
    case $step in
    sanity)
        bash scripts/ansible-test-pip.sh "$dir" >"$logf" 2>&1 || return 1
        # One sanity copy is shared by all versions: never two at once.
        (
            exec 8>"$ROOT/.cache/sanity.lock"
            flock 8
            # shellcheck disable=SC2086 # MATRIX_SANITY_ARGS is several options
            cd "$(bash scripts/collection-path.sh --sanity)" && "${env[@]}" "$dir/bin/ansible-test" sanity --venv --python "$PYVER" --color no $SANITY_ARGS
        ) >>"$logf" 2>&1
        ;;
    units)
        "${env[@]}" "$dir/bin/python" -m pytest -p no:cacheprovider -q --timeout=900 tests/unit >"$logf" 2>&1 ;;
    playbooks)
        "${env[@]}" "$dir/bin/python" -m pytest -p no:cacheprovider -q --timeout=900 \
            tests/integration/test_playbooks.py >"$logf" 2>&1 ;;
    *) log "unknown step $step"; return 1 ;;
    esac
}

bash scripts/collection-path.sh
mkdir -p "$MATRIX_DIR"
failed=0
summary=()
for v in "${VERSIONS[@]}"; do
    if ! make_venv "$v"; then
        summary+=("core $v: cannot install ansible-core $v.* for Python $PYVER")
        failed=1
        continue
    fi
    exact=$("$MATRIX_DIR/core-$v/bin/python" -c 'import ansible.release as r; print(r.__version__)')
    line="core $exact:"
    for step in $STEPS; do
        log "core $exact: $step"
        if run_step "$v" "$step"; then
            line+=" $step ok"
        else
            line+=" $step FAILED ($MATRIX_DIR/core-$v/$step.log)"
            failed=1
            tail -n 25 "$MATRIX_DIR/core-$v/$step.log" >&2
        fi
    done
    summary+=("$line")
done
printf '%s\n' "${summary[@]}"
exit $failed
