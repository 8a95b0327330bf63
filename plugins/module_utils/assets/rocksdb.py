# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ``rocksdb`` asset type: a consistent copy of a live RocksDB directory, verified, as a tar stream.

A second process cannot checkpoint a live RocksDB: only the process holding
the DB read-write (its ``LOCK``) sees the memtables, and a checkpoint through a
read-only or secondary handle silently misses them. So each asset chooses one
of the honest ``method``s:

``checkpoint_command``
    the application's own checkpoint/admin command (a string or an argv list)
    with ``{dest}`` replaced by a new directory: under the run's scratch space,
    or under ``checkpoint_dir`` when the application must write on the DB's
    own filesystem (hard links). Verified, archived, removed.
``stop``
    stop the service (``service`` -> ``systemctl stop/start``, or explicit
    ``stop_command``/``start_command``), take a cold copy (SST and blob files
    hard-linked when ``copy_dir`` is on the DB's filesystem, everything else
    copied), start the service again (always, also when the copy failed) and
    report the stop window in ``stop_seconds``.
``snapshot``
    ``asset["path"]`` already is a crash-consistent view (a filesystem
    snapshot of the live DB). It is copied to private space, where RocksDB
    replays its WAL in memory when the copy is opened read-only.
``offline``
    the DB is closed: nobody holds its ``LOCK``. A cold copy is taken while a
    read lock on ``LOCK`` keeps the owner from starting in between; a held
    ``LOCK`` is refused, naming the process.

Nothing is ever written into the node's DB directory and the node's DB is
never opened: every copy is opened read-only with rocksdict (its bundled
RocksDB) through a *view*, a sibling directory of hard links, because
rocksdict rewrites its own ``rocksdict-config.json`` in any directory it opens
(also read-only) and the archived copy must stay byte-for-byte what the
node's own RocksDB wrote (a newer RocksDB opening read-write would rewrite
files in a format the node's older RocksDB cannot read).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import os
import shlex
import time
import uuid
from typing import Any, ClassVar

