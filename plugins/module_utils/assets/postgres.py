# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``postgres`` asset type: ``pg_dump --format=custom`` streamed through the seal pipeline.

Backup
    a short ``psql`` query first (server version, database size, table count;
    it also fails early and clearly on a wrong database, role, password or a
    server that is down), then ``pg_dump --format=custom --compress=0`` whose
    stdout *is* the capture stream: no temporary file, zstd compresses it once.
    ``pg_dump`` dumps from one snapshot (a repeatable-read transaction), so a
    database under live writes is captured consistently. Its exit status is
    checked in ``Captured.finish()``, which the engine calls after the seal and
    before the artifact is committed: a dump that failed half-way (lost
    connection, lock timeout, killed) is never committed, and the error names
    the cause from ``pg_dump``'s own message.

Connection
    ``host``/``port``/``user``/``database`` are passed as ``pg_dump`` options
    (never a password), a libpq ``service`` (with ``service_file``) or the
    ``PG*`` environment may be used instead; a password only ever comes from a
    password file (``passfile`` -> ``PGPASSFILE``, or the user's ``~/.pgpass``).
    ``PGPASSWORD`` is removed from the child environment and every command runs
    with ``--no-password``, so nothing ever waits for a prompt.
    ``become_user`` runs the client tools as another OS user (``postgres`` for
    peer authentication); ``exec_prefix`` runs them through a wrapper such as
    ``docker compose exec -T postgres`` (runbook 004's containerised server).

Restore
    the artifact restores to the dump file itself, at its staging path (the
    asset's ``path`` mirrored under the staging root). ``deep_check`` runs
    ``pg_restore --list`` on it and compares the archive's database name with the
    manifest. When the asset names a ``restore_database`` (a scratch database
    for checks, never the live one), ``deep_check`` also loads the dump into it
    with ``pg_restore --dbname`` (dropping and recreating it only if nodekeep
    made it: it carries a marker comment) and checks that every table holds
    exactly as many rows as the dump's data for it. ``load_into_database`` does
    the same for any database name, for drills and manual restores.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import io
import json
import os
import pwd
import re
import time
from typing import Any, BinaryIO, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _postgres_client as _client
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _postgres_globals as _globals
from ansible_collections.nodekeep.backup.plugins.module_utils.assets import base as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
    check_range,
    describe_os_error,
)

#: the first bytes of a custom-format archive
DUMP_MAGIC = b"PGDMP"


#: comment put on every database nodekeep creates for a restore check; only such databases are ever dropped
MARKER = "nodekeep staging restore"


#: pg_dump options the asset type sets itself or that would break the stream
_REFUSED_DUMP_OPTIONS = (
    "-F",
    "--format",
    "-f",
    "--file",
    "-W",
    "--password",
    "-j",
    "--jobs",
    "-d",
    "--dbname",
    "-h",
    "--host",
    "-p",
    "--port",
    "-U",
    "--username",
)


_IDENT = r'(?:"(?:[^"]|"")+"|[^\s."(]+)'


_COPY_RE = re.compile(r"^COPY (%s\.%s)(?: \(.*\))? FROM stdin;$" % (_IDENT, _IDENT))


#: how many tables are counted per query
COUNT_BATCH = 100


#: at most this many tables are listed in the facts of a restore check
ROWS_LISTED = 200


# --------------------------------------------------------------------------
# options and commands
# --------------------------------------------------------------------------


def _label(settings: dict[str, Any]) -> str:
    return "asset %s" % settings.get("name", "?")


def _argv_list(value: Any, option: str, label: str) -> list[str]:
    if value in (None, "", []):
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise CaptureError(
            "%s: %s must be a list of arguments" % (label, option),
            "write it as a YAML list, e.g. ['--exclude-table-data=audit_log']",
        )
    return [str(item) for item in value]


def _has_password(text: str) -> bool:
    return bool(re.search(r"password\s*=", text, re.IGNORECASE)) or bool(re.search(r"://[^/@\s]*:[^/@\s]*@", text))


def validate(settings: dict[str, Any], label: str) -> dict[str, Any]:
    """Check the connection and dump options (no server access); returns them normalized."""
    out = dict(settings)
    database = str(out.get("database") or "")
    if not database:
        raise CaptureError("%s: no database was given" % label, "set database to the name of the database to dump")
    for option in ("database", "host", "service", "restore_database", "maintenance_database"):
        if out.get(option) and _has_password(str(out[option])):
            raise CaptureError(
                "%s: %s contains a password" % (label, option),
                "never put a password in the inventory or on a command line: use passfile (a .pgpass file, 0600)",
            )
    for option in ("passfile", "service_file", "bin_dir"):
        value = out.get(option)
        if value and not os.path.isabs(str(value)):
            raise CaptureError(
                "%s: %s must be an absolute path, not %r" % (label, option, value),
                "give the full path on the node, e.g. /etc/nodekeep/pgpass",
            )
    out["dump_options"] = _argv_list(out.get("dump_options"), "dump_options", label)
    if out.get("restore_options") is not None:  # None: chosen at restore (owners and grants kept with the globals)
        out["restore_options"] = _argv_list(out.get("restore_options"), "restore_options", label)
    for option in ("globals", "role_passwords"):
        if not isinstance(out.get(option), bool):
            raise CaptureError(
                "%s: %s must be true or false, not %r" % (label, option, out.get(option)),
                "e.g. globals: true (roles and memberships captured with the database), role_passwords: false",
            )
    out["exec_prefix"] = _argv_list(out.get("exec_prefix"), "exec_prefix", label)
    for arg in out["dump_options"] + (out["restore_options"] or []):
        flag = arg.split("=", 1)[0]
        if (
            arg in _REFUSED_DUMP_OPTIONS
            or flag in _REFUSED_DUMP_OPTIONS
            or (len(arg) > 2 and arg[:2] in ("-F", "-f", "-j", "-d", "-h", "-p", "-U"))
        ):
            raise CaptureError(
                "%s: option %s is set by nodekeep itself or breaks the stream" % (label, flag),
                "give the connection with database/host/port/user and leave the format and output to nodekeep",
            )
        if _has_password(arg):
            raise CaptureError(
                "%s: an option contains a password" % label, "use passfile (a .pgpass file, 0600) instead"
            )
    if out.get("port") not in (None, ""):
        out["port"] = check_range(
            out["port"], "%s: port" % label, 1, 65535, why="e.g. port: 5432, or leave it out", error=CaptureError
        )
    for key, high, why in (
        ("connect_timeout", 3600, "one hour at most; e.g. connect_timeout: 60"),
        ("timeout", 604800, "one week at most; e.g. timeout: 3600"),
    ):
        out[key] = check_range(
            out.get(key) or 0, "%s: %s" % (label, key), 1, high, "seconds", why=why, error=CaptureError
        )
    restore_db = out.get("restore_database")
    if restore_db and str(restore_db) == database:
        raise CaptureError(
            "%s: restore_database is the database that is backed up (%s)" % (label, database),
            "name a separate scratch database for restore checks, e.g. %s_nodekeep_check" % database,
        )
    if out.get("become_user"):
        try:
            pwd.getpwnam(str(out["become_user"]))
        except KeyError:
            raise CaptureError(
                "%s: become_user %s is not a user of this host" % (label, out["become_user"]),
                "name the OS user the PostgreSQL client tools run as (e.g. postgres), or leave it empty",
            )
    return out


_FACTS_SQL = """
SELECT json_build_object(
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int,
  'database', current_database(),
  'database_size', pg_database_size(current_database()),
  'encoding', pg_encoding_to_char((SELECT encoding FROM pg_database WHERE datname = current_database())),
  'lc_collate', (SELECT datcollate FROM pg_database WHERE datname = current_database()),
  'lc_ctype', (SELECT datctype FROM pg_database WHERE datname = current_database()),
  'tables', (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
             AND n.nspname NOT LIKE 'pg_toast%%'),
  'role', current_user)
"""


def server_facts(settings: dict[str, Any]) -> dict[str, Any]:
    """Server version, database size and table count (also the connection check before the dump)."""
    what = "connecting to database %s" % settings["database"]
    output = _client.psql(settings, settings["database"], _FACTS_SQL.replace("%%", "%"), what)
    try:
        return json.loads(output.splitlines()[-1])
    except (ValueError, IndexError):
        raise CaptureError(
            "%s: psql answered %r, not the expected facts" % (what, output[:200]),
            "check exec_prefix and that psql talks to a PostgreSQL server",
        )


def client_version(settings: dict[str, Any], tool: str = "pg_dump") -> str:
    argv = [_client.tool(settings, tool), "--version"]
    return _client.run(settings, argv, "%s --version" % tool).strip()


# --------------------------------------------------------------------------
# capture: pg_dump's stdout is the stream
# --------------------------------------------------------------------------


class _DumpStream(io.RawIOBase):
    """``pg_dump``'s stdout, remembering the first bytes (to check the archive magic) and the size."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self.raw = raw
        self.head = b""
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read1(len(buffer)) if hasattr(self.raw, "read1") else self.raw.read(len(buffer))
        count = len(data)
        buffer[:count] = data
        if len(self.head) < 16:
            self.head += data[: 16 - len(self.head)]
        self.size += count
        return count


class _Dump:
    """One running ``pg_dump``; ``finish()`` decides whether its output is a complete archive."""

    def __init__(self, settings: dict[str, Any], scratch_dir: str) -> None:
        self.settings = settings
        argv = [_client.tool(settings, "pg_dump"), "--format=custom"]
        if not any(arg.startswith(("-Z", "--compress")) for arg in settings["dump_options"]):
            argv.append("--compress=0")  # zstd compresses the stream once, better than zlib inside the archive
        argv += settings["dump_options"] + _client.connection_args(settings, settings["database"])
        self.began = time.monotonic()
        what = "pg_dump of database %s" % settings["database"]
        self.proc = _client.start(settings, argv, what, stdout=_client.PIPE, errors_dir=scratch_dir)
        self.stream = _DumpStream(self.proc.stdout)

    def finish(self) -> dict[str, Any]:
        what = "pg_dump of database %s" % self.settings["database"]
        code = self.proc.wait(self.settings.get("timeout") or 3600)
        if code is None:
            raise CaptureError("%s did not exit after its output ended" % what, "nothing was committed; retry")
        message = self.proc.stderr(_client.STDERR_LIMIT)
        if code != 0:
            problem, remedy = _client.explain(message, self.settings, what)
            raise CaptureError(problem, "%s; nothing was committed" % remedy, exit_status=code)
        if not self.stream.head.startswith(DUMP_MAGIC):
            raise CaptureError(
                "%s exited 0 but its output is not a custom-format archive (%d bytes)" % (what, self.stream.size),
                "check exec_prefix: the wrapper must pass pg_dump's stdout through unchanged (docker exec -T)",
            )
        return {"dump_seconds": round(time.monotonic() - self.began, 3), "dump_size": self.stream.size}

    def close(self) -> None:
        self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.close()


def _public_settings(settings: dict[str, Any]) -> dict[str, Any]:
    keys = ("host", "port", "user", "service", "become_user", "exec_prefix", "bin_dir", "passfile", "service_file")
    return {key: settings[key] for key in keys if settings.get(key) not in (None, "", [])}


# --------------------------------------------------------------------------
# restore checks
# --------------------------------------------------------------------------


def _list_archive(settings: dict[str, Any], dump_path: str, error=RestoreError) -> str:
    local = dict(settings, exec_prefix=[], become_user=None)
    with open(dump_path, "rb") as stream:
        return _client.run(
            local, [_client.tool(local, "pg_restore"), "--list"], "pg_restore --list of %s" % dump_path, error, stream
        )


_LIST_HEADERS = {"dbname": "dbname", "Format": "format", "Dumped from database version": "dumped_from"}


def archive_facts(listing: str) -> dict[str, Any]:
    """Header and TOC counts from ``pg_restore --list`` output."""
    facts: dict[str, Any] = {"toc_entries": 0, "table_data": 0}
    for line in listing.splitlines():
        header = re.match(r";\s+(dbname|Format|Dumped from database version):\s*(.*)$", line)
        if header:
            facts[_LIST_HEADERS[header.group(1)]] = header.group(2).strip()
        elif line and not line.startswith(";"):
            facts["toc_entries"] += 1
            if re.match(r"^\d+; \d+ \d+ TABLE DATA ", line):
                facts["table_data"] += 1
    return facts


_DEFAULT_TABLESPACE_RE = re.compile(r"^SET default_tablespace = (%s);$" % _IDENT)


def dump_tablespaces(settings: dict[str, Any], dump_path: str) -> list[str]:
    """The tablespaces the dump's objects are created in (``SET default_tablespace`` in its schema), in order."""
    local = dict(settings, exec_prefix=[], become_user=None)
    argv = [_client.tool(local, "pg_restore"), "--schema-only", "--file=-"]
    with open(dump_path, "rb") as stream:
        schema = _client.run(local, argv, "reading the tablespaces of %s" % dump_path, RestoreError, stream)
    found: list[str] = []
    for line in schema.splitlines():
        match = _DEFAULT_TABLESPACE_RE.match(line)
        name = _globals.unquote(match.group(1)) if match and match.group(1) != "''" else ""  # '': the default
        if name and name not in found:
            found.append(name)
    return found


def dump_row_counts(settings: dict[str, Any], dump_path: str) -> dict[str, int]:
    """Rows per table in the dump's data (``pg_restore --data-only -f -``; one COPY line is one row)."""
    local = dict(settings, exec_prefix=[], become_user=None)
    argv = [_client.tool(local, "pg_restore"), "--data-only", "--file=-"]
    counts: dict[str, int] = {}
    with open(dump_path, "rb") as source:
        proc = _client.start(local, argv, "reading the dump", stdin=source, stdout=_client.PIPE)
        current = None
        try:
            for raw in proc.stdout:
                if current is not None:
                    if raw == b"\\.\n":
                        current = None
                    else:
                        counts[current] += 1
                    continue
                if raw.startswith(b"COPY "):
                    match = _COPY_RE.match(raw.decode("utf-8", "replace").rstrip("\n"))
                    if match:
                        current = match.group(1)
                        counts.setdefault(current, 0)
        finally:
            proc.stdout.close()
            code = proc.wait(settings.get("timeout") or 3600)
            message = proc.stderr(_client.STDERR_LIMIT)
            proc.close()
        if code != 0:
            problem, remedy = _client.explain(message if code is not None else "timed out", local, "reading the dump")
            raise RestoreError(problem, remedy)
    return counts


def _prepare_database(settings: dict[str, Any], database: str, label: str, mark: bool = True) -> None:
    """(Re)create ``database`` for a restore check; an existing one only if nodekeep made it.

    ``mark=False`` (a restore under the database's own name) creates it only when it
    does not exist and leaves no marker on it.
    """
    maintenance = settings.get("maintenance_database") or "postgres"
    what = "preparing the restore database %s" % database
    # One row ("x" + its comment) when the database exists, none otherwise.
    found = _client.psql(
        settings,
        maintenance,
        "SELECT 'x' || coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s"
        % _client.quote_literal(database),
        what,
        RestoreError,
    )
    exists = found.startswith("x")
    comment = found[1:]
    if exists:
        if not mark or not comment.startswith(MARKER):
            raise RestoreError(
                "the restore database %s exists and was not made by nodekeep" % database,
                "name a database that does not exist yet (nodekeep creates it and marks it), or drop this one "
                "yourself if it really is a scratch copy; nothing was changed",
            )
        _client.psql(
            settings, maintenance, "DROP DATABASE %s WITH (FORCE)" % _client.quote_ident(database), what, RestoreError
        )
    # The source's encoding and collation: the same text compares, sorts and loads the same way.
    create = "CREATE DATABASE %s TEMPLATE template0" % _client.quote_ident(database)
    for option, key in (("ENCODING", "encoding"), ("LC_COLLATE", "lc_collate"), ("LC_CTYPE", "lc_ctype")):
        if settings.get(key):
            create += " %s %s" % (option, _client.quote_literal(str(settings[key])))
    _client.psql(settings, maintenance, create, what, RestoreError)
    if mark:
        _client.psql(
            settings,
            maintenance,
            "COMMENT ON DATABASE %s IS %s"
            % (_client.quote_ident(database), _client.quote_literal("%s: %s" % (MARKER, label))),
            what,
            RestoreError,
        )


def database_row_counts(settings: dict[str, Any], database: str, tables: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for start in range(0, len(tables), COUNT_BATCH):
        batch = tables[start : start + COUNT_BATCH]
        sql = "SELECT json_build_array(%s)" % ", ".join("(SELECT count(*) FROM ONLY %s)" % name for name in batch)
        output = _client.psql(settings, database, sql, "counting rows in %s" % database, RestoreError)
        counts.update(zip(batch, json.loads(output.splitlines()[-1])))
    return counts


def load_into_database(
    settings: dict[str, Any],
    dump_path: str,
    database: str,
    label: str = "",
    expected: dict[str, int] | None = None,
    mark: bool = True,
    globals_path: str | None = None,
) -> dict[str, Any]:
    """``pg_restore --dbname`` the dump into a fresh ``database`` and check every table's row count.

    ``settings`` are the connection options (as for a backup). ``restore_options``
    are passed to pg_restore; when they are not set (None), owners and grants are kept
    if the globals file ``globals_path`` (``pg_dumpall --globals-only``) is given and the
    restoring role is a superuser: the roles the cluster lacks are created first, then
    the dump is restored with its owners, GRANTs and default privileges, then the
    database's own GRANTs, settings and comment are applied to ``database``. Otherwise
    ``--no-owner --no-privileges``, and the result says why (``privileges``).
    Returns ``{database, tables, rows, seconds, privileges, ...}``; a table whose count differs
    from the dump's data raises RestoreError naming it. ``mark=False`` restores
    under a name that must not exist yet and leaves no marker (a real restore).
    """
    began = time.monotonic()
    settings = dict(settings)
    settings.setdefault("timeout", 3600)
    settings.setdefault("connect_timeout", 10)
    label = label or os.path.basename(dump_path)
    if expected is None:
        expected = dump_row_counts(settings, dump_path)
    maintenance = settings.get("maintenance_database") or "postgres"
    options = settings.get("restore_options")
    extra: dict[str, Any] = {}
    warnings: list[str] = []
    keep = False
    if options is None:
        if not globals_path:
            extra["privileges"] = "not restored: the epoch holds no globals (roles) for them"
        elif not _globals.superuser(settings, maintenance):
            extra["privileges"] = (
                "not restored: the restoring role is not a superuser (it cannot create roles or owners)"
            )
        else:
            keep = True
        options = [] if keep else ["--no-owner", "--no-privileges"]
        if not keep:
            warnings.append(
                "%s was loaded into %s WITHOUT its owners, GRANTs and default privileges (%s): every object now "
                "belongs to the restoring role and nobody else may use it. Restore as a superuser (the asset's "
                "user or become_user) with the epoch's globals to keep them, or choose with restore_options"
                % (label, database, extra["privileges"])
            )
        # a tablespace the cluster lacks would fail the load: its objects go to the default one, said loudly (the
        # tablespaces the globals create, or without globals those the dump's objects are created in)
        if globals_path:
            missing = _globals.missing_tablespaces(settings, str(globals_path))
        else:
            missing = _globals.absent_tablespaces(settings, dump_tablespaces(settings, dump_path))
        if missing:
            options = options + ["--no-tablespaces"]
            extra["tablespaces_not_created"] = missing
            warnings.append(
                "%s: the tablespace(s) %s do not exist on this cluster and are never created by a restore (their "
                "directory belongs to the host): their tables and indexes were loaded into the database's default "
                "tablespace (pg_restore --no-tablespaces). To keep them, create them first (CREATE TABLESPACE NAME "
                "LOCATION 'DIR') and restore again, or choose with restore_options" % (label, ", ".join(missing))
            )
    else:
        extra["privileges"] = "as restore_options say: %s" % (" ".join(options) or "(none)")
    if keep:
        extra["globals"] = _globals.apply_globals(settings, str(globals_path))
    _prepare_database(settings, database, label, mark)
    argv = [_client.tool(settings, "pg_restore"), "--exit-on-error", "--single-transaction"] + list(options)
    argv += _client.connection_args(settings, database)
    with open(dump_path, "rb") as stream:
        _client.run(settings, argv, "pg_restore into %s" % database, RestoreError, stream)
    if keep:
        source = str(settings.get("database") or "")
        sql = _globals.database_properties(settings, dump_path, source, database) if source else ""
        if sql.strip():
            argv = [_client.tool(settings, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
            argv += _client.connection_args(settings, database) + ["-f", "-"]
            what = "granting the database's own privileges on %s" % database
            _client.run(settings, argv, what, RestoreError, input_bytes=sql.encode("utf-8"))
        extra["privileges"] = "restored: owners, GRANTs, default privileges and the database's own GRANTs"
    if warnings:
        extra["warnings"] = warnings
    found = database_row_counts(settings, database, sorted(expected))
    different = {name: (expected[name], found.get(name)) for name in expected if found.get(name) != expected[name]}
    if different:
        shown = ", ".join(
            "%s: dump %d, restored %s" % (name, rows[0], rows[1]) for name, rows in sorted(different.items())[:10]
        )
        raise RestoreError(
            "the restored database %s does not hold the dump's rows (%s)" % (database, shown),
            "the restore is incomplete; do not use it, check pg_restore's output and the server log",
        )
    listed = dict(sorted(expected.items())[:ROWS_LISTED])
    encoding, collate, ctype = _client.psql(
        settings,
        settings.get("maintenance_database") or "postgres",
        "SELECT concat_ws('|', pg_encoding_to_char(encoding), datcollate, datctype) FROM pg_database WHERE datname = %s"
        % _client.quote_literal(database),
        "reading the encoding of %s" % database,
        RestoreError,
    ).split("|")
    return {
        "database": database,
        "encoding": encoding,
        "lc_collate": collate,
        "lc_ctype": ctype,
        "tables": len(expected),
        "rows": sum(expected.values()),
        "row_counts": listed,
        "seconds": round(time.monotonic() - began, 3),
        **extra,
    }


# --------------------------------------------------------------------------
# the asset type
# --------------------------------------------------------------------------


class PostgresAssetType(_assets.FileAssetType):
    """A PostgreSQL database, dumped in custom format by ``pg_dump`` as one stream."""

    name = "postgres"
    extension = ".pgdump"
    content_format = "pgdump-custom"
    options: ClassVar[dict[str, Any]] = {
        "database": None,
        "host": None,
        "port": None,
        "user": None,
        "passfile": None,
        "service": None,
        "service_file": None,
        "dump_options": [],
        "become_user": None,
        "exec_prefix": [],
        "bin_dir": None,
        "connect_timeout": 10,
        "timeout": 21600,
        "restore_database": None,
        "restore_options": None,
        "maintenance_database": "postgres",
        "globals": True,
        "role_passwords": False,
    }

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        return validate(normalized, "asset %s" % normalized["name"])

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        settings = dict(asset)
        facts = server_facts(settings)
        facts["pg_dump_version"] = client_version(settings)
        facts.update(_public_settings(settings))
        if settings.get("restore_database"):
            facts["restore_database"] = settings["restore_database"]
            facts["restore_options"] = settings["restore_options"]
            facts["maintenance_database"] = settings.get("maintenance_database") or "postgres"
        if settings.get("globals"):
            facts["globals"] = _globals.seal_globals(settings, context)
        dump = _Dump(settings, scratch_dir)
        try:
            yield _assets.Captured(dump.stream, facts, finish=dump.finish)
        finally:
            dump.close()

    @staticmethod
    def globals_of(artifact) -> dict[str, Any] | None:
        """The signed facts of the globals sealed beside the dump, or None (``globals: false``, older epochs)."""
        info = artifact.source.get("globals") if artifact is not None else None
        return info if isinstance(info, dict) and info.get("file") else None

    def extra_files(self, artifact) -> list[dict[str, Any]]:
        info = self.globals_of(artifact)
        return [{"file": info["file"], "size": int(info["size"]), "sha256": info["sha256"]}] if info else []

    def verify_extra(self, artifact, context, deep: bool) -> dict[str, Any]:
        info = self.globals_of(artifact)
        return _globals.verify_globals(context, info, deep) if info else {}

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        """The dump at ``target`` and, when the epoch holds them, the globals at ``target.globals.sql`` (0600)."""
        info = self.globals_of(getattr(context, "artifact", None))
        globals_target = target + _globals.SUFFIX
        if info and os.path.lexists(globals_target) and not force:
            raise RestoreError(
                "the restore target %s already exists" % globals_target,
                "restore into an empty staging path (nodekeep_restore_to) or set nodekeep_restore_force: true",
            )
        with super().restore_into(target, force, context) as staged:
            temp = staged.path + _globals.SUFFIX
            try:
                if info:
                    _globals.unseal_globals(context, info, temp)
                yield staged
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        if info:
            try:
                if os.path.lexists(globals_target):
                    os.rename(globals_target, "%s.nodekeep-replaced-%d" % (globals_target, int(time.time())))
                os.link(temp, globals_target)
            except OSError as exc:
                raise describe_os_error(exc, "placing the restored globals", globals_target)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(temp)

    def settings_from(self, artifact) -> dict[str, Any]:
        """The connection settings recorded in an artifact's facts (for checks and restores)."""
        source = artifact.source
        keys = ("host", "port", "user", "service", "become_user", "exec_prefix", "bin_dir", "passfile", "service_file")
        settings = {key: source[key] for key in keys if source.get(key) not in (None, "", [])}
        settings.update(
            name=artifact.name,
            database=source.get("database"),
            restore_options=source.get("restore_options"),
            maintenance_database=source.get("maintenance_database") or "postgres",
            encoding=source.get("encoding"),
            lc_collate=source.get("lc_collate"),
            lc_ctype=source.get("lc_ctype"),
            timeout=21600,
            connect_timeout=10,
        )
        if settings.get("become_user"):
            try:
                pwd.getpwnam(str(settings["become_user"]))
            except KeyError:
                settings.pop("become_user")  # another host (a staging host) may not have that user
        return settings

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        settings = self.settings_from(artifact)
        listing = _list_archive(settings, path)
        facts = archive_facts(listing)
        if facts.get("format") != "CUSTOM":
            raise RestoreError(
                "the restored dump %s is not a custom-format archive (%s)" % (path, facts.get("format")),
                "the artifact does not match its manifest; restore another epoch",
            )
        database = artifact.source.get("database")
        if database and facts.get("dbname") and facts["dbname"] != database:
            raise RestoreError(
                "the restored dump %s is of database %s, the manifest says %s" % (path, facts["dbname"], database),
                "the artifact does not match its manifest; restore another epoch",
            )
        checks: dict[str, Any] = {"list": "ok", "toc_entries": facts["toc_entries"], "table_data": facts["table_data"]}
        restore_db = artifact.source.get("restore_database")
        if restore_db and check != "quick":
            checks["restore"] = self.load(path, artifact, restore_db)
            if checks["restore"].get("warnings"):
                checks["warnings"] = list(checks["restore"]["warnings"])  # raised to the module's warnings
        return checks

    def drop_scratch(self, artifact) -> None:
        """A deep verify's scratch database is dropped once checked (only one nodekeep made and marked)."""
        database = artifact.source.get("restore_database")
        if not database or database == artifact.source.get("database"):
            return
        settings = self.settings_from(artifact)
        maintenance = settings.get("maintenance_database") or "postgres"
        what = "dropping the scratch database %s" % database
        with contextlib.suppress(NodekeepError):
            comment = _client.psql(
                settings,
                maintenance,
                "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s"
                % _client.quote_literal(database),
                what,
                RestoreError,
            )
            if comment.startswith(MARKER):
                _client.psql(
                    settings,
                    maintenance,
                    "DROP DATABASE %s WITH (FORCE)" % _client.quote_ident(database),
                    what,
                    RestoreError,
                )

    def load(
        self, path: str, artifact, database: str, settings: dict[str, Any] | None = None, replace_source: bool = False
    ) -> dict[str, Any]:
        """Load a restored dump into ``database`` and compare every table's rows with the dump.

        A scratch database is created (or re-created if nodekeep made it). The
        database the dump was taken from is refused unless ``replace_source``:
        then it must not exist (drop or rename the damaged one first) and is
        created without the scratch marker.
        """
        source = database == artifact.source.get("database")
        if source and not replace_source:
            raise RestoreError(
                "refusing to load the dump into the database it was taken from (%s)" % database,
                "name a separate scratch database, or drop the damaged database and ask for replace_source",
            )
        merged = self.settings_from(artifact)
        merged.update(settings or {})
        globals_path = path + _globals.SUFFIX if self.globals_of(artifact) else None
        if globals_path and not os.path.isfile(globals_path):
            raise RestoreError(
                "the globals of %s are missing beside the dump (%s)" % (artifact.name, globals_path),
                "restore the epoch again (epoch_restore writes both files)",
            )
        try:
            return load_into_database(
                merged,
                path,
                database,
                label="%s of %s" % (artifact.name, artifact.source.get("database")),
                mark=not source,
                globals_path=globals_path,
            )
        except NodekeepError:
            raise
        except OSError as exc:
            raise RestoreError("loading %s into %s failed: %s" % (path, database, exc))
