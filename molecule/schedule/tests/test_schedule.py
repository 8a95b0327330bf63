"""Scheduled backups and a restore drill: the node's systemd timer took the epochs (nothing else
did), the runner wrote node_exporter textfile metrics, and playbooks/drill.yml restored the latest
epoch on the staging host and stored a signed report there.

Checked with standard tools only: journalctl, systemctl, ssh-keygen -Y verify, sqlite3, stat.
"""

import json
import re
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import testinfra
from nodekeep_molecule import (
    controller_public_key,
    ephemeral,
    epochs,
    manifest,
    run,
    ssh_keygen_verify,
)

NODE = "schedule-node1"
STAGING_NAME = "schedule-staging"
HOST = testinfra.get_host("podman://%s" % NODE)
STAGING = testinfra.get_host("podman://%s" % STAGING_NAME)
REPOSITORY = "/var/backups/nodekeep"
METRICS = "/var/lib/prometheus/node-exporter/nodekeep_backup.prom"
PERIOD = 30  # nodekeep_schedule_backup_on_calendar *:*:0/30 (molecule.yml), no jitter
DRILLS = "%s/_drills/drill" % REPOSITORY


def complete_epochs() -> list[str]:
    return [e for e in epochs(HOST, NODE) if HOST.file("%s/%s/%s/manifest.json.sig" % (REPOSITORY, NODE, e)).exists]


def timestamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def backup_runs() -> list[float]:
    """When systemd started nodekeep-backup.service (its journal, as Unix times)."""
    out = run(HOST, "journalctl -u nodekeep-backup.service -o short-unix --no-pager")
    return [float(line.split()[0]) for line in out.splitlines() if "Starting nodekeep-backup.service" in line]


def test_the_timer_is_installed_on_the_schedule():
    timer = run(HOST, "systemctl show nodekeep-backup.timer -p TimersCalendar -p UnitFileState -p LastTriggerUSec")
    assert "OnCalendar=*-*-* *:*:00/30" in timer
    assert "UnitFileState=enabled" in timer
    assert not re.search(r"LastTriggerUSec=(n/a)?$", timer, re.MULTILINE), "the timer never fired"
    service = run(HOST, "systemctl cat nodekeep-backup.service")
    assert "module_utils.ops.runner --job backup --node %s" % NODE in service


def test_every_epoch_was_taken_by_the_timer():
    names = complete_epochs()
    assert len(names) >= 2, names
    journal = run(HOST, "journalctl -u nodekeep-backup.service -o cat --no-pager")
    for name in names:
        m = manifest(HOST, NODE, name)
        assert m["labels"]["scheduled"] == "systemd", name
        assert {"mainnet", "nodekeep_nodes"} <= set(m["labels"]["groups"])
        # the runner's own line for this run, in the service's journal
        assert "nodekeep backup of %s: ok, epoch %s" % (NODE, name) in journal, name
        assert 'Good "nodekeep-manifest" signature' in ssh_keygen_verify(HOST, NODE, name, controller_public_key(NODE))
    assert "FAILED" not in journal


def test_the_backups_ran_on_the_schedule():
    runs = backup_runs()
    assert len(runs) >= 2, runs
    # systemd started each run on :00 or :30 (AccuracySec=1s, no RandomizedDelaySec; a loaded machine
    # may start it a little late)
    for started in runs:
        assert started % PERIOD < 5, "a run started at %.3f, not on the 30 s schedule" % started
    # each epoch began shortly after one of those starts, one epoch per run: spaced by the schedule
    starts = sorted(timestamp(manifest(HOST, NODE, name)["started"]) for name in complete_epochs())
    for began in starts:
        assert any(0 <= began - run_at < 25 for run_at in runs), "epoch start %.3f follows no timer run" % began
    for earlier, later in zip(starts, starts[1:]):
        assert later - earlier > PERIOD - 10, "two epochs %.1f s apart: not one per 30 s run" % (later - earlier)


def test_the_runner_wrote_the_metrics():
    prom = HOST.file(METRICS)
    assert prom.exists and prom.mode == 0o644
    text = prom.content_string
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            values[series.split("{")[0]] = float(value)
            assert 'node="%s"' % NODE in series, line
    assert values["nodekeep_job_success"] == 1
    latest = complete_epochs()[-1]
    started = timestamp(manifest(HOST, NODE, latest)["started"])
    assert abs(values["nodekeep_backup_epoch_timestamp_seconds"] - started) < 1
    last_run = values["nodekeep_job_last_run_timestamp_seconds"]
    assert abs(values["nodekeep_job_last_success_timestamp_seconds"] - last_run) < 1
    assert values["nodekeep_backup_size_bytes"] > 0
    # no paths and no key material in what node_exporter publishes
    assert "/var/" not in text and "AGE-SECRET-KEY" not in text and "age1" not in text


def drill_dir() -> str:
    (drill,) = run(STAGING, "ls -1 %s" % DRILLS).split()
    return "%s/%s" % (DRILLS, drill)


def test_the_drill_report_is_signed_and_passed():
    where = drill_dir()
    names = run(STAGING, "ls -1 %s" % where).split()
    assert sorted(names) == ["report.html", "report.json", "report.json.sig"]
    data = STAGING.file(where + "/report.json").content
    signature = STAGING.file(where + "/report.json.sig").content
    public = " ".join(controller_public_key(STAGING_NAME).split()[:2])
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "allowed").write_text("%s %s\n" % (STAGING_NAME, public))
        Path(tmp, "sig").write_bytes(signature)
        proc = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(Path(tmp, "allowed")), "-I", STAGING_NAME, "-n", "nodekeep-drill",
             "-s", str(Path(tmp, "sig"))],
            input=data, capture_output=True, check=False,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(data)
    assert report["ok"] is True and report["problems"] == []
    (node,) = report["nodes"]
    assert node["node"] == NODE and node["ok"] is True
    # the drill restored a scheduled epoch, within the targets
    assert node["epoch"] in complete_epochs()
    assert report["rpo_seconds"] is not None and 0 < report["rpo_seconds"] <= 300
    assert report["rto_seconds"] is not None and 0 < report["rto_seconds"] <= 600
    (asset,) = node["assets"]
    assert asset["name"] == "chain-db" and asset["ok"] is True and asset["health"]["ok"] is True
    # the same report on the controller
    saved = json.loads((ephemeral() / "results" / NODE / ("drill-%s.json" % report["drill_id"])).read_text())
    assert saved == report


def test_the_drill_left_no_plaintext_in_staging():
    assert run(STAGING, "find /srv -name '*.db*' -o -name 'chain.db' | wc -l").strip() == "0"
    # the shipped epoch is the node's, still sealed
    (shipped,) = epochs(STAGING, NODE, repository="/var/backups/nodekeep-shipped")
    assert shipped in complete_epochs()
    assert STAGING.file("/var/backups/nodekeep-shipped/%s/%s/manifest.json.sig" % (NODE, shipped)).exists
