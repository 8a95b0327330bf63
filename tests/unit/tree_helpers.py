"""Directory trees for the unit tests of tar streams, extraction and sealed directories: one tree with
everything a tar must keep, a snapshot of what ``tar -p`` promises, hand-built archives."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile

AS_ROOT = os.geteuid() == 0


def snapshot(root) -> dict:
    """Everything ``tar -p`` promises to keep, per relative path: type, mode, owner, mtime (ns), content, link."""
    root = str(root)
    found = {}
    inodes: dict = {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            info = os.lstat(path)
            entry = {
                "type": stat.S_IFMT(info.st_mode),
                "mode": stat.S_IMODE(info.st_mode),
                "owner": (info.st_uid, info.st_gid),
                "mtime": info.st_mtime_ns,
            }
            if stat.S_ISLNK(info.st_mode):
                entry["link"] = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    entry["sha256"] = hashlib.sha256(handle.read()).hexdigest()
                if info.st_nlink > 1:
                    entry["linked_with"] = inodes.setdefault((info.st_dev, info.st_ino), rel)
            if stat.S_ISLNK(info.st_mode):
                entry.pop("mode")  # symlink modes are meaningless on Linux
            found[rel] = entry
    top = os.lstat(root)
    found["."] = {"mode": stat.S_IMODE(top.st_mode), "owner": (top.st_uid, top.st_gid), "mtime": top.st_mtime_ns}
    return found


def make_tree(root) -> str:
    """A directory with everything a tar must keep: modes, set-id bits, owners, ns mtimes, links, a FIFO."""
    root = str(root)
    os.makedirs(os.path.join(root, "sub", "deep"))
    os.makedirs(os.path.join(root, "empty"))
    with open(os.path.join(root, "a.txt"), "wb") as handle:
        handle.write(b"hello\n")
    with open(os.path.join(root, "sub", "big.bin"), "wb") as handle:
        handle.write(os.urandom(3 << 20))
    with open(os.path.join(root, "secret"), "wb") as handle:
        handle.write(b"s3cret")
    os.chmod(os.path.join(root, "secret"), 0o400)
    os.chmod(os.path.join(root, "sub", "big.bin"), 0o4755)
    os.chmod(os.path.join(root, "sub"), 0o1777)
    os.chmod(os.path.join(root, "empty"), 0o700)
    os.symlink("../a.txt", os.path.join(root, "sub", "link"))
    os.symlink("missing-target", os.path.join(root, "dangling"))
    os.link(os.path.join(root, "a.txt"), os.path.join(root, "hard.txt"))
    os.mkfifo(os.path.join(root, "fifo"))
    if AS_ROOT:
        os.chown(os.path.join(root, "a.txt"), 1234, 4321)
        os.chown(os.path.join(root, "sub", "deep"), 2345, 5432)
    stamp = 981173106_123456789  # 2001-02-03T04:05:06.123456789Z
    for rel in ("sub/deep", "a.txt", "secret", "empty"):
        os.utime(os.path.join(root, rel), ns=(stamp, stamp + 1000))
    os.utime(os.path.join(root, "dangling"), ns=(stamp, stamp + 7), follow_symlinks=False)
    os.utime(root, ns=(stamp, stamp + 9))
    return root


def tar_bytes(members) -> bytes:
    """An archive built by hand: ``members`` is a list of (TarInfo, data or None)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as handle:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            handle.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name, kind=tarfile.REGTYPE, linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = mode
    return info


def fake_db(path, manifest="MANIFEST-000005"):
    """A directory that looks like a RocksDB (CURRENT, MANIFEST, LOCK, an sst, a WAL, two OPTIONS files)."""
    path.mkdir(parents=True)
    (path / "CURRENT").write_text(manifest + "\n")
    (path / manifest).write_bytes(b"\0" * 10)
    (path / "LOCK").write_bytes(b"")
    (path / "000007.sst").write_bytes(b"sst" * 100)
    (path / "000008.log").write_bytes(b"wal")
    (path / "OPTIONS-000009").write_text(
        "[Version]\n  rocksdb_version=7.8.3\n  options_file_version=1.1\n"
        '[TableOptions/BlockBasedTable "default"]\n  format_version=5\n'
    )
    (path / "OPTIONS-000004").write_text("[Version]\n  rocksdb_version=6.0.0\n")
    return path
