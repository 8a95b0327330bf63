#!/usr/bin/env bash
# Prepare this machine for Molecule with rootful podman, without any container
# registry: install podman from Debian, configure it, build the node images from
# Debian's mirror, and extract the Ansible collections Molecule needs from the
# `ansible` community wheel on PyPI (Galaxy is not reachable).
#
# Idempotent and non-interactive; a second run only checks and takes a few
# seconds. Every step prints how long it took.
#
# Environment (all optional):
#   NODEKEEP_CACHE              cache directory (default: <repo>/.cache)
#   NODEKEEP_DEBIAN_MIRROR      Debian mirror URL (default: read from apt's sources)
#   NODEKEEP_DEBIAN_SECURITY    Debian security mirror URL (default: read from apt's sources)
#   NODEKEEP_ANSIBLE_VERSION    `ansible` wheel to take collections from (default: 12.3.0)
#   NODEKEEP_COLLECTIONS        collections to extract (default: "containers.podman ansible.posix")
#   NODEKEEP_FORCE_REBUILD=1    rebuild both images even if their recipe is unchanged
#
# Must run as root: Molecule uses rootful podman here (no subuid set-up, no slirp4netns).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${NODEKEEP_CACHE:-$ROOT/.cache}
SUITE=bookworm
BASE_IMAGE=localhost/nodekeep-debian:$SUITE
SYSTEMD_IMAGE=localhost/nodekeep-systemd:$SUITE
ANSIBLE_VERSION=${NODEKEEP_ANSIBLE_VERSION:-12.3.0}
COLLECTIONS=${NODEKEEP_COLLECTIONS:-containers.podman ansible.posix}

# Host packages. uidmap/slirp4netns are for rootless podman only and are not needed.
HOST_PACKAGES=(podman runc conmon netavark aardvark-dns iptables mmdebstrap)
# What every test node has (the agent role needs python3-venv for its virtualenv).
BASE_PACKAGES=(python3 python3-apt python3-venv sudo ca-certificates procps iproute2 sqlite3 zstd age)
SYSTEMD_PACKAGES=(systemd systemd-sysv dbus)

export DEBIAN_FRONTEND=noninteractive
export LC_ALL=C.UTF-8

log() { printf '[setup-podman] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

declare -a SUMMARY=()
# step NAME FUNCTION: run FUNCTION, record its wall time and its one-word outcome
# (the function sets STEP_RESULT, e.g. "skipped" or "built").
step() {
    local name=$1 fn=$2 t0 ms
    STEP_RESULT=ok
    t0=$(date +%s%N)
    "$fn"
    ms=$((($(date +%s%N) - t0) / 1000000))
    SUMMARY+=("$(printf '%-14s %4d.%01d s  %s' "$name" $((ms / 1000)) $((ms % 1000 / 100)) "$STEP_RESULT")")
}

# ---------------------------------------------------------------- packages
package_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

install_packages() {
    local missing=() p
    for p in "$@"; do package_installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 1
    log "apt-get install ${missing[*]}"
    apt-get -q -o Acquire::Retries=3 update >/dev/null
    apt-get -q -y -o Acquire::Retries=3 install --no-install-recommends "${missing[@]}" >/dev/null
    return 0
}

# fuse-overlayfs is only needed when /var/lib/containers sits on a filesystem that
# cannot be an overlay upper layer (e.g. when this runs inside a container).
storage_needs_fuse() {
    local dir=/var/lib/containers
    while [ ! -e "$dir" ]; do dir=$(dirname "$dir"); done
    case "$(stat -f -c %T "$dir")" in overlayfs) return 0 ;; esac
    return 1
}

step_packages() {
    local pkgs=("${HOST_PACKAGES[@]}")
    storage_needs_fuse && pkgs+=(fuse-overlayfs)
    if install_packages "${pkgs[@]}"; then STEP_RESULT=installed; else STEP_RESULT=present; fi
}

# ---------------------------------------------------------------- containers.conf
# Podman 4.3.1 here needs: default ulimits no higher than our hard limits (else
# "setrlimit RLIMIT_NOFILE: Operation not permitted"), runc (crun 1.8.1 refuses the
# hybrid cgroup layout), cgroupfs (no systemd on the host) and file events (no journald).
ulimit_value() {
    # ulimit_value KIND: hard limit as a number
    local v
    v=$(ulimit -H "$1")
    if [ "$v" = unlimited ]; then
        case "$1" in
            -n) v=$(cat /proc/sys/fs/nr_open) ;;
            -u) v=$(cat /proc/sys/kernel/pid_max) ;;
        esac
    fi
    echo "$v"
}

