"""Every numeric option is range-checked, and the error names the option and the value as the operator typed
them: ``subset: daily/0`` is reported as 'daily/0' (not '1/0'), ``incomplete_grace: 0s`` as incomplete_grace
(not keep_within), ``compression_level: 99`` and ``subset: 1/99999999999999999999`` are refused instead of
accepted silently (the latter verified zero artifacts and said ok)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import normalize_assets
from ansible_collections.nodekeep.backup.plugins.module_utils.assets.sqlite_db import plan_sqlite_backup
from ansible_collections.nodekeep.backup.plugins.module_utils.core.clock import parse_calendar_duration
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, check_range
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import parse_subset
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.snapshot.state import run_state
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3Settings


def refused(call, *needles: str) -> str:
    with pytest.raises(NodekeepError) as caught:
        call()
    text = caught.value.message
    for needle in needles:
        assert needle in text, (needle, text)
    return text


class TestSubset:
    def test_daily_zero_is_named_as_typed(self):
        text = refused(lambda: parse_subset("daily/0"), "subset 'daily/0'", "1 to 10000 runs")
        assert "'1/0'" not in text

    def test_an_absurd_cycle_is_refused(self):
        refused(lambda: parse_subset("1/99999999999999999999"), "subset '1/99999999999999999999'", "out of range")
        refused(lambda: parse_subset("daily/10001"), "subset 'daily/10001'")

    def test_valid_forms(self):
        assert parse_subset("3/7") == (3, 7)
        assert parse_subset("daily/7", now=86400 * 8) == (2, 7)
        assert parse_subset("10000/10000") == (10000, 10000)
        refused(lambda: parse_subset("8/7"), "subset '8/7' is not N/T")
        refused(lambda: parse_subset("weekly/7"), "subset 'weekly/7'")


class TestDurations:
    def test_incomplete_grace_is_named_as_typed(self):
        text = refused(
            lambda: parse_calendar_duration("0s", "incomplete_grace"), "incomplete_grace '0s' is not a duration"
        )
        assert "keep_within" not in text

    def test_an_absurd_duration_is_refused_not_a_crash(self):
        refused(
            lambda: parse_calendar_duration("99999y", "keep_within"), "keep_within '99999y' is out of range", "100y"
        )
        refused(lambda: RetentionPolicy.from_options({"keep_within": "5000y"}), "keep_within '5000y'")
        assert parse_calendar_duration("100y", "keep_within")["y"] == 100


class TestCounts:
    def test_keep_counts(self):
        refused(lambda: RetentionPolicy.from_options({"keep_last": -1}), "keep_last -1 is out of range", "0 to 100000")
        refused(lambda: RetentionPolicy.from_options({"keep_daily": 10**20}), "keep_daily %d" % 10**20)
        refused(
            lambda: RetentionPolicy.from_options({"keep_weekly": "many"}), "keep_weekly 'many' is not a whole number"
        )
        assert RetentionPolicy.from_options({"keep_daily": "7"}).keep_daily == 7

    def test_full_every_of_a_snapshot_asset(self):
        asset = {"name": "chain", "type": "btrfs", "path": "/srv/chain", "full_every": 99999999}
        refused(lambda: normalize_assets([asset]), "asset chain: full_every 99999999 is out of range", "0 to 10000")

    def test_check_range(self):
        assert check_range("22", "compression_level", 1, 22) == 22
        refused(lambda: check_range(99, "compression_level", 1, 22), "compression_level 99 is out of range", "1 to 22")
        refused(lambda: check_range(True, "retries", 0, 100), "retries True is not a whole number")


class TestS3Target:
    @pytest.mark.parametrize(
        "option, value, needle",
        [
            ("retain_days", 10**9, "retain_days 1000000000 is out of range: give 0 to 36500 days"),
            ("retries", -1, "retries -1 is out of range"),
            ("max_concurrency", 0, "max_concurrency 0 is out of range"),
            ("max_concurrency", 1000, "max_concurrency 1000 is out of range"),
        ],
    )
    def test_numbers_are_checked_with_their_names(self, option, value, needle):
        locked = {"object_lock_mode": "GOVERNANCE", "retain_days": 7}
        settings = S3Settings.from_spec(dict(locked, bucket="fleet-backups", **{option: value}))
        refused(settings.check, needle)


class TestAssetOptions:
    """The numeric options of an asset in nodekeep_assets, named with the asset and as typed."""

    @pytest.mark.parametrize(
        ("asset", "needles"),
        [
            ({"type": "sqlite", "busy_timeout": -1}, ["asset a: busy_timeout -1 is out of range", "0 to 3600000 ms"]),
            ({"type": "sqlite", "busy_timeout": 10**12}, ["asset a: busy_timeout 1000000000000 is out of range"]),
            ({"type": "sqlite", "busy_timeout": "soon"}, ["asset a: busy_timeout 'soon' is not a whole number"]),
            ({"type": "sqlite", "pages_per_step": 0}, ["asset a: pages_per_step 0 is out of range", "or -1"]),
            ({"type": "sqlite", "pages_per_step": -5}, ["asset a: pages_per_step -5 is out of range"]),
            ({"type": "sqlite", "pages_per_step": 10**9}, ["asset a: pages_per_step 1000000000 is out of range"]),
            ({"type": "sqlite", "incremental": True, "full_every": -1}, ["asset a: full_every -1 is out of range"]),
            ({"type": "sqlite", "incremental": True, "full_every": 10**8}, ["asset a: full_every 100000000 is out"]),
            (
                {"type": "rocksdb", "method": "offline", "stop_timeout": 0},
                ["asset a: stop_timeout 0 is out of range", "1 to 86400 seconds"],
            ),
            (
                {"type": "rocksdb", "method": "offline", "command_timeout": 10**7},
                ["asset a: command_timeout 10000000 is out of range"],
            ),
            ({"type": "files", "sample": -3}, ["asset a: sample -3 is out of range", "0 to 100000 files"]),
            ({"type": "files", "sample": 10**9}, ["asset a: sample 1000000000 is out of range"]),
        ],
    )
    def test_out_of_range_is_refused_with_the_option_name(self, asset, needles):
        refused(lambda: normalize_assets([dict({"name": "a", "path": "/srv/a"}, **asset)]), *needles)

    def test_valid_values_pass(self):
        sqlite = normalize_assets([{"name": "a", "type": "sqlite", "path": "/srv/a", "pages_per_step": -1}])[0]
        assert (sqlite["busy_timeout"], sqlite["pages_per_step"]) == (5000, -1)
        sqlite = normalize_assets(
            [{"name": "a", "type": "sqlite", "path": "/srv/a", "busy_timeout": "0", "pages_per_step": "1000000"}]
        )[0]
        assert (sqlite["busy_timeout"], sqlite["pages_per_step"]) == (0, 1000000)
        files = normalize_assets([{"name": "a", "type": "files", "path": "/srv/a", "sample": 0}])[0]
        assert files["sample"] == 0


class TestModuleOnlyOptions:
    def test_sqlite_backup_plan_names_its_options(self, tmp_path):
        db = tmp_path / "a.db"
        db.write_bytes(b"")
        refused(
            lambda: plan_sqlite_backup(str(db), str(tmp_path / "c.db"), busy_timeout_ms=-1),
            "busy_timeout -1 is out of range",
        )
        refused(
            lambda: plan_sqlite_backup(str(db), str(tmp_path / "c.db"), pages_per_step=0),
            "pages_per_step 0 is out of range",
        )

    def test_object_workers(self):
        settings = S3Settings.from_spec({"bucket": "fleet-backups", "object_workers": 1000})
        refused(settings.check, "object_workers 1000 is out of range: give 1 to 64")


class _NoSnapshots:
    """The least a snapshot backend offers before a send starts: no snapshots, no features (the level is refused
    before the backend is asked anything else)."""

    kind = "zfs"
    features: ClassVar[dict] = {}

    def snapshots(self, volume):
        return []


@pytest.mark.parametrize("check_mode", [True, False])
@pytest.mark.parametrize("level", [0, 23, -1, "fast"])
def test_a_snapshot_send_level_is_refused_in_check_mode_too(level, check_mode):
    params = {"state": "sent", "name": "s1", "dest": "/nonexistent/s1.age", "level": level}
    shown = "level 'fast'" if level == "fast" else "level %s" % level
    refused(lambda: run_state(_NoSnapshots(), "tank/data", params, check_mode), shown, "1 to 22")
