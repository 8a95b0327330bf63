"""Rolling verification on both backends: N runs check every artifact of every epoch exactly once."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.ops.replicate import (
    daily_run,
    parse_subset,
    rolling_slot,
    rolling_verify,
)

pytestmark = pytest.mark.timeout(120)

EPOCHS = ["20261118T023000Z", "20261119T023000Z", "20261120T023000Z", "20261121T023000Z"]
NAMES = ("db", "keys", "config")
RUNS = 5


@pytest.fixture(params=["local", "s3"])
def filled(request, repository, s3_server, make_epoch):
    target = repository if request.param == "local" else s3_server.repository(s3_server.bucket(lock=False), "fleet")
    for epoch in EPOCHS:
        make_epoch(target, "node1", epoch, names=NAMES)
    return target


def test_every_artifact_is_checked_exactly_once_over_the_cycle(filled, signing_key):
    seen = []
    for run in range(1, RUNS + 1):
        report = rolling_verify(filled, "node1", signing_key.public_line, run, RUNS)
        assert report["ok"], report
        assert [e["signature"] for e in report["epochs"]] == ["valid"] * len(EPOCHS)  # signatures: every run
        seen.extend((c["epoch"], c["artifact"]) for c in report["checked"])
    assert sorted(seen) == sorted((e, n) for e in EPOCHS for n in NAMES)


def test_damage_is_reported_by_the_run_that_covers_it(filled, signing_key, s3_server):
    epoch, name = EPOCHS[1], "keys"
    file_name = "%s.bin.zst.age" % name
    if filled.kind == "local":
        path = "%s/node1/%s/%s" % (filled.root, epoch, file_name)
        with open(path, "r+b") as handle:
            handle.seek(100)
            byte = handle.read(1)
            handle.seek(100)
            handle.write(bytes([byte[0] ^ 1]))
    else:  # someone with write access uploaded another version over it
        key = "%s/node1/%s/%s" % (filled.prefix, epoch, file_name)
        s3_server.client().put_object(Bucket=filled.bucket, Key=key, Body=b"not the artifact")
    covering = rolling_slot(epoch, file_name, RUNS) + 1
    for run in range(1, RUNS + 1):
        report = rolling_verify(filled, "node1", signing_key.public_line, run, RUNS)
        if run == covering:
            assert not report["ok"]
            (problem,) = report["problems"]
            assert problem.startswith("%s: %s: " % (epoch, name)), problem
            assert "does not match the manifest" in problem or "size is" in problem, problem
        else:
            assert report["ok"], (run, report["problems"])


def test_subset_helpers():
    assert parse_subset("3/7") == (3, 7)
    assert parse_subset(" 1 / 1 ") == (1, 1)
    for bad in ("0/7", "8/7", "3", "a/b", ""):
        with pytest.raises(NodekeepError):
            parse_subset(bad)
    assert daily_run(7, now=0) == 1
    assert daily_run(7, now=86400 * 8) == 2
    counts = [0] * 7
    for index in range(7000):
        counts[rolling_slot("20261122T000000Z", "a%d.zst.age" % index, 7)] += 1
    assert min(counts) > 850  # shares stay balanced
