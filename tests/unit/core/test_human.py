"""The one formatting helper: IEC units, durations, rates, ratios, tables; demo_summary uses it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import (
    human_bytes,
    human_rate,
    human_ratio,
    human_seconds,
    ratio,
    table,
)

ROOT = Path(__file__).resolve().parents[3]


def test_iec_units_never_decimal_labels():
    assert human_bytes(512) == "512 B"
    assert human_bytes(4096) == "4.00 KiB"
    # 518.03 "MB" was a MiB value labelled MB before: 543190302 bytes is 518.03 MiB
    assert human_bytes(543190302) == "518.0 MiB"
    assert human_bytes(3 << 30) == "3.00 GiB"
    assert human_bytes(None) == "-" and human_bytes(True) == "-" and human_bytes("x") == "-"
    assert human_rate(100 << 20) == "100.0 MiB/s"
    assert human_rate(None) == "-"


def test_durations_ratios_and_tables():
    assert human_seconds(4.24) == "4.2 s"
    assert human_seconds(185) == "3 min 05 s"
    assert human_seconds(7800) == "2 h 10 min"
    assert ratio(300, 100) == 3.0 and ratio(1, 0) is None
    assert human_ratio(1000, 250) == "4.00x"
    lines = table(["epoch", "size"], [["20260101T000000Z", "1.00 GiB"], ["x", "2 B"]])
    assert lines[0].split() == ["epoch", "size"]
    assert lines[2].startswith("20260101T000000Z  1.00 GiB")
    assert set(lines[1]) == {"-"}


def test_demo_summary_uses_the_drill_wording_and_the_helper():
    spec = importlib.util.spec_from_file_location("demo_summary", ROOT / "scripts" / "demo_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.against({"seconds": 12.3, "target_seconds": 1800, "met": True}).endswith(": target met")
    assert module.against({"seconds": 4000, "target_seconds": 1800, "met": False}).endswith(": target missed")
    assert "MISSED" not in module.against({"seconds": 4000, "target_seconds": 1800, "met": False})
    assert module.size(3 << 20) == human_bytes(3 << 20) == "3.00 MiB"
