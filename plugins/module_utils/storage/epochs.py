# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading epochs back from a repository: resolve a selector, load and verify a signed manifest."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    ManifestError,
    NodekeepError,
    RepositoryError,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Manifest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import Repository

# --------------------------------------------------------------------------
# reading epochs back
# --------------------------------------------------------------------------


def resolve_epoch(repository: Repository, node: str, selector: str = "latest") -> str:
    """``latest`` (the newest complete epoch) or an exact epoch name that exists and is complete."""
    complete = repository.complete_epochs(node)
    if selector in (None, "", "latest"):
        if not complete:
            raise RepositoryError(
                "node %s has no complete epoch in %s" % (node, repository.location),
                "run ansible-playbook nodekeep.backup.backup for this node first (incomplete epochs: %d)"
                % len(repository.incomplete_epochs(node)),
            )
        return complete[-1]
    if selector not in repository.epoch_names(node):
        raise RepositoryError(
            "node %s has no epoch %s in %s" % (node, selector, repository.location),
            "choose one of the latest: %s" % ", ".join(complete[-5:] or ["(none)"]),
        )
    if selector not in complete:
        raise RepositoryError(
            "epoch %s of %s is incomplete (no signed manifest): the backup did not finish" % (selector, node),
            "choose a complete epoch: %s" % ", ".join(complete[-5:] or ["(none)"]),
        )
    return selector


def check_known_latest(repository: Repository, node: str, known: str | None, on_missing: str = "fail") -> list[str]:
    """Compare the repository with the controller's record of the node's backups (rollback detection).

    ``known`` is the newest epoch the controller recorded. When it is not a complete epoch of the
    repository and no newer complete epoch is there either (epoch names sort by time; a newer one
    means retention removed the recorded one after the node made more), the repository was rolled
    back or its newest epochs were deleted: a ``RepositoryError``,
    or with ``on_missing="warn"`` the warning text (in a list) for the caller to report.
    """
    if not known:
        return []
    complete = repository.complete_epochs(node)
    if known in complete:
        return []
    if complete and complete[-1] > known:
        # Newer epochs than the controller's record exist (made by the node's own timers or stream
        # bases, whose retention may remove the recorded one): nothing was rolled back. Their
        # signatures are still checked before anything is taken from them.
        return []
    problem = (
        "the newest epoch the controller recorded for %s, %s, is not a complete epoch in %s (the newest there is %s): "
        "the repository was rolled back or its newest epochs were deleted"
        % (node, known, repository.location, complete[-1] if complete else "none")
    )
    if on_missing == "warn":
        return ["ROLLBACK: " + problem]
    raise RepositoryError(
        problem,
        "nothing older is taken as the latest; inspect the repository (and its copies) first, or set "
        "nodekeep_rollback_check: warn (on_rollback: warn) to go on with the newest epoch present",
    )


def load_manifest(repository: Repository, node: str, epoch: str, public_key: str) -> Manifest:
    """Read the manifest and check its signature against the controller's public key for the node."""
    if not public_key:
        raise ManifestError(
            "no public key was given for node %s" % node,
            "set nodekeep_signing_public_key (the agent role fetched it to the controller); "
            "a key found next to the data is never trusted",
        )
    return _read_signed(repository, node, epoch, public_key)[0]


def _read_signed(repository: Repository, node: str, epoch: str, public_key: str) -> tuple[Manifest, bytes]:
    data = repository.get_bytes(node, epoch, MANIFEST_NAME)
    signature = repository.get_bytes(node, epoch, SIGNATURE_NAME, limit=64 << 10).decode("ascii", "replace")
    signing.verify(data, signature, public_key)
    return Manifest.from_bytes(data, node=node, epoch=epoch), data


# --------------------------------------------------------------------------
# the node's sequence of epochs: rollback noticed from the repository alone
# --------------------------------------------------------------------------

#: the node's record of the last epoch it signed, per repository, beside its signing key
SEQUENCE_SUFFIX = ".sequence.json"


def sequence_state_path(signing_key_path: str | None) -> str | None:
    """Where the node keeps the last epoch it signed: ``SIGNING_KEY.sequence.json`` (0600, beside the key)."""
    return signing_key_path + SEQUENCE_SUFFIX if signing_key_path else None


def _state_key(repository: Repository, node: str) -> str:
    return "%s %s" % (repository.location, node)


