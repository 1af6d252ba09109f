#!/usr/bin/env bash
# Installs magtek-bridge on a Raspberry Pi OS / Debian host:
#   /opt/magtek-bridge/venv            the package in its own virtualenv
#   /etc/magtek-bridge/config.toml     from config.example.toml (kept if it already exists)
#   /etc/systemd/system/magtek-bridge.service, /etc/udev/rules.d/70-magtek-mms.rules
# and a system user "magtek-bridge" in group "magtek" (the group the udev rule assigns).
# Run from a checkout as root: sudo ./scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

PREFIX=${PREFIX:-/opt/magtek-bridge}
apt-get install -y -qq python3-venv >/dev/null
getent group magtek >/dev/null || groupadd --system magtek
id magtek-bridge >/dev/null 2>&1 || useradd --system --gid magtek --home-dir /nonexistent \
  --no-create-home --shell /usr/sbin/nologin magtek-bridge

install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q .
install -m 0644 README.md "$PREFIX/README.md"

install -d -m 0750 -g magtek /etc/magtek-bridge
[ -f /etc/magtek-bridge/config.toml ] || \
  install -m 0640 -g magtek config.example.toml /etc/magtek-bridge/config.toml
install -m 0644 systemd/magtek-bridge.service /etc/systemd/system/magtek-bridge.service
install -m 0644 systemd/70-magtek-mms.rules /etc/udev/rules.d/70-magtek-mms.rules

udevadm control --reload-rules && udevadm trigger --subsystem-match=hidraw || true
systemctl daemon-reload
systemctl enable --now magtek-bridge.service
echo "installed; edit /etc/magtek-bridge/config.toml, then: systemctl restart magtek-bridge"
