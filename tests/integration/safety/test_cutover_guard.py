"""Cutover refuses to swap under an open database: when no service was stopped and no health command
checks the result, or when any process still holds the live data open (/proc), unless the operator
sets allow_unguarded; check mode lists the steps that will really run. The staged copy is never read
through a link planted in staging.

restore_cutover runs for real in its own process; the holder is a real sqlite3 connection in another
process, kept open until the test closes its stdin.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from modrun import module

pytestmark = pytest.mark.timeout(120)

HOLDER = r"""
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("PRAGMA journal_mode=wal")
connection.execute("SELECT count(*) FROM t").fetchone()
print("open", flush=True)
sys.stdin.read()
"""

FILE_HOLDER = r"""
import sys
handle = open(sys.argv[1], "rb")
print("open", flush=True)
sys.stdin.read()
"""


class Holder:
    def __init__(self, script: str, path: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout.readline().strip() == "open"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stdout.close()


def digests(directory: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def site(tmp_path, dbtools):
    live = tmp_path / "srv" / "app"
    live.mkdir(parents=True)
    dbtools.make(live / "app.db", rows=100, journal_mode="wal")
    staging = tmp_path / "staging"
    staged = staging / "srv" / "app" / "app.db"
    staged.parent.mkdir(parents=True)
    dbtools.make(staged, rows=50, journal_mode="delete")
    return live / "app.db", staged, staging


def cutover(path: Path, staged: Path, tmp_path: Path, check_mode: bool = False, **extra) -> dict:
    args = {"path": str(path), "staged": str(staged)}
    args.update(extra)
    return module("restore_cutover", args, tmp_path / "args", check_mode=check_mode)


def test_no_service_and_no_health_command_is_refused(site, tmp_path):
    path, staged, staging = site
    before = digests(path.parent)
    result = cutover(path, staged, tmp_path, staging_root=str(staging))
    assert result.get("failed"), result
    assert "no service is declared" in result["msg"] and "nodekeep_restore_allow_unguarded" in result["msg"]
    assert digests(path.parent) == before and staged.exists()


@pytest.mark.parametrize("held", ["database", "wal"])
def test_a_process_holding_the_live_database_open_is_refused(site, tmp_path, held):
    path, staged, staging = site
    if held == "wal":
        Path(str(path) + "-wal").write_bytes(b"")  # a writer's -wal, held open by it
    holder = Holder(HOLDER, path) if held == "database" else Holder(FILE_HOLDER, Path(str(path) + "-wal"))
    try:
        before = digests(path.parent)
        result = cutover(path, staged, tmp_path, service="app", health_command="true", staging_root=str(staging))
        assert result.get("failed"), result
        assert "still open in PID %d" % holder.proc.pid in result["msg"], result["msg"]
        assert digests(path.parent) == before and staged.exists()
    finally:
        holder.close()


def test_a_process_holding_a_file_inside_a_live_directory_is_refused(tmp_path):
    live = tmp_path / "srv" / "data"
    (live / "sub").mkdir(parents=True)
    (live / "sub" / "log").write_text("live\n")
    staging = tmp_path / "staging"
    staged = staging / "srv" / "data"
    staged.mkdir(parents=True)
    (staged / "restored").write_text("restored\n")
    holder = Holder(FILE_HOLDER, live / "sub" / "log")
    try:
        result = cutover(live, staged, tmp_path, service="app", staging_root=str(staging), sqlite_sidecars=False)
        assert result.get("failed") and "still open in PID %d" % holder.proc.pid in result["msg"], result
        assert (live / "sub" / "log").read_text() == "live\n"
    finally:
        holder.close()


def test_the_override_swaps_and_says_so(site, tmp_path):
    path, staged, staging = site
    holder = Holder(FILE_HOLDER, path)
    try:
        result = cutover(path, staged, tmp_path, allow_unguarded=True, staging_root=str(staging))
    finally:
        holder.close()
    assert not result.get("failed"), result
    assert result["guard"]["overridden"] is True and result["guard"]["open_by"][0]["pid"] == holder.proc.pid
    assert not staged.exists()


def test_check_mode_lists_the_steps_that_will_really_run(site, tmp_path):
    path, staged, staging = site
    with_service = cutover(
        path, staged, tmp_path, check_mode=True, service="app", health_command="true", staging_root=str(staging)
    )
    assert with_service["steps"][0] == "stop the service app"
    assert with_service["steps"][-2:] == ["start the service app", "run the health command"]
    health_only = cutover(path, staged, tmp_path, check_mode=True, health_command="true", staging_root=str(staging))
    assert not [step for step in health_only["steps"] if "service" in step]
    refused = cutover(path, staged, tmp_path, check_mode=True, staging_root=str(staging))
    assert refused.get("failed") and "no service is declared" in refused["msg"]  # check mode refuses too
    assert staged.exists()


def test_a_link_planted_in_staging_is_never_read_through(site, tmp_path, dbtools):
    """staging/srv/app replaced by a link to another directory holding an app.db: never moved into place."""
    path, staged, staging = site
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dbtools.make(elsewhere / "app.db", rows=10, journal_mode="delete")
    os.unlink(staged)
    staged.parent.rmdir()
    os.symlink(elsewhere, staged.parent)
    before = digests(path.parent), digests(elsewhere)
    result = cutover(path, staged, tmp_path, service="app", health_command="true", staging_root=str(staging))
    assert result.get("failed") and "symlink" in result["msg"], result
    assert (digests(path.parent), digests(elsewhere)) == before
