"""The ``postgres`` asset type against a real PostgreSQL 15 server (Debian's), under live writes.

Every backup goes through the engine (``epoch.backup_epoch``/``restore_epoch``/
``verify_epoch``), so the dump is streamed through the one seal pipeline and a
failing ``pg_dump`` must leave no epoch behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pgcluster
import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import postgres
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import asset_type
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
)

pytestmark = pytest.mark.timeout(300)


def pg_asset(cluster, database, name="app-pg", **options) -> dict:
    asset = {"name": name, "type": "postgres", "path": "/var/backups/postgres/%s.pgdump" % database}
    asset.update(cluster.settings(database=database))
    asset.update(options)
    return asset


def consistent(cluster, database) -> int:
    """The ledger's invariants hold in ``database``; returns its counter."""
    n = int(cluster.psql("SELECT n FROM counter", database))
    entries = int(cluster.psql("SELECT count(*) FROM entries", database))
    balance = int(cluster.psql("SELECT sum(balance) FROM accounts", database))
    assert entries == 4000 + 2 * n, (entries, n)
    assert balance == 0
    per_txn = cluster.psql(
        "SELECT count(*) FROM entries WHERE txn > 1000000 GROUP BY txn HAVING count(*) <> 2", database
    )
    assert per_txn == ""
    return n


def assert_no_epoch(node) -> None:
    root = node.epoch_dir("x").parent
    assert not root.exists() or not [p for p in root.iterdir() if not p.name.startswith(".")], list(root.iterdir())


def test_backup_under_live_writes_restores_into_a_staging_database(node, ledger, pg_writer, tmp_path):
    cluster, database = ledger
    writer = pg_writer(database)
    writer.wait_for(50)
    check_db = database + "_check"
    manifest = node.backup([pg_asset(cluster, database, restore_database=check_db)])
    during = writer.committed()
    writer.wait_for(during + 20)  # the writer kept committing through and after the dump
    writer.stop()

    artifact = manifest.artifacts[0]
    facts = artifact.source
    assert artifact.asset_type == "postgres" and artifact.file == "app-pg.pgdump.zst.age"
    assert facts["server_version"].startswith("15.") and facts["server_version_num"] >= 150000
    assert facts["database"] == database and facts["tables"] == 4 and facts["database_size"] > 0
    assert facts["pg_dump_version"].startswith("pg_dump (PostgreSQL) 15")
    assert facts["dump_size"] == artifact.content_size and facts["become_user"] == "postgres"
    assert "password" not in repr(facts).lower().replace("passfile", "")

    target = tmp_path / "staging"
    result = node.restore(target)
    restored = result["artifacts"][0]
    dump = target / "var/backups/postgres" / ("%s.pgdump" % database)
    assert restored["path"] == str(dump) and dump.is_file()
    assert oct(dump.stat().st_mode & 0o777) == "0o600"
    checks = restored["checks"]
    assert checks["list"] == "ok" and checks["table_data"] == 4
    loaded = checks["restore"]
    assert loaded["database"] == check_db and loaded["tables"] == 4

    # The staging database holds exactly the dump's snapshot: one consistent state of the writer.
    counter = consistent(cluster, check_db)
    assert 50 <= counter <= during
    dumped = postgres.dump_row_counts({}, str(dump))
    assert dumped == cluster.counts(check_db, pgcluster.LEDGER_TABLES) == loaded["row_counts"]
    assert dumped["public.entries"] == 4000 + 2 * counter
    assert cluster.psql('SELECT count(*) FROM "Odd Schema"."notes; with ""quotes"""', check_db) == "25"
    assert "line two" in cluster.psql('SELECT body FROM "Odd Schema"."notes; with ""quotes""" WHERE id = 3', check_db)
    comment = cluster.psql(
        "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '%s'" % check_db
    )
    assert comment.startswith(postgres.MARKER)


def test_artifact_opens_with_standard_tools(node, ledger, age_key, tmp_path):
    cluster, database = ledger
    manifest = node.backup([pg_asset(cluster, database)])
    sealed = node.epoch_dir(manifest.epoch) / manifest.artifacts[0].file
    plain = tmp_path / "plain.pgdump"
    pipeline = "age -d -i %s %s | zstd -d > %s" % (age_key.identity_path, sealed, plain)
    subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True)
    listing = subprocess.run(["pg_restore", "--list", str(plain)], capture_output=True, text=True, check=True).stdout
    assert "dbname: %s" % database in listing and "TABLE DATA public entries" in listing


