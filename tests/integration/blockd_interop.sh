#!/usr/bin/env bash
# blockd_interop: tessera-blockd and tesserafs's block client against S3 implementations we
# did not write, from npm (blockd_clients.sh has the curl and blockclient rounds against
# blockd, which need no npm).
#
#  (a) the AWS SDK for JavaScript v3 (npm @aws-sdk/client-s3, tests/integration/
#      blockd_interop.js) against blockd: PutObject (flexible checksums in headers, and a
#      streamed body in the aws-chunked encoding with a trailing CRC32), Content-MD5,
#      GetObject, ranged GetObject, HeadObject, DeleteObject, ListObjectsV2 with pagination,
#      wrong credentials; the run's TCP connections counted by blockd;
#  (b) tesserafs's block client (tests/helpers/bcclient.c over blockclient.h) against s3rver
#      (npm s3rver, a third-party S3 server on 127.0.0.1): PUT/GET/ranged GET/HEAD/DELETE,
#      bytes compared (lib.sh bcclient_round).
#
# The npm packages are installed into the test's temp directory (npm install, bounded by
# TESSERA_NPM_TIMEOUT, default 180 s), or taken from TESSERA_NPM_DIR when it already holds
# them (a warm cache for repeated local runs). When node/npm are missing or the install fails,
# the test says why and exits 77 (meson: skipped) before anything was checked
# (scripts/install-deps.sh installs nodejs and npm).
#
# Environment: TESSERA_BUILD; the harness is lib.sh (time bound, cleanup, the blockd's log
# checked for sanitizer reports).
LIB_TIMEOUT=400
. "$(dirname "$0")/lib.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
BLOCKD_AK=tessera-interop
BLOCKD_SK='interop/secret+key=1'

command -v node >/dev/null && command -v npm >/dev/null || lib_skip "node or npm not installed"
lib_init
[[ -x $TESSERA_BUILD/tests/bcclient ]] || bail "missing $TESSERA_BUILD/tests/bcclient"
WORK=$LIB_WORK

# ---------------------------------------------------------------- npm packages

NPM=${TESSERA_NPM_DIR:-}
if [[ -z $NPM || ! -d $NPM/node_modules/@aws-sdk/client-s3 || ! -d $NPM/node_modules/s3rver ]]; then
	NPM="$WORK/npm"
	mkdir -p "$NPM"
	t0=$SECONDS
	# The versions this test was written against first; the registry's newest as a second
	# try (a version can vanish), and a third try for a registry that answered half-way.
	installed=0
	for pkgs in "@aws-sdk/client-s3@3.1175.0 s3rver@3.7.1" "@aws-sdk/client-s3 s3rver" \
		"@aws-sdk/client-s3 s3rver"; do
		# shellcheck disable=SC2086 # two package specs
		if timeout "${TESSERA_NPM_TIMEOUT:-180}" npm install --prefix "$NPM" --no-audit \
			--no-fund --loglevel=error $pkgs >"$WORK/npm.log" 2>&1; then
			installed=1
			break
		fi
		tail -n 3 "$WORK/npm.log" | sed 's/^/# npm: /'
		sleep 2
	done
	((installed)) || lib_skip "npm install of @aws-sdk/client-s3 and s3rver failed (no registry access?)"
	echo "# npm install took $((SECONDS - t0)) s"
fi
echo "# @aws-sdk/client-s3 $(node -p "require('$NPM/node_modules/@aws-sdk/client-s3/package.json').version"), s3rver $(node -p "require('$NPM/node_modules/s3rver/package.json').version"), node $(node --version)"

blockd_start blockd || bail "blockd starts"
EP="http://127.0.0.1:$BLOCKD_PORT"
ok "blockd starts ($EP)"

# ---------------------------------------------------------------- (a) AWS SDK for JavaScript v3

# ES module resolution looks for node_modules next to the script: run a copy inside $NPM.
cp "$HERE/blockd_interop.js" "$NPM/blockd_interop.mjs"
before=$(status_field connections)
NODE_NO_WARNINGS=1 timeout 120 node "$NPM/blockd_interop.mjs" "$EP" "$BLOCKD_AK" "$BLOCKD_SK" sdkbucket \
	>"$WORK/sdk.out" 2>"$WORK/sdk.log"
sdk_rc=$?
after=$(status_field connections)
while read -r line; do
	case $line in
	"ok - "*) ok "${line#ok - }" ;;
	"not ok - "*) fail "${line#not ok - }" ;;
	esac
done <"$WORK/sdk.out"
check "sdk: the script ran to its end (exit $sdk_rc)" test "$sdk_rc" -eq 0 -a \
	"$(grep -c '^ok' "$WORK/sdk.out")" -ge 20
# Two of the connections are the status requests; the SDK's own agent keeps its sockets alive
# (a refused PUT is cut off by the server before its body, so allow a few).
conns=$((after - before - 1))
check "sdk: the run of ~25 requests used at most 6 TCP connections ($conns)" test "$conns" -le 6

# ---------------------------------------------------------------- (b) blockclient against s3rver

mkdir -p "$WORK/s3rver"
# s3rver's built-in account: access key S3RVER, secret S3RVER.
(cd "$NPM" && exec node node_modules/s3rver/bin/s3rver.js -d "$WORK/s3rver" -a 127.0.0.1 -p 0 \
	--configure-bucket tessera-frags) >"$WORK/s3rver.log" 2>&1 &
lib_track_pid "$!"
until=$((SECONDS + 20))
while ! grep -q "listening on" "$WORK/s3rver.log"; do
	((SECONDS < until)) || bail "s3rver starts"
	sleep 0.1
done
S3PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$WORK/s3rver.log" | cut -d: -f2)
ok "s3rver starts (127.0.0.1:$S3PORT)"
bcclient_round s3rver "http://127.0.0.1:$S3PORT" S3RVER S3RVER tessera-frags

rc=0
blockd_stop || rc=$?
check "blockd stops cleanly on SIGTERM (exit $rc)" test "$rc" -eq 0
lib_finish
