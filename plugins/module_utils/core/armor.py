# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""age's ASCII armor (a streaming reader), and passphrase mode.

pyrage 1.4 reads armored files by itself (``decrypt_io``) and writes them
(``encrypt_io(..., armored=True)``, which ``seal(armored=True)`` uses). The
reader here serves looking at the header of an armored file (``stanza_types``:
passphrase or recipients) and strict checks in tests.

The armored form of an age file (``age -a``; age spec, "ASCII armor") is::

    -----BEGIN AGE ENCRYPTED FILE-----
    <standard padded base64 of the binary age file, 64 columns per line,
     the last line shorter (never empty)>
    -----END AGE ENCRYPTED FILE-----

``ArmorReader`` reads it and is strict like age: 64-column lines, canonical
padding, nothing but whitespace outside the armor. It holds at most one line
(plus what the caller reads) in memory, whatever the file size, and keeps the
SHA-256 and size of the armored bytes, which are the file's own checksum.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import base64
import binascii
import hashlib
import io
from typing import BinaryIO

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import SealError, UnsealError

AGE_ARMOR_MAGIC = b"-----BEGIN AGE ENCRYPTED FILE-----"


AGE_ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"


AGE_MAGIC = b"age-encryption.org/v1\n"


COLUMNS = 64


_LINE_BYTES = COLUMNS // 4 * 3  # 48 binary bytes per full line


_WHITESPACE = b" \t\r\n"


#: how far the armor header is looked for (leading whitespace is allowed, as age allows it)
_PEEK = 1024


def is_armored(head: bytes) -> bool:
    return head.lstrip(_WHITESPACE).startswith(AGE_ARMOR_MAGIC)


def _bad(problem: str) -> UnsealError:
    return UnsealError(
        "the armored age file is malformed (%s)" % problem,
        "it was damaged or edited after sealing: use an intact copy; nothing was written",
    )


class ArmorReader(io.RawIOBase):
    """A readable binary stream of the age file inside an armored ``source``."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0
        self._buffer = bytearray()
        self._done = False
        self._short_seen = False
        self._leftover = b""
        header = self._line(skip_blank=True)
        if header is None or header.strip(_WHITESPACE) != AGE_ARMOR_MAGIC:
            raise _bad("it does not begin with %s" % AGE_ARMOR_MAGIC.decode())

    def _raw_line(self) -> bytes | None:
        while b"\n" not in self._leftover:
            chunk = self._source.read(64 << 10)
            if not chunk:
                break
            self._hash.update(chunk)
            self.size += len(chunk)
            self._leftover += chunk
            if len(self._leftover) > 4 * COLUMNS and b"\n" not in self._leftover:
                raise _bad("a line is longer than %d columns" % COLUMNS)
        if not self._leftover:
            return None
        line, _sep, rest = self._leftover.partition(b"\n")
        self._leftover = rest
        return line

    def _line(self, skip_blank: bool = False) -> bytes | None:
        while True:
            line = self._raw_line()
            if line is None:
                return None
            if line.endswith(b"\r"):
                line = line[:-1]
            if skip_blank and not line.strip(_WHITESPACE):
                continue
            return line

    def _fill(self, wanted: int) -> None:
        while not self._done and len(self._buffer) < wanted:
            line = self._line()
            if line is None:
                raise _bad("the end line is missing (the file is truncated)")
            if line == AGE_ARMOR_END:
                self._finish()
                return
            if self._short_seen:
                raise _bad("a line after a short line")
            if len(line) > COLUMNS:
                raise _bad("a line is longer than %d columns" % COLUMNS)
            if len(line) < COLUMNS:
                if not line:
                    raise _bad("an empty line")
                self._short_seen = True
            try:
                decoded = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError):
                raise _bad("a line is not valid base64")
            if base64.b64encode(decoded) != line:
                raise _bad("non-canonical base64")
            if len(line) == COLUMNS and line.endswith(b"="):
                self._short_seen = True
            self._buffer += decoded

    def _finish(self) -> None:
        self._done = True
        rest = self._leftover
        while True:
            if rest.strip(_WHITESPACE):
                raise _bad("data after the end line")
            rest = self._source.read(64 << 10)
            if not rest:
                break
            self._hash.update(rest)
            self.size += len(rest)
        self._leftover = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            while not self._done:
                self._fill(len(self._buffer) + (1 << 20))
            data = bytes(self._buffer)
            self._buffer = bytearray()
            return data
        self._fill(size)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readinto(self, target) -> int:
        data = self.read(len(target))
        target[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end (checks the end line and what follows it)."""
        while self.read(1 << 20):
            pass

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def armor_bytes(data: bytes) -> bytes:
    """The armored form of a binary age file, byte for byte as ``age -a`` writes it."""
    text = base64.b64encode(data)
    lines = [text[i : i + COLUMNS] for i in range(0, len(text), COLUMNS)]
    return b"\n".join([AGE_ARMOR_MAGIC, *lines, AGE_ARMOR_END]) + b"\n"