def test_verify_deep_lists_the_archive_and_reloads_the_check_database(node, ledger):
    cluster, database = ledger
    node.backup([pg_asset(cluster, database, restore_database=database + "_check")])
    report = node.verify(deep=True)
    assert report["ok"], report
    checks = report["artifacts"][0]["checks"]
    assert checks["list"] == "ok" and checks["restore"]["rows"] > 4000
    # The check database is dropped once checked; a second deep verify makes it again (and drops it).
    gone = "SELECT count(*) FROM pg_database WHERE datname = '%s_check'" % database
    assert cluster.psql(gone) == "0"
    again = node.verify(deep=True)
    assert again["ok"], again
    assert again["artifacts"][0]["checks"]["restore"]["rows"] == checks["restore"]["rows"]
    assert cluster.psql(gone) == "0"
    # quick verification skips the reload
    quick = node.verify(deep=True, check="quick")
    assert "restore" not in quick["artifacts"][0]["checks"]


def test_password_role_from_a_pgpass_file(node, ledger, tmp_path):
    cluster, database = ledger
    asset = {"name": "app-pg", "type": "postgres", "path": "/srv/app/app.pgdump"}
    asset.update(cluster.backup_settings(database=database))
    manifest = node.backup([asset])
    facts = manifest.artifacts[0].source
    assert facts["role"] == "backup" and "become_user" not in facts
    assert pgcluster.BACKUP_PASSWORD not in node.epoch_dir(manifest.epoch).joinpath("manifest.json").read_text()
    result = node.restore(tmp_path / "staging")
    assert result["artifacts"][0]["checks"]["table_data"] == 4


def test_plain_dump_options_pass_through(node, ledger, tmp_path):
    cluster, database = ledger
    asset = pg_asset(
        cluster, database, dump_options=["--exclude-table-data=entries"], restore_database=database + "_check"
    )
    node.backup([asset])
    result = node.restore(tmp_path / "staging")
    loaded = result["artifacts"][0]["checks"]["restore"]
    assert "public.entries" not in loaded["row_counts"] and loaded["tables"] == 3
    assert cluster.psql("SELECT count(*) FROM entries", database + "_check") == "0"


# --------------------------------------------------------------------------
# bad inputs: a clear error, and nothing committed
# --------------------------------------------------------------------------


def test_no_such_database(node, pg_cluster, clear_error):
    with pytest.raises(CaptureError) as caught:
        node.backup([pg_asset(pg_cluster, "no_such_db")])
    clear_error(caught.value, "no_such_db", "does not exist", "database option")
    assert_no_epoch(node)


def test_unknown_role(node, ledger, clear_error):
    cluster, database = ledger
    asset = pg_asset(cluster, database, user="nobody_here")
    with pytest.raises(CaptureError) as caught:
        node.backup([asset])
    clear_error(caught.value, "nobody_here", "authentication failed", "user option")
    assert_no_epoch(node)


def test_wrong_password(node, ledger, tmp_path, clear_error):
    cluster, database = ledger
    passfile = tmp_path / "pgpass"
    passfile.write_text("*:*:*:backup:not-the-password\n")
    passfile.chmod(0o600)
    asset = {"name": "app-pg", "type": "postgres", "path": "/srv/app/app.pgdump"}
    asset.update(cluster.backup_settings(database=database, passfile=str(passfile)))
    with pytest.raises(CaptureError) as caught:
        node.backup([asset])
    clear_error(caught.value, "authentication failed", "passfile")
    assert "not-the-password" not in caught.value.message
    assert_no_epoch(node)


def test_no_password_never_prompts(node, ledger, clear_error):
    cluster, database = ledger
    asset = pg_asset(cluster, database, become_user=None, user="backup")
    started = time.monotonic()
    with pytest.raises(CaptureError) as caught:
        node.backup([asset])
    assert time.monotonic() - started < 30
    clear_error(caught.value, "authentication failed")
    assert_no_epoch(node)


