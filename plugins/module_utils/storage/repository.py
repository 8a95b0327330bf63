# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The repository: where epochs live, write-once.

Layout: ``ROOT/NODE/EPOCH/<artifact files>``, ``manifest.json`` and
``manifest.json.sig``. An epoch is complete when its signature exists; the
signature is always the last object written, so a crash at any point leaves
an epoch without a signature, which verify, restore and retention ignore.

Callers use the ``Repository`` interface only: ``open_repository()`` picks the
backend from a spec, so an object-store backend plugs in without touching them.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import contextlib
import os
import re
import stat
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import BinaryIO

from ansible_collections.nodekeep.backup.plugins.module_utils.core import safefs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import EPOCH_RE, epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError, describe_os_error
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import discard_temp, fsync_dir, makedirs_private
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    DEFAULT_LOCAL_ROOT,
    MANIFEST_NAME,
    SIGNATURE_NAME,
    check_name,
)

TEMP_PREFIX = ".nodekeep-tmp-"


#: content-addressed objects of a node (``files`` assets) live in ``NODE/objects/<name[:2]>/<name>``
OBJECTS_DIR = "objects"


OBJECT_NAME_RE = re.compile(r"^[0-9a-f]{64}\Z")


def check_object_name(name: str) -> str:
    if not OBJECT_NAME_RE.match(name or ""):
        raise RepositoryError("%r is not an object name" % (name,), "object names are 64 lowercase hex digits")
    return name


