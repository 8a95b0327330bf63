"""The schedule role and the runner, for real: the role installs the units, args files and the
collection on the node (systemd not started here), then each unit's own ExecStart line is run:

- a backup from its args file, by the agent venv's Python (no Ansible installed in it: the role
  shipped Ansible's module_utils), writes an epoch and Prometheus textfile metrics;
- two overlapping runs: the second one waits, then exits 0 without running anything;
- the metrics hold no secrets and no paths; the args files are 0600 and hold no secret;
- the healthchecks-style ping URL gets start / success / fail, and a dead ping URL never fails a backup;
- the verify and prune jobs run and report per copy.
"""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml
from drillhelpers import NODE, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class PingServer:
    """A tiny local healthchecks: records (method, path, body) of every request."""

    def __init__(self) -> None:
        calls = self.calls = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                length = int(self.headers.get("Content-Length") or 0)
                calls.append((self.command, self.path, self.rfile.read(length).decode() if length else ""))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")

            do_GET = do_POST = _record

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/ping/3f1c2a" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def pings():
    server = PingServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def scheduled(fleet, pings):
    fleet.prepare()
    base = fleet.base / "sched"
    settings = {
        "nodekeep_schedule_systemd": False,
        "nodekeep_schedule_lib": str(base / "lib"),
        "nodekeep_schedule_config_dir": str(base / "etc"),
        "nodekeep_schedule_state_dir": str(base / "state"),
        "nodekeep_schedule_unit_dir": str(base / "units"),
        "nodekeep_metrics_dir": str(base / "textfile"),
        "nodekeep_ping_url": pings.url,
        "nodekeep_retention": {"keep_last": 2},
        "nodekeep_schedule_lock_wait": 1,
    }
    (base / "units").mkdir(parents=True)
    (base / "started").write_text(str(time.time()))
    proc = fleet.run("schedule.yml", "-l", NODE, "-e", json.dumps(settings))
    again = fleet.run("schedule.yml", "-v", "-l", NODE, "-e", json.dumps(settings))  # -v: as AWX records it
    return base, proc, again


def unit(base: Path, name: str) -> str:
    return (base / "units" / name).read_text()


def exec_start(base: Path, job: str, *extra: str) -> tuple[list, dict]:
    text = unit(base, "nodekeep-%s.service" % job)
    argv = shlex.split(re.search(r"^ExecStart=(.*)$", text, re.MULTILINE).group(1))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name, value in re.findall(r"^Environment=(\w+)=(.*)$", text, re.MULTILINE):
        env[name] = value
    return argv + list(extra), env


def exec_start_with_args(base: Path, job: str, step: str, path: Path, **changes) -> tuple[list, dict]:
    """The job's ExecStart with its ``step`` reading ``path``: the job's args file with ``changes``, written 0600."""
    args = json.loads((base / "etc" / ("%s.json" % job)).read_text())
    args["ANSIBLE_MODULE_ARGS"].update(changes)
    path.write_text(json.dumps(args))
    path.chmod(0o600)
    argv, env = exec_start(base, job)
    argv[argv.index("--step") + 1] = "%s=%s" % (step, path)
    return argv, env


def unit_umask() -> None:
    os.umask(0o077)  # UMask=0077 of the service


def run_job(base: Path, job: str, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """The service's ExecStart with its Environment= and UMask= (what systemd runs when the timer fires)."""
    argv, env = exec_start(base, job, *extra)
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, preexec_fn=unit_umask
    )


