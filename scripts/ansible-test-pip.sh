#!/usr/bin/env bash
# scripts/ansible-test-pip.sh VENV: give the ansible-test of VENV the offline get-pip.py stand-in
# (scripts/ansible_test_get_pip.py) and the pip (setuptools, wheel) wheels from PyPI it bootstraps its venvs with, in
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
# 2.16 to 2.18 also install setuptools and wheel at pinned versions into each venv (2.19: pip alone).
for pkg in pip setuptools wheel; do
    want=$(sed -n "s/^ *$pkg='\([0-9.]*\)',.*/\1/p" "$src" | head -1)
    [[ -n $want ]] || continue
    if ! compgen -G "$cache/$pkg-$want-*.whl" >/dev/null; then
        "$venv/bin/python" -m pip download --quiet --no-deps --only-binary=:all: "$pkg==$want" -d "$cache"
    fi
done
cmp -s "$ROOT/scripts/ansible_test_get_pip.py" "$cache/get_pip_${version//./_}.py" ||
    cp "$ROOT/scripts/ansible_test_get_pip.py" "$cache/get_pip_${version//./_}.py"
