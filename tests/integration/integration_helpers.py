"""Helpers shared by several integration suites (tests/integration is on ``sys.path``: its conftest.py is here).

``read_rocksdb(path)``
    ``{family: {key: value}}`` of the RocksDB at ``path``, read from a private copy
    (the DB itself is never opened); used by the rocksdb and runbooks suites.
``wait_for_count(committed, count, timeout, pause, who)``
    polls ``committed()`` until it reaches ``count`` and returns it; fails naming ``who``
    when the timeout passes first (the live writers of the postgres and rocksdb suites).
``plain_sha256(artifact_path, identity_file)``
    the SHA-256 of a sealed artifact's plaintext, decrypted here: the manifest records none for
    backed-up data (docs/safety.md), so a test that wants "byte for byte" computes it itself.
``digests(data)``, ``units(data, pages)``, ``needles(plaintexts)``, ``scan(blob, needles)``
    what an attacker would try against a repository or a result: the unkeyed digests (SHA-256/512, SHA-1,
    MD5, BLAKE2) of every guessed plaintext (whole, per 4 MiB chunk, per page), in hex, base64 and raw;
    ``scan`` names the ones found in ``blob`` (tests/integration/safety, tests/integration/streams).
``mounted(target, *options, source="tmpfs", fstype=None)``
    a context manager: ``mount`` at ``target`` (a small tmpfs for a full disk, a bind mount),
    unmounted afterwards; skips the test, saying why, when mounting is impossible (not root).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable

import pytest

CHUNK = 4 << 20
PAGE = 4096


def digests(data: bytes) -> list[bytes]:
    """The raw unkeyed digests of ``data`` an attacker would try."""
    return [
        hashlib.sha256(data).digest(),
        hashlib.sha512(data).digest(),
        hashlib.sha1(data).digest(),
        hashlib.md5(data).digest(),
        hashlib.blake2b(data).digest(),
        hashlib.blake2b(data, digest_size=32).digest(),
        hashlib.blake2b(data, digest_size=16).digest(),
        hashlib.blake2s(data).digest(),
    ]


def units(data: bytes, pages: bool = False) -> list[bytes]:
    """The whole content, each 4 MiB chunk and, for a database, each page."""
    found = [data]
    if len(data) > CHUNK:
        found += [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    if pages:
        found += [data[i : i + PAGE] for i in range(0, len(data), PAGE)]
    return found


def needles(plaintexts: list[bytes]) -> dict[bytes, str]:
    """Every encoding of every digest (hex both cases, base64 both alphabets, raw) -> what it is of."""
    found: dict[bytes, str] = {}
    for number, data in enumerate(plaintexts):
        if len(data) < 8 or data.count(data[:1]) == len(data):
            continue  # all one byte (a zero page): not something anyone learns from
        for digest in digests(data):
            what = "digest of plaintext #%d (%d bytes)" % (number, len(data))
            for form in (
                digest.hex().encode(),
                digest.hex().upper().encode(),
                base64.b64encode(digest).rstrip(b"="),
                base64.urlsafe_b64encode(digest).rstrip(b"="),
                digest,
            ):
                found[form] = what
    return found


def scan(blob: bytes, found: dict[bytes, str]) -> list[str]:
    return sorted({what for needle, what in found.items() if needle in blob})


def plain_sha256(artifact_path, identity_file) -> str:
    """The SHA-256 of the plaintext of the sealed artifact at ``artifact_path`` (the engine's own unseal)."""
    from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal

    identities = seal.load_identities([], [str(identity_file)])
    with open(str(artifact_path), "rb") as stream, open(os.devnull, "wb") as sink:
        return seal.unseal(stream, sink, identities).content.sha256


def read_rocksdb(path) -> dict:
    """{family: {key: value}} of the DB at ``path``, opened read-only from a private copy."""
    from rocksdict import AccessType, Options, Rdict

    with tempfile.TemporaryDirectory(prefix="read-rocksdb-") as scratch:
        copy = os.path.join(scratch, "db")
        shutil.copytree(str(path), copy, symlinks=True)
        names = Rdict.list_cf(copy, Options(raw_mode=True))
        db = Rdict(
            copy,
            Options(raw_mode=True),
            column_families={name: Options(raw_mode=True) for name in names if name != "default"} or None,
            access_type=AccessType.read_only(False),
        )
        try:
            return {name: dict(db.get_column_family(name).items()) for name in names}
        finally:
            db.close()


def wait_for_count(committed: Callable[[], int], count: int, timeout: float, pause: float, who: str) -> int:
    """Poll ``committed()`` every ``pause`` seconds until it is at least ``count``; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = committed()
        if current >= count:
            return current
        time.sleep(pause)
    raise AssertionError("%s committed only %d of %d" % (who, committed(), count))


@contextlib.contextmanager
def mounted(target, *options: str, source: str = "tmpfs", fstype=None):
    target = str(target)
    os.makedirs(target, exist_ok=True)
    command = ["mount"] + (["-t", fstype] if fstype else []) + list(options) + [source, target]
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip("cannot mount here (%s): %s" % (" ".join(command), proc.stderr.strip()))
    try:
        yield target
    finally:
        if subprocess.run(["umount", target], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", target], capture_output=True, check=False)
