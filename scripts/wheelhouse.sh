#!/usr/bin/env bash
# Build the wheelhouse the agent role installs from when nodes cannot (or should
# not) reach PyPI: every wheel of requirements/node.txt and its dependencies, for
# the nodes' Python (Debian 12: CPython 3.11, glibc 2.36, x86_64), downloaded on
# the controller with `pip download --only-binary=:all:`.
#
#   scripts/wheelhouse.sh [REQUIREMENTS] [DEST]
#       REQUIREMENTS  default requirements/node.txt
#       DEST          default .cache/wheelhouse
#
# Environment (optional): NODEKEEP_NODE_PYTHON (default 3.11), NODEKEEP_NODE_ARCH
# (default x86_64), NODEKEEP_NODE_GLIBC (default 2.36: newest manylinux tag
# accepted), NODEKEEP_WHEELHOUSE_FORCE=1 to download again.
#
# A second run with the same inputs returns at once: DEST/.stamp holds a hash of
# the requirements and of the target. The wheelhouse is replaced atomically (built
# beside DEST, then renamed), so a failed download never leaves a partial one.
# DEST/requirements.txt is a copy of the requirements it was built from, so a node
# installs with:
#   pip install --no-index --find-links DEST -r DEST/requirements.txt
# DEST.tar holds the same files (reproducible tar: sorted, mtime 0, owner root) for
# shipping to nodes in one transfer (e.g. ansible.builtin.unarchive).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQ=${1:-$ROOT/requirements/node.txt}
DEST=${2:-$ROOT/.cache/wheelhouse}
PY=${NODEKEEP_NODE_PYTHON:-3.11}
ARCH=${NODEKEEP_NODE_ARCH:-x86_64}
GLIBC=${NODEKEEP_NODE_GLIBC:-2.36}
PYTHON=${PYTHON:-python3}

log() { printf '[wheelhouse] %s\n' "$*" >&2; }

t0=$(date +%s%N)
elapsed() { local ms=$((($(date +%s%N) - t0) / 1000000)); printf '%d.%01d s' $((ms / 1000)) $((ms % 1000 / 100)); }

[ -f "$REQ" ] || { log "ERROR: $REQ not found"; exit 1; }

# pip does not expand manylinux tags from --platform: list every accepted one,
# newest first (manylinux_2_GLIBC down to manylinux_2_5 and the legacy aliases).
platforms=()
minor=${GLIBC#2.}
for ((m = minor; m >= 5; m--)); do platforms+=(--platform "manylinux_2_${m}_${ARCH}"); done
platforms+=(--platform "manylinux2014_${ARCH}" --platform "manylinux2010_${ARCH}" --platform "manylinux1_${ARCH}")
abi=cp${PY/./}

stamp=$(
    {
        cat "$REQ"
        echo "python=$PY arch=$ARCH glibc=$GLIBC"
        sed -n '/^platforms=/,/^abi=/p' "${BASH_SOURCE[0]}"
    } | sha256sum | cut -c1-16
)
make_tar() {
    tar -C "$DEST" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        --exclude=./.stamp -cf "$DEST.tar.tmp" . && mv "$DEST.tar.tmp" "$DEST.tar"
}

if [ "${NODEKEEP_WHEELHOUSE_FORCE:-0}" != 1 ] && [ -f "$DEST/.stamp" ] && [ "$(cat "$DEST/.stamp")" = "$stamp" ]; then
    [ "$DEST.tar" -nt "$DEST/.stamp" ] || make_tar
    log "up to date: $DEST ($(find "$DEST" -name '*.whl' | wc -l) wheels, $(elapsed))"
    exit 0
fi

mkdir -p "$(dirname "$DEST")"
tmp=$(mktemp -d "$DEST.new.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "pip download -r $REQ for CPython $PY manylinux (glibc <= $GLIBC) $ARCH"
"$PYTHON" -m pip download --quiet --no-input --disable-pip-version-check \
    --only-binary=:all: --implementation cp --python-version "$PY" --abi "$abi" \
    "${platforms[@]}" -d "$tmp" -r "$REQ" 2> >(grep -v 'is ignored: it is neither' >&2)
cp "$REQ" "$tmp/requirements.txt"
echo "$stamp" >"$tmp/.stamp"
chmod -R a+rX "$tmp"
rm -rf "$DEST.old"
[ -e "$DEST" ] && mv "$DEST" "$DEST.old"
mv "$tmp" "$DEST"
rm -rf "$DEST.old"
trap - EXIT
make_tar
log "built $DEST: $(find "$DEST" -name '*.whl' | wc -l) wheels, $(du -sh "$DEST" | cut -f1) ($(elapsed))"
