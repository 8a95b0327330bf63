"""Fixtures of the drill, schedule and monitoring tests: a small fleet on this machine.

``fleet`` (session-scoped: one temporary directory and node virtualenv for all these tests)
    a ``Fleet``: an inventory with the node ``drnode`` (group testnet under nodekeep_nodes,
    a live SQLite database written by ``scripts/demo_writer.py`` in its own process), the
    staging host ``drstage`` (group staging) and the production host ``prodhost`` (group
    mainnet, never drilled), all reached with the local connection, each with its own
    repository, signing key and paths under the temporary directory. ``fleet.run(playbook,
    *args, check=True)`` runs a real playbook; ``fleet.prepare()`` runs agent.yml for the
    node and the staging host and takes one backup (once).

The inventory, the playbook runner, the writer and the node virtualenv come from
tests/integration/playbook_helpers.py, as in tests/integration/test_playbooks.py: the agent role
makes the virtualenv (offline from ``.cache/wheelhouse`` when it exists);
``NODEKEEP_TEST_NODE_VENV=/path`` reuses an existing one.

``Fleet`` and the names ``ROOT``, ``NODE``, ``STAGE``, ``PROD`` live in ``drillhelpers.py``: tests import
them from there, never ``from conftest`` (ambiguous when several suites are collected in one run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/integration: playbook_helpers

from drillhelpers import Fleet
from playbook_helpers import require_playbook_tools


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, age_key):
    playbook_bin = require_playbook_tools("sqlite3", "ssh-keygen")
    lab = Fleet(tmp_path_factory.mktemp("fleet"), age_key, playbook_bin)
    yield lab
    lab.close()
