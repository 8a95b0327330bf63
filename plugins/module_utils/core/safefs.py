# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Descriptor-relative filesystem access: never through a link nodekeep did not create.

Restores, cutovers and retention work on trees that someone else may write to
(a staging host, a repository). Every path below a trusted root is walked one
component at a time with ``openat(O_NOFOLLOW | O_DIRECTORY)``, so a symlink
planted at any level makes the operation refuse instead of writing (or
removing) elsewhere. The root itself is the operator's choice and is resolved
normally.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import os
import re
import stat
from collections.abc import Iterator

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)

_KINDS = (
    (stat.S_ISREG, "regular file"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "FIFO (named pipe)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def kind_of(mode: int) -> str:
    """A file type in words, for messages."""
    for test, name in _KINDS:
        if test(mode):
            return name
    return "special file"


def open_regular(path: str, error: type[NodekeepError], what: str, remedy: str) -> int:
    """A read-only descriptor of the regular file ``path``; a FIFO, socket or device is refused, never waited on.

    ``OSError`` from opening is raised as it is. ``O_NONBLOCK`` makes opening a FIFO return at once (no writer needed), so the
    type is checked on the descriptor itself: nothing can be swapped in between.
    """

    def refuse(mode: int) -> NodekeepError:
        return error("%s %s is a %s, not a regular file; it was not read" % (what, path, kind_of(mode)), remedy)

    mode = os.stat(path).st_mode  # a socket cannot even be opened: judged by its type first
    if not stat.S_ISREG(mode):
        raise refuse(mode)
    fd = os.open(path, os.O_RDONLY | O_NONBLOCK | O_CLOEXEC)  # OSError as raised, for the caller to describe
    try:
        mode = os.fstat(fd).st_mode  # and again on the descriptor: nothing swapped in between
        if not stat.S_ISREG(mode):
            raise refuse(mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class LinkRefused(OSError):
    """A path component is a symlink (or not a directory): nodekeep never goes through it."""


def open_root(path: str) -> int:
    """A descriptor of the trusted root directory (the operator's path: links in it are the operator's)."""
    return os.open(path, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)


def open_dir_at(dir_fd: int, name: str, create: bool = False, mode: int = 0o700) -> int:
    """The directory ``name`` inside ``dir_fd``, never through a symlink; made (``mode``) when missing and ``create``."""
    if not name or name in (".", "..") or "/" in name:
        raise LinkRefused(0, "not a single path component", name)
    for _attempt in range(2):
        try:
            return os.open(name, os.O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(name, mode, dir_fd=dir_fd)
            except FileExistsError:
                pass  # made meanwhile: opened (and judged) on the next attempt
        except OSError as exc:
            # ELOOP (a symlink) or ENOTDIR (a file): refused, named by its kind
            try:
                kind = kind_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
            except OSError:
                raise exc
            raise LinkRefused(exc.errno, "is a %s, not a directory" % kind, name)
    raise FileNotFoundError(name)


def open_beneath(root: str, parts: list[str], create: bool = False, mode: int = 0o700) -> int:
    """The directory ``root/parts...``, each component opened with O_NOFOLLOW below the root."""
    fd = open_root(root)
    try:
        for part in parts:
            child = open_dir_at(fd, part, create=create, mode=mode)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def remove_tree_at(dir_fd: int, name: str) -> None:
    """Remove the real directory ``name`` in ``dir_fd`` and everything in it, never following a link.

    Links inside are removed as links (what they point to is untouched); a link
    or a file at ``name`` itself is refused with ``LinkRefused``.
    """
    fd = open_dir_at(dir_fd, name)
    try:
        _empty_dir(fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)


def _empty_dir(fd: int) -> None:
    for entry in os.scandir(fd):
        if entry.is_dir(follow_symlinks=False):
            remove_tree_at(fd, entry.name)
        else:
            os.unlink(entry.name, dir_fd=fd)


def describe_refusal(exc: LinkRefused, where: str) -> str:
    return "%s/%s %s; nodekeep never goes through a link it did not create" % (
        where.rstrip("/"),
        exc.filename,
        exc.strerror,
    )


PROC_FD = "/proc/self/fd"


class Jail:
    """A staging tree whose directories are walked from ``/`` one component at a time, never through a link.

    ``anchor(path)`` walks (and makes, 0700) the directories down to ``path``'s
    parent and returns ``/proc/self/fd/N/NAME``: the kernel resolves that through
    the open descriptor, so every later path-based step of a restore (temp
    files, renames, tar extraction, SQLite checks) lands in the directory that
    was checked, even if a link is planted in the tree meanwhile. ``check(path)``
    only walks (nothing is made) and says whether ``path`` exists. A symlink (or
    a file) where a directory is expected raises ``error`` naming it.
    """

    def __init__(self, root: str, error: type[NodekeepError], remedy: str, what: str = "the staging path") -> None:
        if not root or not os.path.isabs(root):
            raise error("%s %r is not an absolute path" % (what, root), remedy)
        self.root = os.path.normpath(root)
        self.error = error
        self.remedy = remedy
        self.what = what
        self.fds: dict[str, int] = {}

    def __enter__(self) -> Jail:  # noqa: PYI034 - typing.Self needs Python 3.11
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        while self.fds:
            os.close(self.fds.popitem()[1])

    def inside(self, path: str) -> str:
        """``path`` normalised; refused unless it is the root or below it."""
        normal = os.path.normpath(path)
        if normal != self.root and not normal.startswith(self.root.rstrip("/") + "/"):
            raise self.error("%s is not inside %s %s" % (path, self.what, self.root), self.remedy)
        return normal

    def _walk(self, directory: str, create: bool) -> int | None:
        """The held descriptor of ``directory`` (absolute, normalised), or None when missing and not ``create``."""
        if directory in self.fds:
            return self.fds[directory]
        parent, name = os.path.split(directory)
        if not name:  # "/"
            self.fds[directory] = os.open("/", os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            return self.fds[directory]
        parent_fd = self._walk(parent, create)
        if parent_fd is None:
            return None
        # Missing directories are made (0700), above the root too, as os.makedirs would; never through a link.
        try:
            fd = open_dir_at(parent_fd, name, create=create)
        except FileNotFoundError:
            if create:
                raise self.error("the directory %s could not be made" % directory, self.remedy)
            return None
        except LinkRefused as exc:
            raise self.error(
                "%s %s: %s" % (self.what, self.root, describe_refusal(exc, parent)),
                self.remedy,
            )
        except OSError as exc:
            raise self.error(
                "%s %s: cannot open %s (%s)" % (self.what, self.root, directory, exc.strerror), self.remedy
            )
        self.fds[directory] = fd
        return fd

    def check(self, path: str) -> bool:
        """Walk to ``path``'s parent (refusing links) and say whether ``path`` exists (as anything, not followed)."""
        path = self.inside(path)
        fd = self._walk(os.path.dirname(path), create=False)
        if fd is None:
            return False
        try:
            os.stat(os.path.basename(path), dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def anchor(self, path: str) -> str:
        """``/proc/self/fd/N/NAME`` for ``path``: its parent walked, made when missing, and held open."""
        path = self.inside(path)
        if path == self.root:
            raise self.error("%s is the staging root itself" % path, self.remedy)
        if not os.path.isdir(PROC_FD):
            raise self.error(
                "%s is not available, so a restore cannot pin its staging directories" % PROC_FD,
                "mount /proc (nodekeep never writes through paths a link could redirect)",
            )
        fd = self._walk(os.path.dirname(path), create=True)
        return "%s/%d/%s" % (PROC_FD, fd, os.path.basename(path))

    def real(self, text: str) -> str:
        """``text`` with every anchored directory named by its real path again (for messages)."""
        for directory, fd in self.fds.items():
            text = text.replace("%s/%d/" % (PROC_FD, fd), directory.rstrip("/") + "/")
        return text


#: temporary names a restore (or deep check) makes beside its target: ``.NAME.nodekeep-[index-|view-]HEX8``
#: plus SQLite's side files of them and a PostgreSQL dump's globals (``.globals.sql``). Anything matching
#: in a staging directory, found while holding that directory's restore lock, was left by a killed run
#: and is removed.
TEMP_RE = re.compile(r"^\..+\.nodekeep-(?:index-|view-)?[0-9a-f]{8}(?:-wal|-shm|-journal|\.globals\.sql)?\Z")
RESTORE_LOCK = ".nodekeep-restore.lock"


@contextlib.contextmanager
def swept_directory(directory: str) -> Iterator[list[str]]:
    """Hold ``DIRECTORY/.nodekeep-restore.lock`` and remove the temporary names killed runs left there.

    The lock is exclusive and waited for: a restore into the same directory at the
    same time finishes first, so only names of dead runs are ever swept. Yields the
    names removed. Directories are removed by descriptor, never through a link.
    """
    dir_fd = os.open(directory, os.O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    try:
        lock = _hold_lock_file(dir_fd, RESTORE_LOCK)
        try:
            removed = []
            for entry in sorted(os.scandir(dir_fd), key=lambda item: item.name):
                if not TEMP_RE.match(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    remove_tree_at(dir_fd, entry.name)
                else:
                    os.unlink(entry.name, dir_fd=dir_fd)
                removed.append(entry.name)
            yield removed
        finally:
            # Removed while held: a run waiting on this inode sees it is gone and makes a new lock file.
            with contextlib.suppress(OSError):
                os.unlink(RESTORE_LOCK, dir_fd=dir_fd)
            os.close(lock)
    finally:
        os.close(dir_fd)


def _hold_lock_file(dir_fd: int, name: str) -> int:
    """An exclusive flock on ``name`` in ``dir_fd``, waited for; retried when the file was removed meanwhile."""
    while True:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600, dir_fd=dir_fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
