"""Checks of the _smoke scenario, run by testinfra with the podman:// backend.

The hosts come from `verifier.options.hosts` in molecule.yml; the `host` fixture is
parametrised over all of them.
"""

import testinfra

VENV = "/opt/nodekeep-smoke/venv"
SYSTEMD_NODE = "podman://smoke-systemd"


def test_venv_imports_node_packages(host):
    cmd = host.run(
        f"{VENV}/bin/python -c 'import apsw, pyrage, zstandard, cryptography, rocksdict; "
        "print(apsw.sqlite_lib_version(), zstandard.__version__)'"
    )
    assert cmd.rc == 0, cmd.stderr


def test_venv_sees_system_packages(host):
    # --system-site-packages: Debian's python3-apt stays importable in the venv.
    assert host.run(f"{VENV}/bin/python -c 'import apt'").rc == 0


def test_nodes_resolve_each_other_by_name(host):
    for name in ("smoke-node1", "smoke-node2", "smoke-systemd"):
        assert host.run(f"getent hosts {name}").rc == 0, name


def test_tools_from_the_base_image(host):
    for tool in ("sqlite3", "zstd", "age", "sudo", "ip", "ps"):
        assert host.exists(tool), tool


def test_systemd_is_pid1_and_runs_timers():
    node = testinfra.get_host(SYSTEMD_NODE)
    assert node.file("/proc/1/comm").content_string.strip() == "systemd"
    state = node.run("systemctl is-system-running --wait").stdout.strip()
    assert state == "running", node.run("systemctl --failed --no-pager").stdout
    assert node.service("dbus").is_running
    # A transient timer fires within seconds: real timers work in this container.
    # (AccuracySec defaults to 1 min: without it the timer may fire much later.)
    node.run("rm -f /tmp/timer-fired")
    started = node.run(
        "systemd-run --on-active=1 --timer-property=AccuracySec=10ms --unit=smoke-timer "
        "/usr/bin/touch /tmp/timer-fired"
    )
    assert started.rc == 0, started.stderr
    fired = node.run("for i in $(seq 100); do [ -e /tmp/timer-fired ] && exit 0; sleep 0.1; done; exit 1")
    assert fired.rc == 0, node.run("journalctl -u smoke-timer --no-pager").stdout
