"""Build every module's AnsiballZ payload with ansible-core's own module packer and print, as JSON, its
size and the collection's module_utils files it ships. Run in a child process (the collection finder
it installs changes the import system): ``python payload_probe.py ROOT [MODULE...]``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import zipfile

import ansible
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder


def main() -> None:
    root = os.path.abspath(sys.argv[1])
    _AnsibleCollectionFinder(paths=[os.path.join(root, "build", "collections")])._install()
    from ansible.executor.module_common import modify_module
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar

    names = sys.argv[2:] or sorted(f[:-3] for f in os.listdir(os.path.join(root, "plugins", "modules")) if f.endswith(".py"))
    result = {}
    for name in names:
        if name == "stat":  # the yardstick: ansible.builtin.stat
            path, fqcn = os.path.join(os.path.dirname(ansible.__file__), "modules", "stat.py"), "ansible.builtin.stat"
        else:
            path, fqcn = os.path.join(root, "plugins", "modules", name + ".py"), "nodekeep.backup." + name
        built = modify_module(
            module_name=fqcn,
            module_path=path,
            module_args={},
            templar=Templar(loader=DataLoader()),
            task_vars={"ansible_python_interpreter": "/usr/bin/python3"},
            module_compression="ZIP_DEFLATED",  # ansible-core's default (DEFAULT_MODULE_COMPRESSION)
        )
        # ansible-core 2.19 returns a _BuiltModule; 2.16 to 2.18 a tuple (b_module_data, module_style, shebang)
        data = built.b_module_data if hasattr(built, "b_module_data") else built[0]
        payload = max(re.findall(rb"[A-Za-z0-9+/=]{1000,}", data), key=len)  # the base64 zip in the wrapper
        archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(payload)))
        marker = "nodekeep/backup/plugins/module_utils/"
        shipped = [
            item.filename.split(marker, 1)[1]
            for item in archive.infolist()
            if marker in item.filename and not item.filename.endswith("__init__.py")
        ]
        result[name] = {"bytes": len(data), "engine": sorted(shipped)}
    json.dump(result, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
