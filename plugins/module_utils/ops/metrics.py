# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus text exposition for node_exporter's textfile collector.

``Metrics`` collects samples of a few gauge families and ``write_textfile``
writes them atomically (a temporary file in the same directory, fsynced, then
renamed), so node_exporter never reads half a file. Label values are limited to
names (node, asset, copy, job, series): callers never pass paths or secrets, and
``Metrics.add`` refuses a label value that looks like a path or holds a line break.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import math
import os
import re

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError, describe_os_error
from ansible_collections.nodekeep.backup.plugins.module_utils.core.fs import atomic_write

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\Z")


LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*\Z")


#: label values: names, s3:// locations; never a local path (a leading "/") or anything with a line break
LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9._:@+=,-][A-Za-z0-9._:/@+=,-]{0,255}\Z")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


class Metrics:
    """Gauge families in insertion order: ``add(name, value, help, **labels)``."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, list[tuple[dict[str, str], float]]]] = {}

    def add(self, name: str, value: float, help_text: str, **labels: str) -> None:
        if not METRIC_NAME_RE.match(name):
            raise NodekeepError("%r is not a metric name" % name, "use letters, digits and underscores")
        clean = {}
        for key, label in labels.items():
            text = str(label)
            if not LABEL_NAME_RE.match(key) or not LABEL_VALUE_RE.match(text):
                raise NodekeepError(
                    "the metric label %s=%r is not a plain name" % (key, text),
                    "label values are node, asset, copy and job names (never paths or secrets)",
                )
            clean[key] = text
        family = self._families.setdefault(name, (help_text, []))
        family[1].append((clean, value))

    def names(self) -> list[str]:
        return list(self._families)

    def render(self) -> str:
        lines = []
        for name, (help_text, samples) in self._families.items():
            lines.append("# HELP %s %s" % (name, help_text.replace("\\", "\\\\").replace("\n", " ")))
            lines.append("# TYPE %s gauge" % name)
            for labels, value in samples:
                text = ",".join('%s="%s"' % (k, escape_label(v)) for k, v in sorted(labels.items()))
                lines.append("%s%s %s" % (name, "{%s}" % text if text else "", format_value(value)))
        return "\n".join(lines) + "\n" if lines else ""


def write_textfile(directory: str, filename: str, text: str, mode: int = 0o644) -> str:
    """Write ``directory/filename`` atomically (node_exporter reads ``*.prom`` files)."""
    if not filename.endswith(".prom") or "/" in filename:
        raise NodekeepError("%r is not a textfile collector file name" % filename, "use NAME.prom")
    final = os.path.join(directory, filename)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise describe_os_error(exc, "preparing the metrics file", final)
    return atomic_write(final, text, mode, "metrics file")
