"""Helpers of the runbook round trips (imported by conftest.py and the tests).

``inventory_assets(system, root, overrides=None)``
    the ``nodekeep_assets`` of ``inventories/SYSTEM/group_vars/nodekeep_nodes.yml``
    with every absolute path option mirrored under ``root`` (``/var/lib/x`` ->
    ``ROOT/var/lib/x``), ``files`` state kept under ``root`` too, and per-asset
    ``overrides`` merged in (a value of None removes the option): the one helper
    all five systems use, so each test backs up exactly its inventory's list.
``ready(assets)``
    ``(assets whose type is registered, names skipped)``: an asset whose type has
    not landed yet is left out (and reported), the rest of the node still runs.
``tree_state(path)``
    ``{relative path: (kind, mode, uid, gid, size, sha256 or link, mtime_ns)}`` of a tree.
``SqliteWriter(path)``
    a separate process (stdlib sqlite3) committing two rows per transaction to
    table ``ledger(id, txn, payload)`` until ``stop()``.
``sqlite_snapshots(dbs)`` / ``assert_sqlite_snapshots(dbs, live)``
    the live rows of several DBs ``{name: path}`` before a wipe / each restored DB holds
    exactly its live rows up to one committed transaction.
``make_rocksdb(path, batches)``
    a RocksDB written by rocksdict in a subprocess (four column families), closed.
``read_rocksdb(path)`` is in ``tests/integration/integration_helpers.py`` (shared with the rocksdb suite).
"""

from __future__ import annotations

import copy
import hashlib
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import registry as engine_assets
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

REPO_ROOT = Path(__file__).resolve().parents[3]


#: asset options that hold absolute paths on the node
PATH_OPTIONS = ("path", "snapshot", "checkpoint_dir", "copy_dir", "state_dir", "passfile", "service_file", "bin_dir")


def inventory_vars(system: str) -> dict:
    with open(REPO_ROOT / "inventories" / system / "group_vars" / "nodekeep_nodes.yml") as handle:
        return yaml.safe_load(handle)


def inventory_assets(system: str, root: Path, overrides: dict | None = None) -> list[dict]:
    assets = copy.deepcopy(inventory_vars(system)["nodekeep_assets"])
    result = []
    for asset in assets:
        for option in PATH_OPTIONS:
            value = asset.get(option)
            if isinstance(value, str) and value.startswith("/"):
                asset[option] = str(root) + value
        if asset["type"] == "files":
            asset["state_dir"] = str(root / "var/lib/nodekeep/files")
        for key, value in (overrides or {}).get(asset["name"], {}).items():
            if value is None:
                asset.pop(key, None)
            else:
                asset[key] = value
        result.append(asset)
    return result


def ready(assets: list[dict]) -> tuple[list[dict], list[str]]:
    """Assets whose type the engine has (registered or registrable), and the names left out."""
    kept, skipped = [], []
    for asset in assets:
        try:
            engine_assets.asset_type(asset["type"])
        except NodekeepError:
            skipped.append("%s (%s)" % (asset["name"], asset["type"]))
            continue
        kept.append(asset)
    return kept, skipped


