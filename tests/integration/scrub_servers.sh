#!/usr/bin/env bash
# scrub_servers: changing the server list with `tessera server` (tools/tessera.c), and
# tessera-scrub moving the data accordingly (doc/scrub.md, "Changing the server list").
#  1. a server taken out of the list (remove = retire): scrub rebuilds every fragment it held
#     on the other servers, a second scrub is clean, new data never goes to it, and with it and
#     two more servers stopped every file still reads;
#  2. a server replaced by an empty one at a new address: scrub rebuilds its fragments there;
#  3. a server added: new stripes use it;
#  4. refusals: below k+m active servers, an unknown id, a duplicate or unreachable address,
#     a bad specification (usage, exit 2), a mounted filesystem.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

export TESSERA_FS_OPTS="${TESSERA_FS_OPTS:+$TESSERA_FS_OPTS,}request_timeout=5"
SCRUB="$TESSERA_BUILD/tessera-scrub"
ADMIN="$TESSERA_BUILD/tessera"

lib_init
lib_up --servers 7 --k 4 --m 2
[[ -x $SCRUB && -x $ADMIN ]] || bail "missing $SCRUB or $ADMIN"

M=$TESSERA_MNT
S=$LIB_STRIPE
write_file small 100000 500
write_file stripe_plus_1 $((S + 1)) 501
write_file three_stripes $((3 * S + 5)) 502
write_file big $((12 << 20)) 503

scrub() { lib_scrub "$1" "$2" "$TESSERA_META" "${@:3}"; }

# admin WANT_RC DESC ARGS...: runs `tessera server ARGS`, output in $ADMIN_OUT.
ADMIN_OUT="$LIB_WORK/admin.out"
admin() {
	local want=$1 desc=$2 rc
	shift 2
	"$ADMIN" server "$@" >"$ADMIN_OUT" 2>&1
	rc=$?
	if ((rc == want)); then
		ok "$desc: exit $rc"
	else
		fail "$desc: exit $rc, wanted $want"
		sed 's/^/#   /' "$ADMIN_OUT"
	fi
}

# list_has PATTERN: the server list shows a line matching the extended regex.
list_has() {
	"$ADMIN" server list "$TESSERA_META" >"$ADMIN_OUT" 2>&1 && grep -Eq "$1" "$ADMIN_OUT"
}

admin 0 "list while mounted" list "$TESSERA_META"
admin 1 "a change while mounted is refused" remove "$TESSERA_META" 0
grep -q "in use" "$ADMIN_OUT" && ok "says the metadata is in use" || fail "message: $(cat "$ADMIN_OUT")"
"$ADMIN" status "$M" >"$ADMIN_OUT" 2>&1 && grep -q "in use (mounted)" "$ADMIN_OUT" &&
	grep -q "7 of 7 active servers answer" "$ADMIN_OUT" && ok "status of the mount" ||
	fail "status: $(cat "$ADMIN_OUT")"
check "unmount (servers stay up)" lib_local unmount

scrub 0 "clean filesystem"
STRIPES=$(json_stat stripes "$REPORT")
FRAGS=$(json_stat fragments "$REPORT")
N=$((TESSERA_K + TESSERA_M))
((STRIPES >= 6 && FRAGS == STRIPES * N)) && ok "$STRIPES stripes, $FRAGS fragments" ||
	fail "unexpected counts: $STRIPES stripes, $FRAGS fragments"

# ---- 4 (first part). refusals that change nothing
admin 2 "a bad specification is a usage error" add "$TESSERA_META" "ftp://127.0.0.1:1"
admin 2 "a bad id is a usage error" remove "$TESSERA_META" "x1"
admin 1 "an unknown id is refused" remove "$TESSERA_META" 99
admin 1 "a duplicate address is refused" add "$TESSERA_META" "${TESSERA_SERVERS%% *}"
admin 1 "an address nobody answers at is refused" add "$TESSERA_META" "http://127.0.0.1:9"
list_has "^6 +active" && ! list_has "^7 " && ok "the list is unchanged" || fail "list: $(cat "$ADMIN_OUT")"

# ---- 1. retire server 2
HELD2=$(server_objects 2)
((HELD2 > 0)) || bail "server 2 holds no fragments"
admin 0 "remove server 2" remove "$TESSERA_META" 2
list_has "^2 +retired" && ok "server 2 is listed as retired" || fail "list: $(cat "$ADMIN_OUT")"
admin 1 "a second removal would leave fewer than k+m" remove "$TESSERA_META" 3
admin 1 "removing a retired server again" remove "$TESSERA_META" 2
admin 1 "no replace while the retired server still holds fragments" replace "$TESSERA_META" 4 \
	"http://127.0.0.1:9"
