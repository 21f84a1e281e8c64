#!/bin/sh
# Install monitord on Debian as a systemd service. Idempotent: run it again to upgrade the code
# and the unit; the config, the credentials and the store are never overwritten.
#
#   sudo deploy/install.sh                 # from a checkout: /opt/monitord, /etc/monitord, ...
#   sudo deploy/install.sh --root /tmp/r   # the same into a scratch root (no systemctl there)
#   deploy/install.sh --no-venv ...        # leave the Python install to you (CI, packaging)
#
# Then: put the portal's token in /etc/monitord/credentials/portal-token, check the config as
# the service will read it with `monitord --config /etc/monitord/monitord.toml check-config
# --credentials /etc/monitord/credentials`, and `systemctl enable --now monitord`. Upgrades:
# see the README ("Upgrading"): back up the store first.
set -eu

ROOT=/
VENV=yes
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=$2; shift 2 ;;
        --no-venv) VENV=no; shift ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (it creates a user and system folders)" >&2; exit 2; }
SRC=$(cd "$(dirname "$0")/.." && pwd)
R=${ROOT%/}

say() { echo "install.sh: $*"; }

# The user the service runs as; in adm to read nginx's logs (root:adm 0640).
if [ "$R" = "" ]; then
    getent group monitord >/dev/null || groupadd --system monitord
    id monitord >/dev/null 2>&1 || useradd --system --gid monitord --groups adm \
        --home-dir /var/lib/monitord --no-create-home --shell /usr/sbin/nologin monitord
    ID_U=$(id -u monitord); ID_G=$(getent group monitord | cut -d: -f3)
else
    mkdir -p "$R/etc"
    for f in passwd group shadow gshadow; do
        [ -e "$R/etc/$f" ] || cp -p "/etc/$f" "$R/etc/$f"
    done
    grep -q '^monitord:' "$R/etc/group" || groupadd --prefix "$R" --system monitord
    grep -q '^monitord:' "$R/etc/passwd" || useradd --prefix "$R" --system --gid monitord \
        --groups adm --home-dir /var/lib/monitord --no-create-home --shell /usr/sbin/nologin monitord
    ID_U=$(grep '^monitord:' "$R/etc/passwd" | cut -d: -f3)
    ID_G=$(grep '^monitord:' "$R/etc/group" | cut -d: -f3)
fi
say "user monitord ($ID_U:$ID_G)"

# Folders: the config (root's, the service reads it), the credentials (root's only: systemd
# hands them to the service), the state and the logs (the service's).
install -d -m 0755 "$R/etc/monitord" "$R/opt/monitord" "$R/etc/systemd/system"
install -d -m 0700 "$R/etc/monitord/credentials"
install -d -m 0750 -o "$ID_U" -g "$ID_G" "$R/var/lib/monitord" "$R/var/log/monitord"
chgrp "$ID_G" "$R/etc/monitord"
chmod 0750 "$R/etc/monitord"

if [ ! -e "$R/etc/monitord/monitord.toml" ]; then
    # The documented defaults, with the paths a service needs.
    sed -e 's|^url = "sqlite:///var/monitord.db"|url = "sqlite:////var/lib/monitord/monitord.db"|' \
        -e 's|^files_dir = "var/evidence"|files_dir = "/var/lib/monitord/evidence"|' \
        -e 's|^file = "var/monitord.log.jsonl"|file = "/var/log/monitord/monitord.log.jsonl"|' \
        -e 's|^dir = "var/reports"|dir = "/var/lib/monitord/reports"|' \
        "$SRC/monitord.toml" > "$R/etc/monitord/monitord.toml"
    chown "0:$ID_G" "$R/etc/monitord/monitord.toml"
    chmod 0640 "$R/etc/monitord/monitord.toml"
    say "wrote /etc/monitord/monitord.toml (edit it: portal.url, alerts, ...)"
else
    say "kept /etc/monitord/monitord.toml"
fi
for name in portal-token; do
    target="$R/etc/monitord/credentials/$name"
    if [ ! -e "$target" ]; then
        install -m 0600 /dev/null "$target"
        say "created /etc/monitord/credentials/$name: write the secret into it"
    fi
done

# The code: exactly the checkout, installed into /opt/monitord's own venv. It is built from a
# fresh copy (no build/ left by an earlier install, where setuptools re-copies only newer files,
# so an older checkout or a deleted file would leave the previous code installed), and the copy
# then replaces /opt/monitord's tree whole (the venv kept).
if [ "$VENV" = yes ]; then
    STAGE=$(mktemp -d)
    trap 'rm -rf "$STAGE"' EXIT
    tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./var --exclude=./build \
        --exclude=./dist --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.so' \
        -cf - . | tar -C "$STAGE" -xf -
    [ -x "$R/opt/monitord/.venv/bin/python" ] || python3 -m venv "$R/opt/monitord/.venv"
    "$R/opt/monitord/.venv/bin/pip" install --quiet --disable-pip-version-check "$STAGE"
    find "$R/opt/monitord" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
    rm -rf "$STAGE/build" "$STAGE"/*.egg-info
    tar -C "$STAGE" -cf - . | tar -C "$R/opt/monitord" -xf -
    say "installed monitord into /opt/monitord/.venv"
    # Tab completion for the operator's shell, made from the installed command's own parser.
    install -d -m 0755 "$R/usr/share/bash-completion/completions" "$R/usr/share/zsh/site-functions"
    "$R/opt/monitord/.venv/bin/monitord" completion bash >"$R/usr/share/bash-completion/completions/monitord"
    "$R/opt/monitord/.venv/bin/monitord" completion zsh >"$R/usr/share/zsh/site-functions/_monitord"
    chmod 0644 "$R/usr/share/bash-completion/completions/monitord" "$R/usr/share/zsh/site-functions/_monitord"
    say "installed shell completion for bash and zsh"
fi

# `monitord` on PATH, as the README's examples type it; a file there that is not our link (a
# monitord installed some other way) is left alone.
install -d -m 0755 "$R/usr/local/bin"
if [ -L "$R/usr/local/bin/monitord" ] || [ ! -e "$R/usr/local/bin/monitord" ]; then
    ln -sfn /opt/monitord/.venv/bin/monitord "$R/usr/local/bin/monitord"
    say "linked /usr/local/bin/monitord to /opt/monitord/.venv/bin/monitord"
else
    say "kept /usr/local/bin/monitord (not a link; the service's is /opt/monitord/.venv/bin/monitord)"
fi

install -m 0644 "$SRC/deploy/monitord.service" "$R/etc/systemd/system/monitord.service"
if [ "$R" = "" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "unit installed; start it with: systemctl enable --now monitord"
else
    say "unit installed into $R/etc/systemd/system (no systemd to reload here)"
fi
