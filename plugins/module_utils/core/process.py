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
import shlex
import signal
import subprocess
import tempfile
import time

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
) -> Completed:
    """Run ``argv`` (no shell) to its end and return what it did.

    A missing program raises ``error`` with ``missing`` as the remedy; a command still running after
    ``timeout`` seconds is killed with its process group and raises; with ``check`` a non-zero exit
    raises ``error`` naming ``what``, the command and the tail of its message (``remedy`` or a hint
    to run it by hand).
    """
    began = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if input_bytes is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
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
            os.killpg(proc.pid, signal.SIGKILL)
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


class Process:
    """A child process streaming to or from us, with its stderr kept in a file."""

    def __init__(
        self,
        argv: list[str],
        what: str,
        stdin=None,
        stdout=None,
        error: type[NodekeepError] = NodekeepError,
        missing: str = "install it or give its absolute path",
    ) -> None:
        self.argv = argv
        self.what = what
        self.error = error
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=self.errors)
        except FileNotFoundError:
            self.errors.close()
            raise command_missing(argv[0], missing, error)
        self.pid = self.proc.pid

    def stderr(self) -> str:
        self.errors.seek(0)
        return output_text(self.errors.read(64 << 10)).strip()

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
        self.errors.close()
