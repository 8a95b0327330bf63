"""Retention: the pure policy (which epochs to keep and why) and the calendar periods it counts in."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import (
    epoch_name,
    parse_calendar_duration,
    period_key,
    subtract_duration,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy, plan

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
