"""Retention: the pure policy (which epochs to keep and why) and its application to a local repository."""

from __future__ import annotations

import io
import os
from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal, signing
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import (
    epoch_name,
    parse_calendar_duration,
    period_key,
    subtract_duration,
    utc_now_iso,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    Artifact,
    Manifest,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.prune import apply_retention
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy, plan
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository

UTC = timezone.utc


def at(*args) -> str:
    return epoch_name(datetime(*args, tzinfo=UTC))


def kept(decisions) -> list:
    return [d.epoch for d in decisions if d.keep]


def hourly_epochs(start: datetime, hours: int, minute: int = 30) -> list:
    return [epoch_name(start + timedelta(hours=h, minutes=minute)) for h in range(hours)]


# --------------------------------------------------------------------------
# periods and durations
# --------------------------------------------------------------------------


class TestPeriods:
    @pytest.mark.parametrize(
        ("period", "moment", "key"),
        [
            ("hourly", datetime(2026, 11, 22, 2, 59, tzinfo=UTC), "2026-11-22T02"),
            ("daily", datetime(2026, 11, 22, 23, 59, tzinfo=UTC), "2026-11-22"),
            ("weekly", datetime(2026, 11, 22, tzinfo=UTC), "2026-W47"),  # a Sunday ends ISO week 47
            ("weekly", datetime(2026, 11, 23, tzinfo=UTC), "2026-W48"),  # Monday starts the next
            ("weekly", datetime(2027, 1, 1, tzinfo=UTC), "2026-W53"),  # ISO year, not calendar year
            ("monthly", datetime(2026, 2, 28, tzinfo=UTC), "2026-02"),
            ("yearly", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "2026"),
        ],
    )
    def test_period_keys_are_utc_buckets(self, period, moment, key):
        assert period_key(period, moment) == key

    def test_a_local_time_falls_in_its_utc_bucket(self):
        moment = datetime(2026, 11, 22, 1, 0, tzinfo=timezone(timedelta(hours=5)))
        assert period_key("daily", moment) == "2026-11-21"

    @pytest.mark.parametrize(
        ("text", "parts"),
        [
            ("7d", {"d": 7}),
            ("36h", {"h": 36}),
            ("1y6m", {"y": 1, "m": 6}),
            ("2w 3d", {"w": 2, "d": 3}),
            ("1Y2M", {"y": 1, "m": 2}),
        ],
    )
    def test_durations(self, text, parts):
        expected = {"y": 0, "m": 0, "w": 0, "d": 0, "h": 0}
        expected.update(parts)
        assert parse_calendar_duration(text) == expected

    @pytest.mark.parametrize("text", ["", "7", "seven days", "7x", "1d junk", "-1d"])
    def test_bad_durations_are_refused_clearly(self, text):
        with pytest.raises(NodekeepError) as raised:
            parse_calendar_duration(text)
        assert "units y (years), m (months)" in raised.value.message

    def test_months_are_calendar_months_clamped_to_the_month_end(self):
        moment = datetime(2026, 3, 31, 12, tzinfo=UTC)
        assert subtract_duration(moment, parse_calendar_duration("1m")) == datetime(2026, 2, 28, 12, tzinfo=UTC)
        assert subtract_duration(moment, parse_calendar_duration("1y1m")) == datetime(2025, 2, 28, 12, tzinfo=UTC)
        assert subtract_duration(moment, parse_calendar_duration("3m")) == datetime(2025, 12, 31, 12, tzinfo=UTC)
        assert subtract_duration(moment, parse_calendar_duration("1w1d2h")) == datetime(2026, 3, 23, 10, tzinfo=UTC)


# --------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------


class TestPlan:
    def test_a_policy_that_keeps_nothing_is_refused(self):
        with pytest.raises(NodekeepError) as raised:
            plan([at(2026, 11, 22)], RetentionPolicy())
        assert "keeps nothing" in raised.value.message
        assert "nothing was removed" in raised.value.message

    @pytest.mark.parametrize("field", ["keep_last", "keep_daily", "keep_monthly"])
    def test_negative_counts_are_refused(self, field):
        with pytest.raises(NodekeepError, match=field):
            plan([at(2026, 11, 22)], RetentionPolicy(**{field: -1}))

    def test_unknown_pick_is_refused(self):
        with pytest.raises(NodekeepError, match="pick"):
            RetentionPolicy(keep_last=1, pick="newest").validate()

    def test_no_epochs_no_decisions(self):
        assert plan([], RetentionPolicy(keep_last=3)) == []

    def test_names_that_are_not_epochs_are_refused(self):
        with pytest.raises(NodekeepError):
            plan(["latest"], RetentionPolicy(keep_last=3))

    def test_keep_last(self):
        epochs = hourly_epochs(datetime(2026, 11, 22, tzinfo=UTC), 5)
        decisions = plan(epochs, RetentionPolicy(keep_last=2))
        assert kept(decisions) == epochs[-2:]
        assert decisions[-1].reasons == ["last 2"]
        gone = decisions[0]
        assert not gone.keep
        assert gone.reasons == ["no rule keeps it (policy: last 2 (pick first of each period))"]

    def test_the_newest_epoch_is_always_kept(self):
        epochs = [at(2026, 1, 1), at(2026, 11, 22, 3)]
        decisions = plan(epochs, RetentionPolicy(keep_yearly=1))
        # keep_yearly picks the first epoch of 2026; the newest stays anyway
        assert kept(decisions) == epochs
        assert decisions[-1].reasons == ["the newest epoch is always kept"]

    def test_daily_picks_the_first_epoch_of_each_day_by_default(self):
        epochs = hourly_epochs(datetime(2026, 11, 20, tzinfo=UTC), 72)  # three days, 00:30 to 23:30
        decisions = plan(epochs, RetentionPolicy(keep_daily=2))
        assert kept(decisions) == [at(2026, 11, 21, 0, 30), at(2026, 11, 22, 0, 30), epochs[-1]]
        by_name = {d.epoch: d.reasons for d in decisions}
        assert by_name[at(2026, 11, 22, 0, 30)] == ["daily 2026-11-22 (1 of 2)"]
        assert by_name[at(2026, 11, 21, 0, 30)] == ["daily 2026-11-21 (2 of 2)"]

    def test_pick_last_is_restics_choice(self):
        epochs = hourly_epochs(datetime(2026, 11, 20, tzinfo=UTC), 72)
        decisions = plan(epochs, RetentionPolicy(keep_daily=2, pick="last"))
        assert kept(decisions) == [at(2026, 11, 21, 23, 30), at(2026, 11, 22, 23, 30)]

    def test_only_periods_that_have_an_epoch_count(self):
        # gaps: nothing on the 21st and 23rd; keep_daily=3 reaches back to the 19th
        epochs = [at(2026, 11, 19, 2), at(2026, 11, 20, 2), at(2026, 11, 22, 2), at(2026, 11, 24, 2)]
        assert kept(plan(epochs, RetentionPolicy(keep_daily=3))) == epochs[1:]

    def test_a_year_of_daily_backups_with_a_classic_policy(self):
        start = datetime(2026, 1, 1, 2, 30, tzinfo=UTC)
        epochs = [epoch_name(start + timedelta(days=d)) for d in range(365)]  # 2026-01-01 .. 2026-12-31
        decisions = plan(epochs, RetentionPolicy(keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=2))
        keep = set(kept(decisions))
        days = {at(2026, 12, d, 2, 30) for d in range(25, 32)}
        # ISO weeks 50..53 of 2026: the first epoch of each is its Monday (53 starts on Mon 28 Dec)
        weeks = {at(2026, 12, 7, 2, 30), at(2026, 12, 14, 2, 30), at(2026, 12, 21, 2, 30), at(2026, 12, 28, 2, 30)}
        months = {at(2026, m, 1, 2, 30) for m in range(7, 13)}
        years = {at(2026, 1, 1, 2, 30)}
        assert keep == days | weeks | months | years
        reasons = {d.epoch: d.reasons for d in decisions}
        assert reasons[at(2026, 12, 28, 2, 30)] == ["daily 2026-12-28 (4 of 7)", "weekly 2026-W53 (1 of 4)"]
        assert reasons[at(2026, 1, 1, 2, 30)] == ["yearly 2026 (1 of 2)"]

    def test_keep_within_counts_back_from_the_newest_epoch_not_from_now(self):
        # backups stopped long ago: keep_within must not empty the repository
        epochs = hourly_epochs(datetime(2020, 5, 1, tzinfo=UTC), 48)
        decisions = plan(epochs, RetentionPolicy(keep_within="1d"))
        assert kept(decisions) == [e for e in epochs if e >= at(2020, 5, 1, 23, 30)]
        assert decisions[-1].reasons == ["within 1d of the newest epoch"]

    def test_rules_add_up_and_every_kept_epoch_says_why(self):
        epochs = hourly_epochs(datetime(2026, 10, 30, tzinfo=UTC), 24 * 5)
        policy = RetentionPolicy(keep_last=3, keep_hourly=5, keep_daily=2, keep_monthly=2, keep_within="2h")
        decisions = plan(epochs, policy)
        for decision in decisions:
            assert decision.reasons, decision
        newest = decisions[-1]
        assert newest.reasons[0] == "last 3"
        assert "hourly 2026-11-03T23 (1 of 5)" in newest.reasons
        assert "within 2h of the newest epoch" in newest.reasons
        monthly = {d.epoch for d in decisions if any(r.startswith("monthly") for r in d.reasons)}
        assert monthly == {at(2026, 10, 30, 0, 30), at(2026, 11, 1, 0, 30)}

    def test_plans_are_deterministic_and_sorted(self):
        epochs = hourly_epochs(datetime(2026, 11, 20, tzinfo=UTC), 30)
        shuffled = list(reversed(epochs)) + epochs[:3]
        assert plan(shuffled, RetentionPolicy(keep_daily=2)) == plan(epochs, RetentionPolicy(keep_daily=2))
        assert [d.epoch for d in plan(shuffled, RetentionPolicy(keep_daily=2))] == epochs


# --------------------------------------------------------------------------
# applying a plan to a repository
# --------------------------------------------------------------------------


def make_epoch(repository, node: str, epoch: str, age_key, key, complete: bool = True) -> None:
    recipients = seal.load_recipients([age_key.recipient])
    with repository.open_write(node, epoch, "data.bin.zst.age") as sink:
        result = seal.seal(io.BytesIO(os.urandom(1024)), sink, recipients)
    if not complete:
        return
    artifact = Artifact(
        "data", "files", "data.bin.zst.age", "raw+zstd+age", result.sealed.size, result.sealed.sha256,
        result.content.size, result.content.sha256,
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
        assert result["locked"][0]["reasons"][-1] == "not removed: 1 object(s) locked (COMPLIANCE until 2099-01-01T00:00:00Z)"
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
            repository, "node1", RetentionPolicy(keep_last=1), other_signing_key.public_line, now=self.NOW,
            prune_incomplete=False,
        )
        # only the epoch signed by that key counts; every other one is unverified and stays
        assert [e["epoch"] for e in result["kept"]] == [forged]
        assert result["removed"] == []
        assert len(result["unverified"]) == len(days)
