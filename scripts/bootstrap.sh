#!/usr/bin/env bash
# Set up this checkout for the demo and the tests. Idempotent and non-interactive.
#
#   scripts/bootstrap.sh [core|all]
#
#   core  Debian packages in requirements/apt-core.txt, then the controller/test
#         virtualenv .venv (python3 -m venv) with requirements/test.txt.
#   all   core, plus requirements/apt-all.txt, plus the hooks
#         scripts/bootstrap.d/*.sh (run in order as `HOOK all`, with ROOT and VENV
#         in the environment; each hook must be idempotent).
#
# A second run is quick: missing Debian packages are checked with one dpkg-query,
# and the pip install and the hooks are skipped while .cache/bootstrap-PROFILE.stamp
# matches a hash of the inputs (package lists, requirements, hooks, this script,
# the Python version). `apt-get update` runs only when a package is missing and
# the lists are older than a day, lack that package, or an install fails.
#
# Environment: PYTHON (default python3) makes the venv; BOOTSTRAP_FORCE=1 ignores
# the stamp; VERBOSE=1 shows apt/pip output instead of logging to .cache/logs/.
set -euo pipefail

profile=${1:-core}
case $profile in
    core | all) ;;
    *) echo "usage: $0 [core|all]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export ROOT
export VENV=$ROOT/.venv
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1
PYTHON=${PYTHON:-python3}
CACHE=$ROOT/.cache
LOGS=$CACHE/logs
mkdir -p "$LOGS"

apt_lists=(requirements/apt-core.txt)
hooks=()
if [[ $profile == all ]]; then
    apt_lists+=(requirements/apt-all.txt)
    shopt -s nullglob
    hooks=(scripts/bootstrap.d/*.sh)
    shopt -u nullglob
fi

t0=$SECONDS
say() { printf 'bootstrap[%s]: %s\n' "$profile" "$*"; }

# run LOGNAME CMD...: run quietly into .cache/logs/LOGNAME.log; show the log on failure.
run() {
    local log=$LOGS/$1.log
    shift
    if [[ ${VERBOSE:-0} == 1 ]]; then
        "$@" 2>&1 | tee "$log"
        return "${PIPESTATUS[0]}"
    fi
    if ! "$@" >"$log" 2>&1; then
        echo "---- failed: $* (log: $log, last 40 lines) ----" >&2
        tail -n 40 "$log" >&2
        return 1
    fi
}

as_root() {
    if [[ $(id -u) == 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo -n -E "$@"
    else
        echo "bootstrap: need root (or sudo) for: $*" >&2
        return 1
    fi
}

# One bootstrap at a time per checkout (several `make` runs may start together).
exec 9>"$CACHE/bootstrap.lock"
flock 9

# ---- Debian packages --------------------------------------------------------
read_list() { sed -e 's/#.*//' "$@" | awk '{ for (i = 1; i <= NF; i++) print $i }' | sort -u; }
mapfile -t wanted < <(read_list "${apt_lists[@]}")

missing_packages() {
    local installed
    installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${wanted[@]}" 2>/dev/null |
        awk '$2 == "installed" {print $1}' || true)
    comm -23 <(printf '%s\n' "${wanted[@]}") <(sort -u <<<"$installed")
}

apt_lists_stale() {
    # Fresh if apt-get update ran in the last day (pkgcache.bin is rebuilt by it).
    local newest
    newest=$(find /var/lib/apt/lists /var/cache/apt -maxdepth 1 -type f \
        \( -name '*_Packages*' -o -name 'pkgcache.bin' \) -mmin -1440 -print -quit 2>/dev/null)
    [[ -z $newest ]]
}

apt_unknown() { # prints the packages apt has no candidate for
    local p
    for p in "$@"; do
        apt-cache show --no-all-versions "$p" >/dev/null 2>&1 || echo "$p"
    done
}

missing=()
((${#wanted[@]})) && mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    if apt_lists_stale || [[ -n $(apt_unknown "${missing[@]}") ]]; then
        run apt-update as_root apt-get update -q
    fi
    apt_install() { as_root apt-get install -y -q --no-install-recommends "${missing[@]}"; }
    if ! run apt-install apt_install; then
        say "install failed; retrying after apt-get update"
        run apt-update as_root apt-get update -q
        run apt-install apt_install
    fi
fi

# ---- controller/test virtualenv ---------------------------------------------
key=$(
    {
        echo "profile=$profile"
        "$PYTHON" -c 'import sys; print(sys.version)'
        cat scripts/bootstrap.sh scripts/ansible_test_get_pip.py requirements/*.txt
        for h in "${hooks[@]}"; do echo "hook $h"; cat "$h"; done
    } | sha256sum | cut -d' ' -f1
)
stamp=$CACHE/bootstrap-$profile.stamp

venv_usable() { # exists and runs the same Python major.minor as $PYTHON
    [[ -x $VENV/bin/python && -x $VENV/bin/pip ]] &&
        [[ $("$VENV/bin/python" -c 'import sys; print(sys.version_info[:2])' 2>/dev/null) == \
            $("$PYTHON" -c 'import sys; print(sys.version_info[:2])') ]]
}

# ansible-test makes its venvs without pip and fetches get-pip.py from a host that
# is unreachable here; give it the offline stand-in it looks for in its cache.
ensure_ansible_test_pip() {
    local src version cache
    cache=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.ansible/test/cache
    src=$(echo "$VENV"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
    version=$(sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" "$src")
    if [[ -z $version ]]; then
        echo "bootstrap: cannot find the pip version ansible-test bootstraps (in $src)" >&2
        return 1
    fi
    mkdir -p "$cache"
    if ! compgen -G "$cache/pip-$version-*.whl" >/dev/null; then
        run pip-download "$VENV/bin/python" -m pip download --no-deps --only-binary=:all: \
            "pip==$version" -d "$cache"
    fi
    cmp -s scripts/ansible_test_get_pip.py "$cache/get_pip_${version//./_}.py" ||
        cp scripts/ansible_test_get_pip.py "$cache/get_pip_${version//./_}.py"
}

if [[ ${BOOTSTRAP_FORCE:-0} != 1 && -f $stamp && $(<"$stamp") == "$key" ]] &&
    venv_usable && [[ -x $VENV/bin/ansible-test ]]; then
    ensure_ansible_test_pip
    bash scripts/collection-path.sh >/dev/null
    say "up to date ($((SECONDS - t0)) s)"
    exit 0
fi

rm -f "$stamp"
if ! venv_usable; then
    say "creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    rm -rf "$VENV"
    run venv "$PYTHON" -m venv "$VENV"
fi
say "installing requirements/test.txt into .venv"
run pip "$VENV/bin/python" -m pip install --no-input -r requirements/test.txt
run pip-check "$VENV/bin/python" -m pip check
ensure_ansible_test_pip

for h in "${hooks[@]}"; do
    say "hook $h"
    run "hook-$(basename "$h" .sh)" bash "$h" "$profile"
done

bash scripts/collection-path.sh >/dev/null
echo "$key" >"$stamp"
say "done ($((SECONDS - t0)) s)"
