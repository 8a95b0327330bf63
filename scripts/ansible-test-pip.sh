#!/usr/bin/env bash
# scripts/ansible-test-pip.sh VENV: give the ansible-test of VENV the offline get-pip.py stand-in
# (scripts/ansible_test_get_pip.py) and the pip wheel (from PyPI) it bootstraps its venvs with, in
# ~/.ansible/test/cache. Each ansible-core release pins its own pip (2.16: 23.1.2, 2.19: 24.2), so
# `make test-matrix` runs this for every version's venv; scripts/bootstrap.sh does the same for .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$1
cache=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}/.ansible/test/cache
src=$(echo "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
version=$(sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" "$src" | head -1)
if [[ -z $version ]]; then
    echo "ansible-test-pip: cannot find the pip version ansible-test bootstraps (in $src)" >&2
    exit 1
fi
mkdir -p "$cache"
if ! compgen -G "$cache/pip-$version-*.whl" >/dev/null; then
    "$venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: "pip==$version" -d "$cache"
fi
cmp -s "$ROOT/scripts/ansible_test_get_pip.py" "$cache/get_pip_${version//./_}.py" ||
    cp "$ROOT/scripts/ansible_test_get_pip.py" "$cache/get_pip_${version//./_}.py"
