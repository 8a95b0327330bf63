"""A private PostgreSQL cluster for tests: Debian's server binaries, a temp dir, a unix socket, no TCP.

The server cannot run as root, so the cluster belongs to the ``postgres`` OS user
that Debian's ``postgresql`` package creates (``useradd`` makes it if missing);
the test process (root) runs the client tools as that user (``runuser``) or as
itself through the ``backup`` role, which authenticates with a password from a
``.pgpass`` file (scram-sha-256 on the socket). Everyone else gets peer auth.

    cluster = Cluster.create(base)   # initdb + pg_ctl start; cluster.stop() / .start() / .destroy()
    cluster.psql("SELECT 1", database="app")          # as postgres, returns stdout
    cluster.settings(database="app")                  # asset options that reach it (become_user postgres)
    cluster.backup_settings(database="app")           # the same through the password role
    Writer(cluster, "app").start() ... .stop()        # a separate process committing transactions
    yield from session_cluster()                      # in a conftest's session fixture pg_cluster
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from integration_helpers import wait_for_count

PG_BIN = Path("/usr/lib/postgresql/15/bin")
OS_USER = "postgres"
BACKUP_ROLE = "backup"
#: the writer runs as the postgres user, who cannot read root's virtualenv
SYSTEM_PYTHON = "/usr/bin/python3"
BACKUP_PASSWORD = "nk-test-Pa55word-9f3b2"


def available() -> str | None:
    """Why the cluster cannot be made here, or None."""
    if os.geteuid() != 0:
        return "the test cluster needs root (to run the server as the postgres user)"
    if not (PG_BIN / "initdb").exists():
        return "PostgreSQL 15 server binaries are missing (apt-get install postgresql)"
    return None


def session_cluster():
    """The body of a session fixture ``pg_cluster``: skips without root or the server, destroys the cluster after."""
    reason = available()
    if reason:
        pytest.skip(reason)
    cluster = Cluster.create()
    try:
        yield cluster
    finally:
        cluster.destroy()


def _ensure_os_user() -> None:
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", OS_USER], check=True)


def as_postgres(argv, **kwargs) -> subprocess.CompletedProcess:
    if "stdout" not in kwargs:
        kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    check = kwargs.pop("check", False)
    return subprocess.run(["runuser", "-u", OS_USER, "--", *argv], check=check, cwd="/", **kwargs)


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.socket_dir = base / "sock"
        self.log = base / "server.log"
        self.passfile = base / "client" / "pgpass"

    @classmethod
    def create(cls, base: Path | None = None) -> Cluster:
        _ensure_os_user()
        base = Path(base or tempfile.mkdtemp(prefix="nodekeep-pg-"))
        base.mkdir(parents=True, exist_ok=True)
        cluster = cls(base)
        entry = pwd.getpwnam(OS_USER)
        os.chmod(base, 0o755)
        os.chown(base, entry.pw_uid, entry.pw_gid)
        cluster.socket_dir.mkdir(mode=0o755)
        os.chown(cluster.socket_dir, entry.pw_uid, entry.pw_gid)
        out = as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(cluster.data),
                "-U",
                OS_USER,
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--auth-local=peer",
                "--auth-host=reject",
            ]
        )
        if out.returncode != 0:
            raise RuntimeError("initdb failed: %s" % out.stderr)
        with open(cluster.data / "postgresql.conf", "a") as conf:
            conf.write(
                "listen_addresses = ''\nunix_socket_directories = '%s'\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nshared_buffers = 32MB\nmax_connections = 40\n" % cluster.socket_dir
            )
        hba = cluster.data / "pg_hba.conf"
        hba.write_text("local all %s scram-sha-256\nlocal all all peer\n" % BACKUP_ROLE)
        cluster.start()
        cluster.psql(
            "CREATE ROLE %s LOGIN CREATEDB PASSWORD '%s'; GRANT pg_read_all_data TO %s;"
            % (BACKUP_ROLE, BACKUP_PASSWORD, BACKUP_ROLE)
        )
        cluster.passfile.parent.mkdir(mode=0o700)
        cluster.passfile.write_text("*:*:*:%s:%s\n" % (BACKUP_ROLE, BACKUP_PASSWORD))
        os.chmod(cluster.passfile, 0o600)
        return cluster

    def start(self) -> None:
        out = as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"]
        )
        if out.returncode != 0:
            raise RuntimeError("pg_ctl start failed: %s %s" % (out.stderr, self.log.read_text()[-2000:]))

    def stop(self) -> None:
        as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def running(self) -> bool:
        return as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]).returncode == 0

    def destroy(self) -> None:
        if self.running():
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(self.base, ignore_errors=True)

    def psql(self, sql: str, database: str = "postgres", check: bool = True) -> str:
        argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir), "-d", database]
        out = as_postgres([*argv, "-c", sql])
        if check and out.returncode != 0:
            raise RuntimeError("psql failed: %s" % out.stderr)
        return out.stdout.strip()

    def create_database(self, name: str) -> None:
        self.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
        self.psql('CREATE DATABASE "%s"' % name)

    def settings(self, **extra) -> dict:
        """Asset options that reach this cluster as the postgres OS user (peer authentication)."""
        return dict({"host": str(self.socket_dir), "become_user": OS_USER}, **extra)

    def backup_settings(self, **extra) -> dict:
        """Asset options that reach this cluster as the password role, the password from a .pgpass file."""
        return dict({"host": str(self.socket_dir), "user": BACKUP_ROLE, "passfile": str(self.passfile)}, **extra)

    def counts(self, database: str, tables) -> dict:
        return {table: int(self.psql("SELECT count(*) FROM ONLY %s" % table, database)) for table in tables}


LEDGER_SCHEMA = '''
CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL, balance bigint NOT NULL DEFAULT 0);
CREATE TABLE entries (id bigserial PRIMARY KEY, txn bigint NOT NULL, account int NOT NULL REFERENCES accounts,
                      amount bigint NOT NULL, memo text);
CREATE TABLE counter (id int PRIMARY KEY, n bigint NOT NULL);
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."notes; with ""quotes""" (id int, body text);
INSERT INTO accounts SELECT g, 'account ' || g, 0 FROM generate_series(1, 50) g;
INSERT INTO counter VALUES (1, 0);
INSERT INTO "Odd Schema"."notes; with ""quotes""" SELECT g, E'line one\\nline two\\ttab ' || g FROM generate_series(1, 25) g;
INSERT INTO entries (txn, account, amount, memo)
  SELECT g, 1 + g %% 50, 100, repeat('m', 200) FROM generate_series(1, 4000) g;
