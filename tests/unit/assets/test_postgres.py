"""assets/postgres: the options are checked before anything runs (no password anywhere, nothing that
breaks the stream, ranges named), pg_dump gets the connection and ``--compress=0`` and never a password,
a dump is committed only when pg_dump exited 0 AND wrote a custom-format archive, the listing of an
archive is read into facts, and a load is refused into the source database.

No server: pg_dump is run through ``exec_prefix`` (the asset's real wrapper option, as for
``docker compose exec -T``) by a wrapper that records its argv and writes what a dump would; the
capture of a database whose server is not there runs the real psql. The loads themselves are in
tests/integration/postgres (a private cluster).
"""

from __future__ import annotations

import io
import json
import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import postgres
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, RestoreError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact

ASSET = postgres.PostgresAssetType()


def normalized(**options) -> dict:
    return ASSET.normalize(dict({"name": "shop-db", "type": "postgres", "path": "/srv/shop.pgdump", "database": "shop"},
                                **options))  # fmt: skip


@pytest.mark.parametrize(
    "options, needle, remedy",
    [
        ({"database": ""}, "no database was given", "set database"),
        ({"host": "host=db password=s3cret"}, "host contains a password", "passfile"),
        ({"database": "postgresql://backup:s3cret@db/shop"}, "database contains a password", "passfile"),
        ({"service": "svc password = x"}, "service contains a password", "passfile"),
        ({"passfile": "pgpass"}, "passfile must be an absolute path", "/etc/nodekeep/pgpass"),
        ({"bin_dir": "usr/lib/postgresql/15/bin"}, "bin_dir must be an absolute path", "full path"),
        ({"dump_options": "--no-owner"}, "dump_options must be a list", "YAML list"),
        ({"exec_prefix": "docker exec"}, "exec_prefix must be a list", "YAML list"),
        ({"dump_options": ["--format=plain"]}, "option --format is set by nodekeep", "leave the format"),
        ({"dump_options": ["-Fp"]}, "option -Fp is set by nodekeep", "leave the format"),
        ({"dump_options": ["-j4"]}, "option -j4 is set by nodekeep", "leave the format"),
        ({"dump_options": ["--host", "db"]}, "option --host is set by nodekeep", "database/host/port/user"),
        ({"dump_options": ["-hdb"]}, "option -hdb is set by nodekeep", "database/host/port/user"),
        ({"dump_options": ["-W"]}, "option -W is set by nodekeep", "leave the format"),
        ({"restore_options": ["--dbname=other"]}, "option --dbname is set by nodekeep", "database/host/port/user"),
        ({"dump_options": ["--exclude-table=password=x"]}, "an option contains a password", "passfile"),
        ({"port": 70000}, "port", "port: 5432"),
        ({"connect_timeout": 7200}, "connect_timeout", "one hour at most"),
        ({"timeout": 10**7}, "timeout", "one week at most"),
        ({"restore_database": "shop"}, "restore_database is the database that is backed up", "shop_nodekeep_check"),
        ({"become_user": "nodekeep-no-such-user"}, "become_user nodekeep-no-such-user is not a user", "postgres"),
        ({"globals": "yes"}, "globals must be true or false", "globals: true"),
        ({"role_passwords": 1}, "role_passwords must be true or false", "role_passwords: false"),
    ],
)
def test_bad_options_are_refused_naming_the_option_before_anything_runs(options, needle, remedy):
    with pytest.raises(CaptureError) as raised:
        normalized(**options)
    assert raised.value.problem.startswith("asset shop-db")
    assert needle in raised.value.problem and remedy in raised.value.remedy
    assert "s3cret" not in raised.value.message  # a password in a refused option is never repeated


def test_good_options_come_back_normalized():
    settings = normalized(port="5433", dump_options=("--no-owner", "--exclude-table-data=audit"), exec_prefix=None)
    assert settings["port"] == 5433 and settings["dump_options"] == ["--no-owner", "--exclude-table-data=audit"]
    assert settings["exec_prefix"] == [] and settings["restore_options"] is None  # None: chosen at restore
    assert settings["connect_timeout"] == 10 and settings["timeout"] == 21600
    assert normalized(restore_options=["--no-owner"])["restore_options"] == ["--no-owner"]


WRAPPER = """#!/bin/sh
# exec_prefix wrapper: records the argv it was given, writes $NK_OUT to stdout, $NK_ERR to stderr, exits $NK_CODE
printf '%s\\n' "$@" > "{argv}"
printf '%s' "$NK_OUT"
printf '%s' "$NK_ERR" >&2
exit "$NK_CODE"
"""


@pytest.fixture
def wrapped(tmp_path, monkeypatch):
    """Settings whose pg_dump runs through a recording wrapper; ``argv()`` is what the wrapper was given."""
    argv_file = tmp_path / "argv"
    script = tmp_path / "wrapper.sh"
    script.write_text(WRAPPER.format(argv=argv_file))

    def dump(out: str, code: int = 0, err: str = "", **options):
        monkeypatch.setenv("NK_OUT", out)
        monkeypatch.setenv("NK_ERR", err)
        monkeypatch.setenv("NK_CODE", str(code))
        settings = normalized(exec_prefix=["/bin/sh", str(script)], **options)
        running = postgres._Dump(settings, str(tmp_path))
        data = running.stream.read()
        try:
            return data, running.finish()
        finally:
            running.close()

    dump.argv = lambda: argv_file.read_text().splitlines()
    return dump


