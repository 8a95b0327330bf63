"""Fixtures of the seal tests, on the session's ``age_key`` (tests/conftest.py).

``recipients`` / ``identities`` (module)
    ``seal.load_recipients`` of the key's recipient, ``seal.load_identities`` of its identity file.
"""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core import seal


@pytest.fixture(scope="module")
def recipients(age_key):
    return seal.load_recipients([age_key.recipient])


@pytest.fixture(scope="module")
def identities(age_key):
    return seal.load_identities([], [str(age_key.identity_path)])