UPDATE counter SET n = 0;
'''

#: tables of the ledger database as pg_dump names them in COPY statements
LEDGER_TABLES = ["public.accounts", "public.entries", "public.counter", '"Odd Schema"."notes; with ""quotes"""']


def make_ledger(cluster: Cluster, name: str) -> None:
    """A database whose consistent states satisfy: entries - 4000 prefill == 2 * counter.n, sum(balance) == 0."""
    cluster.create_database(name)
    cluster.psql(LEDGER_SCHEMA.replace("%%", "%"), name)


WRITER = r"""
import subprocess, sys, time
socket_dir, database, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
psql = subprocess.Popen(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", socket_dir, "-d", database],
                        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, bufsize=1)
n = 0
TXN_BASE = 1000000
try:
    while True:
        n += 1
        a, b = 1 + n % 50, 1 + (n * 7) % 50
        psql.stdin.write(
            "BEGIN; INSERT INTO entries (txn, account, amount, memo) VALUES (%d, %d, -5, 'debit'), (%d, %d, 5, 'credit');"
            " UPDATE accounts SET balance = balance - 5 WHERE id = %d; UPDATE accounts SET balance = balance + 5 WHERE id = %d;"
            " UPDATE counter SET n = n + 1; COMMIT;\n" % (TXN_BASE + n, a, TXN_BASE + n, b, a, b))
        time.sleep(pause)
except (BrokenPipeError, KeyboardInterrupt):
    pass
"""


class Writer:
    """A separate process (psql as the postgres user) committing ledger transactions until stopped."""

    def __init__(self, cluster: Cluster, database: str, pause: float = 0.002) -> None:
        self.cluster = cluster
        self.database = database
        self.pause = pause
        self.proc: subprocess.Popen | None = None

    def start(self) -> Writer:
        entry = pwd.getpwnam(OS_USER)
        argv = [SYSTEM_PYTHON, "-c", WRITER, str(self.cluster.socket_dir), self.database, str(self.pause)]
        self.proc = subprocess.Popen(
            argv,
            cwd="/",
            user=entry.pw_uid,
            group=entry.pw_gid,
            extra_groups=[],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self

    def committed(self) -> int:
        return int(self.cluster.psql("SELECT n FROM counter", self.database))

    def wait_for(self, count: int, timeout: float = 30.0) -> int:
        return wait_for_count(self.committed, count, timeout, 0.05, "the writer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