def test_pg_dump_gets_the_connection_and_compress_0_and_its_archive_is_the_stream(wrapped, tmp_path):
    data, facts = wrapped("PGDMP\x01\x0earchive", host="/run/postgresql", port=5433, user="backup",
                          passfile=str(tmp_path / "pgpass"))  # fmt: skip
    assert data == b"PGDMP\x01\x0earchive" and facts["dump_size"] == len(data)
    argv = wrapped.argv()
    assert argv[:2] == ["pg_dump", "--format=custom"] and "--compress=0" in argv
    assert argv[-5:] == ["--no-password", "--host=/run/postgresql", "--port=5433", "--username=backup", "--dbname=shop"]
    assert not any("pgpass" in arg or "password=" in arg for arg in argv)  # the password file goes by PGPASSFILE
    wrapped("PGDMP", dump_options=["-Z", "6"])
    assert "--compress=0" not in wrapped.argv() and "-Z" in wrapped.argv()  # the operator's choice is kept


def test_a_dump_is_committed_only_as_a_custom_format_archive(wrapped):
    with pytest.raises(CaptureError, match="exited 0 but its output is not a custom-format archive") as raised:
        wrapped("-- PostgreSQL database dump\nSET statement_timeout = 0;\n")
    assert "exec_prefix" in raised.value.remedy


def test_a_dump_that_failed_half_way_is_never_committed_and_names_the_cause(wrapped):
    with pytest.raises(CaptureError) as raised:
        wrapped("PGDMP\x01partial", code=1, err="pg_dump: error: query failed: ERROR:  permission denied for table pay")
    assert "permission denied" in raised.value.problem and "nothing was committed" in raised.value.remedy
    assert raised.value.details["exit_status"] == 1


def test_a_capture_without_a_server_fails_before_any_dump(tmp_path):
    settings = normalized(host=str(tmp_path / "no-server"), connect_timeout=5)
    with (
        pytest.raises(CaptureError, match="connecting to database shop: the server cannot be reached"),
        ASSET.capture(settings, str(tmp_path)),
    ):
        pass
    assert os.listdir(tmp_path) == []  # nothing was written to the scratch directory


def test_the_dump_stream_remembers_its_head_and_size():
    stream = postgres._DumpStream(io.BufferedReader(io.BytesIO(b"PGDMP" + b"x" * 100000)))
    assert len(stream.read()) == 100005
    assert stream.head == b"PGDMP" + b"x" * 11 and stream.size == 100005


LISTING = """;
; Archive created at 2026-12-07 10:15:30 UTC
;     dbname: shop
;     TOC Entries: 14
;     Compression: none
;     Dump Version: 1.14-0
;     Format: CUSTOM
;     Integer: 4 bytes
;     Offset: 8 bytes
;     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)
;     Dumped by pg_dump version: 15.18 (Debian 15.18-0+deb12u1)
;
;
; Selected TOC Entries:
;
215; 1259 16390 TABLE public accounts postgres
216; 1259 16395 TABLE public entries postgres
217; 1259 16394 SEQUENCE public entries_id_seq postgres
3338; 0 0 SEQUENCE OWNED BY public entries_id_seq postgres
3330; 0 16390 TABLE DATA public accounts postgres
3331; 0 16395 TABLE DATA public entries postgres
3339; 0 0 SEQUENCE SET public entries_id_seq postgres
3180; 2606 16399 CONSTRAINT public accounts accounts_pkey postgres
"""


def test_the_archive_listing_gives_its_database_format_version_and_counts():
    facts = postgres.archive_facts(LISTING)
    assert facts == {
        "dbname": "shop",
        "format": "CUSTOM",
        "dumped_from": "15.18 (Debian 15.18-0+deb12u1)",
        "toc_entries": 8,
        "table_data": 2,
    }


def artifact(**source) -> Artifact:
    facts = {"database": "shop", "host": "/run/postgresql", "port": 5432, "user": "backup", "become_user": "",
             "exec_prefix": [], "restore_database": "shop_check", "encoding": "UTF8"}  # fmt: skip
    facts.update(source)
    return Artifact(name="shop-db", asset_type="postgres", file="shop-db.pgdump.zst.age", format="pgdump-custom+zstd+age",
                    size=10, sha256="0" * 64, content_size=5, content_sha256=None, source=facts)  # fmt: skip


def test_the_settings_recorded_with_an_epoch_reach_the_checks():
    settings = ASSET.settings_from(artifact(become_user="nodekeep-no-such-user"))
    assert settings["host"] == "/run/postgresql" and settings["port"] == 5432 and settings["user"] == "backup"
    assert settings["database"] == "shop" and settings["encoding"] == "UTF8"
    assert "become_user" not in settings  # a staging host without that user connects as itself
    assert settings["maintenance_database"] == "postgres" and "exec_prefix" not in settings
    json.dumps(settings)  # plain data


def test_a_load_into_the_source_database_or_without_its_globals_is_refused(tmp_path):
    dump = tmp_path / "shop.pgdump"
    dump.write_bytes(b"PGDMP")
    with pytest.raises(RestoreError, match="refusing to load the dump into the database it was taken from"):
        ASSET.load(str(dump), artifact(), "shop")
    with_globals = artifact(globals={"file": "shop-db.globals.sql.zst.age", "size": 10, "sha256": "1" * 64})
    with pytest.raises(RestoreError, match="the globals of shop-db are missing beside the dump"):
        ASSET.load(str(dump), with_globals, "shop_check")
    assert ASSET.extra_files(with_globals) == [{"file": "shop-db.globals.sql.zst.age", "size": 10, "sha256": "1" * 64}]
    assert ASSET.extra_files(artifact()) == []
