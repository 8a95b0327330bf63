"""core/errors.py: every engine error names the problem and the remedy; OS errors become actionable ones."""

from __future__ import annotations

import errno

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import (
    CaptureError,
    NodekeepError,
    RepositoryError,
    check_range,
    describe_os_error,
    looks_secret,
)


def test_message_and_result():
    error = CaptureError("the database is locked.", "stop the writer", path="/data/db")
    assert error.message == "the database is locked: stop the writer" == str(error)
    assert error.to_result() == {
        "msg": "the database is locked: stop the writer",
        "error_kind": CaptureError.kind,
        "error_details": {"path": "/data/db"},
    }
    assert NodekeepError("plain").to_result() == {"msg": "plain", "error_kind": "error"}


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (errno.ENOSPC, "no space left on the device holding /r"),
        (errno.EDQUOT, "no space left"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied on /r"),
        (errno.EPERM, "permission denied"),
        (errno.ENOENT, "/r does not exist"),
        (errno.EIO, "writing x failed on /r"),
    ],
)
def test_describe_os_error(code, words):
    error = describe_os_error(OSError(code, "some strerror"), "writing x", "/r")
    assert isinstance(error, RepositoryError) and words in error.message and error.details == {"path": "/r"}


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ("AGE-SECRET-KEY-1QQQ", True),
        ("age-secret-key-1qqq", True),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", True),
        ("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p", False),
        ("ssh-ed25519 AAAAC3Nza", False),
    ],
)
def test_looks_secret(value, secret):
    assert looks_secret(value) is secret


class TestCheckRange:
    def test_accepts_numbers_and_numeric_strings(self):
        assert check_range(3, "compression_level", 1, 22) == 3
        assert check_range(" 22 ", "compression_level", 1, 22) == 22

    def test_out_of_range_names_the_option_and_the_span(self):
        with pytest.raises(NodekeepError, match=r"compression_level 99 is out of range: give 1 to 22$"):
            check_range(99, "compression_level", 1, 22)
        with pytest.raises(CaptureError, match=r"keep_last '-1' is out of range: give 0 to 1000 epochs; why"):
            check_range("-1", "keep_last", 0, 1000, unit="epochs", why="why", error=CaptureError)

    @pytest.mark.parametrize("value", [True, "3.5", None, "three"])
    def test_not_a_whole_number(self, value):
        with pytest.raises(NodekeepError, match="is not a whole number"):
            check_range(value, "level", 1, 22)
