"""core/process.py: the one subprocess gateway (no shell; missing, failing and hung commands become the caller's
error with the command's own message; a hung command is killed with its whole process group)."""

from __future__ import annotations

import os
import pwd
import select
import sys

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError, NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.process import PIPE, Process, as_user, run_command


def test_output_input_and_exit_status_come_back():
    done = run_command(
        [sys.executable, "-c", "import sys; d = sys.stdin.read(); print(d.upper())"], "upper", input_bytes=b"abc"
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"ABC\n", b"")
    assert done.seconds >= 0


def test_no_shell_runs():
    done = run_command(["echo", "$HOME; touch x"], "echo")
    assert done.stdout == b"$HOME; touch x\n"


def test_a_missing_program_raises_the_callers_error_with_the_remedy():
    with pytest.raises(CaptureError) as raised:
        run_command(["/nonexistent/nodekeep-tool"], "the tool", error=CaptureError, missing="install nodekeep-tool")
    assert "/nonexistent/nodekeep-tool command was not found" in raised.value.problem
    assert raised.value.remedy == "install nodekeep-tool"


def test_a_failure_names_what_and_carries_the_commands_message():
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('disk on fire'); sys.exit(3)"]
    with pytest.raises(NodekeepError) as raised:
        run_command(argv, "the probe")
    assert raised.value.problem == "the probe failed with exit code 3: disk on fire"
    assert raised.value.details["returncode"] == 3
    assert run_command(argv, "the probe", check=False).returncode == 3


def test_a_hung_command_is_killed_with_its_process_group(tmp_path):
    """The order is checked, not assumed: the grandchild's pid is written (to a temp name, renamed) before the
    shell waits; a kill that came before it (a loaded machine) proves nothing and the run is repeated with a
    doubled timeout, so the assertion on the grandchild is always made on one that was started."""
    pidfile = tmp_path / "child.pid"
    # the shell starts a grandchild that would outlive a plain kill of the shell
    script = "sleep 300 & echo $! > %s.tmp && mv %s.tmp %s; wait" % (pidfile, pidfile, pidfile)
    timeout = 2
    while True:
        with pytest.raises(CaptureError) as raised:
            run_command(
                ["sh", "-c", script], "the hung job", timeout=timeout, error=CaptureError, remedy="raise the timeout"
            )
        assert "did not finish within %d s and was killed" % timeout in raised.value.problem
        assert raised.value.remedy == "raise the timeout"
        if pidfile.exists():
            break
        assert timeout < 64, "the shell never started its grandchild"
        timeout *= 2
    pid = int(pidfile.read_text())
    try:
        watch = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        # readable once the grandchild has exited: only the group kill ends it before its 300 s sleep
        ready = select.poll()
        ready.register(watch, select.POLLIN)
        assert ready.poll(60_000), "the grandchild outlived the group kill"
    finally:
        os.close(watch)


def test_a_streaming_process_reports_its_stderr_on_failure(tmp_path):
    process = Process([sys.executable, "-c", "import sys; sys.stderr.write('bad stream'); sys.exit(2)"], "the send")
    with pytest.raises(NodekeepError) as raised:
        process.finish()
    process.close()
    assert "the send failed (exit status 2): bad stream" in raised.value.problem


def test_a_streaming_process_that_is_missing_names_the_remedy():
    with pytest.raises(NodekeepError) as raised:
        Process(["/nonexistent/zfs"], "zfs send", missing="install zfsutils-linux")
    assert raised.value.remedy == "install zfsutils-linux"
    assert not os.path.exists("/nonexistent")


def test_a_streaming_process_gets_its_env_cwd_and_identity(tmp_path):
    """What the PostgreSQL client tools need: a cleaned environment, cwd and another OS user (as root)."""
    code = "import os; print(os.environ.get('NK_PROBE'), os.getcwd(), os.getuid(), 'PGPASSWORD' in os.environ)"
    identity = as_user("nobody") if os.geteuid() == 0 else None
    python = "/usr/bin/python3" if identity else sys.executable  # nobody cannot read root's virtualenv
    process = Process(
        [python, "-c", code], "the probe", stdout=PIPE, env={"NK_PROBE": "yes"}, cwd="/", identity=identity
    )
    out = process.stdout.read().decode().split()
    process.finish()
    process.close()
    uid = pwd.getpwnam("nobody").pw_uid if identity else os.getuid()
    assert out == ["yes", "/", str(uid), "False"]


def test_run_command_reads_stdin_from_an_open_file(tmp_path):
    source = tmp_path / "in.txt"
    source.write_bytes(b"from a file\n")
    with open(source, "rb") as handle:
        done = run_command(["cat"], "cat", stdin=handle)
    assert done.stdout == b"from a file\n"


def test_kill_takes_the_whole_process_group_of_a_new_session(tmp_path):
    process = Process(["sh", "-c", "sleep 300 & echo $!; wait"], "the job", stdout=PIPE, new_session=True)
    pid = int(process.stdout.readline())  # the grandchild runs: its pid was written
    watch = os.pidfd_open(pid)  # readable once that process has exited: an event, not a race
    try:
        process.kill()
        process.close()
        # Only the group kill ends the grandchild before its 300 s sleep: without it the
        # poll below times out and the test fails.
        ready = select.poll()
        ready.register(watch, select.POLLIN)
        assert ready.poll(60_000), "the grandchild outlived the group kill"
    finally:
        os.close(watch)


def test_as_user_refuses_an_unknown_user():
    with pytest.raises(CaptureError, match="not a user of this host"):
        as_user("nodekeep-no-such-user", CaptureError)
