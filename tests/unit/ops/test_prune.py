"""ops/prune.py: a retention plan applied to a local repository (signed epochs only, locks and running
backups respected, nothing removed on a bad key)."""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import epoch_name, utc_now_iso
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Manifest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import (
    apply_retention,
    retention_diff,
    retention_summary,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

UTC = timezone.utc


def at(*args) -> str:
    return epoch_name(datetime(*args, tzinfo=UTC))


def make_epoch(repository, node: str, epoch: str, age_key, key, complete: bool = True) -> None:
    recipients = seal.load_recipients([age_key.recipient])
    with repository.open_write(node, epoch, "data.bin.zst.age") as sink:
        result = seal.seal(io.BytesIO(os.urandom(1024)), sink, recipients)
    if not complete:
        return
    artifact = Artifact(
        "data",
        "files",
        "data.bin.zst.age",
        "raw+zstd+age",
        result.sealed.size,
        result.sealed.sha256,
        result.content.size,
        result.content.sha256,
    )
    now = utc_now_iso()
    data = Manifest(node, epoch, now, now, [age_key.recipient], [artifact]).to_bytes()
    repository.put_bytes(node, epoch, MANIFEST_NAME, data)
    repository.put_bytes(node, epoch, SIGNATURE_NAME, signing.sign(data, key).encode("ascii"))


class LockingRepository(LocalRepository):
    """A local repository that reports some epochs as locked, as S3 Object Lock would."""

    locked: frozenset = frozenset()

    def locked_objects(self, node, epoch, now=None):
        if epoch in self.locked:
            return [{"name": "data.bin.zst.age", "reason": "COMPLIANCE until 2099-01-01T00:00:00Z"}]
        return []


class TestApply:
    NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)

    @pytest.fixture
    def filled(self, tmp_path, age_key, signing_key, other_signing_key):
        repository = LockingRepository(str(tmp_path / "repo"))
        repository.locked = frozenset()
        days = [at(2026, 11, d, 2, 30) for d in range(15, 22)]  # 15th..21st
        for epoch in days:
            make_epoch(repository, "node1", epoch, age_key, signing_key.key)
        forged = at(2026, 11, 14, 2, 30)  # signed with another node's key
        make_epoch(repository, "node1", forged, age_key, other_signing_key.key)
        stale = at(2026, 11, 13, 2, 30)  # a run that died long ago
        running = at(2026, 11, 22, 11, 59)  # a run that may still be going
        make_epoch(repository, "node1", stale, age_key, signing_key.key, complete=False)
        make_epoch(repository, "node1", running, age_key, signing_key.key, complete=False)
        return repository, days, forged, stale, running

    def run(self, repository, signing_key, **kwargs):
        return apply_retention(
            repository, "node1", RetentionPolicy(keep_daily=3), signing_key.public_line, now=self.NOW, **kwargs
        )

    def test_a_bad_incomplete_grace_is_named_and_removes_nothing(self, filled, signing_key):
        """The error names incomplete_grace (the option the operator sets), not keep_within."""
        repository = filled[0]
        before = repository.epoch_names("node1")
        with pytest.raises(NodekeepError) as raised:
            self.run(repository, signing_key, incomplete_grace="soon")
        assert "incomplete_grace 'soon' is not a duration" in raised.value.problem
        assert "keep_within" not in raised.value.message
        assert repository.epoch_names("node1") == before

    def test_dry_run_lists_what_would_go_and_removes_nothing(self, filled, signing_key):
        repository, days, _forged, stale, _running = filled
        before = repository.epoch_names("node1")
        result = self.run(repository, signing_key, dry_run=True)
        assert repository.epoch_names("node1") == before
        assert result["dry_run"] is True
        assert result["changed"] is False
        assert [e["epoch"] for e in result["kept"]] == days[-3:]
        assert [e["epoch"] for e in result["removed"]] == [stale] + days[:4]
        assert all(e["dry_run"] for e in result["removed"])
        assert result["removed"][0]["reasons"] == ["incomplete (no signed manifest) and older than 1d"]
        assert result["removed"][1]["reasons"][0].startswith("no rule keeps it (policy: daily 3")

    def test_apply_removes_whole_epochs_and_leaves_the_rest(self, filled, signing_key):
        repository, days, forged, _stale, running = filled
        result = self.run(repository, signing_key)
        assert result["changed"] is True
        assert repository.epoch_names("node1") == sorted([forged, running] + days[-3:])
        # a signature that does not verify: neither counted nor removed
        assert [e["epoch"] for e in result["unverified"]] == [forged]
        assert "not counted and not removed" in result["unverified"][0]["reasons"][0]
        # an incomplete epoch younger than the grace period may be a backup still running
        assert result["incomplete"] == [
            {"epoch": running, "reasons": ["incomplete but younger than 1d: it may still be running"]}
        ]
        assert result["errors"] == []
        again = self.run(repository, signing_key)
        assert again["removed"] == []
        assert again["changed"] is False

    def test_locked_epochs_are_skipped_and_reported(self, filled, signing_key):
        repository, days, _forged, _stale, _running = filled
        repository.locked = frozenset({days[0], days[2]})
        result = self.run(repository, signing_key)
        assert [e["epoch"] for e in result["locked"]] == [days[0], days[2]]
        assert (
            result["locked"][0]["reasons"][-1]
            == "not removed: 1 object(s) locked (COMPLIANCE until 2099-01-01T00:00:00Z)"
        )
        assert days[0] in repository.complete_epochs("node1")
        assert days[1] not in repository.epoch_names("node1")
        assert days[2] in repository.complete_epochs("node1")

    def test_prune_incomplete_off_keeps_them(self, filled, signing_key):
        repository, _days, _forged, stale, running = filled
        result = self.run(repository, signing_key, prune_incomplete=False)
        assert {e["epoch"] for e in result["incomplete"]} == {stale, running}
        assert set(repository.incomplete_epochs("node1")) == {stale, running}

    def test_a_wrong_public_key_removes_nothing(self, filled, other_signing_key):
        repository, days, forged, _stale, _running = filled
        result = apply_retention(
            repository,
            "node1",
            RetentionPolicy(keep_last=1),
            other_signing_key.public_line,
            now=self.NOW,
            prune_incomplete=False,
        )
        # only the epoch signed by that key counts; every other one is unverified and stays
        assert [e["epoch"] for e in result["kept"]] == [forged]
        assert result["removed"] == []
        assert len(result["unverified"]) == len(days)


