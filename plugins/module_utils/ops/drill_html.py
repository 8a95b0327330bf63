# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The drill report's HTML page (self-contained: inline CSS and SVG charts, no script)."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import html
from typing import Any

from ansible_collections.nodekeep.backup.plugins.module_utils.core.human import human_bytes, human_seconds
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.drill import FORMAT, iso, parse_time, verdict
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.drill_store import (
    NAMESPACE,
    REPORT_NAME,
    SIGNATURE_NAME,
    history_point,
)

# --------------------------------------------------------------------------
# the HTML page (self-contained: inline CSS, inline SVG, no external reference)
# --------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;background:#fff}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:24px 0 8px}
.muted{color:#667085}.ok{color:#067647;font-weight:600}.bad{color:#b42318;font-weight:600}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff;font-weight:600}
.badge.ok{background:#067647;color:#fff}.badge.bad{background:#b42318;color:#fff}
table{border-collapse:collapse;width:100%;margin:8px 0 16px}
th,td{border-bottom:1px solid #e4e7ec;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f7;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #e4e7ec;border-radius:8px;padding:10px 14px;min-width:150px}
.card b{display:block;font-size:18px}code{font-size:12px;background:#f2f4f7;padding:1px 4px;border-radius:4px}
ul.problems li{color:#b42318}svg text{font:11px system-ui,sans-serif;fill:#475467}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _mark(ok: bool | None, yes: str = "passed", no: str = "FAILED", none: str = "-") -> str:
    if ok is None:
        return '<span class="muted">%s</span>' % _e(none)
    return '<span class="%s">%s</span>' % ("ok" if ok else "bad", _e(yes if ok else no))


def _measure_cell(item: dict[str, Any], source: str | None = None) -> str:
    """Measured / target, "target met" or "target missed" (a miss is not a failed check), and the target's origin."""
    origin = '<br><span class="muted">target from %s</span>' % _e(source) if source else ""
    if item.get("seconds") is None:
        return '<span class="muted">not measured</span> / %s%s' % (
            _e(human_seconds(item.get("target_seconds"))),
            origin,
        )
    return "%s / %s %s%s" % (
        _e(human_seconds(item["seconds"])),
        _e(human_seconds(item["target_seconds"])),
        _mark(item["met"], verdict(item), verdict(item)),
        origin,
    )


def _verdict_mark(text: str) -> str:
    return '<span class="%s">%s</span>' % ("ok" if text in ("ok", "PASSED") else "bad", _e(text))


#: the RTO's parts, bottom to top, and their colours (docs/drills.md, "Where the RTO went")
RTO_PARTS = (("ship", "#84caff"), ("restore", "#2e90fa"), ("check", "#f79009"), ("other", "#d0d5dd"))
#: at most this many x labels (first and last always), so that the labels never overlap
MAX_X_LABELS = 5


def _when(point: dict[str, Any]) -> tuple[str, str]:
    """(date, time) of a drill for the x axis: the day and the UTC time, so runs of one day are told apart."""
    moment = parse_time(point.get("started") or point.get("drill_id"))
    if moment is None:
        return (str(point.get("drill_id") or "?"), "")
    text = iso(moment) or ""
    return text[:10], text[11:16] + "Z"


def _label_indexes(count: int) -> list[int]:
    if count <= MAX_X_LABELS:
        return list(range(count))
    step = (count - 1) / float(MAX_X_LABELS - 1)
    return sorted({round(step * i) for i in range(MAX_X_LABELS)})


def svg_chart(
    points: list[dict[str, Any]],
    key: str,
    target_key: str,
    title: str,
    width: int = 460,
    parts_key: str | None = None,
) -> str:
    """A small inline SVG chart of ``key`` over the drills: each drill's value (a dot, green when it met its own
    target), each drill's own target (a dashed red mark at that drill), x labels with the date and UTC time, and,
    with ``parts_key``, each drill's value as a bar stacked from its parts (the RTO: ship, restore, check, other)."""
    height, left, right, top, bottom = 200, 78, 12, 24, 48
    values = [p.get(key) for p in points]
    targets = [p.get(target_key) for p in points if p.get(target_key) is not None]
    known = [float(v) for v in values if v is not None]
    peak = max(known + [float(t) for t in targets] + [1.0]) * 1.15
    plot_w, plot_h = width - left - right, height - top - bottom
    count = len(points)
    slot = plot_w / float(max(count, 1))
    half = max(3.0, min(18.0, slot * 0.4))

    def x(index: int) -> float:
        return left + (plot_w / 2.0 if count == 1 else half + (plot_w - 2 * half) * index / (count - 1))

    def y(value: float) -> float:
        return top + plot_h - plot_h * float(value) / peak

    parts = [
        '<svg role="img" aria-label="%s" width="%d" height="%d" viewBox="0 0 %d %d">'
        % (_e(title), width, height, width, height),
        '<text x="%d" y="14" style="font-weight:600;fill:#1d2430">%s</text>' % (left, _e(title)),
        '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#98a2b3"/>' % (left, top + plot_h, width - right, top + plot_h),
        '<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#98a2b3"/>' % (left, top, left, top + plot_h),
    ]
    for fraction in (0.0, 0.5, 1.0):
        value = peak / 1.15 * fraction
        parts.append(
            '<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 4, y(value) + 4, _e(human_seconds(value)))
        )
    if parts_key:
        for index, point in enumerate(points):
            breakdown = point.get(parts_key) or {}
            if point.get(key) is None or not breakdown:
                continue
            base = 0.0
            for name, colour in RTO_PARTS:
                seconds = float(breakdown.get(name) or 0)
                if seconds <= 0:
                    continue
                parts.append(
                    '<rect class="part part-%s" data-part="%s" data-seconds="%s" x="%.1f" y="%.1f" width="%.1f" '
                    'height="%.1f" fill="%s"><title>%s %s: %s</title></rect>'
                    % (name, name, _e(seconds), x(index) - half * 0.6, y(base + seconds), half * 1.2,
                       y(base) - y(base + seconds), colour, _e(point.get("drill_id")), name,
                       _e(human_seconds(seconds)))
                )  # fmt: skip
                base += seconds
    line = " ".join("%.1f,%.1f" % (x(i), y(v)) for i, v in enumerate(values) if v is not None)
    if line and count > 1:
        parts.append('<polyline fill="none" stroke="#2e90fa" stroke-width="2" points="%s"/>' % line)
    for index, point in enumerate(points):
        target = point.get(target_key)
        if target is None:
            continue
        parts.append(
            '<line class="target" data-target="%s" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#b42318" '
            'stroke-width="2" stroke-dasharray="4,3"><title>%s target %s</title></line>'
            % (_e(target), x(index) - half, y(target), x(index) + half, y(target), _e(point.get("drill_id")),
               _e(human_seconds(target)))
        )  # fmt: skip
    last_target = next((p.get(target_key) for p in reversed(points) if p.get(target_key) is not None), None)
    if last_target is not None:
        parts.append(
            '<text x="%d" y="%.1f" text-anchor="end" style="fill:#b42318">target %s</text>'
            % (width - right, y(last_target) - 5, _e(human_seconds(last_target)))
        )
    for index, point in enumerate(points):
        value = point.get(key)
        if value is None:
            continue
        target = point.get(target_key)
        missed = target is not None and float(value) > float(target)
        parts.append(
            '<circle class="value" data-value="%s" cx="%.1f" cy="%.1f" r="4" fill="%s"><title>%s: %s</title></circle>'
            % (
                _e(value),
                x(index),
                y(value),
                "#b42318" if missed else "#067647",
                _e(point.get("drill_id")),
                _e(human_seconds(value)),
            )
        )
    for index in _label_indexes(count):
        day, clock = _when(points[index])
        anchor = "middle" if 0 < index < count - 1 or count == 1 else ("start" if index == 0 else "end")
        at = x(index) - (half if anchor == "start" else 0) + (half if anchor == "end" else 0)
        parts.append(
            '<text class="x-label" x="%.1f" y="%d" text-anchor="%s"><tspan x="%.1f">%s</tspan>'
            '<tspan x="%.1f" dy="12">%s</tspan></text>'
            % (at, top + plot_h + 14, anchor, at, _e(day), at, _e(clock))
        )
    if count > MAX_X_LABELS:
        parts.append(
            '<text x="%d" y="%d" text-anchor="end">%d drills</text>' % (width - right, height - 4, count)
        )
    if parts_key and any(p.get(parts_key) for p in points):
        legend = " ".join(
            '<tspan fill="%s">&#9632;</tspan> %s' % (colour, name) for name, colour in RTO_PARTS
        )
        parts.append('<text class="legend" x="%d" y="%d">%s</text>' % (left, height - 4, legend))
    parts.append("</svg>")
    return "".join(parts)


def _head(report: dict[str, Any]) -> list[str]:
    """Title, verdict badge, provenance line and the summary cards."""
    summary = report["summary"]
    return (
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>nodekeep drill %s: %s</title>" % (_e(report["drill_id"]), "passed" if report["ok"] else "FAILED"),
            "<style>%s</style></head><body>" % _CSS,
            '<h1>Restore drill %s <span class="badge %s">%s</span></h1>'
            % (
                _e(report["drill_id"]),
                "ok" if report["ok"] else "bad",
                _e(report.get("verdict") or ("PASSED" if report["ok"] else "FAILED")),
            ),
            '<p class="muted">series <code>%s</code> &middot; started %s &middot; finished %s &middot; %s %s%s</p>'
            % (
                _e(report["series"]),
                _e(report["started"]),
                _e(report["finished"]),
                _e(report["tool"]["name"]),
                _e(report["tool"]["version"]),
                (" &middot; signed by " + _e(report["reporter"])) if report.get("reporter") else "",
            ),
        ]
        + _runbook(report)
        + [
            '<div class="cards">',
            '<div class="card">Nodes ok<b>%d / %d</b></div>' % (summary["nodes_ok"], summary["nodes"]),
            '<div class="card">Assets ok<b>%d / %d</b></div>' % (summary["assets_ok"], summary["assets"]),
            '<div class="card">RTO (drill)<b>%s</b></div>' % _e(human_seconds(report["rto_seconds"])),
            '<div class="card">Worst RPO<b>%s</b></div>' % _e(human_seconds(report["rpo_seconds"])),
            '<div class="card">Checks failed<b>%d</b></div>' % summary["checks_failed"],
            "</div>",
        ]
    )


def _runbook(report: dict[str, Any]) -> list[str]:
    """Which runbook the drill proves, and what it promises (nodekeep_runbook)."""
    books = [report["runbook"]] if report.get("runbook") else []
    if not books:
        for node in report["nodes"]:
            if node.get("runbook") and node["runbook"] not in books:
                books.append(node["runbook"])
    out = []
    for book in books:
        out.append(
            '<p class="runbook"><b>Runbook: %s</b>%s<br>RPO target: %s &middot; RTO target: %s%s</p>'
            % (
                _e(book["name"]),
                (" &mdash; " + _e(book["title"])) if book.get("title") else "",
                _e(book.get("rpo") or "not given (nodekeep_rpo_target)"),
                _e(book.get("rto") or "not given (nodekeep_rto_target)"),
                ('<br><span class="muted">%s</span>' % _e(book["location"])) if book.get("location") else "",
            )
        )
    return out


def _recovery_point(node: dict[str, Any]) -> str:
    """The restored data's moment as a UTC time, and how old it was when the drill started."""
    point = node.get("recovery_point")
    if not point:
        return '<span class="muted">unknown</span>'
    text = point.replace("T", " ").split(".")[0] + " UTC"
    age = node.get("recovery_point_age_seconds")
    if age is not None:
        text += " (%s before the drill)" % human_seconds(age)
    return _e(text)


def _problems(report: dict[str, Any]) -> list[str]:
    if not report["problems"]:
        return []
    return ['<h2>Problems</h2><ul class="problems">'] + ["<li>%s</li>" % _e(p) for p in report["problems"]] + ["</ul>"]


def _history(points: list[dict[str, Any]]) -> list[str]:
    return [
        "<h2>RTO and RPO over the last %d drill(s)</h2>" % len(points),
        '<div class="cards">%s%s</div>'
        % (
            svg_chart(
                points, "rto_seconds", "rto_target_seconds", "RTO (drill start to verified data)",
                parts_key="rto_breakdown",
            ),
            svg_chart(points, "rpo_seconds", "rpo_target_seconds", "RPO (age of the restored data)"),
        ),
    ]


def _nodes_table(report: dict[str, Any]) -> list[str]:
    header = ("<h2>Nodes</h2><table><tr><th>Node</th><th>Result</th><th>Epoch</th><th>Data from (recovery point)</th>"
              "<th>Staging</th><th>RTO / target</th><th>RPO / target</th></tr>")  # fmt: skip
    out = [header]
    for node in report["nodes"]:
        sources = node.get("target_sources") or {}
        out.append(
            "<tr><td>%s</td><td>%s%s</td><td>%s</td><td>%s</td><td>%s<br><code>%s</code></td>"
            "<td>%s</td><td>%s</td></tr>"
            % (
                _e(node["node"]),
                _verdict_mark(node.get("verdict") or ("ok" if node["ok"] else "FAILED")),
                ("<br>" + _e(node["error"])) if node["error"] else "",
                _e(node["epoch"] or "-"),
                _recovery_point(node),
                _e(node["staging_host"] or "-"),
                _e(node["staging_path"] or "-"),
                _measure_cell(node["rto"], sources.get("rto")) + _breakdown_text(node.get("rto_breakdown")),
                _measure_cell(node["rpo"], sources.get("rpo")),
            )
        )
    out.append("</table>")
    return out


def _breakdown_text(parts: dict[str, Any] | None) -> str:
    """The RTO's parts under it: ship, restore, check, other."""
    if not parts:
        return ""
    return '<br><span class="muted">%s</span>' % " &middot; ".join(
        "%s %s" % (_e(key), _e(human_seconds(parts[key])))
        for key in ("ship", "restore", "check", "other")
        if key in parts
    )


def _asset_row(asset: dict[str, Any]) -> str:
    how = asset.get("checked_how") or []
    checks = (
        "<br>".join(_e(line) for line in how)
        if how
        else _e(", ".join("%s %s" % (k, v) for k, v in sorted(asset["checks"].items())))
    )
    sources = asset.get("target_sources") or {}
    size = asset.get("plain_size", asset["size"])
    health = asset["health"]
    health_text = (
        _mark(
            health["ok"],
            "passed (%d attempt(s))" % health.get("attempts", 1),
            "FAILED (exit %s)" % health.get("rc"),
        )
        if health["ran"]
        else '<span class="muted">no command</span>'
    )
    return (
        '<tr><td>%s <span class="muted">%s</span></td><td><code>%s</code><br>'
        '<span class="muted">from %s</span></td><td class="num">%s</td><td>%s %s</td>'
        "<td>%s</td><td>%s</td><td>%s</td></tr>"
        % (
            _e(asset["name"]),
            _e(asset["asset_type"]),
            _e(asset["staged_path"] or "not restored"),
            _e(asset["source_path"]),
            _e(human_bytes(size)),
            _mark(asset["checks_ok"]),
            _e(asset["error"]) if asset.get("error") else checks,
            health_text,
            _measure_cell(asset["rto"], sources.get("rto")),
            _measure_cell(asset["rpo"], sources.get("rpo")),
        )
    )


def _node_assets(node: dict[str, Any]) -> list[str]:
    if not node["assets"] and not node["skipped"]:
        return []
    out = ["<h2>%s: assets</h2>" % _e(node["node"])]
    out.append("<table><tr><th>Asset</th><th>Restored to (staging)</th><th class=\"num\">Size</th>"
               "<th>Checked how</th><th>Health</th><th>RTO / target</th><th>RPO / target</th></tr>")  # fmt: skip
    out.extend(_asset_row(asset) for asset in node["assets"])
    for skipped in node["skipped"]:
        out.append(
            '<tr><td>%s</td><td colspan="6"><span class="muted">not restored: %s</span></td></tr>'
            % (_e(skipped["name"]), _e(skipped["reason"]))
        )
    out.append("</table>")
    return out


def _points_in_time(node: dict[str, Any]) -> list[str]:
    """The point-in-time drills of the node's streamed assets: the draw, the commit reached, RPO and RTO."""
    streamed = [a for a in node["assets"] if a.get("point_in_time")]
    if not streamed:
        return []
    out = ["<h2>%s: point-in-time restores</h2>" % _e(node["node"])]
    out.append("<table><tr><th>Asset</th><th>Seed</th><th>Window drawn from</th><th>Commit drawn</th>"
               "<th>Commit reached</th><th>Integrity</th><th class=\"num\">Commits applied</th><th class=\"num\">Size</th>"
               "<th class=\"num\">Restore</th><th>RTO / target</th><th>RPO / target (last shipped commit)</th></tr>")  # fmt: skip
    for asset in streamed:
        pitr = asset["point_in_time"]
        window = pitr.get("window") or {}
        sources = asset.get("target_sources") or {}
        reached = (
            _mark(False, no="FAILED: %s" % pitr["error"])
            if pitr["error"]
            else "%s<br>%s" % (_e(pitr["reached"]), _mark(pitr["exact"], "exact", "NOT the commit drawn"))
        )
        out.append(
            '<tr><td>%s</td><td><code>%s</code></td><td>%s &rarr; %s<br><span class="muted">%s commit point(s), '
            '%s chain(s)</span></td><td>%s</td><td>%s</td><td>%s</td><td class="num">%s</td><td class="num">%s</td>'
            '<td class="num">%s</td><td>%s</td><td>%s<br><span class="muted">%s</span></td></tr>'
            % (
                _e(asset["name"]),
                _e(pitr["seed"]),
                _e(window.get("start")),
                _e(window.get("end")),
                _e(window.get("points")),
                _e(window.get("chains")),
                _e(pitr["drawn"] or "none"),
                reached,
                _e(pitr["integrity"] or "-"),
                _e(pitr["commits_applied"] if pitr["commits_applied"] is not None else "-"),
                _e(human_bytes(pitr["size"]) if pitr["size"] is not None else "-"),
                _e(human_seconds(pitr["seconds"])),
                _measure_cell(asset["rto"], sources.get("rto")),
                _measure_cell(asset["rpo"], sources.get("rpo")),
                _e(pitr["last_shipped"] or "-"),
            )
        )
    out.append("</table>")
    out.append(
        '<p class="muted">Reproduce a draw: <code>-e nodekeep_drill_seed=SEED -e nodekeep_drill_window_end=END</code> '
        "(the window's end as the report names it under <code>until</code>).</p>"
    )
    return out


def _footer() -> list[str]:
    return [
        '<p class="muted">RTO: drill start to the node\'s data restored, checked and health-checked in staging. '
        "RPO: drill start minus the restored epoch's start (every snapshot of the epoch is at or after it); for a "
        "streamed asset, drill start minus its newest shipped commit (its newest signed segment). "
        "The JSON report beside this page (<code>%s</code>, format <code>%s</code>) is signed "
        "(<code>%s</code>, namespace <code>%s</code>).</p>" % (REPORT_NAME, FORMAT, SIGNATURE_NAME, NAMESPACE),
        "</body></html>",
    ]


def render_html(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """The human page: verdict, RTO/RPO against targets, the history chart, per node and asset details."""
    points = list(history) + [history_point(report, None)]
    out = _head(report) + _problems(report) + _history(points) + _nodes_table(report)
    for node in report["nodes"]:
        out += _node_assets(node)
        out += _points_in_time(node)
    out += _footer()
    return "\n".join(out) + "\n"
