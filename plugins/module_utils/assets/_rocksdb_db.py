# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Private: recognising a RocksDB directory, its LOCK holder and OPTIONS; copying and
verifying a copy (rocksdict).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import contextlib
import errno
import fcntl
import os
import re
import shlex
import shutil
import stat
import struct
import time
import uuid
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import process
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    describe_os_error,
)

try:
    import rocksdict

    HAS_ROCKSDICT = True
    ROCKSDICT_IMPORT_ERROR = None
except ImportError as import_error:  # pragma: no cover - depends on the node's virtualenv
    rocksdict = None
    HAS_ROCKSDICT = False
    ROCKSDICT_IMPORT_ERROR = import_error


VERIFY_MODES = ("open", "list")


#: files RocksDB never modifies after writing them: hard-linking them is as good as copying
IMMUTABLE_SUFFIXES = (".sst", ".blob", ".ldb")


#: written by rocksdict into any directory it opens (also read-only): never linked into a view
ROCKSDICT_CONFIG = "rocksdict-config.json"


_FLOCK = struct.Struct("hhqqi4x")  # struct flock on Linux (l_type, l_whence, l_start, l_len, l_pid)


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------


def rocksdict_version() -> str:
    try:
        from importlib.metadata import version

        return "rocksdict %s" % version("rocksdict")
    except Exception:  # noqa: BLE001 - a fact for the manifest, never fatal
        return "rocksdict"


def remove_tree(path: str | None) -> None:
    if path and os.path.lexists(path):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)


def command_argv(value: Any, option: str) -> list[str]:
    """A command given as a string (split like a shell would, no shell runs) or as an argv list."""
    if isinstance(value, (list, tuple)):
        argv = [str(item) for item in value]
    elif isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise CaptureError("%s %r cannot be parsed (%s)" % (option, value, exc), "give it as a list of arguments")
    else:
        argv = []
    if not argv or not argv[0]:
        raise CaptureError("%s is empty" % option, "give the command as a string or a list of arguments")
    return argv


def check_program(argv: list[str], option: str) -> None:
    program = argv[0]
    if "/" in program:
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program)
    if not found:
        raise CaptureError(
            "the program %s of %s was not found or is not executable" % (program, option),
            "install it or give its absolute path; nothing was stopped or written",
        )


def run_service_command(argv: list[str], what: str, timeout: float) -> float:
    """Run a service or checkpoint command (no shell) through the gateway; a CaptureError on failure or timeout.

    Returns the seconds it took.
    """
    return process.run_command(
        argv,
        "the %s %s" % (what, shlex.join(argv)),
        timeout=timeout,
        error=CaptureError,
        remedy="run it by hand to see why (if it hangs, raise command_timeout / stop_timeout); nothing was kept",
    ).seconds


# --------------------------------------------------------------------------
# recognising a RocksDB directory, its LOCK, its OPTIONS
# --------------------------------------------------------------------------


