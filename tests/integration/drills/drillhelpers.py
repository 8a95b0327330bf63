"""Helpers of the drill, schedule and monitoring tests (imported by conftest.py and the tests: never
``from conftest import``, which is ambiguous when several suites are collected in one pytest run).

``Fleet(base, age_key, playbook_bin)``
    the small fleet behind the ``fleet`` fixture (see conftest.py): the node ``NODE``, the staging
    host ``STAGE`` and the production host ``PROD``, each with its own repository, signing key and
    paths under ``base``.
``ROOT``
    the checkout.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/integration: playbook_helpers

from playbook_helpers import PlaybookLab, Writer

ROOT = Path(__file__).resolve().parents[3]
NODE = "drnode"
STAGE = "drstage"
PROD = "prodhost"
#: the node's runbook (nodekeep_runbook), named at the top of its drill reports
RUNBOOK = {"name": "runbook 000", "title": "Backups and restores: DB, keys, seeds", "rpo": "mainnet nodes 5 min",
           "rto": "mainnet nodes 30 min"}  # fmt: skip


class Fleet(PlaybookLab):
    def __init__(self, base: Path, age_key, playbook_bin: str) -> None:
        super().__init__(base, playbook_bin)
        self.live_db = base / "node" / "chain.db"
        self.live_db.parent.mkdir(parents=True)
        self.repository = base / "repository"
        self.stage_repository = base / "stage-repository"
        self.shipped = base / "shipped"
        self.drills = base / "drills"
        self.results = base / "results"
        self.identity = age_key.identity_path
        self.recipient = age_key.recipient
        self.prepared = False
        local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
        node_vars = dict(
            local,
            **self.install_vars,
            nodekeep_venv=str(self.venv),
            nodekeep_repository_path=str(self.repository),
            nodekeep_signing_key_path=str(base / "signing" / "signing_key"),
            nodekeep_age_recipients=[age_key.recipient],
            nodekeep_results_dir=str(self.results),
            nodekeep_service_manager="none",
            nodekeep_runbook=RUNBOOK,
            nodekeep_assets=[{
                "name": "chain-db", "type": "sqlite", "path": str(self.live_db), "pages_per_step": 16,
                "health_command": "test \"$(sqlite3 \"$NODEKEEP_PATH\" 'PRAGMA quick_check;')\" = ok"
                                  " && test \"$NODEKEEP_DRILL\" = 1",
            }],
        )  # fmt: skip
        stage_vars = dict(
            local,
            nodekeep_agent_install=False,
            nodekeep_venv=str(self.venv),
            nodekeep_repository_path=str(self.stage_repository),
            nodekeep_signing_key_path=str(base / "stage-signing" / "signing_key"),
            nodekeep_restore_host_repository=str(self.shipped),
            nodekeep_age_identity_file=str(self.identity),
        )
        prod_vars = dict(local, nodekeep_agent_install=False, nodekeep_venv=str(self.venv))
        inventory = {
            "all": {
                "vars": {"nodekeep_drill_staging_root": str(self.drills)},
                "children": {
                    "nodekeep_nodes": {"children": {"testnet": {"hosts": {NODE: node_vars}}}},
                    "staging": {"hosts": {STAGE: stage_vars}},
                    "mainnet": {"hosts": {PROD: prod_vars}},
                },
            }
        }
        self.write_inventory(inventory)
        self.writer = Writer(self.live_db, base, rate=20)

    def prepare(self) -> None:
        """Agent on the node and the staging host, and one backup of the live node."""
        if self.prepared:
            return
        self.run("agent.yml")
        self.run("agent.yml", "-e", "nodekeep_hosts=staging")
        self.run("backup.yml", "--skip-tags", "agent")
        self.prepared = True

    def epochs(self) -> list:
        node_dir = self.repository / NODE
        return sorted(p.name for p in node_dir.iterdir() if p.is_dir() and p.name[:1].isdigit())

    def drill_dirs(self, series: str = "drill") -> list:
        base = self.stage_repository / "_drills" / series
        return sorted(p for p in base.iterdir() if p.is_dir()) if base.exists() else []

    def close(self) -> None:
        self.writer.stop()
