"""Fixtures for the ``files`` and ``config`` asset types: a DA-store-like tree and exact tree comparisons.

``make_store(root, count=3000)``
    a content-addressed store like runbook 000's DA store: ``blobs/<h[:2]>/<h[2:4]>/<h>``
    files named by the SHA-256 of their content (random sizes 200 B..12 KiB), an
    ``index/`` of metadata, a symlink, a hard link, odd modes (0600, 0640, 0755,
    setuid, a sticky 1777 directory), another uid/gid and nanosecond mtimes.
``tree_meta(root)``
    ``{relative path: (type, mode, uid, gid, mtime_ns, size, sha256 or link target)}``
    of every entry (the root is ``.``): two trees are the same when these are equal.
``churn(root, fraction=0.01, add=10, delete=10)``
    change the content of a fraction of the blobs, add and delete some: returns counts.
``files_asset(path, name="da", **options)``
    a files asset with a private ``state_dir`` under the test's temporary directory.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
from pathlib import Path

import pytest

OTHER_UID = 1234
OTHER_GID = 2345


def _write(path: Path, data: bytes, mode: int = 0o644, mtime_ns: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def blob_path(root: Path, data: bytes) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    return root / "blobs" / digest[:2] / digest[2:4] / digest


def make_store(root: Path, count: int = 3000, seed: int = 7) -> dict:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    base_ns = 1_760_000_000_123_456_789
    blobs = []
    for number in range(count):
        data = rng.randbytes(rng.randint(200, 12_000))
        path = blob_path(root, data)
        _write(path, data, 0o640 if number % 7 else 0o600, base_ns + number * 1_000_003)
        blobs.append(path)
    _write(root / "index" / "head.json", b'{"height": 12345}\n', 0o644, base_ns + 17)
    _write(root / "index" / "commitments.log", rng.randbytes(50_000), 0o600, base_ns + 19)
    _write(root / "bin" / "da-tool", b"#!/bin/sh\necho da\n", 0o4755, base_ns + 23)
    os.chown(root / "index" / "head.json", OTHER_UID, OTHER_GID)
    os.symlink("index/head.json", root / "HEAD")
    os.symlink("../index", root / "bin" / "index-link")
    os.link(root / "index" / "commitments.log", root / "commitments.hardlink")
    tmp = root / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    _write(tmp / "scratch.tmp", b"transient", 0o644)
    (root / "empty-dir").mkdir()
    _write(root / "empty-file", b"", 0o644, base_ns + 29)
    os.chown(root / "empty-dir", OTHER_UID, OTHER_GID, follow_symlinks=False)
    os.chown(root / "HEAD", OTHER_UID, OTHER_GID, follow_symlinks=False)
    # directory mtimes last (writing into a directory changes its mtime)
    for directory, dirs, _files in os.walk(root):
        for name in dirs:
            os.utime(os.path.join(directory, name), ns=(base_ns + 31, base_ns + 31), follow_symlinks=False)
    return {"blobs": blobs}


def tree_meta(root) -> dict:
    root = str(root)
    result = {}

    def record(path: str, rel: str) -> None:
        info = os.lstat(path)
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            detail = os.readlink(path)
            kind = "symlink"
        elif stat.S_ISDIR(mode):
            detail = None
            kind = "dir"
        else:
            with open(path, "rb") as handle:
                detail = hashlib.sha256(handle.read()).hexdigest()
            kind = "file"
        size = info.st_size if kind == "file" else None
        result[rel] = (kind, stat.S_IMODE(mode), info.st_uid, info.st_gid, info.st_mtime_ns, size, detail)

    record(root, ".")
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            record(path, os.path.relpath(path, root))
    return result


def hardlinked(root, first: str, second: str) -> bool:
    a, b = os.lstat(os.path.join(root, first)), os.lstat(os.path.join(root, second))
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def churn(root: Path, blobs: list, fraction: float = 0.01, add: int = 10, delete: int = 10, seed: int = 11) -> dict:
    """Change ``fraction`` of the blobs in place, add and delete some; a DA store's hour."""
    rng = random.Random(seed)
    pool = [p for p in blobs if p.exists()]
    rng.shuffle(pool)
    changed = pool[: max(1, int(len(pool) * fraction))]
    deleted = pool[len(changed) : len(changed) + delete]
    for path in changed:
        _write(path, rng.randbytes(rng.randint(200, 12_000)), 0o640)
    for path in deleted:
        path.unlink()
    added = []
    for _number in range(add):
        data = rng.randbytes(rng.randint(200, 12_000))
        path = blob_path(root, data)
        _write(path, data, 0o640)
        added.append(path)
    return {"changed": len(changed), "deleted": len(deleted), "added": len(added), "added_paths": added}


@pytest.fixture(scope="session")
def store_tools():
    from types import SimpleNamespace

    return SimpleNamespace(make=make_store, meta=tree_meta, churn=churn, hardlinked=hardlinked, blob_path=blob_path)


@pytest.fixture
def files_asset(tmp_path):
    state = tmp_path / "state"

    def make(path, name: str = "da", **options) -> dict:
        asset = {"name": name, "type": "files", "path": str(path), "state_dir": str(state)}
        asset.update(options)
        return asset

    make.state_dir = state
    return make
