"""Replication fixtures: ``stream_lab`` (a ``streamhelpers.StreamLab``)."""

from __future__ import annotations

import pytest
from streamhelpers import StreamLab


@pytest.fixture
def stream_lab(tmp_path, repository, age_key, signing_key, child_env):
    lab = StreamLab(tmp_path, repository, age_key, signing_key, child_env)
    yield lab
    lab.cleanup()
