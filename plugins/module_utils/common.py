# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared module plumbing: common options, dependency checks and error reporting.

Modules stay thin: an argument spec built with ``argspec()``, a check-mode
guard, one call into the engine inside ``run()``, and ``exit_json``.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import grp
import importlib
import os
import pwd
import stat
import traceback
from collections.abc import Iterator
from typing import Any, Callable

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, looks_secret
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import DEFAULT_LOCAL_ROOT

REPOSITORY_OPTIONS: dict[str, dict[str, Any]] = {
    "repository": {"type": "path", "default": DEFAULT_LOCAL_ROOT},
    "node": {"type": "str", "required": True},
}


AGE_RECIPIENT_OPTIONS: dict[str, dict[str, Any]] = {
    "recipients": {"type": "list", "elements": "str", "default": []},
    "recipients_files": {"type": "list", "elements": "path", "default": []},
}


AGE_IDENTITY_OPTIONS: dict[str, dict[str, Any]] = {
    "identities": {"type": "list", "elements": "str", "default": [], "no_log": True},
    "identity_files": {"type": "list", "elements": "path", "default": []},
}


# Reading one epoch back (epoch_restore, integrity_check): doc fragment nodekeep.backup._repository.EPOCH.
EPOCH_OPTIONS: dict[str, dict[str, Any]] = {
    "epoch": {"type": "str", "default": "latest"},
    "public_key": {"type": "str", "required": True, "no_log": False},
    "artifacts": {"type": "list", "elements": "str", "default": []},
    "check": {"type": "str", "choices": ["integrity", "quick"], "default": "integrity"},
    "known_latest": {"type": "str"},
    "on_rollback": {"type": "str", "choices": ["fail", "warn"], "default": "fail"},
}


# What btrfs_snapshot and zfs_snapshot share (doc fragments nodekeep.backup._snapshot and _retention; protect, base
# and force are documented by each module: their meaning differs per filesystem).
# The retention policy of epoch_prune and of the snapshot modules' pruning (doc fragment
# nodekeep.backup._retention; RetentionPolicy.from_options treats a count left out as zero).
RETENTION_OPTIONS: dict[str, dict[str, Any]] = {
    "keep_last": {"type": "int"},
    "keep_hourly": {"type": "int"},
    "keep_daily": {"type": "int"},
    "keep_weekly": {"type": "int"},
    "keep_monthly": {"type": "int"},
    "keep_yearly": {"type": "int"},
    "keep_within": {"type": "str"},
    "pick": {"type": "str", "choices": ["first", "last"], "default": "first"},
}


SNAPSHOT_OPTIONS: dict[str, dict[str, Any]] = {
    "name": {"type": "str"},
    "prefix": {"type": "str", "default": "nodekeep"},
    **RETENTION_OPTIONS,
    "protect": {"type": "list", "elements": "str", "default": []},
    "dest": {"type": "path"},
    "base": {"type": "str"},
    "level": {"type": "int", "default": 3},
    "src": {"type": "path"},
    "force": {"type": "bool", "default": False},
}


# The required_if rules btrfs_snapshot and zfs_snapshot share (each adds its own states' rules).
SNAPSHOT_REQUIRED_IF: list[tuple[str, str, list[str]]] = [
    ("state", "absent", ["name"]),
    ("state", "sent", ["name", "dest"]),
    ("state", "received", ["src", "target"]),
]


# The optional libraries a module may need: the import that proves each is usable on the node.
_LIBRARIES: dict[str, tuple[str, ...]] = {
    "pyrage": ("pyrage", "pyrage.ssh", "pyrage.x25519"),
    "zstandard": ("zstandard",),
    "cryptography": ("cryptography.hazmat.primitives.asymmetric.ed25519",),
    "apsw": ("apsw",),
    "boto3": ("boto3", "botocore.config", "botocore.exceptions"),
    "rocksdict": ("rocksdict",),
}


def _import_error(name: str) -> Exception | None:
    """None when ``name`` imports on this host, else the ImportError (for ``exception``)."""
    for module_name in _LIBRARIES[name]:
        try:
            importlib.import_module(module_name)  # an optional third-party library, imported only when asked for
        except ImportError as exc:
            return exc
    return None


