"""The fleet after side_effect: backups of three live nodes, verify, a staged restore of every
node on the staging host, a cutover on fleet-node1 and a rolled-back cutover on fleet-node2.

Checked with standard tools only: sqlite3, sha256sum, age | zstd, ssh-keygen -Y verify, stat.
"""

import json
import time

import pytest
import testinfra
from nodekeep_molecule import (
    assert_consistent_copy,
    assert_written_around,
    chain_rows,
    controller_public_key,
    ephemeral,
    epochs,
    files_with_digests,
    integrity,
    manifest,
    open_artifact,
    run,
    sha256,
    sqlite,
    ssh_keygen_verify,
)

NODES = ["fleet-node1", "fleet-node2", "fleet-node3"]
LIVE = "/var/lib/testnode/chain.db"
SHIPPED = "/var/backups/nodekeep-shipped"
STAGING_ROOT = "/srv/nodekeep-staging"
REPOSITORY = "/var/backups/nodekeep"
SERVICE_USER = "testnode"


def get(name: str):
    return testinfra.get_host("podman://%s" % name)


STAGING = get("fleet-staging")


def facts(name: str) -> dict:
    return json.loads((ephemeral() / "facts" / ("%s.json" % name)).read_text())


def live_head(node) -> int:
    return int(sqlite(node, LIVE, "SELECT max(seq) FROM chain", user=SERVICE_USER))


def cutover_result(node) -> dict:
    """fleet-node1's cutover, as the restore role recorded it in nodekeep_results_dir."""
    epoch = epochs(node, "fleet-node1")[-1]
    result = json.loads((ephemeral() / "results" / "fleet-node1" / ("restore-%s.json" % epoch)).read_text())
    (done,) = result["cutover"]
    return done


def shipped_epoch(name: str) -> str:
    (epoch,) = epochs(STAGING, name, repository=SHIPPED)
    return epoch


@pytest.mark.parametrize("name", NODES)
def test_the_node_service_runs_and_appends(name):
    node = get(name)
    assert node.service("nodekeep-testnode").is_running
    before = live_head(node)
    time.sleep(1.2)
    assert live_head(node) > before, "the service does not append to its database"


@pytest.mark.parametrize("name", NODES)
def test_each_node_backed_up_under_live_writes(name):
    node = get(name)
    (epoch,) = epochs(node, name)  # backup.yml -l mainnet ran once
    assert 'Good "nodekeep-manifest" signature for %s' % name in ssh_keygen_verify(
        node, name, epoch, controller_public_key(name)
    )
    m = manifest(node, name, epoch)
    assert {"mainnet", "nodekeep_nodes"} <= set(m["labels"]["groups"])
    last = json.loads(node.file("%s/%s/last-backup.json" % (REPOSITORY, name)).content_string)
    assert last["status"] == "ok" and last["epoch"] == epoch
    # playbooks/verify.yml checked this epoch and said so on the controller
    verified = json.loads((ephemeral() / "results" / name / ("verify-%s.json" % epoch)).read_text())
    assert verified["ok"] is True and verified["epoch"] == epoch and verified["problems"] == []
    # the service was writing all along (fleet-node1's live database was replaced by its cutover:
    # its safety copy is the data of that time)
    if name == "fleet-node1":
        db, user = cutover_result(node)["safety_copy"], None
    else:
        db, user = LIVE, SERVICE_USER
    assert_written_around(node, db, m["started"], m["finished"], user=user)


@pytest.mark.parametrize("name", NODES)
def test_the_shipped_epoch_is_the_nodes_epoch_byte_for_byte(name):
    node = get(name)
    epoch = shipped_epoch(name)
    assert epoch == epochs(node, name)[-1]
    here = files_with_digests(node, "%s/%s/%s" % (REPOSITORY, name, epoch))
    there = files_with_digests(STAGING, "%s/%s/%s" % (SHIPPED, name, epoch))
    assert set(there) == {"manifest.json", "manifest.json.sig", "chain-db.sqlite.zst.age"}
    assert {f: digest for f, (digest, _mode) in there.items()} == {f: digest for f, (digest, _mode) in here.items()}
    assert {mode for _digest, mode in there.values()} == {0o600}
    modes = run(STAGING, "stat -c %%a %s %s/%s %s/%s/%s" % (SHIPPED, SHIPPED, name, SHIPPED, name, epoch)).split()
    assert modes == ["700"] * 3
    assert "Good" in ssh_keygen_verify(STAGING, name, epoch, controller_public_key(name), repository=SHIPPED)


@pytest.mark.parametrize("name", NODES)
def test_the_staged_restore_on_staging_equals_the_backup_and_the_live_data(name):
    epoch = shipped_epoch(name)
    (artifact,) = manifest(STAGING, name, epoch, repository=SHIPPED)["artifacts"]
    restored = "%s/%s%s" % (STAGING_ROOT, name, LIVE)
    assert integrity(STAGING, restored) == "ok"
    assert artifact["content_sha256"] is None  # no unkeyed hash of the data (docs/safety.md)
    # the same bytes as the artifact opened with age and zstd alone
    opened = "/tmp/%s-opened.db" % name
    open_artifact(STAGING, "%s/%s/%s/%s" % (SHIPPED, name, epoch, artifact["file"]), opened)
    assert sha256(STAGING, opened) == sha256(STAGING, restored)
    # the restored rows are exactly the rows of the epoch's snapshot
    copy = chain_rows(STAGING, restored)
    assert copy == chain_rows(STAGING, opened)
    # every restored row is the live row with the same seq (the chain only appends), none torn
    live = chain_rows(get(name), LIVE, user=SERVICE_USER, where="seq <= %d" % max(copy))
    assert_consistent_copy(copy, live)
    result = json.loads((ephemeral() / "results" / name / ("restore-%s.json" % epoch)).read_text())
    if name == "fleet-node3":  # fleet-node1 and 2 restored the same epoch again for their cutovers
        assert result["restore_host"] == "fleet-staging" and result["cutover"] == "not requested"


