# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test-only connection for Molecule: containers.podman.podman with pipelining.

containers.podman.podman runs `podman exec` without `-i`, so it cannot pipeline:
each module costs about five `podman exec` calls (make a temp dir, copy the
module, chmod, run, remove). With `-i` the module goes through stdin and one
`podman exec` runs it, as SSH with pipelining does on real nodes. Measured here:
10 stat tasks on one container, 14.8 s -> 6.8 s.

Molecule's podman driver names the connection `podman` in the inventory it
writes; the scenarios select this plugin per host in
provisioner.inventory.host_vars (`ansible_connection: nodekeep_podman`) and find
it through ANSIBLE_CONNECTION_PLUGINS (molecule/_resources/plugins/connection).
File transfers (copy, fetch) are those of containers.podman.podman.
"""

from __future__ import annotations

DOCUMENTATION = """
    name: nodekeep_podman
    short_description: containers.podman.podman with pipelining (Molecule tests only)
    description:
      - Runs modules in an existing podman container with C(podman exec -i), feeding the module on stdin.
      - Everything else is containers.podman.podman.
    options:
      remote_addr:
        description: The container's name or ID.
        default: inventory_hostname
        vars:
          - name: ansible_host
          - name: inventory_hostname
          - name: ansible_podman_host
      remote_user:
        description: User to run commands as inside the container.
        ini:
          - section: defaults
            key: remote_user
        env:
          - name: ANSIBLE_REMOTE_USER
        vars:
          - name: ansible_user
      podman_extra_args:
        description: Extra arguments to pass to the podman command line.
        default: ''
        vars:
          - name: ansible_podman_extra_args
      podman_executable:
        description: Executable for podman command.
        default: podman
        vars:
          - name: ansible_podman_executable
      pipelining:
        description: Feed modules on stdin (one C(podman exec) per module).
        type: bool
        default: true
        vars:
          - name: ansible_pipelining
"""

import shlex

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.connection import ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection


class Connection(PodmanConnection):
    transport = "nodekeep_podman"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        """`podman exec [-i] CONTAINER CMD...`: -i only when there is input to feed."""
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)  # pylint: disable=bad-super-call
        args = ["exec"]
        if in_data is not None:
            args.append("-i")
        if self.user:
            args.extend(("--user", self.user))
        return self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
