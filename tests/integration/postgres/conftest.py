"""PostgreSQL fixtures: a private cluster of Debian's server, started once per session.

``pg_cluster`` (session)
    a ``pgcluster.Cluster`` in a temp dir (initdb + pg_ctl start on a unix socket
    in that dir, no TCP), owned by the ``postgres`` OS user; torn down at the end.
    Skipped when not root or without the server binaries.
``ledger``
    ``(cluster, database_name)``: a fresh ledger database (``pgcluster.make_ledger``)
    for one test, dropped after it.
``pg_writer``
    ``make(database)`` -> a started ``pgcluster.Writer``: a separate process
    committing transactions; stopped at teardown.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pgcluster


@pytest.fixture(scope="session")
def pg_cluster():
    yield from pgcluster.session_cluster()


@pytest.fixture
def ledger(pg_cluster):
    if not pg_cluster.running():
        pg_cluster.start()
    name = "ledger_%s" % uuid.uuid4().hex[:8]
    pgcluster.make_ledger(pg_cluster, name)
    yield pg_cluster, name
    if not pg_cluster.running():
        pg_cluster.start()
    for database in (name, name + "_check"):
        pg_cluster.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database, check=False)


@pytest.fixture
def pg_writer(pg_cluster, request):
    def make(database: str, pause: float = 0.002) -> pgcluster.Writer:
        writer = pgcluster.Writer(pg_cluster, database, pause).start()
        request.addfinalizer(writer.stop)
        return writer

    return make