def tree_state(path) -> dict:
    path = str(path)
    state = {}
    for parent, dirs, files in os.walk(path):
        for name in sorted(dirs + files):
            full = os.path.join(parent, name)
            rel = os.path.relpath(full, path)
            info = os.lstat(full)
            if stat.S_ISLNK(info.st_mode):
                state[rel] = ("link", None, info.st_uid, info.st_gid, None, os.readlink(full), None)
            elif stat.S_ISDIR(info.st_mode):
                state[rel] = ("dir", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, None, None, None)
            else:
                with open(full, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                state[rel] = (
                    "file",
                    stat.S_IMODE(info.st_mode),
                    info.st_uid,
                    info.st_gid,
                    info.st_size,
                    digest,
                    info.st_mtime_ns,
                )
    return state


def write_file(path: Path, data: bytes | str, mode: int = 0o644, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    path.chmod(mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def content_store(root: Path, count: int, seed: str, size: int = 700) -> list[str]:
    """A content-addressed tree (``ab/abcdef...``) of ``count`` files, with an index and a symlink."""
    names = []
    for i in range(count):
        data = hashlib.sha256(("%s-%d" % (seed, i)).encode()).digest() * (size // 32 + i % 7)
        name = hashlib.sha256(data).hexdigest()
        write_file(root / name[:2] / name, data, 0o640 if i % 3 else 0o600, mtime=1_700_000_000 + i * 37.25)
        names.append(name)
    write_file(root / "index.json", '{"objects": %d}\n' % count, 0o644, mtime=1_700_100_000)
    (root / "latest").symlink_to("index.json")
    return names


def age_key(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    path.chmod(0o600)
    return path


def ssh_key(path: Path, comment: str = "node") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True, capture_output=True
    )
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------
# SQLite: a live database with a writer process
# --------------------------------------------------------------------------

_SQLITE_WRITER = textwrap.dedent(
    """
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
    db.execute("PRAGMA busy_timeout = 30000")
    txn = db.execute("SELECT coalesce(max(txn), 0) FROM ledger").fetchone()[0]
    status = sys.argv[2]
    while True:
        txn += 1
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO ledger (txn, payload) VALUES (?, randomblob(200))", [(txn,), (txn,)])
        db.execute("COMMIT")
        with open(status, "w") as handle:
            handle.write(str(txn))
        time.sleep(0.003)
    """
)


def make_sqlite(path: Path, rows: int = 2000, journal_mode: str = "wal") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    script = (
        "PRAGMA journal_mode=%s;"
        "CREATE TABLE ledger (id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, payload BLOB);"
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < %d)"
        " INSERT INTO ledger (txn, payload) SELECT (i + 1) / 2, randomblob(300) FROM n;" % (journal_mode, rows)
    )
    subprocess.run(["sqlite3", str(path)], input=script, text=True, check=True, capture_output=True)
    return path


class SqliteWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.status = Path(str(path) + ".writer-status")
        self.proc = subprocess.Popen([sys.executable, "-c", _SQLITE_WRITER, str(path), str(self.status)])

    def committed(self) -> int:
        try:
            return int(self.status.read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.committed()
        while self.committed() < start + count:
            assert time.monotonic() < deadline, "the SQLite writer did not commit"
            assert self.proc.poll() is None, "the SQLite writer died"
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def sqlite_rows(path) -> dict:
    """``{id: (txn, payload)}`` read with the stdlib in a child process (never both libraries in one process)."""
    # mode=rw (never creates the file), not mode=ro: a writer stopped inside a transaction leaves a
    # hot rollback journal (or a WAL to recover) that only a connection allowed to write can roll
    # back (SQLITE_READONLY_ROLLBACK otherwise). Only SELECT is executed.
    code = (
        "import json, sqlite3, sys\n"
        "db = sqlite3.connect('file:' + sys.argv[1] + '?mode=rw', uri=True, timeout=30)\n"
        "print(json.dumps([[i, t, p.hex()] for i, t, p in db.execute('SELECT id, txn, payload FROM ledger')]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, "reading %s failed: %s" % (path, out.stderr.strip()[-2000:])
    import json

    return {row[0]: (row[1], row[2]) for row in json.loads(out.stdout)}


def assert_sqlite_snapshot(restored: Path, live_rows: dict) -> int:
    """The restored DB is exactly the live DB's rows up to one committed transaction; returns that txn."""
    rows = sqlite_rows(restored)
    assert rows, "the restored database is empty"
    last = max(txn for txn, _payload in rows.values())
    expected = {key: value for key, value in live_rows.items() if value[0] <= last}
    assert rows == expected
    assert sum(1 for txn, _p in rows.values() if txn == last) == 2, "a transaction was torn"
    return last


def sqlite_snapshots(dbs: dict) -> dict:
    """``{name: sqlite_rows(path)}`` of the DBs ``{name: path}`` (their live rows, before a wipe)."""
    return {name: sqlite_rows(path) for name, path in dbs.items()}


def assert_sqlite_snapshots(dbs: dict, live: dict) -> None:
    """``assert_sqlite_snapshot`` of each restored DB of ``{name: path}`` against ``live[name]``."""
    for name, path in dbs.items():
        assert_sqlite_snapshot(path, live[name])


# --------------------------------------------------------------------------
# RocksDB: written by rocksdict in a subprocess
# --------------------------------------------------------------------------

_ROCKS_WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from rocksdict import Options, Rdict, WriteBatch
    path, batches = sys.argv[1], int(sys.argv[2])
    families = ["accounts", "blocks", "meta"]
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    db = Rdict(path, options, column_families={name: Options(raw_mode=True) for name in families})
    handles = {"default": db.get_column_family_handle("default")}
    handles.update({name: db.get_column_family_handle(name) for name in families})
    for n in range(1, batches + 1):
        batch = WriteBatch(raw_mode=True)
        for family, handle in handles.items():
            value = hashlib.sha256(("%s:%d" % (family, n)).encode()).digest() * 4
            batch.put(b"k%08d" % n, value, handle)
            batch.put(b"counter", n.to_bytes(8, "big"), handle)
        db.write(batch)
        if n % 500 == 0:
            db.flush()
    db.close()
    """
)


def make_rocksdb(path: Path, batches: int = 1500) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-c", _ROCKS_WRITER, str(path), str(batches)], check=True, capture_output=True)
    return path
