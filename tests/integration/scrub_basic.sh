#!/usr/bin/env bash
# scrub_basic: tessera-scrub restores full redundancy (doc/scrub.md; src/scrub/scrub.c R1-R4).
#  1. one server's data directory is wiped: scrub exits 1, every stripe has k+m fragments
#     again (rebuilt on the same, healthy, server: R1), a second scrub exits 0;
#  2. a server stays down: scrub moves its fragments to the spare server (R2, R4: never two
#     fragments of a stripe on one server), then with two more servers stopped every file still
#     reads correctly: redundancy really was restored;
#  3. the server comes back: scrub --gc removes exactly the stale copies the move left there;
#  4. -n changes nothing and exits 4 when there is something to repair; a busy metadata
#     directory (mounted) is scrubbed by its daemon, a bad option is refused with 16.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

export TESSERA_FS_OPTS="${TESSERA_FS_OPTS:+$TESSERA_FS_OPTS,}request_timeout=5"
SCRUB="$TESSERA_BUILD/tessera-scrub"

lib_init
lib_up --servers 7 --k 4 --m 2
[[ -x $SCRUB ]] || bail "missing $SCRUB"

M=$TESSERA_MNT
S=$LIB_STRIPE
write_file small 100000 300
write_file stripe_plus_1 $((S + 1)) 301
write_file three_stripes $((3 * S + 5)) 302
write_file big $((20 << 20)) 303
write_file sub/f $((2 * S)) 399

scrub() { lib_scrub "$1" "$2" "$TESSERA_META" "${@:3}"; }

check "unmount (servers stay up)" lib_local unmount

# ---- the metadata is busy while mounted: the daemon scrubs (scrub_mounted.sh has more);
# bad usage: exit 16
check "mount again" lib_local mount
check_rc 0 "scrub of mounted metadata goes through the daemon" "$SCRUB" "$TESSERA_META"
OUT=$("$SCRUB" --json "$TESSERA_META" 2>&1)
[[ $OUT == *'"mounted":true'* ]] && ok "the report says mounted" || fail "report: ${OUT:0:300}"
check_rc 16 "unknown option" "$SCRUB" --no-such-option "$TESSERA_META"
check "unmount" lib_local unmount

scrub 0 "clean filesystem"
STRIPES=$(json_stat stripes "$REPORT")
FRAGS=$(json_stat fragments "$REPORT")
N=$((TESSERA_K + TESSERA_M))
((STRIPES >= 8 && FRAGS == STRIPES * N)) && ok "$STRIPES stripes, $FRAGS fragments" ||
	fail "unexpected counts: $STRIPES stripes, $FRAGS fragments"
TOTAL=$(lib_fragments | wc -l)
((TOTAL == FRAGS)) && ok "servers hold exactly $FRAGS objects" || fail "servers hold $TOTAL objects, want $FRAGS"

# ---- 1. wipe server 0 entirely
HELD=$(server_objects 0)
((HELD > 0)) || bail "server 0 holds no fragments"
check "stop server 0" lib_local stop-server 0
rm -rf "$LIB_WORK/servers/0/data/objects"
check "start server 0 (empty)" lib_local start-server 0

scrub 4 "dry run finds the wiped server" -n
((${#HELD} && $(server_objects 0) == 0)) && ok "dry run wrote nothing" || fail "dry run wrote objects"
[[ $(json_stat frags_missing "$REPORT") == "$HELD" ]] && ok "dry run: $HELD fragments missing" ||
	fail "dry run: $(json_stat frags_missing "$REPORT") missing, want $HELD"

scrub 1 "scrub after wiping server 0"
[[ $(json_stat frags_rebuilt "$REPORT") == "$HELD" ]] && ok "$HELD fragments rebuilt" ||
	fail "$(json_stat frags_rebuilt "$REPORT") fragments rebuilt, want $HELD"
[[ $(json_stat frags_moved "$REPORT") == 0 ]] && ok "rebuilt on the same server" ||
	fail "$(json_stat frags_moved "$REPORT") fragments moved off a healthy server"
[[ $(server_objects 0) == "$HELD" ]] && ok "server 0 holds $HELD fragments again" ||
	fail "server 0 holds $(server_objects 0) fragments, want $HELD"
scrub 0 "second scrub is clean"
[[ $(json_stat stripes_damaged "$REPORT") == 0 ]] && ok "every stripe has k+m fragments" ||
	fail "stripes still damaged"

# ---- 2. server 1 stays down: its fragments move to the spare server
HELD1=$(server_objects 1)
check "stop server 1" lib_local stop-server 1
scrub 1 "scrub with server 1 down"
[[ $(json_stat frags_moved "$REPORT") == "$HELD1" ]] && ok "$HELD1 fragments moved" ||
	fail "$(json_stat frags_moved "$REPORT") fragments moved, want $HELD1"
scrub 0 "scrub with server 1 still down is clean"

# every stripe on 6 distinct live servers: stop two more, every file still reads
check "mount" lib_local mount
check "stop server 2" lib_local stop-server 2
check "stop server 3" lib_local stop-server 3
check "remount" lib_local remount
M=$TESSERA_MNT
verify_all "servers 1, 2, 3 down after the scrub"
check "unmount" lib_local unmount
for i in 1 2 3; do
	check "start server $i" lib_local start-server "$i"
done

# ---- 3. the stale copies on server 1 are unreferenced now: --gc removes exactly them
scrub 0 "scrub --gc removes the stale copies" --gc --gc-grace 0
[[ $(json_stat gc_deleted "$REPORT") == "$HELD1" ]] && ok "gc deleted $HELD1 stale fragments" ||
	fail "gc deleted $(json_stat gc_deleted "$REPORT"), want $HELD1"
[[ $(server_objects 1) == 0 ]] && ok "server 1 is empty" || fail "server 1 still holds $(server_objects 1)"
TOTAL=$(lib_fragments | wc -l)
((TOTAL == FRAGS)) && ok "servers hold exactly $FRAGS objects again" || fail "servers hold $TOTAL, want $FRAGS"

check "mount" lib_local mount
M=$TESSERA_MNT
verify_all "after gc"
lib_finish
