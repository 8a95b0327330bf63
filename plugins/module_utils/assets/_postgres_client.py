# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private helper of the ``postgres`` asset type: running the PostgreSQL client tools.

Every tool runs through the one subprocess gateway (``core/process.py``): ``run`` to completion
(``run_command``), ``start`` as a streaming child (``Process``). No password is ever passed
(``--no-password``, ``PGPASSWORD`` removed); ``become_user`` and ``exec_prefix`` apply to every tool.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os
import pwd
import re
import shutil
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import process as _process
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError

STDERR_LIMIT = 64 << 10

#: ``start(..., stdout=PIPE)``: read the tool's output as it comes
PIPE = _process.PIPE
DEVNULL = _process.DEVNULL

_MISSING = "install the PostgreSQL client (Debian: apt-get install postgresql-client), or fix exec_prefix / bin_dir"


def tool(settings: dict[str, Any], name: str) -> str:
    if settings.get("exec_prefix"):
        return os.path.join(settings["bin_dir"], name) if settings.get("bin_dir") else name
    if settings.get("bin_dir"):
        path = os.path.join(settings["bin_dir"], name)
        if os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if not found:
        raise CaptureError(
            "%s is not installed on this host" % name,
            "install the PostgreSQL client (Debian: apt-get install postgresql-client) or set bin_dir",
        )
    return found


def connection_args(settings: dict[str, Any], database: str | None) -> list[str]:
    args = ["--no-password"]
    if settings.get("host"):
        args.append("--host=%s" % settings["host"])
    if settings.get("port"):
        args.append("--port=%d" % int(settings["port"]))
    if settings.get("user"):
        args.append("--username=%s" % settings["user"])
    if database:
        args.append("--dbname=%s" % database)
    return args


def environment(settings: dict[str, Any]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    env["PGCONNECT_TIMEOUT"] = str(settings.get("connect_timeout") or 10)
    env.setdefault("PGAPPNAME", "nodekeep")
    if settings.get("passfile"):
        env["PGPASSFILE"] = str(settings["passfile"])
    if settings.get("service"):
        env["PGSERVICE"] = str(settings["service"])
    if settings.get("service_file"):
        env["PGSERVICEFILE"] = str(settings["service_file"])
    if settings.get("become_user"):
        env["HOME"] = pwd.getpwnam(str(settings["become_user"])).pw_dir
        env["USER"] = env["LOGNAME"] = str(settings["become_user"])
    return env


def identity(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The gateway's ``identity`` that runs the tool as ``become_user`` (only root can), or None."""
    user = settings.get("become_user")
    if not user:
        return None
    return _process.as_user(
        str(user),
        CaptureError,
        "run the task with become: true, or leave become_user empty and use a role this user may log in as",
    )


def _argv(settings: dict[str, Any], argv: list[str]) -> list[str]:
    return list(settings.get("exec_prefix") or []) + argv


def start(settings: dict[str, Any], argv: list[str], what: str, stdin=None, stdout=None, errors_dir=None):
    """A streaming client tool (``pg_dump``, ``pg_restore -f -``) as a gateway ``Process``."""
    return _process.Process(
        _argv(settings, argv),
        what,
        stdin=DEVNULL if stdin is None else stdin,
        stdout=stdout,
        error=CaptureError,
        missing=_MISSING,
        env=environment(settings),
        cwd="/",
        identity=identity(settings),
        errors_dir=errors_dir,
        new_session=True,
    )


def explain(stderr: str, settings: dict[str, Any], what: str) -> tuple[str, str]:
    """A problem and a remedy from a PostgreSQL client tool's error output."""
    text = " ".join(line.strip() for line in stderr.strip().splitlines() if line.strip())[-600:] or "(no message)"
    database = settings.get("database")
    lowered = text.lower()
    if re.search(r'database ".*" does not exist', lowered):
        return (
            "%s: the database does not exist: %s" % (what, text),
            "check the asset's database option (psql -l lists the databases of the server)",
        )
    if re.search(r'role ".*" does not exist', lowered):
        return (
            "%s: the PostgreSQL role does not exist: %s" % (what, text),
            "check the asset's user option, or use become_user for peer authentication",
        )
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return (
            "%s: authentication failed: %s" % (what, text),
            (
                "put the role's password in a .pgpass file (0600) and set passfile, or use become_user "
                "with peer authentication; passwords are never given on a command line"
            ),
        )
    if "peer authentication failed" in lowered or "ident authentication failed" in lowered:
        return (
            "%s: peer authentication failed: %s" % (what, text),
            (
                "check the asset's user option: with peer authentication the PostgreSQL role must match the OS user "
                "the tools run as (become_user, e.g. postgres); or use a role with a password in passfile"
            ),
        )
    if "permission denied" in lowered:
        return (
            "%s: permission denied: %s" % (what, text),
            "grant the backup role read access (e.g. GRANT pg_read_all_data TO ...) or use a superuser role",
        )
    if "server version mismatch" in lowered:
        return (
            "%s: the client tools are older than the server: %s" % (what, text),
            "install the client of the server's major version and set bin_dir (e.g. /usr/lib/postgresql/16/bin)",
        )
    if (
        "could not obtain lock" in lowered
        or "lock timeout" in lowered
        or ("statement timeout" in lowered and "lock table" in lowered)
    ):
        return (
            "%s: a table stayed locked: %s" % (what, text),
            "retry when the schema change holding the lock is done, or raise --lock-wait-timeout in dump_options",
        )
    if "connection to server" in lowered or "could not connect" in lowered or "connection refused" in lowered:
        return (
            "%s: the server cannot be reached: %s" % (what, text),
            "start PostgreSQL or fix host/port (a unix socket directory or a hostname) of the asset",
        )
    written = "; nothing was written for database %s" % database if database else ""
    return ("%s failed: %s" % (what, text), "see the message" + written)


def run(settings: dict[str, Any], argv: list[str], what: str, error=CaptureError, stdin=None, input_bytes=None) -> str:
    """Run a client tool to completion; its stdout, or ``error`` with the explained stderr."""
    done = _process.run_command(
        _argv(settings, argv),
        what,
        timeout=settings.get("timeout") or 3600,
        check=False,
        input_bytes=input_bytes,
        error=error,
        missing=_MISSING,
        remedy="check the server and raise timeout",
        stdin=stdin,
        env=environment(settings),
        cwd="/",
        identity=identity(settings),
    )
    if done.returncode != 0:
        problem, remedy = explain(_process.output_text(done.stderr[:STDERR_LIMIT]), settings, what)
        raise error(problem, remedy, exit_status=done.returncode)
    return _process.output_text(done.stdout)


def psql(settings: dict[str, Any], database: str, sql: str, what: str, error=CaptureError) -> str:
    argv = [tool(settings, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    argv += connection_args(settings, database) + ["-c", sql]
    return run(settings, argv, what, error).strip()


def quote_literal(text: str) -> str:
    return "'%s'" % text.replace("'", "''")


def quote_ident(text: str) -> str:
    return '"%s"' % text.replace('"', '""')
