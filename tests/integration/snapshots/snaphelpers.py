"""Helpers of the snapshot tests (imported by conftest.py and the tests).

``sh(*argv, check=True, timeout=120)``
    run a command, output captured; a failure (with ``check``) is an AssertionError naming it.
``write_files(root, seed=0, count=5)``
    a few files, a directory, a symlink and an empty file under ``root``.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


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
