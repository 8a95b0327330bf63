#!/usr/bin/env bash
# Extract other people's collections from the `ansible` community wheel on PyPI (Galaxy is not
# reachable here) into CACHE/collections (an ANSIBLE_COLLECTIONS_PATH entry):
#
#   scripts/ansible-collections.sh awx.awx containers.podman ...
#
# The wheel (about 54 MB) is downloaded once into CACHE/downloads; only the named collections are
# unpacked (a few MB instead of about 470 MB). A collection already extracted from the same wheel
# version is left alone, so a second run takes milliseconds. Used by `make lint` (awx.awx, for
# awx/configure.yml) and scripts/setup-podman.sh (Molecule's containers.podman, ansible.posix).
#
# Environment (optional): NODEKEEP_CACHE (default <repo>/.cache), NODEKEEP_ANSIBLE_VERSION
# (default 12.3.0).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${NODEKEEP_CACHE:-$ROOT/.cache}
ANSIBLE_VERSION=${NODEKEEP_ANSIBLE_VERSION:-12.3.0}
PIP_PYTHON=python3
[ -x "$ROOT/.venv/bin/python" ] && PIP_PYTHON=$ROOT/.venv/bin/python
[ $# -gt 0 ] || { echo "usage: $0 NAMESPACE.NAME..." >&2; exit 2; }

dest=$CACHE/collections
missing=()
for name in "$@"; do
    [ -f "$dest/ansible_collections/${name//.//}/.nodekeep-from-ansible-$ANSIBLE_VERSION" ] || missing+=("$name")
done
[ ${#missing[@]} -gt 0 ] || exit 0

mkdir -p "$CACHE/downloads" "$dest"
exec 7>"$CACHE/ansible-collections.lock"
flock 7
wheel=$CACHE/downloads/ansible-$ANSIBLE_VERSION-py3-none-any.whl
if [ ! -f "$wheel" ]; then
    echo "ansible-collections: pip download ansible==$ANSIBLE_VERSION (only ${missing[*]} are kept)" >&2
    "$PIP_PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --ignore-requires-python \
        --disable-pip-version-check -d "$CACHE/downloads" "ansible==$ANSIBLE_VERSION" 2> >(grep -v 'is ignored' >&2)
fi
"$PIP_PYTHON" - "$wheel" "$dest" "$ANSIBLE_VERSION" "${missing[@]}" <<'PY'
import shutil, sys, zipfile
from pathlib import Path
wheel, dest, version, names = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(wheel) as z:
    every = z.namelist()
    for name in names:
        prefix = "ansible_collections/" + name.replace(".", "/") + "/"
        members = [m for m in every if m.startswith(prefix)]
        if not members:
            sys.exit("ansible-collections: %s is not in %s" % (name, wheel))
        shutil.rmtree(dest / prefix, ignore_errors=True)
        z.extractall(dest, members)
        (dest / prefix / (".nodekeep-from-ansible-" + version)).touch()
        print("ansible-collections: %s extracted into %s" % (name, dest), file=sys.stderr)
PY
