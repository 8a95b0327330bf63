"""storage/opener.py: the one place that turns a repository spec into a backend."""

from __future__ import annotations

import pytest

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.opener import open_repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import S3Repository


def test_a_path_and_a_local_dict_open_the_same_local_repository(tmp_path):
    by_path = open_repository(str(tmp_path / "repo"))
    by_dict = open_repository({"type": "local", "path": str(tmp_path / "repo")})
    assert isinstance(by_path, LocalRepository) and isinstance(by_dict, LocalRepository)
    assert by_path.root == by_dict.root == str(tmp_path / "repo")
    assert (tmp_path / "repo").is_dir()


def test_create_false_refuses_a_missing_repository_and_makes_nothing(tmp_path):
    with pytest.raises(RepositoryError, match="there is no repository at"):
        open_repository({"type": "local", "path": str(tmp_path / "absent")}, create=False)
    assert not (tmp_path / "absent").exists()


def test_an_s3_url_opens_s3_without_network():
    repository = open_repository("s3://bucket/prefix")
    assert isinstance(repository, S3Repository)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"type": "sftp"}, "unknown repository type 'sftp': use type: local or type: s3"),
        ("sftp://host/x", "only local paths and s3:// URLs are supported"),
    ],
)
def test_unknown_kinds_are_refused(spec, words):
    with pytest.raises(RepositoryError, match=words):
        open_repository(spec)