def wait_until_locked(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Return once another process holds ``path``'s flock (the lock itself is the signal, not a delay)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        if path.exists():
            with open(path, "a") as probe:
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return
                fcntl.flock(probe, fcntl.LOCK_UN)
        time.sleep(0.02)
    raise AssertionError("%s was never locked" % path)


def metrics(base: Path, job: str) -> str:
    return (base / "textfile" / ("nodekeep_%s.prom" % job)).read_text()


def value(text: str, name: str, **labels) -> float:
    wanted = ",".join('%s="%s"' % item for item in sorted(labels.items()))
    match = re.search(r"^%s(?:\{%s\})? (\S+)$" % (re.escape(name), re.escape(wanted)), text, re.MULTILINE)
    assert match, "%s{%s} not in:\n%s" % (name, wanted, text)
    return float(match.group(1))


class TestRole:
    def test_the_units(self, scheduled, fleet):
        base, _proc, again = scheduled
        assert sorted(p.name for p in (base / "units").iterdir()) == [
            "nodekeep-backup.service", "nodekeep-backup.timer", "nodekeep-prune.service", "nodekeep-prune.timer",
            "nodekeep-verify.service", "nodekeep-verify.timer",
        ]  # fmt: skip
        timer = unit(base, "nodekeep-backup.timer")
        for line in ("OnCalendar=*:0/5", "RandomizedDelaySec=30", "Persistent=true", "FixedRandomDelay=true"):
            assert line in timer.splitlines()
        service = unit(base, "nodekeep-backup.service")
        assert "Type=oneshot" in service and "UMask=0077" in service
        argv, env = exec_start(base, "backup")
        assert argv[:3] == [str(fleet.venv / "bin" / "python"), "-m",
                            "ansible_collections.nodekeep.backup.plugins.module_utils.ops.runner"]  # fmt: skip
        assert "--step" in argv and "epoch_backup=%s" % (base / "etc" / "backup.json") in argv
        assert argv[argv.index("--repository-lock-mode") + 1] == "shared"
        prune, _env = exec_start(base, "prune")
        assert prune[prune.index("--repository-lock-mode") + 1] == "exclusive"
        assert env["PYTHONPATH"] == str(base / "lib" / "nodekeep-modules.zip")
        assert "changed=0" in again.stdout.split("PLAY RECAP")[1], "a second run changed something:\n" + again.stdout

    def test_the_node_runs_the_same_module_files(self, scheduled):
        base, _proc, _again = scheduled
        bundle = base / "lib" / "nodekeep-modules.zip"
        started = float((base / "started").read_text())
        assert bundle.stat().st_mode & 0o777 == 0o644
        with zipfile.ZipFile(bundle) as archive:
            names = set(archive.namelist())
            assert archive.read("ansible/__init__.py") == b""
            assert "ansible/module_utils/basic.py" in names
            prefix = "ansible_collections/nodekeep/backup/plugins/"
            for kind in ("modules", "module_utils"):
                for path in sorted((ROOT / "plugins" / kind).glob("*.py")):
                    assert prefix + kind + "/" + path.name in names, path
                    if path.stat().st_mtime < started:  # (not edited in this checkout since the role ran)
                        assert archive.read(prefix + kind + "/" + path.name) == path.read_bytes(), path
            assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]

    def test_args_files_are_private_and_hold_no_secret(self, scheduled, fleet, age_key):
        base, _proc, _again = scheduled
        etc = base / "etc"
        assert etc.stat().st_mode & 0o777 == 0o700
        names = sorted(p.name for p in etc.iterdir())
        assert names == ["backup.json", "backup.ping", "prune.json", "prune.ping", "verify.json", "verify.ping"]
        signing_pem = (fleet.base / "signing" / "signing_key").read_text()
        for path in etc.iterdir():
            assert path.stat().st_mode & 0o777 == 0o600, path
            text = path.read_text()
            assert "AGE-SECRET-KEY" not in text and signing_pem.strip().splitlines()[1] not in text
        args = json.loads((etc / "backup.json").read_text())["ANSIBLE_MODULE_ARGS"]
        assert args["node"] == NODE and args["recipients"] == [age_key.recipient]
        assert json.loads((etc / "verify.json").read_text())["ANSIBLE_MODULE_ARGS"]["subset"] == "daily/7"
        for service in (base / "units").glob("*.service"):
            assert "/ping/" not in service.read_text()  # the ping URL is a capability: file only
        assert (etc / "backup.ping").read_text().strip().endswith("/ping/3f1c2a")

    def test_the_ping_url_is_never_in_the_playbook_output(self, scheduled):
        _base, proc, again = scheduled
        for run in (proc, again):
            assert "/ping/" not in run.stdout + run.stderr  # not even at -v (AWX keeps job events)

    def test_inline_s3_credentials_are_refused(self, fleet, scheduled):
        base, _proc, _again = scheduled
        targets = [{"name": "off", "bucket": "b", "access_key": "AKIA", "secret_key": "s3cr3t-value"}]
        proc = fleet.run(
            "schedule.yml", "-l", NODE, "-e",
            json.dumps({"nodekeep_schedule_systemd": False, "nodekeep_s3_targets": targets,
                        "nodekeep_schedule_config_dir": str(base / "etc-refused")}),
            check=False,
        )  # fmt: skip
        assert proc.returncode != 0 and "inline credentials" in proc.stdout
        assert "s3cr3t-value" not in proc.stdout
        assert not (base / "etc-refused").exists()

    def test_systemd_analyze_verify(self, scheduled):
        base, _proc, _again = scheduled
        tool = shutil.which("systemd-analyze")
        if tool is None:
            pytest.skip("systemd-analyze is not installed (apt-get install systemd; requirements/apt-core.txt)")
        units = [str(p) for p in sorted((base / "units").iterdir())]
        proc = subprocess.run([tool, "verify", "--man=no", *units], capture_output=True, text=True, check=False)
        # verify exits 0 on settings it ignores ("Failed to parse ..., ignoring"): any output is a finding
        assert proc.returncode == 0 and not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr

    def test_systemd_analyze_finds_a_broken_unit(self, scheduled, tmp_path):
        """The check above is not vacuous: a unit with a bad calendar and a bad type is reported."""
        base, _proc, _again = scheduled
        tool = shutil.which("systemd-analyze")
        if tool is None:
            pytest.skip("systemd-analyze is not installed")
        for name in ("nodekeep-backup.service", "nodekeep-backup.timer"):
            text = (
                unit(base, name)
                .replace("OnCalendar=*:0/5", "OnCalendar=every five")
                .replace("Type=oneshot", "Type=once")
            )
            (tmp_path / name).write_text(text)
        broken = [str(tmp_path / "nodekeep-backup.service"), str(tmp_path / "nodekeep-backup.timer")]
        proc = subprocess.run([tool, "verify", "--man=no", *broken], capture_output=True, text=True, check=False)
        output = proc.stdout + proc.stderr
        assert "Failed to parse calendar specification" in output and "Failed to parse service type" in output


