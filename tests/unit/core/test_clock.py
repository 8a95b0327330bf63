"""core/clock.py: the one epoch timestamp and the calendar durations of retention."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import (
    EPOCH_RE,
    epoch_name,
    epoch_time,
    parse_calendar_duration,
)
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError

UTC = timezone.utc


class TestEpochName:
    def test_a_utc_time_a_unix_time_and_an_aware_local_time_name_the_same_second(self):
        moment = datetime(2026, 12, 7, 10, 30, 5, 999999, tzinfo=UTC)
        local = moment.astimezone(timezone(timedelta(hours=2)))
        assert epoch_name(moment) == epoch_name(moment.timestamp()) == epoch_name(local) == "20261207T103005Z"

    def test_now_is_a_valid_epoch_name_that_reads_back(self):
        before = datetime.now(UTC).replace(microsecond=0)
        name = epoch_name()
        assert EPOCH_RE.match(name)
        assert before <= epoch_time(name) <= datetime.now(UTC)

    def test_epoch_time_refuses_what_is_not_an_epoch(self):
        for bad in ("2026-12-07", "20261307T000000Z", "20261207T000000"):
            with pytest.raises(NodekeepError):
                epoch_time(bad)


class TestCalendarDuration:
    def test_units_add_up(self):
        assert parse_calendar_duration("1y6m 2w3d12h") == {"y": 1, "m": 6, "w": 2, "d": 3, "h": 12}

    @pytest.mark.parametrize("option", ["keep_within", "incomplete_grace"])
    def test_an_error_names_the_option_the_operator_sets(self, option):
        with pytest.raises(NodekeepError) as raised:
            parse_calendar_duration("90 minutes", option)
        assert raised.value.problem.startswith("%s '90 minutes' is not a duration" % option)
        assert raised.value.remedy
