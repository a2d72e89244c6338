#!/usr/bin/env bash
# Installs moectl on this node: binaries into $PREFIX/bin (default /usr/local),
# configs into /etc/moectl (existing files are kept), the systemd unit, then
# reloads systemd. Run as root after ./scripts/build.
#
#   sudo deploy/install.sh            # then: systemctl enable --now moectld
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
BUILD_DIR=${BUILD_DIR:-build}
ETC=${ETC:-/etc/moectl}
UNIT_DIR=${UNIT_DIR:-/etc/systemd/system}

# The daemon runs as system user moectld; group moectl reads its database
# (/var/lib/moectld, files 0640). Add operators with: usermod -aG moectl NAME
GROUP=${GROUP:-moectl}
DAEMON_USER=${DAEMON_USER:-moectld}
if ! getent group "$GROUP" >/dev/null; then
  groupadd --system "$GROUP"
fi
if ! getent passwd "$DAEMON_USER" >/dev/null; then
  useradd --system --gid "$GROUP" --home-dir /var/lib/moectld --no-create-home \
    --shell /usr/sbin/nologin --comment "moectl controller daemon" "$DAEMON_USER"
fi

for b in moectld/moectld moectl/moectl moe-engine/moe-engine; do
  [ -x "$BUILD_DIR/apps/$b" ] || { echo "install: $BUILD_DIR/apps/$b missing; run ./scripts/build" >&2; exit 1; }
done
install -d "$PREFIX/bin" "$ETC/policies" "$ETC/scenarios" "$UNIT_DIR" "$PREFIX/share/doc/moectl"
install -m 0755 "$BUILD_DIR/apps/moectld/moectld" "$BUILD_DIR/apps/moectl/moectl" \
  "$BUILD_DIR/apps/moe-engine/moe-engine" "$PREFIX/bin/"
# Keep an operator's edited configs; new defaults land beside them as .dist.
for f in controller.toml engine.toml policies/default.toml; do
  if [ -e "$ETC/$f" ]; then install -m 0644 "configs/$f" "$ETC/$f.dist"; else install -m 0644 "configs/$f" "$ETC/$f"; fi
done
install -m 0644 configs/scenarios/*.toml "$ETC/scenarios/"
sed "s#/usr/local/bin/moectld#$PREFIX/bin/moectld#" deploy/systemd/moectld.service \
  >"$UNIT_DIR/moectld.service"
install -m 0644 README.md "$PREFIX/share/doc/moectl/README.md"
"$PREFIX/bin/moectld" --check-config --config "$ETC/controller.toml"
# The state directory as the unit makes it (systemd also fixes its owner at start).
install -d -m 0750 -o "$DAEMON_USER" -g "$GROUP" /var/lib/moectld
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "install: done; start with: systemctl enable --now moectld"
  echo "install: operators read the database after: usermod -aG $GROUP <name> (then log in again)"
else
  echo "install: done (systemd not running here; unit written to $UNIT_DIR)"
fi
