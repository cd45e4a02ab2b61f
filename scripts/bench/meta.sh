#!/usr/bin/env bash
# bench/meta: metadata rates of a local 6-server 4+2 cluster against the passthrough FUSE
# filesystem (tests/helpers/passthrough) on the same local disk, in the same run.
#
# Phases over BENCH_META_N files (default 10000), each timed by tests/helpers/posix_check
# bench: create (empty files), stat (kernel dentry/inode caches dropped first, so every stat
# is a FUSE lookup), readdir of the whole directory (caches dropped), rename (same directory),
# unlink, and small files (create + write 4 KiB + close). Prints `name value unit` lines for
# both filesystems, then NAME_vs_passthrough ratios (issue 6 wants >= 0.7 for create, stat and
# unlink), the same phases with the metadata journal off (-o journal=0) and NAME_journal_vs_off
# (issue 11 wants >= 0.9), fsync (4 KiB overwrites of a 1 MiB file, each fsynced, N/20 of
# them), and the CPU each daemon spent per operation (user + system: on a shared, loaded
# machine the CPU figures vary less than the rates).
# Note: close() after a write is a flush on tesserafs (the small file is in the metadata and
# its WAL synced before close returns, DESIGN.md); the passthrough's close does not sync.
# Needs root (drop_caches, mounts).
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TESSERA_BUILD:-$REPO/build}
N=${BENCH_META_N:-10000}
LOCAL="$REPO/scripts/tessera-local"
PT="$BUILD/tests/passthrough"
PC="$BUILD/tests/posix_check"

for p in "$PT" "$PC"; do
	[[ -x $p ]] || { echo "bench/meta: $p not built" >&2; exit 1; }
done

OWN_DIR=
[[ -n ${BENCH_DIR:-} ]] || OWN_DIR=$(mktemp -d /var/tmp/tessera-bench-meta.XXXXXX)
DIR=${BENCH_DIR:-$OWN_DIR}
mkdir -p "$DIR"
W=$(mktemp -d "$DIR/meta.XXXXXX")
PT_PID=
cleanup() {
	"$LOCAL" down "$W/cluster" >/dev/null 2>&1 || true
	if [[ -n $PT_PID ]]; then
		fusermount3 -u "$W/pt-mnt" 2>/dev/null || fusermount3 -uz "$W/pt-mnt" 2>/dev/null || true
		kill "$PT_PID" 2>/dev/null || true
		wait "$PT_PID" 2>/dev/null || true
	fi
	rm -rf "$W"
	[[ -n $OWN_DIR ]] && rmdir "$OWN_DIR" 2>/dev/null
	return 0
}
trap cleanup EXIT

out() { printf '%s %s %s\n' "$1" "$2" "$3"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches || { echo "bench: cannot drop the page cache" >&2; exit 1; }
}
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# ---- the two mounts
"$LOCAL" up "$W/cluster" --servers 6 --k 4 --m 2 --build "$BUILD" >/dev/null
# shellcheck disable=SC1091
. "$W/cluster/cluster.env"
mkdir -p "$W/pt-src" "$W/pt-mnt"
# the same FUSE options as tessera-local's mount: as root, default_permissions makes the
# kernel check permissions (and fetch attributes for it) on both
PT_OPTS=()
[[ $(id -u) == 0 ]] && PT_OPTS=(-o allow_other,default_permissions)
"$PT" "${PT_OPTS[@]}" "$W/pt-src" "$W/pt-mnt" >"$W/pt.log" 2>&1 &
PT_PID=$!
for _ in $(seq 100); do mountpoint -q "$W/pt-mnt" && break; sleep 0.1; done
mountpoint -q "$W/pt-mnt" || { echo "bench/meta: passthrough did not mount" >&2; exit 1; }

PHASES=(create stat readdir rename unlink small fsync)
declare -A R
measure() { # NAME MOUNT PID
	local name=$1 m=$2 pid=$3 phase line c0 c1 hz
	hz=$(getconf CLK_TCK)
	mkdir -p "$m/meta-bench"
	for phase in "${PHASES[@]}"; do
		[[ $phase == stat || $phase == readdir ]] && drop_caches
		c0=$(ticks "$pid")
		line=$(POSIX_CHECK_N=$N "$PC" bench "$phase" "$m/meta-bench")
		R[$name.$phase]=${line#* }
		c1=$(ticks "$pid")
		R[$name.cpu.$phase]=$(awk -v c=$((c1 - c0)) -v hz="$hz" -v n="$N" \
			'BEGIN { printf "%.0f", c / hz / n * 1e6 }')
		local unit=ops/s
		[[ $phase == readdir ]] && unit=entries/s
		out "${name}_${phase}" "${R[$name.$phase]}" "$unit"
	done
	rm -rf "$m/meta-bench"
}

measure passthrough "$W/pt-mnt" "$PT_PID"
measure tesserafs "$TESSERA_MNT" "$TESSERA_FS_PID"
# the same with the metadata journal off: what the journal costs
TESSERA_FS_OPTS=journal=0 "$LOCAL" remount "$W/cluster" >/dev/null
. "$W/cluster/cluster.env"
measure nojournal "$TESSERA_MNT" "$TESSERA_FS_PID"

for phase in "${PHASES[@]}"; do
	out "${phase}_vs_passthrough" "$(ratio "${R[tesserafs.$phase]}" "${R[passthrough.$phase]}")" x
done
for phase in "${PHASES[@]}"; do
	out "${phase}_journal_vs_off" "$(ratio "${R[tesserafs.$phase]}" "${R[nojournal.$phase]}")" x
done
for phase in "${PHASES[@]}"; do
	out "tesserafs_cpu_per_${phase}" "${R[tesserafs.cpu.$phase]}" us
	out "passthrough_cpu_per_${phase}" "${R[passthrough.cpu.$phase]}" us
done
out meta_bench_files "$N" files
