# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""SQLite databases: consistent copies of a live database with the online backup API, checks, facts.

The copy pins one read snapshot of the source for the whole backup (a read
transaction opened before the first step), so steps of ``pages_per_step``
pages never restart however busy the writers are, and the copy is exactly one
committed state of the database. In WAL mode writers go on committing during
the copy; in rollback-journal mode they wait (their busy timeout) until it
ends, as with ``sqlite3 .backup``.

Uses apsw, which bundles its own SQLite. Never open the same database with
two different SQLite libraries in one process: POSIX locks are per process and
the two copies of SQLite would break each other's locking.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import os
import shutil
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    IntegrityError,
    check_range,
    describe_os_error,
)

try:
    import apsw

    HAS_APSW = True
    APSW_IMPORT_ERROR = None
except ImportError as _exc:  # pragma: no cover
    HAS_APSW = False
    APSW_IMPORT_ERROR = _exc
import stat

from ansible_collections.nodekeep.backup.plugins.module_utils.core import progress, safefs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import (
    check_parent_writable,
    format_mode,
    place_file,
    resolve_gid,
    resolve_uid,
    set_owner_mode,
    temp_path,
)

SQLITE_HEADER = b"SQLite format 3\x00"


CHECKS = ("integrity", "quick", "none")


@dataclass
class SqliteFacts:
    """What the manifest records about a SQLite copy."""

    page_count: int
    page_size: int
    journal_mode: str
    integrity: str
    sqlite_version: str
    snapshot_at: str
    copy_seconds: float
    check_seconds: float
    #: set when the live database had a hot rollback journal (a writer crashed mid-transaction)
    hot_journal: str | None = None

    def as_dict(self) -> dict:
        facts = asdict(self)
        if facts["hot_journal"] is None:
            del facts["hot_journal"]
        return facts


class _HotJournal(Exception):
    """The live database needs its rollback journal played back before it can be read."""


#: the first bytes of a rollback journal SQLite would play back
JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")
#: SQLite's lock bytes (os_unix.c): a reader holds a read lock on the SHARED range
_PENDING_BYTE = 0x40000000
_SHARED_FIRST = _PENDING_BYTE + 2
_SHARED_SIZE = 510


def _has_hot_journal(path: str) -> bool:
    try:
        with open(path + "-journal", "rb") as handle:
            return handle.read(8) == JOURNAL_MAGIC
    except OSError:
        return False


