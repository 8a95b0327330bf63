"""Two epochs of backup-node1's live chain database, opened with standard tools only."""

import json

import pytest
from nodekeep_molecule import (
    REPOSITORY,
    assert_consistent_copy,
    assert_written_around,
    chain_rows,
    controller_public_key,
    ephemeral,
    epochs,
    integrity,
    manifest,
    open_artifact,
    run,
    sha256,
    sqlite,
    ssh_keygen_verify,
)

NODE = "backup-node1"
LIVE = "/var/lib/testnode/chain.db"


@pytest.fixture(scope="module")
def taken(host):
    found = epochs(host, NODE)
    assert len(found) == 2, found
    return found


def test_each_epoch_is_complete_and_private(host, taken):
    assert host.file(REPOSITORY).mode == 0o700
    assert host.file("%s/%s" % (REPOSITORY, NODE)).mode == 0o700
    for epoch in taken:
        directory = "%s/%s/%s" % (REPOSITORY, NODE, epoch)
        assert host.file(directory).mode == 0o700
        names = run(host, "ls -1A %s" % directory).split()
        assert sorted(names) == ["chain-db.sqlite.zst.age", "manifest.json", "manifest.json.sig"]
        for name in names:
            assert host.file("%s/%s" % (directory, name)).mode == 0o600, name


def test_no_plaintext_is_left_behind(host, taken):
    leftovers = run(host, "find %s -name '.*' -o -name '*.sqlite' -o -name '*.db'" % REPOSITORY).split()
    scratch = "%s/.scratch" % REPOSITORY
    assert [p for p in leftovers if p != scratch] == []
    if host.file(scratch).exists:
        assert run(host, "find %s -type f" % scratch).strip() == ""


def test_the_manifest_signature_verifies_with_ssh_keygen(host, taken):
    for epoch in taken:
        out = ssh_keygen_verify(host, NODE, epoch, controller_public_key(NODE))
        assert 'Good "nodekeep-manifest" signature for %s' % NODE in out, out


def test_the_manifest_describes_the_artifact(host, taken):
    recipient = (ephemeral() / "age" / "recipient").read_text().strip()
    for epoch in taken:
        m = manifest(host, NODE, epoch)
        assert (m["node"], m["epoch"], m["recipients"]) == (NODE, epoch, [recipient])
        assert m["labels"] == {"groups": ["nodekeep_nodes", "testnet"], "scenario": "backup"}
        (artifact,) = m["artifacts"]
        path = "%s/%s/%s/%s" % (REPOSITORY, NODE, epoch, artifact["file"])
        assert host.file(path).size == artifact["size"]
        assert sha256(host, path) == artifact["sha256"]
        assert artifact["source"]["integrity"] == "ok" and artifact["source"]["journal_mode"] == "wal"


def test_age_and_zstd_open_each_artifact_into_a_sound_database(host, taken):
    for epoch in taken:
        (artifact,) = manifest(host, NODE, epoch)["artifacts"]
        out = "/tmp/%s.db" % epoch
        open_artifact(host, "%s/%s/%s/%s" % (REPOSITORY, NODE, epoch, artifact["file"]), out)
        assert artifact["content_sha256"] is None  # no unkeyed hash of the data (docs/safety.md)
        assert host.file(out).size == artifact["content_size"]
        assert integrity(host, out) == "ok"
        assert int(sqlite(host, out, "PRAGMA page_count")) == artifact["source"]["page_count"]


def test_each_copy_is_one_consistent_snapshot_taken_under_live_writes(host, taken):
    heads = []
    for epoch in taken:
        m = manifest(host, NODE, epoch)
        copy = chain_rows(host, "/tmp/%s.db" % epoch)
        live = chain_rows(host, LIVE, user="testnode", where="seq <= %d" % max(copy))
        assert_consistent_copy(copy, live)
        assert_written_around(host, LIVE, m["started"], m["finished"], user="testnode")
        heads.append(max(copy))
    assert heads[1] > heads[0], "the second epoch should hold the blocks written since the first"
    assert host.service("nodekeep-testnode").is_running


def test_each_run_is_recorded_on_the_node_and_the_controller(host, taken):
    status = host.file("%s/%s/last-backup.json" % (REPOSITORY, NODE))
    assert status.mode == 0o600
    last = json.loads(status.content_string)
    assert (last["status"], last["epoch"]) == ("ok", taken[-1])
    for epoch in taken:
        saved = json.loads((ephemeral() / "results" / NODE / ("backup-%s.json" % epoch)).read_text())
        assert saved["status"] == "ok" and saved["artifacts"][0]["name"] == "chain-db"
