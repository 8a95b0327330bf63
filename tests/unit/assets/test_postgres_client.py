"""assets/_postgres_client: the PostgreSQL client tools never get or wait for a password, run with the
connection the asset names, as ``become_user`` when asked, and their errors become a problem and a
remedy the operator can act on.

Real tools, no server: ``psql`` against a socket directory where no server listens, ``env`` and ``id``
run through the same gateway as the client tools (what the child really receives).
"""

from __future__ import annotations

import os
import pwd
import stat

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _postgres_client as client
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError


def child_environment(settings: dict) -> dict:
    """The environment a client tool started with ``settings`` really receives."""
    out = client.run(settings, ["env", "-0"], "env")
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_no_password_reaches_a_tool_and_none_is_ever_prompted_for(monkeypatch, tmp_path):
    monkeypatch.setenv("PGPASSWORD", "hunter2-not-for-children")
    passfile = tmp_path / "pgpass"
    env = child_environment({"passfile": str(passfile), "service": "app", "service_file": "/etc/pg_service.conf"})
    assert "PGPASSWORD" not in env
    assert env["PGPASSFILE"] == str(passfile) and env["PGSERVICE"] == "app"
    assert env["PGSERVICEFILE"] == "/etc/pg_service.conf"
    assert env["PGCONNECT_TIMEOUT"] == "10" and env["PGAPPNAME"] == "nodekeep"
    assert child_environment({"connect_timeout": 45})["PGCONNECT_TIMEOUT"] == "45"
    args = client.connection_args({"host": "/run/postgresql", "port": "5433", "user": "backup"}, "app")
    assert args == ["--no-password", "--host=/run/postgresql", "--port=5433", "--username=backup", "--dbname=app"]
    assert client.connection_args({}, None) == ["--no-password"]  # the PG* environment or a service decides


@pytest.mark.skipif(os.geteuid() != 0, reason="running a tool as another user needs root")
def test_become_user_runs_the_tool_as_that_user_with_its_home():
    settings = {"become_user": "nobody"}
    assert client.run(settings, ["id", "-un"], "id").strip() == "nobody"
    env = child_environment(settings)
    assert env["HOME"] == pwd.getpwnam("nobody").pw_dir and env["USER"] == env["LOGNAME"] == "nobody"


def test_exec_prefix_wraps_every_tool(tmp_path):
    settings = {"exec_prefix": ["env", "NODEKEEP_WRAPPED=yes"]}
    assert "NODEKEEP_WRAPPED=yes" in client.run(settings, ["env"], "env").splitlines()
    # through a wrapper the tool is found inside it: bin_dir joined, never looked up on this host
    assert client.tool(settings, "pg_dump") == "pg_dump"
    assert (
        client.tool(dict(settings, bin_dir="/usr/lib/postgresql/16/bin"), "psql") == "/usr/lib/postgresql/16/bin/psql"
    )


def test_the_tool_is_found_in_bin_dir_then_on_the_path(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    own = bin_dir / "pg_dump"
    own.write_text("#!/bin/sh\nexit 0\n")
    own.chmod(own.stat().st_mode | stat.S_IXUSR)
    assert client.tool({"bin_dir": str(bin_dir)}, "pg_dump") == str(own)
    assert client.tool({"bin_dir": str(bin_dir)}, "psql") == "/usr/bin/psql"  # not there: the PATH's
    with pytest.raises(CaptureError, match="nodekeep-no-such-tool is not installed") as raised:
        client.tool({}, "nodekeep-no-such-tool")
    assert "postgresql-client" in raised.value.remedy and "bin_dir" in raised.value.remedy


def test_a_server_that_is_not_there_is_named_with_the_settings_to_fix(tmp_path):
    settings = {"host": str(tmp_path / "no-server-here"), "database": "app", "connect_timeout": 5}
    with pytest.raises(CaptureError) as raised:
        client.psql(settings, "app", "SELECT 1", "connecting to database app")
    error = raised.value
    assert error.problem.startswith("connecting to database app: the server cannot be reached")
    assert str(tmp_path / "no-server-here") in error.problem  # psql's own words, kept
    assert "host/port" in error.remedy and error.details["exit_status"] == 2
    with pytest.raises(RestoreError, match="cannot be reached"):  # the caller picks the error class
        client.psql(settings, "app", "SELECT 1", "preparing the restore database", RestoreError)


def test_a_missing_tool_through_the_gateway_names_the_package():
    with pytest.raises(CaptureError) as raised:
        client.run({}, ["/nonexistent/bin/pg_dump", "--version"], "pg_dump --version")
    assert "postgresql-client" in raised.value.remedy


@pytest.mark.parametrize(
    "stderr, problem, remedy",
    [
        (('pg_dump: error: connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: FATAL:  '
         'database "shop" does not exist'), "the database does not exist", "psql -l"),
        ('psql: error: connection to server on socket "/tmp/.s.PGSQL.5432" failed: FATAL:  role "bkp" does not exist',
         "the PostgreSQL role does not exist", "become_user"),
        (('pg_dump: error: connection to server at "db" (10.0.0.5), port 5432 failed: FATAL:  password authentication '
         'failed for user "backup"'), "authentication failed", "passfile"),
        ("pg_dump: error: connection to server on socket \"/x\" failed: fe_sendauth: no password supplied",
         "authentication failed", "never given on a command line"),
        (('psql: error: connection to server on socket "/x" failed: FATAL:  Peer authentication failed for user '
         '"postgres"'), "peer authentication failed", "become_user"),
        ("pg_dump: error: query failed: ERROR:  permission denied for table secrets",
         "permission denied", "pg_read_all_data"),
        (("pg_dump: error: aborting because of server version mismatch\npg_dump: detail: server version: 16.2; "
         "pg_dump version: 15.6"), "the client tools are older than the server", "bin_dir"),
        (('pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout\npg_dump: detail: Query was: '
         'LOCK TABLE public.orders IN ACCESS SHARE MODE'), "a table stayed locked", "--lock-wait-timeout"),
        ("pg_dump: error: could not obtain lock on relation \"orders\"", "a table stayed locked", "lock"),
        ("something else entirely\nsecond line", "failed: something else entirely second line",
         "nothing was written for database shop"),
        ("", "failed: (no message)", "see the message"),
    ],
)  # fmt: skip
def test_errors_are_explained_with_a_remedy(stderr, problem, remedy):
    found_problem, found_remedy = client.explain(stderr, {"database": "shop"}, "pg_dump of database shop")
    assert found_problem.startswith("pg_dump of database shop")
    assert problem in found_problem and remedy in found_remedy


def test_an_unexplained_failure_names_the_database_only_when_there_is_one():
    _problem, remedy = client.explain("pg_restore: error: something", {}, "pg_restore into shop_check")
    assert remedy == "see the message" and "None" not in remedy


def test_an_explained_message_is_bounded():
    problem, _remedy = client.explain("x" * 100000, {}, "pg_dump")
    assert len(problem) < 700


@pytest.mark.parametrize(
    "text, literal, ident",
    [
        ("plain", "'plain'", '"plain"'),
        ("it's", "'it''s'", '"it\'s"'),
        ('say "hi"', "'say \"hi\"'", '"say ""hi"""'),
        ("x'; DROP DATABASE app; --", "'x''; DROP DATABASE app; --'", '"x\'; DROP DATABASE app; --"'),
    ],
)
def test_quoting_keeps_a_name_one_token(text, literal, ident):
    assert client.quote_literal(text) == literal
    assert client.quote_ident(text) == ident
