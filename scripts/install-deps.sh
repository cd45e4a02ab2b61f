#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages that building and testing tesserafs need.
#
# Idempotent: when every package is already installed (dpkg-query) it does nothing and
# prints nothing. Otherwise it runs `apt-get update` once and installs the missing ones
# without recommends. Runs as root, or through sudo when sudo exists.
# Usage: scripts/install-deps.sh [--quiet]
set -euo pipefail

PACKAGES=(
	build-essential pkg-config meson ninja-build
	libfuse3-dev fuse3
	librocksdb-dev libisal-dev libcurl4-openssl-dev libmicrohttpd-dev libssl-dev
	check
	rsync attr acl curl xxd util-linux procps coreutils
	git tar fio
)

quiet=0
[[ "${1:-}" == "--quiet" || "${1:-}" == "-q" ]] && quiet=1

missing=()
for p in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[[ "$status" == "installed" ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
	((quiet)) || echo "install-deps: all ${#PACKAGES[@]} packages are installed"
	exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
	SUDO=()
elif command -v sudo >/dev/null 2>&1; then
	SUDO=(sudo)
else
	echo "install-deps: missing packages: ${missing[*]}" >&2
	echo "install-deps: not root and sudo is not available; install them as root" >&2
	exit 1
fi

echo "install-deps: installing: ${missing[*]}"
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: done"
