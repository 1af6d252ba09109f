#!/usr/bin/env bash
# Installs magtek-bridge on a Raspberry Pi OS / Debian host:
#   /opt/magtek-bridge/venv            the package in its own virtualenv
#   /etc/magtek-bridge/config.toml     from config.example.toml (kept if it already exists)
#   /etc/systemd/system/magtek-bridge.service, /etc/udev/rules.d/70-magtek-mms.rules
# and a system user "magtek-bridge" in group "magtek" (the group the udev rule assigns).
# Run from a checkout as root: sudo ./scripts/install.sh
#
# The service is enabled (starts at boot) but started only when the config file already
# existed and `magtek-bridge config check` passes: a fresh install leaves it stopped until the
# example config has been edited (the script says so at the end).
#
# 32-bit Raspberry Pi OS (armv7l): PyPI has no hidapi wheel for it, so pip builds hidapi from
# source: a compiler, libusb-1.0-0-dev, libudev-dev and the Python headers are installed first.
# Every other platform (x86_64, aarch64) gets wheels only.
#
# PREFIX, ETC_DIR, UNIT_DIR and UDEV_DIR move the installed files (tests install into a
# scratch directory); the defaults are the paths above.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

PREFIX=${PREFIX:-/opt/magtek-bridge}
ETC_DIR=${ETC_DIR:-/etc/magtek-bridge}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}
UDEV_DIR=${UDEV_DIR:-/etc/udev/rules.d}
CONFIG="$ETC_DIR/config.toml"

packages=(python3-venv)
arch=$(uname -m)
case "$arch" in
  armv7l|armv6l) packages+=(gcc libc6-dev python3-dev libusb-1.0-0-dev libudev-dev pkg-config) ;;
esac
export DEBIAN_FRONTEND=noninteractive
echo "apt-get: ${packages[*]} ($arch)"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

getent group magtek >/dev/null || groupadd --system magtek
id magtek-bridge >/dev/null 2>&1 || useradd --system --gid magtek --home-dir /nonexistent \
  --no-create-home --shell /usr/sbin/nologin magtek-bridge

install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --upgrade pip
"$PREFIX/venv/bin/pip" install -q .
install -m 0644 README.md "$PREFIX/README.md"

install -d -m 0750 -g magtek "$ETC_DIR"
config_existed=yes
if [ ! -f "$CONFIG" ]; then
  config_existed=no
  install -m 0640 -g magtek config.example.toml "$CONFIG"
fi
install -d "$UNIT_DIR" "$UDEV_DIR"
install -m 0644 systemd/magtek-bridge.service "$UNIT_DIR/magtek-bridge.service"
install -m 0644 systemd/70-magtek-mms.rules "$UDEV_DIR/70-magtek-mms.rules"

udevadm control --reload-rules && udevadm trigger --subsystem-match=hidraw || true
systemctl daemon-reload
systemctl enable magtek-bridge.service

check=("$PREFIX/venv/bin/magtek-bridge" config check --quiet --config "$CONFIG")
if [ "$config_existed" = no ]; then
  echo "installed; the service is enabled but NOT started: edit $CONFIG"
  echo "(at least [mqtt] host), check it with: ${check[*]}"
  echo "then start it: systemctl start magtek-bridge"
elif "${check[@]}"; then
  systemctl restart magtek-bridge.service
  echo "installed; $CONFIG passed config check; the service is enabled and (re)started"
else
  echo "installed; the service is enabled but NOT started: $CONFIG has the problems above."
  echo "Fix them, check with: ${check[*]}"
  echo "then start it: systemctl start magtek-bridge"
  exit 2
fi
