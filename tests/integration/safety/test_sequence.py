"""Rollback is noticed from the repository alone: every manifest carries a signed, monotonic sequence
number and a link to the epoch the node signed before it (its name and manifest SHA-256), and whether
that epoch was still in the repository when the new one was signed.

The attacker deletes the newest epochs of a real repository; the node then makes a later epoch (its
timer runs on). integrity_check (what verify and the drill run) and epoch_restore, run as modules in
their own processes with no controller record at all (no known_latest), must see it. Retention's own
removals are not flagged, a tampered sequence breaks the signature, and manifests written before the
sequence existed still verify.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from modrun import module

from ansible_collections.nodekeep.backup.plugins.module_utils.core import signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Manifest
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.epochs import (
    check_sequence,
    load_manifest,
    sequence_state_path,
)

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def backup(node, live_db, signing_key, tmp_path):
    """``backup()``: one epoch of the live database, made by the epoch_backup module as the node's timer does."""

    def run() -> dict:
        args = {
            "repository": node.repository.root,
            "node": node.name,
            "recipients": [node.age_key.recipient],
            "signing_key": str(signing_key.path),
            "assets": [node.sqlite_asset(live_db.path)],
        }
        result = module("epoch_backup", args, tmp_path / "args")
        assert not result.get("failed"), result
        return result

    return run


def check(node, age_key, tmp_path, name: str = "integrity_check", dest: str = "", **extra) -> dict:
    args = {
        "repository": node.repository.root,
        "node": node.name,
        "public_key": node.public_line,
        "identity_files": [str(age_key.identity_path)],
    }
    if name == "epoch_restore":
        args["dest"] = dest or str(tmp_path / "staging")
    args.update(extra)
    return module(name, args, tmp_path / "args")


def test_each_epoch_is_numbered_and_linked_to_the_one_before(node, backup, signing_key):
    first, second = backup(), backup()
    assert second["sequence"]["number"] == first["sequence"]["number"] + 1
    linked = second["sequence"]["previous"]
    data = (node.epoch_dir(first["epoch"]) / "manifest.json").read_bytes()
    assert linked == {
        "epoch": first["epoch"],
        "number": first["sequence"]["number"],
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "present": True,
    }
    # The number and the link are inside the signed bytes.
    manifest = load_manifest(node.repository, node.name, second["epoch"], node.public_line)
    assert manifest.sequence == second["sequence"]
    with open(sequence_state_path(str(signing_key.path)), "rb") as handle:
        state = json.loads(handle.read())
    assert state["%s %s" % (node.repository.location, node.name)]["epoch"] == second["epoch"]


@pytest.mark.parametrize("name", ["integrity_check", "epoch_restore"])
def test_deleting_the_newest_epochs_is_seen_once_a_later_epoch_exists(node, backup, age_key, tmp_path, name):
    epochs = [backup()["epoch"] for _run in range(3)]
    for epoch in epochs[1:]:
        shutil.rmtree(node.epoch_dir(epoch))  # the attacker hides the two newest backups
    later = backup()
    assert later["sequence"]["previous"]["epoch"] == epochs[-1]
    assert later["sequence"]["previous"]["present"] is False
    result = check(node, age_key, tmp_path, name)  # no controller record: the repository alone
    assert result.get("failed"), result
    assert "rollback" in result["msg"] and epochs[-1] in result["msg"] and later["epoch"] in result["msg"]
    assert not (tmp_path / "staging").exists()
    warned = check(node, age_key, tmp_path, name, on_rollback="warn")
    assert not warned.get("failed"), warned
    assert warned["epoch"] == later["epoch"]
    assert any("ROLLBACK" in text and epochs[-1] in text for text in warned["rollback"])


def test_retention_removing_older_epochs_is_not_flagged(node, backup, age_key, tmp_path):
    epochs = [backup()["epoch"] for _run in range(4)]
    pruned = apply_retention(node.repository, node.name, RetentionPolicy(keep_last=1), node.public_line)
    assert [entry["epoch"] for entry in pruned["removed"]] == epochs[:-1]
    later = backup()
    assert later["sequence"]["previous"] == dict(later["sequence"]["previous"], epoch=epochs[-1], present=True)
    # Retention runs again: the epoch the later one links to goes too, and that is no rollback either.
    apply_retention(node.repository, node.name, RetentionPolicy(keep_last=1), node.public_line)
    assert node.repository.complete_epochs(node.name) == [later["epoch"]]
    assert check_sequence(node.repository, node.name, node.public_line) == []
    for name in ("integrity_check", "epoch_restore"):
        result = check(node, age_key, tmp_path, name, dest=str(tmp_path / ("staging-" + name)))
        assert not result.get("failed") and result["rollback"] == [], result


