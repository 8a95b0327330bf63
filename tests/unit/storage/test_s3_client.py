"""storage/_s3_client.py: S3 failures in one clear message with what to do, transient ones told apart from
refusals (a copy resumes only after those), and the lock times S3 reports read as UTC."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import botocore.exceptions
import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage import _s3_client as client


def client_error(code: str, status: int, message: str = "") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject"
    )


def test_a_refusal_is_not_transient():
    error = client.describe_s3_error("upload x", client_error("AccessDenied", 403, "Access Denied"))
    assert error.problem == "Failed to upload x: AccessDenied (Access Denied)"
    assert error.details["code"] == "AccessDenied" and error.details["status"] == 403
    assert not error.details["transient"] and not client.is_transient(error)


def test_a_server_failure_is_transient():
    exc = client_error("InternalError", 500)
    assert client.is_transient(exc)
    error = client.describe_s3_error("upload x", exc)
    assert error.details["transient"] and client.is_transient(error) and "run again" in error.remedy


def test_a_dropped_connection_is_transient_and_says_the_copy_resumes():
    exc = botocore.exceptions.EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    error = client.describe_s3_error("list the bucket", exc)
    assert client.is_transient(exc) and error.details["transient"] and "a copy resumes where it stopped" in error.remedy


def test_missing_credentials_say_where_to_set_them():
    error = client.describe_s3_error("list the bucket", botocore.exceptions.NoCredentialsError())
    assert "no AWS credentials were found" in error.problem and "access_key and secret_key" in error.remedy


def test_other_errors():
    error = client.describe_s3_error("read x", ValueError("odd"))
    assert (
        isinstance(error, RepositoryError)
        and error.problem == "Failed to read x: odd"
        and not client.is_transient(ValueError())
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2030-01-02T03:04:05Z", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        ("2030-01-02T05:04:05+02:00", datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        (datetime(2030, 1, 2, 3, 4, 5), datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)),
        (
            datetime(2030, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
            datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        ),
        (None, None),
    ],
)
def test_utc_datetime(value, expected):
    assert client.utc_datetime(value) == expected


def test_iso_time():
    assert client.iso_time(datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)) == "2030-01-02T03:04:05Z"
    assert client.iso_time(None) is None


def test_an_unlimited_bandwidth_never_waits():
    limiter = client.BandwidthLimiter(0)
    limiter.consume(10 << 30)
    assert limiter.waited == 0.0
