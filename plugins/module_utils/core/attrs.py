# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a file is beyond its bytes, mode, owner and mtime: extended attributes, ACLs, holes, flags.

One place for every tree type (tar streams of ``config``/``secret``/age_seal directories, the
``files`` index) so each keeps the same attributes the same way:

* **Extended attributes**, every namespace the process can read (``user.``, ``trusted.`` as root,
  ``security.`` such as file capabilities), and **POSIX ACLs**, which Linux keeps as the xattrs
  ``system.posix_acl_access`` and ``system.posix_acl_default`` (a directory's default ACL): kept as
  their raw values, so the mask, named users and groups and default entries come back exactly and a
  restore never turns an ACL's mask into the owning group's permission. In a tar stream they are the
  PAX records ``SCHILY.xattr.NAME`` (the names GNU tar and bsdtar use); in a files index, the entry's
  ``xattrs`` (name -> base64). They are applied after the content and the mode (a write or a chown
  clears file capabilities), never through a symlink.
* **Holes**: a sparse file's data segments are found with ``SEEK_DATA``/``SEEK_HOLE`` and recorded
  (PAX record ``NODEKEEP.sparse``, index ``sparse``); the restore writes only those segments and
  leaves the rest a hole, so a 1 GiB file with 4 KiB of data stays 4 KiB on disk.
* What cannot be kept is **reported**, never dropped silently: inode flags set with ``chattr``
  (immutable, append-only, no-dump...) and attributes that could not be read are listed under the
  backup's ``not_kept``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import errno
import fcntl
import json
import os
import stat
import struct
from typing import Any, BinaryIO

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError

PAX_XATTR = "SCHILY.xattr."
PAX_SPARSE = "NODEKEEP.sparse"
#: data segments recorded per file at most; a file with more is restored sparse wherever it reads zeros
MAX_SEGMENTS = 4096
#: the granularity of holes found by zeros (a filesystem block)
HOLE_BLOCK = 4096
_FS_IOC_GETFLAGS = 0x80086601
#: inode flags (chattr) a restore does not set again, by their lsattr letter
_FLAGS = {
    0x10: "i (immutable)",
    0x20: "a (append only)",
    0x40: "d (no dump)",
    0x4000: "j (data journalling)",
    0x800000: "C (no copy on write)",
    0x8: "S (synchronous)",
    0x1: "s (secure deletion)",
    0x2: "u (undeletable)",
}
_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL)