class Repository(ABC):
    """A write-once store of epochs, addressed by node, epoch and file name."""

    kind = "abstract"

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the repository is, for messages and reports."""

    @abstractmethod
    def nodes(self) -> list[str]:
        """Nodes that have at least one epoch directory."""

    @abstractmethod
    def epoch_names(self, node: str) -> list[str]:
        """Every epoch of ``node`` present, complete or not, oldest first."""

    @abstractmethod
    def files(self, node: str, epoch: str) -> dict[str, int]:
        """Committed file names of an epoch and their sizes (temporary files excluded)."""

    @abstractmethod
    def claim_epoch(self, node: str, epoch: str) -> bool:
        """Reserve an epoch name for a new backup; False when it is taken."""

    @abstractmethod
    def open_write(self, node: str, epoch: str, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A write-once stream: visible under ``name`` only if the block ends without error."""

    @abstractmethod
    def open_read(self, node: str, epoch: str, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        """A readable stream of a committed file."""

    @abstractmethod
    def remove_epoch(self, node: str, epoch: str) -> None:
        """Remove a whole epoch (retention); the signature goes first so no half epoch looks complete."""

    def describe(self, node: str, epoch: str = "", name: str = "") -> str:
        return "/".join(p for p in (self.location.rstrip("/"), node, epoch, name) if p)

    # ------------------------------------------------------------------
    # content-addressed objects of a node, shared by its epochs (``files`` assets)
    # Write-once like epoch files; only retention's garbage collection removes one,
    # when no complete epoch references it any more.
    # ------------------------------------------------------------------

    def _no_objects(self) -> RepositoryError:
        return RepositoryError(
            "the %s repository %s does not store content-addressed objects" % (self.kind, self.location),
            "use a local or S3 repository for files assets",
        )

    def put_object(self, node: str, name: str, **options) -> contextlib.AbstractContextManager[BinaryIO]:
        """A write-once object stream, visible only if the block ends without error (``code=exists`` if taken)."""
        raise self._no_objects()

    def open_object(self, node: str, name: str) -> contextlib.AbstractContextManager[BinaryIO]:
        raise self._no_objects()

    def has_object(self, node: str, name: str) -> int | None:
        """The object's stored size, or None when absent."""
        raise self._no_objects()

    def object_names(self, node: str) -> dict[str, tuple[int, float]]:
        """Every object of ``node``: name -> (stored size, modification time as a UNIX timestamp)."""
        return {}

    def remove_object(self, node: str, name: str) -> None:
        raise self._no_objects()

    def describe_object(self, node: str, name: str) -> str:
        return self.describe(node, OBJECTS_DIR, "%s/%s" % (name[:2], name))

    # ------------------------------------------------------------------
    # shared behaviour, written once on top of the primitives
    # ------------------------------------------------------------------

    def put_bytes(self, node: str, epoch: str, name: str, data: bytes) -> None:
        with self.open_write(node, epoch, name) as handle:
            handle.write(data)

    def get_bytes(self, node: str, epoch: str, name: str, limit: int = 16 << 20) -> bytes:
        with self.open_read(node, epoch, name) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise RepositoryError("%s is larger than %d bytes" % (self.describe(node, epoch, name), limit))
        return data

    def exists(self, node: str, epoch: str, name: str) -> bool:
        return name in self.files(node, epoch)

    def is_complete(self, node: str, epoch: str) -> bool:
        present = self.files(node, epoch)
        return MANIFEST_NAME in present and SIGNATURE_NAME in present

    def complete_epochs(self, node: str) -> list[str]:
        """Epochs whose manifest and signature were written, oldest first."""
        return [e for e in self.epoch_names(node) if self.is_complete(node, e)]

    def incomplete_epochs(self, node: str) -> list[str]:
        return [e for e in self.epoch_names(node) if not self.is_complete(node, e)]

    def new_epoch(self, node: str, now=None) -> str:
        """Claim the epoch named by the current UTC second (waits for the next second on a clash)."""
        check_name("node", node)
        for _attempt in range(5):
            name = epoch_name(now)
            if self.claim_epoch(node, name):
                return name
            now = None
            time.sleep(1.0 - (time.time() % 1.0) + 0.01)
        raise RepositoryError(
            "could not claim a new epoch name for %s in %s" % (node, self.location),
            "another backup of this node is running; let it finish",
        )


@contextlib.contextmanager
def _open_existing(path: str, missing: str, remedy: str, what: str) -> Iterator[BinaryIO]:
    """``path`` opened for reading; a missing file is ``RepositoryError(missing, remedy)``."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with-block below, after error mapping
    except FileNotFoundError:
        raise RepositoryError(missing, remedy)
    except OSError as exc:
        raise describe_os_error(exc, "reading %s" % what, path)
    with handle:
        yield handle


# --------------------------------------------------------------------------
# local directory backend
# --------------------------------------------------------------------------


class LocalRepository(Repository):
    """Epochs in a local directory, each file fsynced and linked into place when complete."""

    kind = "local"

    def __init__(self, root: str, create: bool = True) -> None:
        if not root or not os.path.isabs(root):
            raise RepositoryError(
                "the repository path %r is not an absolute path" % (root,),
                "set nodekeep_repository_path to an absolute directory such as %s" % DEFAULT_LOCAL_ROOT,
            )
        self.root = os.path.normpath(root)
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise RepositoryError(
                "the repository path %s exists but is not a directory" % self.root, "choose another path"
            )
        if create:
            self._makedirs(self.root)
        elif not os.path.isdir(self.root):
            raise RepositoryError(
                "there is no repository at %s" % self.root,
                "check nodekeep_repository_path; run a backup first to create it",
            )

    @property
    def location(self) -> str:
        return self.root

    def _makedirs(self, path: str) -> None:
        """Create ``path`` and any missing parent, each with mode 0700."""
        try:
            makedirs_private(path)
        except OSError as exc:
            raise describe_os_error(exc, "creating the repository directory", path)

    def _epoch_dir(self, node: str, epoch: str) -> str:
        check_name("node", node)
        if not EPOCH_RE.match(epoch or ""):
            raise RepositoryError("%r is not an epoch name" % (epoch,), "epoch names look like 20260101T000000Z")
        return os.path.join(self.root, node, epoch)

    def _path(self, node: str, epoch: str, name: str) -> str:
        check_name("file", name)
        return os.path.join(self._epoch_dir(node, epoch), name)

    def nodes(self) -> list[str]:
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        return [e for e in entries if not e.startswith(".") and os.path.isdir(os.path.join(self.root, e))]

    def epoch_names(self, node: str) -> list[str]:
        check_name("node", node)
        try:
            entries = os.listdir(os.path.join(self.root, node))
        except FileNotFoundError:
            return []
        return sorted(e for e in entries if EPOCH_RE.match(e))

    def files(self, node: str, epoch: str) -> dict[str, int]:
        directory = self._epoch_dir(node, epoch)
        result = {}
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                        continue
                    result[entry.name] = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            return {}
        return result

    def claim_epoch(self, node: str, epoch: str) -> bool:
        directory = self._epoch_dir(node, epoch)
        self._makedirs(os.path.dirname(directory))
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            return False
        except OSError as exc:
            raise describe_os_error(exc, "creating the epoch directory", directory)
        fsync_dir(os.path.dirname(directory))
        return True

    @contextlib.contextmanager
    def open_write(self, node: str, epoch: str, name: str) -> Iterator[BinaryIO]:
        final = self._path(node, epoch, name)
        if os.path.lexists(final):
            raise RepositoryError(
                "%s already exists and the repository is write-once" % final,
                "write a new epoch instead of rewriting this one",
            )
        with self._write_once(final, name, name, 1 << 20, "another run wrote the same epoch") as handle:
            yield handle
        fsync_dir(os.path.dirname(final))

    @contextlib.contextmanager
    def _write_once(
        self, final: str, stem: str, what: str, buffering: int, remedy: str, **details
    ) -> Iterator[BinaryIO]:
        """A private temp file next to ``final``, linked to ``final`` (never replacing it) when the block
        succeeds; the temp name is always removed. The caller fsyncs the directory after a success."""
        directory = os.path.dirname(final)
        if not os.path.isdir(directory):
            self._makedirs(directory)
        temp = os.path.join(directory, "%s%s-%s" % (TEMP_PREFIX, stem, uuid.uuid4().hex[:8]))
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            raise describe_os_error(exc, "creating %s" % what, temp)
        handle = os.fdopen(fd, "wb", buffering=buffering)
        try:
            yield handle
            try:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                # link() refuses to replace an existing name: write-once even against a racing writer.
                os.link(temp, final)
            except FileExistsError:
                raise RepositoryError("%s appeared while it was being written" % final, remedy, **details)
            except OSError as exc:
                raise describe_os_error(exc, "writing %s" % what, final)
        finally:
            discard_temp(handle, temp)

    @contextlib.contextmanager
    def open_read(self, node: str, epoch: str, name: str) -> Iterator[BinaryIO]:
        path = self._path(node, epoch, name)
        remedy = "the epoch is incomplete or was pruned; choose another epoch"
        with _open_existing(path, "%s is missing" % path, remedy, name) as handle:
            yield handle

    def remove_epoch(self, node: str, epoch: str) -> None:
        """Remove the real directory ``ROOT/NODE/EPOCH``, walked and removed by descriptor, never through a link.

        A node or epoch that is a symlink (or anything but a directory) is refused and left as it is;
        links inside the epoch are removed as links, what they point to is never touched.
        """
        directory = self._epoch_dir(node, epoch)
        node_fd = None
        try:
            node_fd = safefs.open_beneath(self.root, [node])
            epoch_fd = safefs.open_dir_at(node_fd, epoch)
            try:
                # The signature goes first: from then on the epoch no longer counts.
                for name in (SIGNATURE_NAME, MANIFEST_NAME):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=epoch_fd)
                os.fsync(epoch_fd)
            finally:
                os.close(epoch_fd)
            safefs.remove_tree_at(node_fd, epoch)
            os.fsync(node_fd)
        except FileNotFoundError:
            return
        except safefs.LinkRefused as exc:
            raise RepositoryError(
                "epoch %s of %s was not removed: %s"
                % (
                    epoch,
                    node,
                    safefs.describe_refusal(exc, self.root if node_fd is None else os.path.join(self.root, node)),
                ),
                "someone replaced part of the repository; inspect it and remove the link by hand",
            )
        except OSError as exc:
            raise describe_os_error(exc, "removing epoch %s of %s" % (epoch, node), directory)
        finally:
            if node_fd is not None:
                os.close(node_fd)

    def _object_path(self, node: str, name: str) -> str:
        check_name("node", node)
        check_object_name(name)
        return os.path.join(self.root, node, OBJECTS_DIR, name[:2], name)

    @contextlib.contextmanager
    def put_object(self, node: str, name: str, **options) -> Iterator[BinaryIO]:
        final = self._object_path(node, name)
        if os.path.lexists(final):
            raise RepositoryError("%s already exists and objects are write-once" % final, "reuse it", code="exists")
        with self._write_once(final, name[:16], "object %s" % name, 1 << 16, "reuse it", code="exists") as handle:
            yield handle
        fsync_dir(os.path.dirname(final))

    @contextlib.contextmanager
    def open_object(self, node: str, name: str) -> Iterator[BinaryIO]:
        path = self._object_path(node, name)
        remedy = "an epoch referencing it was damaged or pruned wrongly; restore another epoch or copy"
        with _open_existing(path, "object %s is missing" % path, remedy, "object %s" % name) as handle:
            yield handle

    def has_object(self, node: str, name: str) -> int | None:
        try:
            info = os.lstat(self._object_path(node, name))
        except FileNotFoundError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def object_names(self, node: str) -> dict[str, tuple[int, float]]:
        check_name("node", node)
        base = os.path.join(self.root, node, OBJECTS_DIR)
        found: dict[str, tuple[int, float]] = {}
        try:
            shards = sorted(os.listdir(base))
        except FileNotFoundError:
            return found
        for shard in shards:
            try:
                with os.scandir(os.path.join(base, shard)) as entries:
                    for entry in entries:
                        if OBJECT_NAME_RE.match(entry.name) and entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            found[entry.name] = (info.st_size, info.st_mtime)
            except (FileNotFoundError, NotADirectoryError):
                continue
        return found

    def remove_object(self, node: str, name: str) -> None:
        """Unlink the object's own entry, reached by descriptor below the root, never through a link."""
        path = self._object_path(node, name)
        try:
            shard = safefs.open_beneath(self.root, [node, OBJECTS_DIR, name[:2]])
        except FileNotFoundError:
            return
        except safefs.LinkRefused as exc:
            raise RepositoryError(
                "object %s was not removed: %s in %s" % (name, safefs.describe_refusal(exc, "a directory"), self.root),
                "someone replaced part of the repository; inspect it and remove the link by hand",
            )
        except OSError as exc:
            raise describe_os_error(exc, "removing object %s" % name, path)
        try:
            os.unlink(name, dir_fd=shard)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise describe_os_error(exc, "removing object %s" % name, path)
        finally:
            os.close(shard)

    def scratch_dir(self) -> str:
        """A private directory on the repository's filesystem for transient plaintext copies."""
        path = os.path.join(self.root, ".scratch")
        self._makedirs(path)
        try:
            if stat.S_IMODE(os.stat(path).st_mode) != 0o700:
                os.chmod(path, 0o700)
        except OSError as exc:
            raise describe_os_error(exc, "preparing the scratch directory", path)
        return path

    def free_bytes(self) -> int | None:
        try:
            info = os.statvfs(self.root)
        except OSError:
            return None
        return info.f_bavail * info.f_frsize
