"""The ``zfs`` asset type and the ZFS backend on a real zfs-fuse pool."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from integration_helpers import needles, scan, units
from snaphelpers import sh, write_files

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.zfs import ZfsAssetType
from ansible_collections.nodekeep.backup.plugins.module_utils.core import manifest as _manifest_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import IntegrityError, NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import base as snapshot
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import volumes
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot import zfs as _zfs_mod


def userrefs(dataset: str) -> dict[str, int]:
    done = sh("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", dataset)
    names = done.stdout.split()
    if not names:
        return {}
    out = sh("zfs", "get", "-Hp", "-o", "name,value", "userrefs", *names).stdout
    return {line.split("\t")[0]: int(line.split("\t")[1]) for line in out.splitlines()}


def snapshot_names(dataset: str) -> list[str]:
    done = sh("zfs", "list", "-H", "-o", "name", "-t", "snapshot", "-r", "-d", "1", dataset)
    return [n.split("@", 1)[1] for n in done.stdout.split() if n.startswith(dataset + "@")]


def change(mountpoint: Path, step: int) -> None:
    write_files(mountpoint, seed=step)
    (mountpoint / ("added%d.txt" % step)).write_text("step %d\n" % step)
    old = mountpoint / ("added%d.txt" % (step - 2))
    if old.exists():
        old.unlink()


def test_feature_detection_finds_zfs_fuse(zfs_pool):
    features = _zfs_mod.detect_zfs_features(refresh=True)
    assert features["implementation"] == "zfs-fuse"
    for missing in (
        "list_parsable",
        "list_json",
        "send_raw",
        "bookmarks",
        "resume_tokens",
        "holds_list",
        "receive_unmounted",
        "temp_holds_cleaned_by_kernel",
    ):
        assert features[missing] is False, missing


def test_chain_of_five_sends_restores_the_same_content(node, zfs_dataset, tmp_path):
    dataset, mountpoint = zfs_dataset
    asset = {"name": "chain", "type": "zfs", "path": str(mountpoint), "full_every": 0, "local_retention": {}}
    manifests = []
    for step in range(5):
        if step:
            change(mountpoint, step)
        manifests.append(node.backup([asset]))
    sources = [m.artifact("chain").source for m in manifests]
    assert [s["send"] for s in sources] == ["full"] + ["incremental"] * 4
    assert [len(s.get("chain") or []) for s in sources] == [0, 1, 2, 3, 4]
    last = sources[-1]
    assert last["base"]["name"] == sources[-2]["snapshot"]["name"]
    assert last["base"]["guid"] == sources[-2]["snapshot"]["guid"]
    assert [link["epoch"] for link in last["chain"]] == [m.epoch for m in manifests[:-1]]
    assert last["snapshot"]["name"] == "nodekeep-%s" % manifests[-1].epoch
    assert last["snapshot"]["volume"] == dataset and last["snapshot"]["createtxg"] > 0
    # incrementals are small: only what changed
    assert manifests[-1].artifact("chain").content_size < manifests[0].artifact("chain").content_size

    report = node.restore(tmp_path / "staging")
    restored = report["artifacts"][0]
    target = Path(restored["path"])
    assert target == tmp_path / "staging" / str(mountpoint).lstrip("/")
    assert restored["checks"]["snapshot_id"] == "ok"
    assert restored["checks"]["compared"].startswith("snapshot %s@nodekeep-" % dataset)
    # the restored dataset equals the live one (nothing changed since the last snapshot), file by file
    snapshot.compare_trees(str(mountpoint), str(target))
    staging = [n for n in sh("zfs", "list", "-H", "-o", "name,mountpoint").stdout.splitlines() if str(target) in n]
    assert len(staging) == 1 and "/nodekeep-restore/" in staging[0]
    assert not any(userrefs(dataset).values()), userrefs(dataset)

    # an earlier epoch of the chain restores to its own content (the third snapshot)
    third = node.restore(tmp_path / "third", epoch=manifests[2].epoch)["artifacts"][0]
    assert third["checks"]["compared"] == "snapshot %s@nodekeep-%s" % (dataset, manifests[2].epoch)

    # deep verify receives the chain into a temporary dataset and removes it again
    before = set(sh("zfs", "list", "-H", "-o", "name").stdout.split())
    verified = node.verify(deep=True)
    assert verified["ok"], verified["problems"]
    assert set(sh("zfs", "list", "-H", "-o", "name").stdout.split()) == before


def test_a_chain_keeps_no_unkeyed_digest_of_its_send_streams(node, zfs_dataset, tmp_path, age_key):
    """A send stream carries the files' data: neither the manifest nor a chain link records an unkeyed digest of it
    (nor of any file, 4 MiB chunk of it), and the chain still restores and deep-verifies, link by link. Links of
    older chains, with the plain SHA-256 of their stream, are still compared."""
    _dataset, mountpoint = zfs_dataset
    asset = {"name": "chain", "type": "zfs", "path": str(mountpoint), "full_every": 0, "local_retention": {}}
    manifests = []
    for step in range(3):
        change(mountpoint, step)
        manifests.append(node.backup([asset]))
    identities = seal.load_identities([], [str(age_key.identity_path)])
    plaintexts = []
    for manifest in manifests:
        artifact = manifest.artifact("chain")
        assert artifact.content_sha256 is None
        assert [link["content_sha256"] for link in artifact.source.get("chain") or []] == [None] * len(
            artifact.source.get("chain") or []
        )
        plaintexts += units(
            seal.unseal_bytes((node.epoch_dir(manifest.epoch) / artifact.file).read_bytes(), identities)
        )
    for folder, _dirs, names in os.walk(mountpoint):
        plaintexts += [(Path(folder) / name).read_bytes() for name in names]
    found = needles(plaintexts)
    assert scan(hashlib.sha256(plaintexts[0]).hexdigest().encode(), found)  # the scan can fail
    leaks = {}
    for folder, _dirs, names in os.walk(node.repository.root):
        for name in names:
            hits = scan((Path(folder) / name).read_bytes(), found)
            if hits:
                leaks[os.path.join(folder, name)] = hits
    assert leaks == {}, leaks

    # the chain still proves every byte: restored file by file, deep verify receives every link
    restored = node.restore(tmp_path / "staging")["artifacts"][0]
    assert restored["checks"]["snapshot_id"] == "ok"
    snapshot.compare_trees(str(mountpoint), restored["path"])
    for line in json.dumps(restored, default=str).splitlines():
        assert scan(line.encode(), found) == [], line
    verified = node.verify(deep=True)
    assert verified["ok"], verified["problems"]

    # a link of an older chain records the plain SHA-256 of its stream: still read, still compared
    first = manifests[0].artifact("chain")
    stream = seal.unseal_bytes((node.epoch_dir(manifests[0].epoch) / first.file).read_bytes(), identities)
    context = type("Context", (), {"repository": node.repository, "node": node.name, "identities": identities})()
    link = dict(manifests[1].artifact("chain").source["chain"][0], content_sha256=hashlib.sha256(stream).hexdigest())
    sink = io.BytesIO()
    ZfsAssetType()._feed_link(context, link, sink, "memory")
    assert sink.getvalue() == stream
    with pytest.raises(IntegrityError, match="content checksum"):
        ZfsAssetType()._feed_link(context, dict(link, content_sha256="0" * 64), io.BytesIO(), "memory")


def test_chain_needs_every_link_and_falls_back_to_full(node, zfs_dataset, tmp_path, clear_error):
    dataset, mountpoint = zfs_dataset
    asset = {"name": "data", "type": "zfs", "path": str(mountpoint), "full_every": 3, "local_retention": {}}
    manifests = []
    for step in range(4):
        change(mountpoint, step)
        manifests.append(node.backup([asset]))
    sends = [m.artifact("data").source["send"] for m in manifests]
    assert sends == ["full", "incremental", "incremental", "full"], sends
    assert "full_every 3" in manifests[3].artifact("data").source["send_reason"]
    assert _manifest_mod.manifest_needs(manifests[2]) == {manifests[0].epoch, manifests[1].epoch}

    # the base snapshot destroyed locally: the next send is full, and says why
    sh("zfs", "destroy", "%s@nodekeep-%s" % (dataset, manifests[3].epoch))
    change(mountpoint, 9)
    fallback = node.backup([asset]).artifact("data").source
    assert fallback["send"] == "full" and "gone locally" in fallback["send_reason"]

    # a missing link is a clear error naming the epoch
    node.repository.remove_epoch(node.name, manifests[0].epoch)
    with pytest.raises(NodekeepError) as caught:
        node.restore(tmp_path / "broken", epoch=manifests[2].epoch)
    clear_error(caught.value, manifests[0].epoch, "chain")


class FailingRepository:
    """Wraps a repository; the sink of the Nth write raises after some bytes (a full disk, a dead link)."""

    def __init__(self, inner, fail_after: int = 4096) -> None:
        self.inner = inner
        self.fail_after = fail_after

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def open_write(self, node, epoch, name):
        import contextlib

        inner = self.inner
        limit = self.fail_after

        @contextlib.contextmanager
        def opened():
            with inner.open_write(node, epoch, name) as sink:
                if not name.endswith((".zfs.zst.age", ".btrfs.zst.age")):
                    yield sink
                    return

                class Sink:
                    written = 0

                    def write(self, data):
                        Sink.written += len(data)
                        if Sink.written > limit:
                            raise OSError(28, "No space left on device")
                        return sink.write(data)

                    def __getattr__(self, attr):
                        return getattr(sink, attr)

                yield Sink()

        return opened()


@pytest.mark.parametrize("recursive", [False, True], ids=["single", "recursive"])
def test_interrupted_send_leaves_no_hold_and_next_run_succeeds(node, zfs_dataset, recursive, make_node):
    dataset, mountpoint = zfs_dataset
    if recursive:
        sh("zfs", "create", dataset + "/child")
        write_files(Path(str(mountpoint)) / "child", seed=3)
    big = mountpoint / "big.bin"
    big.write_bytes(os.urandom(8 << 20))
    asset = {"name": "data", "type": "zfs", "path": str(mountpoint), "recursive": recursive}
    node.backup([asset])
    big.write_bytes(os.urandom(8 << 20))
    failing = make_node(FailingRepository(node.repository, fail_after=64 << 10))
    with pytest.raises(NodekeepError):
        failing.backup([asset])
    assert not any(userrefs(dataset).values()), userrefs(dataset)
    # the snapshot of the failed run is gone; the base is still there
    assert len(snapshot_names(dataset)) == 1
    manifest = node.backup([asset])
    assert manifest.artifact("data").source["send"] == "incremental"
    assert not any(userrefs(dataset).values()), userrefs(dataset)


def test_killed_send_r_leaks_temporary_holds_that_the_next_run_releases(zfs_dataset):
    dataset, mountpoint = zfs_dataset
    (mountpoint / "big.bin").write_bytes(os.urandom(16 << 20))
    fs = _zfs_mod.Zfs()
    snap = fs.create(dataset, "nodekeep-20260101T000000Z", recursive=True)
    # a run killed in the middle of `zfs send -R`: its PIDs were recorded, it never cleaned up
    sender = subprocess.Popen(["zfs", "send", "-R", snap.ident], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    owner = subprocess.Popen(["sleep", "0"])
    owner.wait()
    sh("zfs", "set", "%s=%d:%d:1" % (snapshot.SENDING_PROPERTY, owner.pid, sender.pid), snap.ident)
    fs.hold(snap, snapshot.HOLD_TAG, recursive=True)
    # `zfs send -R` takes its temporary holds when it starts: wait for them, not for a delay
    deadline = time.monotonic() + 60
    while userrefs(dataset)[snap.ident] < 2 and time.monotonic() < deadline:
        assert sender.poll() is None, "zfs send -R ended before it held the snapshot"
        time.sleep(0.02)
    os.kill(sender.pid, signal.SIGKILL)
    sender.wait()
    sender.stdout.close()
    assert userrefs(dataset)[snap.ident] == 2  # our hold and the leaked temporary one
    with pytest.raises(NodekeepError):
        sh_destroy = subprocess.run(["zfs", "destroy", snap.ident], capture_output=True, check=False)
        if sh_destroy.returncode:
            raise NodekeepError("busy")
    released = fs.clean_stale_sends(dataset)
    assert any(".send-%d-0" % sender.pid in item for item in released), released
    assert userrefs(dataset)[snap.ident] == 0
    fs.destroy(snap, recursive=True)


def test_retention_keeps_what_the_policy_says_and_never_a_held_snapshot(zfs_dataset):
    dataset, _mountpoint = zfs_dataset
    fs = _zfs_mod.Zfs()
    start = datetime(2026, 11, 1, 0, 30, tzinfo=timezone.utc)
    names = []
    for hours in range(0, 24 * 10, 6):  # every 6 hours for 10 days: 40 snapshots
        names.append(snapshot.snapshot_name("nodekeep", epoch_name(start + timedelta(hours=hours))))
    for name in names:
        fs.create(dataset, name)
    sh("zfs", "snapshot", "%s@manual" % dataset)  # not ours: never touched
    sh("zfs", "snapshot", "%s@nodekeep-cg-20261101T003000Z" % dataset)  # a group snapshot: not matched
    held = names[1]
    sh("zfs", "hold", "test", "%s@%s" % (dataset, held))
    policy = RetentionPolicy(keep_last=2, keep_daily=3)
    dry = volumes.prune_snapshots(fs, dataset, policy, dry_run=True)
    assert snapshot_names(dataset)[: len(names)] == names  # nothing changed
    kept = {e["name"] for e in dry["kept"]}
    # last 2 + the first snapshot of each of the 3 newest days
    expected = set(names[-2:]) | {
        snapshot.snapshot_name("nodekeep", epoch_name(datetime(2026, 11, d, 0, 30, tzinfo=timezone.utc)))
        for d in (8, 9, 10)
    }
    assert kept == expected
    assert [e["name"] for e in dry["held"]] == [held]
    result = volumes.prune_snapshots(fs, dataset, policy)
    assert result["changed"] and not result["errors"]
    left = set(snapshot_names(dataset))
    assert left == expected | {held, "manual", "nodekeep-cg-20261101T003000Z"}
    assert {e["name"] for e in result["destroyed"]} == set(names) - expected - {held}
    sh("zfs", "release", "test", "%s@%s" % (dataset, held))


def test_cutover_by_rename_and_rollback(node, zfs_dataset, tmp_path):
    dataset, mountpoint = zfs_dataset
    asset = {"name": "data", "type": "zfs", "path": str(mountpoint)}
    node.backup([asset])
    restored = node.restore(tmp_path / "staging")["artifacts"][0]
    staging = restored["checks"].get("dataset") or next(
        n.split("\t")[0]
        for n in sh("zfs", "list", "-H", "-o", "name,mountpoint").stdout.splitlines()
        if n.endswith(restored["path"])
    )
    (mountpoint / "file00.bin").write_bytes(b"damaged")
    result = volumes.zfs_cutover(staging, dataset)
    # zfs-fuse cannot rename a filesystem: the cutover swaps mountpoints
    assert result["mode"] == "mountpoint" and result["dataset"] == staging and result["previous"] == dataset
    assert (mountpoint / "file00.bin").read_bytes() != b"damaged"
    assert sh("zfs", "get", "-H", "-o", "value", "mountpoint", staging).stdout.strip() == str(mountpoint)
    aside = Path(result["previous_mountpoint"])
    assert (aside / "file00.bin").read_bytes() == b"damaged"
    sh("zfs", "set", "mountpoint=%s" % restored["path"], staging)
    sh("zfs", "set", "mountpoint=%s" % mountpoint, dataset)

    fs = _zfs_mod.Zfs()
    snap = fs.create(dataset, "before-change")
    (mountpoint / "file01.bin").write_bytes(b"bad")
    fs.rollback(snap)
    assert (mountpoint / "file01.bin").read_bytes() != b"bad"


def test_an_asset_naming_only_its_dataset_is_backed_up_from_its_mountpoint(node, zfs_dataset, tmp_path, clear_error):
    """docs/snapshots.md: path is the dataset's mountpoint "(or set dataset: tank/animica)": dataset alone works."""
    dataset, mountpoint = zfs_dataset
    asset = {"name": "chain", "type": "zfs", "dataset": dataset, "full_every": 0, "local_retention": {}}
    manifest = node.backup([asset])
    source = manifest.artifact("chain").source
    assert source["path"] == str(mountpoint) and source["snapshot"]["volume"] == dataset
    restored = node.restore(tmp_path / "staging")["artifacts"][0]
    assert restored["path"] == str(tmp_path / "staging" / str(mountpoint).lstrip("/"))
    snapshot.compare_trees(str(mountpoint), restored["path"])
    # a dataset that does not exist is named as such
    with pytest.raises(NodekeepError) as caught:
        node.backup([dict(asset, dataset=dataset + "-missing")])
    clear_error(caught.value, dataset + "-missing", "does not exist")
