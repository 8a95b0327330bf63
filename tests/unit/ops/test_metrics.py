"""ops/metrics.py: Prometheus textfile gauges (names and labels checked, values formatted, atomic write)."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.metrics import Metrics, format_value, write_textfile


def test_families_render_in_insertion_order_with_sorted_labels():
    metrics = Metrics()
    metrics.add("nodekeep_backup_ok", True, "1 when the last backup succeeded", node="n1", job="backup")
    metrics.add("nodekeep_backup_bytes", 1536, "Bytes sealed", node="n1")
    metrics.add("nodekeep_backup_ok", False, "ignored: the family's first help stays", node="n2", job="backup")
    assert metrics.names() == ["nodekeep_backup_ok", "nodekeep_backup_bytes"]
    assert metrics.render() == (
        "# HELP nodekeep_backup_ok 1 when the last backup succeeded\n"
        "# TYPE nodekeep_backup_ok gauge\n"
        'nodekeep_backup_ok{job="backup",node="n1"} 1\n'
        'nodekeep_backup_ok{job="backup",node="n2"} 0\n'
        "# HELP nodekeep_backup_bytes Bytes sealed\n"
        "# TYPE nodekeep_backup_bytes gauge\n"
        'nodekeep_backup_bytes{node="n1"} 1536\n'
    )
    assert Metrics().render() == ""


@pytest.mark.parametrize(
    ("value", "text"),
    [(3, "3"), (2.5, "2.5"), (float("nan"), "NaN"), (float("inf"), "+Inf"), (-float("inf"), "-Inf"), (1e20, "1e+20")],
)
def test_values(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize(
    ("name", "labels"),
    [("bad-name", {}), ("ok_name", {"bad-key": "x"}), ("ok_name", {"path": "/etc/secret"}), ("ok_name", {"n": ""})],
)
def test_names_and_label_values_that_are_not_plain_are_refused(name, labels):
    with pytest.raises(NodekeepError) as raised:
        Metrics().add(name, 1, "help", **labels)
    assert raised.value.remedy


def test_the_textfile_is_written_whole_with_its_mode(tmp_path):
    directory = tmp_path / "textfile"
    path = write_textfile(str(directory), "nodekeep.prom", "a 1\n", mode=0o640)
    assert (directory / "nodekeep.prom").read_text() == "a 1\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert [p.name for p in directory.iterdir()] == ["nodekeep.prom"]  # no temporary file left beside it
    with pytest.raises(NodekeepError):
        write_textfile(str(directory), "../escape.prom", "a 1\n")
    with pytest.raises(NodekeepError):
        write_textfile(str(directory), "nodekeep.txt", "a 1\n")
