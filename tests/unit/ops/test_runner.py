"""ops/runner.py: the scheduled jobs' runner finds the collection it belongs to, wherever the layer folder is."""

from __future__ import annotations

import os

from ansible_collections.nodekeep.backup.plugins.module_utils.ops import runner


def test_collections_root_holds_this_collection():
    """The modules run with PYTHONPATH=COLLECTIONS_ROOT: it must be the directory holding ansible_collections/."""
    modules = os.path.join(runner.COLLECTIONS_ROOT, "ansible_collections", "nodekeep", "backup", "plugins", "modules")
    assert os.path.isfile(os.path.join(modules, "epoch_backup.py"))
    assert os.path.samefile(os.path.join(modules, "..", "module_utils", "ops", "runner.py"), runner.__file__)