class TestPreview:
    """What an operator reads of a plan (issue 16): every epoch with its rule, as restic forget --dry-run."""

    NOW = TestApply.NOW
    filled = TestApply.filled

    def test_the_summary_names_the_rule_that_keeps_each_epoch_and_why_the_rest_go(self, filled, signing_key):
        repository, days, forged, stale, running = filled
        result = apply_retention(
            repository, "node1", RetentionPolicy(keep_last=1, keep_daily=3), signing_key.public_line,
            now=self.NOW, dry_run=True,
        )
        assert result["changes"] is True and result["changed"] is False
        lines = retention_summary(result)
        assert lines[0].endswith("policy: last 1, daily 3 (pick first of each period) [dry run: nothing removed]")
        assert lines[1] == "keep 3 epochs:"
        assert lines[2:5] == [
            "  %s  daily 2026-11-19 (3 of 3)" % days[-3],
            "  %s  daily 2026-11-20 (2 of 3)" % days[-2],
            "  %s  last 1; daily 2026-11-21 (1 of 3)" % days[-1],
        ]
        assert lines[5] == "would remove 5 epochs:"
        assert lines[6] == "  %s  incomplete (no signed manifest) and older than 1d" % stale
        assert lines[7].startswith("  %s  no rule keeps it (policy: last 1, daily 3" % days[0])
        assert "not counted (signature does not verify), kept 1 epoch:" in lines
        assert any(line.startswith("  %s  not counted and not removed" % forged) for line in lines)
        assert "incomplete, left 1 epoch:" in lines
        assert "  %s  incomplete but younger than 1d: it may still be running" % running in lines

    def test_locked_epochs_say_the_lock_keeps_them(self, filled, signing_key):
        repository, days, _forged, _stale, _running = filled
        repository.locked = frozenset({days[0]})
        lines = retention_summary(self.run(repository, signing_key, dry_run=True))
        assert "locked, kept (the policy drops) 1 epoch:" in lines
        (line,) = [line for line in lines if line.startswith("  %s" % days[0])]
        assert "not removed: 1 object(s) locked (COMPLIANCE until 2099-01-01T00:00:00Z)" in line

    def test_the_diff_drops_exactly_the_removed_epochs(self, filled, signing_key):
        repository, days, forged, stale, running = filled
        result = self.run(repository, signing_key, dry_run=True)
        diff = retention_diff(result)
        before = diff["before"].splitlines()
        after = diff["after"].splitlines()
        assert before == sorted(before) and len(before) == len(days) + 3
        assert "%s  (incomplete)" % stale in before and "%s  (incomplete)" % running in before
        assert "%s  (signature does not verify)" % forged in before
        assert set(before) - set(after) == {days[0], days[1], days[2], days[3], "%s  (incomplete)" % stale}
        real = self.run(repository, signing_key)
        assert {e["epoch"] for e in real["removed"]} == {e["epoch"] for e in result["removed"]}
        assert retention_diff(real)["after"] == diff["after"]

    def run(self, repository, signing_key, **kwargs):
        return apply_retention(
            repository, "node1", RetentionPolicy(keep_daily=3), signing_key.public_line, now=self.NOW, **kwargs
        )
