# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``open_repository``: the only place that names the concrete repository backends."""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import RepositoryError
from ansible_collections.nodekeep.backup.plugins.module_utils.core.manifest import DEFAULT_LOCAL_ROOT
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.repository import LocalRepository, Repository
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_repository import (
    S3Repository,
    open_s3_repository,
)


def open_repository(spec: str | dict[str, object], create: bool = True) -> Repository:
    """Build a repository from a path, ``s3://bucket/prefix``, or a dict with ``type`` local or s3."""
    if isinstance(spec, dict):
        kind = str(spec.get("type", "local"))
        if kind == "local":
            return LocalRepository(str(spec.get("path") or DEFAULT_LOCAL_ROOT), create=create)
        if kind == "s3":
            return S3Repository.from_spec(spec)
        raise RepositoryError("unknown repository type %r" % kind, "use type: local or type: s3")
    text = str(spec or "")
    if text.startswith("s3://"):
        return open_s3_repository(text)
    if "://" in text:
        raise RepositoryError(
            "repository %r: only local paths and s3:// URLs are supported" % text,
            "use an absolute path or s3://BUCKET/PREFIX",
        )
    return LocalRepository(text or DEFAULT_LOCAL_ROOT, create=create)
