"""Run the collection's real playbooks against this machine (connection local): the shared part of
tests/integration/test_playbooks.py and the drill tests (tests/integration/drills/conftest.py).

``ROOT``
    the checkout.
``require_playbook_tools(*tools)``
    the path of ``ansible-playbook`` (the one beside this Python, else on ``PATH``); skips the
    test when it or one of ``tools`` is not installed.
``Writer(db, workdir, rate=50)``
    ``scripts/demo_writer.py`` writing the live SQLite database ``db`` in its own process;
    ``stop()``.
``json_callback_collections()``
    this collection and ansible.posix (its json stdout callback, scripts/ansible-collections.sh) as an
    ``ANSIBLE_COLLECTIONS_PATH``; skips the test when ansible.posix cannot be extracted.
``PlaybookLab(base, playbook_bin)``
    a temporary inventory under ``base``: ``inventory_dir``, ``keys_dir``, the node virtualenv
    ``venv`` and ``install_vars``, the agent role's variables that make it (offline from
    ``.cache/wheelhouse`` when it exists; ``NODEKEEP_TEST_NODE_VENV=/path`` reuses an existing
    virtualenv instead); ``write_inventory(inventory)`` and ``run(playbook, *args, check=True)``.
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

ROOT = Path(__file__).resolve().parents[2]


def ansible_playbook() -> str | None:
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    return shutil.which("ansible-playbook")


def require_playbook_tools(*tools: str) -> str:
    playbook_bin = ansible_playbook()
    if playbook_bin is None:
        pytest.skip("ansible-playbook is not installed (run `make setup`)")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip("%s is not installed (run `make setup`)" % tool)
    return playbook_bin


def json_callback_collections() -> str:
    """This collection, and ansible.posix for its json stdout callback (scripts/ansible-collections.sh)."""
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ansible-collections.sh"), "ansible.posix"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip("ansible.posix (the json callback) could not be extracted: %s" % done.stderr[-500:])
    cache = os.environ.get("NODEKEEP_CACHE") or str(ROOT / ".cache")
    return os.pathsep.join([str(ROOT / "build" / "collections"), os.path.join(cache, "collections")])


class Writer:
    """scripts/demo_writer.py as its own process (never mix its sqlite3 with apsw in one process)."""

    def __init__(self, db: Path, workdir: Path, rate: int = 50) -> None:
        self.pidfile = workdir / "writer.pid"
        self.log = open(workdir / "writer.log", "w")  # noqa: SIM115  open as long as the writer runs
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "demo_writer.py"), "--db", str(db), "--pidfile", str(self.pidfile),
             "--initial-mb", "1", "--rate", str(rate)],
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


class PlaybookLab:
    """A temporary inventory under ``base`` and a runner for the collection's playbooks."""

    def __init__(self, base: Path, playbook_bin: str) -> None:
        self.base = base
        self.playbook_bin = playbook_bin
        self.inventory_dir = base / "inventory"
        self.keys_dir = self.inventory_dir / "keys"
        reuse = os.environ.get("NODEKEEP_TEST_NODE_VENV")
        if reuse:
            self.venv = Path(reuse)
            self.install_vars = {"nodekeep_agent_install": False}
        else:
            self.venv = base / "venv"
            self.install_vars = {
                "nodekeep_agent_install": True,
                "nodekeep_agent_wheelhouse_dest": str(base / "wheelhouse"),
            }
            if (ROOT / ".cache" / "wheelhouse" / "requirements.txt").exists():
                self.install_vars["nodekeep_wheelhouse"] = str(ROOT / ".cache" / "wheelhouse")

    def write_inventory(self, inventory: dict) -> None:
        self.inventory_dir.mkdir(parents=True)
        # JSON is YAML: no quoting surprises for the paths and commands in the host variables.
        (self.inventory_dir / "hosts.yml").write_text(json.dumps(inventory, indent=2))

    def run(
        self, playbook: str, *args: str, check: bool = True, inventory: str = "hosts.yml"
    ) -> subprocess.CompletedProcess:
        """``playbook`` (a name in playbooks/ or an absolute path) on the inventory (another file of the
        inventory directory with ``inventory``); a failure fails the test."""
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
        cmd = [self.playbook_bin, "-i", str(self.inventory_dir / inventory), str(path), *args]
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=600
        )
        if check and proc.returncode != 0:
            pytest.fail(
                "%s failed (rc %d):\n%s\n%s"
                % (" ".join(cmd), proc.returncode, proc.stdout[-8000:], proc.stderr[-3000:])
            )
        return proc
