#!/usr/bin/env bash
# bench/scrub: how fast tessera-scrub rebuilds a wiped server, against a plain copy of the
# same number of bytes on the same machine, in the same run.
#
# A local 3-server 2+1 cluster (each server then holds half as many fragment bytes as there
# are file bytes) gets 2 x BENCH_SIZE_MB of file data (default 1024: the wiped server held
# about 1 GiB of fragments); it is unmounted, server 0 is stopped, its data directory wiped,
# and it is started again empty; then `tessera-scrub` (unmounted mode, --jobs BENCH_JOBS,
# default 16) rebuilds it, page cache dropped first. Baseline: `cp -r` of another server's
# fragment files (as many bytes, as many files) to a new directory of the same disk, then
# `sync`, page cache dropped first. The scrub's bytes are those it wrote (bytes_rebuilt: the
# whole fragment objects), its time the whole run (namespace, verify, repair, commit).
# Prints `name value unit` lines: scrub_rebuild_bytes, scrub_rebuild (MB/s over the whole
# run), scrub_repair_phase (MB/s over the repair steps only), copy (MB/s), and the ratio
# scrub_rebuild_vs_copy (target: at least 0.5).
# Needs root (drop_caches). Environment: TESSERA_BUILD, BENCH_DIR, BENCH_SIZE_MB, BENCH_JOBS.
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TESSERA_BUILD:-$REPO/build}
SIZE_MB=${BENCH_SIZE_MB:-1024}
JOBS=${BENCH_JOBS:-16}
LOCAL="$REPO/scripts/tessera-local"
SCRUB="$BUILD/tessera-scrub"
DATAGEN="$BUILD/tests/datagen"

for b in "$SCRUB" "$DATAGEN" "$BUILD/tesserafs" "$BUILD/tessera-blockd"; do
	[[ -x $b ]] || { echo "bench/scrub: $b not built" >&2; exit 1; }
done

DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/tessera-bench-scrub.XXXXXX)}
mkdir -p "$DIR"
W=$(mktemp -d "$DIR/scrub.XXXXXX")
cleanup() {
	"$LOCAL" down "$W/cluster" >/dev/null 2>&1 || true
	rm -rf "$W"
	# The scratch directory goes too when this script made it.
	[[ -n ${BENCH_DIR:-} ]] || rmdir "$DIR" 2>/dev/null || true
}
trap cleanup EXIT

out() { printf '%s %s %s\n' "$1" "$2" "$3"; }
now() { date +%s.%N; }
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches || { echo "bench: cannot drop the page cache" >&2; exit 1; }
}
json_stat() { grep -o "\"$1\":[0-9]*" "$2" | head -n 1 | cut -d: -f2; }

"$LOCAL" up "$W/cluster" --servers 3 --k 2 --m 1 --build "$BUILD" >/dev/null
# shellcheck disable=SC1091
. "$W/cluster/cluster.env"

# 2 x SIZE_MB of file data in files of at most 256 MiB, written in parallel.
TOTAL=$((2 * SIZE_MB))
FILE_MB=$((TOTAL < 256 ? TOTAL : 256))
NFILES=$(((TOTAL + FILE_MB - 1) / FILE_MB))
# Every writer's status is checked: `wait a b c` would return only the last one's.
pids=()
wait_writers() {
	local p
	for p in "${pids[@]}"; do
		wait "$p" || { echo "bench/scrub: a writer failed" >&2; exit 1; }
	done
	pids=()
}
for ((i = 0; i < NFILES; i++)); do
	"$DATAGEN" write "$TESSERA_MNT/f$i" "${FILE_MB}M" $((i + 1)) &
	pids+=($!)
	((${#pids[@]} < 4)) || wait_writers
done
wait_writers
"$LOCAL" unmount "$W/cluster" >/dev/null

OBJ0="$W/cluster/servers/0/data/objects"
OBJ1="$W/cluster/servers/1/data/objects"
HELD=$(find "$OBJ0" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
"$LOCAL" stop-server "$W/cluster" 0 >/dev/null
rm -rf "$OBJ0"
"$LOCAL" start-server "$W/cluster" 0 >/dev/null

# ---- the rebuild
drop_caches
t0=$(now)
rc=0
"$SCRUB" --json --jobs "$JOBS" "$TESSERA_META" >"$W/report.json" 2>"$W/scrub.err" || rc=$?
t1=$(now)
if ((rc != 1)); then
	echo "bench/scrub: tessera-scrub exited $rc (wanted 1: errors corrected)" >&2
	cat "$W/scrub.err" >&2
	exit 1
fi
REBUILT=$(json_stat bytes_rebuilt "$W/report.json")
REPAIR_NS=$(json_stat repair_ns "$W/report.json")
if ((REBUILT != HELD)); then
	echo "bench/scrub: rebuilt $REBUILT bytes, the server held $HELD" >&2
	exit 1
fi
SCRUB_MBPS=$(awk -v b="$REBUILT" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", b / 1e6 / (t1 - t0) }')
REPAIR_MBPS=$(awk -v b="$REBUILT" -v ns="$REPAIR_NS" 'BEGIN { printf "%.1f", (ns > 0 ? b / 1e6 / (ns / 1e9) : 0) }')

# ---- the baseline: as many bytes in as many files, copied on the same disk
COPY_BYTES=$(find "$OBJ1" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
drop_caches
t0=$(now)
cp -r "$OBJ1" "$W/copy"
sync
t1=$(now)
COPY_MBPS=$(awk -v b="$COPY_BYTES" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.1f", b / 1e6 / (t1 - t0) }')
rm -rf "$W/copy"

out scrub_rebuild_bytes "$REBUILT" bytes
out scrub_rebuild "$SCRUB_MBPS" MB/s
out scrub_repair_phase "$REPAIR_MBPS" MB/s
out scrub_copy_baseline "$COPY_MBPS" MB/s
out scrub_rebuild_vs_copy "$(awk -v a="$SCRUB_MBPS" -v b="$COPY_MBPS" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')" ratio
