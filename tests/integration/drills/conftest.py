"""Fixtures of the drill, schedule and monitoring tests: a small fleet on this machine.

``fleet`` (session-scoped: one temporary directory and node virtualenv for all these tests)
    a ``Fleet``: an inventory with the node ``drnode`` (group testnet under nodekeep_nodes,
    a live SQLite database written by ``scripts/demo_writer.py`` in its own process), the
    staging host ``drstage`` (group staging) and the production host ``prodhost`` (group
    mainnet, never drilled), all reached with the local connection, each with its own
    repository, signing key and paths under the temporary directory. ``fleet.run(playbook,
    *args, check=True)`` runs a real playbook; ``fleet.prepare()`` runs agent.yml for the
    node and the staging host and takes one backup (once).

The node virtualenv is made by the agent role (offline from ``.cache/wheelhouse`` when it
exists), as in tests/integration/test_playbooks.py; ``NODEKEEP_TEST_NODE_VENV=/path`` reuses
an existing one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
NODE = "drnode"
STAGE = "drstage"
PROD = "prodhost"


def ansible_playbook() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    return shutil.which("ansible-playbook")


class Writer:
    """scripts/demo_writer.py in its own process (never mix its sqlite3 with apsw in one process)."""

    def __init__(self, db: Path, workdir: Path) -> None:
        self.pidfile = workdir / "writer.pid"
        self.log = open(workdir / "writer.log", "w")  # noqa: SIM115  open as long as the writer runs
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo_writer.py"), "--db", str(db), "--pidfile", str(self.pidfile),
             "--initial-mb", "1", "--rate", "20"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while not self.pidfile.exists():
            assert self.proc.poll() is None, "the writer exited: %s" % (workdir / "writer.log").read_text()
            assert time.monotonic() < deadline, "the writer did not get ready"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.log.close()


class Fleet:
    def __init__(self, base: Path, age_key, playbook_bin: str) -> None:
        self.base = base
        self.inventory_dir = base / "inventory"
        self.keys_dir = self.inventory_dir / "keys"
        self.live_db = base / "node" / "chain.db"
        self.live_db.parent.mkdir(parents=True)
        self.repository = base / "repository"
        self.stage_repository = base / "stage-repository"
        self.shipped = base / "shipped"
        self.drills = base / "drills"
        self.results = base / "results"
        self.identity = age_key.identity_path
        self.recipient = age_key.recipient
        self.playbook_bin = playbook_bin
        self.prepared = False
        reuse = os.environ.get("NODEKEEP_TEST_NODE_VENV")
        if reuse:
            self.venv = Path(reuse)
            install = {"nodekeep_agent_install": False}
        else:
            self.venv = base / "venv"
            install = {"nodekeep_agent_install": True, "nodekeep_agent_wheelhouse_dest": str(base / "wheelhouse")}
            if (ROOT / ".cache" / "wheelhouse" / "requirements.txt").exists():
                install["nodekeep_wheelhouse"] = str(ROOT / ".cache" / "wheelhouse")
        local = {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"}
        node_vars = dict(
            local,
            **install,
            nodekeep_venv=str(self.venv),
            nodekeep_repository_path=str(self.repository),
            nodekeep_signing_key_path=str(base / "signing" / "signing_key"),
            nodekeep_age_recipients=[age_key.recipient],
            nodekeep_results_dir=str(self.results),
            nodekeep_service_manager="none",
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
        self.inventory_dir.mkdir(parents=True)
        (self.inventory_dir / "hosts.yml").write_text(json.dumps(inventory, indent=2))
        self.writer = Writer(self.live_db, base)

    def run(self, playbook: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.update(
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_LOCALHOST_WARNING="0",
            ANSIBLE_DEPRECATION_WARNINGS="0",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
        )
        path = Path(playbook) if os.path.isabs(playbook) else ROOT / "playbooks" / playbook
        cmd = [self.playbook_bin, "-i", str(self.inventory_dir / "hosts.yml"), str(path), *args]
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600
        )
        if check and proc.returncode != 0:
            pytest.fail(
                "%s failed (rc %d):\n%s\n%s"
                % (" ".join(cmd), proc.returncode, proc.stdout[-8000:], proc.stderr[-3000:])
            )
        return proc

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


@pytest.fixture(scope="session")
def fleet(tmp_path_factory, age_key):
    playbook_bin = ansible_playbook()
    if playbook_bin is None:
        pytest.skip("ansible-playbook is not installed (run `make setup`)")
    for tool in ("sqlite3", "ssh-keygen"):
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed (run `make setup`)" % tool)
    lab = Fleet(tmp_path_factory.mktemp("fleet"), age_key, playbook_bin)
    yield lab
    lab.close()
