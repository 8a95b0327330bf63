# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizes, durations and rates for people: the one formatting helper of the collection.

IEC units everywhere (1 KiB = 1024 bytes; never "MB" for a binary multiple), so a
figure printed by a module, a role, the drill report or a script reads the same.
Standard library only: ``scripts/demo_summary.py`` loads this file by its path.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

from typing import Any

UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def human_bytes(value: Any) -> str:
    """IEC units: ``512 B``, ``4.00 KiB``, ``1.50 GiB``, ``12.3 MiB``; ``-`` when unknown."""
    number = _number(value)
    if number is None:
        return "-"
    sign = "-" if number < 0 else ""
    number = abs(number)
    for unit in UNITS:
        if number < 1024 or unit == UNITS[-1]:
            if unit == "B":
                return "%s%d B" % (sign, number)
            return "%s%.*f %s" % (sign, 1 if number >= 10 else 2, number, unit)
        number /= 1024.0
    return "-"  # not reached


def human_rate(value: Any) -> str:
    """Bytes per second: ``85.2 MiB/s``; ``-`` when unknown."""
    text = human_bytes(value)
    return text if text == "-" else text + "/s"


def human_seconds(value: Any) -> str:
    """``4.2 s``, ``3 min 05 s``, ``2 h 10 min``, ``1.5 d``; ``-`` when unknown."""
    number = _number(value)
    if number is None:
        return "-"
    if number < 60:
        return "%.1f s" % number
    if number < 3600:
        return "%d min %02d s" % (number // 60, number % 60)
    if number < 86400:
        return "%d h %02d min" % (number // 3600, (number % 3600) // 60)
    return "%.1f d" % (number / 86400)


def ratio(plain: Any, stored: Any) -> float | None:
    """Compression ratio plain/stored (``3.2`` means the stored bytes are a third), None when unknown."""
    plain, stored = _number(plain), _number(stored)
    if plain is None or stored is None or stored <= 0:
        return None
    return round(plain / stored, 2)


def human_ratio(plain: Any, stored: Any) -> str:
    value = ratio(plain, stored)
    return "-" if value is None else "%.2fx" % value


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Plain text columns (left aligned, two spaces apart) as lines, like ``restic snapshots``."""
    widths = [len(h) for h in header]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    lines.append("-" * len(lines[0]))
    lines.extend("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows)
    return lines


def progress_line(snap: dict[str, Any]) -> str:
    """A live progress snapshot (core/progress.py) as one line, for example
    ``node1 backup [1/2] app-db seal: 1.20 GiB of 4.00 GiB (30.0%), 85.0 MiB/s, ETA 34.0 s``."""
    done = human_bytes(snap.get("done_bytes"))
    if snap.get("total_bytes") is not None:
        done += " of %s" % human_bytes(snap["total_bytes"])
    if snap.get("percent") is not None:
        done += " (%.1f%%)" % snap["percent"]
    rate = human_rate(snap.get("rate_bytes_per_second"))
    where = " [%s/%s]" % (snap.get("asset_index"), snap["assets"]) if snap.get("assets") else ""
    head = "%s %s%s %s %s" % (
        snap.get("node") or "-",
        snap.get("operation"),
        where,
        snap.get("asset"),
        snap.get("phase"),
    )
    parts = [done, rate if rate != "-" else "rate -"]
    if snap.get("state") == "done":
        parts.append("done in %s" % human_seconds(snap.get("elapsed_seconds")))
    else:
        parts.append("ETA %s" % human_seconds(snap.get("eta_seconds")))
    return head + ": " + ", ".join(parts)
