"""RocksDB fixtures: a live RocksDB owned by a separate service process that keeps writing.

``rocks_app``
    a started ``rdbhelpers.App`` (see ``rdbapp.py``): a service process owning ``app.db`` with four
    column families, prefilled and then committing one counter per WriteBatch across all families;
    killed at teardown. Its methods and commands are listed in ``rdbhelpers.py``.
``make_app``
    ``make_app(name, start=True, **args)``: more services (or a closed DB) for one test.
``ldb``
    path of Debian's ``ldb`` (rocksdb-tools 7.8.3); the test is skipped without it.

Plain helpers live in ``rdbhelpers.py`` (``App``, ``APP``, ``assert_consistent``) and
``tests/integration/integration_helpers.py`` (``read_rocksdb``): tests import them from
there, never ``from conftest`` (ambiguous when several suites are collected in one run).
"""

from __future__ import annotations

import shutil

import pytest
from rdbhelpers import App


@pytest.fixture
def rocks_app(tmp_path):
    app = App(tmp_path / "node")
    app.start()
    try:
        yield app
    finally:
        app.kill()


@pytest.fixture
def make_app(tmp_path, request):
    """``make_app(name, start=True, **args)``: more services (or a closed DB) for one test."""

    def make(name: str = "node", start: bool = True, **kwargs) -> App:
        app = App(tmp_path / name, **kwargs)
        request.addfinalizer(app.kill)
        if start:
            app.start()
        return app

    return make


@pytest.fixture(scope="session")
def ldb():
    path = shutil.which("ldb")
    if not path:
        pytest.skip("Debian's rocksdb-tools (ldb) is not installed (requirements/apt-core.txt)")
    return path
