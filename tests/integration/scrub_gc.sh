#!/usr/bin/env bash
# scrub_gc: --gc deletes exactly the unreferenced fragments of this filesystem older than the
# grace period, nothing else (src/scrub/scrub_gc.c):
#  - planted orphans (a removed inode's key, an old stripe version, a fragment index on the
#    wrong server) older than the grace period are deleted;
#  - a young orphan, objects of another filesystem uuid, keys that are not fragment keys and
#    every referenced fragment are kept;
#  - the metadata garbage queue is drained: an overwrite while a server was down leaves the old
#    version's fragment queued; --gc deletes it (and the degraded new stripe is repaired).
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

SCRUB="$TESSERA_BUILD/tessera-scrub"
export TESSERA_FS_OPTS="${TESSERA_FS_OPTS:+$TESSERA_FS_OPTS,}request_timeout=5"

lib_init
lib_up --servers 6 --k 4 --m 2
[[ -x $SCRUB ]] || bail "missing $SCRUB"

M=$TESSERA_MNT
S=$LIB_STRIPE
check "write f" "$DATAGEN" write "$M/f" $((2 * S)) 801
check "write g" "$DATAGEN" write "$M/g" $((S + 7)) 802

# ---- an overwrite while server 5 is down: the old version's fragment on 5 stays queued
check "stop server 5" lib_local stop-server 5
check "overwrite g" "$DATAGEN" write "$M/g" $((S + 7)) 803
check "unmount" lib_local unmount
check "start server 5" lib_local start-server 5

OBJ="$LIB_WORK/servers"
UUID=$(ls "$OBJ/0/data/objects/tessera" | head -n 1)
[[ $UUID =~ ^[0-9a-f-]{36}$ ]] || bail "cannot find the filesystem uuid ($UUID)"
SIGV4="aws:amz:$TESSERA_REGION:s3"
read -r -a URLS <<<"$TESSERA_SERVERS"

# put SERVER KEY: stores a small object with curl (SigV4, the cluster's credentials)
put() {
	local code
	code=$(curl -sS --noproxy '*' --max-time 10 -o /dev/null -w '%{http_code}' \
		--aws-sigv4 "$SIGV4" --user "$TESSERA_ACCESS_KEY:$TESSERA_SECRET_KEY" \
		-H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -X PUT --data-binary "planted $2" \
		"${URLS[$1]}/$TESSERA_BUCKET/$2")
	[[ $code == 200 ]]
}
have() { [[ -f $OBJ/$1/data/objects/tessera/$2 ]]; }

# An existing fragment key (server, key) to derive the planted ones from.
REAL=$(cd "$OBJ/0/data/objects/tessera" && find "$UUID" -type f -not -path '*/journal/*' -not -path '*/filesystems/*' | sort | head -n 1)
REAL_DIR=$(dirname "$REAL")
REAL_BASE=$(basename "$REAL")          # stripe.version.index
STRIPE_HEX=${REAL_BASE%%.*}
IDX=${REAL_BASE##*.}

OLD=(
	"1 $UUID/00000000000fffff/0000000000000000.0000000000000001.0"  # no such inode
	"2 $REAL_DIR/$STRIPE_HEX.00000000000ffffe.$IDX"                  # an old stripe version
	"3 $REAL"                                                       # right key, wrong server
)
KEEP=(
	"1 00000000-0000-4000-8000-000000000000/0000000000000002/0000000000000000.0000000000000001.0"
	"2 $UUID/not-a-fragment-key"
	"4 someone-else/file.txt"
)
for e in "${OLD[@]}" "${KEEP[@]}"; do
	read -r srv key <<<"$e"
	check "plant $key on server $srv" put "$srv" "$key"
done
have 3 "$REAL" || bail "planted copy missing"
sleep 3
YOUNG="4 $UUID/00000000000ffff0/0000000000000000.0000000000000001.1"
read -r srv key <<<"$YOUNG"
check "plant a young orphan" put "$srv" "$key"

BEFORE=$(cd "$OBJ" && find . -type f -path '*/objects/*' | sort)

"$SCRUB" --gc --gc-grace 2 --json "$TESSERA_META" >"$LIB_WORK/gc.json" 2>"$LIB_WORK/gc.err"
rc=$?
((rc == 1)) && ok "scrub --gc: exit 1 (the degraded stripe repaired)" ||
	{ fail "scrub --gc: exit $rc, want 1"; head -c 3000 "$LIB_WORK/gc.json" | sed 's/^/#   /'; cat "$LIB_WORK/gc.err"; }

for e in "${OLD[@]}"; do
	read -r srv key <<<"$e"
	! have "$srv" "$key" && ok "orphan $key deleted from server $srv" || fail "orphan $key still on server $srv"
done
for e in "${KEEP[@]}" "$YOUNG"; do
	read -r srv key <<<"$e"
	have "$srv" "$key" && ok "$key kept on server $srv" || fail "$key deleted from server $srv"
done
have 0 "$REAL" && ok "the referenced original of the misplaced copy kept" || fail "referenced fragment deleted"

stat_of() { grep -o "\"$1\":[0-9]*" "$LIB_WORK/gc.json" | head -n 1 | cut -d: -f2; }
[[ $(stat_of gc_deleted) == "${#OLD[@]}" ]] && ok "gc deleted ${#OLD[@]} objects" ||
	fail "gc deleted $(stat_of gc_deleted), want ${#OLD[@]}"
[[ $(stat_of gc_young) == 1 ]] && ok "one orphan within the grace period" || fail "gc_young $(stat_of gc_young)"
[[ $(stat_of garbage_drained) -ge 1 ]] && ok "garbage queue drained ($(stat_of garbage_drained))" ||
	fail "garbage queue not drained"

# Nothing but the planted orphans and the queued old version disappeared; what was added is
# the repaired fragment of the degraded stripe.
AFTER=$(cd "$OBJ" && find . -type f -path '*/objects/*' | sort)
GONE=$(comm -23 <(echo "$BEFORE") <(echo "$AFTER") | wc -l)
((GONE == ${#OLD[@]} + $(stat_of garbage_drained))) && ok "exactly the orphans and the queued garbage are gone" ||
	fail "$GONE objects gone, want $((${#OLD[@]} + $(stat_of garbage_drained)))"

# Everything referenced is intact, and a second --gc with no grace only finds the young one.
check_rc 0 "deep scrub after gc is clean" "$SCRUB" --deep "$TESSERA_META"
"$SCRUB" --gc --gc-grace 0 --json "$TESSERA_META" >"$LIB_WORK/gc2.json"
grep -q '"gc_deleted":1,' "$LIB_WORK/gc2.json" && ok "second gc deletes only the young orphan" ||
	fail "second gc: $(grep -o '"gc_deleted":[0-9]*' "$LIB_WORK/gc2.json")"
for e in "${KEEP[@]}"; do
	read -r srv key <<<"$e"
	have "$srv" "$key" && ok "$key still kept" || fail "$key deleted by the second gc"
done

check "mount" lib_local mount
M=$TESSERA_MNT
check "verify f" "$DATAGEN" verify "$M/f" $((2 * S)) 801
check "verify g" "$DATAGEN" verify "$M/g" $((S + 7)) 803
lib_finish
