#!/usr/bin/env bash
# scrub_mounted: tessera-scrub MOUNTPOINT, run by the daemon through its control socket
# (include/tessera/control.h, doc/scrub.md "Mounted").
#  1. the mount shows META_DIR as its source and fuse.tesserafs as its type; the socket is
#     META_DIR/control.sock, mode 0600, and it is gone after unmount;
#  2. server 0 is wiped, then a writer creates and rewrites files in the mount while the
#     scrub runs: the scrub exits 1 (the wiped fragments rebuilt), no write stalls for long,
#     every file (old, new and rewritten) reads back correctly, and the next scrub is clean
#     with server 0 holding fragments again (the stripe-map updates are compare-and-set under
#     the inode lock: scrub.c R6, a rewritten stripe keeps its new version);
#  3. -n reports what is damaged (exit 4) and changes nothing;
#  4. a second scrub while one runs is refused (exit 8); ^C of the client cancels the scrub in
#     the daemon (exit 8, the checkpoint META_DIR/scrub.checkpoint stays); the next run resumes
#     from it (every stripe counted once) and removes it (R7).
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

export TESSERA_STRIPE_SIZE=$((256 << 10))
export TESSERA_FS_OPTS="${TESSERA_FS_OPTS:+$TESSERA_FS_OPTS,}request_timeout=5"
SCRUB="$TESSERA_BUILD/tessera-scrub"

lib_init
lib_up --servers 6 --k 4 --m 2
[[ -x $SCRUB ]] || bail "missing $SCRUB"
M=$TESSERA_MNT
META=$TESSERA_META
SOCK=$META/control.sock

# scrub WANT_RC DESC ARGS...: tessera-scrub --json ARGS MOUNTPOINT, report in $REPORT.
scrub() { lib_scrub "$1" "$2" "$M" "${@:3}"; }

# ---- 1. how the mount is found
read -r SRC TYPE < <(awk -v m="$M" '$5 == m { for (i = 7; $i != "-"; i++); print $(i + 2), $(i + 1) }' \
	/proc/self/mountinfo)
[[ $SRC == "$META" && $TYPE == fuse.tesserafs ]] && ok "mount source is META_DIR, type fuse.tesserafs" ||
	fail "mount source '$SRC' type '$TYPE'"
[[ -S $SOCK && $(stat -c %a "$SOCK") == 600 ]] && ok "control socket, mode 0600" ||
	fail "no control socket '$SOCK' with mode 0600"

# ---- 2. scrub while a writer works
BASE=8
for ((i = 0; i < BASE; i++)); do
	check "write base$i" "$DATAGEN" write "$M/base$i" 3M $((100 + i)) || bail "cannot write"
done
scrub 0 "clean filesystem"
grep -q '"mounted":true' "$REPORT" && ok "report says mounted" || fail "report does not say mounted"
STRIPES0=$(json_stat stripes "$REPORT")

check "stop server 0" lib_local stop-server 0
rm -rf "$LIB_WORK/servers/0/data/objects"
check "start server 0 (empty)" lib_local start-server 0

# The writer: new files, and rewrites of base0..3 with other seeds; each write's time in ms.
writer() {
	local i t0 t1
	for ((i = 0; i < 12; i++)); do
		t0=$(date +%s%N)
		"$DATAGEN" write "$M/new$i" 2M $((200 + i)) || return 1
		if ((i < 4)); then
			"$DATAGEN" write "$M/base$i" 3M $((300 + i)) || return 1
		fi
		t1=$(date +%s%N)
		echo $(((t1 - t0) / 1000000)) >>"$LIB_WORK/writer.ms"
	done
}
writer &
WPID=$!
sleep 0.3
scrub 1 "scrub while a writer works, server 0 wiped"
REBUILT=$(json_stat frags_rebuilt "$REPORT")
((REBUILT > 0)) && ok "$REBUILT fragments rebuilt" || fail "nothing rebuilt"
[[ $(json_stat errors_left "$REPORT") == 0 ]] && ok "no error left" || fail "errors left"
diag "stripes changed by the writer while checked: $(json_stat stripes_changed "$REPORT")"
wait "$WPID" && ok "writer finished" || fail "writer failed"
MAXMS=$(sort -n "$LIB_WORK/writer.ms" | tail -n 1)
((MAXMS < 20000)) && ok "slowest write step ${MAXMS} ms" || fail "a write step took ${MAXMS} ms"

