"""Docs and validation agree: every YAML example in README.md, docs/*.md and the example inventories
(inventories/*/hosts.yml, group_vars/, host_vars/) goes through the validation the roles use.

- each ``nodekeep_*`` variable must be one the roles declare (roles/*/meta/argument_specs.yml) and pass
  its declared type with ansible-core's ArgumentSpecValidator, the validator of the roles' own
  "Validating arguments against arg spec" task;
- ``nodekeep_assets`` (and a bare list of assets) goes through ``normalize_assets``, what
  nodekeep.backup.epoch_backup runs on the node before it captures anything;
- ``nodekeep_s3_targets`` / ``nodekeep_s3_pruner_targets`` (and a bare target fragment) through the S3
  target options of epoch_copy and epoch_prune; ``nodekeep_retention`` through ``RetentionPolicy``;
- a task of an example names a module of the collection that exists.

Values that are Jinja templates are left to the run that renders them. A doc example that a role
would refuse fails this test with the file, the line and the reason.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.nodekeep.backup.plugins.module_utils.assets.registry import normalize_assets
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import NodekeepError
from ansible_collections.nodekeep.backup.plugins.module_utils.retention.policy import RetentionPolicy
from ansible_collections.nodekeep.backup.plugins.module_utils.storage.s3_settings import S3_TARGET_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^([ \t]*)```ya?ml[ \t]*\n(.*?)^\1```", re.DOTALL | re.MULTILINE)
# variables the playbooks read outside the roles' argument specs (the play's host pattern, the AWX job id)
PLAYBOOK_VARIABLES = {"nodekeep_hosts", "nodekeep_recover_host", "nodekeep_offline_host"}
# inventory-only variables no role reads, each with the reason
INVENTORY_ONLY = {
    "nodekeep_key_targets": "runbook 000's key RPO/RTO, recorded in the inventory (docs/runbooks.md, docs/roles.md)",
    "nodekeep_demo_dir": "the demo's base directory, used by the demo inventory's own templates",
}
TARGET_SPEC = {"targets": {"type": "list", "elements": "dict", "options": S3_TARGET_OPTIONS}}


def role_specs() -> dict:
    specs: dict = {}
    for path in sorted(ROOT.glob("roles/*/meta/argument_specs.yml")):
        for entry in (yaml.safe_load(path.read_text()).get("argument_specs") or {}).values():
            for name, option in (entry.get("options") or {}).items():
                specs.setdefault(name, option)
    return specs


def doc_examples() -> list:
    """(where, data) of every YAML block of the README and docs/, and of every example inventory file."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        for match in FENCE.finditer(text):
            indent = len(match.group(1))
            body = "\n".join(line[indent:] for line in match.group(2).splitlines())
            where = "%s:%d" % (path.relative_to(ROOT), text[: match.start()].count("\n") + 1)
            found.append((where, body))
    for path in sorted(ROOT.glob("inventories/*/*.yml")) + sorted(ROOT.glob("inventories/*/*_vars/*.yml")):
        found.append((str(path.relative_to(ROOT)), path.read_text()))
    return found


def templated(value) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, dict):
        return any(templated(v) for v in value.values())
    if isinstance(value, list):
        return any(templated(v) for v in value)
    return False


def inventory_vars(data) -> list:
    """The variables of an inventory file (hosts.yml: every group's and host's vars) or a vars file."""
    if not isinstance(data, dict):
        return []
    if "all" in data and isinstance(data["all"], dict) and set(data) == {"all"}:
        found = []

        def walk(group):
            group = group or {}
            found.append(group.get("vars") or {})
            found.extend(host or {} for host in (group.get("hosts") or {}).values())
            for child in (group.get("children") or {}).values():
                walk(child)

        walk(data["all"])
        return found
    return [data]


def is_asset(item) -> bool:
    return isinstance(item, dict) and {"name", "type"} <= set(item)


def check_assets(assets) -> None:
    """normalize_assets, asset by asset; config and secret assets also stat their path, and an example's
    path that is not on this machine (FileNotFoundError) is the node's state, not a docs problem."""
    if templated(assets):
        return
    names = [a.get("name") for a in assets if isinstance(a, dict)]
    assert len(names) == len(set(names)), "two assets have the same name: %s" % names
    for asset in assets:
        try:
            normalize_assets([dict(asset)])
        except NodekeepError as exc:
            absent_path = isinstance(exc.__context__, FileNotFoundError)
            absent_dataset = asset.get("type") == "zfs" and "ZFS dataset %s does not exist" % asset.get(
                "dataset"
            ) in str(exc)
            if not (absent_path or absent_dataset):
                raise


