#!/usr/bin/env bash
# Make this checkout visible to Ansible as the collection nodekeep.backup.
#
#   scripts/collection-path.sh             ensure the symlink
#         build/collections/ansible_collections/nodekeep/backup -> the checkout
#         (for ansible-playbook, ansible-doc, molecule and pytest)
#   scripts/collection-path.sh --env       the same, then print shell exports:
#         eval "$(scripts/collection-path.sh --env)"
#   scripts/collection-path.sh --sanity    refresh a real copy of the working tree
#         (git-tracked and untracked-but-not-ignored files) at
#         build/sanity/ansible_collections/nodekeep/backup and print its path.
#         ansible-test needs a real ansible_collections/NS/NAME directory: it
#         resolves the current directory, so a symlinked root is not recognised.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NS=nodekeep
NAME=backup
COLLECTIONS=$ROOT/build/collections
LINK=$COLLECTIONS/ansible_collections/$NS/$NAME
SANITY=$ROOT/build/sanity/ansible_collections/$NS/$NAME

ensure_link() {
    mkdir -p "$(dirname "$LINK")"
    # Relative, so the checkout can be moved or copied.
    if [[ $(readlink "$LINK" 2>/dev/null) != ../../../.. ]]; then
        rm -rf "$LINK"
        ln -s ../../../.. "$LINK"
    fi
}

list_files() { # NUL-separated paths relative to ROOT of the files to copy
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        # Tracked and new files, without ignored ones or ones deleted in the tree.
        git -C "$ROOT" ls-files -z --cached --others --exclude-standard |
            while IFS= read -r -d '' f; do
                [[ -e $ROOT/$f || -L $ROOT/$f ]] && printf '%s\0' "$f"
            done
    else
        (cd "$ROOT" && find . \( -path ./.git -o -path ./.venv -o -path ./.cache -o -path ./build \
            -o -path ./tests/output -o -path ./benchmarks/results -o -name __pycache__ \
            -o -name .pytest_cache -o -name .ruff_cache \) -prune -o \( -type f -o -type l \) -print0 |
            sed -z 's|^\./||')
    fi
}

sync_sanity_copy() {
    # Start clean, but keep tests/output (ansible-test's reusable delegation venv).
    mkdir -p "$SANITY/tests"
    find "$SANITY" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
    find "$SANITY/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} +
    list_files | (cd "$ROOT" && tar -c --null --no-recursion -T - -f -) | tar -x -C "$SANITY" -f -
    # The copy lies in the checkout's ignored build/; without a repository of its
    # own, ansible-test would list files through the outer one and find none.
    git -C "$SANITY" init -q
    echo "$SANITY"
}

case ${1:-} in
    "") ensure_link ;;
    --env)
        ensure_link
        printf 'export ANSIBLE_COLLECTIONS_PATH=%q\n' "$COLLECTIONS"
        # shellcheck disable=SC2016 # ${PYTHONPATH...} is for the shell that evals this
        printf 'export PYTHONPATH=%q${PYTHONPATH:+:$PYTHONPATH}\n' "$COLLECTIONS"
        ;;
    --sanity) sync_sanity_copy ;;
    *) echo "usage: $0 [--env|--sanity]" >&2; exit 2 ;;
esac
