# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Putting data in place without losing any: standalone SQLite copies, restore cutover and rollback.

* ``backup_sqlite`` (module sqlite_backup): a consistent copy of a live SQLite
  database from ``sqlite_db.copy_database``, hashed, given its owner and mode,
  and put at its destination atomically.
* ``cutover`` (module restore_cutover, state=cutover): the live data (and a
  SQLite file's ``-wal``/``-shm``/``-journal``) is renamed to a safety copy
  beside it, and the verified staged copy is renamed into place. The live data
  is only ever renamed, never copied and deleted; a staged copy on another
  filesystem is first copied (fsynced) to a temporary name beside the live
  path, so the switch itself is two renames. Any failure puts everything back.
* ``rollback`` (state=rollback): the restored data is renamed aside as
  ``PATH.nodekeep-failed-TIME`` (kept) and the safety copy renamed back.

Nothing here deletes user data. The service must be stopped around a cutover
(the restore role does that).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import errno
import os
import re
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.sqlite_db import SIDECARS
from ansible_collections.nodekeep.backup.plugins.module_utils.core import safefs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.archive import copy_tree
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import (
    CHUNK_SIZE,
    format_mode,
    fsync_dir,
    require_absolute,
    resolve_gid,
    resolve_uid,
    set_owner_mode,
    temp_path,
)

SAFETY_INFIX = ".nodekeep-pre-restore-"


FAILED_INFIX = ".nodekeep-failed-"


STAMP_RE = r"\d{8}T\d{6}Z"


# --------------------------------------------------------------------------
# cutover and rollback
# --------------------------------------------------------------------------


class _Renames:
    """Renames done so far, so that a failure can put every one of them back."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []
        self.own_copy: str | None = None  # a temporary copy of the staged data, made by this step

    def move(self, src: str, dst: str) -> None:
        if os.path.lexists(dst):
            raise RestoreError(
                f"{dst} already exists", "nothing is ever overwritten; move it away or pick another name"
            )
        try:
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise RestoreError(
                    f"{src} and {dst} are on different filesystems",
                    "the live data is only ever renamed, never copied and deleted: keep the safety copy beside it",
                )
            if exc.errno == errno.EBUSY:
                raise RestoreError(f"{src} is busy (a mount point or in use)", "stop the service or cut over inside it")
            raise describe_os_error(exc, f"renaming {src} to {dst}", src)
        self.done.append((src, dst))

    def undo(self) -> list[str]:
        """Put everything back, newest first; returns what could not be put back."""
        stuck = []
        for src, dst in reversed(self.done):
            try:
                os.rename(dst, src)
            except OSError as exc:
                stuck.append(f"{dst} (should be {src}: {exc.strerror or exc})")
        self.done = []
        return stuck


def _kind(path: str) -> str | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return "symlink"
    if stat.S_ISDIR(info.st_mode):
        return "directory"
    if stat.S_ISREG(info.st_mode):
        return "file"
    return "other"


def _tree_size(path: str) -> int:
    if not os.path.isdir(path):
        return os.lstat(path).st_size
    total = 0
    for directory, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                pass
    return total


def _overlaps(one: str, other: str) -> bool:
    return one == other or one.startswith(other.rstrip("/") + "/") or other.startswith(one.rstrip("/") + "/")


def _default_safety(path: str, now: float | None) -> str:
    return f"{path}{SAFETY_INFIX}{epoch_name(now)}"


def find_safety_copy(path: str) -> str | None:
    """The newest ``PATH.nodekeep-pre-restore-TIME`` beside ``path``, if any."""
    directory, name = os.path.split(path)
    pattern = re.compile(re.escape(name) + re.escape(SAFETY_INFIX) + "(" + STAMP_RE + ")$")
    try:
        names = os.listdir(directory or ".")
    except OSError:
        return None
    found = sorted((match.group(1), entry) for entry in names for match in [pattern.match(entry)] if match)
    return os.path.join(directory, found[-1][1]) if found else None


def _plan_cutover(
    path: str, staged: str, safety_copy: str | None, sqlite_sidecars: bool, now: float | None
) -> dict[str, Any]:
    """Every check of a cutover, and the renames it would do."""
    path = require_absolute(path, "path")
    staged = require_absolute(staged, "staged")
    staged_kind = _kind(staged)
    if staged_kind is None:
        raise RestoreError(
            f"the staged copy {staged} does not exist",
            "restore it first (nodekeep.backup.epoch_restore); after a completed cutover it is no longer there "
            "because it was moved into place",
        )
    if staged_kind not in ("file", "directory"):
        raise RestoreError(f"the staged copy {staged} is a {staged_kind}", "give the restored file or directory itself")
    if _overlaps(path, staged):
        raise RestoreError(f"path {path} and staged {staged} overlap", "stage the restore outside the live path")
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise RestoreError(f"the directory {parent} of the live path does not exist", "create it or correct path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise RestoreError(f"cannot write to {parent}", "run with become: true")
    live_kind = _kind(path)
    if live_kind == "symlink":
        raise RestoreError(
            f"the live path {path} is a symlink (to {os.readlink(path)})",
            "give the real path of the data as path; the link itself is left alone",
        )
    if live_kind not in (None, staged_kind):
        raise RestoreError(
            f"the live path {path} is a {live_kind} but the staged copy {staged} is a {staged_kind}",
            "check path and staged: they must be the same kind of thing",
        )
    parent_dev = os.stat(parent).st_dev
    if live_kind == "directory" and os.stat(path).st_dev != parent_dev:
        raise RestoreError(
            f"the live path {path} is a mount point",
            "it cannot be renamed: cut over a directory inside it, or restore the filesystem with its own tools",
        )
    sidecars: list[str] = []
    if staged_kind == "file" and sqlite_sidecars:
        # Also without a live file: a stale -wal would be replayed onto the restored database.
        sidecars = [suffix for suffix in SIDECARS if os.path.lexists(path + suffix)]
    if live_kind is not None or sidecars:
        safety = require_absolute(safety_copy, "safety_copy") if safety_copy else _default_safety(path, now)
        if _overlaps(safety, path) or _overlaps(safety, staged):
            raise RestoreError(f"safety_copy {safety} overlaps path or staged", "keep the safety copy beside path")
        if os.path.lexists(safety):
            raise RestoreError(f"the safety copy {safety} already exists", "pass another safety_copy or wait a second")
        safety_parent = os.path.dirname(safety)
        if not os.path.isdir(safety_parent) or os.stat(safety_parent).st_dev != parent_dev:
            raise RestoreError(
                f"the safety copy {safety} must be in an existing directory on the same filesystem as {path}",
                "the live data is only ever renamed, never copied and deleted; leave safety_copy at its default",
            )
        for suffix in sidecars:
            if os.path.lexists(safety + suffix):
                raise RestoreError(f"{safety + suffix} already exists", "pass another safety_copy")
    else:
        safety = None
    if staged_kind == "file" and sqlite_sidecars:
        for suffix in ("-wal", "-journal"):
            side = staged + suffix
            if os.path.lexists(side) and os.path.getsize(side) > 0:
                raise RestoreError(
                    f"the staged copy has a non-empty {os.path.basename(side)} beside it: it is not self-contained",
                    f"checkpoint it first (sqlite3 {staged} 'PRAGMA wal_checkpoint(TRUNCATE)') and deep-check again",
                )
    copy = os.stat(staged).st_dev != parent_dev
    if copy:
        needed = _tree_size(staged)
        free = shutil.disk_usage(parent).free
        if needed > free:
            raise RestoreError(
                f"{parent} has {free} bytes free but the staged copy needs {needed}",
                "free space there, or stage the restore on the same filesystem as the live data",
            )
    return {
        "changed": True,
        "path": path,
        "staged": staged,
        "kind": staged_kind,
        "safety_copy": safety,
        "sidecars": [path + suffix for suffix in sidecars],
        "copied": copy,
    }


def _placed_attributes(
    path: str, owner: str | None, group: str | None, mode: int | None
) -> tuple[int | None, int | None, int | None, list[str]]:
    """Owner, group and mode for the data placed at ``path``, and which of them the live file supplied."""
    uid, gid = resolve_uid(owner), resolve_gid(group)
    inherited = []
    if _kind(path) == "file":
        # A restored file is root's and 0600; the service needs what the file it replaces had.
        live = os.stat(path)
        if uid is None:
            uid = live.st_uid
            inherited.append("owner")
        if gid is None:
            gid = live.st_gid
            inherited.append("group")
        if mode is None:
            mode = stat.S_IMODE(live.st_mode)
            inherited.append("mode")
    return uid, gid, mode, inherited


def _copy_file(src: str, dest: str) -> None:
    """Copy a file to a new name, keeping mode, ownership (as root) and mtime, fsynced."""
    info = os.stat(src)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with open(fd, "wb") as out, open(src, "rb") as source:
        shutil.copyfileobj(source, out, CHUNK_SIZE)
        out.flush()
        if os.geteuid() == 0:
            os.fchown(fd, info.st_uid, info.st_gid)
        os.fchmod(fd, stat.S_IMODE(info.st_mode))
        os.utime(fd, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.fsync(fd)


def _remove_own_copy(temp: str | None) -> None:
    """Remove the temporary copy this cutover made of the staged data (the staged data itself stays)."""
    if temp and os.path.lexists(temp):
        if os.path.isdir(temp) and not os.path.islink(temp):
            shutil.rmtree(temp, ignore_errors=True)
        else:
            os.unlink(temp)


@contextmanager
def _all_or_nothing(what: str, remedy: str, explain_os_error: Callable[[OSError], str] = str) -> Iterator[_Renames]:
    """The renames of one step: on any failure every one is put back, then the error says so.

    A temporary copy recorded in ``renames.own_copy`` is removed after the renames are undone.
    Engine errors and OS errors become ``RestoreError("WHAT failed: ...", remedy)``; anything else
    (an interrupt) propagates as it is, after the undo.
    """
    renames = _Renames()
    try:
        yield renames
    except BaseException as exc:
        stuck = renames.undo()
        if stuck:
            raise RestoreError(
                f"{what} failed ({exc}) and putting everything back failed too; now at: " + "; ".join(stuck),
                "move each of these back by hand (mv) before starting the service",
            )
        _remove_own_copy(renames.own_copy)
        if isinstance(exc, NodekeepError):
            message = exc.message
        elif isinstance(exc, OSError):
            message = explain_os_error(exc)
        else:
            raise
        raise RestoreError(f"{what} failed: {message}", remedy) from exc


UNGUARDED_REMEDY = (
    "stop what uses it first: declare the asset's service (nodekeep_assets[].service or nodekeep_service) "
    "and/or its health_command (nodekeep_health_command); to swap anyway, set nodekeep_restore_allow_unguarded: "
    "true (restore_cutover allow_unguarded). Nothing was touched"
)


def open_holders(path: str, directory: bool = False) -> list[dict[str, Any]]:
    """Processes holding ``path`` open (its SQLite side files too; for a directory anything below it), from /proc.

    Raises ``RestoreError`` when ``/proc`` cannot be read: the check fails closed.
    """
    real = os.path.realpath(path)
    wanted = {real} | {real + suffix for suffix in SIDECARS}
    prefix = real.rstrip("/") + "/"
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError as exc:
        raise RestoreError(
            "cannot tell whether %s is open: /proc is not readable (%s)" % (path, exc.strerror), UNGUARDED_REMEDY
        )
    holders = []
    for pid in pids:
        if int(pid) == os.getpid():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue  # gone, or not ours to see (run as root to see every process)
        for fd in fds:
            try:
                target = os.readlink("/proc/%s/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target in wanted or (directory and target.startswith(prefix)):
                try:
                    with open("/proc/%s/comm" % pid) as handle:
                        command = handle.read().strip()
                except OSError:
                    command = "?"
                holders.append({"pid": int(pid), "command": command, "file": target})
                break
    return holders


def _guard(plan: dict[str, Any], service: str | None, health_command: str | None, allow_unguarded: bool) -> None:
    """Refuse a swap under an open database: no service stopped and no health check, or a process holds it open."""
    problems = []
    if not service and not health_command:
        problems.append(
            "no service is declared for it and no health command is given (nothing stopped what uses it, "
            "nothing checks the restored data)"
        )
    live = plan["path"]
    holders = open_holders(live, plan["kind"] == "directory") if os.path.lexists(live) or plan["sidecars"] else []
    if holders:
        problems.append(
            "it is still open in %s"
            % ", ".join("PID %d (%s: %s)" % (h["pid"], h["command"], h["file"]) for h in holders[:5])
        )
    plan["guard"] = {
        "service": service or None,
        "health_check": bool(health_command),
        "open_by": holders,
        "overridden": bool(problems) and allow_unguarded,
    }
    if problems and not allow_unguarded:
        raise RestoreError("refusing to swap %s: %s" % (live, "; ".join(problems)), UNGUARDED_REMEDY)


def _no_links(path: str, root: str | None, option: str) -> None:
    """Walk ``path`` (below ``root`` when given, else from /) one directory at a time, refusing any link."""
    remedy = (
        "give %s as a real path (no symlink at any level)%s; a cutover never goes through a link it did not create"
        % (option, " inside staging_root" if root else "")
    )
    with safefs.Jail(root or "/", RestoreError, remedy, what="the %s path" % option) as jail:
        jail.check(path)


def _steps(plan: dict[str, Any], service: str | None, health_command: str | None) -> list[str]:
    """What the cutover will really do, in order (the service steps are the play's, listed when declared)."""
    steps = []
    if service:
        steps.append("stop the service %s" % service)
    if plan["copied"]:
        steps.append("copy %s beside %s (another filesystem)" % (plan["staged"], plan["path"]))
    if plan["safety_copy"]:
        steps.append(
            "move %s%s to %s" % (plan["path"], " and its side files" if plan["sidecars"] else "", plan["safety_copy"])
        )
    steps.append("move the restored copy into %s" % plan["path"])
    if service:
        steps.append("start the service %s" % service)
    steps.append("run the health command" if health_command else "no health check (none given)")
    return steps


def cutover(
    path: str,
    staged: str,
    safety_copy: str | None = None,
    owner: str | None = None,
    group: str | None = None,
    mode: int | None = None,
    sqlite_sidecars: bool = True,
    now: float | None = None,
    check_only: bool = False,
    service: str | None = None,
    health_command: str | None = None,
    allow_unguarded: bool = False,
    staging_root: str | None = None,
) -> dict[str, Any]:
    """Move the live data at ``path`` to a safety copy and the staged copy into its place.

    Every check runs before anything is touched; with ``check_only`` (check mode) that is all,
    and the result says what would be done (``steps``). Refused unless a ``service`` was stopped or a
    ``health_command`` checks the result, and while any process holds the live data open
    (``allow_unguarded`` overrides both). No directory of ``staged`` (below ``staging_root`` when given)
    or of ``path`` may be a link.
    """
    _no_links(require_absolute(staged, "staged"), staging_root, "staged")
    _no_links(require_absolute(path, "path"), None, "path")
    plan = _plan_cutover(path, staged, safety_copy, sqlite_sidecars, now)
    uid, gid, mode, inherited = _placed_attributes(plan["path"], owner, group, mode)
    plan["attributes"] = {"uid": uid, "gid": gid, "mode": format_mode(mode), "from_live": inherited}
    plan["steps"] = _steps(plan, service, health_command)
    _guard(plan, service, health_command, allow_unguarded)
    if check_only:
        return plan
    path, staged, safety = plan["path"], plan["staged"], plan["safety_copy"]
    with _all_or_nothing(
        f"the cutover of {path}",
        "the live data was put back in place; nothing was lost",
        lambda exc: describe_os_error(exc, "the cutover", path).message,
    ) as renames:
        source = staged
        if plan["copied"]:
            renames.own_copy = source = temp_path(path)
            if plan["kind"] == "directory":
                copy_tree(staged, source)
            else:
                _copy_file(staged, source)
        set_owner_mode(source, uid, gid, mode, recursive=plan["kind"] == "directory")
        if safety is not None:
            if os.path.lexists(path):
                renames.move(path, safety)
            for side in plan["sidecars"]:
                renames.move(side, safety + side[len(path) :])
        _switch_in(renames, source, path)
        fsync_dir(os.path.dirname(path))
        if not plan["copied"]:
            fsync_dir(os.path.dirname(staged))
    return plan


def _switch_in(renames: _Renames, source: str, path: str) -> None:
    """The restored data takes the live name (a separate step so tests can make it fail)."""
    renames.move(source, path)


def _plan_rollback(path: str, safety_copy: str | None, sqlite_sidecars: bool, now: float | None) -> dict[str, Any]:
    """Every check of a rollback, and the renames it would do."""
    path = require_absolute(path, "path")
    safety = require_absolute(safety_copy, "safety_copy") if safety_copy else find_safety_copy(path)
    if safety is None:
        raise RestoreError(
            f"no safety copy {path}{SAFETY_INFIX}TIME was found",
            "pass safety_copy (the RV safety_copy of the cutover); if the rollback already ran, the safety copy "
            "is back at path and there is nothing to roll back",
        )
    safety_kind = _kind(safety)
    if safety_kind not in ("file", "directory"):
        raise RestoreError(
            f"the safety copy {safety} does not exist" if safety_kind is None else f"{safety} is a {safety_kind}",
            "pass the safety_copy path returned by the cutover",
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent) or os.stat(parent).st_dev != os.stat(os.path.dirname(safety)).st_dev:
        raise RestoreError(
            f"the safety copy {safety} is not on the same filesystem as {path}", "move it back by hand (mv)"
        )
    live_kind = _kind(path)
    if live_kind == "symlink":
        raise RestoreError(f"the live path {path} is a symlink", "give the real path of the data as path")
    if live_kind not in (None, safety_kind):
        raise RestoreError(
            f"the live path {path} is a {live_kind} but the safety copy {safety} is a {safety_kind}",
            "pass the safety_copy that belongs to this path",
        )
    live_sidecars = []
    safety_sidecars = []
    if sqlite_sidecars and safety_kind == "file":
        live_sidecars = [suffix for suffix in SIDECARS if os.path.lexists(path + suffix)]
        safety_sidecars = [suffix for suffix in SIDECARS if os.path.lexists(safety + suffix)]
    failed = f"{path}{FAILED_INFIX}{epoch_name(now)}" if live_kind is not None or live_sidecars else None
    if failed and os.path.lexists(failed):
        raise RestoreError(f"{failed} already exists", "wait a second and run again")
    return {
        "changed": True,
        "path": path,
        "kind": safety_kind,
        "safety_copy": safety,
        "failed_copy": failed,
        "sidecars": [path + suffix for suffix in safety_sidecars],
        "failed_sidecars": [failed + suffix for suffix in live_sidecars] if failed else [],
    }


def rollback(
    path: str,
    safety_copy: str | None = None,
    sqlite_sidecars: bool = True,
    now: float | None = None,
    check_only: bool = False,
) -> dict[str, Any]:
    """Move the restored data aside (kept as ``PATH.nodekeep-failed-TIME``) and the safety copy back.

    With ``check_only`` (check mode) only the checks run, and the result says what would be done.
    """
    plan = _plan_rollback(path, safety_copy, sqlite_sidecars, now)
    if check_only:
        return plan
    path, safety, failed = plan["path"], plan["safety_copy"], plan["failed_copy"]
    with _all_or_nothing(
        f"the rollback of {path}", "everything was put back as it was before the rollback; nothing was lost"
    ) as renames:
        if failed is not None:
            if os.path.lexists(path):
                renames.move(path, failed)
            for side in plan["failed_sidecars"]:
                renames.move(path + side[len(failed) :], side)
        renames.move(safety, path)
        for side in plan["sidecars"]:
            renames.move(safety + side[len(path) :], side)
        fsync_dir(os.path.dirname(path))
    return plan
