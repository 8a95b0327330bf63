# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private helper of the ``postgres`` asset type: the cluster's globals and the database's own grants.

A database dump holds the grants on its schemas, tables, sequences and functions and its default
privileges, but not the roles they name (cluster-wide) nor the database's own ACL, settings and comment
(``pg_restore`` emits those only with ``--create``). At backup, ``pg_dumpall --globals-only
--no-role-passwords`` (password hashes only when the operator sets ``role_passwords: true``) is sealed
beside the dump. At restore, ``apply_globals`` creates the roles the target cluster lacks, with their
attributes, settings and memberships; a role that exists is never changed (a deep check on the source
cluster must not touch live roles). Tablespaces are never created (their directory is the host's); they
are listed. ``database_properties`` gives the database's own GRANTs, settings and comment, renamed to
the database they are loaded into.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import io
import os
import re
import tempfile
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _postgres_client as _client
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    NodekeepError,
    RestoreError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import stream_digest
from ansible_collections.nodekeep.backup.plugins.module_utils.core.safefs import O_CLOEXEC, O_NOFOLLOW
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import seal, unseal

#: the restored globals file sits beside the restored dump: ``PATH.globals.sql``
SUFFIX = ".globals.sql"

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_ROLE = re.compile(
    r"^(?:CREATE ROLE|ALTER ROLE|ALTER USER|COMMENT ON ROLE|SECURITY LABEL FOR \S+ ON ROLE) (%s)" % _IDENT
)
_IN_DATABASE = re.compile(r"^ALTER ROLE %s IN DATABASE (%s) " % (_IDENT, _IDENT))
_MEMBERSHIP = re.compile(r"^GRANT (%s) TO (%s)(?: |;)" % (_IDENT, _IDENT))
_PARAMETER = re.compile(r"^(?:GRANT|REVOKE) .* ON PARAMETER .* (?:TO|FROM) (%s)(?: WITH GRANT OPTION)?;$" % _IDENT)
_TABLESPACE = re.compile(r"^(?:CREATE|ALTER|COMMENT ON|GRANT .* ON|REVOKE .* ON) TABLESPACE (%s)" % _IDENT)
_GRANTED_BY = re.compile(r" GRANTED BY (%s);$" % _IDENT)


def unquote(ident: str) -> str:
    if ident.startswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


def dump_globals(settings: dict[str, Any]) -> bytes:
    """``pg_dumpall --globals-only`` of the cluster, without password hashes unless ``role_passwords``."""
    argv = [_client.tool(settings, "pg_dumpall"), "--globals-only"]
    if not settings.get("role_passwords"):
        argv.append("--no-role-passwords")
    argv += _client.connection_args(settings, None)
    argv.append("--database=%s" % (settings.get("maintenance_database") or "postgres"))
    text = _client.run(settings, argv, "pg_dumpall --globals-only (roles, memberships, tablespaces)", CaptureError)
    return text.encode("utf-8")


def count_roles(sql: bytes) -> int:
    return sum(1 for line in sql.decode("utf-8", "replace").splitlines() if line.startswith("CREATE ROLE "))


def seal_globals(settings: dict[str, Any], context) -> dict[str, Any]:
    """Dump the globals and seal them into the epoch beside the dump; the facts the manifest records.

    No hash of the plaintext is recorded (it may hold password hashes): the signed SHA-256 of the
    sealed bytes, which age authenticates, pins it.
    """
    if context is None or getattr(context, "repository", None) is None or not context.recipients:
        raise CaptureError(
            "asset %s: the globals are sealed through the engine's run context" % settings.get("name"),
            "back it up through epoch_backup, or set globals: false",
        )
    sql = dump_globals(settings)
    name = "%s%s.zst.age" % (settings["name"], SUFFIX)
    repository = context.repository
    with repository.open_write(context.node, context.epoch, name) as sink:
        result = seal(
            io.BytesIO(sql),
            sink,
            context.recipients,
            level=context.level,
            sink_name=repository.describe(context.node, context.epoch, name),
        )
    return {
        "file": name,
        "size": result.sealed.size,
        "sha256": result.sealed.sha256,
        "content_size": result.content.size,
        "roles": count_roles(sql),
        "role_hashes": bool(settings.get("role_passwords")),
    }


def _check_sealed(info: dict[str, Any], size: int, sha256: str, where: str) -> None:
    if (size, sha256) != (int(info["size"]), info["sha256"]):
        raise IntegrityError(
            "the globals %s do not match the manifest's size and SHA-256 (modified or damaged)" % where,
            "do not trust this copy; restore another epoch or copy",
        )


def unseal_globals(context, info: dict[str, Any], path: str) -> None:
    """Write the globals of the epoch to the new file ``path`` (0600), checked against the signed manifest."""
    if not context.identities:
        raise RestoreError("the globals need an age identity to be opened", "set nodekeep_age_identity_file")
    repository = context.repository
    where = repository.describe(context.node, context.epoch, info["file"])
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
    try:
        with open(fd, "wb") as out, repository.open_read(context.node, context.epoch, info["file"]) as stream:
            result = unseal(stream, out, context.identities, sink_name=path, limit=int(info["content_size"]))
            out.flush()
            os.fsync(out.fileno())
    except NodekeepError as exc:
        raise type(exc)("the globals %s: %s" % (where, exc.problem), exc.remedy) from exc
    _check_sealed(info, result.sealed.size, result.sealed.sha256, where)
    if result.content.size != int(info["content_size"]):
        raise IntegrityError("the globals %s decrypt to another size than recorded" % where, "restore another epoch")


def verify_globals(context, info: dict[str, Any], deep: bool) -> dict[str, Any]:
    """The sealed globals are there with their size and SHA-256; ``deep``: they also decrypt to their size."""
    repository = context.repository
    where = repository.describe(context.node, context.epoch, info["file"])
    try:
        if deep and context.identities:
            sink = io.BytesIO()
            with repository.open_read(context.node, context.epoch, info["file"]) as stream:
                result = unseal(stream, sink, context.identities, limit=int(info["content_size"]))
            _check_sealed(info, result.sealed.size, result.sealed.sha256, where)
            if result.content.size != int(info["content_size"]):
                raise IntegrityError("the globals %s decrypt to another size than recorded" % where)
        else:
            with repository.open_read(context.node, context.epoch, info["file"]) as stream:
                size, sha256 = stream_digest(stream)
            _check_sealed(info, size, sha256, where)
    except FileNotFoundError:
        raise IntegrityError("the globals %s are missing from the epoch" % where, "restore another epoch or copy")
    except IntegrityError:
        raise
    except NodekeepError as exc:
        raise IntegrityError("the globals %s: %s" % (where, exc.problem), exc.remedy) from exc
    return {"globals": "ok", "roles": info.get("roles")}


def _statements(text: str, path: str) -> list[str]:
    """The SQL statements of a ``pg_dumpall --globals-only`` file (comments and ``\\restrict`` lines dropped)."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if not current and (not line.strip() or line.startswith("--")):
            continue
        if not current and line.startswith("\\"):
            if line.startswith(("\\restrict ", "\\unrestrict ")):
                continue
            raise RestoreError(
                "the globals file %s holds a psql meta-command (%s)" % (path, line[:40]),
                "it was not made by pg_dumpall for nodekeep; restore another epoch, nothing was applied",
            )
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current))
            current = []
    if current:
        raise RestoreError("the globals file %s ends in the middle of a statement" % path, "restore another epoch")
    return statements


def plan_globals(text: str, existing_roles: set[str], existing_databases: set[str], path: str = "") -> dict[str, Any]:
    """Which statements of the globals file to apply to a cluster that has ``existing_roles``.

    Returns ``{sql, created, kept, tablespaces, skipped}``: only roles missing from the cluster are
    created (with their attributes, settings, comments and memberships); an existing role is kept as it is.
    """
    statements = _statements(text, path)
    created: list[str] = []
    for statement in statements:
        match = re.match(r"^CREATE ROLE (%s);$" % _IDENT, statement)
        if match and unquote(match.group(1)) not in existing_roles:
            created.append(unquote(match.group(1)))
    new = set(created)
    known = existing_roles | new
    chosen: list[str] = []
    kept: set[str] = set()
    tablespaces: list[str] = []
    skipped: list[str] = []
    for statement in statements:
        tablespace = _TABLESPACE.match(statement)
        role = _ROLE.match(statement)
        member = _MEMBERSHIP.match(statement)
        parameter = _PARAMETER.match(statement)
        if statement.startswith("SET "):
            chosen.append(statement)
        elif tablespace:
            name = unquote(tablespace.group(1))
            if statement.startswith("CREATE") and name not in tablespaces:
                tablespaces.append(name)
        elif role:
            name = unquote(role.group(1))
            if name not in new:
                kept.add(name)
                continue
            database = _IN_DATABASE.match(statement)
            if database and unquote(database.group(1)) not in existing_databases:
                skipped.append(statement.splitlines()[0][:120])
                continue
            chosen.append(statement)
        elif member:
            granted, grantee = unquote(member.group(1)), unquote(member.group(2))
            if (granted in new or grantee in new) and granted in known and grantee in known:
                by = _GRANTED_BY.search(statement)
                if by and unquote(by.group(1)) not in known:
                    statement = statement[: by.start()] + ";"  # granted by a role the cluster lacks: by us
                chosen.append(statement)
        elif parameter:
            if unquote(parameter.group(1)) in new:
                chosen.append(statement)
        else:
            skipped.append(statement.splitlines()[0][:120])
    return {
        "sql": "\n".join(chosen) + "\n",
        "created": created,
        "kept": len(kept),
        "tablespaces": tablespaces,
        "skipped": skipped[:20],
    }


def _names(settings: dict[str, Any], maintenance: str, sql: str, what: str) -> set[str]:
    output = _client.psql(settings, maintenance, sql, what, RestoreError)
    return {line for line in output.splitlines() if line}


def missing_tablespaces(settings: dict[str, Any], path: str) -> list[str]:
    """The tablespaces the globals file ``path`` creates that the target cluster lacks (none are ever created:
    their directory belongs to the host)."""
    with open(path, "rb") as handle:
        wanted = plan_globals(handle.read().decode("utf-8"), set(), set(), path)["tablespaces"]
    return absent_tablespaces(settings, wanted)


def absent_tablespaces(settings: dict[str, Any], wanted: list[str]) -> list[str]:
    """The tablespaces of ``wanted`` that the target cluster lacks (in their order)."""
    if not wanted:
        return []
    maintenance = settings.get("maintenance_database") or "postgres"
    existing = _names(settings, maintenance, "SELECT spcname FROM pg_tablespace", "listing the tablespaces")
    return [name for name in wanted if name not in existing]


def superuser(settings: dict[str, Any], maintenance: str) -> bool:
    return (
        _client.psql(
            settings,
            maintenance,
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user",
            "reading the restoring role's rights",
            RestoreError,
        )
        == "t"
    )


def apply_globals(settings: dict[str, Any], path: str) -> dict[str, Any]:
    """Create the roles of the globals file ``path`` that the cluster lacks (one transaction); report what was done."""
    maintenance = settings.get("maintenance_database") or "postgres"
    with open(path, "rb") as handle:
        text = handle.read().decode("utf-8")
    roles = _names(settings, maintenance, "SELECT rolname FROM pg_roles", "listing the roles of the cluster")
    databases = _names(settings, maintenance, "SELECT datname FROM pg_database", "listing the databases")
    plan = plan_globals(text, roles, databases, path)
    if plan["created"]:
        argv = [_client.tool(settings, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
        argv += _client.connection_args(settings, maintenance) + ["-f", "-"]
        _client.run(settings, argv, "creating the roles of the globals", RestoreError, input_bytes=plan["sql"].encode())
    result = {"roles_created": plan["created"], "roles_kept": plan["kept"]}
    if plan["tablespaces"]:
        result["tablespaces_not_created"] = plan["tablespaces"]
    if plan["skipped"]:
        result["skipped"] = plan["skipped"]
    return result


_DATABASE_ENTRY = re.compile(r"^\d+; \d+ \d+ (?:ACL - DATABASE |DATABASE PROPERTIES - |COMMENT - DATABASE )")


def database_properties(settings: dict[str, Any], dump_path: str, source: str, target: str) -> str:
    """The SQL of the dump's database-level GRANTs, settings and comment, naming ``target`` instead of ``source``."""
    local = dict(settings, exec_prefix=[], become_user=None)
    pg_restore = _client.tool(local, "pg_restore")
    # the dump is read from stdin: the path may be pinned through this process's descriptors (/proc/self/fd)
    with open(dump_path, "rb") as stream:
        listing = _client.run(local, [pg_restore, "--create", "--list"], "listing the dump", RestoreError, stream)
    wanted = [line for line in listing.splitlines() if _DATABASE_ENTRY.match(line)]
    if not wanted:
        return ""
    with tempfile.NamedTemporaryFile("w", suffix=".list", delete=False) as handle:
        handle.write("\n".join(wanted) + "\n")
    try:
        argv = [pg_restore, "--create", "--use-list=%s" % handle.name, "--file=-"]
        with open(dump_path, "rb") as stream:
            sql = _client.run(local, argv, "reading the database's grants from the dump", RestoreError, stream)
    finally:
        os.unlink(handle.name)
    name = re.compile(r'DATABASE (?:%s|"%s")(?=[\s;])' % (re.escape(source), re.escape(source.replace('"', '""'))))
    statements = []
    current: list[str] = []
    for line in sql.splitlines():
        if not current and (line.startswith(("\\", "--")) or not line.strip()):
            continue  # \connect, \restrict: the statements run in the target database's session
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current)
            current = []
            # the database itself is made by nodekeep (and owned by the restoring role): only its grants,
            # settings and comment are given to it
            if not _MADE_DATABASE.match(statement):
                statements.append(name.sub("DATABASE %s" % _client.quote_ident(target), statement))
    return "\n".join(statements) + "\n"


_MADE_DATABASE = re.compile(r"^(?:CREATE DATABASE |ALTER DATABASE \S+ OWNER TO |ALTER DATABASE .* OWNER TO )")