def test_nothing_staged_touched_the_staging_hosts_own_repository():
    # the shipped epochs went to their own repository; the staging host's repository stays empty
    assert run(STAGING, "ls -A %s" % REPOSITORY).split() == []


def test_the_hosts_share_one_network():
    for name in NODES:
        assert STAGING.run("getent hosts %s" % name).rc == 0, name
    assert get("fleet-node1").run("getent hosts fleet-staging").rc == 0


def main_pid(node) -> int:
    return int(run(node, "systemctl show -p MainPID --value nodekeep-testnode"))


# ---- fleet-node1: cutover with a passing health check ------------------------------------


def test_the_cutover_moved_the_restored_epoch_into_place():
    node = get("fleet-node1")
    before = facts("fleet-node1")
    assert before["saw_cutover"]
    epoch = epochs(node, "fleet-node1")[-1]
    done = cutover_result(node)
    assert done["ok"] and done["path"] == LIVE and done["service"] == "nodekeep-testnode"

    assert main_pid(node) not in (0, before["pid"]), "the service was not stopped and started again"
    live = node.file(LIVE)
    assert live.inode != before["inode"], "the live database is still the old file"
    assert (live.user, live.group) == ("testnode", "testnode")
    assert not node.file("/srv/nodekeep-cutover%s" % LIVE).exists, "the staged copy was not moved"

    # the safety copy is the pre-cutover database, whole
    safety = done["safety_copy"]
    assert integrity(node, safety) == "ok"
    assert int(sqlite(node, safety, "SELECT max(seq) FROM chain")) >= before["max_seq"]

    # the live database starts with exactly the epoch's rows; the service appended new blocks after them
    (artifact,) = manifest(node, "fleet-node1", epoch)["artifacts"]
    opened = "/tmp/fleet-node1-epoch.db"
    open_artifact(node, "%s/fleet-node1/%s/%s" % (REPOSITORY, epoch, artifact["file"]), opened)
    restored = chain_rows(node, opened)
    top = max(restored)
    live_rows = chain_rows(node, LIVE, user=SERVICE_USER)
    assert {seq: live_rows[seq] for seq in restored} == restored
    assert max(live_rows) > top, "the service did not write after the cutover"
    old = chain_rows(node, safety, where="seq > %d AND seq <= %d" % (top, max(live_rows)))
    assert old and all(live_rows[seq] != row for seq, row in old.items()), "new blocks should differ from the old ones"


# ---- fleet-node2: the cutover whose health check failed, rolled back --------------------


def test_the_failed_cutover_rolled_back_to_the_original_database():
    node = get("fleet-node2")
    before = facts("fleet-node2")
    assert main_pid(node) not in (0, before["pid"]), "the service was not stopped and started again"
    assert node.service("nodekeep-testnode").is_running
    live = node.file(LIVE)
    assert live.inode == before["inode"], "the live database is not the original file"
    assert (live.user, live.group) == ("testnode", "testnode")
    row = sqlite(node, LIVE, "SELECT hash FROM chain WHERE seq = %d" % before["max_seq"], user=SERVICE_USER)
    assert row == before["hash"], "the original rows are not there"
    # nothing left in between: no safety copy (it went back), the data that failed kept aside
    names = run(node, "ls -1 /var/lib/testnode").split()
    assert not [n for n in names if ".nodekeep-pre-restore-" in n]
    (failed,) = [n for n in names if ".nodekeep-failed-" in n]
    assert integrity(node, "/var/lib/testnode/%s" % failed) == "ok"


# ---- fleet-node3: continuous replication, a point-in-time restore on the staging host --------------


def test_the_replication_service_runs_and_a_point_in_time_restore_on_staging_reached_the_commit():
    node = get("fleet-node3")
    assert node.service("nodekeep-stream@chain-db").is_running
    pitr = facts("fleet-node3-pitr")
    results = [json.loads(p.read_text()) for p in (ephemeral() / "results" / "fleet-node3").glob("restore-*.json")]
    (result,) = [r for r in results if r.get("point_in_time")]
    point = result["point_in_time"]
    # exactly the commit asked for (a commit time the service recorded), checked, on the staging host
    assert point["restored_commit_time"] == pitr["point"] and point["source"] == "chain"
    assert point["integrity"] == "ok" and point["commits_applied"] > 0
    assert result["restore_host"] == "fleet-staging"
    restored = "/srv/nodekeep-pitr/fleet-node3.db"
    assert point["path"] == restored and point["size"] == int(run(STAGING, "stat -c %%s %s" % restored))
    assert integrity(STAGING, restored) == "ok"
    # the summary names what was staged (not "0 asset(s), 0 s")
    (line,) = pitr["summary"]
    assert "as of the commit seen at %s" % pitr["point"] in line and "0 asset(s)" not in line
    # a consistent state of the live chain, and older than the live head (the node kept writing)
    copy = chain_rows(STAGING, restored)
    live = chain_rows(node, LIVE, user=SERVICE_USER, where="seq <= %d" % max(copy))
    assert_consistent_copy(copy, live)
    assert live_head(node) > max(copy)
    # the chain was shipped with its signed segments into a repository of its own
    shipped = epochs(STAGING, "fleet-node3", repository="/var/backups/nodekeep-pitr-shipped")
    assert shipped == [result["epoch"]]
    listing = run(STAGING, "ls /var/backups/nodekeep-pitr-shipped/fleet-node3/%s" % result["epoch"]).split()
    assert any(name.startswith("chain-db.wal.") and name.endswith(".json.sig") for name in listing)
