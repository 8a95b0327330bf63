# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rocksdb`` asset type: a consistent copy of a live RocksDB directory, verified, as a tar stream.

A second process cannot checkpoint a live RocksDB: only the process holding
the DB read-write (its ``LOCK``) sees the memtables, and a checkpoint through a
read-only or secondary handle silently misses them. So each asset chooses one
of the honest ``method``s:

``checkpoint_command``
    the application's own checkpoint/admin command (a string or an argv list)
    with ``{dest}`` replaced by a new directory: under the run's scratch space,
    or under ``checkpoint_dir`` when the application must write on the DB's
    own filesystem (hard links). Verified, archived, removed.
``stop``
    stop the service (``service`` -> ``systemctl stop/start``, or explicit
    ``stop_command``/``start_command``), take a cold copy (SST and blob files
    hard-linked when ``copy_dir`` is on the DB's filesystem, everything else
    copied), start the service again (always, also when the copy failed) and
    report the stop window in ``stop_seconds``.
``snapshot``
    ``asset["path"]`` already is a crash-consistent view (a filesystem
    snapshot of the live DB). It is copied to private space, where RocksDB
    replays its WAL in memory when the copy is opened read-only.
``offline``
    the DB is closed: nobody holds its ``LOCK``. A cold copy is taken while a
    read lock on ``LOCK`` keeps the owner from starting in between; a held
    ``LOCK`` is refused, naming the process.

Nothing is ever written into the node's DB directory and the node's DB is
never opened: every copy is opened read-only with rocksdict (its bundled
RocksDB) through a *view*, a sibling directory of hard links, because
rocksdict rewrites its own ``rocksdict-config.json`` in any directory it opens
(also read-only) and the archived copy must stay byte-for-byte what the
node's own RocksDB wrote (a newer RocksDB opening read-write would rewrite
files in a format the node's older RocksDB cannot read).
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
import signal
import stat
import struct
import subprocess
import time
import uuid
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils import archive as _archive
from ansible_collections.nodekeep.backup.plugins.module_utils import assets as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.repository import fsync_dir

try:
    import rocksdict

    HAS_ROCKSDICT = True
    ROCKSDICT_IMPORT_ERROR = None
except ImportError as import_error:  # pragma: no cover - depends on the node's virtualenv
    rocksdict = None
    HAS_ROCKSDICT = False
    ROCKSDICT_IMPORT_ERROR = import_error

METHODS = ("checkpoint_command", "stop", "snapshot", "offline")
VERIFY_MODES = ("open", "list")
#: files RocksDB never modifies after writing them: hard-linking them is as good as copying
IMMUTABLE_SUFFIXES = (".sst", ".blob", ".ldb")
#: written by rocksdict into any directory it opens (also read-only): never linked into a view
ROCKSDICT_CONFIG = "rocksdict-config.json"
STDERR_TAIL = 800
DEFAULT_TIMEOUTS = {"stop_timeout": 120, "command_timeout": 3600}
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