def test_server_down(node, tmp_path, clear_error):
    empty = tmp_path / "no-server"
    empty.mkdir()
    asset = {"name": "app-pg", "type": "postgres", "path": "/srv/app.pgdump", "host": str(empty), "database": "x"}
    with pytest.raises(CaptureError) as caught:
        node.backup([asset])
    clear_error(caught.value, "cannot be reached", "start PostgreSQL")
    assert_no_epoch(node)


def test_dump_dying_mid_stream_commits_nothing(node, ledger, clear_error):
    """pg_dump killed after part of its output was already sealed (SIGPIPE): the artifact is not committed."""
    cluster, database = ledger
    cluster.psql(
        "INSERT INTO entries (txn, account, amount, memo) SELECT -g, 1, 0, repeat(md5(g::text), 40) "
        "FROM generate_series(1, 20000) g",
        database,
    )
    wrapper = ["bash", "-o", "pipefail", "-c", '"$@" | head -c 300000', "wrap"]
    asset = pg_asset(cluster, database, exec_prefix=wrapper, bin_dir=str(shutil.which("pg_dump")).rsplit("/", 1)[0])
    with pytest.raises(CaptureError) as caught:
        node.backup([asset])
    assert "pg_dump of database %s failed" % database in caught.value.message
    assert "nothing was committed" in caught.value.message
    assert_no_epoch(node)


def test_lock_timeout_is_named(node, ledger, clear_error):
    """A table held by an ACCESS EXCLUSIVE lock: pg_dump's own error, explained, and no epoch."""
    cluster, database = ledger
    entry = pgcluster.pwd.getpwnam(pgcluster.OS_USER)
    holder = subprocess.Popen(
        [
            "psql",
            "-X",
            "-q",
            "-h",
            str(cluster.socket_dir),
            "-d",
            database,
            "-c",
            # Held until the test terminates it (an 8 s hold raced the backup's start on a slow box).
            "BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3600); COMMIT;",
        ],
        user=entry.pw_uid,
        group=entry.pw_gid,
        extra_groups=[],
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        held = "0"
        while held == "0" and holder.poll() is None:  # the order: the lock is granted before the backup starts
            held = cluster.psql(
                "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted "
                "AND relation = 'accounts'::regclass",
                database,
            )
            if held == "0":
                time.sleep(0.05)
        assert held != "0", "the lock holder ended before its lock was granted"
        with pytest.raises(CaptureError) as caught:
            node.backup([pg_asset(cluster, database, dump_options=["--lock-wait-timeout=500"])])
        clear_error(caught.value, "locked", "lock-wait-timeout")
    finally:
        holder.terminate()
        holder.wait()
    assert_no_epoch(node)


def test_server_stopped_after_an_epoch_keeps_the_epoch(node, pg_cluster, clear_error, tmp_path):
    """Verify/restore do not need the server; a backup while it is down fails without touching the old epoch."""
    name = "ledger_down"
    pgcluster.make_ledger(pg_cluster, name)
    try:
        first = node.backup([pg_asset(pg_cluster, name)])
        pg_cluster.stop()
        try:
            with pytest.raises(CaptureError) as caught:
                node.backup([pg_asset(pg_cluster, name)])
            clear_error(caught.value, "cannot be reached")
            assert node.repository.complete_epochs(node.name) == [first.epoch]
            report = node.verify(deep=True)
            assert report["ok"], report
        finally:
            pg_cluster.start()
    finally:
        pg_cluster.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name, check=False)


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        ({"database": ""}, ["no database"]),
        ({"database": "host=x password=secret dbname=app"}, ["contains a password", "passfile"]),
        ({"dump_options": ["--file=/tmp/x"]}, ["--file", "set by nodekeep"]),
        ({"dump_options": ["-Fp"]}, ["-F"]),
        ({"dump_options": "--no-owner"}, ["must be a list"]),
        ({"passfile": "relative/pgpass"}, ["passfile", "absolute"]),
        ({"become_user": "no-such-os-user-x"}, ["become_user", "not a user"]),
        ({"restore_database": "app"}, ["restore_database", "separate scratch database"]),
        ({"port": "fivefourthree"}, ["asset app-pg: port 'fivefourthree' is not a whole number", "1 to 65535"]),
        ({"port": 70000}, ["asset app-pg: port 70000 is out of range", "1 to 65535"]),
        ({"timeout": -5}, ["asset app-pg: timeout -5 is out of range", "1 to 604800 seconds"]),
        ({"connect_timeout": 10**9}, ["asset app-pg: connect_timeout 1000000000 is out of range", "1 to 3600 seconds"]),
    ],
)
def test_bad_options_are_refused_before_anything_runs(node, options, needles, clear_error, tmp_path):
    asset = {"name": "app-pg", "type": "postgres", "path": "/srv/app.pgdump", "database": "app"}
    asset.update(options)
    with pytest.raises(CaptureError) as caught:
        node.backup([asset])
    clear_error(caught.value, *needles)
    assert_no_epoch(node)