def read_sequence_state(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            doc = json.loads(handle.read(4 << 20).decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RepositoryError(
            "the node's sequence record %s cannot be read (%s)" % (path, exc),
            "it is written by every backup beside the signing key; restore it from the host's backup or remove "
            "it (the next epoch then continues the repository's newest signed sequence)",
        )
    return doc if isinstance(doc, dict) else {}


@contextlib.contextmanager
def sequence_lock(path: str | None) -> Iterator[None]:
    """Held while a backup picks its sequence number, signs and records it: numbers never repeat."""
    if not path:
        yield
        return
    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RepositoryError(
            "cannot open %s.lock (%s): the node keeps the last epoch it signed beside its signing key"
            % (path, exc.strerror),
            "run the backup as the user owning the signing key's directory (nodekeep_signing_key_path); "
            "nothing was committed",
        )
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _signed_manifest(repository: Repository, node: str, epoch: str, public_key: str) -> tuple[Manifest, bytes] | None:
    """The manifest of ``epoch`` and its bytes when its signature verifies; None otherwise (never trusted)."""
    try:
        return _read_signed(repository, node, epoch, public_key)
    except NodekeepError:
        return None


def next_sequence(repository: Repository, node: str, public_key: str, state_path: str | None) -> dict[str, Any]:
    """The ``sequence`` of the epoch being signed: one more than the last the node signed, linked to it.

    The node's own record (``state_path``) names the last epoch it signed in this repository. When that
    epoch is no longer a complete epoch there, the newest epochs were deleted since: the link records it
    (``present: false``), signed, so verify, restore and drill see the rollback in the repository itself
    from now on. Retention never removes the newest epoch (by name or by number), so it never causes this.
    Without a record (a new node, a record lost) the newest signed epoch of the repository is the previous one.
    """
    newest = None
    for epoch in reversed(repository.complete_epochs(node)):
        found = _signed_manifest(repository, node, epoch, public_key)
        if found is not None:
            manifest, data = found
            number = (manifest.sequence or {}).get("number", 0)
            newest = {"epoch": epoch, "number": number, "manifest_sha256": hashlib.sha256(data).hexdigest()}
            break
    last = read_sequence_state(state_path).get(_state_key(repository, node)) if state_path else None
    previous = None
    if isinstance(last, dict) and last.get("epoch"):
        found = _signed_manifest(repository, node, str(last["epoch"]), public_key)
        present = found is not None and hashlib.sha256(found[1]).hexdigest() == last.get("manifest_sha256")
        previous = {
            "epoch": str(last["epoch"]),
            "number": int(last.get("number") or 0),
            "manifest_sha256": str(last.get("manifest_sha256")),
            "present": present,
        }
    if newest is not None and (previous is None or newest["number"] > previous["number"]):
        previous = dict(newest, present=True)
    number = (previous["number"] if previous else 0) + 1
    return {"number": number, "previous": previous}


def record_sequence(repository: Repository, node: str, state_path: str | None, manifest: Manifest, data: bytes) -> None:
    """Remember the epoch just signed as the node's last one in this repository (under ``sequence_lock``)."""
    if not state_path or manifest.sequence is None:
        return
    state = read_sequence_state(state_path)
    state[_state_key(repository, node)] = {
        "epoch": manifest.epoch,
        "number": manifest.sequence["number"],
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write(state_path, json.dumps(state, indent=2, sort_keys=True) + "\n", 0o600, "sequence record")


def check_sequence(repository: Repository, node: str, public_key: str) -> list[str]:
    """What the signed sequence of the node's epochs says was deleted (empty: nothing).

    Flags an epoch signed while the node's previous epoch was missing (the newest epochs had been deleted:
    a rollback), an epoch whose recorded previous epoch is there with another manifest, and a number used
    twice. Epochs missing between two kept ones are retention's (it removes older epochs only, never the
    newest) and are not flagged. Manifests without a sequence (older versions) are skipped; an epoch whose
    signature does not verify is not read (verify reports it).
    """
    problems = []
    seen: dict[int, str] = {}
    digests: dict[str, str] = {}
    manifests = []
    for epoch in repository.complete_epochs(node):
        found = _signed_manifest(repository, node, epoch, public_key)
        if found is None:
            continue
        manifest, data = found
        digests[epoch] = hashlib.sha256(data).hexdigest()
        if manifest.sequence is not None:
            manifests.append(manifest)
    for manifest in manifests:
        number = manifest.sequence["number"]
        previous = manifest.sequence["previous"]
        if number in seen:
            problems.append(
                "epochs %s and %s of %s both carry sequence number %d" % (seen[number], manifest.epoch, node, number)
            )
        seen.setdefault(number, manifest.epoch)
        if previous is None:
            continue
        if not previous["present"]:
            problems.append(
                "when epoch %s (sequence %d) of %s was made, the node's previous epoch %s (sequence %d) was missing "
                "from %s: the newest epochs were deleted (a rollback)"
                % (manifest.epoch, number, node, previous["epoch"], previous["number"], repository.location)
            )
        elif previous["epoch"] in digests and digests[previous["epoch"]] != previous["manifest_sha256"]:
            problems.append(
                "epoch %s of %s is not the epoch %s (sequence %d) chains to: its manifest was replaced"
                % (previous["epoch"], node, manifest.epoch, number)
            )
    return problems


def check_rollback(
    repository: Repository,
    node: str,
    known: str | None,
    public_key: str | None,
    on_missing: str = "fail",
) -> list[str]:
    """Both rollback checks: the controller's record (``check_known_latest``) and the signed sequence.

    Refuses (``RepositoryError``) or, with ``on_missing="warn"``, returns the warnings.
    """
    warnings = check_known_latest(repository, node, known, on_missing)
    problems = check_sequence(repository, node, public_key) if public_key else []
    if not problems:
        return warnings
    if on_missing == "warn":
        return warnings + ["ROLLBACK: " + problem for problem in problems]
    raise RepositoryError(
        "; ".join(problems),
        "nothing is taken from a repository whose signed sequence of epochs shows deleted epochs; inspect it (and "
        "its copies) first, or set nodekeep_rollback_check: warn (on_rollback: warn) to go on",
    )
