#!/usr/bin/env bash
# install-deps.sh: installs the Debian packages that building and testing tesserafs need.
#
# Idempotent: when every package is already installed (dpkg-query) it does nothing and
# prints nothing. Otherwise it runs `apt-get update` once and installs the missing ones
# without recommends. Runs as root, or through sudo when sudo exists.
# node and npm (tests/integration/blockd_interop.sh) count as present when the commands are,
# whatever installed them (a nodejs from elsewhere may bundle npm and conflict with Debian's
# npm package); else Debian's nodejs and npm are installed.
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
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]} == 0)); then
	((quiet)) || echo "install-deps: all ${#PACKAGES[@]} packages, node and npm are installed"
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
