# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build the schedule role's module bundle on the controller (run by roles/schedule).

    PYTHON nodekeep_bundle.py OUT.zip COLLECTION_ROOT

The zip holds what AnsiballZ ships with every module of this collection, once:
Ansible's ``module_utils`` (from the controller's ansible-core, with an empty
``ansible/__init__.py``) and the collection's ``plugins/modules`` and
``plugins/module_utils``. On the node it is the only PYTHONPATH entry of the timers'
runner, which runs each module as ``python -m ansible_collections.nodekeep.backup.
plugins.modules.NAME ARGS.json``: the same files as the playbooks run.

The zip is reproducible (sorted entries, fixed times and modes), so the role's copy
task changes nothing when neither ansible-core nor the collection changed. It is
written beside OUT and renamed into place.
"""

from __future__ import absolute_import, annotations, division, print_function

__metaclass__ = type

import os
import sys
import tempfile
import zipfile

import ansible.module_utils

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
#: packages made regular (an empty __init__.py), as AnsiballZ does for a collection's modules
PACKAGES = ("ansible_collections", "ansible_collections/nodekeep", "ansible_collections/nodekeep/backup",
            "ansible_collections/nodekeep/backup/plugins", "ansible_collections/nodekeep/backup/plugins/modules",
            "ansible_collections/nodekeep/backup/plugins/module_utils")  # fmt: skip


def tree(root: str, prefix: str, python_only: bool) -> list[tuple[str, str]]:
    """(archive name, file) of every file under ``root``, without caches."""
    entries = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")) or (python_only and not name.endswith(".py")):
                continue
            path = os.path.join(directory, name)
            entries.append((prefix + "/" + os.path.relpath(path, root).replace(os.sep, "/"), path))
    return entries


def entries(collection_root: str) -> list[tuple[str, str | None]]:
    """Every (archive name, source file or None for an empty file) of the bundle, sorted."""
    found: list[tuple[str, str | None]] = [("ansible/__init__.py", None)]
    found += tree(os.path.dirname(ansible.module_utils.__file__), "ansible/module_utils", python_only=False)
    found += [(package + "/__init__.py", None) for package in PACKAGES]
    plugins = os.path.join(collection_root, "plugins")
    for kind in ("modules", "module_utils"):
        found += tree(os.path.join(plugins, kind), "ansible_collections/nodekeep/backup/plugins/" + kind, True)
    # the engine's layer folders (core/, storage/, ...) are packages too: zipimport has no namespace packages
    layers = os.path.join(plugins, "module_utils")
    for name in sorted(os.listdir(layers)):
        init = "ansible_collections/nodekeep/backup/plugins/module_utils/%s/__init__.py" % name
        if os.path.isdir(os.path.join(layers, name)) and name != "__pycache__" and init not in dict(found):
            found.append((init, None))
    return sorted(found)


def write_bundle(out: str, collection_root: str) -> int:
    if not os.path.isfile(os.path.join(collection_root, "plugins", "module_utils", "ops", "runner.py")):
        raise SystemExit("%s is not the nodekeep.backup collection (no plugins/module_utils/ops/runner.py)" % collection_root)
    directory = os.path.dirname(os.path.abspath(out))
    fd, temp = tempfile.mkstemp(prefix=".nodekeep-bundle.", suffix=".tmp", dir=directory)
    count = 0
    try:
        with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name, path in entries(collection_root):
                info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
                info.external_attr = 0o100644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                if path is None:
                    data = b""
                else:
                    with open(path, "rb") as source:
                        data = source.read()
                bundle.writestr(info, data)
                count += 1
        os.chmod(temp, 0o644)
        os.replace(temp, out)
    except BaseException:
        os.unlink(temp)
        raise
    return count


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: nodekeep_bundle.py OUT.zip COLLECTION_ROOT\n")
        return 2
    count = write_bundle(argv[0], argv[1])
    sys.stdout.write("%s: %d files\n" % (argv[0], count))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
