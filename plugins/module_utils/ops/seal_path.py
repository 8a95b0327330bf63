# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sealing and opening single files or trees with age (the age_seal module): plans, the sealed
stream's sinks, and ``seal_to_epoch`` (secrets sealed into a signed epoch of their own).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type
import contextlib
import hashlib
import hmac
import io
import os
import tarfile
from collections.abc import Iterable
from typing import Any, BinaryIO

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import registry as _assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.secret import opened_key_facts, source_kind
from ansible_collections.nodekeep.backup.plugins.module_utils.core import armor as _armor
from ansible_collections.nodekeep.backup.plugins.module_utils.core.archive import (
    CONTENT_KINDS,
    SNIFF_SIZE,
    remove_quietly,
    tar_reader,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    NodekeepError,
    SealError,
    UnsealError,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.extract import TarWriter, tar_writer
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import (
    PIPE_SIZE,
    check_parent_writable,
    format_mode,
    fsync_dir,
    place_file,
    temp_path,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.seal import (
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
from ansible_collections.nodekeep.backup.plugins.module_utils.core.signing import load_private_key
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import sequence_state_path
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository


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
    kind = source_kind(src)
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
        remove_quietly(temp)
    out = dict(plan)
    out.update(
        {
            "changed": True,
            "skipped": False,
            "size": result.sealed.size,
            "sealed_size": result.sealed.size,
            "sha256": result.sealed.sha256,
            "content_size": result.content.size,
            # No unkeyed hash of the plaintext is reported: the sealed SHA-256 identifies it, age authenticates it.
            "content_sha256": None,
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
        remove_quietly(self.temp)


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
    kept = f"{dest}.nodekeep-replaced-{epoch_name()}"
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
    expected_content_sha256: str | None = None,
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
                _check_expected(result, expected_content_sha256)
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
            # No unkeyed hash of the plaintext is reported: the sealed SHA-256 identifies it, age authenticates it.
            "content_sha256": None,
            "compressed": result.compressed,
        }
    )
    if sink.kind == "file":
        out["size"] = result.content.size
        out["mode"] = format_mode(mode)
        if result.content.size <= 64 << 10:
            facts = opened_key_facts(dest)
            if facts:
                out["key"] = facts
    if sink.entries is not None:
        out["entries"] = sink.entries
    if kept:
        out["replaced_path"] = kept
    if expected_content_sha256:
        out["content_verified"] = True
    return out


def _check_expected(result: SealResult, expected: str | None) -> None:
    """The decrypted content against the operator's SHA-256, inside the module (the hash itself is never reported)."""
    if expected and not hmac.compare_digest(result.content.sha256, expected.strip().lower()):
        raise UnsealError(
            "the decrypted content does not have the expected SHA-256 (expected_content_sha256)",
            "this is not the recorded file (a wrong sealed file, record or key); nothing was placed",
        )


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
        store,
        node,
        assets,
        parsed,
        [line for line, _where in lines],
        key,
        labels=labels,
        level=level,
        sequence_state=sequence_state_path(signing_key),
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