grep -q "still holds fragments" "$ADMIN_OUT" && ok "... says why" || fail "message: $(cat "$ADMIN_OUT")"
check "stop server 2 (out of the list)" lib_local stop-server 2
"$ADMIN" status "$TESSERA_META" >"$ADMIN_OUT" 2>&1 && grep -Eq "^2 +retired .* down " "$ADMIN_OUT" &&
	grep -q "6 of 6 active servers answer" "$ADMIN_OUT" && ok "status: server 2 retired and down" ||
	fail "status: $(cat "$ADMIN_OUT")"

scrub 4 "dry run finds the retired server's fragments" -n
[[ $(json_stat frags_missing "$REPORT") == "$HELD2" ]] && ok "dry run: $HELD2 fragments to move" ||
	fail "dry run: $(json_stat frags_missing "$REPORT") missing, want $HELD2"
scrub 1 "scrub after retiring server 2"
[[ $(json_stat frags_moved "$REPORT") == "$HELD2" ]] && ok "$HELD2 fragments rebuilt elsewhere" ||
	fail "$(json_stat frags_moved "$REPORT") fragments moved, want $HELD2"
scrub 0 "second scrub is clean"
REST=0
for i in 0 1 3 4 5 6; do REST=$((REST + $(server_objects "$i"))); done
((REST == FRAGS)) && ok "the active servers hold all $FRAGS fragments" ||
	fail "the active servers hold $REST fragments, want $FRAGS"

# new data never goes to a retired server, even when it is up
check "start server 2 again (still retired)" lib_local start-server 2
check "mount" lib_local mount
M=$TESSERA_MNT
write_file after_retire $((6 * S)) 504
sync
[[ $(server_objects 2) == "$HELD2" ]] && ok "the retired server got nothing new" ||
	fail "server 2 holds $(server_objects 2) objects, had $HELD2"
# redundancy restored without it: server 2 and two more down, every file reads
check "stop server 2" lib_local stop-server 2
check "stop server 0" lib_local stop-server 0
check "stop server 1" lib_local stop-server 1
check "remount" lib_local remount
M=$TESSERA_MNT
verify_all "servers 0, 1 down and 2 retired"
check "unmount" lib_local unmount
check "start server 0" lib_local start-server 0
check "start server 1" lib_local start-server 1

# ---- 2. replace server 4 by an empty server at a new address
scrub 0 "clean before the replacement"
FRAGS=$(json_stat fragments "$REPORT")
HELD4=$(server_objects 4)
check "stop server 4 (gone for good)" lib_local stop-server 4
OUT=$(lib_local new-server) || fail "new-server: $OUT"
NEW_URL=${OUT##* }
NEW_IDX=$(awk '{print $2}' <<<"$OUT")
admin 0 "replace server 4 by $NEW_URL" replace "$TESSERA_META" 4 "$NEW_URL"
list_has "^4 +refilling +${NEW_URL//./\\.} " && ok "server 4 has the new address, refilling" ||
	fail "list: $(cat "$ADMIN_OUT")"
admin 1 "no other change before the refill" remove "$TESSERA_META" 5
grep -q "not refilled" "$ADMIN_OUT" && ok "... says why" || fail "message: $(cat "$ADMIN_OUT")"
scrub 1 "scrub after the replacement"
[[ $(json_stat frags_rebuilt "$REPORT") == "$HELD4" ]] && ok "$HELD4 fragments rebuilt" ||
	fail "$(json_stat frags_rebuilt "$REPORT") fragments rebuilt, want $HELD4"
[[ $(server_objects "$NEW_IDX") == "$HELD4" ]] && ok "the new server holds them" ||
	fail "the new server holds $(server_objects "$NEW_IDX"), want $HELD4"
scrub 0 "second scrub is clean"
list_has "^4 +active " && ok "a complete scrub ended the refill" || fail "list: $(cat "$ADMIN_OUT")"

# ---- 3. add a server: new stripes use it
OUT=$(lib_local new-server) || fail "new-server: $OUT"
ADD_URL=${OUT##* }
ADD_IDX=$(awk '{print $2}' <<<"$OUT")
admin 0 "add $ADD_URL" add "$TESSERA_META" "$ADD_URL,zone=extra"
list_has "^7 +active +${ADD_URL//./\\.} +extra " && ok "server 7 listed" || fail "list: $(cat "$ADMIN_OUT")"
check "mount" lib_local mount
M=$TESSERA_MNT
write_file after_add $((12 * S)) 505
sync
(($(server_objects "$ADD_IDX") > 0)) && ok "the added server got fragments" ||
	fail "the added server holds nothing"
check "remount" lib_local remount
M=$TESSERA_MNT
verify_all "after the changes"
check "unmount" lib_local unmount
scrub 0 "final scrub is clean"
lib_finish
