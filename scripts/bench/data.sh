#!/usr/bin/env bash
# bench/data: the data path of a local 6-server 4+2 cluster against the passthrough FUSE
# filesystem (tests/helpers/passthrough) on the same local disk, in the same run.
#
# For each: sequential write of BENCH_SIZE_MB of random bytes (1 MiB blocks, fsync at the
# end), sequential read of it after dropping the page cache, and 4 KiB random-read IOPS (fio,
# 4 jobs, page cache dropped first, a sixteenth of the file's pages read in all, so that cache
# hits cannot decide the figure; BENCH_SECONDS bounds that run). Prints `name value unit` lines, then the ratios
# seqwrite_vs_passthrough, seqread_vs_passthrough, randread_vs_passthrough, the CPU seconds
# the daemons (tesserafs + every blockd) spent per GiB written and read, and the codec's own
# throughput (tests/helpers/codecbench), so that the bottleneck is visible.
# Both mounts use the same FUSE settings (1 MiB requests, read_ahead_kb 1024).
# Needs root (drop_caches, mounts); installs fio with apt-get when missing.
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TESSERA_BUILD:-$REPO/build}
SIZE_MB=${BENCH_SIZE_MB:-1024}
RAND_SECS=${BENCH_SECONDS:-10}
LOCAL="$REPO/scripts/tessera-local"
PT="$BUILD/tests/passthrough"

[[ -x $PT ]] || { echo "bench/data: $PT not built" >&2; exit 1; }
if ! command -v fio >/dev/null; then
	echo "# installing fio" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fio >/dev/null 2>&1 || true
fi

DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/tessera-bench-data.XXXXXX)}
mkdir -p "$DIR"
W=$(mktemp -d "$DIR/data.XXXXXX")
PT_PID=
cleanup() {
	"$LOCAL" down "$W/cluster" >/dev/null 2>&1 || true
	if [[ -n $PT_PID ]]; then
		fusermount3 -u "$W/pt-mnt" 2>/dev/null || fusermount3 -uz "$W/pt-mnt" 2>/dev/null || true
		kill "$PT_PID" 2>/dev/null || true
		wait "$PT_PID" 2>/dev/null || true
	fi
	rm -rf "$W"
	# The scratch directory goes too when this script made it.
	[[ -n ${BENCH_DIR:-} ]] || rmdir "$DIR" 2>/dev/null || true
}
trap cleanup EXIT

out() { printf '%s %s %s\n' "$1" "$2" "$3"; }
now() { date +%s.%N; }
rate() { awk -v mb="$1" -v t0="$2" -v t1="$3" 'BEGIN { printf "%.1f", mb / (t1 - t0) }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches || { echo "bench: cannot drop the page cache" >&2; exit 1; }
}
# CPU ticks (user + system) of the given PIDs together.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }

# ---- the two mounts
"$LOCAL" up "$W/cluster" --servers 6 --k 4 --m 2 --build "$BUILD" >/dev/null
# shellcheck disable=SC1091
. "$W/cluster/cluster.env"
DAEMONS=("$TESSERA_FS_PID" $TESSERA_SERVER_PIDS)
mkdir -p "$W/pt-src" "$W/pt-mnt"
"$PT" "$W/pt-src" "$W/pt-mnt" >"$W/pt.log" 2>&1 &
PT_PID=$!
for _ in $(seq 100); do mountpoint -q "$W/pt-mnt" && break; sleep 0.1; done
mountpoint -q "$W/pt-mnt" || { echo "bench/data: passthrough did not mount" >&2; exit 1; }

head -c "$((SIZE_MB << 20))" /dev/urandom >"$W/src"
declare -A R
measure() { # NAME MOUNT
	local name=$1 m=$2 t0 t1 c0 c1 hz
	hz=$(getconf CLK_TCK)
	drop_caches
	[[ $name == tesserafs ]] && c0=$(ticks "${DAEMONS[@]}")
	t0=$(now)
	# Random bytes made beforehand (zeros would flatter any compression on the way), read from
	# the page cache so that the source costs nothing next to the mount.
	dd if="$W/src" of="$m/seq" bs=1M count="$SIZE_MB" conv=fsync status=none
	t1=$(now)
	R[$name.seqwrite]=$(rate "$SIZE_MB" "$t0" "$t1")
	if [[ $name == tesserafs ]]; then
		c1=$(ticks "${DAEMONS[@]}")
		R[cpu_write]=$(awk -v c=$((c1 - c0)) -v hz="$hz" -v mb="$SIZE_MB" \
			'BEGIN { printf "%.2f", c / hz / (mb / 1024) }')
	fi
	out "${name}_seqwrite" "${R[$name.seqwrite]}" MB/s

	drop_caches
	[[ $name == tesserafs ]] && c0=$(ticks "${DAEMONS[@]}")
	t0=$(now)
	dd if="$m/seq" of=/dev/null bs=1M status=none
	t1=$(now)
	R[$name.seqread]=$(rate "$SIZE_MB" "$t0" "$t1")
	if [[ $name == tesserafs ]]; then
		c1=$(ticks "${DAEMONS[@]}")
		R[cpu_read]=$(awk -v c=$((c1 - c0)) -v hz="$hz" -v mb="$SIZE_MB" \
			'BEGIN { printf "%.2f", c / hz / (mb / 1024) }')
	fi
	out "${name}_seqread" "${R[$name.seqread]}" MB/s

	if command -v fio >/dev/null; then
		# Each of the 4 jobs reads 1/64 of the file's pages (a sixteenth in all, without
		# readahead: fio advises POSIX_FADV_RANDOM), so few reads can hit a page that an earlier
		# read brought into the cache: the page cache does not decide the figure. RAND_SECS only
		# bounds the run.
		drop_caches
		R[$name.randread]=$(fio --name=rr --filename="$m/seq" --rw=randread --bs=4k \
			--size="${SIZE_MB}M" --number_ios=$((SIZE_MB * 256 / 64)) --runtime="$RAND_SECS" \
			--ioengine=psync --fadvise_hint=1 \
			--numjobs=4 --group_reporting --invalidate=1 --output-format=json 2>/dev/null |
			python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["jobs"][0]["read"]["iops"])')
		out "${name}_randread_4k" "${R[$name.randread]}" IOPS
	fi
	rm -f "$m/seq"
}

measure passthrough "$W/pt-mnt"
measure tesserafs "$TESSERA_MNT"

out seqwrite_vs_passthrough "$(ratio "${R[tesserafs.seqwrite]}" "${R[passthrough.seqwrite]}")" x
out seqread_vs_passthrough "$(ratio "${R[tesserafs.seqread]}" "${R[passthrough.seqread]}")" x
[[ -n ${R[tesserafs.randread]:-} ]] &&
	out randread_vs_passthrough "$(ratio "${R[tesserafs.randread]}" "${R[passthrough.randread]}")" x
out cpu_seconds_per_gib_written "${R[cpu_write]}" s
out cpu_seconds_per_gib_read "${R[cpu_read]}" s
"$BUILD/tests/codecbench" 4 2 4194304 1
