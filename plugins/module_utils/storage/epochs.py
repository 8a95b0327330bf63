# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading epochs back from a repository: resolve a selector, load and verify a signed manifest."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    ManifestError,
    RepositoryError,
)
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
                "run playbooks/backup.yml for this node first (incomplete epochs: %d)"
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
    data = repository.get_bytes(node, epoch, MANIFEST_NAME)
    signature = repository.get_bytes(node, epoch, SIGNATURE_NAME, limit=64 << 10).decode("ascii", "replace")
    signing.verify(data, signature, public_key)
    return Manifest.from_bytes(data, node=node, epoch=epoch)
