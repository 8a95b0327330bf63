"""common.py: the module glue, with a real AnsibleModule: engine errors become clean failures naming the
problem, key material given by mistake never appears in the result (invocation included), option groups merge."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
from ansible.module_utils import basic

try:
    from ansible.module_utils.testing import patch_module_args
except ImportError:  # ansible-core < 2.19
    from unittest import mock

    from ansible.module_utils.common.text.converters import to_bytes

    @contextlib.contextmanager
    def patch_module_args(args=None):
        payload = to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args or {}}))
        with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
            yield


from ansible_collections.nodekeep.backup.plugins.module_utils import common
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import CaptureError

IDENTITY = "AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQ"


def run_module(params, action):
    out = io.StringIO()
    with patch_module_args(params), contextlib.redirect_stdout(out):
        module = basic.AnsibleModule(argument_spec={"recipients": {"type": "list", "elements": "str"}})
        with pytest.raises(SystemExit):
            common.run(module, lambda: action(module))
    return json.loads(out.getvalue())


def test_an_engine_error_is_a_clean_failure():
    def action(_module):
        raise CaptureError("the database is locked", "stop the writer")

    result = run_module({"recipients": ["age1abc"]}, action)
    assert result["failed"] and result["msg"] == "the database is locked: stop the writer"
    assert result["error_kind"] == CaptureError.kind and "exception" not in result


def test_an_unexpected_error_keeps_its_traceback():
    result = run_module({"recipients": []}, lambda _m: {}["missing"])
    assert result["failed"] and result["msg"] == "unexpected error: 'missing'"


def test_key_material_given_as_a_recipient_never_appears_in_the_result():
    result = run_module({"recipients": [IDENTITY]}, lambda module: {"echo": module.params["recipients"]})
    assert IDENTITY not in json.dumps(result)
    assert len(result["echo"]) == 1 and result["echo"] != [IDENTITY]  # masked by Ansible


def test_argspec_merges_groups_and_copies_them():
    group = {"node": {"type": "str", "required": True}}
    spec = common.argspec(group, node={"type": "str"}, extra={"type": "int"})
    assert spec == {"node": {"type": "str"}, "extra": {"type": "int"}}
    spec2 = common.argspec(group)
    spec2["node"]["required"] = False
    assert group["node"]["required"] is True  # the shared group is never changed


def test_describe_path_tells_kind_size_mode_and_entries_never_content(tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"s3cr3t-bytes")
    secret.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(secret)
    for number in range(common.DIFF_ENTRIES + 3):
        (tmp_path / ("f%02d" % number)).write_bytes(b"x" * number)
    assert common.describe_path(str(tmp_path / "none")) == "absent\n"
    assert common.describe_path(str(secret)).startswith("file, 12 bytes, mode 0600, owner ")
    assert common.describe_path(str(link)) == "symlink to %s\n" % secret  # described, never followed
    listing = common.describe_path(str(tmp_path))
    assert listing.startswith("directory, mode ") and ", %d entries\n" % (common.DIFF_ENTRIES + 5) in listing
    assert listing.endswith("  ... and 5 more\n") and b"s3cr3t" not in listing.encode()