def _roll_back_privately(src: str, directory: str, busy_timeout_ms: int) -> str:
    """A private copy of ``src`` with its hot journal played back on the copy, never on the live file.

    The live file and journal are copied together while this process holds a reader's lock on the
    live database, so no SQLite process can roll it back (or write) in between; SQLite then plays the
    copied journal back when the private copy is opened read-write.
    """
    private = os.path.join(directory, ".%s.nodekeep-%s" % (os.path.basename(src), uuid.uuid4().hex[:8]))
    fd = os.open(src, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
        except OSError:
            raise _busy_error(src, busy_timeout_ms)
        if not _has_hot_journal(src):
            return ""  # rolled back by its application meanwhile: read the live database as usual
        for source, target in ((src, private), (src + "-journal", private + "-journal")):
            with (
                open(source, "rb") as reader,
                os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as writer,
            ):
                shutil.copyfileobj(reader, writer, 1 << 20)
    finally:
        os.close(fd)  # this process has no other handle on the live file (its locks go with this one)
    connection = apsw.Connection(private)
    try:
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except apsw.Error as exc:
        raise CaptureError(
            "the rollback journal of %s could not be played back on a private copy: %s" % (src, exc),
            "start the application once (it rolls the journal back), or run sqlite3 on a copy of the "
            "database and its -journal file; nothing was backed up",
        )
    finally:
        connection.close()
    return private


def _require() -> None:
    if not HAS_APSW:
        raise CaptureError(
            "the Python library apsw is missing on this host",
            "run the nodekeep.backup.agent role (it installs apsw into the node virtualenv) "
            "and run the module with that interpreter",
        )


def check_is_database(path: str, role: str = "source") -> None:
    """Refuse missing paths and files that are not SQLite databases, naming the problem."""
    if not os.path.lexists(path):
        raise CaptureError(
            "the %s database %s does not exist" % (role, path),
            "check the asset path in nodekeep_assets (a typo, or the service keeps its DB elsewhere)",
        )
    if os.path.isdir(path):
        raise CaptureError(
            "the %s database %s is a directory, not a file" % (role, path), "give the path of the .db file"
        )
    remedy = "give the path of the database file in nodekeep_assets (a FIFO, socket or device is never read)"
    try:
        with os.fdopen(safefs.open_regular(path, CaptureError, "the %s database" % role, remedy), "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise CaptureError("cannot read the %s database %s (%s)" % (role, path, exc.strerror), "run with become: true")
    if header != SQLITE_HEADER:
        if not header:
            raise CaptureError("the %s database %s is an empty file" % (role, path), "check the asset path")
        raise CaptureError(
            "%s is not an SQLite database (its header is not 'SQLite format 3')" % path,
            "check the asset path and type in nodekeep_assets",
        )


def _open_private(path: str):
    """Open a copy nobody else writes to, without locks or side files."""
    return apsw.Connection("file:%s?immutable=1" % path, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)


def run_check(path: str, check: str = "integrity", label: str = "", remedy: str = "") -> str:
    """``PRAGMA integrity_check`` or ``quick_check`` on a private copy; returns 'ok' or raises.

    ``label`` names the database in messages (default: its path), ``remedy`` says what to do.
    """
    return check_database(path, check, label, remedy)[0]


#: at most this many read connections run one integrity check in parallel (never more than the cores)
MAX_CHECK_WORKERS = 4


def check_database(path: str, check: str = "integrity", label: str = "", remedy: str = "") -> tuple[str, str]:
    """(result, how) of the check of a private copy: 'ok' (or 'skipped' for ``none``) and the words
    of what ran, for the manifest's ``check_how``; a failed check raises ``IntegrityError``.

    ``integrity`` with two or more tables on a host with two or more cores runs in parallel, on
    separate read connections: ``PRAGMA quick_check`` of the whole file (every b-tree's structure,
    the freelist, no page used twice or never) and ``PRAGMA integrity_check(TABLE)`` of each table
    (its b-trees and its indexes against its rows, NOT NULL, CHECK, UNIQUE). Together they run
    every test a whole-file ``PRAGMA integrity_check`` runs.
    """
    _require()
    if check == "none":
        return "skipped", "none"
    if check not in CHECKS:
        raise CaptureError("unknown check %r" % check, "use one of: %s" % ", ".join(CHECKS))
    label = label or path
    remedy = remedy or "the database is damaged; do not restore it"
    if check == "quick":
        _run_pragma(path, "quick_check", label, remedy)
        return "ok", "PRAGMA quick_check"
    tables = _checked_tables(path, label, remedy)
    workers = min(MAX_CHECK_WORKERS, _cores(), len(tables) + 1)
    if workers < 2 or len(tables) < 2:
        _run_pragma(path, "integrity_check", label, remedy)
        return "ok", "PRAGMA integrity_check"
    parts = ["quick_check"] + ['integrity_check("%s")' % name.replace('"', '""') for name in tables]
    failures = _run_in_parallel(path, parts, workers, label, remedy)
    if failures:
        raise IntegrityError("PRAGMA integrity_check of %s failed: %s" % (label, "; ".join(failures[:5])), remedy)
    return "ok", (
        "PRAGMA integrity_check in parallel on %d read connections: quick_check of the whole file and "
        "integrity_check(table) of each of its %d tables" % (workers, len(tables))
    )


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _checked_tables(path: str, label: str, remedy: str) -> list[str]:
    """The tables with b-trees (virtual tables have none), the largest root page first (often the oldest)."""
    connection = _open_private(path)
    try:
        return [
            str(row[0])
            for row in connection.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND rootpage > 0 ORDER BY rootpage"
            )
        ]
    except apsw.Error as exc:
        raise IntegrityError("the schema of %s could not be read (%s)" % (label, exc), remedy)
    finally:
        connection.close()


def _run_pragma(path: str, pragma: str, label: str, remedy: str) -> None:
    rows = _pragma_rows(path, pragma, label, remedy)
    if rows != ["ok"]:
        raise IntegrityError("PRAGMA %s of %s failed: %s" % (pragma, label, "; ".join(rows[:5])), remedy)


def _pragma_rows(path: str, pragma: str, label: str, remedy: str) -> list[str]:
    connection = _open_private(path)
    try:
        return [str(r[0]) for r in connection.execute("PRAGMA %s" % pragma)]
    except apsw.Error as exc:
        raise IntegrityError("PRAGMA %s of %s could not run (%s)" % (pragma, label, exc), remedy)
    finally:
        connection.close()


def _run_in_parallel(path: str, parts: list[str], workers: int, label: str, remedy: str) -> list[str]:
    """Run each PRAGMA of ``parts`` on its own read connection, ``workers`` at a time (apsw releases the
    GIL while SQLite works); the failed rows, each after its PRAGMA. The first failure stops new parts."""
    pending = list(reversed(parts))
    failures: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not pending or failures or errors:
                    return
                part = pending.pop()
            try:
                rows = _pragma_rows(path, part, label, remedy)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                with lock:
                    errors.append(exc)
                return
            if rows != ["ok"]:
                with lock:
                    failures.extend("%s: %s" % (part, row) for row in rows[:5])

    threads = [threading.Thread(target=work, name="nodekeep-sqlite-check-%d" % n, daemon=True) for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return failures


def database_facts(path: str) -> dict:
    """Page count, page size and journal mode of a private copy."""
    _require()
    connection = _open_private(path)
    try:
        page_count = connection.execute("PRAGMA page_count").fetchone()[0]
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
    finally:
        connection.close()
    with open(path, "rb") as handle:
        header = handle.read(20)
    journal_mode = "wal" if header[18:20] == b"\x02\x02" else "rollback"
    return {"page_count": int(page_count), "page_size": int(page_size), "journal_mode": journal_mode}


MAX_BUSY_TIMEOUT_MS = 3600000  # one hour
MAX_PAGES_PER_STEP = 1000000


def check_copy_options(busy_timeout: object, pages_per_step: object, prefix: str = "") -> tuple[int, int]:
    """``busy_timeout`` (0 to 3600000 ms) and ``pages_per_step`` (1 to 1000000, or -1: all at once), as whole
    numbers; else an error naming the option (after ``prefix``, e.g. the asset) and the value as typed."""
    busy = check_range(
        busy_timeout, prefix + "busy_timeout", 0, MAX_BUSY_TIMEOUT_MS, "ms", why="one hour at most", error=CaptureError
    )
    if str(pages_per_step).strip() == "-1" and not isinstance(pages_per_step, bool):
        return busy, -1
    pages = check_range(
        pages_per_step,
        prefix + "pages_per_step",
        1,
        MAX_PAGES_PER_STEP,
        "pages",
        why="or -1 for all at once",
        error=CaptureError,
    )
    return busy, pages


def _busy_error(path: str, busy_timeout_ms: int) -> CaptureError:
    return CaptureError(
        "the database %s stayed locked for longer than the busy timeout (%d ms)" % (path, busy_timeout_ms),
        "a writer holds an exclusive lock: raise busy_timeout, take the backup when the writer is idle, "
        "or switch the database to WAL mode; nothing was written",
    )


def copy_database(
    src: str,
    dest: str,
    busy_timeout_ms: int = 5000,
    pages_per_step: int = 1024,
    check: str = "integrity",
    durable: bool = True,
) -> SqliteFacts:
    """Copy ``src`` into the new file ``dest`` (which must not exist) from one consistent snapshot.

    A database left with a hot rollback journal by a crashed writer is copied from a private copy
    whose journal was played back (the last committed state); the live file is never written, and
    the facts say ``hot_journal``. See ``_copy_database``.
    """
    try:
        return _copy_database(src, dest, busy_timeout_ms, pages_per_step, check, durable)
    except _HotJournal:
        pass
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    private = _roll_back_privately(src, directory, busy_timeout_ms)
    if not private:
        return _copy_database(src, dest, busy_timeout_ms, pages_per_step, check, durable)
    try:
        facts = _copy_database(private, dest, busy_timeout_ms, pages_per_step, check, durable)
    finally:
        for suffix in ("", "-journal"):
            with contextlib.suppress(OSError):
                os.unlink(private + suffix)
    facts.hot_journal = "rolled back on a private copy"
    return facts


def _copy_database(
    src: str,
    dest: str,
    busy_timeout_ms: int,
    pages_per_step: int,
    check: str,
    durable: bool,
) -> SqliteFacts:
    """Copy ``src`` into the new file ``dest`` (which must not exist) from one consistent snapshot.

    The copy is written beside ``dest`` under a temporary name, checked, fsynced
    and linked into place. On any error nothing is left at ``dest``.

    The temporary file is private until it is linked, so it is written without a
    rollback journal and without SQLite's own syncs: a crash leaves a temp file,
    never a half copy at ``dest``. ``durable=False`` also skips the final fsync,
    for a transient copy that is read once and deleted (the scratch copy that
    the seal pipeline streams: its artifact is what gets fsynced, and plaintext
    that never reaches the disk is better than plaintext that does).

    The steps: ``_check_copy_request``, ``_pinned_source`` (one read snapshot of the source),
    ``_private_destination`` (the temporary file, 0600, no journal), ``_online_backup``,
    ``_finish_copy`` (check, facts, fsync, link).
    """
    temp = _check_copy_request(src, dest, pages_per_step)
    started = time.monotonic()
    try:
        with _pinned_source(src, busy_timeout_ms) as (source, snapshot_at):
            destination = _private_destination(temp)
            try:
                _online_backup(source, destination, src, dest, busy_timeout_ms, pages_per_step)
            finally:
                destination.close()
        copy_seconds = time.monotonic() - started
        facts = _finish_copy(temp, dest, check, durable)
    finally:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.unlink(temp + suffix)
    return SqliteFacts(
        page_count=facts["page_count"],
        page_size=facts["page_size"],
        journal_mode=facts["journal_mode"],
        integrity=facts["integrity"],
        sqlite_version=apsw.sqlite_lib_version(),
        snapshot_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(snapshot_at)),
        copy_seconds=round(copy_seconds, 3),
        check_seconds=round(facts["check_seconds"], 3),
    )


def _check_copy_request(src: str, dest: str, pages_per_step: int) -> str:
    """Refuse a source that is not a database, a bad step or an existing destination; the temporary path."""
    _require()
    check_is_database(src)
    if pages_per_step == 0 or pages_per_step < -1:
        raise CaptureError("pages_per_step must be a positive number of pages or -1 (all at once)")
    if os.path.lexists(dest):
        raise CaptureError("the destination %s already exists" % dest, "remove it, choose another path or set force")
    directory = os.path.dirname(os.path.abspath(dest)) or "."
    if not os.path.isdir(directory):
        raise CaptureError("the destination directory %s does not exist" % directory, "create it first")
    return os.path.join(directory, ".%s.nodekeep-%s" % (os.path.basename(dest), uuid.uuid4().hex[:8]))


@contextlib.contextmanager
def _pinned_source(src: str, busy_timeout_ms: int):
    """The source opened read-only with one read transaction pinned (the backup steps read from it and never
    restart): (connection, time of the snapshot). A hot rollback journal raises ``_HotJournal``."""
    try:
        source = apsw.Connection(src, flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        raise CaptureError("cannot open %s: %s" % (src, exc), "check the path and that this user may read it")
    try:
        source.set_busy_timeout(int(busy_timeout_ms))
        snapshot_at = time.time()
        try:
            source.execute("BEGIN")
            source.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        except apsw.BusyError:
            raise _busy_error(src, busy_timeout_ms)
        except apsw.NotADBError:
            raise CaptureError("%s is not an SQLite database" % src, "check the asset path and type")
        except apsw.ReadOnlyError as exc:
            if _has_hot_journal(src):
                raise _HotJournal() from exc
            raise CaptureError("cannot read %s: %s" % (src, exc), "check the database and retry")
        except apsw.Error as exc:
            raise CaptureError("cannot read %s: %s" % (src, exc), "check the database and retry")
        yield source, snapshot_at
    finally:
        with contextlib.suppress(apsw.Error):
            source.execute("ROLLBACK")
        source.close()


@contextlib.contextmanager
def held_snapshot(src: str):
    """One read transaction on ``src`` (read-only, never waiting) held while the block runs. In WAL mode its
    read mark lets the application commit and checkpoint up to it but stops any connection from restarting
    the log (the replication service holds one while the log moves fast, docs/replication.md)."""
    with _pinned_source(src, 0) as (source, _snapshot_at):
        yield source


def _private_destination(temp: str):
    """The new temporary file (created 0600 first: SQLite would make it 0644 & ~umask, and it is plaintext),
    opened without a journal and without syncs."""
    try:
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        destination = apsw.Connection(temp)
        destination.execute("PRAGMA journal_mode=OFF").fetchall()
        destination.execute("PRAGMA synchronous=OFF")
    except OSError as exc:
        raise describe_os_error(exc, "creating the SQLite copy", temp)
    except apsw.Error as exc:
        raise CaptureError("cannot create %s: %s" % (temp, exc), "check that the destination is writable")
    return destination


def _online_backup(source, destination, src: str, dest: str, busy_timeout_ms: int, pages_per_step: int) -> None:
    """SQLite's online backup from the pinned source, ``pages_per_step`` pages at a time."""
    try:
        page_size = source.execute("PRAGMA page_size").fetchone()[0]
        with destination.backup("main", source, "main") as backup:
            copied = 0
            while not backup.done:
                backup.step(pages_per_step)
                now = backup.pagecount - backup.remaining
                progress.advance(max(now - copied, 0) * page_size)  # live progress, docs/progress.md
                copied = now
    except apsw.BusyError:
        raise _busy_error(src, busy_timeout_ms)
    except apsw.FullError:
        raise describe_os_error(OSError(28, "No space left on device"), "writing the SQLite copy", dest)
    except apsw.Error as exc:
        if "disk is full" in str(exc) or "SQLITE_FULL" in str(exc):
            raise describe_os_error(OSError(28, "No space left on device"), "writing the SQLite copy", dest)
        raise CaptureError("the online backup of %s failed: %s" % (src, exc), "retry; if it persists check the disk")


def _finish_copy(temp: str, dest: str, check: str, durable: bool) -> dict[str, Any]:
    """Check the finished copy, read its facts, fsync it (``durable``) and link it to ``dest``."""
    checked = time.monotonic()
    integrity = run_check(temp, check)
    check_seconds = time.monotonic() - checked
    facts = database_facts(temp)
    if durable:
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
    try:
        os.link(temp, dest)
    except FileExistsError:
        raise CaptureError("the destination %s appeared during the backup" % dest, "nothing was overwritten")
    except OSError as exc:
        raise describe_os_error(exc, "placing the SQLite copy", dest)
    facts.update(integrity=integrity, check_seconds=check_seconds)
    return facts


def sqlite_version() -> str | None:
    return apsw.sqlite_lib_version() if HAS_APSW else None


# --------------------------------------------------------------------------
# sqlite_backup
# --------------------------------------------------------------------------


def _sidecars_present(path: str) -> list[str]:
    return [path + suffix for suffix in SIDECARS if os.path.lexists(path + suffix)]


def plan_sqlite_backup(
    src: str,
    dest: str,
    force: bool = False,
    owner: str | None = None,
    group: str | None = None,
    busy_timeout_ms: int = 5000,
    pages_per_step: int = 1024,
) -> dict[str, Any]:
    """Everything ``backup_sqlite`` checks before writing (check mode): the source, the destination, owners."""
    busy_timeout_ms, pages_per_step = check_copy_options(busy_timeout_ms, pages_per_step)
    check_is_database(src)
    check_parent_writable(dest, "backup destination")
    if os.path.isdir(dest):
        raise CaptureError(
            f"the destination {dest} is a directory", "give the path of the copy to write, e.g. DIR/app.db"
        )
    exists = os.path.lexists(dest)
    if exists and not force:
        raise CaptureError(
            f"the destination {dest} already exists",
            "choose another path, remove it, or set force: true to replace it (the old copy is not kept); "
            "nothing was written",
        )
    stale = _sidecars_present(dest)
    if stale:
        names = ", ".join(os.path.basename(side) for side in stale)
        raise CaptureError(
            f"SQLite side files ({names}) lie beside the destination {dest}: SQLite would apply them to the new copy",
            "move them away (they belong to an older database) or choose another destination; nothing was written",
        )
    if os.path.realpath(src) == os.path.realpath(dest):
        raise CaptureError(f"src and dest are the same file ({src})", "give a different destination")
    return {
        "changed": True,
        "src": src,
        "dest": dest,
        "replaced": exists,
        "uid": resolve_uid(owner),
        "gid": resolve_gid(group),
    }


def backup_sqlite(
    src: str,
    dest: str,
    busy_timeout_ms: int = 5000,
    pages_per_step: int = 1024,
    check: str = "integrity",
    force: bool = False,
    mode: int | None = 0o600,
    owner: str | None = None,
    group: str | None = None,
    check_only: bool = False,
) -> dict[str, Any]:
    """A consistent, checked copy of the live database ``src`` at ``dest``, placed atomically.

    The copy is written under a temporary name beside ``dest``, checked,
    given its owner and mode and fsynced (never hashed: the result holds no
    unkeyed digest of the data), then linked to ``dest``
    (or, with ``force``, renamed over it). On any error nothing is left.
    With ``check_only`` (check mode) only ``plan_sqlite_backup`` runs.
    """
    started = time.monotonic()
    plan = plan_sqlite_backup(src, dest, force, owner, group, busy_timeout_ms, pages_per_step)
    if check_only:
        return {
            "changed": True,
            "src": src,
            "dest": dest,
            "replaced": plan["replaced"],
            "duration": round(time.monotonic() - started, 3),
        }
    temp = temp_path(dest)
    # SQLite creates the copy with mode 0644 & ~umask: keep it private until its mode is set.
    saved_umask = os.umask(0o077)
    try:
        try:
            facts = copy_database(
                src, temp, busy_timeout_ms=busy_timeout_ms, pages_per_step=pages_per_step, check=check
            )
        finally:
            os.umask(saved_umask)
        try:
            set_owner_mode(temp, plan["uid"], plan["gid"], mode)
            with open(temp, "rb") as handle:
                os.fsync(handle.fileno())
                size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise describe_os_error(exc, "finishing the SQLite copy", dest)
        place_file(temp, dest, replace=force)
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
    result = facts.as_dict()
    result.update(
        {
            "changed": True,
            "src": src,
            "dest": dest,
            "size": size,
            # no SHA-256 of the copy: an unkeyed hash of a database in a result (logs, AWX) confirms a guessed content
            "replaced": plan["replaced"],
            "mode": format_mode(stat.S_IMODE(os.stat(dest).st_mode)),
            "duration": round(time.monotonic() - started, 3),
        }
    )
    return result


SIDECARS = ("-wal", "-shm", "-journal")
