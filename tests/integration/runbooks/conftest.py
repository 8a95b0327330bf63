"""Runbook round trips: fixtures (the helpers are in rbhelpers.py).

``node_root``
    the node's filesystem root, a 0755 temp dir removed after the test.
``sqlite_writers``
    ``start(path)`` -> a running ``rbhelpers.SqliteWriter``; all stopped at teardown.
``pg_cluster`` (session)
    a private PostgreSQL cluster (tests/integration/postgres/pgcluster.py).
``round_trip``
    ``round_trip(assets, wipe, compare)``: back up, verify deep, wipe, restore in
    place, compare; assets whose type has not landed are left out with a warning.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for extra in (HERE, HERE.parent / "postgres"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import pgcluster
from rbhelpers import SqliteWriter, ready

# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------


@pytest.fixture
def node_root():
    """The node's filesystem root (a temp dir outside pytest's 0700 tree, so service users can enter it)."""
    root = Path(tempfile.mkdtemp(prefix="nodekeep-runbook-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sqlite_writers(request):
    def start(path: Path) -> SqliteWriter:
        writer = SqliteWriter(path)
        request.addfinalizer(writer.stop)
        return writer

    return start


@pytest.fixture(scope="session")
def pg_cluster():
    yield from pgcluster.session_cluster()


@pytest.fixture
def round_trip(node):
    """``round_trip(assets, wipe, compare)``: back up, verify deep, wipe, restore in place, compare.

    Returns ``(manifest, restore_result, skipped)``; assets whose type has not
    landed yet are left out and reported as a warning.
    """

    def run(assets, wipe, compare, before_restore=None):
        kept, skipped = ready(assets)
        if skipped:
            warnings.warn("asset types not in the tree yet, left out: %s" % ", ".join(skipped), stacklevel=2)
        manifest = node.backup(kept)
        report = node.verify(deep=True)
        assert report["ok"], report["problems"]
        wipe(kept)
        if before_restore:
            before_restore()
        result = node.restore("/")
        assert [a["name"] for a in result["artifacts"]] == [a["name"] for a in kept]
        compare(kept, manifest, result)
        return manifest, result, skipped

    return run


def pytest_terminal_summary(terminalreporter):
    """The summary table of the runbook drills (test_runbook_drills.py), when any ran."""
    module = sys.modules.get("test_runbook_drills")
    rows = getattr(module, "ROWS", None)
    if not rows:
        return
    from drilllab import details, table

    terminalreporter.write_sep("=", "runbook drills (playbooks/drill.yml, each system against its runbook's targets)")
    for line in getattr(module, "DETAILS", []):
        terminalreporter.write_line(line)
    terminalreporter.write_line("")
    terminalreporter.write_line(table(rows))
    for line in details(rows):
        terminalreporter.write_line(line)