class TestRunner:
    def test_a_scheduled_backup_runs_for_real_and_writes_metrics(self, scheduled, fleet, pings):
        base, _proc, _again = scheduled
        before = fleet.epochs()
        del pings.calls[:]
        time.sleep(1.1)
        proc = run_job(base, "backup")
        assert proc.returncode == 0, proc.stderr
        assert re.match(r"nodekeep backup of drnode: ok, epoch \d{8}T\d{6}Z in ", proc.stdout)
        new = sorted(set(fleet.epochs()) - set(before))
        assert len(new) == 1
        manifest = json.loads((fleet.repository / NODE / new[0] / "manifest.json").read_text())
        assert manifest["labels"]["scheduled"] == "systemd"
        text = metrics(base, "backup")
        now = time.time()
        assert (
            now - 120
            < value(text, "nodekeep_backup_last_success_timestamp_seconds", node=NODE, asset="chain-db")
            <= now
        )
        assert value(text, "nodekeep_backup_size_bytes", node=NODE, asset="chain-db") > 0
        assert value(text, "nodekeep_job_success", node=NODE, job="backup") == 1
        assert value(text, "nodekeep_backup_epoch_timestamp_seconds", node=NODE) > now - 120
        assert [(m, p) for m, p, _b in pings.calls] == [("GET", "/ping/3f1c2a/start"), ("POST", "/ping/3f1c2a")]
        assert "ok" in pings.calls[1][2] and new[0] in pings.calls[1][2]

    def test_metrics_hold_no_secret_and_no_path(self, scheduled, fleet, age_key):
        base, _proc, _again = scheduled
        text = metrics(base, "backup")
        for needle in (str(fleet.base), "AGE-SECRET-KEY", age_key.recipient, "signing_key", "/tmp", "identity"):
            assert needle not in text
        for line in text.splitlines():
            if not line.startswith("#"):
                assert re.match(
                    r'^[a-z_]+(\{[a-z]+="[A-Za-z0-9._:-]+"(,[a-z]+="[A-Za-z0-9._:-]+")*\})? [0-9.e+-]+$', line
                ), line
        assert (base / "textfile" / "nodekeep_backup.prom").stat().st_mode & 0o777 == 0o644
        assert not [p for p in (base / "textfile").iterdir() if not p.name.endswith(".prom")]

    def test_an_overlapping_run_waits_then_exits_cleanly_without_running(self, scheduled, fleet):
        base, _proc, _again = scheduled
        before = fleet.epochs()
        with open(base / "state" / "backup.lock", "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)  # a backup is running
            began = time.monotonic()
            proc = run_job(base, "backup")
            waited = time.monotonic() - began
        assert proc.returncode == 0 and "skipped: another run holds backup.lock" in proc.stderr
        assert waited >= 1.0  # --lock-wait 1
        assert fleet.epochs() == before
        skipped = metrics(base, "backup_skipped")
        assert value(skipped, "nodekeep_job_last_skipped_timestamp_seconds", node=NODE, job="backup") > time.time() - 60

    def test_two_real_runs_at_once_never_overlap(self, scheduled, fleet):
        """The overlap is made explicit with the locks, never with a sleep: the test holds the
        repository lock, so the first run holds backup.lock and waits; the second starts only then."""
        base, _proc, _again = scheduled
        before = fleet.epochs()
        argv, env = exec_start(base, "backup")
        first_argv = list(argv)
        first_argv[first_argv.index("--lock-wait") + 1] = "300"
        argv[argv.index("--lock-wait") + 1] = "0"
        with open(base / "state" / "repository.lock", "a") as repository:
            fcntl.flock(repository, fcntl.LOCK_EX)  # an exclusive run (a prune) holds the repository
            first = subprocess.Popen(first_argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            wait_until_locked(base / "state" / "backup.lock", first)
            second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
            assert first.poll() is None  # still waiting for the repository: the two runs overlapped
        _out, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
        assert second.returncode == 0 and "skipped: another run holds backup.lock" in second.stderr
        assert len(set(fleet.epochs()) - set(before)) == 1

    def test_a_prune_waits_for_a_running_backup(self, scheduled, fleet):
        base, _proc, _again = scheduled
        before = fleet.epochs()
        with open(base / "state" / "repository.lock", "a") as held:
            fcntl.flock(held, fcntl.LOCK_SH)  # a backup or verify holds the repository
            proc = run_job(base, "prune")
        assert proc.returncode == 0 and "skipped: another run holds repository.lock" in proc.stderr
        assert fleet.epochs() == before

    def test_a_failed_backup_pings_fail_and_keeps_the_last_success(self, scheduled, fleet, pings):
        base, _proc, _again = scheduled
        text = metrics(base, "backup")
        last = value(text, "nodekeep_backup_last_success_timestamp_seconds", node=NODE, asset="chain-db")
        bad = base / "etc" / "backup-bad.json"
        argv, env = exec_start_with_args(base, "backup", "epoch_backup", bad, recipients=["age1notavalidrecipient"])
        del pings.calls[:]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        bad.unlink()
        assert proc.returncode == 1 and "FAILED (epoch_backup failed)" in proc.stdout
        text = metrics(base, "backup")
        assert value(text, "nodekeep_job_success", node=NODE, job="backup") == 0
        assert value(text, "nodekeep_backup_last_success_timestamp_seconds", node=NODE, asset="chain-db") == last
        assert [p for _m, p, _b in pings.calls] == ["/ping/3f1c2a/start", "/ping/3f1c2a/fail"]
        assert "age1notavalidrecipient" not in pings.calls[1][2]

    def test_a_dead_ping_url_never_fails_the_backup(self, scheduled, fleet, tmp_path):
        base, _proc, _again = scheduled
        dead = tmp_path / "dead.ping"
        dead.write_text("http://127.0.0.1:9/ping/x\n")
        time.sleep(1.1)
        proc = run_job(base, "backup", "--ping-url-file", str(dead))
        assert proc.returncode == 0, proc.stderr
        assert "ping failed" in proc.stderr and "127.0.0.1:9" not in proc.stderr

    def test_verify_and_prune_jobs(self, scheduled, fleet):
        base, _proc, _again = scheduled
        verify = run_job(base, "verify")
        assert verify.returncode == 0, verify.stderr
        text = metrics(base, "verify")
        assert value(text, "nodekeep_verify_success", node=NODE, copy="local") == 1
        assert value(text, "nodekeep_verify_checked", node=NODE, copy="local") >= 0
        assert len(fleet.epochs()) > 2
        prune = run_job(base, "prune")
        assert prune.returncode == 0, prune.stderr
        assert len(fleet.epochs()) == 2
        text = metrics(base, "prune")
        assert value(text, "nodekeep_prune_success", node=NODE, copy="local") == 1
        assert value(text, "nodekeep_prune_removed", node=NODE, copy="local") >= 1

    def test_a_full_verify_reports_each_asset_and_a_damaged_artifact_fails(self, scheduled, fleet, pings, tmp_path):
        base, _proc, _again = scheduled
        full = tmp_path / "verify-full.json"
        # subset 1/1: the whole cycle in one run, every artifact
        argv, env = exec_start_with_args(base, "verify", "integrity_check", full, subset="1/1")
        del pings.calls[:]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        text = metrics(base, "verify")
        assert value(text, "nodekeep_verify_asset_success", node=NODE, copy="local", asset="chain-db") == 1
        last = "nodekeep_verify_asset_last_success_timestamp_seconds"
        good = value(text, last, node=NODE, copy="local", asset="chain-db")
        assert value(text, "nodekeep_verify_checked", node=NODE, copy="local") == len(fleet.epochs())
        assert [p for _m, p, _b in pings.calls] == ["/ping/3f1c2a/start", "/ping/3f1c2a"]

        epoch = fleet.epochs()[-1]
        artifact = next(p for p in (fleet.repository / NODE / epoch).iterdir() if p.name.startswith("chain-db"))
        saved = artifact.read_bytes()
        artifact.chmod(0o600)
        artifact.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
        del pings.calls[:]
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        finally:
            artifact.write_bytes(saved)
        assert proc.returncode == 1 and "FAILED (integrity_check failed)" in proc.stdout
        assert "SHA-256" in proc.stderr
        text = metrics(base, "verify")
        assert value(text, "nodekeep_verify_asset_success", node=NODE, copy="local", asset="chain-db") == 0
        assert value(text, "nodekeep_verify_success", node=NODE, copy="local") == 0
        assert value(text, "nodekeep_verify_problems", node=NODE, copy="local") == 1
        assert value(text, last, node=NODE, copy="local", asset="chain-db") == good
        assert [p for _m, p, _b in pings.calls] == ["/ping/3f1c2a/start", "/ping/3f1c2a/fail"]

    def test_the_alert_rules_name_only_metrics_the_runner_writes(self, scheduled):
        from ansible_collections.nodekeep.backup.plugins.module_utils.ops.runner import build_metrics

        base, _proc, _again = scheduled
        text = "".join(p.read_text() for p in (base / "textfile").glob("*.prom"))
        written = set(re.findall(r"^(nodekeep_\w+)[{ ]", text, re.MULTILINE))
        # the families of an S3 copy (this fleet has no S3 target), from the same code
        facts = {"assets": {}, "copies": {"offsite": {"ok": True, "bytes": 1, "seconds": 1.0}}, "verified": {}}
        state = {"last_success": {"copy:offsite": 1.0}}
        written |= set(build_metrics("backup", NODE, True, 1.0, 1.0, facts, state).names())
        for source in ("drill.py", "drill_store.py"):  # the drill's metrics are written by its report store
            written |= set(re.findall(r'"(nodekeep_drill_\w+)"', (ROOT / "plugins/module_utils/ops" / source).read_text()))
        rules = yaml.safe_load((ROOT / "docs" / "nodekeep-alerts.yml").read_text())["groups"][0]["rules"]
        assert "NodekeepBackupStale" in {r["alert"] for r in rules}
        for rule in rules:
            for name in re.findall(r"nodekeep_\w+", rule["expr"]):
                assert name in written, (rule["alert"], name, sorted(written))

    def test_an_args_file_others_can_write_is_refused(self, scheduled, fleet, pings, tmp_path):
        base, _proc, _again = scheduled
        before = fleet.epochs()
        loose = tmp_path / "backup.json"
        loose.write_text((base / "etc" / "backup.json").read_text())
        loose.chmod(0o666)
        argv, env = exec_start(base, "backup")
        argv[argv.index("--step") + 1] = "epoch_backup=%s" % loose
        del pings.calls[:]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 1 and "writable by others" in proc.stderr and "chmod 0600" in proc.stderr
        assert fleet.epochs() == before
        assert [p for _m, p, _b in pings.calls] == ["/ping/3f1c2a/start", "/ping/3f1c2a/fail"]
