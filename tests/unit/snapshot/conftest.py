"""Real snapshot backends for these unit tests: ``zfs_pool`` / ``zfs_dataset`` (zfs-fuse, a pool on an image file)
and ``btrfs_fs`` / ``btrfs_volume`` (btrfs on a loop device), made and torn down by tests/snapshot_pools.py, the
same fixtures as tests/integration/snapshots (each costs about a second per session)."""

from __future__ import annotations

from snapshot_pools import btrfs_fs, btrfs_volume, zfs_dataset, zfs_pool  # noqa: F401 - fixtures
