# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller side of live progress (docs/progress.md).

The action plugins of the long modules (epoch_backup, integrity_check, epoch_restore,
epoch_copy) start the module in the background (ansible's own async wrapper), give it a
status file in the task's private remote temporary directory (``progress_file``), and
until the module ends read that file every ``nodekeep_progress_interval`` seconds,
printing one line per asset and phase when it changed, for example::

    nodekeep: node1 backup [1/2] app-db seal: 1.20 GiB of 4.00 GiB (30.0%), 85.0 MiB/s, ETA 34.0 s

The lines go to the display's stderr: a terminal and AWX (which records the whole output
of the run) show them, while stdout stays the stdout callback's alone, so ``-o json`` /
``ANSIBLE_STDOUT_CALLBACK=json`` output still parses. The task's result is the module's
own, exactly as without the plugin (one failure is printed once, by the callback).

Each look is one shell command reading the async job file and the status file (no module payload,
no Python started on the node); ``async_status`` runs once, when the job file no longer says
"started" (finished, failed, missing), and reads the result exactly as Ansible's own polling does.

With ``become`` to an unprivileged user other than the connection user, the status file goes into a
directory the become user makes (0700, its own), since it cannot write into the connection user's
temporary directory; the looks run with become and read it there.

The module runs as it always did (no async) in check mode, under a task's own ``async``,
on connections with their own async (Windows), with ``nodekeep_progress_interval: 0``, or
when the task sets ``progress_file`` itself.
"""

from __future__ import annotations

import json
import time

from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible.utils.display import Display

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import progress_line

display = Display()

#: seconds between two looks at the status (task variable nodekeep_progress_interval)
DEFAULT_INTERVAL = 5.0
#: seconds before the first look again; each later pause doubles up to the interval
FIRST_LOOK = 0.25
#: the longest a module may run in the background before the async wrapper stops it (nodekeep_progress_timeout)
DEFAULT_TIMEOUT = 7 * 86400
#: what the async wrapper and async_status add to a module's result
#: the line between the job file and the status file in the output of one look
LOOK_SEPARATOR = "--nodekeep-progress--"
_ASYNC_KEYS = ("ansible_job_id", "started", "finished", "results_file", "_ansible_suppress_tmpdir_delete")


class ProgressAction(NormalAction):
    """An action plugin that runs its module in the background and prints its live status."""

    def _setting(self, task_vars, name: str, default: float) -> float:
        value = task_vars.get(name, default)
        try:
            value = self._templar.template(value)
        except Exception:  # noqa: BLE001 - a value that does not template is the default
            return default
        try:
            return float(value)
        except (TypeError, ValueError):
            display.warning("%s=%r is not a number; using %s" % (name, value, default))
            return default

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        interval = self._setting(task_vars, "nodekeep_progress_interval", DEFAULT_INTERVAL)
        if (
            interval <= 0
            or self._task.async_val
            or self._play_context.check_mode
            or self._connection.has_native_async
            or self._task.args.get("progress_file")
        ):
            return super().run(tmp, task_vars)
        result = super(NormalAction, self).run(tmp, task_vars)  # ActionBase.run: validation only
        if self._connection._shell.tmpdir is None:
            self._make_tmp_path()
        status_dir = self._private_status_dir() if self._is_become_unprivileged() else None
        folder = status_dir or self._connection._shell.tmpdir
        status = self._connection._shell.join_path(folder, "nodekeep-progress.json")
        args = dict(self._task.args, progress_file=status)
        args.setdefault("progress_every_seconds", min(2.0, interval))
        timeout = int(self._setting(task_vars, "nodekeep_progress_timeout", DEFAULT_TIMEOUT))
        self._task.async_val = timeout
        try:
            started = self._execute_module(
                module_name=self._task.resolved_action, module_args=args, task_vars=task_vars, wrap_async=True
            )
        finally:
            # Never let the executor poll this task itself: this plugin returns the finished result.
            self._task.async_val = 0
        if started.get("failed") or "ansible_job_id" not in started:
            self._remove_status_dir(status_dir)
            result.update(started)
            return result
        shown: dict = {"done": set()}
        try:
            final = self._follow(started["ansible_job_id"], status, interval, task_vars, shown)
        finally:
            self._remove_status_dir(status_dir)
        # Each phase's end, from the result (deterministic: a run shorter than one look still shows it).
        for snap in final.get("progress") or []:
            if isinstance(snap, dict) and (snap.get("asset"), snap.get("phase")) not in shown["done"]:
                display.display("nodekeep: %s" % progress_line(snap), stderr=True)
        for key in _ASYNC_KEYS:
            final.pop(key, None)
        result.update(final)
        return result

    def _private_status_dir(self) -> str | None:
        """With ``become`` to an unprivileged user other than the connection user, the module (the become user)
        cannot write into the connection user's temporary directory: the status file goes into a directory the
        become user makes for it (0700, its own, in its TMPDIR), which the looks (run with become too) read.
        The status file holds no secret (asset names, byte counts, rates). None when it cannot be made: the run
        goes on without lines, as before."""
        made = self._low_level_execute_command(
            'umask 077 && mktemp -d "${TMPDIR:-/tmp}/nodekeep-progress.XXXXXXXX"', sudoable=True
        )
        path = (made.get("stdout") or "").strip()
        return path if made.get("rc") == 0 and path.startswith("/") and "\n" not in path else None

    def _remove_status_dir(self, path: str | None) -> None:
        if path:
            self._low_level_execute_command("rm -rf %s" % self._connection._shell.quote(path), sudoable=True)

    def _follow(self, jid: str, status: str, interval: float, task_vars, shown: dict) -> dict:
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))
        args = {"jid": jid, "_async_dir": async_dir}
        job = self._connection._shell.join_path(async_dir, jid)
        # Short runs (most small assets) end within the first look or two: look again soon, then
        # back off to the interval, so a one-second backup does not wait a whole interval.
        pause = min(FIRST_LOOK, interval)
        try:
            while True:
                if not self._running(job, status, shown):
                    # Finished, or anything but the async wrapper's "started" record: async_status reads
                    # the result (or the failure) exactly as it always did.
                    polled = self._execute_module(
                        module_name="ansible.legacy.async_status", module_args=args, task_vars=task_vars
                    )
                    if (
                        polled.get("finished")
                        or "started" not in polled
                        or polled.get("failed")
                        and not polled.get("started")
                    ):
                        return polled
                time.sleep(pause)
                pause = min(pause * 2, interval)
        finally:
            # The job file, then the task's temporary directory: shell commands, no module run on the node.
            self._low_level_execute_command(self._connection._shell.remove(job), sudoable=True)
            self._remove_tmp_path(self._connection._shell.tmpdir)

    def _running(self, job: str, status: str, shown: dict) -> bool:
        """One look with one shell command (no module payload, no Python on the node): True while the job
        file holds the async wrapper's ``started`` record; the status file's line is printed meanwhile."""
        quote = self._connection._shell.quote
        done = self._low_level_execute_command(
            "cat %s; echo; echo %s; cat %s" % (quote(job), LOOK_SEPARATOR, quote(status)), sudoable=True
        )
        job_text, separator, status_text = (done.get("stdout") or "").partition("\n%s\n" % LOOK_SEPARATOR)
        try:
            record = json.loads(job_text) if separator else None
        except ValueError:
            record = None
        # async_status's own rule: a record with "started" and without a true "finished" is running
        if not (isinstance(record, dict) and "started" in record and not record.get("finished")):
            return False
        self._show(status_text, shown)
        return True

    def _show(self, text: str, shown: dict) -> None:
        """Print the status ``text`` when it changed (a phase that moved no byte since the last look is not repeated)."""
        try:
            snap = json.loads(text or "")
        except ValueError:
            return  # not written yet: no line, the run goes on
        if not isinstance(snap, dict):
            return
        key = (snap.get("asset"), snap.get("phase"), snap.get("done_bytes"), snap.get("state"))
        if shown.get("last") == key:
            return
        shown["last"] = key
        if snap.get("state") == "done":
            shown["done"].add((snap.get("asset"), snap.get("phase")))
        display.display("nodekeep: %s" % progress_line(snap), stderr=True)
