# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unpacking tar streams into a new directory, never through a link (the other half of ``archive``).

* ``extract_tar(stream, dest_dir)`` unpacks a tar stream into a new directory
  keeping modes, numeric ownership (as root), nanosecond mtimes, symlinks and
  hard links (symlinks as they are, absolute ones too: they are data), and
  refuses absolute names, ``..``, writing through a symlink, and device files.
  ``tar_writer(dest_dir)`` is the same as a writable sink (a consumer thread).
* ``Extractor`` is the descriptor-based writer under both: every create, chmod,
  chown, utime and setxattr is relative to a descriptor of a directory the
  extraction made; the files asset's object restore extends it.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import collections
import contextlib
import os
import shutil
import stat
import tarfile
import threading
from typing import BinaryIO

from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core import safefs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    RestoreError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import pipe
from ansible_collections.nodekeep.backup.plugins.module_utils.core.safefs import (
    O_CLOEXEC,
    O_DIRECTORY,
    O_NOFOLLOW,
    O_NONBLOCK,
)

#: the copy buffer of a tar member's content (written and read)
COPY_CHUNK = 1 << 20


#: what a walk or an extraction of a tree counts (a walk also counts what it ``excluded``)
ENTRY_COUNTS = ("files", "directories", "symlinks", "hardlinks", "other", "bytes")


def entry_counts(*extra: str) -> dict[str, int]:
    """Zero counters of ``ENTRY_COUNTS`` and then ``extra``, in that order."""
    return dict.fromkeys(ENTRY_COUNTS + extra, 0)


def safe_parts(name: str, what: str) -> list[str]:
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


def mtime_ns(member: tarfile.TarInfo) -> int:
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


