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

import os
import stat

from ansible_collections.nodekeep.backup.plugins.module_utils.errors import NodekeepError

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
