# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Directory trees as tar streams, sealed files, and safe placement of files.

* ``tar_reader(path)`` walks a directory tree and returns a readable binary
  stream of a POSIX (PAX) tar archive of it, produced by a thread through an
  OS pipe: memory stays bounded, and an error in the producer (an unreadable
  file, a file that shrank while it was read) is raised by the reader instead
  of ending the stream early, so a truncated archive can never pass for a
  complete one.
* ``extract_tar(stream, dest_dir)`` unpacks a tar stream into a new directory
  keeping modes, numeric ownership (as root), nanosecond mtimes, symlinks and
  hard links (symlinks as they are, absolute ones too: they are data), and
  refuses absolute names, ``..``, writing through a symlink, and device files.
  ``tar_writer(dest_dir)`` is the same as a writable sink (a consumer thread).
* ``seal_path`` / ``open_path`` seal a file or a directory with age (through
  the one seal pipeline in ``seal.py``) and open it again, writing the result
  atomically beside its destination. The output is standard: a sealed file is
  ``age -d``-able, a sealed directory is ``age -d | zstd -d | tar -x``-able.

Archives are numeric-only (no user or group names), so ownership survives a
restore on a host whose user database differs. Extended attributes and POSIX
ACLs (default ACLs of directories too) are kept as PAX ``SCHILY.xattr.*``
records and sparse files stay sparse (``attrs.py``). Sockets and device nodes
are not archived (listed in the stats as skipped); inode flags (chattr) are not
kept (listed as not_kept).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import errno
import fnmatch
import hashlib
import io
import os
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, BinaryIO, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils import armor as _armor
from ansible_collections.nodekeep.backup.plugins.module_utils import assets as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
    SealError,
    UnsealError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.repository import fsync_dir
