#!/usr/bin/env bash
# check_layers.sh: scripts/check-layers accepts this tree and refuses each kind of violation
# in a copy of it: a header of a layer above, another module's internal header, a module the
# order does not name, and a doc without the order line.
set -uo pipefail
SRC=${TESSERA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CHECK=$SRC/scripts/check-layers
T=$(mktemp -d "${TMPDIR:-/tmp}/tessera-layers.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
fails=0
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; fails=$((fails + 1)); }

# expect NAME RC PATTERN: runs the check on $T/tree; its status must be RC and its output
# must match PATTERN.
expect() {
	local out rc
	out=$(timeout 60 "$CHECK" "$T/tree" 2>&1)
	rc=$?
	if [[ $rc -eq $2 ]] && grep -Eq -- "$3" <<<"$out"; then
		ok "$1"
	else
		fail "$1 (exit $rc, wanted $2; output: $out)"
	fi
}

fresh() {
	rm -rf "$T/tree"
	mkdir -p "$T/tree"
	cp -r "$SRC/src" "$SRC/include" "$SRC/doc" "$T/tree/"
}

fresh
expect "the tree keeps the layer order" 0 "modules keep the order"

fresh
sed -i '0,/^#include "tessera\/common.h"/s//#include "tessera\/common.h"\n#include "tessera\/fs.h"/' \
	"$T/tree/src/data/data.c"
expect "data including fs.h is refused" 1 "src/data/data.c:[0-9]+: data .* includes tessera/fs.h of fs"

fresh
echo '#include "tessera/scrub.h"' >>"$T/tree/include/tessera/meta.h"
expect "a public header including a layer above is refused" 1 "include/tessera/meta.h:[0-9]+: meta"

fresh
echo '#include "../fs/fs_int.h"' >>"$T/tree/src/scrub/scrub.c"
expect "another module's internal header is refused" 1 "src/scrub/scrub.c:[0-9]+: includes ../fs/fs_int.h"

fresh
mkdir "$T/tree/src/extra" && touch "$T/tree/src/extra/extra.c"
expect "a module missing from the order is refused" 1 "src/extra: a module"

fresh
sed -i '/^Layer order:/d' "$T/tree/doc/architecture.md"
expect "a doc without the order line is an error" 2 "no \"Layer order"

((fails == 0)) || { echo "$fails failed"; exit 1; }
echo "all passed"
