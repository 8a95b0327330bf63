"""Shared test set-up: the collection on ``sys.path`` and fixtures with REAL components.

Tests import the engine the way Ansible does, e.g.
``from ansible_collections.nodekeep.backup.plugins.module_utils import seal``.
That needs a directory ``ansible_collections/nodekeep/backup`` on ``sys.path``:
``build/collections/ansible_collections/nodekeep/backup`` is a symlink to the
checkout (made by ``scripts/collection-path.sh``; made here too if missing, so a
plain ``pytest tests/unit`` works after ``make setup``).

Fixtures (all real: the ``age-keygen`` CLI, Ed25519 keys in files, a real
directory repository, real SQLite databases made with the ``sqlite3`` CLI and a
real writer in a separate process):

``age_key`` / ``other_age_key`` (session)
    ``AgeKey(identity_path, identity, recipient)``: an age identity file (0600)
    made by ``age-keygen``, its ``AGE-SECRET-KEY-...`` line and its public key.
``signing_key`` / ``other_signing_key`` (session)
    ``SigningKey(path, key, public_line, pem)``: a node's Ed25519 key in
    OpenSSH format (0600), the loaded private key and its ``ssh-ed25519`` line.
``repository``
    a ``LocalRepository`` in ``tmp_path / "repo"``.
``dbtools`` (session)
    ``dbtools.make(path, rows=4000, payload=1000, journal_mode="wal")`` makes a
    SQLite DB with the ``sqlite3`` CLI (table ``t(id, txn, payload)``, two rows
    per ``txn``, random payloads); ``dbtools.rows(path)`` -> ``{id: (txn, payload)}``
    and ``dbtools.consistency(path)`` read a DB with apsw (the engine's library:
    never open one DB file with both apsw and the stdlib ``sqlite3`` in one process).
``child_env`` (session)
    environment for child Python processes that import the collection.
``live_db``
    a ``LiveDb(path, journal_mode, rows)`` of about 4 MB; journal mode ``wal``
    by default, parametrize with
    ``@pytest.mark.parametrize("live_db", ["wal", "delete"], indirect=True)``.
``writer``
    a separate process (stdlib ``sqlite3``, never in the test process) that
    commits to ``live_db`` continuously: each transaction inserts two rows with
    the next ``txn`` number, so any transaction-consistent state has an even
    row count, ``ids == 1..N`` and exactly two rows per ``txn``. ``commits``,
    ``wait_for(n)`` and ``stop()``; stopped at teardown.
"""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
COLLECTIONS_DIR = REPO_ROOT / "build" / "collections"
_LINK = COLLECTIONS_DIR / "ansible_collections" / "nodekeep" / "backup"
_LINK_TARGET = os.path.join("..", "..", "..", "..")  # relative: the checkout can move


def _ensure_collection_link() -> None:
    if _LINK.is_symlink() and os.readlink(_LINK) == _LINK_TARGET:
        return
    _LINK.parent.mkdir(parents=True, exist_ok=True)
    if _LINK.is_symlink() or _LINK.is_file():
        _LINK.unlink()
    elif _LINK.exists():
        raise RuntimeError(f"{_LINK} exists and is not a symlink; run `make clean`")
    try:
        _LINK.symlink_to(_LINK_TARGET, target_is_directory=True)
    except FileExistsError:  # another pytest process (xdist worker) made it
        pass


def _is_collection_copy() -> bool:
    """True when this checkout already sits at ansible_collections/nodekeep/backup."""
    parts = REPO_ROOT.parts
    return len(parts) >= 3 and parts[-3:] == ("ansible_collections", "nodekeep", "backup")


if _is_collection_copy():
    COLLECTIONS_PATH = str(REPO_ROOT.parent.parent.parent)
else:
    _ensure_collection_link()
    COLLECTIONS_PATH = str(COLLECTIONS_DIR)
if COLLECTIONS_PATH not in sys.path:
    sys.path.insert(0, COLLECTIONS_PATH)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than about 5 s (still runs by default; -m 'not slow' skips it)")
    # Registered here too so that the marks do not warn when pytest-timeout is absent.
    config.addinivalue_line("markers", "timeout(seconds): fail a test that runs longer (pytest-timeout)")