class Extractor:
    """Writes members under the directory ``root_fd``, creating everything itself and never following a symlink.

    Every create, open, chmod, chown, utime and setxattr is relative to a descriptor of a directory this
    extraction made (``mkdir`` at its parent's descriptor, then ``openat(O_NOFOLLOW | O_DIRECTORY)``): a
    component is never looked up by a path, so a link planted or swapped into the tree at any moment is
    never gone through. Descriptors of recent directories are kept open (at most ``DIR_FDS``); one that
    was closed is opened again from its parent and must be the same inode (``st_dev``, ``st_ino``), and
    at the end every directory made must still be where it was made: anything else is refused.
    ``root`` is only for messages.
    """

    #: at most this many directory descriptors are kept open at once
    DIR_FDS = 64

    def __init__(self, root_fd: int, root: str, keep_ownership: bool, fsync: bool) -> None:
        self.root = root
        self.root_fd = root_fd
        self.keep_ownership = keep_ownership
        self.fsync = fsync
        # Directories made by this extraction: the only ones anything is written into.
        self.dirs: dict[str, tarfile.TarInfo | None] = {"": None}
        info = os.fstat(root_fd)
        self.identity: dict[str, tuple[int, int]] = {"": (info.st_dev, info.st_ino)}
        self.open_dirs: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.files: set[str] = set()
        # (rel, xattrs, is a symlink): applied at the end, after every file's content and mode
        self.xattrs: list[tuple[str, dict[str, bytes], bool]] = []
        self.stats: dict[str, int] = entry_counts()

    def close(self) -> None:
        while self.open_dirs:
            os.close(self.open_dirs.popitem()[1])

    def describe(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def dir_fd(self, rel: str) -> int:
        """The descriptor of the directory ``rel`` this extraction made (opened again, and checked, if closed)."""
        if not rel:
            return self.root_fd
        if rel in self.open_dirs:
            self.open_dirs.move_to_end(rel)
            return self.open_dirs[rel]
        parent, _slash, name = rel.rpartition("/")
        parent_fd = self.dir_fd(parent)
        try:
            fd = os.open(name, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=parent_fd)
        except OSError as exc:
            raise self._replaced(rel, exc.strerror)
        info = os.fstat(fd)
        if (info.st_dev, info.st_ino) != self.identity.get(rel):
            os.close(fd)
            raise self._replaced(rel, "another directory is there now")
        self._keep(rel, fd)
        return fd

    def _keep(self, rel: str, fd: int) -> None:
        self.open_dirs[rel] = fd
        while len(self.open_dirs) > self.DIR_FDS:
            os.close(self.open_dirs.popitem(last=False)[1])

    def _replaced(self, rel: str, why: str) -> RestoreError:
        return RestoreError(
            f"the directory {self.describe(rel)!r} made by this extraction was replaced or moved while it ran ({why})",
            "someone else writes into the staging directory; restore into a private directory "
            "(nodekeep never goes through a link it did not create); nothing was placed",
        )

    def _where(self, rel: str) -> tuple[int, str]:
        """The descriptor of ``rel``'s parent directory and ``rel``'s own name in it."""
        parent, _slash, name = rel.rpartition("/")
        return self.dir_fd(parent), name

    def _mkdir(self, rel: str) -> None:
        parent_fd, name = self._where(rel)
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        try:
            fd = os.open(name, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=parent_fd)
        except OSError as exc:
            raise self._replaced(rel, exc.strerror)
        info = os.fstat(fd)
        self.identity[rel] = (info.st_dev, info.st_ino)
        self._keep(rel, fd)

    def open_entry(self, rel: str, flags: int, mode: int = 0o600) -> int:
        """``openat`` of the entry ``rel`` in its parent's descriptor, never following a final symlink."""
        parent_fd, name = self._where(rel)
        return os.open(name, flags | O_NOFOLLOW | O_CLOEXEC, mode, dir_fd=parent_fd)

    def add(self, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        parts = safe_parts(member.name, "entry")
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
        try:
            if member.issym():
                self._symlink(rel, member)
            elif member.islnk():
                self._hardlink(rel, member)
            elif member.isfifo():
                self._fifo(rel, member)
            elif member.isreg():
                self._file(rel, member, archive)
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
            parent_fd, name = self._where(rel)
            with contextlib.suppress(FileNotFoundError):
                os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                raise RestoreError(
                    f"the archive entry {'/'.join(parts)!r} would be written through {rel!r}, which is not a directory",
                    "refusing to follow a symlink from the archive; the archive was not made by nodekeep",
                )
            self._mkdir(rel)
            self.dirs[rel] = None

    def _directory(self, parts: list[str], rel: str, member: tarfile.TarInfo) -> None:
        if rel not in self.dirs:
            self._parents(parts)
            try:
                self._mkdir(rel)
            except FileExistsError:
                raise RestoreError(
                    f"the archive holds the directory {member.name[:200]!r} over another entry",
                    "the archive is damaged or was not made by nodekeep",
                )
            self.stats["directories"] += 1
        self.dirs[rel] = member  # attributes are applied at the end, deepest first

    def _symlink(self, rel: str, member: tarfile.TarInfo) -> None:
        """A symlink is data, whatever it points to (``/etc/localtime``, ``current -> /srv/app/releases/N``).

        It is created as it was (``symlinkat``), and nothing is ever written through it: a later entry below
        it is refused (``_parents``), files are created with ``O_EXCL|O_NOFOLLOW`` and its owner and mtime are
        set on the link itself.
        """
        parent_fd, name = self._where(rel)
        os.symlink(member.linkname, name, dir_fd=parent_fd)
        mtime = mtime_ns(member)
        if self.keep_ownership:
            os.chown(name, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False)
        os.utime(name, ns=(mtime, mtime), dir_fd=parent_fd, follow_symlinks=False)
        self.stats["symlinks"] += 1

    def _hardlink(self, rel: str, member: tarfile.TarInfo) -> None:
        source = "/".join(safe_parts(member.linkname, "hard link target"))
        if source not in self.files:
            raise RestoreError(
                f"the archive's hard link {member.name[:200]!r} points to {member.linkname[:200]!r}, which is not a file extracted before it",
                "hard links must point to an earlier file of the same archive",
            )
        source_fd, source_name = self._where(source)
        parent_fd, name = self._where(rel)
        os.link(source_name, name, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
        self.files.add(rel)
        self.stats["hardlinks"] += 1

    def _fifo(self, rel: str, member: tarfile.TarInfo) -> None:
        parent_fd, name = self._where(rel)
        os.mkfifo(name, 0o600, dir_fd=parent_fd)
        fd = self.open_entry(rel, os.O_RDONLY | O_NONBLOCK)  # a FIFO opens at once for reading without a writer
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise RestoreError(
                    f"{self.describe(rel)} is no longer the FIFO just made", "restore into a private directory"
                )
            self._attributes(fd, member)
        finally:
            os.close(fd)
        self.stats["other"] += 1

    def _file(self, rel: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
        fd = self.open_entry(rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
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

    def _attributes(self, fd: int, member: tarfile.TarInfo) -> None:
        """Ownership first (chown clears set-id bits), then mode, then mtime, on the open entry itself."""
        self._fd_attributes(fd, member.uid, member.gid, member.mode, mtime_ns(member))

    def _fd_attributes(self, fd: int, uid: int, gid: int, mode: int, mtime_ns: int) -> None:
        """Ownership (when kept), mode and mtime of an open file, in that order."""
        if self.keep_ownership:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode & 0o7777)
        os.utime(fd, ns=(mtime_ns, mtime_ns))

    def _check_in_place(self) -> None:
        """Every directory made is still where it was made (a swap is refused, not written through)."""
        for rel in sorted(self.identity, key=lambda name: (name.count("/"), name)):
            if not rel:
                continue
            parent_fd, name = self._where(rel)
            try:
                info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            except OSError as exc:
                raise self._replaced(rel, exc.strerror)
            if (info.st_dev, info.st_ino) != self.identity[rel]:
                raise self._replaced(rel, "a %s is there now" % safefs.kind_of(info.st_mode))

    def finish(self) -> None:
        self._check_in_place()
        for rel, xattrs, is_link in self.xattrs:
            # the parent by its descriptor (/proc/self/fd/N), the entry itself never followed
            parent_fd, name = self._where(rel)
            _attrs.apply_xattrs("%s/%d/%s" % (safefs.PROC_FD, parent_fd, name), xattrs, is_link, self.describe(rel))
        for rel in sorted(self.dirs, key=lambda name: (name.count("/"), name), reverse=True):
            member = self.dirs[rel]
            fd = self.dir_fd(rel)
            if member is not None:
                self._attributes(fd, member)
                _attrs.apply_xattrs(fd, _attrs.from_pax(member.pax_headers)[0], shown=self.describe(rel))
            if self.fsync:
                os.fsync(fd)


def open_destination(dest_dir: str) -> tuple[str, int]:
    """The new (or empty) extraction directory ``dest_dir``, made 0700 when missing, and its descriptor.

    Its parent is the caller's (a path the restore pinned, or the operator's); ``dest_dir`` itself is never a link.
    """
    root = os.path.abspath(dest_dir)
    parent, name = os.path.split(root)
    try:
        parent_fd = os.open(parent, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    except OSError as exc:
        raise describe_os_error(exc, "opening the directory of the extraction", parent)
    try:
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise describe_os_error(exc, "creating the extraction directory", root)
        try:
            fd = os.open(name, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=parent_fd)
        except OSError:
            kind = safefs.kind_of(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
            if kind == "symlink":
                raise RestoreError(f"the extraction directory {dest_dir} is a symlink", "give a real, new directory")
            raise RestoreError(f"{dest_dir} exists and is not a directory", "give the path of a new directory")
    finally:
        os.close(parent_fd)
    if os.listdir(fd):
        os.close(fd)
        raise RestoreError(
            f"the extraction directory {dest_dir} is not empty",
            "extract into a new or empty directory; nothing was written",
        )
    return root, fd


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
    root, root_fd = open_destination(dest_dir)
    owner = (os.geteuid() == 0) if keep_ownership is None else keep_ownership
    extractor = Extractor(root_fd, root, owner, fsync)
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
    finally:
        extractor.close()
        os.close(root_fd)
    return dict(extractor.stats)


class TarWriter:
    """A writable sink that extracts what is written into ``dest_dir`` (see ``tar_writer``)."""

    def __init__(self, dest_dir: str, keep_ownership: bool | None = None, fsync: bool = True) -> None:
        read_fd, write_fd = pipe()
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