def db_problem(path: str) -> str | None:
    """Why ``path`` is not a RocksDB directory, or None when it is one."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return "%s does not exist" % path
        return "cannot read %s (%s)" % (path, exc.strerror)
    if not stat.S_ISDIR(info.st_mode):
        return "%s is not a directory" % path
    current = os.path.join(path, "CURRENT")
    try:
        with open(current, "rb") as handle:
            manifest = handle.read(256).decode("ascii", "replace").strip()
    except FileNotFoundError:
        return "%s is not a RocksDB directory (it has no CURRENT file)" % path
    except OSError as exc:
        return "cannot read %s (%s)" % (current, exc.strerror)
    if not manifest.startswith("MANIFEST-") or "/" in manifest:
        return "%s is not a RocksDB directory (CURRENT names %r, not a MANIFEST)" % (path, manifest[:60])
    if not os.path.isfile(os.path.join(path, manifest)):
        return "%s is damaged: CURRENT names %s, which is missing" % (path, manifest)
    return None


def check_db_dir(path: str, role: str = "the RocksDB", error=CaptureError) -> None:
    problem = db_problem(path)
    if problem:
        raise error(
            "%s: %s" % (role, problem),
            "give the directory that holds the database's CURRENT, MANIFEST-* and *.sst files; nothing was written",
            path=path,
        )


def _process_name(pid: int) -> str:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            command = handle.read(400).replace(b"\0", b" ").decode("utf-8", "replace").strip()
        return command or "?"
    except OSError:
        return "?"


def _flock_holder(info: os.stat_result) -> int | None:
    """The pid holding a BSD ``flock`` on the file, from /proc/locks (None when unknown)."""
    wanted = "%02x:%02x:%d" % (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            for line in handle:
                fields = line.split()
                if "FLOCK" in fields and len(fields) > 5 and fields[5] == wanted:
                    return int(fields[4])
    except (OSError, ValueError):
        return None
    return None


def _describe_holder(pid: int | None, kind: str) -> dict[str, Any]:
    if pid is None or pid <= 0:
        return {"pid": None, "lock": kind, "process": "unknown (an open file description lock)"}
    return {"pid": pid, "lock": kind, "process": _process_name(pid)}


def _holder_of(fd: int, info: os.stat_result) -> dict[str, Any] | None:
    probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    answer = _FLOCK.unpack(fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    if answer[0] != fcntl.F_UNLCK:
        return _describe_holder(answer[4], "fcntl")
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _describe_holder(_flock_holder(info), "flock")
    fcntl.flock(fd, fcntl.LOCK_UN)
    return None


def lock_holder(path: str) -> dict[str, Any] | None:
    """Who holds the RocksDB ``LOCK`` of ``path`` (as RocksDB takes it: an fcntl write lock), or None.

    The file is opened read-only and only queried (``F_GETLK``); nothing is written.
    """
    lock = os.path.join(path, "LOCK")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise describe_os_error(exc, "checking the RocksDB LOCK", lock)
    try:
        return _holder_of(fd, os.fstat(fd))
    finally:
        os.close(fd)


def held_error(path: str, holder: dict[str, Any], method: str) -> CaptureError:
    who = "process %s (%s)" % (holder["pid"], holder["process"]) if holder.get("pid") else holder["process"]
    if method == "snapshot":
        return CaptureError(
            "%s is a live RocksDB (%s holds its LOCK), not a filesystem snapshot" % (path, who),
            "method snapshot copies a crash-consistent snapshot of the DB: give the asset a snapshot: option so "
            "that the backup maps its path into one, or use method stop or checkpoint_command",
            path=path,
            pid=holder.get("pid"),
        )
    return CaptureError(
        "the RocksDB %s is open: %s holds its LOCK, so method %s cannot copy it" % (path, who, method),
        "stop the application first, or use method stop (the backup stops and restarts the service), "
        "checkpoint_command (the application's own checkpoint) or snapshot; nothing was copied",
        path=path,
        pid=holder.get("pid"),
    )


@contextlib.contextmanager
def hold_closed(path: str, method: str = "offline"):
    """Keep the closed DB closed while it is copied: a shared fcntl lock on ``LOCK`` (opened read-only).

    RocksDB's owner takes an exclusive fcntl lock on ``LOCK`` when it opens the DB, so it cannot start
    in the middle of the copy. The lock is released when the block ends (POSIX locks belong to the
    process: nothing else in this process may open and close ``LOCK`` meanwhile; the copy creates an
    empty ``LOCK`` instead of reading it).
    """
    lock = os.path.join(path, "LOCK")
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        yield
        return
    except OSError as exc:
        raise describe_os_error(exc, "locking the closed RocksDB", lock)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = _holder_of(fd, os.fstat(fd)) or _describe_holder(None, "fcntl")
            raise held_error(path, holder, method)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise held_error(path, _describe_holder(_flock_holder(os.fstat(fd)), "flock"), method)
        yield
    finally:
        os.close(fd)


def options_facts(path: str) -> dict[str, Any]:
    """``rocksdb_version`` and table ``format_version`` from the newest OPTIONS-* file (what the writer used)."""
    newest = None
    best = -1
    try:
        names = os.listdir(path)
    except OSError:
        return {}
    for name in names:
        match = re.match(r"^OPTIONS-(\d+)$", name)
        if match and int(match.group(1)) > best:
            best = int(match.group(1))
            newest = name
    if newest is None:
        return {}
    facts: dict[str, Any] = {}
    try:
        with open(os.path.join(path, newest), encoding="utf-8", errors="replace") as handle:
            text = handle.read(1 << 20)
    except OSError:
        return {}
    version = re.search(r"^\s*rocksdb_version=(\S+)", text, re.MULTILINE)
    if version:
        facts["rocksdb_version"] = version.group(1)
    formats = sorted({int(value) for value in re.findall(r"^\s*format_version=(\d+)", text, re.MULTILINE)})
    if formats:
        facts["format_version"] = formats[-1] if len(formats) == 1 else formats
    return facts


# --------------------------------------------------------------------------
# copies
# --------------------------------------------------------------------------


def copy_db_tree(src: str, dest: str, link: bool = True) -> dict[str, Any]:
    """Copy the closed (or snapshotted) DB directory ``src`` to the new directory ``dest``.

    SST and blob files are hard-linked when ``dest`` is on the same filesystem (RocksDB never changes
    them once written; compaction only unlinks them), everything else (MANIFEST, WAL, CURRENT, OPTIONS,
    LOG) is copied, as RocksDB's own checkpoint does. ``LOCK`` is created empty, never read. The root
    gets ``src``'s mode and times; as root, files keep their owner.
    """
    stats = {"files": 0, "linked": 0, "bytes": 0}
    os.mkdir(dest, 0o700)
    as_root = os.geteuid() == 0
    same_fs = link and os.stat(src).st_dev == os.stat(dest).st_dev

    def visit(source_dir: str, target_dir: str) -> None:
        with os.scandir(source_dir) as scan:
            entries = sorted(scan, key=lambda entry: entry.name)
        for entry in entries:
            target = os.path.join(target_dir, entry.name)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(target, 0o700)
                visit(entry.path, target)
                shutil.copystat(entry.path, target, follow_symlinks=False)
            elif stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(entry.path), target)
            elif stat.S_ISREG(info.st_mode):
                stats["files"] += 1
                stats["bytes"] += info.st_size
                if entry.name == "LOCK":
                    # Never opened: closing any descriptor of it would drop this process's lock on it.
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, stat.S_IMODE(info.st_mode)))
                    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
                elif same_fs and entry.name.endswith(IMMUTABLE_SUFFIXES) and _try_link(entry.path, target):
                    stats["linked"] += 1
                    continue  # the same inode: owner and times are already the source's
                else:
                    shutil.copy2(entry.path, target, follow_symlinks=False)
            else:
                continue  # sockets, fifos: never part of a RocksDB
            if as_root:
                os.lchown(target, info.st_uid, info.st_gid)

    visit(src, dest)
    shutil.copystat(src, dest)
    if as_root:
        info = os.stat(src)
        os.chown(dest, info.st_uid, info.st_gid)
    return stats


def _try_link(src: str, dest: str) -> bool:
    try:
        os.link(src, dest, follow_symlinks=False)
        return True
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP):
            return False
        raise


def _make_view(path: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """A sibling directory of hard links to ``path``'s files, for rocksdict to open instead of ``path``.

    Returns the view and, for every linked file, its (size, mtime) to prove afterwards that the
    read-only open changed nothing. ``LOG*`` files are left out, ``rocksdict-config.json`` is copied.
    """
    parent, base = os.path.split(os.path.abspath(path))
    view = os.path.join(parent, ".%s.nodekeep-view-%s" % (base, uuid.uuid4().hex[:8]))
    watched: dict[str, tuple[int, int]] = {}
    os.mkdir(view, 0o700)

    def visit(source_dir: str, target_dir: str) -> None:
        for entry in os.scandir(source_dir):
            target = os.path.join(target_dir, entry.name)
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(target, 0o700)
                visit(entry.path, target)
            elif stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(entry.path), target)
            elif not stat.S_ISREG(info.st_mode) or entry.name.startswith("LOG"):
                continue
            elif entry.name == "LOCK":
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            elif entry.name != ROCKSDICT_CONFIG and _try_link(entry.path, target):
                watched[entry.path] = (info.st_size, info.st_mtime_ns)
            else:
                shutil.copyfile(entry.path, target)

    try:
        visit(path, view)
    except BaseException:
        remove_tree(view)
        raise
    return view, watched


def _open_read_only(path: str):
    names = rocksdict.Rdict.list_cf(path, rocksdict.Options(raw_mode=True))
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(False)
    families = {name: rocksdict.Options(raw_mode=True) for name in names if name != "default"}
    access = rocksdict.AccessType.read_only(False)  # replay a WAL in memory instead of refusing it
    return names, rocksdict.Rdict(path, options, column_families=families or None, access_type=access)


def _count_keys(db, names: list[str]) -> dict[str, int]:
    read = rocksdict.ReadOptions()
    read.set_verify_checksums(True)
    read.set_readahead_size(2 << 20)
    read.set_total_order_seek(True)
    counts = {}
    for name in names:
        # Every data block is read, so every block's checksum is verified on the way. An explicit
        # iterator, because its status must be checked: a damaged block ends iteration early.
        iterator = db.get_column_family(name).iter(read)
        iterator.seek_to_first()
        count = 0
        while iterator.valid():
            count += 1
            iterator.next()
        iterator.status()  # raises the RocksDB error (Corruption...) that stopped the iteration
        counts[name] = count
    return counts


def verify_copy(
    path: str, count_keys: bool = False, verify: str = "open", error=CaptureError, label: str = "the copy"
) -> dict[str, Any]:
    """Open a private copy read-only (through a view), list its column families, count keys on request.

    ``verify='list'`` only reads the MANIFEST (for DBs with a custom comparator or merge operator
    that a generic reader cannot open). Returns facts for the manifest.
    """
    facts: dict[str, Any] = dict(options_facts(path))
    if not HAS_ROCKSDICT:
        raise error(
            "cannot verify %s: the Python library rocksdict is missing" % label,
            "run the nodekeep.backup.agent role and use its virtualenv as ansible_python_interpreter",
        )
    facts["verified_with"] = rocksdict_version()
    began = time.monotonic()
    try:
        if verify == "list":
            facts["column_families"] = list(rocksdict.Rdict.list_cf(path, rocksdict.Options(raw_mode=True)))
            facts["verify_seconds"] = round(time.monotonic() - began, 3)
            return facts
    except Exception as exc:  # noqa: BLE001 - rocksdict raises plain exceptions carrying RocksDB's status
        raise error("%s is not a readable RocksDB: %s" % (label, exc), "the copy was discarded; check the database")
    view, watched = _make_view(path)
    try:
        try:
            names, db = _open_read_only(view)
        except Exception as exc:  # noqa: BLE001
            raise error(
                "%s cannot be opened read-only by %s: %s" % (label, facts["verified_with"], exc),
                "if the application uses a custom comparator or merge operator, set verify: list; "
                "otherwise the data is damaged and nothing was kept",
            )
        try:
            facts["column_families"] = list(names)
            facts["sequence"] = int(db.latest_sequence_number())
            if count_keys:
                facts["keys"] = _count_keys(db, names)
        except Exception as exc:  # noqa: BLE001
            raise error(
                "%s is damaged: reading it failed: %s" % (label, exc),
                "nothing was kept from this copy; check the live database (ldb checkconsistency) "
                "or restore another epoch",
            )
        finally:
            db.close()
        changed = [name for name, (size, mtime) in watched.items() if _stat_pair(name) != (size, mtime)]
        if changed:
            raise error(
                "the read-only open of %s changed %s" % (label, ", ".join(sorted(changed)[:5])),
                "report this: the copy was discarded",
            )
    finally:
        remove_tree(view)
    facts["verify_seconds"] = round(time.monotonic() - began, 3)
    return facts


def _stat_pair(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)
