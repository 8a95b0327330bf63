# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Time: the epoch timestamp (``YYYYMMDDTHHMMSSZ``), UTC ISO times, calendar periods and the
calendar durations of retention (``keep_within``, ``incomplete_grace``).
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import calendar
import re
from datetime import datetime, timedelta, timezone

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import ManifestError, NodekeepError

EPOCH_RE = re.compile(r"^\d{8}T\d{6}Z\Z")


def epoch_name(moment: datetime | float | None = None) -> str:
    """The epoch name (``YYYYMMDDTHHMMSSZ``) of a UTC time, a UNIX time or now.

    The one timestamp format of epochs, snapshot names, safety copies and replaced trees.
    """
    if moment is None:
        moment = datetime.now(timezone.utc)
    elif not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def epoch_time(name: str) -> datetime:
    if not EPOCH_RE.match(name or ""):
        raise ManifestError("%r is not an epoch name (YYYYMMDDTHHMMSSZ)" % (name,), "pick one that epoch_info lists")
    try:
        return datetime.strptime(name, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise ManifestError(
            "%r is not a valid epoch time (YYYYMMDDTHHMMSSZ)" % (name,), "pick one that epoch_info lists"
        )


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


_DURATION_RE = re.compile(r"(\d+)\s*(y|m|w|d|h)", re.IGNORECASE)


def period_key(period: str, moment: datetime) -> str:
    """The UTC bucket an instant falls in: ``2026-11-22T02``, ``2026-11-22``, ``2026-W47``, ``2026-11``, ``2026``."""
    moment = moment.astimezone(timezone.utc)
    if period == "hourly":
        return moment.strftime("%Y-%m-%dT%H")
    if period == "daily":
        return moment.strftime("%Y-%m-%d")
    if period == "weekly":
        year, week, _day = moment.isocalendar()
        return "%04d-W%02d" % (year, week)
    if period == "monthly":
        return moment.strftime("%Y-%m")
    if period == "yearly":
        return moment.strftime("%Y")
    raise ValueError("unknown period %r" % (period,))


#: the longest calendar duration accepted (keep_within, incomplete_grace)
MAX_CALENDAR_YEARS = 100


def parse_calendar_duration(text: str, what: str = "keep_within") -> dict[str, int]:
    """``"1y6m"``, ``"2w"``, ``"36h"``, ``"7d 12h"`` -> {"y": 1, "m": 6, ...} (calendar years and months).

    The durations of retention (``keep_within``, ``incomplete_grace``), taken back from a calendar date
    by ``subtract_duration``; a drill's RPO/RTO targets are plain seconds (``ops.drill.parse_seconds``).
    """
    value = str(text or "").strip()
    parts = _DURATION_RE.findall(value)
    if not value or not parts or _DURATION_RE.sub("", value).strip():
        raise NodekeepError(
            "%s %r is not a duration" % (what, text),
            "write it as numbers with units y (years), m (months), w (weeks), d (days), h (hours), e.g. 7d or 1y6m",
        )
    result = {"y": 0, "m": 0, "w": 0, "d": 0, "h": 0}
    for number, unit in parts:
        result[unit.lower()] += int(number)
    hours = result["y"] * 8766 + result["m"] * 731 + result["w"] * 168 + result["d"] * 24 + result["h"]
    if hours > MAX_CALENDAR_YEARS * 8766:
        raise NodekeepError(
            "%s %r is out of range" % (what, text),
            "give at most %d years (100y); the epochs this keeps are counted from today" % MAX_CALENDAR_YEARS,
        )
    return result


def subtract_duration(moment: datetime, duration: dict[str, int]) -> datetime:
    """``moment`` minus a calendar duration (months clamp to the month's last day)."""
    months = moment.month - 1 - duration["m"] - 12 * duration["y"]
    year = moment.year + months // 12
    month = months % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    shifted = moment.replace(year=year, month=month, day=day)
    return shifted - timedelta(weeks=duration["w"], days=duration["d"], hours=duration["h"])


def duration_text(duration: dict[str, int]) -> str:
    return "".join("%d%s" % (duration[u], u) for u in ("y", "m", "w", "d", "h") if duration[u]) or "0h"
