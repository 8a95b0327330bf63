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