for ((i = 0; i < BASE; i++)); do
	seed=$((i < 4 ? 300 + i : 100 + i))
	check "verify base$i" "$DATAGEN" verify "$M/base$i" 3M "$seed"
done
for ((i = 0; i < 12; i++)); do
	check "verify new$i" "$DATAGEN" verify "$M/new$i" 2M $((200 + i))
done

# Stripes the writer committed while server 0 was still marked down may be degraded: the
# next scrub repairs them (exit 1); the one after is clean.
"$SCRUB" --json "$M" >"$REPORT" 2>&1
rc=$?
((rc == 0 || rc == 1)) && [[ $(json_stat errors_left "$REPORT") == 0 ]] &&
	ok "scrub after the writer: exit $rc, nothing left" || fail "scrub after the writer: exit $rc"
scrub 0 "then clean"
[[ $(json_stat stripes_damaged "$REPORT") == 0 ]] && ok "every stripe has k+m fragments" ||
	fail "stripes still damaged"
STRIPES=$(json_stat stripes "$REPORT")
((STRIPES > STRIPES0)) && ok "$STRIPES stripes (the writer's included)" || fail "$STRIPES stripes"
((${#STRIPES} && $(server_objects 0) > 0)) && ok "server 0 holds $(server_objects 0) fragments" ||
	fail "server 0 is empty"

# ---- 3. a dry run changes nothing
VICTIM=$(find "$LIB_WORK/servers/1/data/objects" -type f -not -path '*/journal/*' -not -path '*/filesystems/*' | head -n 1)
rm -f "$VICTIM"
scrub 4 "dry run finds the missing fragment" -n
[[ ! -e $VICTIM ]] && ok "dry run wrote nothing" || fail "dry run rebuilt the fragment"
scrub 1 "repair it"
[[ -e $VICTIM ]] && ok "fragment rebuilt under its key" || fail "fragment not back"

# ---- 4. busy, cancel, resume
CKPT="$META/scrub.checkpoint"
"$SCRUB" --json --deep --rate-limit 2M --window 8 "$M" >"$LIB_WORK/slow.json" 2>"$LIB_WORK/slow.err" &
SPID=$!
for ((t = 0; t < 100; t++)); do
	[[ -f $CKPT ]] && break
	sleep 0.1
done
[[ -f $CKPT ]] && ok "a checkpoint appears after the first round" || fail "no checkpoint"
OUT=$("$SCRUB" "$M" 2>&1)
rc=$?
((rc == 8)) && [[ $OUT == *"already running"* ]] && ok "a second scrub is refused: exit 8" ||
	fail "second scrub: exit $rc: $OUT"
kill -INT "$SPID"
wait "$SPID"
rc=$?
((rc == 8)) && ok "interrupted scrub: exit 8" || fail "interrupted scrub: exit $rc"
grep -q "interrupted" "$LIB_WORK/slow.err" && ok "it says so" || fail "no message: $(cat "$LIB_WORK/slow.err")"
[[ -f $CKPT ]] && ok "the checkpoint stays" || fail "checkpoint gone"
DONE1=$(json_stat stripes "$LIB_WORK/slow.json")
((DONE1 > 0 && DONE1 < STRIPES)) && ok "$DONE1 of $STRIPES stripes done before the interrupt" ||
	fail "interrupted after $DONE1 of $STRIPES stripes"
scrub 0 "the next run resumes" --deep
[[ $(json_stat resumed "$REPORT") == 1 ]] && ok "resumed from the checkpoint" || fail "not resumed"
[[ $(json_stat stripes "$REPORT") == "$STRIPES" ]] && ok "every stripe counted once" ||
	fail "$(json_stat stripes "$REPORT") stripes counted, want $STRIPES"
[[ ! -e $CKPT ]] && ok "checkpoint removed" || fail "checkpoint still there"

check "unmount" lib_local unmount
[[ ! -e $SOCK ]] && ok "socket removed at unmount" || fail "socket left behind"
lib_finish
