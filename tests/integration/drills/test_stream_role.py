"""The replication service as the schedule role installs it (playbooks/stream.yml), for real: the role writes
the unit, the configuration and the module bundle (systemd not started here); the unit's own ExecStart line
then runs the engine from the bundle under the node's writer, and restore.yml restores to a point in time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from drillhelpers import NODE, ROOT, STAGE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def streamed(fleet):
    fleet.prepare()
    base = fleet.base / "stream"
    settings = {
        "nodekeep_schedule_systemd": False,
        "nodekeep_schedule_lib": str(base / "lib"),
        "nodekeep_schedule_config_dir": str(base / "etc"),
        "nodekeep_schedule_unit_dir": str(base / "units"),
        "nodekeep_stream_state_dir": str(base / "state"),
        "nodekeep_metrics_dir": str(base / "textfile"),
        "nodekeep_stream_assets": ["chain-db"],
        "nodekeep_stream_interval": 0.2,
    }
    (base / "units").mkdir(parents=True)
    first = fleet.run("stream.yml", "-l", NODE, "-e", json.dumps(settings))
    again = fleet.run("stream.yml", "-l", NODE, "-e", json.dumps(settings))
    return base, first, again


def service_command(base: Path, instance: str) -> tuple[list, dict]:
    text = (base / "units" / "nodekeep-stream@.service").read_text().replace("%i", instance)
    argv = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.MULTILINE).group(1))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name, value in re.findall(r"^Environment=(\w+)=(.*)$", text, re.MULTILINE):
        env[name] = value
    return argv, env


def test_the_unit_and_a_private_configuration(streamed, age_key):
    base, _first, again = streamed
    assert "changed=0" in again.stdout
    unit = (base / "units" / "nodekeep-stream@.service").read_text()
    assert "Restart=always" in unit and "plugins.module_utils.ops.stream --config" in unit
    config = base / "etc" / "stream-chain-db.json"
    assert config.stat().st_mode & 0o777 == 0o600
    text = config.read_text()
    assert "AGE-SECRET-KEY" not in text and "PRIVATE KEY" not in text and age_key.identity not in text
    assert json.loads(text)["asset"]["name"] == "chain-db"


def test_the_unit_runs_the_engine_from_the_bundle_and_restore_yml_reaches_a_point(streamed, fleet, tmp_path):
    base, _first, _again = streamed
    argv, env = service_command(base, "chain-db")
    assert env["PYTHONPATH"].endswith("nodekeep-modules.zip")
    log = open(tmp_path / "service.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        status = base / "state" / "stream-chain-db.status.json"
        deadline = time.monotonic() + 120
        while not (status.exists() and json.loads(status.read_text())["seq"] >= 3):
            assert proc.poll() is None, (tmp_path / "service.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "service.log").read_text()
            time.sleep(0.05)
        metrics = (base / "textfile" / "nodekeep_stream_chain-db.prom").read_text()
        assert 'nodekeep_stream_up{asset="chain-db",node="%s"} 1' % NODE in metrics
        # The alert rules name only metrics the service writes (the S3 backlog ones only with a target).
        written = set(re.findall(r"^(nodekeep_\w+)[{ ]", metrics, re.MULTILINE))
        source = (ROOT / "plugins/module_utils/ops/_stream_report.py").read_text()
        written |= set(re.findall(r'"(nodekeep_stream_(?:backlog_\w+|copy_failing))"', source))
        groups = yaml.safe_load((ROOT / "docs" / "nodekeep-alerts.yml").read_text())["groups"]
        rules = next(g for g in groups if g["name"] == "nodekeep-stream")["rules"]
        assert {"NodekeepStreamLag", "NodekeepStreamDown", "NodekeepStreamBacklog"} <= {r["alert"] for r in rules}
        for rule in rules:
            for name in re.findall(r"nodekeep_\w+", rule["expr"]):
                assert name in written, (rule["alert"], name, sorted(written))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        log.close()
    assert proc.returncode == 0, (tmp_path / "service.log").read_text()
    out = tmp_path / "pitr" / "chain.db"
    run = fleet.run(
        "restore.yml", "-l", NODE, "-e", json.dumps({
            "nodekeep_restore_to": str(tmp_path / "staging"), "nodekeep_restore_assets": ["chain-db"],
            "nodekeep_restore_point_in_time": "latest", "nodekeep_restore_output": str(out),
            "nodekeep_age_identity_file": str(fleet.identity),
        }),
    )  # fmt: skip
    assert re.search(r"chain-db restored to %s as of the commit\s+seen at 20\d\d-" % re.escape(str(out)), run.stdout)
    assert "integrity ok" in run.stdout
    check = subprocess.run(["sqlite3", str(out), "PRAGMA integrity_check"], capture_output=True, text=True, check=True)
    assert check.stdout.strip() == "ok"
    # The same point in time restored on the node and on the staging host (nodekeep_restore_host: the chain's base
    # epoch is picked on the node and shipped with its signed segments) gives the same database and commit time.
    records = sorted(fleet.repository.glob("%s/*/chain-db.wal.*.json" % NODE))
    records = [r for r in records if Path(str(r) + ".sig").exists()]
    assert len(records) >= 3
    source = json.loads(records[len(records) // 2].read_text())["artifacts"][0]["source"]
    point = source["commits"][-1][1]  # a commit time inside the chain, not its end
    reached = {}
    for where, extra in (("node", {}), ("stage", {"nodekeep_restore_host": STAGE})):
        target = tmp_path / where / "chain-at.db"
        settings = {
            "nodekeep_restore_to": str(tmp_path / where / "staging"), "nodekeep_restore_assets": ["chain-db"],
            "nodekeep_restore_point_in_time": point, "nodekeep_restore_output": str(target),
            "nodekeep_age_identity_file": str(fleet.identity),
        }  # fmt: skip
        run = fleet.run("restore.yml", "-l", NODE, "-e", json.dumps(dict(settings, **extra)))
        found = re.search(r"as of the commit\s+seen at (\S+) \(chain (\S+),", run.stdout)
        assert found, run.stdout
        assert "integrity ok" in run.stdout
        # The summary says what was staged: the asset, where, the commit reached, bytes and seconds (it said
        # "(0 asset(s), 0 s)" after a point-in-time restore).
        summary = re.search(
            r"chain-db restored into (\S+):(\S+) as of the commit seen at (\S+) \(chain \S+, (\d+) commit\(s\) applied;"
            r" ([\d.]+ \w*B), ([\d.]+ \w+), integrity ok\); live data untouched",
            run.stdout,
        )
        assert summary, run.stdout
        assert summary.group(2) == str(target) and summary.group(3) == found.group(1)
        assert summary.group(1) == (STAGE if extra else NODE)
        assert "(0 asset(s)" not in run.stdout and "staged:" not in run.stdout
        dump = subprocess.run(["sqlite3", str(target), ".dump"], capture_output=True, text=True, check=True).stdout
        reached[where] = (found.group(1), found.group(2), dump)
        # The saved result names what was asked and the exact commit reached.
        saved = max((fleet.results / NODE).glob("restore-*.json"), key=lambda p: p.stat().st_mtime)
        assert json.loads(saved.read_text())["point_in_time"]["restored_commit_time"] == found.group(1)
    assert reached["node"] == reached["stage"]
    assert reached["node"][0] == point  # the exact commit asked for: it is a commit time
    shipped = fleet.shipped / NODE / reached["stage"][1]
    assert sorted(p.name for p in shipped.glob("chain-db.wal.*.json.sig"))
