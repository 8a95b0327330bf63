"""Integration fixtures: one node's real backup set-up and checks that nothing was lost.

``node`` / ``make_node(repository, name="node1")``
    a ``Node`` bound to the ``repository`` fixture, the node name ``node1``,
    the ``age_key`` recipient/identity and the ``signing_key``:
    ``node.backup(assets)``, ``node.verify(...)``, ``node.restore(target_root, ...)``,
    ``node.sqlite_asset(path, name="app-db", **options)`` and ``node.epoch_dir(epoch)``.
``tree``
    ``tree(path)`` -> ``{relative path: sha256 or "<dir>"}`` of everything under
    ``path`` (dot files included): compare before/after to prove nothing changed.
``clear_error``
    ``clear_error(exc, *needles)`` asserts an engine error is a ``NodekeepError``
    with a remedy whose message names every needle.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.epoch import backup_epoch, restore_epoch, verify_epoch

NODE = "node1"


class Node:
    def __init__(self, repository, name, age_key, signing_key) -> None:
        self.repository = repository
        self.name = name
        self.age_key = age_key
        self.signing_key = signing_key
        self.public_line = signing_key.public_line

    @staticmethod
    def sqlite_asset(path, name: str = "app-db", **options) -> dict:
        return dict({"name": name, "type": "sqlite", "path": str(path)}, **options)

    def backup(self, assets, recipients=None, **kwargs):
        strings = [self.age_key.recipient] if recipients is None else list(recipients)
        return backup_epoch(
            self.repository,
            self.name,
            assets,
            seal.load_recipients(strings),
            strings,
            self.signing_key.key,
            **kwargs,
        )

    def verify(self, epoch: str = "latest", deep: bool = False, public_key=None, identities=None, **kwargs) -> dict:
        if deep and identities is None:
            identities = seal.load_identities([self.age_key.identity])
        return verify_epoch(
            self.repository,
            self.name,
            epoch,
            public_key or self.public_line,
            deep=deep,
            identities=identities,
            **kwargs,
        )

    def restore(self, target_root, epoch: str = "latest", identity_files=None, public_key=None, **kwargs) -> dict:
        files = [str(self.age_key.identity_path)] if identity_files is None else identity_files
        return restore_epoch(
            self.repository,
            self.name,
            epoch,
            public_key or self.public_line,
            seal.load_identities([], files),
            str(target_root),
            **kwargs,
        )

    def epoch_dir(self, epoch: str) -> Path:
        return Path(self.repository.root) / self.name / epoch


@pytest.fixture
def node(repository, age_key, signing_key) -> Node:
    return Node(repository, NODE, age_key, signing_key)


@pytest.fixture(scope="session")
def make_node(age_key, signing_key):
    """``make_node(repository, name="node1")``: a ``Node`` on any repository (e.g. module-scoped)."""

    def make(repository, name: str = NODE) -> Node:
        return Node(repository, name, age_key, signing_key)

    return make


def snapshot_tree(root) -> dict:
    root = Path(root)
    result = {}
    if not root.exists():
        return result
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            result[os.path.relpath(os.path.join(directory, name), root)] = "<dir>"
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return result


@pytest.fixture(scope="session")
def tree():
    return snapshot_tree


def assert_clear_error(exc: BaseException, *needles: str) -> None:
    assert isinstance(exc, NodekeepError), "%s is not a NodekeepError: %r" % (type(exc).__name__, exc)
    assert exc.remedy, "the error says no remedy: %s" % exc.message
    for needle in needles:
        assert needle.lower() in exc.message.lower(), "%r not named in: %s" % (needle, exc.message)


@pytest.fixture(scope="session")
def clear_error():
    return assert_clear_error


def regular_files(root) -> list:
    """Every regular file under ``root`` (a restore that failed must leave none)."""
    found = []
    for directory, _dirs, files in os.walk(root):
        found.extend(os.path.join(directory, name) for name in files)
    return sorted(found)


@pytest.fixture(scope="session")
def files_under():
    return regular_files
