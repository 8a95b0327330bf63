# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Directory trees as tar streams (the producing half; ``extract`` unpacks them).

* ``tar_reader(path)`` walks a directory tree and returns a readable binary
  stream of a POSIX (PAX) tar archive of it, produced by a thread through an
  OS pipe: memory stays bounded, and an error in the producer (an unreadable
  file, a file that shrank while it was read) is raised by the reader instead
  of ending the stream early, so a truncated archive can never pass for a
  complete one.
* ``copy_tree(src, dest_dir)`` copies a tree through a tar stream into
  ``extract.extract_tar``, which unpacks it without ever following a link.
* The constants ``ops.seal_path`` shares (``SNIFF_SIZE``, ``CONTENT_KINDS``)
  and ``remove_quietly`` for its temporaries.

Archives are numeric-only (no user or group names), so ownership survives a
restore on a host whose user database differs. Sockets and device nodes are
not archived (they are listed in the stats as skipped); extended attributes,
ACLs and sparseness are not kept.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import contextlib
import errno
import fnmatch
import io
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Sequence
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.extract import (
    COPY_CHUNK,
    entry_counts,
    extract_tar,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import PIPE_SIZE, pipe

#: how much plaintext ``open_path`` looks at to tell a sealed directory from a sealed file
SNIFF_SIZE = 64 << 10


#: at most this many paths are listed in the stats' ``skipped`` and ``changed``
LIST_LIMIT = 100


CONTENT_KINDS = ("auto", "file", "directory")


def remove_quietly(path: str | None) -> None:
    """Remove a temporary file or directory this module made itself."""
    if not path or not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            os.unlink(path)


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
        read_fd, write_fd = pipe()
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


def copy_tree(src: str, dest_dir: str, keep_ownership: bool | None = None) -> dict[str, int]:
    """Copy a directory tree (to another filesystem) keeping modes, ownership, mtimes and links; fsynced."""
    with tar_reader(src) as stream:
        return extract_tar(stream, dest_dir, keep_ownership=keep_ownership, fsync=True)