def dearmor_bytes(data: bytes) -> bytes:
    reader = ArmorReader(io.BytesIO(data))
    result = reader.read()
    reader.drain()
    return result


def stanza_types(head: bytes) -> list[str]:
    """Recipient stanza types (``X25519``, ``ssh-ed25519``, ``scrypt``...) in the header of a binary age file."""
    if not head.startswith(AGE_MAGIC):
        return []
    types = []
    for line in head[len(AGE_MAGIC) :].split(b"\n"):
        if line.startswith(b"---"):
            break
        if line.startswith(b"-> "):
            parts = line[3:].split()
            if parts:
                types.append(parts[0].decode("ascii", "replace"))
    return types


# --------------------------------------------------------------------------
# passphrase mode (age's scrypt recipient), for small secrets
# --------------------------------------------------------------------------

#: pyrage's passphrase mode works on whole byte strings in memory: payloads are limited to this size
MAX_PASSPHRASE_PAYLOAD = 1 << 20


#: a sealed (possibly armored) passphrase file larger than this cannot hold an allowed payload
MAX_PASSPHRASE_SEALED = 2 * MAX_PASSPHRASE_PAYLOAD


def _too_large(what: str) -> str:
    return "%s is larger than %d KiB, the limit of passphrase mode" % (what, MAX_PASSPHRASE_PAYLOAD >> 10)


def check_passphrase(passphrase: str | None) -> str:
    if passphrase is None or not str(passphrase):
        raise SealError("the passphrase is empty", "give a long passphrase (for example from Ansible Vault)")
    return str(passphrase)


def passphrase_seal(data: bytes, passphrase: str, compress: bool = False, level: int = 3, armor: bool = False) -> bytes:
    """Encrypt ``data`` with an age passphrase (scrypt), in memory; zstd first when ``compress``."""
    import pyrage
    import zstandard

    if len(data) > MAX_PASSPHRASE_PAYLOAD:
        raise SealError(
            _too_large("the content to seal"),
            "passphrase mode (pyrage) holds everything in memory: use it for keys, mnemonics and .env files, and "
            "seal larger data to age recipients (recipients / recipients_files) instead; nothing was written",
        )
    passphrase = check_passphrase(passphrase)  # its own error, not "encryption failed"
    payload = zstandard.ZstdCompressor(level=level, write_checksum=True).compress(data) if compress else data
    try:
        return pyrage.passphrase.encrypt(payload, passphrase, armored=bool(armor))
    except Exception as exc:  # noqa: BLE001 - pyrage's own error types; the passphrase is never part of them
        raise SealError("age passphrase encryption failed (%s)" % type(exc).__name__, "nothing was written")


def passphrase_open(sealed: bytes, passphrase: str) -> tuple[bytes, bool]:
    """Decrypt a (binary or armored) passphrase age file in memory; returns the content and whether it was zstd."""
    import pyrage
    import zstandard

    if len(sealed) > MAX_PASSPHRASE_SEALED:
        raise UnsealError(
            _too_large("the sealed file"),
            "passphrase mode (pyrage) holds everything in memory; decrypt it with the age CLI (age -d) instead",
        )
    head = ArmorReader(io.BytesIO(sealed)).read(4096) if is_armored(sealed[:_PEEK]) else sealed[:4096]
    if "scrypt" not in stanza_types(head):
        raise UnsealError(
            "the file is not encrypted with a passphrase (it is sealed to age recipients)",
            "give identities or identity_files instead of passphrase",
        )
    try:
        payload = pyrage.passphrase.decrypt(sealed, check_passphrase(passphrase))
    except Exception:  # noqa: BLE001 - wrong passphrase and damage look the same to scrypt/age
        raise UnsealError(
            "the passphrase does not open this file, or the file was modified after sealing",
            "check the passphrase (it is case- and space-sensitive); nothing was written",
        )
    if payload[:4] == b"\x28\xb5\x2f\xfd":
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=True)
            content = reader.read(MAX_PASSPHRASE_PAYLOAD + 1)
        except zstandard.ZstdError as exc:
            raise UnsealError("the decrypted payload is not valid zstd data (%s)" % exc, "use an intact copy")
        if len(content) > MAX_PASSPHRASE_PAYLOAD:
            raise UnsealError(_too_large("the decompressed content"), "decrypt it with age -d | zstd -d instead")
        return content, True
    return payload, False
