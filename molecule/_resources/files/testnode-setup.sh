#!/usr/bin/env bash
# Set up and start the test node service (run by tasks/testnode.yml with
# ansible.builtin.script, after /usr/local/bin/nodekeep-testnode.py is in place):
# a system user, its data directory, the systemd unit, the health check; then
# start it and wait until it writes. A fixture, not under test: one script is
# one module run instead of one per step.
set -euo pipefail

id testnode >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /var/lib/testnode --shell /usr/sbin/nologin testnode
install -d -o testnode -g testnode -m 0750 /var/lib/testnode

cat >/etc/systemd/system/nodekeep-testnode.service <<'UNIT'
[Unit]
Description=nodekeep test node: appends blocks to its SQLite chain database

[Service]
User=testnode
Group=testnode
RuntimeDirectory=nodekeep-testnode
ExecStart=/usr/bin/python3 /usr/local/bin/nodekeep-testnode.py --db /var/lib/testnode/chain.db --pidfile /run/nodekeep-testnode/pid --initial-mb 2 --rate 20
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
UNIT

# The health check a cutover runs (the asset's health_command): the service is
# active, ready, and appends to the database at $NODEKEEP_PATH (the live path);
# with an argument, the chain must also have reached that height (as a real check
# would compare with the network's head). It reads as the service's user: a root
# reader of a WAL database could create root-owned -wal/-shm files that the
# service then cannot open.
cat >/usr/local/bin/nodekeep-testnode-health <<'HEALTH'
#!/bin/bash
# nodekeep-testnode-health [MIN_HEIGHT]
set -euo pipefail
db=${NODEKEEP_PATH:-/var/lib/testnode/chain.db}
query() { runuser -u testnode -- sqlite3 -cmd '.timeout 5000' "$db" "$1"; }
systemctl is-active --quiet nodekeep-testnode || { echo "nodekeep-testnode is not running" >&2; exit 1; }
test -s /run/nodekeep-testnode/pid || { echo "nodekeep-testnode is not ready" >&2; exit 1; }
before=$(query 'SELECT max(seq) FROM chain')
sleep 1
after=$(query 'SELECT max(seq) FROM chain')
test "$after" -gt "$before" || { echo "nodekeep-testnode does not append to $db" >&2; exit 1; }
height=$(query 'SELECT max(height) FROM chain')
test "$height" -ge "${1:-0}" || { echo "height $height is behind ${1}" >&2; exit 1; }
echo "healthy: height $height, appending to $db"
HEALTH
chmod 0755 /usr/local/bin/nodekeep-testnode-health

systemctl daemon-reload
systemctl enable --now --quiet nodekeep-testnode
for _ in $(seq 600); do
    [ -s /run/nodekeep-testnode/pid ] && exit 0
    sleep 0.1
done
echo "nodekeep-testnode did not get ready:" >&2
journalctl -u nodekeep-testnode --no-pager -n 20 >&2
exit 1
