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


class _Clock:
    """A clock the limiter sleeps on: sleeping moves it forward, nothing else does."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_limiter_holds_the_average_rate_after_a_one_second_burst():
    clock = _Clock()
    limiter = client.BandwidthLimiter(6 << 20, clock=clock, sleep=clock.sleep)
    for _megabyte in range(12):  # 12 MiB at 6 MiB/s: the first 6 MiB are the burst, the rest costs 1 s
        limiter.consume(1 << 20)
    assert clock.now - 100.0 == pytest.approx(1.0)
    assert limiter.waited == pytest.approx(1.0)
    assert limiter.charged == 12 << 20
    for _megabyte in range(12):  # the bucket is empty now: 12 MiB more cost 2 s
        limiter.consume(1 << 20)
    assert clock.now - 100.0 == pytest.approx(3.0)
    assert limiter.waited == pytest.approx(3.0)


def test_time_that_passed_refills_the_bucket_up_to_one_second():
    clock = _Clock()
    limiter = client.BandwidthLimiter(1000, clock=clock, sleep=clock.sleep)
    limiter.consume(1000)
    clock.now += 3600  # an idle hour refills one second's worth, not an hour's
    limiter.consume(2000)
    assert clock.slept == [pytest.approx(1.0)]


def test_callers_throttled_at_the_same_time_count_the_span_once():
    clock = _Clock()
    limiter = client.BandwidthLimiter(1000, clock=clock, sleep=lambda seconds: None)  # two threads: nobody advances
    limiter.consume(1000)
    limiter.consume(1000)  # owes 1 s, until now + 1
    limiter.consume(1000)  # owes 2 s, until now + 2: the first second overlaps the first caller's
    assert limiter.waited == pytest.approx(2.0)
