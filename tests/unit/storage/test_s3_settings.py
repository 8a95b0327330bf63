"""storage/s3_settings.py: the typed S3Settings (one object instead of a 27-argument constructor), checked
before any request; no boto3 or server needed."""

from __future__ import annotations

import base64

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3Settings


def checked(**options) -> S3Settings:
    settings = S3Settings(**options)
    settings.check()
    return settings


def test_the_url_form_and_normalisation():
    settings = S3Settings.from_spec({"type": "s3", "url": "s3://nodekeep-backups/fleet//eu/", "part_size": "8M"})
    settings.check()
    assert (settings.bucket, settings.prefix, settings.part_size) == ("nodekeep-backups", "fleet/eu", 8 << 20)
    assert settings.object_workers == 4 and settings.retries == 5


def test_an_unknown_option_is_named():
    with pytest.raises(RepositoryError) as raised:
        S3Settings.from_spec({"bucket": "nodekeep-backups", "bukket": "x"})
    assert "bukket" in raised.value.problem


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"bucket": "Bad_Bucket"}, "not a valid S3 bucket name"),
        ({"bucket": "nodekeep-b", "prefix": "a/../b"}, "contains '..'"),
        ({"bucket": "nodekeep-b", "access_key": "AKIA"}, "only one of access_key and secret_key"),
        ({"bucket": "nodekeep-b", "sse": "rot13"}, "sse 'rot13' is not valid"),
        ({"bucket": "nodekeep-b", "sse_kms_key_id": "k"}, "sse_kms_key_id is set but sse is none"),
        ({"bucket": "nodekeep-b", "part_size": "1M"}, "part_size 1M is out of range"),
        ({"bucket": "nodekeep-b", "bandwidth_limit": "fast"}, "bandwidth_limit 'fast' is not a size"),
    ],
)
def test_bad_settings_are_refused_with_a_remedy(options, needle):
    with pytest.raises(RepositoryError) as raised:
        checked(**options)
    assert needle in raised.value.problem
    assert raised.value.remedy


def test_the_customer_key_only_with_sse_customer():
    key = base64.b64encode(bytes(32)).decode()
    assert checked(bucket="nodekeep-b", sse="customer", sse_customer_key=key).customer_key() == bytes(32)
    with pytest.raises(RepositoryError) as raised:
        checked(bucket="nodekeep-b", sse_customer_key=key)
    assert "sse_customer_key is set but sse is none" in raised.value.problem


def test_credentials_never_show_in_repr():
    key = base64.b64encode(b"k" * 32).decode()
    settings = S3Settings(bucket="nodekeep-b", access_key="AKIAEXAMPLE", secret_key="s3cr3t-value",
                          session_token="token-value", sse="customer", sse_customer_key=key)  # fmt: skip
    text = repr(settings)
    for secret in ("AKIAEXAMPLE", "s3cr3t-value", "token-value", key):
        assert secret not in text
