"""core/attrs.py: holes of sparse files found and recorded, xattrs and holes carried through PAX records and
the files index without loss (binary values included), a damaged sparse map refused."""

from __future__ import annotations

import os

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import attrs
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RestoreError

XATTRS = {"user.note": b"hello", "user.bin": bytes(range(256))}


def test_data_segments_of_a_sparse_file(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as handle:
        handle.seek(8 << 20)
        handle.write(b"x" * 4096)
        handle.truncate(16 << 20)
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        segments = attrs.data_segments(fd, size)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0  # left at the start for the reader
    finally:
        os.close(fd)
    if segments is None:
        pytest.skip("this filesystem does not report holes")
    assert sum(length for _offset, length in segments) < size
    assert any(offset <= (8 << 20) < offset + length for offset, length in segments)


def test_a_dense_file_has_no_segments(tmp_path):
    path = tmp_path / "dense"
    path.write_bytes(os.urandom(100_000))
    fd = os.open(path, os.O_RDONLY)
    try:
        assert attrs.data_segments(fd, 100_000) is None
    finally:
        os.close(fd)


@pytest.mark.parametrize("holes", [None, "zeros", [[0, 10], [4096, 5]], []])
def test_pax_round_trip(holes):
    xattrs, back = attrs.from_pax(attrs.pax_records(XATTRS, holes))
    assert xattrs == XATTRS and back == holes


def test_too_many_segments_become_zeros():
    segments = [[i * 8192, 10] for i in range(attrs.MAX_SEGMENTS + 1)]
    assert attrs.from_pax(attrs.pax_records({}, segments))[1] == "zeros"


def test_index_round_trip():
    entry: dict = {}
    attrs.to_index(XATTRS, [[0, 10]], entry)
    assert attrs.xattrs_from_facts(entry["xattrs"]) == XATTRS and entry["sparse"] == [[0, 10]]
    assert attrs.from_pax(attrs.index_to_pax(entry)) == (XATTRS, [[0, 10]])
    assert attrs.xattrs_from_facts("not a mapping") == {}


def test_a_malformed_sparse_map_is_refused():
    with pytest.raises(RestoreError, match="sparse map in the archive is malformed"):
        attrs.from_pax({attrs.PAX_SPARSE: "1:2,x:y"})
