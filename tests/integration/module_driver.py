"""Run a module's ``main()`` as Ansible does and return its JSON result (the community.hashi_vault pattern).

``run_module("sqlite_backup", {...}, check_mode=False)`` sets the module arguments
(``ansible.module_utils.testing.patch_module_args`` in ansible-core 2.19, the
classic ``_ANSIBLE_ARGS`` patch before it), calls ``main()``, catches the
``SystemExit`` of ``exit_json``/``fail_json`` and parses what it printed. The
result carries ``_stdout`` (the raw output, to check that secrets are never
printed) and ``_exit_code``.

Local helper of the module tests; candidates for a ``run_module`` fixture in
``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    from unittest import mock

    from ansible.module_utils import basic
    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args=None):
        payload = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield


def run_module(name: str, args: dict, check_mode: bool = False) -> dict:
    module = importlib.import_module("ansible_collections.nodekeep.backup.plugins.modules.%s" % name)
    arguments = {key: value for key, value in args.items() if value is not None}
    arguments["_ansible_check_mode"] = check_mode
    out = io.StringIO()
    code = None
    with patch_module_args(arguments), contextlib.redirect_stdout(out):
        try:
            module.main()
        except SystemExit as exc:
            code = exc.code
    if code is None:
        raise AssertionError("%s.main() returned without exit_json or fail_json" % name)
    text = out.getvalue()
    result = json.loads(text)
    result["_stdout"] = text
    result["_exit_code"] = code
    return result


def succeeded(result: dict) -> dict:
    assert not result.get("failed"), result.get("msg")
    assert result["_exit_code"] == 0
    return result


def failed(result: dict, *needles: str) -> str:
    """Assert a clean failure whose message names every needle; returns the message."""
    assert result.get("failed") is True, result
    assert result["_exit_code"] == 1
    message = result["msg"]
    assert "unexpected error" not in message, message
    for needle in needles:
        assert needle.lower() in message.lower(), "%r not named in: %s" % (needle, message)
    return message