def _inside(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (both made absolute and real)."""
    path = os.path.realpath(path)
    root = os.path.realpath(root)
    return path == root or path.startswith(root.rstrip("/") + "/")


def _remove_tree(path: str | None) -> None:
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


def _check_program(argv: list[str], option: str) -> None:
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


def _tail(data: bytes | None) -> str:
    text = (data or b"").decode("utf-8", "replace").strip()
    return text[-STDERR_TAIL:]


def run_command(argv: list[str], what: str, timeout: float) -> float:
    """Run a service or checkpoint command (no shell); a clear error on failure or timeout. Returns seconds."""
    began = time.monotonic()
    try:
        # argv comes from the operator's inventory; no shell runs
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
    except OSError as exc:
        raise CaptureError(
            "cannot run the %s %s: %s" % (what, argv[0], exc.strerror or exc),
            "check the command (installed, executable, absolute path)",
        )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise CaptureError(
            "the %s %s did not finish within %d s and was killed" % (what, shlex.join(argv), timeout),
            "check why it hangs, or raise command_timeout / stop_timeout",
        )
    if proc.returncode != 0:
        detail = _tail(err) or _tail(out) or "no output"
        raise CaptureError(
            "the %s %s failed with exit code %d: %s" % (what, shlex.join(argv), proc.returncode, detail),
            "run it by hand to see why; nothing was kept",
        )
    return round(time.monotonic() - began, 3)


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


def _held_error(path: str, holder: dict[str, Any], method: str) -> CaptureError:
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
            raise _held_error(path, holder, method)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            raise _held_error(path, _describe_holder(_flock_holder(os.fstat(fd)), "flock"), method)
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
        _remove_tree(view)
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
        _remove_tree(view)
    facts["verify_seconds"] = round(time.monotonic() - began, 3)
    return facts


def _stat_pair(path: str) -> tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (-1, -1)
    return (info.st_size, info.st_mtime_ns)


# --------------------------------------------------------------------------
# the four methods
# --------------------------------------------------------------------------


def infer_method(options: dict[str, Any]) -> str | None:
    if options.get("method"):
        return str(options["method"])
    if options.get("checkpoint_command"):
        return "checkpoint_command"
    if options.get("snapshot"):
        return "snapshot"
    if options.get("service") or options.get("stop_command"):
        return "stop"
    return None


def validate(options: dict[str, Any], label: str) -> dict[str, Any]:
    """Check the method and its options (no filesystem access); returns them normalized."""
    out = dict(options)
    method = infer_method(out)
    if method is None:
        raise CaptureError(
            "%s: no RocksDB method was chosen" % label,
            "set method to checkpoint_command (the application's own checkpoint), stop (stop the service "
            "briefly), snapshot (a filesystem snapshot of the DB) or offline (the DB is closed)",
        )
    if method not in METHODS:
        raise CaptureError("%s: method must be one of %s, not %r" % (label, ", ".join(METHODS), method))
    out["method"] = method
    if out.get("snapshot") and method != "snapshot":
        raise CaptureError(
            "%s: a snapshot: option goes with method snapshot, not %s" % (label, method),
            "remove method (it is then snapshot) or remove snapshot:",
        )
    if method == "checkpoint_command":
        if not out.get("checkpoint_command"):
            raise CaptureError(
                "%s: method checkpoint_command needs checkpoint_command" % label,
                "give the application's checkpoint command, with {dest} where the new directory goes",
            )
        argv = command_argv(out["checkpoint_command"], "checkpoint_command")
        if not any("{dest}" in arg for arg in argv):
            raise CaptureError(
                "%s: checkpoint_command does not contain {dest}" % label,
                "put {dest} where the command takes the new checkpoint directory, e.g. "
                "'myapp admin checkpoint --out {dest}'",
            )
        out["checkpoint_command"] = argv
    if method == "stop":
        if bool(out.get("stop_command")) != bool(out.get("start_command")):
            raise CaptureError(
                "%s: stop_command and start_command go together" % label,
                "give both, or give service to use systemctl stop/start",
            )
        if not out.get("stop_command") and not out.get("service"):
            raise CaptureError(
                "%s: method stop needs service (a systemd unit) or stop_command and start_command" % label,
                "name the service that owns the database",
            )
        if out.get("stop_command"):
            out["stop_command"] = command_argv(out["stop_command"], "stop_command")
            out["start_command"] = command_argv(out["start_command"], "start_command")
    for key in ("checkpoint_dir", "copy_dir"):
        value = out.get(key)
        if value and not os.path.isabs(str(value)):
            raise CaptureError("%s: %s must be an absolute path, not %r" % (label, key, value))
    out["verify"] = out.get("verify") or "open"
    if out["verify"] not in VERIFY_MODES:
        raise CaptureError("%s: verify must be one of %s" % (label, ", ".join(VERIFY_MODES)))
    for key in ("stop_timeout", "command_timeout"):
        if out.get(key) is None:
            out[key] = DEFAULT_TIMEOUTS[key]
        try:
            out[key] = int(out[key])
        except (TypeError, ValueError):
            raise CaptureError("%s: %s must be a number of seconds" % (label, key))
        if out[key] <= 0:
            raise CaptureError("%s: %s must be a positive number of seconds" % (label, key))
    out["count_keys"] = bool(out.get("count_keys"))
    return out


def _service_argv(options: dict[str, Any]) -> tuple[list[str], list[str]]:
    if options.get("stop_command"):
        return list(options["stop_command"]), list(options["start_command"])
    unit = str(options["service"])
    return ["systemctl", "stop", unit], ["systemctl", "start", unit]


def _check_work_dir(directory: str, db: str, option: str) -> None:
    if not os.path.isdir(directory):
        raise CaptureError(
            "the %s %s does not exist" % (option, directory), "create it first; nothing was stopped or written"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CaptureError(
            "cannot write to the %s %s" % (option, directory),
            "choose a writable directory or run with become: true; nothing was stopped or written",
        )
    if _inside(directory, db):
        raise CaptureError(
            "the %s %s is inside the RocksDB directory %s" % (option, directory, db),
            "choose a directory outside the database: nothing is ever written into it",
        )


def preflight(options: dict[str, Any], work_dir: str) -> dict[str, Any]:
    """Everything that can be checked before anything is stopped or written. Returns a plan."""
    path = options["path"]
    method = options["method"]
    check_db_dir(path, "the RocksDB of %s" % options.get("name", path))
    plan: dict[str, Any] = {"path": path, "method": method}
    if method == "checkpoint_command":
        _check_program(options["checkpoint_command"], "checkpoint_command")
        _check_work_dir(work_dir, path, "checkpoint directory")
        plan["would"] = "run the checkpoint command into a new directory under %s, verify it and keep it" % work_dir
    elif method == "stop":
        stop_argv, start_argv = _service_argv(options)
        _check_program(stop_argv, "stop_command")
        _check_program(start_argv, "start_command")
        _check_work_dir(work_dir, path, "copy directory")
        plan["would"] = "stop the service (%s), copy the closed DB to %s, start it again (%s)" % (
            shlex.join(stop_argv),
            work_dir,
            shlex.join(start_argv),
        )
        plan["hard_links"] = os.stat(path).st_dev == os.stat(work_dir).st_dev
    else:
        holder = lock_holder(path)
        if holder is not None:
            raise _held_error(path, holder, method)
        _check_work_dir(work_dir, path, "copy directory")
        plan["would"] = "copy the %s DB to %s and verify the copy" % (
            "snapshotted" if method == "snapshot" else "closed",
            work_dir,
        )
    return plan


def _run_checkpoint(options: dict[str, Any], dest: str) -> dict[str, Any]:
    replacements = {"{dest}": dest, "{path}": options["path"], "{name}": str(options.get("name", ""))}
    argv = []
    for arg in options["checkpoint_command"]:
        for token, value in replacements.items():
            arg = arg.replace(token, value)
        argv.append(arg)
    seconds = run_command(argv, "checkpoint command", options["command_timeout"])
    if not os.path.lexists(dest):
        raise CaptureError(
            "the checkpoint command %s exited 0 but made no directory at %s" % (shlex.join(argv), dest),
            "check that the command writes the checkpoint where {dest} says",
        )
    check_db_dir(dest, "the checkpoint made by %s" % argv[0])
    return {"checkpoint_seconds": seconds}


def _stop_and_copy(options: dict[str, Any], dest: str) -> dict[str, Any]:
    """Stop the service, copy the closed DB, start the service again whatever happened."""
    path = options["path"]
    stop_argv, start_argv = _service_argv(options)
    facts: dict[str, Any] = {}
    failure: BaseException | None = None
    began = time.monotonic()
    try:
        run_command(stop_argv, "stop command", options["stop_timeout"])
        deadline = time.monotonic() + options["stop_timeout"]
        holder = lock_holder(path)
        while holder is not None and time.monotonic() < deadline:
            time.sleep(0.1)
            holder = lock_holder(path)
        if holder is not None:
            raise _held_error(path, holder, "stop")
        copy_began = time.monotonic()
        with hold_closed(path, "stop"):
            facts["copy"] = copy_db_tree(path, dest)
        facts["copy_seconds"] = round(time.monotonic() - copy_began, 3)
    except BaseException as exc:  # noqa: BLE001 - the service is started again first, then this is raised
        failure = exc
    start_error: NodekeepError | None = None
    try:
        run_command(start_argv, "start command", options["stop_timeout"])
    except NodekeepError as exc:
        start_error = exc
    window = round(time.monotonic() - began, 3)
    facts["stop_seconds"] = window
    if start_error is not None:
        what = "the copy failed (%s) and " % _message(failure, dest) if failure is not None else ""
        raise CaptureError(
            "%sthe service did NOT start again after a stop window of %.1f s: %s" % (what, window, start_error.problem),
            "start it by hand now (%s) and check its logs" % shlex.join(start_argv),
            stop_seconds=window,
        )
    if failure is not None:
        if isinstance(failure, (NodekeepError, OSError)):
            raise CaptureError(
                "%s; the service was started again (stop window %.1f s)" % (_message(failure, dest), window),
                _remedy(failure, dest),
                stop_seconds=window,
            ) from failure
        raise failure
    return facts


def _message(failure: BaseException | None, dest: str) -> str:
    if isinstance(failure, NodekeepError):
        return failure.problem
    if isinstance(failure, OSError):
        return describe_os_error(failure, "copying the stopped RocksDB", dest).problem
    return str(failure)


def _remedy(failure: BaseException, dest: str) -> str:
    if isinstance(failure, OSError):
        failure = describe_os_error(failure, "copying the stopped RocksDB", dest)
    return getattr(failure, "remedy", "") or "nothing was kept; fix the cause and run again"


def _cold_copy(options: dict[str, Any], dest: str) -> dict[str, Any]:
    path = options["path"]
    began = time.monotonic()
    if options["method"] == "snapshot":
        holder = lock_holder(path)
        if holder is not None:
            raise _held_error(path, holder, "snapshot")
        stats = copy_db_tree(path, dest)
    else:
        with hold_closed(path, "offline"):
            stats = copy_db_tree(path, dest)
    return {"copy": stats, "copy_seconds": round(time.monotonic() - began, 3)}


def take_copy(options: dict[str, Any], dest: str) -> dict[str, Any]:
    """Make ``dest`` (which must not exist) a consistent copy of the DB by ``options['method']``.

    On any error ``dest`` is removed and the error says what happened; returns the facts.
    """
    method = options["method"]
    try:
        if method == "checkpoint_command":
            facts = _run_checkpoint(options, dest)
        elif method == "stop":
            facts = _stop_and_copy(options, dest)
        else:
            facts = _cold_copy(options, dest)
    except OSError as exc:
        _remove_tree(dest)
        raise describe_os_error(exc, "copying the RocksDB %s" % options["path"], dest)
    except BaseException:
        _remove_tree(dest)
        raise
    facts["method"] = method
    return facts


def _take_verified_copy(options: dict[str, Any], dest: str, label: str) -> dict[str, Any]:
    """``take_copy`` into ``dest``, then ``verify_copy`` of it as the options ask; the facts of both."""
    facts = take_copy(options, dest)
    facts.update(verify_copy(dest, count_keys=options["count_keys"], verify=options["verify"], label=label))
    return facts


def _work_dir(options: dict[str, Any], scratch_dir: str) -> str:
    if options["method"] == "checkpoint_command":
        return str(options.get("checkpoint_dir") or scratch_dir)
    return str(options.get("copy_dir") or scratch_dir)


# --------------------------------------------------------------------------
# the asset type
# --------------------------------------------------------------------------


class RocksdbAssetType(_archive.TreeAssetType):
    """A live RocksDB directory, copied consistently by the asset's ``method``, verified, archived as tar."""

    name = "rocksdb"
    extension = ".tar"
    content_format = "rocksdb+tar"
    options: ClassVar[dict[str, Any]] = {
        "method": None,
        "checkpoint_command": None,
        "checkpoint_dir": None,
        "service": None,
        "stop_command": None,
        "start_command": None,
        "stop_timeout": DEFAULT_TIMEOUTS["stop_timeout"],
        "command_timeout": DEFAULT_TIMEOUTS["command_timeout"],
        "copy_dir": None,
        "count_keys": False,
        "verify": "open",
    }

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        normalized = validate(normalized, "asset %s" % normalized["name"])
        for key in ("checkpoint_dir", "copy_dir"):
            if normalized.get(key) and _inside(normalized[key], normalized["path"]):
                raise CaptureError(
                    "asset %s: %s %s is inside the database directory" % (normalized["name"], key, normalized[key]),
                    "choose a directory outside the database: nothing is ever written into it",
                )
        return normalized

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        """Copy consistently, verify the private copy, then stream it as tar; the copy is removed after."""
        options = dict(asset)
        work = _work_dir(options, scratch_dir)
        preflight(options, work)
        copy = os.path.join(work, ".nodekeep-rocksdb-%s-%s" % (asset["name"], uuid.uuid4().hex[:8]))
        try:
            facts = _take_verified_copy(
                options, copy, "the copy of the RocksDB %s (%s)" % (asset["name"], options["method"])
            )
            if options["verify"] == "list":
                facts["verify"] = "list"
            # The copy's files are the backup's (or the application's checkpoint's): record the live ones'.
            facts.update(_attrs.tree_owner_facts(asset["path"]))
            with self.capture_tree(copy, asset, facts) as captured:
                yield captured
        finally:
            _remove_tree(copy)

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        """The restored directory and its files get the live ones' owners (as root) and modes, recorded at backup."""
        source = context.artifact.source if context is not None and context.artifact else {}
        with super().restore_into(target, force, context) as staged:
            extract = staged._complete

            def complete() -> dict[str, Any]:
                facts = extract() if extract is not None else {}
                _attrs.apply_tree_owners(staged.path, source)
                return facts

            yield _assets.Staged(staged.path, staged.stream, complete=complete)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        """The restored DB opened read-only (column families, sequence, keys compared), then its entry counts."""
        source = artifact.source or {}
        label = "the restored RocksDB %s" % artifact.name
        check_db_dir(path, label, error=RestoreError)
        facts = verify_copy(
            path,
            count_keys=check == "integrity" and source.get("verify") != "list",
            verify=str(source.get("verify") or "open"),
            error=RestoreError,
            label=label,
        )
        problems = compare_facts(source, facts)
        if problems:
            raise RestoreError(
                "%s does not match its manifest: %s" % (label, "; ".join(problems)),
                "the artifact does not match its manifest; restore another epoch",
            )
        result = super().deep_check(path, artifact, check)
        result.update({key: facts[key] for key in ("column_families", "sequence", "keys") if key in facts})
        return result


def compare_facts(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Differences between the manifest's RocksDB facts and a restored copy's."""
    problems = []
    wanted = expected.get("column_families")
    if wanted is not None and sorted(wanted) != sorted(found.get("column_families") or []):
        problems.append(
            "column families are %s, the manifest says %s"
            % (", ".join(sorted(found.get("column_families") or [])), ", ".join(sorted(wanted)))
        )
    sequences = (expected.get("sequence"), found.get("sequence"))
    if None not in sequences and int(sequences[0]) != int(sequences[1]):
        problems.append("sequence number is %s, the manifest says %s" % (sequences[1], sequences[0]))
    keys = expected.get("keys")
    if keys and found.get("keys") is not None:
        for family in sorted(keys):
            if found["keys"].get(family) != keys[family]:
                problems.append(
                    "column family %s has %s keys, the manifest says %s"
                    % (family, found["keys"].get(family), keys[family])
                )
    return problems


# --------------------------------------------------------------------------
# the standalone module (rocksdb_checkpoint)
# --------------------------------------------------------------------------


def plan_checkpoint(options: dict[str, Any], dest: str, force: bool = False) -> dict[str, Any]:
    """What ``checkpoint_to`` would do; checks everything it can without writing or stopping anything."""
    options = validate(dict(options), "rocksdb_checkpoint")
    path = os.path.normpath(str(options["path"]))
    options["path"] = path
    check_db_dir(path)
    if not dest or not os.path.isabs(dest):
        raise CaptureError("dest must be an absolute path, not %r" % (dest,))
    dest = os.path.normpath(dest)
    if _inside(dest, path):
        raise CaptureError(
            "dest %s is inside the RocksDB directory %s" % (dest, path),
            "choose a destination outside the database: nothing is ever written into it",
        )
    if _inside(path, dest):
        raise CaptureError(
            "the RocksDB %s is inside dest %s" % (path, dest), "choose a destination that does not contain the database"
        )
    parent = _archive.check_parent_writable(dest, "checkpoint destination")
    exists = os.path.lexists(dest)
    if exists and not force:
        raise CaptureError(
            "the destination %s already exists" % dest,
            "choose a new path (e.g. with a timestamp) or set force: true to replace it; nothing was changed",
        )
    if exists and not os.path.isdir(dest):
        raise CaptureError(
            "the destination %s exists and is not a directory" % dest, "remove it or choose another path"
        )
    plan = preflight(options, parent)
    plan.update({"dest": dest, "replaced": exists, "options": options})
    return plan


def checkpoint_to(options: dict[str, Any], dest: str, force: bool = False) -> dict[str, Any]:
    """A verified consistent copy of a live RocksDB at the new directory ``dest`` (the module's work)."""
    began = time.monotonic()
    plan = plan_checkpoint(options, dest, force)
    options = plan.pop("options")
    dest = plan["dest"]
    parent = os.path.dirname(dest)
    temp = os.path.join(parent, ".%s.nodekeep-%s" % (os.path.basename(dest), uuid.uuid4().hex[:8]))
    try:
        facts = _take_verified_copy(options, temp, "the copy of %s (%s)" % (options["path"], options["method"]))
        kept = None
        try:
            if os.path.lexists(dest):
                kept = "%s.nodekeep-replaced-%s" % (dest, _archive.utc_stamp())
                os.rename(dest, kept)
            os.rename(temp, dest)
            fsync_dir(parent)
        except OSError as exc:
            if kept and not os.path.lexists(dest):
                os.rename(kept, dest)
            raise describe_os_error(exc, "placing the checkpoint", dest)
        _remove_tree(kept)
    finally:
        _remove_tree(temp)
    result: dict[str, Any] = {"changed": True, "path": options["path"], "dest": dest, "replaced": plan["replaced"]}
    copy = facts.pop("copy", None)
    if copy:
        result.update(copy)
    if "keys" in facts:
        facts["key_counts"] = facts.pop("keys")  # ``result.keys`` would be a method in Jinja
    result.update(facts)
    result["duration"] = round(time.monotonic() - began, 3)
    return result
