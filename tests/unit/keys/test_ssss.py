"""keys/_ssss.py: ssss's arithmetic in pure Python, checked against the real ssss-split/ssss-combine CLI
both ways (our shares open with ssss-combine, ssss-split's shares open with ours)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.keys import _ssss

pytestmark = pytest.mark.skipif(not shutil.which("ssss-combine"), reason="the ssss package is not installed")

SECRET = b"AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQ"


def combine_cli(lines, threshold, hexmode):
    argv = ["ssss-combine", "-t", str(threshold), "-q"] + (["-x"] if hexmode else [])
    done = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    return (done.stdout + done.stderr).strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("secret", "threshold", "count"), [(SECRET, 3, 5), (b"short", 2, 2), (bytes(range(1, 40)), 2, 3)]
)
def test_our_shares_open_with_ssss_combine(secret, threshold, count):
    lines = _ssss.ssss_split(secret, threshold, count, token="nodekeep")
    assert len(lines) == count and all(line.startswith("nodekeep-") for line in lines)
    hexmode = _ssss.ssss_encoding(secret) == "hex"
    out = combine_cli(lines[-threshold:], threshold, hexmode)
    assert (bytes.fromhex(out) if hexmode else out.encode()) == secret


def test_ssss_split_shares_open_with_ours():
    done = subprocess.run(
        ["ssss-split", "-t", "3", "-n", "5", "-q", "-w", "tok"],
        input=SECRET.decode() + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    parsed = [_ssss.parse_ssss_line(line) for line in done.stdout.split()]
    assert all(p is not None and p[0] == "tok" for p in parsed)
    degree = parsed[0][3]
    pairs = [(index, value) for _token, index, value, _degree in parsed]
    assert _ssss.ssss_combine(pairs[1:4], 3, degree) == SECRET
    assert _ssss.ssss_consistent(pairs[:3], 3, degree, pairs[4])
    assert not _ssss.ssss_consistent(pairs[:3], 3, degree, (pairs[4][0], pairs[4][1] ^ 1))


def test_fewer_shares_give_something_else():
    lines = _ssss.ssss_split(SECRET, 3, 5)
    parsed = [_ssss.parse_ssss_line(line) for line in lines]
    pairs = [(index, value) for _token, index, value, _degree in parsed]
    assert _ssss.ssss_combine(pairs[:2], 2, parsed[0][3]) != SECRET


@pytest.mark.parametrize("text", ["", "nonsense", "1-xyz", "tok-"])
def test_not_a_share_line(text):
    assert _ssss.parse_ssss_line(text) is None


def test_field_inverse():
    field = _ssss.GF2n(64)
    for value in (1, 2, 0xDEADBEEF, int.from_bytes(os.urandom(8), "big") | 1):
        assert field.mul(value, field.inverse(value)) == 1