def test_existing_database_not_made_by_nodekeep_is_never_dropped(node, ledger, tmp_path, clear_error):
    cluster, database = ledger
    precious = database + "_check"
    cluster.create_database(precious)
    cluster.psql("CREATE TABLE keep (x int); INSERT INTO keep VALUES (42)", precious)
    node.backup([pg_asset(cluster, database, restore_database=precious)])
    with pytest.raises(RestoreError) as caught:
        node.restore(tmp_path / "staging")
    clear_error(caught.value, precious, "not made by nodekeep")
    assert cluster.psql("SELECT x FROM keep", precious) == "42"
    assert not (tmp_path / ("staging/var/backups/postgres/%s.pgdump" % database)).exists()


def test_load_into_database_refuses_the_source(node, ledger, tmp_path):
    cluster, database = ledger
    manifest = node.backup([pg_asset(cluster, database)])
    result = node.restore(tmp_path / "staging")
    kind = asset_type("postgres")
    with pytest.raises(RestoreError):
        kind.load(result["artifacts"][0]["path"], manifest.artifacts[0], database)
    loaded = kind.load(result["artifacts"][0]["path"], manifest.artifacts[0], database + "_check")
    assert loaded["rows"] == sum(cluster.counts(database, pgcluster.LEDGER_TABLES).values())


def test_row_count_mismatch_is_an_error(ledger, tmp_path):
    cluster, database = ledger
    dump = tmp_path / "x.pgdump"
    with open(dump, "wb") as out:
        pgcluster.as_postgres(
            ["pg_dump", "-Fc", "-h", str(cluster.socket_dir), database], stdout=out, text=False, check=True
        )
    expected = postgres.dump_row_counts({}, str(dump))
    expected["public.entries"] += 1
    with pytest.raises(NodekeepError) as caught:
        postgres.load_into_database(
            cluster.settings(database=database), str(dump), database + "_check", expected=expected
        )
    assert "public.entries: dump 4001, restored 4000" in caught.value.message
    assert os.path.exists(dump)


def test_the_deep_checks_scratch_database_has_the_sources_encoding_and_collation_and_is_dropped(node, pg_cluster):
    """Issue 13: a LATIN1 / C database is checked in a LATIN1 / C scratch database (not the cluster's UTF8 /
    C.UTF-8 default), which a deep verify drops afterwards; a restore keeps its staging database."""
    cluster = pg_cluster
    database = "latin_app"
    cluster.psql('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % database)
    cluster.psql("CREATE DATABASE %s TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'" % database)
    cluster.psql("CREATE TABLE names (id int PRIMARY KEY, name text)", database)
    cluster.psql("INSERT INTO names VALUES (1, 'Zoë'), (2, 'alpha'), (3, 'Émile')", database)
    scratch = database + "_check"
    manifest = node.backup([pg_asset(cluster, database, restore_database=scratch)])
    facts = manifest.artifacts[0].source
    assert (facts["encoding"], facts["lc_collate"], facts["lc_ctype"]) == ("LATIN1", "C", "C")
    report = node.verify(deep=True)
    assert report["ok"], report["problems"]
    loaded = report["artifacts"][0]["checks"]["restore"]
    assert (loaded["encoding"], loaded["lc_collate"], loaded["lc_ctype"]) == ("LATIN1", "C", "C")
    assert cluster.psql("SELECT count(*) FROM pg_database WHERE datname = '%s'" % scratch) == "0"
