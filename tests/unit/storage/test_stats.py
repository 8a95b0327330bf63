"""What an epoch weighs: plain and stored bytes per asset type, the stats table and the epoch list."""

from __future__ import annotations

from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import Artifact
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.stats import (
    backup_stats,
    epoch_listing,
    plain_bytes,
    restore_stats,
    verify_stats,
)


def artifact(name, size, content, **source):
    return Artifact(name, "sqlite", name + ".age", "x", size, "0" * 64, content, "1" * 64, True, dict(source))


def test_plain_bytes_per_layout():
    assert plain_bytes(artifact("db", 100, 300)) == 300  # a whole database: its plaintext
    tree = Artifact("t", "files", "t.age", "x", 10, "0" * 64, 50, "1" * 64, True, {"entries": {"bytes": 7000}})
    assert plain_bytes(tree) == 7000  # a tree: its files, not its index
    pages = artifact("p", 10, 40, layout="pieces", page_count=256, page_size=4096)
    assert plain_bytes(pages) == 1 << 20  # a page-mapped database: its pages


def test_backup_stats_counts_only_what_the_epoch_added():
    reused = artifact("p", 1000, 2000, layout="pieces", page_count=256, page_size=4096, seconds=2.0, integrity="ok",
                      pieces={"uploaded_bytes": 24 << 10})  # fmt: skip
    whole = artifact("db", 1 << 20, 3 << 20, seconds=1.0, integrity="ok")
    stats = backup_stats([reused, whole], seconds=4.0)
    first, second = stats["assets"]
    assert first["stored_bytes"] == 1000 + (24 << 10) and first["plain_bytes"] == 1 << 20
    assert second["ratio"] == 3.0 and second["rate_bytes_per_second"] == float(3 << 20)
    total = stats["total"]
    assert total["plain_bytes"] == 4 << 20 and total["seconds"] == 4.0 and total["check"] == "ok"
    assert total["rate_bytes_per_second"] == float(1 << 20)
    lines = stats["lines"]
    assert lines[0].split()[:4] == ["asset", "type", "plain", "stored"]
    assert lines[3].split()[:4] == ["db", "sqlite", "3.00", "MiB"]
    assert lines[-1].startswith("total") and "4.00 MiB" in lines[-1] and "1.00 MiB/s" in lines[-1]


class Copy:
    def __init__(self, epochs, locks=None):
        self.epochs, self.locks = epochs, locks or {}

    def complete_epochs(self, node):
        return self.epochs

    def locked_objects(self, node, epoch):
        return [{"retain_until": until} for until in self.locks.get(epoch, [])]


class Manifest:
    def __init__(self, epoch, artifacts):
        self.epoch, self.finished, self.artifacts = epoch, "2026-12-07T14:00:00.5Z", artifacts


def test_the_epoch_list_names_copies_locks_and_checks():
    manifests = [Manifest("E1", [artifact("db", 100, 300)]), Manifest("E2", [artifact("db", 100, 300)])]
    copies = [
        ("local", Copy(["E1", "E2"])),
        ("offsite", Copy(["E1"], {"E1": ["2027-01-01T00:00:00Z", "2027-01-02T00:00:00Z"]})),
    ]
    result = epoch_listing(manifests, copies, "node1", {"E2": "2026-12-07T15:00:00Z (deep)"})
    first, second = result["listing"]
    assert first["copies"] == ["local", "offsite"] and first["locked_until"] == "2027-01-02T00:00:00Z"
    assert second["copies"] == ["local"] and second["locked_until"] is None
    assert first["last_verified"] is None and second["last_verified"] == "2026-12-07T15:00:00Z (deep)"
    assert result["lines"][2].split()[:3] == ["E1", "2026-12-07", "14:00:00"]
    assert result["lines"][-1] == "2 epoch(s), 600 B plain, 200 B stored"


def test_verify_and_restore_stats_share_the_table_and_say_what_was_proven():
    entries = [
        {"name": "db", "asset_type": "sqlite", "checked_bytes": 2 << 20, "seconds": 2.0, "ok": True,
         "content_sha256": "1" * 64, "checks": {"integrity": "ok", "page_count": 512}},
        {"name": "key", "asset_type": "secret", "checked_bytes": 64, "seconds": 0.0, "ok": True, "content_sha256": None},
        {"name": "tree", "asset_type": "files", "checked_bytes": 10, "seconds": 1.0, "ok": False,
         "error": "SHA-256 does not match the manifest"},
    ]  # fmt: skip
    stats = verify_stats(entries, deep=True, seconds=4.0)
    db, key, tree = stats["assets"]
    assert (
        db["proven"] == "signature, sealed and plain SHA-256, integrity ok" and db["rate_bytes_per_second"] == 1 << 20
    )
    assert (
        key["proven"] == "signature, sealed SHA-256, plain size (age-authenticated)"
        and key["rate_bytes_per_second"] is None
    )
    assert tree["result"] == "FAILED" and tree["proven"] == "SHA-256 does not match the manifest"
    assert stats["total"] == {"assets": 3, "bytes": (2 << 20) + 74, "seconds": 4.0,
                              "rate_bytes_per_second": round(((2 << 20) + 74) / 4.0, 1), "result": "FAILED (1)",
                              "proven": ""}  # fmt: skip
    assert verify_stats(entries[:1], deep=False)["assets"][0]["proven"] == "signature, sealed SHA-256, integrity ok"
    assert stats["lines"][0].split() == ["asset", "type", "checked", "duration", "throughput", "result", "proven"]
    assert stats["lines"][-1].split()[:5] == ["total", "3", "asset(s)", "2.00", "MiB"]

    restored = restore_stats([{"name": "db", "asset_type": "sqlite", "size": 100, "plain_size": 7000, "seconds": 1.0,
                               "sha256": "2" * 64, "checks": {"integrity": "ok", "integrity_proven": "capture"}}])  # fmt: skip
    (row,) = restored["assets"]
    assert (
        row["bytes"] == 7000
        and row["proven"] == "signature, sealed and plain SHA-256, integrity ok (at capture, same bytes)"
    )
    assert restored["lines"][0].split()[2] == "restored" and restored["total"]["result"] == "ok"
