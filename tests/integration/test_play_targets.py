"""No silent success: a playbook whose host pattern and --limit match no host fails, naming both.

Ansible alone prints "skipping: no hosts matched" and exits 0, so a cron or AWX job would stay green
while nothing was backed up. Every node playbook's first play (nodekeep.backup.common, tasks_from
targets) refuses that. Nothing here connects to a node: the check runs on the controller, first.
"""

from __future__ import annotations

import json

import pytest
from playbook_helpers import ROOT, PlaybookLab, require_playbook_tools

NODE_PLAYBOOKS = [
    "agent.yml", "backup.yml", "verify.yml", "restore.yml", "drill.yml", "schedule.yml", "keys_seal.yml", "stream.yml",
    "epochs.yml",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> PlaybookLab:
    lab = PlaybookLab(tmp_path_factory.mktemp("targets"), require_playbook_tools())
    # written from the README, not copied from inventories/example: mainnet is NOT a child of nodekeep_nodes
    lab.write_inventory(
        {
            "all": {
                "children": {
                    "nodekeep_nodes": {"hosts": {"node-1": {"ansible_connection": "local"}}},
                    "mainnet": {"hosts": {"main-1": {"ansible_connection": "local"}}},
                }
            }
        }
    )
    return lab


def refused(proc, *needles: str) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, "the play acted on no host and still exited 0:\n" + out[-3000:]
    assert "Nothing was done: the host pattern" in out, out[-3000:]
    for needle in needles:
        assert needle in out, (needle, out[-3000:])
    # the check ran before anything else: no role of the playbook started
    assert "PLAY [Check that the playbook acts on at least one host]" in out
    assert out.count("PLAY [") == 1, out[-3000:]
    return out


@pytest.mark.parametrize("playbook", NODE_PLAYBOOKS)
def test_a_limit_outside_the_group_fails_naming_pattern_and_limit(lab, playbook):
    proc = lab.run(playbook, "-l", "mainnet", check=False)
    refused(proc, "host pattern nodekeep_nodes with the limit mainnet", "-e nodekeep_hosts=PATTERN")


def test_a_pattern_that_matches_nothing_fails_naming_it(lab):
    proc = lab.run("backup.yml", "-e", "nodekeep_hosts=mainet", check=False)
    out = refused(proc, "host pattern mainet matches no host")
    assert "with the limit" not in out


def test_an_empty_inventory_fails(tmp_path):
    lab = PlaybookLab(tmp_path, require_playbook_tools())
    lab.write_inventory({"all": {"hosts": {}}})
    refused(lab.run("verify.yml", check=False), "host pattern nodekeep_nodes matches no host")


def test_a_pattern_with_hosts_passes_the_check(lab):
    # --tags nothing-else: only the check (tagged always) and the roles' argument validation run
    proc = lab.run("backup.yml", "-l", "node-1", "--tags", "nodekeep-none", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 host(s) match nodekeep_nodes with the limit node-1" in proc.stdout
    proc = lab.run("verify.yml", "-e", "nodekeep_hosts=mainnet", "--tags", "nodekeep-none", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "1 host(s) match mainnet" in proc.stdout


def test_module_errors_are_worded_with_the_role_variables(lab, tmp_path):
    """nodekeep.backup.common tasks_from explain: the module's option names become the variables the operator sets."""
    playbook = tmp_path / "explain.yml"
    failure = "compression_level 99 is out of range: give 1 to 22; or set force: true; the destination is wrong"
    names = {"compression_level": "nodekeep_backup_compression_level", "force": "nodekeep_restore_force"}
    playbook.write_text(
        json.dumps(
            [
                {
                    "hosts": "node-1",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "ansible.builtin.import_role": {
                                "name": "nodekeep.backup.common",
                                "tasks_from": "explain",
                                "rolespec_validate": False,
                            },
                            "vars": {"nodekeep_failure_result": {"msg": failure}, "nodekeep_failure_names": names},
                        },
                        {"ansible.builtin.debug": {"msg": "WORDED {{ nodekeep_failure }}"}},
                    ],
                }
            ]
        )
    )
    proc = lab.run(str(playbook), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (
        "WORDED nodekeep_backup_compression_level 99 is out of range: give 1 to 22; "
        "or set nodekeep_restore_force: true; the destination is wrong" in proc.stdout
    ), proc.stdout[-3000:]


# The key ceremonies act on one host named by their own variable, the controller (localhost) by default.
@pytest.mark.parametrize(
    ("playbook", "args", "needles"),
    [
        ("keys_split.yml", ["-l", "mainnet"],
         ["host pattern localhost (from nodekeep_offline_host) with the limit mainnet",
          "Set -e nodekeep_offline_host=HOST to a host of the inventory (or localhost) that the limit keeps"]),
        ("keys_split.yml", ["-e", "nodekeep_offline_host=ofline"],
         ["host pattern ofline (from nodekeep_offline_host) matches no host",
          "Set -e nodekeep_offline_host=HOST to a host of the inventory (or localhost)."]),
        ("keys_recover.yml", ["-e", "nodekeep_recover_host=main-2"],
         ["host pattern main-2 (from nodekeep_recover_host) matches no host"]),
        ("keys_recover.yml", ["-e", "nodekeep_recover_host=main-1", "-l", "node-1"],
         ["host pattern main-1 (from nodekeep_recover_host) with the limit node-1"]),
        ("keys_recover.yml", ["-e", "nodekeep_offline_host=ofline"],
         ["host pattern ofline (from nodekeep_offline_host) matches no host"]),
        ("keys_recover.yml", ["-l", "mainnet"],
         ["host pattern localhost (from nodekeep_recover_host) with the limit mainnet"]),
    ],
)
def test_a_key_ceremony_host_outside_the_inventory_or_limit_fails_naming_its_variable(lab, playbook, args, needles):
    refused(lab.run(playbook, *args, check=False), *needles)


@pytest.mark.parametrize(
    ("playbook", "args", "matched"),
    [
        ("keys_split.yml", [], "1 host(s) match localhost"),
        ("keys_recover.yml", [], "1 host(s) match localhost"),
        ("keys_recover.yml", ["-e", "nodekeep_recover_host=main-1", "-l", "mainnet"],
         "1 host(s) match main-1 with the limit mainnet"),
    ],
)
def test_a_key_ceremony_host_in_the_inventory_passes_the_check(lab, playbook, args, matched):
    proc = lab.run(playbook, *args, "--tags", "nodekeep-none", check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert matched in proc.stdout, proc.stdout[-3000:]


def test_every_playbook_is_covered():
    """A playbook added to playbooks/ gets the check, or a case here."""
    covered = set(NODE_PLAYBOOKS) | {"keys_split.yml", "keys_recover.yml", "stream.yml"}
    present = {path.name for path in (ROOT / "playbooks").glob("*.yml")}
    assert present <= covered, present - covered
    for name in present:
        assert "tasks_from: targets" in (ROOT / "playbooks" / name).read_text(), name


def test_numeric_role_variables_out_of_range_are_refused_naming_them(lab, tmp_path):
    """nodekeep.backup.common tasks_from ranges: the check the roles run on their numeric variables."""
    playbook = tmp_path / "ranges.yml"
    ranges = [
        {"name": "nodekeep_health_retries", "value": -1, "low": 0, "high": 1000},
        {"name": "nodekeep_stream_interval", "value": 0.0, "low": 0.01, "high": 3600, "unit": "seconds", "float": True},
        {"name": "nodekeep_schedule_lock_wait", "value": "soon", "low": 0, "high": 86400, "unit": "seconds"},
        {"name": "nodekeep_drill_history", "value": 10**20, "low": 0, "high": 10000},
        {"name": "nodekeep_stream_poll", "value": 0.5, "low": 0.001, "high": 60, "float": True},
        {"name": "nodekeep_health_delay", "value": "3", "low": 0, "high": 3600},
    ]
    play = {
        "hosts": "node-1",
        "gather_facts": False,
        "tasks": [
            {
                "ansible.builtin.import_role": {
                    "name": "nodekeep.backup.common", "tasks_from": "ranges", "rolespec_validate": False
                },
                "vars": {"nodekeep_ranges": ranges},
            }
        ],
    }  # fmt: skip
    playbook.write_text(json.dumps([play]))
    proc = lab.run(str(playbook), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    for needle in (
        "nodekeep_health_retries -1 is out of range: give 0 to 1000",
        "nodekeep_stream_interval 0.0 is out of range: give 0.01 to 3600 seconds",
        'nodekeep_schedule_lock_wait "soon" is not a whole number: give 0 to 86400 seconds',
        "nodekeep_drill_history 100000000000000000000 is out of range: give 0 to 10000",
    ):
        assert needle in out, (needle, out[-3000:])
    assert "nodekeep_stream_poll" not in out and "nodekeep_health_delay" not in out, out[-3000:]
    ranges[:4] = []
    playbook.write_text(json.dumps([play]))
    proc = lab.run(str(playbook), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]


@pytest.mark.parametrize(
    ("playbook", "variable", "value", "needle"),
    [
        ("stream.yml", "nodekeep_stream_interval", "0", "nodekeep_stream_interval 0 is out of range: give 0.01 to 3600"),
        ("stream.yml", "nodekeep_stream_max_backlog", "-5", "nodekeep_stream_max_backlog -5 is out of range"),
        ("schedule.yml", "nodekeep_schedule_verify_cycle", "0", "nodekeep_schedule_verify_cycle 0 is out of range"),
        ("restore.yml", "nodekeep_health_retries", "-1", "nodekeep_health_retries -1 is out of range: give 0 to 1000"),
        ("drill.yml", "nodekeep_drill_history", "99999999999", "nodekeep_drill_history 99999999999 is out of range"),
    ],
)
def test_a_role_refuses_its_numeric_variable_out_of_range(lab, playbook, variable, value, needle):
    proc = lab.run(playbook, "-l", "node-1", "-e", "%s=%s" % (variable, value), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert needle in out, out[-4000:]