step_config() {
    local nofile nproc pid_max
    nofile=$(ulimit_value -n)
    nproc=$(ulimit_value -u)
    pid_max=$(cat /proc/sys/kernel/pid_max)
    [ "$nproc" -gt "$pid_max" ] && nproc=$pid_max
    mkdir -p /etc/containers
    local fuse=0
    storage_needs_fuse && fuse=1
    # A line-based TOML edit: set only our keys, keep everything else (comments too).
    STEP_RESULT=$(python3 - "$nofile" "$nproc" "$fuse" <<'PY'
import os, re, sys

nofile, nproc, fuse = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

def edit(path, wanted, defaults=None):
    """wanted/defaults: {section: {key: toml_value}}; defaults only fill missing keys."""
    defaults = defaults or {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        lines = []
    original = list(lines)
    for table in list(wanted) + [t for t in defaults if t not in wanted]:
        keys = dict(defaults.get(table, {}))
        keys.update(wanted.get(table, {}))
        header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]\s*(#.*)?$")
        start = next((i for i, l in enumerate(lines) if header.match(l)), None)
        if start is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines.append(f"[{table}]")
            start = len(lines) - 1
        end = next((i for i in range(start + 1, len(lines))
                    if re.match(r"^\s*\[", lines[i])), len(lines))
        for key, value in keys.items():
            pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
            idx = next((i for i in range(start + 1, end) if pat.match(lines[i])), None)
            if idx is None:
                lines.insert(start + 1, f"{key} = {value}")
                end += 1
            elif key in wanted.get(table, {}):
                # assume single-line values (true for every key we manage)
                lines[idx] = f"{key} = {value}"
    if lines == original:
        return False
    tmp = path + ".nodekeep-tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return True

changed = edit(
    "/etc/containers/containers.conf",
    {
        "containers": {"default_ulimits": f'["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]'},
        "engine": {"runtime": '"runc"', "cgroup_manager": '"cgroupfs"', "events_logger": '"file"'},
    },
    defaults={"network": {"network_backend": '"netavark"'}},
)
if fuse:
    changed |= edit(
        "/etc/containers/storage.conf",
        {"storage": {"driver": '"overlay"'},
         "storage.options.overlay": {"mount_program": '"/usr/bin/fuse-overlayfs"'}},
        defaults={"storage": {"graphroot": '"/var/lib/containers/storage"',
                              "runroot": '"/run/containers/storage"'}},
    )
print("written" if changed else "unchanged")
PY
)
    log "containers.conf: nofile=$nofile nproc=$nproc ($STEP_RESULT)"
    local info
    info=$(podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' 2>&1) ||
        die "podman does not accept its configuration: $info"
    [ "$info" = "runc cgroupfs" ] ||
        die "podman uses '$info', expected 'runc cgroupfs': check /etc/containers/containers.conf and ~/.config/containers/"
}

# ---------------------------------------------------------------- images
# The Debian mirror lines for the node images: the same archive as the host's apt.
debian_uri() {
    # debian_uri SUITE-SUFFIX: first URI serving that suite in the host's apt sources
    local suite=$1
    python3 - "$suite" <<'PY'
import glob, sys
suite = sys.argv[1]
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.startswith((" ", "#")):
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.split()
        if suite in fields.get("suites", []) and "deb" in fields.get("types", ["deb"]):
            print(fields["uris"][0]); sys.exit(0)
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        for line in open(path):
            parts = line.split("#")[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                parts = [p for p in parts if not p.startswith("[")]
                if parts[2] == suite:
                    print(parts[1]); sys.exit(0)
    except FileNotFoundError:
        pass
PY
}

mirror_lines() {
    local main security
    main=${NODEKEEP_DEBIAN_MIRROR:-$(debian_uri "$SUITE")}
    main=${main:-http://deb.debian.org/debian}
    security=${NODEKEEP_DEBIAN_SECURITY:-$(debian_uri "$SUITE-security")}
    security=${security:-http://deb.debian.org/debian-security}
    printf 'deb %s %s main\n' "$main" "$SUITE" "$main" "$SUITE-updates" "$security" "$SUITE-security"
}

image_label() {
    # image_label IMAGE: the recipe hash the image was built from ("" if no image)
    podman image inspect --format '{{index .Labels "nodekeep.recipe"}}' "$1" 2>/dev/null || true
}

build_base_image() {
    # mmdebstrap writes a tarball to stdout; apt lists are emptied by mmdebstrap and
    # dated 1970 so that apt's cache_valid_time inside the node triggers an update.
    local recipe=$1 mirrors=()
    mapfile -t mirrors < <(mirror_lines)
    # shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap's hook shell
    mmdebstrap --quiet --variant=minbase \
        --include="$(IFS=,; echo "${BASE_PACKAGES[*]}")" \
        --aptopt='Acquire::Retries "3"' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --customize-hook='touch -d @0 "$1/var/lib/apt/lists"' \
        --customize-hook='rm -f "$1/etc/hostname" "$1/etc/resolv.conf"' \
        "$SUITE" - "${mirrors[@]}" |
        podman import --quiet \
            --change 'CMD ["/bin/bash"]' \
            --change "LABEL nodekeep.recipe=$recipe" \
            - "$BASE_IMAGE-partial" >/dev/null
    # Only a complete build gets the real name (pipefail: mmdebstrap must succeed too).
    podman tag "$BASE_IMAGE-partial" "$BASE_IMAGE"
    podman untag "$BASE_IMAGE-partial" "$BASE_IMAGE-partial"
}

systemd_containerfile() {
    cat <<EOF
FROM $BASE_IMAGE
RUN apt-get -q update \\
 && apt-get -q -y install --no-install-recommends ${SYSTEMD_PACKAGES[*]} \\
 && apt-get clean && rm -rf /var/lib/apt/lists/* && touch -d @0 /var/lib/apt/lists \\
 && systemctl mask getty.target console-getty.service systemd-remount-fs.service \\
      dev-hugepages.mount sys-fs-fuse-connections.mount systemd-logind.service \\
 && systemctl set-default multi-user.target
ENV container=podman
STOPSIGNAL SIGRTMIN+3
CMD ["/sbin/init"]
EOF
}

build_systemd_image() {
    local recipe=$1 dir
    dir=$(mktemp -d)
    systemd_containerfile >"$dir/Containerfile"
    # --network=host: the build fetches from Debian's mirror with the host's network.
    podman build --quiet --pull=never --network=host \
        --label "nodekeep.recipe=$recipe" -t "$SYSTEMD_IMAGE" -f "$dir/Containerfile" "$dir" >/dev/null
    rm -rf "$dir"
}

recipe_hash() { sha256sum | cut -c1-16; }

BASE_RECIPE=""
step_base_image() {
    BASE_RECIPE=$( { declare -f build_base_image; printf '%s\n' "${BASE_PACKAGES[@]}"; mirror_lines; echo "$SUITE"; } | recipe_hash)
    if [ "${NODEKEEP_FORCE_REBUILD:-0}" != 1 ] && [ "$(image_label "$BASE_IMAGE")" = "$BASE_RECIPE" ]; then
        STEP_RESULT=up-to-date; return
    fi
    log "building $BASE_IMAGE (recipe $BASE_RECIPE)"
    build_base_image "$BASE_RECIPE"
    STEP_RESULT=built
}

step_systemd_image() {
    local recipe
    recipe=$( { declare -f build_systemd_image; systemd_containerfile; echo "$BASE_RECIPE"; } | recipe_hash)
    if [ "${NODEKEEP_FORCE_REBUILD:-0}" != 1 ] && [ "$(image_label "$SYSTEMD_IMAGE")" = "$recipe" ]; then
        STEP_RESULT=up-to-date; return
    fi
    log "building $SYSTEMD_IMAGE (recipe $recipe)"
    build_systemd_image "$recipe"
    STEP_RESULT=built
}

step_prune() {
    # Rebuilt images leave their predecessors dangling; drop those no container uses.
    local dangling
    dangling=$(podman images --quiet --filter dangling=true)
    if [ -n "$dangling" ]; then
        podman image prune --force >/dev/null 2>&1 || true
        STEP_RESULT=pruned
    else
        STEP_RESULT=nothing
    fi
}

step_check() {
    # One throw-away container proves the runtime, the ulimits and the image work.
    podman run --rm --network=none "$BASE_IMAGE" python3 -c 'import apt, venv' ||
        die "a container from $BASE_IMAGE does not start; see the podman error above"
    STEP_RESULT=ok
}

# ---------------------------------------------------------------- collections
step_collections() {
    local before
    before=$(find "$CACHE/collections" -name '.nodekeep-from-ansible-*' 2>/dev/null | wc -l)
    # shellcheck disable=SC2086 # one argument per collection name
    NODEKEEP_CACHE=$CACHE NODEKEEP_ANSIBLE_VERSION=$ANSIBLE_VERSION bash "$ROOT/scripts/ansible-collections.sh" $COLLECTIONS
    if [ "$(find "$CACHE/collections" -name '.nodekeep-from-ansible-*' | wc -l)" = "$before" ]; then
        STEP_RESULT=present
    else
        STEP_RESULT=extracted
    fi
}

# ---------------------------------------------------------------- main
main() {
    [ "$(id -u)" = 0 ] || die "run as root (Molecule here uses rootful podman)"
    command -v python3 >/dev/null || die "python3 is needed"
    mkdir -p "$CACHE"
    # Two runs at once (e.g. two scenarios started in parallel) must not race.
    mkdir -p /run/lock
    exec 9>"/run/lock/nodekeep-setup-podman.lock"
    flock 9
    local t0=$SECONDS
    step packages step_packages
    step config step_config
    step base-image step_base_image
    step systemd-image step_systemd_image
    step prune step_prune
    step check step_check
    step collections step_collections
    log "summary ($((SECONDS - t0)) s in all):"
    printf '  %s\n' "${SUMMARY[@]}" >&2
}

main "$@"