def subprocess_env() -> dict:
    """Environment for child Python processes that import the collection."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (COLLECTIONS_PATH, env.get("PYTHONPATH")) if p)
    return env


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class AgeKey:
    identity_path: Path
    identity: str
    recipient: str


@dataclass(frozen=True)
class SigningKey:
    path: Path
    key: object
    public_line: str
    pem: bytes


def _make_age_key(directory: Path) -> AgeKey:
    path = directory / "age-identity.txt"
    proc = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True)
    recipient = proc.stderr.split("Public key:", 1)[1].strip()
    identity = next(line for line in path.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    assert path.stat().st_mode & 0o077 == 0
    return AgeKey(path, identity, recipient)


def _make_signing_key(directory: Path, comment: str) -> SigningKey:
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing

    pem = signing.generate_private_key_pem()
    path = directory / "signing_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return SigningKey(path, signing.load_private_key(str(path)), signing.public_key_line(pem, comment), pem)


@pytest.fixture(scope="session")
def age_key(tmp_path_factory) -> AgeKey:
    return _make_age_key(tmp_path_factory.mktemp("age"))


@pytest.fixture(scope="session")
def other_age_key(tmp_path_factory) -> AgeKey:
    return _make_age_key(tmp_path_factory.mktemp("age-other"))


@pytest.fixture(scope="session")
def signing_key(tmp_path_factory) -> SigningKey:
    return _make_signing_key(tmp_path_factory.mktemp("sign"), "node1")


@pytest.fixture(scope="session")
def other_signing_key(tmp_path_factory) -> SigningKey:
    return _make_signing_key(tmp_path_factory.mktemp("sign-other"), "node2")


@pytest.fixture
def repository(tmp_path):
    from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

    return LocalRepository(str(tmp_path / "repo"))


# --------------------------------------------------------------------------
# SQLite: databases made with the sqlite3 CLI, a writer in another process
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveDb:
    path: Path
    journal_mode: str
    rows: int


def make_sqlite_db(path: Path, rows: int = 4000, payload: int = 1000, journal_mode: str = "wal") -> LiveDb:
    """A DB of about rows*payload bytes of random (incompressible) data, two rows per txn."""
    assert rows % 2 == 0
    script = textwrap.dedent(
        f"""
        PRAGMA journal_mode={journal_mode};
        CREATE TABLE t(id INTEGER PRIMARY KEY, txn INTEGER NOT NULL, payload BLOB NOT NULL);
        CREATE INDEX t_txn ON t(txn);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows})
        INSERT INTO t(txn, payload) SELECT (x + 1) / 2, randomblob({payload}) FROM c;
        """
    )
    subprocess.run(["sqlite3", "-bail", str(path)], input=script, capture_output=True, text=True, check=True)
    mode = subprocess.run(
        ["sqlite3", str(path), "PRAGMA journal_mode"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert mode == journal_mode, mode
    return LiveDb(path, journal_mode, rows)


@pytest.fixture
def live_db(request, tmp_path) -> LiveDb:
    journal_mode = getattr(request, "param", "wal")
    directory = tmp_path / "live"
    directory.mkdir()
    return make_sqlite_db(directory / "app.db", journal_mode=journal_mode)


_WRITER = r"""
import mmap, signal, sqlite3, struct, sys, time

path, status_path, payload = sys.argv[1], sys.argv[2], int(sys.argv[3])
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
with open(status_path, "r+b") as handle:
    status = mmap.mmap(handle.fileno(), 16)
connection = sqlite3.connect(path, timeout=60, isolation_level=None)
commits = 0
while not stop:
    connection.execute("BEGIN IMMEDIATE")
    txn = connection.execute("SELECT coalesce(max(txn), 0) + 1 FROM t").fetchone()[0]
    for _attempt in range(2):
        connection.execute("INSERT INTO t(txn, payload) VALUES (?, randomblob(?))", (txn, payload))
    connection.execute("COMMIT")
    commits += 1
    status[0:8] = struct.pack("<Q", commits)
    time.sleep(0.002)
connection.close()
"""


class Writer:
    """A separate process committing two inserts per transaction until stopped."""

    def __init__(self, db: LiveDb, workdir: Path, payload: int = 300) -> None:
        self.db = db
        script = workdir / "writer.py"
        script.write_text(_WRITER)
        status_path = workdir / "writer.status"
        status_path.write_bytes(b"\0" * 16)
        self._status_file = open(status_path, "r+b")  # noqa: SIM115 - closed in close()
        self._status = mmap.mmap(self._status_file.fileno(), 16)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(db.path), str(status_path), str(payload)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.returncode = None
        self.stderr = ""

    @property
    def commits(self) -> int:
        return struct.unpack("<Q", self._status[0:8])[0]

    def wait_for(self, count: int, timeout: float = 20.0) -> int:
        """Wait until the writer has committed at least ``count`` transactions."""
        deadline = time.monotonic() + timeout
        while self.commits < count:
            if self.proc.poll() is not None:
                raise AssertionError("the writer died: %s" % self.proc.stderr.read().decode())
            if time.monotonic() > deadline:
                raise AssertionError("the writer made only %d commits in %.0f s" % (self.commits, timeout))
            time.sleep(0.01)
        return self.commits

    def stop(self) -> int:
        """Stop between two transactions; returns the number of commits. Raises if it failed."""
        if self.returncode is None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                _out, err = self.proc.communicate(timeout=70)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _out, err = self.proc.communicate()
            self.returncode = self.proc.returncode
            self.stderr = err.decode(errors="replace")
        assert self.returncode == 0, "the writer failed (%s): %s" % (self.returncode, self.stderr)
        return self.commits

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._status.close()
        self._status_file.close()


@pytest.fixture
def writer(live_db, tmp_path):
    process = Writer(live_db, tmp_path)
    try:
        process.wait_for(1)
        yield process
    finally:
        process.close()


def sqlite_rows(path) -> dict:
    """``{id: (txn, payload)}`` of table ``t``, read with apsw (read-only)."""
    import apsw

    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {row[0]: (row[1], bytes(row[2])) for row in connection.execute("SELECT id, txn, payload FROM t")}
    finally:
        connection.close()


def consistency(path) -> dict:
    """Facts that hold for every transaction-consistent state of a DB fed by ``Writer``."""
    import apsw

    connection = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        count, max_id, max_txn = connection.execute("SELECT count(*), max(id), max(txn) FROM t").fetchone()
        odd_txns = connection.execute(
            "SELECT count(*) FROM (SELECT txn FROM t GROUP BY txn HAVING count(*) != 2)"
        ).fetchone()[0]
        integrity = [r[0] for r in connection.execute("PRAGMA integrity_check")]
    finally:
        connection.close()
    return {
        "count": count,
        "even": count % 2 == 0,
        "ids_contiguous": max_id == count,
        "txns_complete": odd_txns == 0 and max_txn * 2 == count,
        "integrity": integrity,
    }


@pytest.fixture(scope="session")
def dbtools() -> SimpleNamespace:
    return SimpleNamespace(make=make_sqlite_db, rows=sqlite_rows, consistency=consistency)


@pytest.fixture(scope="session")
def child_env() -> dict:
    return subprocess_env()
