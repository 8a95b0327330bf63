# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filesystem helpers every layer uses: durable writes (fsync, atomic replace), private directories,
file modes and owners, and the one file SHA-256.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import grp
import hashlib
import os
import pwd
import stat
import tempfile
import uuid
from typing import Any, Callable

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    RepositoryError,
    RestoreError,
    describe_os_error,
)

#: the read size of every streaming copy and digest (4 MiB)
CHUNK_SIZE = 4 << 20

#: the buffer asked for an OS pipe between two threads or processes of a pipeline (1 MiB)
PIPE_SIZE = 1 << 20


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask for a ``size``-byte buffer on the pipe ``fd`` (Linux ``F_SETPIPE_SZ``); the default one stays when refused."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), size)
    except (ImportError, OSError):
        pass


def pipe(size: int = PIPE_SIZE) -> tuple[int, int]:
    """An OS pipe ``(read_fd, write_fd)`` with a ``size``-byte buffer when the system allows it."""
    read_fd, write_fd = os.pipe()
    grow_pipe(write_fd, size)
    return read_fd, write_fd


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


# --------------------------------------------------------------------------
# owners, modes, hashes
# --------------------------------------------------------------------------


def _resolve_id(value: str | int | None, lookup: Callable[[str], Any], what: str, remedy: str) -> int | None:
    if value is None or value == "":
        return None
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        return lookup(text)[2]
    except KeyError:
        raise CaptureError(f"the {what} {text!r} does not exist on this host", remedy)


def resolve_uid(owner: str | int | None) -> int | None:
    """A user name or numeric id as a uid; None stays None."""
    return _resolve_id(owner, pwd.getpwnam, "user", "create it first or give a numeric uid")


def resolve_gid(group: str | int | None) -> int | None:
    """A group name or numeric id as a gid; None stays None."""
    return _resolve_id(group, grp.getgrnam, "group", "create it first or give a numeric gid")


def sha256_file(path: str) -> tuple[int, str]:
    """Size and SHA-256 of a file, in one read pass."""
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(CHUNK_SIZE)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            digest.update(view[:count])
            size += count
    return size, digest.hexdigest()


def set_owner_mode(path: str, uid: int | None, gid: int | None, mode: int | None, recursive: bool = False) -> None:
    """Owner and group (of everything below ``path`` when ``recursive``), then the mode of ``path`` itself."""
    if uid is not None or gid is not None:
        targets = [path]
        if recursive:
            for directory, dirs, files in os.walk(path):
                targets.extend(os.path.join(directory, name) for name in dirs + files)
        for target in targets:
            os.chown(target, -1 if uid is None else uid, -1 if gid is None else gid, follow_symlinks=False)
    if mode is not None:
        os.chmod(path, mode)  # after chown, which clears set-id bits


def require_absolute(path: str, option: str) -> str:
    if not path or not os.path.isabs(path):
        raise RestoreError(f"{option} must be an absolute path, not {path!r}", f"give the full path in {option}")
    return os.path.normpath(path)


def atomic_write(final: str, text: str, mode: int, what: str) -> str:
    """Write ``text`` to ``final`` through a private temp name beside it: fsync, chmod ``mode``, rename."""
    directory = os.path.dirname(final)
    try:
        fd, temp = tempfile.mkstemp(prefix=".%s." % os.path.basename(final), suffix=".tmp", dir=directory)
    except OSError as exc:
        raise describe_os_error(exc, "preparing the %s" % what, final)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, final)
    except OSError as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise describe_os_error(exc, "writing the %s" % what, final)
    return final


def private_temp_dir() -> str:
    """``$TMPDIR/nodekeep-scratch-UID``: a private directory of this user for transient plaintext.

    Never the shared temporary directory itself: the engine removes stale run directories
    inside the scratch root, which must belong to nodekeep alone. Refused if anyone else
    could have made it.
    """
    path = os.path.join(tempfile.gettempdir(), "nodekeep-scratch-%d" % os.getuid())
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RepositoryError(
            "%s is not a private directory of this user (mode %o, owner %d)" % (path, info.st_mode, info.st_uid),
            "remove it, or give scratch_dir explicitly",
        )
    return path


def fsync_dir(path: str) -> None:
    """Make a rename, link or removal in the directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def makedirs_private(path: str) -> None:
    """Create ``path`` and any missing parent, each with mode 0700 (``OSError`` as raised)."""
    missing = []
    current = path
    while current and not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise


def discard_temp(handle, path: str) -> None:
    """Close ``handle`` if it is still open and remove the temporary file ``path`` (``OSError`` ignored)."""
    if not handle.closed:
        with contextlib.suppress(OSError):
            handle.close()
    with contextlib.suppress(OSError):
        os.unlink(path)


def stream_digest(stream, sink=None) -> tuple[int, str]:
    """Read ``stream`` to its end, writing it to ``sink`` when given; its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            break
        digest.update(chunk)
        size += len(chunk)
        if sink is not None:
            sink.write(chunk)
    return size, digest.hexdigest()


def is_within(root: str, path: str, real: bool = False) -> bool:
    """Whether ``path`` is ``root`` or lies under it (compared as given, or as real paths with ``real``)."""
    if real:
        root, path = os.path.realpath(root), os.path.realpath(path)
    return path == root or path.startswith(root.rstrip("/") + "/")
