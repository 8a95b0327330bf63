# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one subprocess gateway: every external command the engine runs to completion goes through
``run_command``; a child streaming to or from us (zfs/btrfs send and receive) is a ``Process``.

No shell ever runs: ``argv`` is a list. A command that is missing, fails or hangs becomes the
caller's error class with the command's own message; a hung command is killed with its whole
process group.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import pwd
import shlex
import signal
import subprocess
import tempfile
import time
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

#: how much of a failed command's output an error message carries
OUTPUT_TAIL = 800


class Completed:
    """A finished command: ``returncode``, ``stdout``, ``stderr`` (bytes) and ``seconds`` it took."""

    def __init__(self, argv: list[str], returncode: int, stdout: bytes, stderr: bytes, seconds: float) -> None:
        self.args = argv
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds


def output_text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", "replace")


def tail(data: bytes | None, limit: int = OUTPUT_TAIL) -> str:
    return output_text(data).strip()[-limit:]


def command_missing(command: str, remedy: str, error: type[NodekeepError] = NodekeepError) -> NodekeepError:
    return error("the %s command was not found on this host" % command, remedy)


def run_command(
    argv: list[str],
    what: str,
    timeout: float = 600,
    check: bool = True,
    input_bytes: bytes | None = None,
    error: type[NodekeepError] = NodekeepError,
    missing: str = "install it or give its absolute path",
    remedy: str = "",
    stdin=None,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    identity: dict[str, Any] | None = None,
    new_session: bool = True,
) -> Completed:
    """Run ``argv`` (no shell) to its end and return what it did.

    A missing program raises ``error`` with ``missing`` as the remedy; a command still running after
    ``timeout`` seconds is killed with its process group and raises; with ``check`` a non-zero exit
    raises ``error`` naming ``what``, the command and the tail of its message (``remedy`` or a hint
    to run it by hand). ``stdin`` is an open file the command reads (instead of ``input_bytes``);
    ``env``, ``cwd`` and ``identity`` (``user``/``group``/``extra_groups``, see ``as_user``) are
    given to the child as they are. ``timeout`` None waits as long as the command runs; without
    ``new_session`` it stays in our process group (a Ctrl-C or a signal to the group reaches it too).
    """
    began = time.monotonic()
    if stdin is None:
        stdin = subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=new_session,
            env=env,
            cwd=cwd,
            **(identity or {}),
        )
    except FileNotFoundError:
        raise command_missing(argv[0], missing, error)
    except OSError as exc:
        raise error(
            "cannot run the %s %s: %s" % (what, argv[0], exc.strerror or exc),
            "check the command (installed, executable, absolute path)",
        )
    try:
        out, err = proc.communicate(input=input_bytes, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            if new_session:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        proc.communicate()
        raise error(
            "%s did not finish within %d s and was killed (%s)" % (what, timeout, shlex.join(argv)),
            remedy or "check why it hangs",
        )
    done = Completed(argv, proc.returncode, out, err, round(time.monotonic() - began, 3))
    if check and done.returncode != 0:
        detail = tail(err) or tail(out) or "no output"
        raise error(
            "%s failed with exit code %d: %s" % (what, done.returncode, detail),
            remedy or "see the message of `%s`" % shlex.join(argv[:3]),
            command=argv,
            returncode=done.returncode,
        )
    return done


def as_user(user: str, error: type[NodekeepError] = NodekeepError, remedy: str = "") -> dict[str, Any]:
    """The ``identity`` that runs a child as the OS user ``user`` (with that user's groups); only root can."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise error("%s is not a user of this host" % user, remedy or "name an existing OS user")
    if os.geteuid() not in (0, entry.pw_uid):
        raise error(
            "running a command as %s needs root: this process runs as uid %d" % (user, os.geteuid()),
            remedy or "run the task with become: true",
        )
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid)}


#: ``Process(stdout=PIPE)``: the child's stdout is a pipe we read from (``process.stdout``)
PIPE = subprocess.PIPE
#: ``Process(stdin=DEVNULL)``: the child reads nothing
DEVNULL = subprocess.DEVNULL


class Process:
    """A child process streaming to or from us, with its stderr kept in a file.

    ``stdin``/``stdout`` are open files, ``PIPE`` or ``DEVNULL``; ``stdout`` is then the pipe
    (``self.stdout``). ``errors_dir`` is where the stderr file lives (a private scratch directory);
    ``env``, ``cwd`` and ``identity`` (``as_user``) are given to the child as they are. With
    ``new_session`` the child gets its own process group, killed whole by ``kill``. ``bufsize`` is
    the pipes' buffer (``subprocess.Popen``'s).
    """

    def __init__(
        self,
        argv: list[str],
        what: str,
        stdin=None,
        stdout=None,
        error: type[NodekeepError] = NodekeepError,
        missing: str = "install it or give its absolute path",
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        identity: dict[str, Any] | None = None,
        errors_dir: str | None = None,
        new_session: bool = False,
        bufsize: int = -1,
    ) -> None:
        self.argv = argv
        self.what = what
        self.error = error
        self.new_session = new_session
        self.errors = tempfile.TemporaryFile(dir=errors_dir)  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=self.errors,
                env=env,
                cwd=cwd,
                start_new_session=new_session,
                bufsize=bufsize,
                **(identity or {}),
            )
        except FileNotFoundError:
            self.errors.close()
            raise command_missing(argv[0], missing, error)
        except BaseException:
            self.errors.close()
            raise
        self.pid = self.proc.pid
        self.stdin = self.proc.stdin
        self.stdout = self.proc.stdout

    def stderr(self, limit: int = 64 << 10) -> str:
        self.errors.seek(0)
        return output_text(self.errors.read(limit)).strip()

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None when the child still runs after ``timeout`` seconds (it is then killed)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL the child (its whole process group when it has its own session) and reap it."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.new_session:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                else:
                    self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=30)

    def finish(self, timeout: float = 3600) -> None:
        """Wait for a clean end; a failure raises with the command's message."""
        for pipe in (self.proc.stdin,):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()
        code = self.proc.wait(timeout=timeout)
        if code != 0:
            raise self.error(
                "%s failed (exit status %d): %s" % (self.what, code, self.stderr() or "no message"),
                "nothing was committed; see the message",
                command=self.argv,
            )

    def stop(self) -> None:
        """End the child after a failure elsewhere: close its pipes first so it can clean up, then signal."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(OSError):
                    pipe.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        self.errors.close()