from ansible_collections.nodekeep.backup.plugins.module_utils.seal import (
    DEFAULT_LEVEL,
    Digest,
    SealResult,
    is_age_file,
    load_identities,
    parse_recipient,
    recipient_lines,
    seal,
    unseal,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.shamir import key_facts

PIPE_SIZE = 1 << 20
COPY_CHUNK = 1 << 20
#: how much plaintext ``open_path`` looks at to tell a sealed directory from a sealed file
SNIFF_SIZE = 64 << 10
#: at most this many paths are listed in the stats' ``skipped`` and ``changed``
LIST_LIMIT = 100
CONTENT_KINDS = ("auto", "file", "directory")
#: what a walk or an extraction of a tree counts (a walk also counts what it ``excluded``)
ENTRY_COUNTS = ("files", "directories", "symlinks", "hardlinks", "other", "bytes")


def entry_counts(*extra: str) -> dict[str, int]:
    """Zero counters of ``ENTRY_COUNTS`` and then ``extra``, in that order."""
    return dict.fromkeys(ENTRY_COUNTS + extra, 0)


# --------------------------------------------------------------------------
# small file helpers (also used by cutover.py)
# --------------------------------------------------------------------------


def utc_stamp(now: float | None = None) -> str:
    """UTC time as ``YYYYMMDDTHHMMSSZ``, the way epochs and safety copies are named."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))


def parse_mode(value: Any, option: str = "mode") -> int | None:
    """An octal mode given as a string (``'0640'``) or an int (``0o640``); None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise CaptureError(f"{option} must be an octal mode such as '0600', not {value!r}")
    if isinstance(value, int):
        mode = value
    else:
        text = str(value).strip()
        try:
            mode = int(text, 8)
        except ValueError:
            raise CaptureError(
                f"{option} {text!r} is not an octal mode",
                "give it as a quoted octal string such as '0600' or '0640' (symbolic modes are not supported)",
            )
    if not 0 <= mode <= 0o7777:
        raise CaptureError(f"{option} {value!r} is out of range", "give a quoted octal string such as '0600'")
    return mode


def format_mode(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


def temp_path(dest: str) -> str:
    """A unique hidden name beside ``dest`` (same directory, so same filesystem)."""
    directory, name = os.path.split(os.path.abspath(dest))
    return os.path.join(directory, f".{name}.nodekeep-{uuid.uuid4().hex[:8]}")


def check_parent_writable(dest: str, what: str = "destination") -> str:
    """The directory that will hold ``dest`` exists and this user may create files there."""
    directory = os.path.dirname(os.path.abspath(dest))
    if not os.path.isdir(directory):
        raise CaptureError(
            f"the directory of the {what} {dest} does not exist",
            f"create {directory} first (for example with ansible.builtin.file state=directory)",
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CaptureError(
            f"cannot write to {directory}, the directory of the {what} {dest} (permission denied, read-only or immutable)",
            "choose a writable directory or run with become: true; nothing was written",
        )
    return directory


def place_file(temp: str, dest: str, replace: bool = False) -> None:
    """Give the finished ``temp`` its final name ``dest`` atomically.

    Without ``replace`` this is a hard link, which fails if ``dest`` exists:
    nothing is ever overwritten by accident. With ``replace`` it is a rename,
    which swaps an existing file for the new one atomically.
    """
    try:
        if replace:
            os.rename(temp, dest)
        else:
            os.link(temp, dest)
            os.unlink(temp)
    except FileExistsError:
        raise CaptureError(f"{dest} appeared while it was being written", "nothing was overwritten; run again")
    except IsADirectoryError:
        raise CaptureError(f"{dest} is a directory", "give the path of a file; nothing was written")
    except OSError as exc:
        raise describe_os_error(exc, f"placing {dest}", dest)
    fsync_dir(os.path.dirname(os.path.abspath(dest)))


def _remove_quietly(path: str | None) -> None:
    """Remove a temporary file or directory this module made itself."""
    if not path or not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _pipe() -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (ImportError, OSError):
        pass
    return read_fd, write_fd


# --------------------------------------------------------------------------
# producing a tar stream
# --------------------------------------------------------------------------


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    """Shell globs on the path relative to the root; a pattern without ``/`` also matches the base name."""
    base = rel.rsplit("/", 1)[-1]
    for raw in patterns:
        pattern = raw.strip("/")
        if not pattern:
            continue
        if fnmatch.fnmatchcase(rel, pattern):
            return True
        if "/" not in pattern and fnmatch.fnmatchcase(base, pattern):
            return True
    return False


def _leaves_tree(rel: str, link: str) -> bool:
    """Whether a symlink at ``rel`` with target ``link`` points outside the tree (judged by its text)."""
    if not link or link.startswith("/"):
        return True
    resolved = os.path.normpath(os.path.join(os.path.dirname(rel), link))
    return resolved == ".." or resolved.startswith("../")


def _pax_time(ns: int) -> str:
    seconds, fraction = divmod(ns, 10**9)
    return "%d.%09d" % (seconds, fraction) if fraction else str(seconds)


class _CountingWriter:
    """The pipe's write end, with the ``tell()`` tarfile's non-stream writer wants."""

    def __init__(self, fd: int) -> None:
        self._file = open(fd, "wb", buffering=PIPE_SIZE)  # noqa: SIM115 - owned by this object, closed by close()
        self._offset = 0

    def write(self, data) -> int:
        count = self._file.write(data)
        self._offset += len(data)
        return count

    def tell(self) -> int:
        return self._offset

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TarReader(io.RawIOBase):
    """A readable tar stream of a directory tree, produced by a thread (see ``tar_reader``)."""

    def __init__(self, root: str, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None):
        super().__init__()
        self._fd: int | None = None
        self.root = os.path.abspath(root)
        self._include = list(include or [])
        self._exclude = list(exclude or [])
        try:
            info = os.stat(self.root)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise CaptureError(f"the directory {root} does not exist", "check the path")
            raise CaptureError(f"cannot read {root} ({exc.strerror})", "run with become: true")
        if not stat.S_ISDIR(info.st_mode):
            raise CaptureError(f"{root} is not a directory", "give the path of a directory to archive")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise CaptureError(f"cannot read the directory {root} (permission denied)", "run with become: true")
        self._stats: dict[str, Any] = dict(
            entry_counts("excluded"), skipped=[], changed=[], outside_links=[], not_kept=[]
        )
        self._error: BaseException | None = None
        self._failure: NodekeepError | None = None
        self._emitted: set[str] = set()
        self._links: dict[tuple[int, int], str] = {}
        read_fd, write_fd = _pipe()
        self._fd = read_fd
        self._writer = _CountingWriter(write_fd)
        self._thread = threading.Thread(target=self._produce, name="nodekeep-tar-producer", daemon=True)
        self._thread.start()

    # -- reader side ---------------------------------------------------------

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._fd is None:
            raise ValueError("read from a closed tar stream")
        count = os.readv(self._fd, [buffer])
        if count == 0:
            self._raise_if_failed()
        return count

    def close(self) -> None:
        """Stop reading; an unfinished producer stops at its next write (broken pipe)."""
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            os.close(fd)
            self._thread.join(timeout=60)
        super().close()

    def stats(self) -> dict[str, Any]:
        """What was archived: counts, content bytes, skipped and changed paths (complete after EOF)."""
        return dict(self._stats)

    def _raise_if_failed(self) -> None:
        self._thread.join()
        if self._error is None:
            return
        if self._failure is None:
            self._failure = self._describe(self._error)
        raise self._failure

    def _describe(self, error: BaseException) -> NodekeepError:
        if isinstance(error, NodekeepError):
            return error
        if isinstance(error, OSError):
            where = error.filename or self.root
            return CaptureError(
                f"cannot archive {where}: {error.strerror or error}",
                "check the permissions (become: true) and retry; the archive was not completed",
            )
        return CaptureError(f"archiving {self.root} failed: {error}", "the archive was not completed")

    # -- producer side -------------------------------------------------------

    def _produce(self) -> None:
        try:
            archive = tarfile.TarFile(fileobj=self._writer, mode="w", format=tarfile.PAX_FORMAT, copybufsize=COPY_CHUNK)
            self._emit(archive, "", os.stat(self.root))
            self._visit(archive, self.root, "", selected=not self._include)
            archive.close()  # writes the end-of-archive marker: only reached without an error
            self._writer.flush()
        except BrokenPipeError:
            pass  # the reader closed the stream early: it is not interested in the rest
        except BaseException as exc:  # noqa: BLE001 - raised to the reader at EOF, never lost
            self._error = exc
        finally:
            with contextlib.suppress(OSError):
                self._writer.close()

    def _visit(self, archive: tarfile.TarFile, directory: str, rel_dir: str, selected: bool) -> None:
        try:
            with os.scandir(directory) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as exc:
            raise CaptureError(
                f"cannot list the directory {directory} ({exc.strerror})",
                "check its permissions (become: true); the archive was not completed",
            )
        for entry in entries:
            rel = entry.name if not rel_dir else rel_dir + "/" + entry.name
            if self._exclude and _matches(rel, self._exclude):
                self._stats["excluded"] += 1
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                self._note("skipped", rel, "vanished before it was read")
                continue
            chosen = selected or _matches(rel, self._include)
            if stat.S_ISDIR(info.st_mode):
                if chosen:
                    self._emit(archive, rel, info)
                self._visit(archive, entry.path, rel, chosen)
            elif chosen:
                self._emit(archive, rel, info)

    def _emit(self, archive: tarfile.TarFile, rel: str, info: os.stat_result) -> None:
        parent = rel.rpartition("/")[0]
        if rel and parent not in self._emitted:
            # Only reached with include patterns: add the enclosing directories first.
            self._emit(archive, parent, os.lstat(os.path.join(self.root, parent)))
        if rel in self._emitted:
            return
        path = os.path.join(self.root, rel) if rel else self.root
        mode = info.st_mode
        member = self._member(rel, info)
        member.pax_headers.update(_attrs.pax_records(_attrs.read_xattrs(path, self._stats["not_kept"], rel)))
        if stat.S_ISDIR(mode):
            member.type = tarfile.DIRTYPE
            archive.addfile(member)
            if rel:
                self._stats["directories"] += 1
        elif stat.S_ISREG(mode):
            self._emit_file(archive, rel, path, info, member)
        elif stat.S_ISLNK(mode):
            member.type = tarfile.SYMTYPE
            member.linkname = os.readlink(path)
            archive.addfile(member)
            self._stats["symlinks"] += 1
            if _leaves_tree(rel, member.linkname):
                self._note("outside_links", rel, member.linkname, key="target")
        elif stat.S_ISFIFO(mode):
            member.type = tarfile.FIFOTYPE
            archive.addfile(member)
            self._stats["other"] += 1
        else:
            kind = "socket" if stat.S_ISSOCK(mode) else "device node"
            self._note("skipped", rel, f"{kind}, not archived")
            return
        self._emitted.add(rel)

    def _member(self, rel: str, info: os.stat_result) -> tarfile.TarInfo:
        member = tarfile.TarInfo(rel or ".")
        member.mode = stat.S_IMODE(info.st_mode)
        member.uid = info.st_uid
        member.gid = info.st_gid
        member.uname = member.gname = ""
        member.mtime = info.st_mtime_ns // 10**9
        if info.st_mtime_ns % 10**9:
            member.pax_headers = {"mtime": _pax_time(info.st_mtime_ns)}
        return member

    def _emit_file(self, archive: tarfile.TarFile, rel: str, path: str, info: os.stat_result, member) -> None:
        key = (info.st_dev, info.st_ino)
        if info.st_nlink > 1 and key in self._links:
            member.type = tarfile.LNKTYPE
            member.linkname = self._links[key]
            archive.addfile(member)
            self._stats["hardlinks"] += 1
            return
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            self._note("skipped", rel, "vanished before it was read")
            return
        except OSError as exc:
            raise CaptureError(
                f"cannot read {path} ({exc.strerror})",
                "check its permissions (become: true); the archive was not completed",
            )
        with open(fd, "rb", buffering=0) as handle:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                self._note("skipped", rel, "replaced by something else while archiving")
                return
            member = self._member(rel, before)
            member.type = tarfile.REGTYPE
            member.size = before.st_size
            # xattrs and ACLs of the file read (never through a link), its holes, and what cannot be kept
            xattrs = _attrs.read_xattrs(path, self._stats["not_kept"], rel)
            member.pax_headers.update(_attrs.pax_records(xattrs, _attrs.data_segments(fd, before.st_size)))
            _attrs.flags_not_kept(fd, rel, self._stats["not_kept"])
            try:
                archive.addfile(member, handle)
            except OSError as exc:
                if isinstance(exc, BrokenPipeError):
                    raise
                if "unexpected end of data" in str(exc):
                    raise CaptureError(
                        f"{path} shrank while it was being archived",
                        "stop the service writing it or archive a filesystem snapshot; the archive was not completed",
                    )
                raise
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                self._note("changed", rel, None)
        if info.st_nlink > 1:
            self._links[key] = rel
        self._stats["files"] += 1
        self._stats["bytes"] += member.size

    def _note(self, kind: str, rel: str, reason: str | None, key: str = "reason") -> None:
        entries = self._stats[kind]
        if len(entries) < LIST_LIMIT:
            entries.append(rel if reason is None else {"path": rel or ".", key: reason})


def tar_reader(path: str, include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> TarReader:
    """A readable binary stream of a PAX tar archive of the directory ``path``.

    ``include`` and ``exclude`` are shell globs matched against paths relative
    to ``path`` (a pattern without ``/`` also matches a base name anywhere).
    An excluded directory is skipped whole; with ``include`` only matching
    entries (a matching directory with everything below it) and their parent
    directories are archived. Use it as a context manager so the producer
    thread always stops. Reading to EOF raises the producer's error, if any.
    """
    return TarReader(path, include, exclude)


# --------------------------------------------------------------------------
# extracting a tar stream
# --------------------------------------------------------------------------


def _safe_parts(name: str, what: str) -> list[str]:
    """The path components of an archive name; refuse absolute names and ``..``."""
    if name.startswith("/"):
        raise RestoreError(
            f"the archive holds an absolute path ({what} {name[:200]!r})",
            "refusing to write outside the destination; the archive was not made by nodekeep or was tampered with",
        )
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise RestoreError(
            f"the archive holds a path with '..' ({what} {name[:200]!r})",
            "refusing to write outside the destination; the archive was not made by nodekeep or was tampered with",
        )
    return parts


def _mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime") if member.pax_headers else None
    if text:
        try:
            seconds, _dot, fraction = text.partition(".")
            fraction = (fraction + "000000000")[:9]
            sign = -1 if seconds.startswith("-") else 1
            return int(seconds) * 10**9 + sign * int(fraction or 0)
        except ValueError:
            pass
    return round(member.mtime * 10**9)


class _Extractor:
    """Writes members under ``root``, creating everything itself and never following a symlink."""

    def __init__(self, root: str, keep_ownership: bool, fsync: bool) -> None:
        self.root = root
        self.keep_ownership = keep_ownership
        self.fsync = fsync
        # Directories made by this extraction: the only ones anything is written into.
        self.dirs: dict[str, tarfile.TarInfo | None] = {"": None}
        self.files: set[str] = set()
        # (rel, xattrs, is a symlink): applied at the end, after every file's content and mode
        self.xattrs: list[tuple[str, dict[str, bytes], bool]] = []
        self.stats: dict[str, int] = entry_counts()

    def target(self, parts: list[str]) -> str:
        return os.path.join(self.root, *parts) if parts else self.root

    def add(self, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        parts = _safe_parts(member.name, "entry")
        rel = "/".join(parts)
        if member.ischr() or member.isblk():
            raise RestoreError(
                f"the archive holds a device node {member.name[:200]!r}",
                "device files are never extracted; the archive was not made by nodekeep or was tampered with",
            )
        if member.isdir():
            self._directory(parts, rel, member)
            return
        xattrs = _attrs.from_pax(member.pax_headers)[0]
        if xattrs:
            self.xattrs.append((rel, xattrs, member.issym()))
        if not parts:
            raise RestoreError(f"the archive holds a non-directory named {member.name!r}", "the archive is damaged")
        self._parents(parts)
        target = self.target(parts)
        try:
            if member.issym():
                self._symlink(parts, rel, target, member)
            elif member.islnk():
                self._hardlink(rel, target, member)
            elif member.isfifo():
                os.mkfifo(target, 0o600)
                self._attributes(target, member)
                self.stats["other"] += 1
            elif member.isreg():
                self._file(rel, target, member, archive)
            else:
                raise RestoreError(
                    f"the archive entry {member.name[:200]!r} has an unsupported type", "it was not extracted"
                )
        except FileExistsError:
            raise RestoreError(
                f"the archive holds {member.name[:200]!r} more than once, or over a directory",
                "the archive is damaged or was not made by nodekeep; nothing was placed",
            )

    def _parents(self, parts: list[str]) -> None:
        for depth in range(1, len(parts)):
            rel = "/".join(parts[:depth])
            if rel in self.dirs:
                continue
            path = self.target(parts[:depth])
            if os.path.lexists(path):
                raise RestoreError(
                    f"the archive entry {'/'.join(parts)!r} would be written through {rel!r}, which is not a directory",
                    "refusing to follow a symlink from the archive; the archive was not made by nodekeep",
                )
            os.mkdir(path, 0o700)
            self.dirs[rel] = None

    def _directory(self, parts: list[str], rel: str, member: tarfile.TarInfo) -> None:
        if rel not in self.dirs:
            self._parents(parts)
            try:
                os.mkdir(self.target(parts), 0o700)
            except FileExistsError:
                raise RestoreError(
                    f"the archive holds the directory {member.name[:200]!r} over another entry",
                    "the archive is damaged or was not made by nodekeep",
                )
            self.stats["directories"] += 1
        self.dirs[rel] = member  # attributes are applied at the end, deepest first

    def _symlink(self, parts: list[str], rel: str, target: str, member: tarfile.TarInfo) -> None:
        """A symlink is data, whatever it points to (``/etc/localtime``, ``current -> /srv/app/releases/N``).

        It is created as it was, and nothing is ever written through it: a later entry below it is refused
        (``_parents``), files are created with ``O_EXCL|O_NOFOLLOW`` and attributes are set on the link itself.
        """
        os.symlink(member.linkname, target)
        self._attributes(target, member)
        self.stats["symlinks"] += 1

    def _hardlink(self, rel: str, target: str, member: tarfile.TarInfo) -> None:
        source = "/".join(_safe_parts(member.linkname, "hard link target"))
        if source not in self.files:
            raise RestoreError(
                f"the archive's hard link {member.name[:200]!r} points to {member.linkname[:200]!r}, which is not a file extracted before it",
                "hard links must point to an earlier file of the same archive",
            )
        os.link(os.path.join(self.root, source), target, follow_symlinks=False)
        self.files.add(rel)
        self.stats["hardlinks"] += 1

    def _file(self, rel: str, target: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(target, flags, 0o600)
        holes = _attrs.from_pax(member.pax_headers)[1]
        with open(fd, "wb", buffering=0) as out:
            sink = out if holes is None else _attrs.SparseWriter(out, holes, member.size)
            if self._fill(rel, member, archive, sink):
                if holes is not None:
                    sink.finish()
                self._attributes(fd, member)
                if self.fsync:
                    os.fsync(fd)
        self.files.add(rel)
        self.stats["files"] += 1
        self.stats["bytes"] += member.size

    def _fill(self, rel: str, member: tarfile.TarInfo, archive, out: BinaryIO) -> bool:
        """Write the regular file ``member``'s content to ``out``; False when it is filled (and finished) later."""
        source = archive.extractfile(member)
        if source is not None:
            shutil.copyfileobj(source, out, COPY_CHUNK)
        return True

    def _attributes(self, target, member: tarfile.TarInfo) -> None:
        """Ownership first (chown clears set-id bits), then mode, then mtime; never through a symlink.

        ``target`` is an open descriptor, or a path this extraction created
        itself (so only a symlink member's path is a symlink).
        """
        mtime = _mtime_ns(member)
        if isinstance(target, int):
            self._fd_attributes(target, member.uid, member.gid, member.mode, mtime)
            return
        if self.keep_ownership:
            os.chown(target, member.uid, member.gid, follow_symlinks=False)
        if not member.issym():
            os.chmod(target, member.mode & 0o7777)  # Linux has no lchmod; target is not a symlink
        os.utime(target, ns=(mtime, mtime), follow_symlinks=False)

    def _fd_attributes(self, fd: int, uid: int, gid: int, mode: int, mtime_ns: int) -> None:
        """Ownership (when kept), mode and mtime of an open file, in that order."""
        if self.keep_ownership:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode & 0o7777)
        os.utime(fd, ns=(mtime_ns, mtime_ns))

    def finish(self) -> None:
        for rel, xattrs, is_link in self.xattrs:
            _attrs.apply_xattrs(self.target(rel.split("/")), xattrs, is_link)
        for rel in sorted(self.dirs, key=lambda name: (name.count("/"), name), reverse=True):
            member = self.dirs[rel]
            path = self.target(rel.split("/")) if rel else self.root
            if member is not None:
                self._attributes(path, member)
                _attrs.apply_xattrs(path, _attrs.from_pax(member.pax_headers)[0])
            if self.fsync:
                fsync_dir(path)


def _prepare_destination(dest_dir: str) -> str:
    root = os.path.abspath(dest_dir)
    if os.path.islink(root):
        raise RestoreError(f"the extraction directory {dest_dir} is a symlink", "give a real, new directory")
    if os.path.isdir(root):
        if os.listdir(root):
            raise RestoreError(
                f"the extraction directory {dest_dir} is not empty",
                "extract into a new or empty directory; nothing was written",
            )
        return root
    if os.path.lexists(root):
        raise RestoreError(f"{dest_dir} exists and is not a directory", "give the path of a new directory")
    try:
        os.mkdir(root, 0o700)
    except OSError as exc:
        raise describe_os_error(exc, "creating the extraction directory", root)
    return root


def extract_tar(
    stream: BinaryIO, dest_dir: str, keep_ownership: bool | None = None, fsync: bool = True
) -> dict[str, int]:
    """Unpack the tar ``stream`` into ``dest_dir`` (new or empty) and return counts.

    Modes (including set-id and sticky bits), mtimes (to the nanosecond when
    the archive has them), symlinks, hard links and FIFOs are kept; ownership
    (numeric uid/gid) is kept when ``keep_ownership`` is true, by default when
    running as root. Symlinks are created as they are, whatever they point to
    (``/etc/localtime``), and never followed. Refused, with nothing more
    written: absolute names, ``..``, hard links to anything but an earlier
    file of the archive, any path through a symlink, device nodes.
    On error ``dest_dir`` holds a partial tree: extract into a temporary
    directory and rename it into place only on success. The stream is read
    to its end, so a producer's error surfaces here.
    """
    root = _prepare_destination(dest_dir)
    owner = (os.geteuid() == 0) if keep_ownership is None else keep_ownership
    extractor = _Extractor(root, owner, fsync)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                extractor.add(member, archive)
        extractor.finish()
        while stream.read(COPY_CHUNK):
            pass  # trailing padding; reaching EOF also raises a producer's late error
    except tarfile.ReadError as exc:
        if "empty file" in str(exc):
            raise RestoreError("the stream holds no tar archive (it is empty)", "the artifact or stream is damaged")
        raise RestoreError(f"the tar stream is damaged or truncated ({exc})", "restore from another copy")
    except tarfile.TarError as exc:
        raise RestoreError(f"the tar stream is damaged ({exc})", "restore from another copy")
    except OSError as exc:
        raise describe_os_error(exc, "extracting the archive", getattr(exc, "filename", None) or root)
    return dict(extractor.stats)


class TarWriter:
    """A writable sink that extracts what is written into ``dest_dir`` (see ``tar_writer``)."""

    def __init__(self, dest_dir: str, keep_ownership: bool | None = None, fsync: bool = True) -> None:
        read_fd, write_fd = _pipe()
        self._fd: int | None = write_fd
        self._reader = open(read_fd, "rb", buffering=0)  # noqa: SIM115 - closed by the consumer thread
        self._dest_dir = dest_dir
        self._keep_ownership = keep_ownership
        self._fsync = fsync
        self.error: BaseException | None = None
        self.stats: dict[str, int] = {}
        self._thread = threading.Thread(target=self._consume, name="nodekeep-tar-extract", daemon=True)
        self._thread.start()

    def _consume(self) -> None:
        try:
            self.stats = extract_tar(self._reader, self._dest_dir, self._keep_ownership, self._fsync)
        except BaseException as exc:  # noqa: BLE001 - raised by finish() or returned by abort()
            self.error = exc
        finally:
            self._reader.close()  # the writer now gets EPIPE instead of blocking forever

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self._fd is None:
            raise ValueError("write to a closed tar writer")
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            done += os.write(self._fd, view[done:])  # BrokenPipeError: extraction stopped, see .error
        return len(view)

    def flush(self) -> None:
        pass

    def _close_and_join(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        self._thread.join()

    def finish(self) -> dict[str, int]:
        """End of data: wait for the extraction and raise its error, if any."""
        self._close_and_join()
        if self.error is not None:
            raise self.error
        return self.stats

    def abort(self) -> BaseException | None:
        """Stop after a failure upstream; return the extraction's own error, if it had one."""
        self._close_and_join()
        return self.error

    def __enter__(self) -> TarWriter:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


def tar_writer(dest_dir: str, keep_ownership: bool | None = None, fsync: bool = True) -> TarWriter:
    """A writable binary sink: a tar stream written to it is extracted into ``dest_dir`` by a thread.

    Call ``finish()`` after the last write (it raises the extraction's error);
    after a failure upstream call ``abort()``, which returns the extraction's
    own error if it was the cause (a write then fails with BrokenPipeError).
    """
    return TarWriter(dest_dir, keep_ownership, fsync)


def copy_tree(src: str, dest_dir: str, keep_ownership: bool | None = None) -> dict[str, int]:
    """Copy a directory tree (to another filesystem) keeping modes, ownership, mtimes and links; fsynced."""
    with tar_reader(src) as stream:
        return extract_tar(stream, dest_dir, keep_ownership=keep_ownership, fsync=True)


# --------------------------------------------------------------------------
# sealing and opening files and directories (the age_seal module)
# --------------------------------------------------------------------------


def _source_kind(src: str) -> str:
    try:
        info = os.stat(src)
    except FileNotFoundError:
        raise SealError(f"the source {src} does not exist", "check the path; nothing was written")
    except OSError as exc:
        raise SealError(f"cannot read the source {src} ({exc.strerror})", "run with become: true")
    if stat.S_ISDIR(info.st_mode):
        if not os.access(src, os.R_OK | os.X_OK):
            raise SealError(f"cannot read the directory {src} (permission denied)", "run with become: true")
        return "directory"
    if not stat.S_ISREG(info.st_mode):
        raise SealError(f"{src} is neither a regular file nor a directory", "give a file or a directory")
    try:
        with open(src, "rb"):
            pass
    except OSError as exc:
        raise SealError(f"cannot read the source {src} ({exc.strerror})", "run with become: true")
    return "file"


def _existing_dest(dest: str) -> str | None:
    if not os.path.lexists(dest):
        return None
    if os.path.islink(dest):
        return "symlink"
    return "directory" if os.path.isdir(dest) else "file"


def _skipped(dest: str, what: str) -> dict[str, Any]:
    return {
        "changed": False,
        "skipped": True,
        "dest": dest,
        "msg": f"{dest} exists and force is false: left as it is ({what})",
    }


def _recipients(recipients: Iterable[str], recipients_files: Iterable[str]) -> list:
    lines = recipient_lines(recipients, recipients_files)
    return [parse_recipient(line, where) for line, where in lines]


def plan_seal(
    src: str,
    dest: str,
    recipients: Iterable[str] = (),
    recipients_files: Iterable[str] = (),
    compress: bool | None = None,
    force: bool = False,
    passphrase: str | None = None,
    armor: bool = False,
) -> dict[str, Any]:
    """Everything ``seal_path`` checks before writing, and what it would do (check mode)."""
    if passphrase is not None:
        _armor.check_passphrase(passphrase)
        parsed = []
    else:
        parsed = _recipients(recipients, recipients_files)
    kind = _source_kind(src)
    check_parent_writable(dest)
    existing = _existing_dest(dest)
    if existing == "directory":
        raise SealError(f"the destination {dest} is a directory", "give the path of the sealed file to write")
    result = {
        "changed": True,
        "skipped": False,
        "dest": dest,
        "content": kind,
        "compressed": (kind == "directory") if compress is None else bool(compress),
        "recipients": len(parsed),
        "replaced": existing is not None,
        "armored": bool(armor),
        "passphrase": passphrase is not None,
    }
    if existing and not force:
        result.update(_skipped(dest, "a sealed file cannot be compared with its source: age output is randomized"))
    return result


def seal_path(
    src: str,
    dest: str,
    recipients: Iterable[str] = (),
    recipients_files: Iterable[str] = (),
    compress: bool | None = None,
    force: bool = False,
    mode: int = 0o600,
    level: int = DEFAULT_LEVEL,
    armor: bool = False,
    passphrase: str | None = None,
    check_only: bool = False,
) -> dict[str, Any]:
    """Seal the file or directory ``src`` with age into the file ``dest``, atomically.

    A directory becomes a PAX tar stream, zstd-compressed by default. A file is
    sealed as it is by default, so ``age -d`` gives it back byte for byte. An
    existing ``dest`` is left alone (``changed: false``) unless ``force``,
    which replaces it atomically. With ``check_only`` (check mode) only
    ``plan_seal`` runs.
    """
    plan = plan_seal(src, dest, recipients, recipients_files, compress, force, passphrase, armor)
    if check_only or plan.get("skipped"):
        return plan
    parsed = [] if passphrase is not None else _recipients(recipients, recipients_files)
    temp = temp_path(dest)
    entries: dict[str, Any] | None = None
    try:
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise describe_os_error(exc, "creating the sealed file", dest)
        with open(fd, "wb", buffering=PIPE_SIZE) as sink:
            # armor: age's ASCII armor (as `age -a`); the file's checksum is of the armored bytes.
            if passphrase is not None:
                result, entries = _seal_passphrase(src, plan, sink, passphrase, level, armor)
            elif plan["content"] == "directory":
                with tar_reader(src) as stream:
                    result = seal(
                        stream, sink, parsed, compress=plan["compressed"], level=level, sink_name=dest, armored=armor
                    )
                    entries = stream.stats()
            else:
                with open(src, "rb") as stream:
                    result = seal(
                        stream, sink, parsed, compress=plan["compressed"], level=level, sink_name=dest, armored=armor
                    )
            try:
                sink.flush()
                os.fchmod(sink.fileno(), mode)
                os.fsync(sink.fileno())
            except OSError as exc:
                raise describe_os_error(exc, "writing the sealed file", dest)
        place_file(temp, dest, replace=force)
    finally:
        _remove_quietly(temp)
    out = dict(plan)
    out.update(
        {
            "changed": True,
            "skipped": False,
            "size": result.sealed.size,
            "sealed_size": result.sealed.size,
            "sha256": result.sealed.sha256,
            "content_size": result.content.size,
            "content_sha256": result.content.sha256,
            "compressed": result.compressed,
            "mode": format_mode(mode),
        }
    )
    if entries is not None:
        out["entries"] = entries
    return out


def _read_limited(stream, what: str) -> bytes:
    data = stream.read(_armor.MAX_PASSPHRASE_PAYLOAD + 1)
    if len(data) > _armor.MAX_PASSPHRASE_PAYLOAD:
        raise SealError(
            "%s is larger than %d KiB, the limit of passphrase mode" % (what, _armor.MAX_PASSPHRASE_PAYLOAD >> 10),
            "passphrase mode (pyrage) holds everything in memory: seal larger data to age recipients; "
            "nothing was written",
        )
    return data


def _seal_passphrase(src: str, plan: dict[str, Any], sink, passphrase: str, level: int, armor: bool):
    """Passphrase mode: pyrage can only encrypt whole byte strings, so the content is read (size-limited) first."""
    entries = None
    if plan["content"] == "directory":
        with tar_reader(src) as stream:
            data = _read_limited(stream, "the tar stream of %s" % src)
            if len(data) <= _armor.MAX_PASSPHRASE_PAYLOAD:
                stream.read(1)  # reach EOF so that a failed archive raises here
            entries = stream.stats()
    else:
        with open(src, "rb") as stream:
            data = _read_limited(stream, src)
    sealed = _armor.passphrase_seal(data, passphrase, compress=plan["compressed"], level=level, armor=armor)
    sink.write(sealed)
    digest = Digest(len(data), hashlib.sha256(data).hexdigest())
    return SealResult(digest, Digest(len(sealed), hashlib.sha256(sealed).hexdigest()), plan["compressed"]), entries


def _looks_like_tree(head: bytes) -> bool:
    """A tar archive whose first entry is its root directory ``.`` (what ``tar_reader`` and ``tar -C DIR -c .`` make)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(head), mode="r|") as archive:
            first = archive.next()
    except (tarfile.TarError, EOFError, OSError, ValueError):
        return False
    return first is not None and first.isdir() and first.name.strip("/") in ("", ".")


class _OpenedSink:
    """Receives the plaintext; decides from its first bytes whether it is a file or a directory tree."""

    def __init__(self, dest: str, content: str, mode: int) -> None:
        self.dest = dest
        self.content = content
        self.mode = mode
        self.kind: str | None = None
        self.temp: str | None = None
        self._head = bytearray()
        self._file: BinaryIO | None = None
        self._tree: TarWriter | None = None
        self.entries: dict[str, int] | None = None

    def write(self, data) -> int:
        if self.kind is None:
            self._head += data
            if len(self._head) >= SNIFF_SIZE:
                self._decide()
            return len(data)
        return self._forward(data)

    def _forward(self, data) -> int:
        if self._tree is not None:
            return self._tree.write(data)
        return self._file.write(data)  # type: ignore[union-attr] - set by _decide()

    def _decide(self) -> None:
        head = bytes(self._head)
        kind = self.content if self.content != "auto" else ("directory" if _looks_like_tree(head) else "file")
        self.temp = temp_path(self.dest)
        if kind == "directory":
            os.mkdir(self.temp, 0o700)
            self._tree = tar_writer(self.temp)
        else:
            fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            self._file = open(fd, "wb", buffering=PIPE_SIZE)  # noqa: SIM115 - closed by finish() or abort()
        self.kind = kind
        self._head = bytearray()
        if head:
            self._forward(head)

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        if self.kind is None:
            self._decide()
        if self._tree is not None:
            self.entries = self._tree.finish()
        elif self._file is not None:
            self._file.flush()
            os.fchmod(self._file.fileno(), self.mode)
            os.fsync(self._file.fileno())
            self._file.close()

    def abort(self) -> BaseException | None:
        if self._tree is not None:
            return self._tree.abort()
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        return None

    def cleanup(self) -> None:
        self.abort()
        _remove_quietly(self.temp)


def _check_sealed_source(src: str, passphrase: bool = False) -> None:
    try:
        with open(src, "rb") as handle:
            head = handle.read(4096)
    except FileNotFoundError:
        raise UnsealError(f"the sealed file {src} does not exist", "check the path; nothing was written")
    except IsADirectoryError:
        raise UnsealError(f"{src} is a directory, not a sealed file", "give the path of an age file")
    except OSError as exc:
        raise UnsealError(f"cannot read the sealed file {src} ({exc.strerror})", "run with become: true")
    if not is_age_file(head):
        raise UnsealError(
            f"{src} is not an age file (it does not start with the age header)",
            "give a file sealed with age (by this module, epoch_backup or the age CLI); nothing was written",
        )
    if _armor.is_armored(head):
        with open(src, "rb") as handle:
            head = _armor.ArmorReader(handle).read(2048)
    if "scrypt" in _armor.stanza_types(head) and not passphrase:
        raise UnsealError(
            f"{src} is encrypted with a passphrase, not to age recipients",
            "give passphrase instead of identities; nothing was written",
        )


def plan_open(
    src: str,
    dest: str,
    identities: Iterable[str] = (),
    identity_files: Iterable[str] = (),
    content: str = "auto",
    force: bool = False,
    passphrase: str | None = None,
) -> dict[str, Any]:
    """Everything ``open_path`` checks before decrypting, and what it would do (check mode)."""
    if content not in CONTENT_KINDS:
        raise UnsealError(f"content must be one of {', '.join(CONTENT_KINDS)}, not {content!r}")
    if passphrase is not None:
        _armor.check_passphrase(passphrase)
    else:
        load_identities(identities, identity_files)
    _check_sealed_source(src, passphrase is not None)
    check_parent_writable(dest)
    existing = _existing_dest(dest)
    result = {"changed": True, "skipped": False, "dest": dest, "replaced": existing is not None}
    if existing and not force:
        result.update(_skipped(dest, "opening again would decrypt the whole file to compare it"))
    return result


def _open_passphrase(raw, sink, passphrase: str) -> SealResult:
    sealed = raw.read(_armor.MAX_PASSPHRASE_SEALED + 1)
    content, compressed = _armor.passphrase_open(sealed, passphrase)
    sink.write(content)
    digest = Digest(len(content), hashlib.sha256(content).hexdigest())
    return SealResult(digest, Digest(len(sealed), hashlib.sha256(sealed).hexdigest()), compressed)


def _opened_key_facts(path: str) -> dict[str, Any] | None:
    """Public facts of an opened key file (age identity or private key): its public key, never the key."""
    try:
        with open(path, "rb") as handle:
            facts = key_facts(handle.read(64 << 10))
    except OSError:
        return None
    return facts if facts.get("kind") != "data" else None


def _put_in_place(temp: str, dest: str, kind: str, force: bool) -> str | None:
    """Rename the finished ``temp`` to ``dest``; returns where a replaced directory was kept."""
    existing = _existing_dest(dest)
    if existing is None:
        if kind == "file":
            place_file(temp, dest, replace=False)
            return None
        if os.path.lexists(dest):
            raise UnsealError(f"{dest} appeared while it was being written", "nothing was overwritten; run again")
        os.rename(temp, dest)
        fsync_dir(os.path.dirname(os.path.abspath(dest)))
        return None
    if not force:
        raise UnsealError(f"{dest} appeared while it was being written", "nothing was overwritten; run again")
    if kind == "file" and existing in ("file", "symlink"):
        place_file(temp, dest, replace=True)
        return None
    # A directory cannot be swapped atomically: keep the old one beside it, never delete it.
    kept = f"{dest}.nodekeep-replaced-{utc_stamp()}"
    if os.path.lexists(kept):
        raise UnsealError(f"{kept} already exists", "wait a second and run again; nothing was replaced")
    os.rename(dest, kept)
    try:
        os.rename(temp, dest)
    except OSError as exc:
        os.rename(kept, dest)
        raise describe_os_error(exc, "placing the opened data", dest)
    fsync_dir(os.path.dirname(os.path.abspath(dest)))
    return kept


def open_path(
    src: str,
    dest: str,
    identities: Iterable[str] = (),
    identity_files: Iterable[str] = (),
    content: str = "auto",
    force: bool = False,
    mode: int = 0o600,
    passphrase: str | None = None,
    check_only: bool = False,
) -> dict[str, Any]:
    """Open (decrypt) the age file ``src`` into ``dest``: a file, or a directory for a sealed tree.

    zstd payloads are detected and decompressed. With ``content='auto'`` a
    payload that is a tar archive starting with its root directory ``.`` is
    extracted as a directory, anything else is written as a file. The result
    is built beside ``dest`` and renamed into place only when complete. With
    ``check_only`` (check mode) only ``plan_open`` runs.
    """
    plan = plan_open(src, dest, identities, identity_files, content, force, passphrase)
    if check_only or plan.get("skipped"):
        return plan
    parsed = [] if passphrase is not None else load_identities(identities, identity_files)
    sink = _OpenedSink(dest, content, mode)
    kept: str | None = None
    try:
        with open(src, "rb") as raw:
            try:
                if passphrase is not None:
                    result = _open_passphrase(raw, sink, passphrase)
                else:
                    # pyrage reads armored age files by itself; the sealed checksum is of the file as it is.
                    result = unseal(raw, sink, parsed, sink_name=dest)
                sink.finish()
            except NodekeepError:
                cause = sink.abort()
                if isinstance(cause, NodekeepError):
                    raise cause from None
                raise
        kept = _put_in_place(str(sink.temp), dest, str(sink.kind), force)
    except OSError as exc:
        raise describe_os_error(exc, "writing the opened data", dest)
    finally:
        sink.cleanup()
    out = dict(plan)
    out.update(
        {
            "changed": True,
            "skipped": False,
            "content": sink.kind,
            "sealed_size": result.sealed.size,
            "sha256": result.sealed.sha256,
            "content_size": result.content.size,
            "content_sha256": result.content.sha256,
            "compressed": result.compressed,
        }
    )
    if sink.kind == "file":
        out["size"] = result.content.size
        out["mode"] = format_mode(mode)
        if result.content.size <= 64 << 10:
            facts = _opened_key_facts(dest)
            if facts:
                out["key"] = facts
    if sink.entries is not None:
        out["entries"] = sink.entries
    if kept:
        out["replaced_path"] = kept
    return out


# --------------------------------------------------------------------------
# secrets sealed into a signed epoch of their own (age_seal state=epoch, playbooks/keys_seal.yml)
# --------------------------------------------------------------------------


def restore_parent(target: str, force: bool) -> str:
    """Refuse an existing restore ``target`` unless ``force``; create its directory (0700) and return it."""
    if os.path.lexists(target) and not force:
        raise RestoreError(
            "the restore target %s already exists" % target,
            "restore into an empty staging path (nodekeep_restore_to) or set force: true "
            "to keep the existing tree as %s.nodekeep-replaced-<time>" % target,
        )
    parent = os.path.dirname(target)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, "creating the restore directory", parent)
    return parent


def place_restored_tree(temp: str, target: str) -> None:
    """Rename the restored tree ``temp`` to ``target``; an existing one is kept as ``.nodekeep-replaced-<time>``."""
    try:
        if os.path.lexists(target):
            os.rename(target, "%s.nodekeep-replaced-%d" % (target, int(time.time())))
        os.rename(temp, target)
        fsync_dir(os.path.dirname(target))
    except OSError as exc:
        shutil.rmtree(temp, ignore_errors=True)
        raise describe_os_error(exc, "placing the restored tree", target)


class TreeAssetType(_assets.AssetType):
    """Base of the directory-tree asset types: one PAX tar stream in, a directory out.

    ``capture`` streams the tree (``include``/``exclude`` globs as in
    ``tar_reader``) and records the entry counts; ``restore_into`` extracts
    into a hidden directory beside the target (modes, numeric ownership as
    root, nanosecond mtimes, symlinks and hard links kept) and renames it into
    place only when the stream's checksums and the asset's deep check passed.
    Subclasses (files, config, rocksdb...) set ``name`` and register themselves.
    """

    name = "tree"
    extension = ".tar"
    content_format = "tar"
    options: ClassVar[dict[str, Any]] = {"include": [], "exclude": []}

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        with self.capture_tree(asset["path"], asset) as captured:
            yield captured

    @contextlib.contextmanager
    def capture_tree(self, root: str, asset: dict[str, Any], facts: dict[str, Any] | None = None):
        """A tar stream of ``root`` (which may be a snapshot or a copy of the asset's path)."""
        with tar_reader(root, asset.get("include") or None, asset.get("exclude") or None) as stream:
            yield _assets.Captured(stream, facts, finish=lambda: tree_facts(stream.stats()))

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        parent = restore_parent(target, force)
        temp = os.path.join(parent, ".%s.nodekeep-%s" % (os.path.basename(target), uuid.uuid4().hex[:8]))
        writer = tar_writer(temp)
        try:
            yield _assets.Staged(temp, writer, complete=lambda: {"entries": writer.finish()})
        except BaseException as exc:
            cause = writer.abort()
            shutil.rmtree(temp, ignore_errors=True)
            if cause is not None and isinstance(exc, (BrokenPipeError, NodekeepError)) and cause is not exc:
                raise cause from exc
            raise
        place_restored_tree(temp, target)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        """The restored tree holds as many entries of each kind as were archived."""
        found = tree_counts(path)
        expected = artifact.source.get("entries") or {}
        for kind, count in found.items():
            wanted = expected.get(kind)
            if wanted is not None and int(wanted) != count:
                raise RestoreError(
                    "the restored tree %s has %d %s, the manifest says %s" % (path, count, kind, wanted),
                    "the artifact does not match its manifest; restore another epoch",
                )
        return {"entries": found}


def tree_counts(path: str) -> dict[str, int]:
    """Entries of a directory tree counted the way ``tar_reader`` counts them (not the root itself)."""
    counts = {"files": 0, "directories": 0, "symlinks": 0}
    seen: set[tuple[int, int]] = set()
    for parent, dirs, files in os.walk(path):
        for name in dirs + files:
            info = os.lstat(os.path.join(parent, name))
            if stat.S_ISLNK(info.st_mode):
                counts["symlinks"] += 1
            elif stat.S_ISDIR(info.st_mode):
                counts["directories"] += 1
            elif stat.S_ISREG(info.st_mode):
                if info.st_nlink > 1:
                    if (info.st_dev, info.st_ino) in seen:
                        continue  # a hard link: tar_reader counts it under "hardlinks"
                    seen.add((info.st_dev, info.st_ino))
                counts["files"] += 1
    return counts


class SecretAssetType(_assets.FileAssetType):
    """A ``secret`` asset (a key file, a mnemonic, an ``.env``, or a directory of them).

    A file is sealed as it is, a directory as a PAX tar stream; both zstd-compressed
    like every artifact. Small key files get their public facts (age recipient,
    SSH public key and fingerprint: never the key) recorded in the manifest, so
    a recovery can be compared with what was backed up.
    """

    name = "secret"
    content_format = "secret"

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        normalized["content"] = "tar" if _source_kind(normalized["path"]) == "directory" else "file"
        return normalized

    def artifact_file(self, asset: dict[str, Any]) -> str:
        return "%s%s.zst.age" % (asset["name"], ".tar" if asset.get("content") == "tar" else "")

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        path = asset["path"]
        if asset.get("content") == "tar":
            with tar_reader(path) as stream:
                yield _assets.Captured(stream, {"content": "tar"}, finish=lambda: tree_facts(stream.stats()))
            return
        with open(path, "rb") as stream:
            info = os.fstat(stream.fileno())
            facts: dict[str, Any] = {"content": "file", "mode": format_mode(stat.S_IMODE(info.st_mode))}
            facts.update(uid=info.st_uid, gid=info.st_gid)
            if info.st_size <= 64 << 10:
                key = key_facts(stream.read())
                stream.seek(0)
                facts.update({k: v for k, v in key.items() if k in ("kind", "public_key", "fingerprint", "key_type")})
            yield _assets.Captured(stream, facts)

    @staticmethod
    def _is_tree(artifact) -> bool:
        return artifact is not None and artifact.source.get("content") == "tar"

    def restore_into(self, target: str, force: bool = False, context=None):
        """A sealed directory is restored as a directory (0700 and its own modes), a file as a 0600 file."""
        if self._is_tree(getattr(context, "artifact", None)):
            return TreeAssetType().restore_into(target, force, context)
        return super().restore_into(target, force, context)

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        if self._is_tree(artifact):
            return TreeAssetType().deep_check(path, artifact, check)
        if not artifact.source.get("public_key"):
            return {}
        facts = _opened_key_facts(path) or {}
        if facts.get("public_key") != artifact.source["public_key"]:
            raise RestoreError(
                "the restored key %s does not derive the public key recorded in the manifest" % artifact.name,
                "the artifact does not match its manifest; use another epoch",
            )
        return {"public_key": facts["public_key"]}


def _counts(stats: dict[str, Any]) -> dict[str, int]:
    return {key: value for key, value in stats.items() if isinstance(value, int)}


def tree_facts(stats: dict[str, Any]) -> dict[str, Any]:
    """A captured tree's facts: entry counts, and the lists (skipped, changed, outside_links, not_kept) that hold any."""
    facts: dict[str, Any] = {"entries": _counts(stats)}
    facts.update({key: value for key, value in stats.items() if isinstance(value, list) and value})
    return facts


def secret_asset_type() -> _assets.AssetType:
    """The ``secret`` asset type, registered in the engine's registry if it does not have one yet."""
    if "secret" not in _assets.ASSET_TYPES:
        _assets.register(SecretAssetType())
    return _assets.ASSET_TYPES["secret"]


def seal_to_epoch(
    repository: str,
    node: str,
    secrets: list[dict[str, Any]],
    recipients: Iterable[str] = (),
    recipients_files: Iterable[str] = (),
    signing_key: str = "/etc/nodekeep/signing_key",
    labels: dict[str, Any] | None = None,
    level: int = DEFAULT_LEVEL,
    check_only: bool = False,
) -> dict[str, Any]:
    """Seal every secret (``{name, path}``) to the recipients into one new signed epoch of ``node``.

    The engine's backup flow does the work (``epoch.backup_epoch``): one
    streaming seal per secret, written once, then the signed manifest last.
    """
    from ansible_collections.nodekeep.backup.plugins.module_utils.epoch import backup_epoch
    from ansible_collections.nodekeep.backup.plugins.module_utils.repository import open_repository
    from ansible_collections.nodekeep.backup.plugins.module_utils.signing import load_private_key

    secret_asset_type()
    lines = recipient_lines(recipients, recipients_files)
    parsed = [parse_recipient(line, where) for line, where in lines]
    key = load_private_key(signing_key)
    if not secrets:
        raise SealError("no secret was given", "list the secret files or directories (name and path) to seal")
    assets = _assets.normalize_assets([dict(item, type="secret") for item in secrets])
    if check_only:
        return {"changed": True, "node": node, "assets": [asset["name"] for asset in assets], "recipients": len(parsed)}
    store = open_repository(repository)
    manifest = backup_epoch(
        store, node, assets, parsed, [line for line, _where in lines], key, labels=labels, level=level
    )
    return {
        "changed": True,
        "node": node,
        "epoch": manifest.epoch,
        "location": store.describe(manifest.node, manifest.epoch),
        "recipients": len(parsed),
        "artifacts": [artifact.to_dict() for artifact in manifest.artifacts],
        "manifest": manifest.summary(),
    }
