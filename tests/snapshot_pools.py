"""Real ZFS (zfs-fuse) pools and btrfs filesystems on image files, for the snapshot tests (tests/integration/
snapshots and the unit tests of snapshot/ and the zfs/btrfs asset types, whose conftests import the fixtures).

``zfs_pool`` (session)
    ``ZfsPool(name, mountpoint, image)``: a pool on a 512 MiB image file, served by a
    ``zfs-fuse`` daemon this session starts (``zfs-fuse --pidfile F --no-kstat-mount``)
    or shares with another pytest worker (a lock file counts the users; the starter
    stops it last: ``zfs umount -a; zpool export POOL; kill -TERM PID``).
``zfs_dataset``
    a fresh dataset ``POOL/tNNN`` (mounted under the pool's mountpoint) with a few files;
    destroyed after the test with every staging dataset the test received.
``btrfs_fs`` (session)
    ``BtrfsFs(mountpoint, device, image)``: a 512 MiB btrfs image on a loop device,
    mounted; unmounted and detached at the end, also when tests fail.
``btrfs_volume``
    a fresh subvolume ``MNT/tNNN/data`` with a few files (and its snapshot directory
    beside it), deleted after the test.

``sh(*argv, check=True, timeout=120)``
    run a command, output captured; a failure (with ``check``) is an AssertionError naming it.
``write_files(root, seed=0, count=5)``
    a few files, a directory, a symlink and an empty file under ``root``.

Tests are skipped only when the kernel lacks what they need (``/dev/fuse`` and fuse,
btrfs or loop devices); a missing package is a failure naming it.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(argv), done.returncode, done.stderr or done.stdout))
    return done


def write_files(root: Path, seed: int = 0, count: int = 5) -> None:
    """A few files, a directory, a symlink and an empty file: enough to see a difference."""
    (root / "sub" / "deeper").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (root / ("file%02d.bin" % index)).write_bytes(os.urandom(1000 + 500 * index + seed))
    (root / "sub" / "notes.txt").write_text("seed %d\n" % seed)
    (root / "sub" / "deeper" / "empty").write_bytes(b"")
    link = root / "link"
    if not link.is_symlink():
        link.symlink_to("sub/notes.txt")


LOCK_DIR = Path("/tmp")
_COUNTER = itertools.count(1)


def _filesystems() -> str:
    try:
        return Path("/proc/filesystems").read_text()
    except OSError:
        return ""


def _require_command(command: str, package: str) -> None:
    if shutil.which(command) is None:
        pytest.fail("%s is not installed: run scripts/bootstrap.sh (Debian package %s)" % (command, package))


# --------------------------------------------------------------------------
# zfs-fuse
# --------------------------------------------------------------------------


@dataclass
class ZfsPool:
    name: str
    mountpoint: Path
    image: Path


def _daemon_alive() -> bool:
    return sh("zpool", "list", "-H", "-o", "name", check=False, timeout=20).returncode == 0


@pytest.fixture(scope="session")
def zfs_pool(tmp_path_factory):
    if not os.path.exists("/dev/fuse") or "fuse" not in _filesystems():
        pytest.skip("the kernel has no FUSE (/dev/fuse, fuse in /proc/filesystems): zfs-fuse cannot run")
    _require_command("zfs-fuse", "zfs-fuse")
    _require_command("zpool", "zfs-fuse")
    base = tmp_path_factory.mktemp("zfs")
    users = open(LOCK_DIR / "nodekeep-zfs-fuse.users", "a+")  # noqa: SIM115 - closed at teardown
    started_pid = None
    with open(LOCK_DIR / "nodekeep-zfs-fuse.start", "a+") as starting:
        fcntl.flock(starting, fcntl.LOCK_EX)
        fcntl.flock(users, fcntl.LOCK_SH)
        if not _daemon_alive():
            pidfile = base / "zfs-fuse.pid"
            sh("zfs-fuse", "--pidfile", str(pidfile), "--no-kstat-mount")
            deadline = time.monotonic() + 20
            while not _daemon_alive():
                if time.monotonic() > deadline:
                    pytest.fail("zfs-fuse did not come up within 20 s")
                time.sleep(0.2)
            started_pid = int(pidfile.read_text().strip())
    # one pool per fixture instance: a run collecting tests/unit and tests/integration/snapshots sets up both
    name = "nk%d_%d" % (os.getpid(), next(_COUNTER))
    image = base / "pool.img"
    mountpoint = base / "mnt"
    with open(image, "wb") as handle:
        handle.truncate(512 << 20)
    if sh("zpool", "list", name, check=False).returncode == 0:
        sh("zpool", "destroy", "-f", name, check=False)
    try:
        sh("zpool", "create", "-f", "-m", str(mountpoint), name, str(image))
        yield ZfsPool(name, mountpoint, image)
    finally:
        sh("zfs", "umount", "-a", check=False)
        sh("zpool", "export", name, check=False)
        if sh("zpool", "list", name, check=False).returncode == 0:
            sh("zpool", "export", "-f", name, check=False)
        fcntl.flock(users, fcntl.LOCK_UN)
        if started_pid is not None:
            # The starter stops the daemon once no other worker uses it.
            fcntl.flock(users, fcntl.LOCK_EX)
            sh("zfs", "umount", "-a", check=False)
            with contextlib.suppress(ProcessLookupError):
                os.kill(started_pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(started_pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            fcntl.flock(users, fcntl.LOCK_UN)
        users.close()


def zfs_tree_names(root: str) -> list[str]:
    done = sh("zfs", "list", "-H", "-o", "name", "-r", root, check=False)
    return done.stdout.split() if done.returncode == 0 else []


@pytest.fixture
def zfs_dataset(zfs_pool):
    name = "%s/t%03d" % (zfs_pool.name, next(_COUNTER))
    sh("zfs", "create", name)
    mountpoint = Path(sh("zfs", "get", "-H", "-o", "value", "mountpoint", name).stdout.strip())
    write_files(mountpoint)
    try:
        yield name, mountpoint
    finally:
        for dataset in [name, "%s/nodekeep-restore" % zfs_pool.name]:
            for snap in sh(
                "zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset, check=False
            ).stdout.split():
                for tag in ("nodekeep-send", "nodekeep", "test"):
                    sh("zfs", "release", tag, snap, check=False)
            sh("zfs", "destroy", "-r", dataset, check=False)
        for clone in zfs_tree_names(zfs_pool.name):
            if "/nodekeep-view-" in clone:
                sh("zfs", "destroy", clone, check=False)


# --------------------------------------------------------------------------
# btrfs on a loop device
# --------------------------------------------------------------------------


@dataclass
class BtrfsFs:
    mountpoint: Path
    device: str
    image: Path


@pytest.fixture(scope="session")
def btrfs_fs(tmp_path_factory):
    if "btrfs" not in _filesystems() or not os.path.exists("/dev/loop-control"):
        pytest.skip("the kernel has no btrfs or no loop devices (/proc/filesystems, /dev/loop-control)")
    _require_command("mkfs.btrfs", "btrfs-progs")
    _require_command("losetup", "mount")
    base = tmp_path_factory.mktemp("btrfs")
    image = base / "fs.img"
    mountpoint = base / "mnt"
    mountpoint.mkdir()
    sh("truncate", "-s", "512M", str(image))
    sh("mkfs.btrfs", "-q", "-f", str(image))
    device = sh("losetup", "-f", "--show", str(image)).stdout.strip()
    try:
        sh("mount", device, str(mountpoint))
        try:
            yield BtrfsFs(mountpoint, device, image)
        finally:
            for attempt in range(10):
                if sh("umount", str(mountpoint), check=False).returncode == 0:
                    break
                time.sleep(0.5 * (attempt + 1))
            else:
                sh("umount", "-l", str(mountpoint), check=False)
    finally:
        sh("losetup", "-d", device, check=False)


@pytest.fixture
def btrfs_volume(btrfs_fs):
    parent = btrfs_fs.mountpoint / ("t%03d" % next(_COUNTER))
    parent.mkdir()
    volume = parent / "data"
    sh("btrfs", "subvolume", "create", str(volume))
    write_files(volume)
    try:
        yield volume
    finally:
        for directory, dirs, files in os.walk(parent, topdown=False):
            for name in dirs:
                path = os.path.join(directory, name)
                if os.lstat(path).st_ino == 256:
                    sh("btrfs", "property", "set", "-f", "-ts", path, "ro", "false", check=False)
                    sh("btrfs", "subvolume", "delete", path, check=False)
        sh("btrfs", "subvolume", "delete", str(volume), check=False)
        shutil.rmtree(parent, ignore_errors=True)
