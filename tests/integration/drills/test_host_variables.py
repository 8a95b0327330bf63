"""Variables are read from the host the docs name (roles/drill and roles/restore meta/argument_specs.yml):
a setting about the staging (restore) host - nodekeep_drill_staging_root, nodekeep_restore_host_repository,
nodekeep_age_identity_file - is read from that host's variables, else from the drilled node's. Each of them
is tested on either host.
"""

from __future__ import annotations

import copy
import json

import pytest
from drillhelpers import NODE, STAGE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MOVED = ("nodekeep_drill_staging_root", "nodekeep_restore_host_repository", "nodekeep_age_identity_file")


def variant(fleet, name: str, on: str) -> str:
    """The fleet's inventory with the three settings only on the host ``on`` (STAGE or NODE), as NAME.yml."""
    inventory = copy.deepcopy(json.loads((fleet.inventory_dir / "hosts.yml").read_text()))
    top = inventory["all"]
    top["vars"].pop("nodekeep_drill_staging_root")
    stage = top["children"]["staging"]["hosts"][STAGE]
    node = top["children"]["nodekeep_nodes"]["children"]["testnet"]["hosts"][NODE]
    for key in MOVED:
        stage.pop(key, None)
    where = stage if on == STAGE else node
    where.update(
        nodekeep_drill_staging_root=str(fleet.base / ("drills-on-%s" % on)),
        nodekeep_restore_host_repository=str(fleet.base / ("shipped-on-%s" % on)),
        nodekeep_age_identity_file=str(fleet.identity),
    )
    (fleet.inventory_dir / ("%s.yml" % name)).write_text(json.dumps(inventory, indent=2))
    return "%s.yml" % name


@pytest.mark.parametrize("on", [STAGE, NODE])
def test_the_drill_reads_staging_settings_from_the_staging_host_else_the_node(fleet, on):
    fleet.prepare()
    epoch = fleet.epochs()[-1]
    inventory = variant(fleet, "vars-on-%s" % on, on)
    proc = fleet.run(
        "drill.yml", "-l", NODE, "-e", "nodekeep_drill_series=hostvars-%s" % on, "-e", "nodekeep_drill_keep_staged=true",
        inventory=inventory,
    )  # fmt: skip
    staged = list((fleet.base / ("drills-on-%s" % on)).glob("*/%s" % NODE))
    assert len(staged) == 1, proc.stdout[-3000:]
    assert list(staged[0].rglob("chain.db")), "the drill did not restore into the staging root of %s" % on
    assert (fleet.base / ("shipped-on-%s" % on) / NODE / epoch / "manifest.json.sig").is_file()
    assert "drills-on-%s" % on in proc.stdout  # the plan names the staging root used


def test_a_remote_restore_reads_identity_and_repository_from_the_restore_host(fleet):
    """The fleet's inventory sets nodekeep_age_identity_file and nodekeep_restore_host_repository on the
    staging host only: a restore on that host (-e nodekeep_restore_host) uses them."""
    fleet.prepare()
    epoch = fleet.epochs()[-1]
    staging = fleet.base / "restore-remote"
    fleet.run(
        "restore.yml", "-l", NODE, "-e", "nodekeep_restore_host=%s" % STAGE, "-e", "nodekeep_restore_to=%s" % staging,
    )  # fmt: skip
    assert (fleet.shipped / NODE / epoch / "manifest.json.sig").is_file()
    assert (staging / str(fleet.live_db).lstrip("/")).is_file()
