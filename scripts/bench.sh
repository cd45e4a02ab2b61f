#!/usr/bin/env bash
# bench.sh: performance figures for tesserafs, one `name value unit` line per figure.
#
#   scripts/bench.sh [SECTION...]      sections: the scripts in scripts/bench/ (data, meta,
#                                      blockd, ...); default: all of them
#
# Every section measures its baseline in the same run (a passthrough FUSE filesystem on the
# local disk, nginx, a plain copy) and prints ratios against it: these machines are shared
# and noisy, so absolute numbers from different runs do not compare.
# Environment: TESSERA_BUILD (build directory, default build/), BENCH_DIR (scratch space,
# default a new directory under /var/tmp), BENCH_SIZE_MB (large-file size, default 1024).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export TESSERA_BUILD=${TESSERA_BUILD:-$REPO/build}
export REPO

"$REPO/scripts/install-deps.sh" --quiet
[[ -f $TESSERA_BUILD/build.ninja ]] || meson setup "$TESSERA_BUILD" "$REPO" >/dev/null
ninja -C "$TESSERA_BUILD" >/dev/null

sections=("$@")
if ((${#sections[@]} == 0)); then
	for f in "$REPO"/scripts/bench/*.sh; do
		[[ $(basename "$f") == lib.sh ]] && continue
		sections+=("$(basename "$f" .sh)")
	done
fi
rc=0
for s in "${sections[@]}"; do
	f="$REPO/scripts/bench/$s.sh"
	[[ -f $f ]] || { echo "bench: no section '$s'" >&2; rc=2; continue; }
	echo "# section $s ($(date '+%T'))"
	bash "$f" || { echo "# section $s failed" >&2; rc=1; }
done
exit $rc