def read_xattrs(path: str | int, notes: list | None = None, rel: str = "") -> dict[str, bytes]:
    """Every extended attribute (ACLs included) of ``path`` itself (never through a symlink), or of an open descriptor."""
    follow = {} if isinstance(path, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(path, **follow)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED and notes is not None:
            notes.append({"path": rel or ".", "what": "extended attributes", "reason": exc.strerror})
        return {}
    found = {}
    for name in sorted(names):
        try:
            found[name] = os.getxattr(path, name, **follow)
        except OSError as exc:
            if exc.errno != errno.ENODATA and notes is not None:
                notes.append({"path": rel or ".", "what": "extended attribute %s" % name, "reason": exc.strerror})
    return found


def flags_not_kept(fd: int, rel: str, notes: list) -> None:
    """Note inode flags (chattr) a restore does not set again."""
    try:
        raw = fcntl.ioctl(fd, _FS_IOC_GETFLAGS, struct.pack("l", 0))
    except OSError:
        return
    value = struct.unpack("l", raw)[0]
    names = [name for bit, name in sorted(_FLAGS.items()) if value & bit]
    if names:
        notes.append({"path": rel or ".", "what": "inode flags " + ", ".join(names), "reason": "not restored"})


def data_segments(fd: int, size: int, info: os.stat_result | None = None) -> list[list[int]] | None:
    """The data segments ``[[offset, length], ...]`` of a sparse file, or None when it has no hole.

    ``info``: the descriptor's ``fstat`` when the caller has it (a file with as many blocks as bytes
    has no hole: nothing else is asked of the kernel)."""
    info = info or os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or size == 0 or info.st_blocks * 512 >= size:
        return None
    segments: list[list[int]] = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    break  # only a hole up to the end
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            if start >= size:
                break
            segments.append([start, end - start])
            offset = end
    except OSError:
        return None
    finally:
        os.lseek(fd, 0, os.SEEK_SET)
    if segments == [[0, size]]:
        return None
    return segments


def pax_records(xattrs: dict[str, bytes], holes: Any = None) -> dict[str, str]:
    """The PAX records of a tar member for its xattrs and holes (binary values survive as surrogates).

    ``holes`` is None (no hole), ``"zeros"`` or the file's data segments.
    """
    records = {PAX_XATTR + name: value.decode("utf-8", "surrogateescape") for name, value in xattrs.items()}
    if holes is not None:
        records[PAX_SPARSE] = holes if holes == "zeros" else _segments_text(holes)
    return records


def _segments_text(segments: list[list[int]]) -> str:
    if len(segments) > MAX_SEGMENTS:
        return "zeros"
    return ",".join("%d:%d" % (offset, length) for offset, length in segments) or "none"


def from_pax(headers: dict[str, str] | None) -> tuple[dict[str, bytes], Any]:
    """(xattrs, holes) of a tar member: holes is None, "zeros", or a list of data segments."""
    xattrs = {}
    holes: Any = None
    for key, value in (headers or {}).items():
        if key.startswith(PAX_XATTR):
            xattrs[key[len(PAX_XATTR) :]] = value.encode("utf-8", "surrogateescape")
        elif key == PAX_SPARSE:
            holes = _parse_segments(value)
    return xattrs, holes


def _parse_segments(value: Any) -> Any:
    if value in ("zeros", None):
        return value
    if isinstance(value, list):
        return [[int(offset), int(length)] for offset, length in value]
    if value == "none":
        return []
    try:
        return [[int(part) for part in item.split(":", 1)] for item in str(value).split(",")]
    except ValueError:
        raise RestoreError("a sparse map in the archive is malformed", "the archive is damaged")


def to_index(xattrs: dict[str, bytes], segments: list[list[int]] | None, entry: dict[str, Any]) -> None:
    """Record xattrs and holes in a files index entry (JSON)."""
    if xattrs:
        entry["xattrs"] = xattrs_to_facts(xattrs)
    if segments is not None:
        entry["sparse"] = "zeros" if len(segments) > MAX_SEGMENTS else segments


def xattrs_to_facts(xattrs: dict[str, bytes]) -> dict[str, str]:
    """Extended attributes as manifest facts (name -> base64), as a files index keeps them."""
    return {name: base64.b64encode(value).decode("ascii") for name, value in sorted(xattrs.items())}


def xattrs_from_facts(facts: Any) -> dict[str, bytes]:
    if not isinstance(facts, dict):
        return {}
    return {str(name): base64.b64decode(str(value)) for name, value in facts.items()}


def index_to_pax(entry: dict[str, Any]) -> dict[str, str]:
    """The PAX records a files index entry's xattrs and holes stand for (the extractor reads only those)."""
    xattrs = {name: base64.b64decode(value) for name, value in (entry.get("xattrs") or {}).items()}
    return pax_records(xattrs, _parse_segments(entry.get("sparse")))


class SparseWriter:
    """Writes a file's content leaving its holes unwritten: only the recorded data segments (or, for
    ``"zeros"``, every block that is not all zeros) are written; ``finish()`` sets the size."""

    def __init__(self, out: BinaryIO, holes: Any, size: int) -> None:
        self.out = out
        self.fd = out.fileno()
        self.holes = holes
        self.size = size
        self.position = 0

    def _is_data(self, offset: int, length: int) -> list[tuple[int, int]]:
        """The parts of [offset, offset+length) inside data segments."""
        end = offset + length
        parts = []
        for start, count in self.holes:
            low, high = max(start, offset), min(start + count, end)
            if low < high:
                parts.append((low, high))
        return parts

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        length = len(view)
        if self.holes == "zeros":
            for begin in range(0, length, HOLE_BLOCK):
                block = view[begin : begin + HOLE_BLOCK]
                if block.tobytes().count(0) != len(block):
                    os.pwrite(self.fd, block, self.position + begin)
        else:
            for low, high in self._is_data(self.position, length):
                os.pwrite(self.fd, view[low - self.position : high - self.position], low)
        self.position += length
        return length

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        os.ftruncate(self.fd, self.size)


def apply_xattrs(path: str | int, xattrs: dict[str, bytes], is_link: bool = False, shown: str = "") -> None:
    """Set a restored entry's xattrs and ACLs on the entry itself (an open descriptor, or a path whose
    last component is never followed)."""
    for name, value in xattrs.items():
        if is_link and name.startswith(("user.", "system.posix_acl")):
            continue  # Linux keeps neither on a symlink; the capture could not have read them either
        try:
            if isinstance(path, int):
                os.setxattr(path, name, value)
            else:
                os.setxattr(path, name, value, follow_symlinks=False)
        except OSError as exc:
            what = "ACL" if name.startswith("system.posix_acl") else "extended attribute %s" % name
            raise RestoreError(
                "cannot restore the %s of %s (%s)" % (what, shown or path, exc.strerror),
                "restore onto a filesystem that keeps extended attributes and ACLs (ext4, xfs, btrfs), as root "
                "for trusted. and security. attributes; dropping an ACL could widen access, so nothing was placed",
            )


# --------------------------------------------------------------------------
# owner, mode, xattrs and ACLs of database files (sqlite, rocksdb): recorded at backup, given back at restore
# --------------------------------------------------------------------------


def owner_facts(path: str, notes: list | None = None, rel: str = "") -> dict[str, Any]:
    """``{uid, gid, mode}`` of the live file or directory (the copy that is sealed is the backup's own), and its
    ``xattrs`` (ACLs among them, a directory's default ACL too) when it has any."""
    info = os.stat(path)
    facts: dict[str, Any] = {"uid": info.st_uid, "gid": info.st_gid, "mode": "%04o" % stat.S_IMODE(info.st_mode)}
    xattrs = read_xattrs(path, notes, rel)
    if xattrs:
        facts["xattrs"] = xattrs_to_facts(xattrs)
    return facts


def apply_owner(fd: int, facts: dict[str, Any] | None, shown: str = "") -> None:
    """Give an open restored file or directory its recorded owner (as root), mode, then its xattrs and ACLs
    (after the mode: a chmod rewrites an ACL's mask; a filesystem without them fails the restore)."""
    if not facts:
        return
    if os.geteuid() == 0:
        os.fchown(fd, int(facts["uid"]), int(facts["gid"]))
    os.fchmod(fd, int(str(facts["mode"]), 8) & 0o7777)
    apply_xattrs(fd, xattrs_from_facts(facts.get("xattrs")), shown=shown)


def tree_owner_facts(root: str, notes: list | None = None) -> dict[str, Any]:
    """The owner, mode and xattrs of a directory and of its regular files: the most common ones for all files,
    and the files that differ by relative path (a RocksDB directory holds thousands of files alike)."""
    found: dict[str, dict[str, Any]] = {}
    for directory, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                rel = os.path.relpath(path, root)
                found[rel] = owner_facts(path, notes, rel)
    facts: dict[str, Any] = {"owner": owner_facts(root, notes)}
    if found:
        counts: dict[str, int] = {}
        for value in found.values():
            key = json.dumps(value, sort_keys=True)
            counts[key] = counts.get(key, 0) + 1
        common = json.loads(max(sorted(counts), key=lambda value: counts[value]))
        facts["files_owner"] = common
        other = {rel: value for rel, value in sorted(found.items()) if value != common}
        if other:
            facts["files_owner_other"] = other
    return facts


def apply_tree_owners(root: str, source: dict[str, Any]) -> None:
    """Give a restored directory and its regular files the owners and modes recorded by ``tree_owner_facts``.

    The tree is walked without following links and each file is changed through its own descriptor
    (``O_NOFOLLOW``): nothing outside the restored tree is touched.
    """
    common = source.get("files_owner")
    other = source.get("files_owner_other") or {}
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    if common or other:
        for directory, _dirs, files in os.walk(root):
            for name in files:
                path = os.path.join(directory, name)
                facts = other.get(os.path.relpath(path, root), common)
                if not facts or not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                fd = os.open(path, flags)
                try:
                    apply_owner(fd, facts, path)
                finally:
                    os.close(fd)
    if source.get("owner"):
        fd = os.open(root, flags | getattr(os, "O_DIRECTORY", 0))
        try:
            apply_owner(fd, source["owner"], root)
        finally:
            os.close(fd)