def test_retention_keeps_the_highest_number_even_when_it_is_not_the_newest_name(node, live_db, signing_key):
    """Two overlapping backups of one node: the earlier-named epoch signed last, with the higher number.

    The next backup links to that one, so retention keeps it beside the newest by name (removing it
    would make the next backup record a rollback that never happened).
    """
    first = node.backup([node.sqlite_asset(live_db.path)])
    second = node.backup([node.sqlite_asset(live_db.path)])
    path = node.epoch_dir(first.epoch) / "manifest.json"
    manifest = Manifest.from_bytes(path.read_bytes())
    data2 = (node.epoch_dir(second.epoch) / "manifest.json").read_bytes()
    manifest.sequence = {
        "number": second.sequence["number"] + 1,
        "previous": {
            "epoch": second.epoch,
            "number": second.sequence["number"],
            "manifest_sha256": hashlib.sha256(data2).hexdigest(),
            "present": True,
        },
    }
    data = manifest.to_bytes()
    for name, content in (("manifest.json", data), ("manifest.json.sig", signing.sign(data, signing_key.key).encode())):
        (node.epoch_dir(first.epoch) / name).chmod(0o644)
        (node.epoch_dir(first.epoch) / name).write_bytes(content)
    pruned = apply_retention(node.repository, node.name, RetentionPolicy(keep_last=1), node.public_line)
    assert pruned["removed"] == []
    kept = {entry["epoch"]: entry["reasons"] for entry in pruned["kept"]}
    assert set(kept) == {first.epoch, second.epoch}
    assert "highest sequence number" in kept[first.epoch][0]


def test_a_tampered_sequence_breaks_the_signature(node, backup, age_key, tmp_path):
    epochs = [backup()["epoch"] for _run in range(2)]
    path = node.epoch_dir(epochs[-1]) / "manifest.json"
    doc = json.loads(path.read_bytes())
    doc["sequence"]["previous"]["present"] = True
    doc["sequence"]["number"] = 1000
    path.chmod(0o644)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    with pytest.raises(NodekeepError) as caught:
        load_manifest(node.repository, node.name, epochs[-1], node.public_line)
    assert "signature" in str(caught.value).lower()
    result = check(node, age_key, tmp_path)
    assert result.get("failed") or not result["ok"], result
    # A forged epoch is never read for the sequence either: only what the node signed counts.
    assert check_sequence(node.repository, node.name, node.public_line) == []


def test_manifests_without_a_sequence_still_verify(node, live_db, signing_key, backup, age_key, tmp_path):
    """Epochs written before the sequence existed: re-signed here without the field, as older versions wrote them."""
    old = node.backup([node.sqlite_asset(live_db.path)])
    path = node.epoch_dir(old.epoch) / "manifest.json"
    manifest = Manifest.from_bytes(path.read_bytes())
    manifest.sequence = None
    data = manifest.to_bytes()
    assert b'"sequence"' not in data
    for name, content in (("manifest.json", data), ("manifest.json.sig", signing.sign(data, signing_key.key).encode())):
        (node.epoch_dir(old.epoch) / name).chmod(0o644)
        (node.epoch_dir(old.epoch) / name).write_bytes(content)
    assert load_manifest(node.repository, node.name, old.epoch, node.public_line).sequence is None
    later = backup()
    assert later["sequence"]["number"] == 1 and later["sequence"]["previous"]["epoch"] == old.epoch
    result = check(node, age_key, tmp_path, epoch=old.epoch)
    assert not result.get("failed") and result["ok"] and result["rollback"] == [], result


def test_the_sequence_is_checked_by_the_drill_path_on_a_copy_without_state(node, backup, age_key, tmp_path):
    """The state beside the key is the node's; a verifier needs only the repository and the public key."""
    epochs = [backup()["epoch"] for _run in range(2)]
    shutil.rmtree(node.epoch_dir(epochs[-1]))
    later = backup()
    problems = check_sequence(node.repository, node.name, node.public_line)
    assert len(problems) == 1 and epochs[-1] in problems[0] and later["epoch"] in problems[0]
