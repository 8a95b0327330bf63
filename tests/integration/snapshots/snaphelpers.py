"""Helpers of the snapshot tests (imported by conftest.py and the tests), kept in tests/snapshot_pools.py.

``sh(*argv, check=True, timeout=120)``
    run a command, output captured; a failure (with ``check``) is an AssertionError naming it.
``write_files(root, seed=0, count=5)``
    a few files, a directory, a symlink and an empty file under ``root``.
"""

from __future__ import annotations

from snapshot_pools import sh, write_files

__all__ = ["sh", "write_files"]
