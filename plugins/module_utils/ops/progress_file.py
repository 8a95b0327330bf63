# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live status file of a long module run (docs/progress.md).

The modules that move a lot of bytes (epoch_backup, integrity_check, epoch_restore,
epoch_copy) take ``PROGRESS_OPTIONS``; ``tracked`` runs their action with a
``core.progress.Progress`` whose snapshots replace ``progress_file`` atomically
(JSON, mode 0600). The collection's action plugins of those modules set the file
in the task's private remote temporary directory and print it while the module runs.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import json
from typing import Any, Callable

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write
from ansible_collections.nodekeep.backup.plugins.module_utils.core.progress import Progress, reporting

# doc fragment nodekeep.backup._progress
PROGRESS_OPTIONS: dict[str, dict[str, Any]] = {
    "progress_file": {"type": "path"},
    "progress_every_bytes": {"type": "int"},
    "progress_every_seconds": {"type": "float", "default": 2.0},
}


def progress_for(params: dict[str, Any], operation: str, node: str = "") -> Progress | None:
    """The run's ``Progress`` writing ``progress_file`` (JSON, 0600, replaced atomically), None when unset.

    A status file that cannot be written never fails the run: progress is a view, the result decides.
    """
    path = params.get("progress_file")
    if not path:
        return None

    def emit(snapshot: dict[str, Any]) -> None:
        try:
            atomic_write(path, json.dumps(snapshot, sort_keys=True) + "\n", 0o600, "progress status file")
        except NodekeepError:
            pass

    return Progress(
        operation,
        node=node,
        emit=emit,
        every_bytes=params.get("progress_every_bytes") or None,
        every_seconds=params.get("progress_every_seconds"),
    )


def tracked(
    params: dict[str, Any], operation: str, action: Callable[[], dict[str, Any]]
) -> Callable[[], dict[str, Any]]:
    """``action`` run with the status file of ``params`` (a module's), for ``common.run``."""

    def run_tracked() -> dict[str, Any]:
        tracker = progress_for(params, operation, params.get("node") or "")
        with reporting(tracker):
            result = action()
        if tracker is not None:
            # each asset's phases as they ended (bytes, rate, seconds): printed by the action plugin at the end
            result["progress"] = tracker.finished
        return result

    return run_tracked