def argspec(*groups: dict[str, dict[str, Any]], **own: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Merge shared option groups with a module's own options."""
    spec: dict[str, dict[str, Any]] = {}
    for group in groups:
        for name, option in group.items():
            spec[name] = dict(option)
    spec.update(own)
    return spec


def require_libraries(module, *names: str) -> None:
    """Fail with Ansible's standard missing-library message, pointing at the agent role."""
    hide_secrets(module)
    for name in names:
        error = _import_error(name)
        if error is not None:
            module.fail_json(
                msg=missing_required_lib(name)
                + " Run the nodekeep.backup.agent role and use its virtualenv as ansible_python_interpreter.",
                exception=str(error),
            )


def run(module, action: Callable[[], dict[str, Any]]) -> None:
    """Run ``action`` and exit with its result; engine errors become clean failures."""
    hide_secrets(module)
    try:
        result = action()
    except NodekeepError as exc:
        module.fail_json(**exc.to_result())
    except Exception as exc:  # noqa: BLE001 - an engine bug: report it with the traceback for -vvv
        module.fail_json(msg="unexpected error: %s" % exc, exception=traceback.format_exc())
    module.exit_json(**result)


def snapshot_module_args(required_if=(), **own: dict[str, Any]) -> dict[str, Any]:
    """``AnsibleModule`` arguments of btrfs_snapshot and zfs_snapshot.

    The age options, SNAPSHOT_OPTIONS and SNAPSHOT_REQUIRED_IF, plus the module's ``own`` options
    and its own ``required_if`` rules.
    """
    return {
        "argument_spec": argspec(AGE_RECIPIENT_OPTIONS, AGE_IDENTITY_OPTIONS, SNAPSHOT_OPTIONS, **own),
        "required_if": SNAPSHOT_REQUIRED_IF + list(required_if),
        "supports_check_mode": True,
    }


def run_snapshot_state(module, run_state: Callable[..., dict[str, Any]], open_volume: Callable[[dict], tuple]) -> None:
    """The rest of btrfs_snapshot's and zfs_snapshot's ``main()``: run the asked state and exit.

    ``open_volume(params)`` gets a copy of the module's parameters, returns the backend and the volume
    (checked to exist, except for state=received) and may fill in defaults of its filesystem in ``params``.
    ``run_state`` is ``snapshot.run_state``, passed in so that only these two modules carry snapshot.py.
    """
    if module.params["state"] in ("sent", "received"):
        require_libraries(module, "pyrage", "zstandard")

    def action():
        params = dict(module.params)
        fs, volume = open_volume(params)
        result = run_state(fs, volume, params, module.check_mode)
        if not module._diff:
            result.pop("diff", None)
        return result

    run(module, action)


# --------------------------------------------------------------------------
# --diff: what a module changes on the node's files, never their content
# --------------------------------------------------------------------------

#: a directory's entries listed by name in a diff, at most
DIFF_ENTRIES = 20


def _owner(st: os.stat_result) -> str:
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return "%s:%s" % (user, group)


def _stat_line(st: os.stat_result) -> str:
    mode = "mode %04o, owner %s" % (stat.S_IMODE(st.st_mode), _owner(st))
    if stat.S_ISREG(st.st_mode):
        return "file, %d bytes, %s" % (st.st_size, mode)
    if stat.S_ISDIR(st.st_mode):
        return "directory, %s" % mode
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "special file, %s" % mode


def describe_path(path: str) -> str:
    """What ``--diff`` shows of ``path``: its kind, size, mode and owner, and a directory's entries by name.

    Never a byte of content nor a hash of it: what these modules write holds secrets (sealed and opened files,
    Shamir shares, databases). A link is described, never followed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent\n"
    except OSError as exc:
        return "not readable (%s)\n" % exc.strerror
    lines = [_stat_line(st)]
    if stat.S_ISLNK(st.st_mode):
        lines[0] += " to %s" % os.readlink(path)
    elif stat.S_ISDIR(st.st_mode):
        try:
            names = sorted(os.listdir(path))
        except OSError as exc:
            names = []
            lines[0] += ", entries not readable (%s)" % exc.strerror
        lines[0] += ", %d entries" % len(names)
        for name in names[:DIFF_ENTRIES]:
            try:
                lines.append("  %s: %s" % (name, _stat_line(os.lstat(os.path.join(path, name)))))
            except OSError:
                lines.append("  %s: gone while listed" % name)
        if len(names) > DIFF_ENTRIES:
            lines.append("  ... and %d more" % (len(names) - DIFF_ENTRIES))
    return "".join(line + "\n" for line in lines)


def diff_entry(header: str, before: str, after: str) -> dict[str, str]:
    """One item of Ansible's ``diff`` (what ``--diff`` prints): ``header`` names what changes."""
    return {"before_header": header, "after_header": header, "before": before, "after": after}


class PathDiff:
    """The ``diff`` of the paths a module writes: each path as ``describe_path`` sees it before the change, and
    after it (read again from the disk), or in check mode as the module's plan says it would be.

    ``PathDiff(module, dest)`` before the work; ``paths.add(result, created=..., planned=...)`` after it.
    """

    def __init__(self, module, *paths: str | None) -> None:
        self.enabled = bool(module._diff)
        self.check_mode = bool(module.check_mode)
        self.before = {path: describe_path(path) for path in paths if path} if self.enabled else {}

    def add(
        self,
        result: dict[str, Any],
        created: tuple[str | None, ...] | list[str | None] = (),
        planned: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Put the ``diff`` into ``result`` when it changed something (or would, in check mode).

        ``created``: paths the run made that the engine checked were absent before (a safety copy named at run
        time). ``planned``: in check mode, what a path would become (``plan_line``); any other path is read.
        """
        if not self.enabled or not result.get("changed"):
            return result
        planned = planned or {}
        paths = list(self.before) + [p for p in list(created) + list(planned) if p and p not in self.before]
        items = []
        for path in paths:
            before = self.before.get(path, "absent\n")
            if self.check_mode:
                after = planned.get(path, before)
            else:
                after = describe_path(path)
            if after != before:
                items.append(diff_entry(path, before, after))
        if items:
            result["diff"] = items
        return result


def plan_line(what: str) -> str:
    """A check-mode ``after`` in a diff: what the path would become (its size is known only once written)."""
    return "(check mode) would be %s\n" % what


def _secret_values(value: Any) -> Iterator[str]:
    """Key material anywhere in a module's parameters: the whole string, each of its lines and words."""
    if isinstance(value, dict):
        for item in value.values():
            yield from _secret_values(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _secret_values(item)
    elif isinstance(value, str) and looks_secret(value):
        yield value
        for part in value.split():
            if len(part) >= 8 and not part.strip("-").isalpha():
                yield part


def hide_secrets(module) -> None:
    """Key material given by mistake where a public value belongs (an age identity as a recipient, a private
    key as the node's public key) never appears in the result, ``invocation.module_args`` included
    (what ``-vvv`` prints): Ansible masks every ``no_log_values`` string in what the module returns."""
    for value in _secret_values(module.params):
        module.no_log_values.add(value)
