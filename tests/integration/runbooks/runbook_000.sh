#!/usr/bin/env bash
# Runbook 000's own shell procedure for the data of an Animica node, as make drill-runbooks runs it
# beside the drill of the same node (tests/integration/runbooks/drilllab.py):
#
#   backup  WORK NODE_DB SERVICES_DB ROCKSDB DA_STORE PEERSTORE CONFIG   (not timed)
#       4.1 sqlite3 ".timeout 5000" ".backup", PRAGMA integrity_check on the copy;
#       4.2 option B rsync -a of the RocksDB (the DB is closed, as after `systemctl stop`);
#       4.3 the DA store, the peerstore and the configs as file trees;
#       each sealed with zstd | age to RECIPIENT (4.4 / 8: client-side age encryption) and its
#       SHA-256 recorded in checksums.sha256 (7: "checksums registry per backup epoch").
#   restore WORK                                                          (timed by the caller)
#       7 sha256sum -c of the registry; 5.1 age -d | zstd -d of each SQLite copy and PRAGMA
#       integrity_check (expect ok); 5.2 the RocksDB unpacked and its column families listed
#       (ldb list_column_families: "verify column families open"); 5.3 the DA store unpacked;
#       the peerstore and configs unpacked. Prints "STAGE NAME SECONDS" per step group.
#
# Environment: RECIPIENT (age public key) for backup, IDENTITY (age identity file) for restore.
set -euo pipefail
mode=$1 work=$2
shift 2

now() { date +%s%N; }
stage() { local ms=$((($(now) - $2) / 1000000)); printf 'STAGE %s %d.%03d\n' "$1" $((ms / 1000)) $((ms % 1000)); }
seal() { zstd -q -T0 -3 -c | age -r "$RECIPIENT"; }
open() { age -d -i "$IDENTITY" "$1" | zstd -q -d -c; }

case $mode in
backup)
    node_db=$1 services_db=$2 rocksdb=$3 da=$4 peers=$5 config=$6
    mkdir -p "$work/tmp" "$work/sealed"
    for pair in "node:$node_db" "services:$services_db"; do
        name=${pair%%:*} db=${pair#*:}
        sqlite3 "$db" ".timeout 5000" ".backup '$work/tmp/$name.sqlite'"
        sqlite3 "$work/tmp/$name.sqlite" "PRAGMA integrity_check;" | grep -qx ok
        seal <"$work/tmp/$name.sqlite" >"$work/sealed/$name.sqlite.zst.age"
        shred -u "$work/tmp/$name.sqlite"
    done
    rsync -a --delete "$rocksdb/" "$work/tmp/rocksdb_backup/"
    tar -C "$work/tmp/rocksdb_backup" -cf - . | seal >"$work/sealed/rocksdb.tar.zst.age"
    rm -rf "$work/tmp/rocksdb_backup"
    tar -C "$da" --exclude='*.tmp' --exclude=./tmp -cf - . | seal >"$work/sealed/da.tar.zst.age"
    tar -C "$peers" -cf - . | seal >"$work/sealed/p2p.tar.zst.age"
    tar -C "$config" -cf - . | seal >"$work/sealed/config.tar.zst.age"
    (cd "$work/sealed" && sha256sum -- *.age >../checksums.sha256)
    ;;
restore)
    restore=$work/restore
    rm -rf "$restore"
    mkdir -p "$restore"/{rocksdb,da,p2p,config}
    t=$(now)
    (cd "$work/sealed" && sha256sum --quiet -c ../checksums.sha256)
    stage checksums "$t"
    t=$(now)
    # two at a time on this 2-core machine (Troubleshooting: "parallelize transfer")
    pids=()
    open "$work/sealed/node.sqlite.zst.age" >"$restore/animica.db" &
    pids+=($!)
    open "$work/sealed/rocksdb.tar.zst.age" | tar -C "$restore/rocksdb" -xf - &
    pids+=($!)
    for pid in "${pids[@]}"; do wait "$pid"; done
    pids=()
    open "$work/sealed/da.tar.zst.age" | tar -C "$restore/da" -xf - &
    pids+=($!)
    open "$work/sealed/services.sqlite.zst.age" >"$restore/app.db"
    open "$work/sealed/p2p.tar.zst.age" | tar -C "$restore/p2p" -xf -
    open "$work/sealed/config.tar.zst.age" | tar -C "$restore/config" -xf -
    for pid in "${pids[@]}"; do wait "$pid"; done
    stage restore "$t"
    t=$(now)
    sqlite3 "$restore/animica.db" "PRAGMA integrity_check;" | grep -qx ok
    sqlite3 "$restore/app.db" "PRAGMA integrity_check;" | grep -qx ok
    ldb --db="$restore/rocksdb" list_column_families | grep -q default
    stage check "$t"
    ;;
*)
    echo "usage: $0 backup|restore WORK ..." >&2
    exit 2
    ;;
esac
