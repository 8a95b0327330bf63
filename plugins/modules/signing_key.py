#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodekeep.backup contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: signing_key
short_description: Make sure a node has its Ed25519 manifest signing key
version_added: 0.1.0
description:
  - Creates the node's Ed25519 private key in OpenSSH format (mode V(0600), directory V(0700)) when it is
    missing, and returns its public key for the controller to keep.
  - An existing key is never replaced or rewritten; its permissions are tightened to V(0600) if looser.
  - The public key is what M(nodekeep.backup.integrity_check) and M(nodekeep.backup.epoch_restore) verify
    manifests against. Keep it on the controller (the agent role fetches it to C(keys/NODE.pub)).
author:
  - nodekeep.backup maintainers (@nodekeep)
extends_documentation_fragment:
  - nodekeep.backup._attributes
attributes:
  check_mode:
    support: full
    details: Reports whether a key would be created; the public key is returned only when the key exists.
  diff_mode:
    support: full
    details:
      - With C(--diff), what changes on the key file (made, or its mode tightened to C(0600)) and, once it exists, the
        public key's fingerprint; never any key material.
  idempotent:
    support: full
    details: A second run finds the key and changes nothing.
options:
  path:
    description: Where the private key lives on the node.
    type: path
    default: /etc/nodekeep/signing_key
  comment:
    description: Comment appended to the returned public key line, usually the node name.
    type: str
    default: ""
requirements:
  - cryptography
seealso:
  - module: nodekeep.backup.epoch_backup
  - module: nodekeep.backup.integrity_check
  - name: OpenSSH signature format (PROTOCOL.sshsig)
    description: The manifest signature format; C(ssh-keygen -Y verify) checks it.
    link: https://github.com/openssh/openssh-portable/blob/master/PROTOCOL.sshsig
"""

EXAMPLES = r"""
- name: Make sure the node has a signing key
  nodekeep.backup.signing_key:
    path: /etc/nodekeep/signing_key
    comment: "{{ inventory_hostname }}"
  register: signing

- name: Keep the public key on the controller
  ansible.builtin.copy:
    content: "{{ signing.public_key }}\n"
    dest: "{{ inventory_dir }}/keys/{{ inventory_hostname }}.pub"
    mode: "0644"
  delegate_to: localhost
"""

RETURN = r"""
public_key:
  description: The public key as an OpenSSH line (C(ssh-ed25519 AAAA... comment)).
  returned: when the key exists (always, except in check mode before creation)
  type: str
  sample: ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBf0ZkRQ0bLd5fTDZcHLrvpgLJZGRe9XNrV6Sg3mD5bB node1
fingerprint:
  description: SHA256 fingerprint of the public key, as C(ssh-keygen -l) prints it.
  returned: when the key exists
  type: str
  sample: SHA256:ryVVVMM8D0/+p4WzDXJPykF/ndIra19Ncj/lJVX3nvw
path:
  description: Path of the private key.
  returned: always
  type: str
  sample: /etc/nodekeep/signing_key
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodekeep.backup.plugins.module_utils.common import diff_entry, require_libraries, run
from ansible_collections.nodekeep.backup.plugins.module_utils.core.errors import SignatureError, describe_os_error
from ansible_collections.nodekeep.backup.plugins.module_utils.core.signing import (
    fingerprint,
    generate_private_key_pem,
    public_key_line,
)


def _write_new_key(path: str, pem: bytes) -> None:
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        temp = "%s.nodekeep-tmp-%d" % (path, os.getpid())
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, path)  # never replaces a key that appeared meanwhile
        finally:
            os.unlink(temp)
    except FileExistsError:
        raise SignatureError("a signing key appeared at %s while creating one" % path, "run again; it is kept")
    except OSError as exc:
        raise describe_os_error(exc, "creating the signing key", path)


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/nodekeep/signing_key"},
            "comment": {"type": "str", "default": ""},
        },
        supports_check_mode=True,
    )
    require_libraries(module, "cryptography")
    path = module.params["path"]
    comment = module.params["comment"]

    def action():
        changed = False
        before = after = ""
        if os.path.isdir(path):
            raise SignatureError("%s is a directory, not a key file" % path, "set the path of the key file")
        if not os.path.exists(path):
            diff = diff_entry(path, "", "new Ed25519 key, mode 0600\n")
            if module.check_mode:
                return dict({"changed": True, "path": path}, **({"diff": diff} if module._diff else {}))
            _write_new_key(path, generate_private_key_pem())
            changed = True
            after = diff["after"]
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            before, after = "mode %04o\n" % mode, "mode 0600\n"
            changed = True
            if not module.check_mode:
                os.chmod(path, 0o600)
        with open(path, "rb") as handle:
            public = public_key_line(handle.read(), comment)
        result = {"changed": changed, "path": path, "public_key": public, "fingerprint": fingerprint(public)}
        if module._diff and changed:
            note = "public key %s\n" % result["fingerprint"]
            result["diff"] = diff_entry(path, before + (note if before else ""), after + note)
        return result

    run(module, action)


if __name__ == "__main__":
    main()
