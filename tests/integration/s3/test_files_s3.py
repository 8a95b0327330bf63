"""Files assets and S3: epoch_copy copies the objects an epoch needs (only those the bucket lacks), verify
and restore work from the bucket, Object Lock covers reused objects, and GC runs there too."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets import _files_capture as files_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_time
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import MANIFEST_NAME, SIGNATURE_NAME
from ansible_collections.nodekeep.backup.plugins.module_utils.ops import replicate as replicate_mod
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import OBJECT_WORKERS, copy_epoch, replicate
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3_TARGET_OPTIONS

pytestmark = pytest.mark.timeout(300)


def make_tree(root: Path, count: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    for number in range(count):
        path = root / ("%02x" % (number % 16)) / ("blob-%04d" % number)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randint(100, 3000)))
        os.chmod(path, 0o640)
    os.symlink("00/blob-0000", root / "latest")


def meta(root: Path) -> dict:
    result = {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            info = os.lstat(path)
            content = (
                os.readlink(path)
                if os.path.islink(path)
                else (Path(path).read_bytes() if os.path.isfile(path) else None)
            )
            result[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, info.st_mtime_ns, content)
    return result


def test_copy_files_epochs_to_s3_restore_and_collect(
    s3_server, repository, s3_node, signing_key, tmp_path, monkeypatch
):
    monkeypatch.setattr(files_mod, "PACK_SIZE", 1)  # one file per pack: copies and GC counted per file
    store = tmp_path / "da"
    make_tree(store, 150)
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    first = node.backup([asset])
    bucket = s3_server.bucket(lock=False)
    target = s3_server.repository(bucket, "fleet")

    copied = copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
    contents = copied["contents"]
    assert contents["objects"] == len(repository.object_names("node1")) == 150
    assert contents["files"] == 1 and set(target.object_names("node1")) == set(repository.object_names("node1"))

    (store / "00" / "blob-0000").write_bytes(b"new content")
    (store / "new-file").write_bytes(b"another")
    second = node.backup([asset])
    again = copy_epoch(repository, target, "node1", second.epoch, signing_key.public_line)
    assert again["contents"]["objects"] == 2 and again["contents"]["present"] == 149

    s3 = s3_node(target, "node1")
    report = s3.verify()
    assert report["ok"], report["problems"]
    assert s3.verify(deep=True)["ok"]
    restored = s3.restore(tmp_path / "from-s3")
    (artifact,) = restored["artifacts"]
    assert meta(Path(artifact["path"])) == meta(store)

    later = datetime.now(timezone.utc) + timedelta(days=2)
    result = apply_retention(target, "node1", RetentionPolicy(keep_last=1), signing_key.public_line, now=later)
    assert result["removed"][0]["epoch"] == first.epoch
    assert result["objects"]["removed"] == 1  # the old content of blob-0000
    assert len(target.object_names("node1")) == 151
    assert s3.verify()["ok"]


def test_locked_target_extends_the_lock_of_reused_objects(s3_server, repository, s3_node, signing_key, tmp_path):
    store = tmp_path / "da"
    make_tree(store, 20)
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    (store / "large").write_bytes(os.urandom(files_mod.PACK_MEMBER_MAX + 1))  # an object of its own
    first = node.backup([asset])
    assert first.artifacts[0].source["objects"]["new_packs"] == 1  # the 20 small files
    target = s3_server.repository(s3_server.bucket(lock=True), object_lock_mode="GOVERNANCE", retain_days=1)
    copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
    assert len(target.object_names("node1")) == 2
    name = min(target.object_names("node1"))
    until_first = target.object_lock_info("node1", name)["retain_until"]
    assert until_first is not None

    # Epoch ids have one-second resolution and lock comparisons tolerate one second of
    # S3 rounding, so the second epoch must be at least two seconds later: the clock is injected.
    second = node.backup([asset], now=epoch_time(first.epoch) + timedelta(seconds=3))
    result = copy_epoch(repository, target, "node1", second.epoch, signing_key.public_line)
    assert result["contents"]["objects"] == 0 and result["contents"]["locks_extended"] == 2
    assert target.object_lock_info("node1", name)["retain_until"] > until_first


def object_path(repository, name: str) -> Path:
    return Path(repository.root) / "node1" / "objects" / name[:2] / name


def count_in_flight(monkeypatch, target) -> dict:
    """Wrap ``target.put_object`` to record how many object uploads ran at the same time, and in which threads."""
    seen = {"now": 0, "most": 0, "threads": set()}
    lock = threading.Lock()
    put_object = target.put_object

    @contextlib.contextmanager
    def counted(*args, **kwargs):
        with lock:
            seen["now"] += 1
            seen["most"] = max(seen["most"], seen["now"])
            seen["threads"].add(threading.current_thread().name)
        try:
            with put_object(*args, **kwargs) as sink:
                yield sink
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(target, "put_object", counted)
    return seen


def test_many_objects_are_copied_side_by_side_complete_locked_and_extended(
    s3_server, repository, s3_node, signing_key, tmp_path, monkeypatch
):
    monkeypatch.setattr(files_mod, "PACK_SIZE", 1)  # one object per small file
    store = tmp_path / "da"
    make_tree(store, 300, seed=11)
    (store / "large").write_bytes(os.urandom(6 << 20))  # beyond the 5 MiB part size: a multipart object
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    first = node.backup([asset])
    local = repository.object_names("node1")
    assert len(local) == 301
    target = s3_server.repository(s3_server.bucket(lock=True), object_lock_mode="GOVERNANCE", retain_days=1)
    seen = count_in_flight(monkeypatch, target)

    copied = copy_epoch(repository, target, "node1", first.epoch, signing_key.public_line)
    assert copied["status"] == "copied"
    assert copied["contents"]["objects"] == 301 and copied["contents"]["present"] == 0
    assert 1 < seen["most"] <= OBJECT_WORKERS + 1  # the pool, and the multipart object beside it
    stored = target.object_names("node1")
    assert {name: facts[0] for name, facts in stored.items()} == {name: facts[0] for name, facts in local.items()}
    assert target.is_complete("node1", first.epoch)
    s3 = s3_node(target, "node1")
    assert s3.verify(first.epoch)["ok"]  # reads every object back and checks its SHA-256
    until = target.lock_for("node1", first.epoch)["until"]
    for name in stored:
        info = target.object_lock_info("node1", name)
        assert info["lock_mode"] == "GOVERNANCE" and abs(info["retain_until"] - until) < timedelta(seconds=2), name

    second = node.backup([asset], now=epoch_time(first.epoch) + timedelta(seconds=3))  # a later id (see above)
    again = copy_epoch(repository, target, "node1", second.epoch, signing_key.public_line)
    contents = again["contents"]
    assert contents["objects"] == 0 and contents["present"] == 301 and contents["locks_extended"] == 301
    later = target.lock_for("node1", second.epoch)["until"]
    assert later > until
    for name in stored:
        assert abs(target.object_lock_info("node1", name)["retain_until"] - later) < timedelta(seconds=2), name
    restored = s3.restore(tmp_path / "from-s3")
    assert meta(Path(restored["artifacts"][0]["path"])) == meta(store)


def test_object_workers_1_of_a_target_copies_its_objects_one_at_a_time(
    s3_server, repository, s3_node, signing_key, tmp_path, monkeypatch
):
    monkeypatch.setattr(files_mod, "PACK_SIZE", 1)  # one object per small file
    store = tmp_path / "da"
    make_tree(store, 40, seed=7)
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    epoch = node.backup([asset]).epoch
    # The target as a module's targets entry (what the backup and schedule roles pass through).
    target = S3Repository.from_spec(s3_server.target(s3_server.bucket(lock=False), "fleet", object_workers=1))
    assert target.object_workers == 1
    seen = count_in_flight(monkeypatch, target)

    report = replicate(repository, target, "node1", [epoch], signing_key.public_line)  # no object_workers given
    assert report["ok"], report
    (copied,) = report["copied"]
    assert copied["contents"]["objects"] == 40
    assert seen["most"] == 1  # one after the other
    assert seen["threads"] == {threading.current_thread().name}  # in the copying thread: no pool
    assert set(target.object_names("node1")) == set(repository.object_names("node1"))
    assert s3_node(target, "node1").verify(epoch)["ok"]


def test_object_workers_default_and_local_targets():
    spec = {name: option.get("default") for name, option in S3_TARGET_OPTIONS.items()}  # as a module passes it
    spec["bucket"] = "nk-defaults"
    assert S3Repository.from_spec(spec).object_workers == OBJECT_WORKERS == 4
    assert S3Repository.from_spec(dict(spec, object_workers="2")).object_workers == 2
    local = type("Local", (), {"kind": "local"})()  # no object_workers attribute: a local-path target
    assert replicate_mod._workers_for(local) == OBJECT_WORKERS
    assert replicate_mod._workers_for(S3Repository.from_spec(dict(spec, object_workers=7))) == 7
    assert replicate_mod._workers_for(S3Repository.from_spec(dict(spec, object_workers=7)), 2) == 2  # explicit wins


@pytest.mark.parametrize("value", [0, -1, "many", 1.5, True, 65, 10**12])
def test_object_workers_below_1_or_not_a_number_is_refused_naming_the_option(value):
    spec = {name: option.get("default") for name, option in S3_TARGET_OPTIONS.items()}
    spec.update(bucket="nk-refused", object_workers=value)
    with pytest.raises(RepositoryError) as caught:
        S3Repository.from_spec(spec)
    shown = "object_workers %r" % value if isinstance(value, str) else "object_workers %s" % value
    problem = "is out of range" if isinstance(value, int) and not isinstance(value, bool) else "is not a whole number"
    assert caught.value.message == (
        "%s %s: give 1 to 64; how many object uploads one epoch copy runs at once for this target "
        "(1: one at a time; default 4), or leave it out" % (shown, problem)
    )


def test_a_damaged_object_stops_the_copy_before_the_manifest_and_the_next_run_completes_it(
    s3_server, repository, s3_node, signing_key, tmp_path, monkeypatch
):
    monkeypatch.setattr(files_mod, "PACK_SIZE", 1)
    store = tmp_path / "da"
    make_tree(store, 160, seed=5)
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    epoch = node.backup([asset]).epoch
    names = sorted(repository.object_names("node1"))
    damaged = object_path(repository, names[len(names) // 3])
    original = damaged.read_bytes()
    os.chmod(damaged, 0o600)
    damaged.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same size, other bytes
    target = s3_server.repository(s3_server.bucket(lock=False), "fleet")

    report = replicate(repository, target, "node1", [epoch], signing_key.public_line)
    assert not report["ok"] and report["copied"] == []
    assert report["failed"]["epoch"] == epoch
    assert report["failed"]["error"] == (
        "%s does not match its signed checksum (size %d, expected %d): the source copy is damaged; it was not "
        "copied. Verify the source epoch"
        % (repository.describe_object("node1", damaged.name), len(original), len(original))
    )
    present = target.files("node1", epoch)
    assert MANIFEST_NAME not in present and SIGNATURE_NAME not in present
    assert not target.is_complete("node1", epoch) and target.complete_epochs("node1") == []
    stored = target.object_names("node1")
    assert damaged.name not in stored
    assert len(stored) < len(names) - OBJECT_WORKERS  # the queued uploads did not start

    damaged.write_bytes(original)
    report = replicate(repository, target, "node1", [epoch], signing_key.public_line)
    assert report["ok"], report
    (copied,) = report["copied"]
    assert copied["contents"]["present"] == len(stored)
    assert copied["contents"]["objects"] == len(names) - len(stored)
    assert set(target.object_names("node1")) == set(names)
    assert s3_node(target, "node1").verify(epoch)["ok"]


def test_the_bandwidth_limit_holds_for_all_object_uploads_together(
    s3_server, repository, s3_node, signing_key, tmp_path, monkeypatch
):
    monkeypatch.setattr(files_mod, "PACK_SIZE", 1)
    store = tmp_path / "da"
    store.mkdir()
    for number in range(48):
        (store / ("blob-%02d" % number)).write_bytes(os.urandom(40 << 10))
    node = s3_node(repository, "node1")
    asset = {"name": "da", "type": "files", "path": str(store), "state_dir": str(tmp_path / "state")}
    epoch = node.backup([asset]).epoch
    sent = sum(facts[0] for facts in repository.object_names("node1").values())
    assert sent > 3 * (512 << 10)
    target = s3_server.repository(s3_server.bucket(lock=False), bandwidth_limit="512K")

    began = time.monotonic()
    result = copy_epoch(repository, target, "node1", epoch, signing_key.public_line)
    seconds = time.monotonic() - began
    assert result["contents"]["objects"] == 48
    # A one-second burst, then 512 KiB/s for the objects alone (the index and the lists add to it).
    assert seconds >= (sent - (512 << 10)) / (512 << 10) * 0.95, (seconds, sent)
    stats = target.transfer_stats()
    assert stats["throttled_seconds"] <= seconds  # wall-clock time, not the sum of the workers' waits
    assert stats["throttled_bytes"] >= sent