def check_targets(name: str, targets) -> None:
    if templated(targets):
        return
    result = ArgumentSpecValidator(TARGET_SPEC).validate({"targets": targets})
    assert not result.error_messages, "%s: %s" % (name, "; ".join(result.error_messages))


def check_variables(variables: dict, specs: dict) -> None:
    for name, value in variables.items():
        if not name.startswith("nodekeep_"):
            continue
        known = name in specs or name in PLAYBOOK_VARIABLES or name in INVENTORY_ONLY
        assert known, "%s is not a variable any role declares" % name
        if name in specs and not templated(value):
            spec = {name: {k: v for k, v in specs[name].items() if k in ("type", "elements", "choices")}}
            result = ArgumentSpecValidator(spec).validate({name: value})
            assert not result.error_messages, "; ".join(result.error_messages)
    if variables.get("nodekeep_assets"):
        check_assets(variables["nodekeep_assets"])
    for name in ("nodekeep_s3_targets", "nodekeep_s3_pruner_targets"):
        if variables.get(name):
            check_targets(name, variables[name])
    if variables.get("nodekeep_retention") and not templated(variables["nodekeep_retention"]):
        RetentionPolicy.from_options(dict(variables["nodekeep_retention"]))


def check_example(data, specs: dict) -> int:
    """Validate one example; returns how many checks it had (0: nothing of ours in it)."""
    if isinstance(data, list) and data and all(is_asset(item) for item in data):
        check_assets(data)
        return 1
    if isinstance(data, list):  # tasks (or a playbook): each module of ours must exist
        count = 0
        for task in data:
            for key in task or {}:
                if str(key).startswith("nodekeep.backup."):
                    module = str(key).rsplit(".", 1)[1]
                    assert (ROOT / "plugins" / "modules" / ("%s.py" % module)).is_file(), "no module %s" % key
                    count += 1
        return count
    if (
        isinstance(data, dict)
        and set(data) & set(S3_TARGET_OPTIONS)
        and not any(k.startswith("nodekeep_") for k in data)
    ):
        # a fragment of one S3 target (docs/retention.md's lock settings)
        check_targets("an S3 target", [dict({"bucket": "example"}, **data)])
        return 1
    count = 0
    for variables in inventory_vars(data):
        if any(str(k).startswith("nodekeep_") for k in variables):
            check_variables(variables, specs)
            count += 1
    return count


EXAMPLES = doc_examples()


@pytest.mark.parametrize("where, body", EXAMPLES, ids=[example[0] for example in EXAMPLES])
def test_every_yaml_example_passes_the_roles_validation(where, body):
    data = yaml.safe_load(body)
    try:
        check_example(data, role_specs())
    except NodekeepError as exc:
        pytest.fail("%s: the example is refused: %s" % (where, exc))
    except AssertionError as exc:
        pytest.fail("%s: %s" % (where, exc))


def test_the_examples_are_found_and_checked():
    """The scan is not empty: the README's group_vars, docs/snapshots.md's assets and the inventories count."""
    specs = role_specs()
    checked = {where for where, body in EXAMPLES if check_example(yaml.safe_load(body), specs)}
    assert any(w.startswith("README.md:") for w in checked)
    assert any(w.startswith("docs/snapshots.md:") for w in checked)
    assert any(w.startswith("docs/roles.md:") for w in checked)
    assert "inventories/example/group_vars/nodekeep_nodes.yml" in checked
    assert len(checked) >= 20, sorted(checked)


def test_the_check_refuses_what_the_roles_refuse():
    """The test can fail: an asset without a path, a wrongly typed variable and an unknown variable are caught."""
    specs = role_specs()
    with pytest.raises(NodekeepError, match="has no path"):
        check_example({"nodekeep_assets": [{"name": "db", "type": "sqlite"}]}, specs)
    with pytest.raises(AssertionError, match="nodekeep_verify_deep"):
        check_example({"nodekeep_verify_deep": "sometimes"}, specs)
    with pytest.raises(AssertionError, match="nodekeep_restore_froce is not a variable"):
        check_example({"nodekeep_restore_froce": True}, specs)
    with pytest.raises(AssertionError, match="retain_days"):
        check_example({"retain_days": "a week"}, specs)