from ansible_collections.nodekeep.backup.plugins.module_utils.assets._rocksdb_db import (
    VERIFY_MODES,
    check_db_dir,
    check_program,
    command_argv,
    copy_db_tree,
    held_error,
    hold_closed,
    lock_holder,
    remove_tree,
    run_service_command,
    verify_copy,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.assets._tree import TreeAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.base import Staged
from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs as _attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core import fs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RestoreError,
    check_range,
    describe_os_error,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import fsync_dir, is_within

METHODS = ("checkpoint_command", "stop", "snapshot", "offline")


DEFAULT_TIMEOUTS = {"stop_timeout": 120, "command_timeout": 3600}
MAX_TIMEOUT = 86400  # stop_timeout and command_timeout, seconds


# --------------------------------------------------------------------------
# the four methods
# --------------------------------------------------------------------------


def infer_method(options: dict[str, Any]) -> str | None:
    if options.get("method"):
        return str(options["method"])
    if options.get("checkpoint_command"):
        return "checkpoint_command"
    if options.get("snapshot"):
        return "snapshot"
    if options.get("service") or options.get("stop_command"):
        return "stop"
    return None


def validate(options: dict[str, Any], label: str) -> dict[str, Any]:
    """Check the method and its options (no filesystem access); returns them normalized."""
    out = dict(options)
    method = infer_method(out)
    if method is None:
        raise CaptureError(
            "%s: no RocksDB method was chosen" % label,
            "set method to checkpoint_command (the application's own checkpoint), stop (stop the service "
            "briefly), snapshot (a filesystem snapshot of the DB) or offline (the DB is closed)",
        )
    if method not in METHODS:
        raise CaptureError("%s: method must be one of %s, not %r" % (label, ", ".join(METHODS), method))
    out["method"] = method
    if out.get("snapshot") and method != "snapshot":
        raise CaptureError(
            "%s: a snapshot: option goes with method snapshot, not %s" % (label, method),
            "remove method (it is then snapshot) or remove snapshot:",
        )
    if method == "checkpoint_command":
        if not out.get("checkpoint_command"):
            raise CaptureError(
                "%s: method checkpoint_command needs checkpoint_command" % label,
                "give the application's checkpoint command, with {dest} where the new directory goes",
            )
        argv = command_argv(out["checkpoint_command"], "checkpoint_command")
        if not any("{dest}" in arg for arg in argv):
            raise CaptureError(
                "%s: checkpoint_command does not contain {dest}" % label,
                "put {dest} where the command takes the new checkpoint directory, e.g. "
                "'myapp admin checkpoint --out {dest}'",
            )
        out["checkpoint_command"] = argv
    if method == "stop":
        if bool(out.get("stop_command")) != bool(out.get("start_command")):
            raise CaptureError(
                "%s: stop_command and start_command go together" % label,
                "give both, or give service to use systemctl stop/start",
            )
        if not out.get("stop_command") and not out.get("service"):
            raise CaptureError(
                "%s: method stop needs service (a systemd unit) or stop_command and start_command" % label,
                "name the service that owns the database",
            )
        if out.get("stop_command"):
            out["stop_command"] = command_argv(out["stop_command"], "stop_command")
            out["start_command"] = command_argv(out["start_command"], "start_command")
    for key in ("checkpoint_dir", "copy_dir"):
        value = out.get(key)
        if value and not os.path.isabs(str(value)):
            raise CaptureError("%s: %s must be an absolute path, not %r" % (label, key, value))
    out["verify"] = out.get("verify") or "open"
    if out["verify"] not in VERIFY_MODES:
        raise CaptureError("%s: verify must be one of %s" % (label, ", ".join(VERIFY_MODES)))
    for key in ("stop_timeout", "command_timeout"):
        if out.get(key) is None:
            out[key] = DEFAULT_TIMEOUTS[key]
        out[key] = check_range(
            out[key], "%s: %s" % (label, key), 1, MAX_TIMEOUT, "seconds", why="one day at most", error=CaptureError
        )
    out["count_keys"] = bool(out.get("count_keys"))
    return out


def _service_argv(options: dict[str, Any]) -> tuple[list[str], list[str]]:
    if options.get("stop_command"):
        return list(options["stop_command"]), list(options["start_command"])
    unit = str(options["service"])
    return ["systemctl", "stop", unit], ["systemctl", "start", unit]


def _check_work_dir(directory: str, db: str, option: str) -> None:
    if not os.path.isdir(directory):
        raise CaptureError(
            "the %s %s does not exist" % (option, directory), "create it first; nothing was stopped or written"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CaptureError(
            "cannot write to the %s %s" % (option, directory),
            "choose a writable directory or run with become: true; nothing was stopped or written",
        )
    if is_within(db, directory, real=True):
        raise CaptureError(
            "the %s %s is inside the RocksDB directory %s" % (option, directory, db),
            "choose a directory outside the database: nothing is ever written into it",
        )


def preflight(options: dict[str, Any], work_dir: str) -> dict[str, Any]:
    """Everything that can be checked before anything is stopped or written. Returns a plan."""
    path = options["path"]
    method = options["method"]
    check_db_dir(path, "the RocksDB of %s" % options.get("name", path))
    plan: dict[str, Any] = {"path": path, "method": method}
    if method == "checkpoint_command":
        check_program(options["checkpoint_command"], "checkpoint_command")
        _check_work_dir(work_dir, path, "checkpoint directory")
        plan["would"] = "run the checkpoint command into a new directory under %s, verify it and keep it" % work_dir
    elif method == "stop":
        stop_argv, start_argv = _service_argv(options)
        check_program(stop_argv, "stop_command")
        check_program(start_argv, "start_command")
        _check_work_dir(work_dir, path, "copy directory")
        plan["would"] = "stop the service (%s), copy the closed DB to %s, start it again (%s)" % (
            shlex.join(stop_argv),
            work_dir,
            shlex.join(start_argv),
        )
        plan["hard_links"] = os.stat(path).st_dev == os.stat(work_dir).st_dev
    else:
        holder = lock_holder(path)
        if holder is not None:
            raise held_error(path, holder, method)
        _check_work_dir(work_dir, path, "copy directory")
        plan["would"] = "copy the %s DB to %s and verify the copy" % (
            "snapshotted" if method == "snapshot" else "closed",
            work_dir,
        )
    return plan


def _run_checkpoint(options: dict[str, Any], dest: str) -> dict[str, Any]:
    replacements = {"{dest}": dest, "{path}": options["path"], "{name}": str(options.get("name", ""))}
    argv = []
    for arg in options["checkpoint_command"]:
        for token, value in replacements.items():
            arg = arg.replace(token, value)
        argv.append(arg)
    seconds = run_service_command(argv, "checkpoint command", options["command_timeout"])
    if not os.path.lexists(dest):
        raise CaptureError(
            "the checkpoint command %s exited 0 but made no directory at %s" % (shlex.join(argv), dest),
            "check that the command writes the checkpoint where {dest} says",
        )
    check_db_dir(dest, "the checkpoint made by %s" % argv[0])
    return {"checkpoint_seconds": seconds}


def _stop_and_copy(options: dict[str, Any], dest: str) -> dict[str, Any]:
    """Stop the service, copy the closed DB, start the service again whatever happened."""
    path = options["path"]
    stop_argv, start_argv = _service_argv(options)
    facts: dict[str, Any] = {}
    failure: BaseException | None = None
    began = time.monotonic()
    try:
        run_service_command(stop_argv, "stop command", options["stop_timeout"])
        deadline = time.monotonic() + options["stop_timeout"]
        holder = lock_holder(path)
        while holder is not None and time.monotonic() < deadline:
            time.sleep(0.1)
            holder = lock_holder(path)
        if holder is not None:
            raise held_error(path, holder, "stop")
        copy_began = time.monotonic()
        with hold_closed(path, "stop"):
            facts["copy"] = copy_db_tree(path, dest)
        facts["copy_seconds"] = round(time.monotonic() - copy_began, 3)
    except BaseException as exc:  # noqa: BLE001 - the service is started again first, then this is raised
        failure = exc
    start_error: NodekeepError | None = None
    try:
        run_service_command(start_argv, "start command", options["stop_timeout"])
    except NodekeepError as exc:
        start_error = exc
    window = round(time.monotonic() - began, 3)
    facts["stop_seconds"] = window
    if start_error is not None:
        what = "the copy failed (%s) and " % _message(failure, dest) if failure is not None else ""
        raise CaptureError(
            "%sthe service did NOT start again after a stop window of %.1f s: %s" % (what, window, start_error.problem),
            "start it by hand now (%s) and check its logs" % shlex.join(start_argv),
            stop_seconds=window,
        )
    if failure is not None:
        if isinstance(failure, (NodekeepError, OSError)):
            raise CaptureError(
                "%s; the service was started again (stop window %.1f s)" % (_message(failure, dest), window),
                _remedy(failure, dest),
                stop_seconds=window,
            ) from failure
        raise failure
    return facts


def _message(failure: BaseException | None, dest: str) -> str:
    if isinstance(failure, NodekeepError):
        return failure.problem
    if isinstance(failure, OSError):
        return describe_os_error(failure, "copying the stopped RocksDB", dest).problem
    return str(failure)


def _remedy(failure: BaseException, dest: str) -> str:
    if isinstance(failure, OSError):
        failure = describe_os_error(failure, "copying the stopped RocksDB", dest)
    return getattr(failure, "remedy", "") or "nothing was kept; fix the cause and run again"


def _cold_copy(options: dict[str, Any], dest: str) -> dict[str, Any]:
    path = options["path"]
    began = time.monotonic()
    if options["method"] == "snapshot":
        holder = lock_holder(path)
        if holder is not None:
            raise held_error(path, holder, "snapshot")
        stats = copy_db_tree(path, dest)
    else:
        with hold_closed(path, "offline"):
            stats = copy_db_tree(path, dest)
    return {"copy": stats, "copy_seconds": round(time.monotonic() - began, 3)}


def take_copy(options: dict[str, Any], dest: str) -> dict[str, Any]:
    """Make ``dest`` (which must not exist) a consistent copy of the DB by ``options['method']``.

    On any error ``dest`` is removed and the error says what happened; returns the facts.
    """
    method = options["method"]
    try:
        if method == "checkpoint_command":
            facts = _run_checkpoint(options, dest)
        elif method == "stop":
            facts = _stop_and_copy(options, dest)
        else:
            facts = _cold_copy(options, dest)
    except OSError as exc:
        remove_tree(dest)
        raise describe_os_error(exc, "copying the RocksDB %s" % options["path"], dest)
    except BaseException:
        remove_tree(dest)
        raise
    facts["method"] = method
    return facts


def _take_verified_copy(options: dict[str, Any], dest: str, label: str) -> dict[str, Any]:
    """``take_copy`` into ``dest``, then ``verify_copy`` of it as the options ask; the facts of both."""
    facts = take_copy(options, dest)
    facts.update(verify_copy(dest, count_keys=options["count_keys"], verify=options["verify"], label=label))
    return facts


def _work_dir(options: dict[str, Any], scratch_dir: str) -> str:
    if options["method"] == "checkpoint_command":
        return str(options.get("checkpoint_dir") or scratch_dir)
    return str(options.get("copy_dir") or scratch_dir)


# --------------------------------------------------------------------------
# the asset type
# --------------------------------------------------------------------------


class RocksdbAssetType(TreeAssetType):
    """A live RocksDB directory, copied consistently by the asset's ``method``, verified, archived as tar."""

    name = "rocksdb"
    extension = ".tar"
    content_format = "rocksdb+tar"

    def keeps_content_sha256(self, facts: dict[str, Any]) -> bool:
        """Only an incremental epoch's map of pieces keeps its SHA-256; the database itself never."""
        return facts.get("layout") == "pieces"

    options: ClassVar[dict[str, Any]] = {
        "method": None,
        "checkpoint_command": None,
        "checkpoint_dir": None,
        "service": None,
        "stop_command": None,
        "start_command": None,
        "stop_timeout": DEFAULT_TIMEOUTS["stop_timeout"],
        "command_timeout": DEFAULT_TIMEOUTS["command_timeout"],
        "copy_dir": None,
        "count_keys": False,
        "verify": "open",
    }

    def normalize(self, asset: dict[str, Any]) -> dict[str, Any]:
        normalized = super().normalize(asset)
        normalized = validate(normalized, "asset %s" % normalized["name"])
        for key in ("checkpoint_dir", "copy_dir"):
            if normalized.get(key) and is_within(normalized["path"], normalized[key], real=True):
                raise CaptureError(
                    "asset %s: %s %s is inside the database directory" % (normalized["name"], key, normalized[key]),
                    "choose a directory outside the database: nothing is ever written into it",
                )
        return normalized

    @contextlib.contextmanager
    def capture(self, asset: dict[str, Any], scratch_dir: str, context=None):
        """Copy consistently, verify the private copy, then stream it as tar; the copy is removed after."""
        options = dict(asset)
        work = _work_dir(options, scratch_dir)
        preflight(options, work)
        copy = os.path.join(work, ".nodekeep-rocksdb-%s-%s" % (asset["name"], uuid.uuid4().hex[:8]))
        try:
            facts = _take_verified_copy(
                options, copy, "the copy of the RocksDB %s (%s)" % (asset["name"], options["method"])
            )
            if options["verify"] == "list":
                facts["verify"] = "list"
            # The copy's files are the backup's (or the application's checkpoint's): record the live ones'.
            notes: list[dict[str, Any]] = []
            facts.update(_attrs.tree_owner_facts(asset["path"], notes))
            if notes:
                facts["not_kept"] = notes
            with self.capture_copy(copy, asset, scratch_dir, context, facts) as captured:
                yield captured
        finally:
            remove_tree(copy)

    def capture_copy(self, copy: str, asset: dict[str, Any], scratch_dir: str, context, facts: dict[str, Any]):
        """Store the verified copy: one tar stream (the incremental layout overrides this)."""
        return self.capture_tree(copy, asset, facts)

    def restore_tree(self, target: str, force: bool = False, context=None):
        """The staged directory a restore writes into: a tar extraction (the incremental layout overrides this)."""
        return TreeAssetType.restore_into(self, target, force, context)

    @contextlib.contextmanager
    def restore_into(self, target: str, force: bool = False, context=None):
        """The restored directory and its files get the live ones' owners (as root) and modes, recorded at backup."""
        source = context.artifact.source if context is not None and context.artifact else {}
        # restore_tree's context (a tar extraction, or the files rebuild) places the tree after the yield and
        # removes it on an error: both run when this context exits.
        with self.restore_tree(target, force, context) as staged:  # pylint: disable=unknown-option-value,contextmanager-generator-missing-cleanup
            extract = staged._complete

            def complete() -> dict[str, Any]:
                facts = extract() if extract is not None else {}
                _attrs.apply_tree_owners(staged.path, source)
                return facts

            yield Staged(staged.path, staged.stream, complete=complete)  # pylint: disable=unknown-option-value,contextmanager-generator-missing-cleanup

    def deep_check(self, path: str, artifact, check: str = "integrity") -> dict[str, Any]:
        """The restored DB opened read-only (column families, sequence, keys compared), then its entry counts."""
        source = artifact.source or {}
        label = "the restored RocksDB %s" % artifact.name
        check_db_dir(path, label, error=RestoreError)
        facts = verify_copy(
            path,
            count_keys=check == "integrity" and source.get("verify") != "list",
            verify=str(source.get("verify") or "open"),
            error=RestoreError,
            label=label,
        )
        problems = compare_facts(source, facts)
        if problems:
            raise RestoreError(
                "%s does not match its manifest: %s" % (label, "; ".join(problems)),
                "the artifact does not match its manifest; restore another epoch",
            )
        result = super().deep_check(path, artifact, check)
        result.update({key: facts[key] for key in ("column_families", "sequence", "keys") if key in facts})
        return result


def compare_facts(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """Differences between the manifest's RocksDB facts and a restored copy's."""
    problems = []
    wanted = expected.get("column_families")
    if wanted is not None and sorted(wanted) != sorted(found.get("column_families") or []):
        problems.append(
            "column families are %s, the manifest says %s"
            % (", ".join(sorted(found.get("column_families") or [])), ", ".join(sorted(wanted)))
        )
    sequences = (expected.get("sequence"), found.get("sequence"))
    if None not in sequences and int(sequences[0]) != int(sequences[1]):
        problems.append("sequence number is %s, the manifest says %s" % (sequences[1], sequences[0]))
    keys = expected.get("keys")
    if keys and found.get("keys") is not None:
        for family in sorted(keys):
            if found["keys"].get(family) != keys[family]:
                problems.append(
                    "column family %s has %s keys, the manifest says %s"
                    % (family, found["keys"].get(family), keys[family])
                )
    return problems


# --------------------------------------------------------------------------
# the standalone module (rocksdb_checkpoint)
# --------------------------------------------------------------------------


def plan_checkpoint(options: dict[str, Any], dest: str, force: bool = False) -> dict[str, Any]:
    """What ``checkpoint_to`` would do; checks everything it can without writing or stopping anything."""
    options = validate(dict(options), "rocksdb_checkpoint")
    path = os.path.normpath(str(options["path"]))
    options["path"] = path
    check_db_dir(path)
    if not dest or not os.path.isabs(dest):
        raise CaptureError("dest must be an absolute path, not %r" % (dest,))
    dest = os.path.normpath(dest)
    if is_within(path, dest, real=True):
        raise CaptureError(
            "dest %s is inside the RocksDB directory %s" % (dest, path),
            "choose a destination outside the database: nothing is ever written into it",
        )
    if is_within(dest, path, real=True):
        raise CaptureError(
            "the RocksDB %s is inside dest %s" % (path, dest), "choose a destination that does not contain the database"
        )
    parent = fs.check_parent_writable(dest, "checkpoint destination")
    exists = os.path.lexists(dest)
    if exists and not force:
        raise CaptureError(
            "the destination %s already exists" % dest,
            "choose a new path (e.g. with a timestamp) or set force: true to replace it; nothing was changed",
        )
    if exists and not os.path.isdir(dest):
        raise CaptureError(
            "the destination %s exists and is not a directory" % dest, "remove it or choose another path"
        )
    plan = preflight(options, parent)
    plan.update({"dest": dest, "replaced": exists, "options": options})
    return plan


def checkpoint_to(options: dict[str, Any], dest: str, force: bool = False) -> dict[str, Any]:
    """A verified consistent copy of a live RocksDB at the new directory ``dest`` (the module's work)."""
    began = time.monotonic()
    plan = plan_checkpoint(options, dest, force)
    options = plan.pop("options")
    dest = plan["dest"]
    parent = os.path.dirname(dest)
    temp = os.path.join(parent, ".%s.nodekeep-%s" % (os.path.basename(dest), uuid.uuid4().hex[:8]))
    try:
        facts = _take_verified_copy(options, temp, "the copy of %s (%s)" % (options["path"], options["method"]))
        kept = None
        try:
            if os.path.lexists(dest):
                kept = "%s.nodekeep-replaced-%s" % (dest, epoch_name())
                os.rename(dest, kept)
            os.rename(temp, dest)
            fsync_dir(parent)
        except OSError as exc:
            if kept and not os.path.lexists(dest):
                os.rename(kept, dest)
            raise describe_os_error(exc, "placing the checkpoint", dest)
        remove_tree(kept)
    finally:
        remove_tree(temp)
    result: dict[str, Any] = {"changed": True, "path": options["path"], "dest": dest, "replaced": plan["replaced"]}
    copy = facts.pop("copy", None)
    if copy:
        result.update(copy)
    if "keys" in facts:
        facts["key_counts"] = facts.pop("keys")  # ``result.keys`` would be a method in Jinja
    result.update(facts)
    result["duration"] = round(time.monotonic() - began, 3)
    return result
