#!/usr/bin/env bash
# data_faults: the fault tests of the data path (issue 4; DESIGN.md "Durability and
# consistency rules"; src/data/data.c D1-D5). On 6 servers, k=4 m=2, write quorum k+1:
#  a. a 200 MiB write while one server is SIGKILLed midway succeeds, and reads back identical
#     after a remount (the server still dead);
#  b. with m servers down every file written with all servers up reads back identical;
#  c. a hung server (SIGSTOP, not dead) costs a multi-stripe read about one hedge timeout
#     (hedge_ms=1000) more than the same read with every server up, never a request timeout
#     (request_timeout=10);
#  d. one flipped payload byte in a data fragment on a server's disk: the read returns the
#     right bytes and the stripe is flagged for repair (a header-only `tessera-scrub -n` sees one
#     more damaged stripe than before the read; the repair then rebuilds exactly that fragment).
#     That mount runs without the healer (heal=0), which would otherwise rebuild a's degraded
#     stripes, or d's, between the two counts;
#  e. m+1 servers down: reads fail with EIO (datagen exit 3), never wrong bytes (exit 1), and
#     sooner than one request timeout;
#     writes fail with EIO at write(), fsync() or close(), never silently succeed;
#  f. all servers back (same mount, found by the block client's prober): new stripes get k+m
#     fragments again, one per server.
# Each part bounds its own waits; the whole test takes about a minute on 2 cores. The time
# bounds hold on a slow or loaded machine (an ASan build on 2 busy cores): each is either far
# from what the right behaviour costs and below what the wrong one does (a request timeout),
# or relative to a time measured in the same run.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

HEDGE_MS=1000
REQUEST_TIMEOUT=10
export TESSERA_FS_OPTS="${TESSERA_FS_OPTS:+$TESSERA_FS_OPTS,}request_timeout=$REQUEST_TIMEOUT,hedge_ms=$HEDGE_MS"
SCRUB="$TESSERA_BUILD/tessera-scrub"
# Part c: the read of b with a server hung may take, over the same read with all servers up
# (BASE ms), another BASE (a loaded machine's noise, the decodes) plus the hedge and 4 s, but
# never as much as BASE plus a request timeout, which is what a read waiting out the hung
# server costs at least: hung_bound_ms BASE.
hung_bound_ms() {
	local a=$((2 * $1 + HEDGE_MS + 4000)) b=$(($1 + REQUEST_TIMEOUT * 1000 - HEDGE_MS))
	echo $((a < b ? a : b))
}
# Part e: the servers are down (connections refused, no hedge to wait out): a read fails at
# once, in tens of ms; one that waits out a request timeout does not pass.
EIO_BOUND_MS=$((REQUEST_TIMEOUT * 1000 - HEDGE_MS))
# Part f: how long the probe writes go on. The prober tries servers that are not up every
# 1 s (+-25 %); the check itself is relative to the outage (see there).
BACKOFF_BOUND_S=45

# Whatever happens, a stopped server is continued before the cleanup stops it.
STOPPED_PID=""
faults_cleanup() {
	local rc=$1
	[[ -n $STOPPED_PID ]] && kill -CONT "$STOPPED_PID" 2>/dev/null
	lib_cleanup "$rc"
}

lib_init
trap 'faults_cleanup $?' EXIT
lib_up --servers 6 --k 4 --m 2
[[ -x $SCRUB ]] || bail "missing $SCRUB"

M=$TESSERA_MNT
S=$LIB_STRIPE
N=$((TESSERA_K + TESSERA_M))

# frag_table INO: one line "stripe version index server" per fragment object of the inode on
# any server's disk (numbers in decimal; the server is its 0-based directory index).
frag_table() {
	local hex
	hex=$(printf '%016x' "$1")
	find "$LIB_WORK"/servers/*/data/objects/"$TESSERA_BUCKET"/*/"$hex" -type f 2>/dev/null |
		awk -F/ '
		function hex(s,   i, v) {
			v = 0
			for (i = 1; i <= length(s); i++)
				v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
			return v
		}
		{
			split($NF, p, ".")
			printf "%d %d %d %d\n", hex(p[1]), hex(p[2]), p[3], $(NF - 6)
		}'
}

# frag_files INO: how many fragment objects the inode has on all servers.
frag_files() {
	frag_table "$1" | wc -l
}

# stripes_placed INO STRIPES: true when each of stripes 0..STRIPES-1 has, in its newest
# version, k+m fragments (indexes 0..k+m-1) on k+m distinct servers; prints what it found.
stripes_placed() {
	frag_table "$1" | awk -v want="$2" -v n="$N" '
		{ if (!($1 in ver) || $2 > ver[$1]) ver[$1] = $2; f[$1 " " $2 " " $3] = $4 }
		END {
			bad = 0
			for (s = 0; s < want; s++) {
				if (!(s in ver)) { printf "stripe %d: no fragments\n", s; bad = 1; continue }
				split("", seen); cnt = 0; srvs = ""
				for (i = 0; i < n; i++) {
					key = s " " ver[s] " " i
					if (!(key in f)) continue
					cnt++; seen[f[key]] = 1; srvs = srvs " " f[key]
				}
				nd = 0; for (x in seen) nd++
				if (cnt != n || nd != n) {
					printf "stripe %d: %d fragments on %d servers (%s)\n", s, cnt, nd, srvs
					bad = 1
				}
			}
			exit bad
		}'
}

ino_of() {
	stat -c %i "$1"
}

# verify_rc WANT DESC FILE SIZE SEED: datagen verify must exit WANT (0 right, 3 EIO).
verify_rc() {
	check_rc "$1" "$2" "$DATAGEN" verify "$3" "$4" "$5"
}

# ---------------------------------------------------------------- files written with all up
BSIZE=$((6 * S + 12345))   # six and a bit stripes
DSIZE=$((2 * S + 777))
check "write b ($BSIZE bytes)" "$DATAGEN" write "$M/b" "$BSIZE" 21
check "write d ($DSIZE bytes)" "$DATAGEN" write "$M/d" "$DSIZE" 22
B_INO=$(ino_of "$M/b")
D_INO=$(ino_of "$M/d")
out=$(stripes_placed "$B_INO" 7) && ok "b: every stripe has k+m fragments on distinct servers" ||
	fail "b: placement with all servers up: $out"

# ---------------------------------------------------------------- a. SIGKILL during a write
ASIZE=$((200 << 20))
KILLED=2
"$DATAGEN" write "$M/a" "$ASIZE" 11 >"$LIB_WORK/a.out" 2>&1 &
WPID=$!
t_end=$((SECONDS + 60))
while kill -0 "$WPID" 2>/dev/null && (($(stat -c %s "$M/a" 2>/dev/null || echo 0) < (48 << 20))) &&
	((SECONDS < t_end)); do
	sleep 0.05
done
at=$(stat -c %s "$M/a" 2>/dev/null || echo 0)
if kill -0 "$WPID" 2>/dev/null; then
	check "SIGKILL server $KILLED while the write is at $((at >> 20)) MiB" \
		lib_local kill-server "$KILLED"
	kill -0 "$WPID" 2>/dev/null && ok "the write was still running after the kill" ||
		fail "the write ended before the kill had taken effect: not a mid-write kill"
else
	fail "the 200 MiB write ended (at $((at >> 20)) MiB) before the kill: not a mid-write kill"
	lib_local kill-server "$KILLED"
fi
wait "$WPID"
rc=$?
((rc == 0)) && ok "200 MiB write with a server killed midway succeeded" ||
	fail "200 MiB write with a server killed midway: exit $rc: $(head -c 300 "$LIB_WORK/a.out")"
remount
lib_time_ms "$DATAGEN" verify "$M/a" "$ASIZE" 11 2>"$LIB_WORK/a.err"
((LIB_RC == 0)) && ok "a reads back identical after a remount, server $KILLED still down ($LIB_MS ms)" ||
	fail "a after the kill: datagen verify exit $LIB_RC: $(head -c 300 "$LIB_WORK/a.err")"
A_INO=$(ino_of "$M/a")
# Stripes stored after the kill have k+1 fragments, none on the dead server.
nkilled=$(frag_table "$A_INO" | awk -v s="$KILLED" '$4 == s' | wc -l)
nall=$(frag_files "$A_INO")
diag "a: $nall fragment objects, $nkilled of them on the killed server $KILLED"
check "start server $KILLED" lib_local start-server "$KILLED"

# ---------------------------------------------------------------- b. m servers down
check "stop server 0" lib_local stop-server 0
check "stop server 3" lib_local stop-server 3
remount
verify_rc 0 "b reads back identical with m=2 servers down" "$M/b" "$BSIZE" 21
verify_rc 0 "d reads back identical with m=2 servers down" "$M/d" "$DSIZE" 22
check "start server 0" lib_local start-server 0
check "start server 3" lib_local start-server 3

# ---------------------------------------------------------------- c. a hung server
# The baseline: the same read, with every server up, right after a remount as below.
remount
lib_time_ms "$DATAGEN" verify "$M/b" "$BSIZE" 21 2>"$LIB_WORK/c.err"
BASE_MS=$LIB_MS
HUNG_BOUND_MS=$(hung_bound_ms "$BASE_MS")
((LIB_RC == 0)) && ok "b read in $BASE_MS ms with every server up (the baseline of part c)" ||
	fail "b with every server up: datagen verify exit $LIB_RC: $(head -c 300 "$LIB_WORK/c.err")"
remount
# The server of stripe 0's first data fragment: the read cannot avoid it without hedging.
HUNG=$(frag_table "$B_INO" | awk '$1 == 0 && $3 == 0 { print $4 }' | sort -u | head -n 1)
read -r -a PIDS <<<"$TESSERA_SERVER_PIDS"
if [[ -z $HUNG || -z ${PIDS[HUNG]:-} || ${PIDS[HUNG]} == - ]]; then
	fail "no running server holds fragment 0 of b's stripe 0"
else
	STOPPED_PID=${PIDS[HUNG]}
	nhung=$(frag_table "$B_INO" | awk -v s="$HUNG" '$4 == s && $3 < 4' | wc -l)
	kill -STOP "$STOPPED_PID" && ok "server $HUNG (pid $STOPPED_PID) stopped with SIGSTOP"
	lib_time_ms "$DATAGEN" verify "$M/b" "$BSIZE" 21 2>"$LIB_WORK/c.err"
	if ((LIB_RC != 0)); then
		fail "b with server $HUNG hung: datagen verify exit $LIB_RC: $(head -c 300 "$LIB_WORK/c.err")"
	elif ((LIB_MS >= HUNG_BOUND_MS)); then
		fail "b (7 stripes, $nhung data fragments on the hung server) took $LIB_MS ms, bound $HUNG_BOUND_MS ms ($BASE_MS ms with every server up, hedge $HEDGE_MS ms, request timeout ${REQUEST_TIMEOUT}s)"
	else
		ok "b read in $LIB_MS ms with server $HUNG hung ($nhung data fragments there; $BASE_MS ms with every server up, bound $HUNG_BOUND_MS ms)"
	fi
	kill -CONT "$STOPPED_PID"
	STOPPED_PID=""
	verify_rc 0 "b reads back identical after SIGCONT" "$M/b" "$BSIZE" 21
fi

# ---------------------------------------------------------------- d. a flipped byte
REPORT="$LIB_WORK/report.json"
# scrub_json WANT_RC DESC ARGS...: tessera-scrub --json ARGS on the unmounted metadata.
scrub_json() { lib_scrub "$1" "$2" "$TESSERA_META" "${@:3}"; }

check "unmount for the flip" lib_local unmount
# Fragment 0 (data) of d's stripe 0, newest version.
FLIP=$(find "$LIB_WORK"/servers/*/data/objects/"$TESSERA_BUCKET"/*/"$(printf '%016x' "$D_INO")" \
	-type f -name "$(printf '%016x' 0).*.0" 2>/dev/null | sort | tail -n 1)
if [[ -z $FLIP ]]; then
	fail "no fragment 0 of d's stripe 0 on any server"
else
	pos=$((80 + 4097))
	old=$(od -An -tu1 -j "$pos" -N1 "$FLIP" | tr -d ' ')
	# shellcheck disable=SC2059 # the format is the escaped byte
	printf "$(printf '\\%03o' $((old ^ 0x5a)))" |
		dd of="$FLIP" bs=1 seek="$pos" count=1 conv=notrunc status=none
	new=$(od -An -tu1 -j "$pos" -N1 "$FLIP" | tr -d ' ')
	((new == (old ^ 0x5a))) && ok "flipped payload byte $((pos - 80)) of $(basename "$FLIP") ($old -> $new)" ||
		fail "the flip did not take ($old -> $new)"
	# A header-only dry run cannot see a payload flip: the baseline.
	"$SCRUB" --json -n --no-namespace "$TESSERA_META" >"$REPORT" 2>"$LIB_WORK/scrub.err"
	rc=$?
	((rc == 0 || rc == 4)) && ok "dry run before the read: scrub exit $rc" ||
		fail "dry run before the read: scrub exit $rc: $(head -c 300 "$LIB_WORK/scrub.err")"
	DMG0=$(json_stat stripes_damaged "$REPORT")
	# Exactly a's stripes stored while server $KILLED was dead are flagged: committed with
	# fewer than k+m fragments (DESIGN.md), while the hung server of part c and the servers
	# stopped in part b flagged nothing (not answering is not damage). The healer of the
	# mounts since server $KILLED returned has rebuilt some or all of them (clearing their
	# flags); how many depends on the machine's speed, so they are counted on the disks.
	short=$(frag_table "$A_INO" | awk -v n="$N" '
		{ if (!($1 in v) || $2 > v[$1]) v[$1] = $2; c[$1 " " $2]++ }
		END { s = 0; for (x in v) if (c[x " " v[x]] < n) s++; print s }')
	# A PUT in flight when the server was killed may have reached its disk without an
	# answer: that stripe is rightly degraded in the map (the fragment does not count) though
	# all k+m files exist. At most one per store worker (8) can be in that window.
	((DMG0 >= short && DMG0 <= short + 8)) &&
		ok "the degraded stripes are a's $short stripes stored with fewer than k+m fragments (+$((DMG0 - short)) answered too late)" ||
		fail "$DMG0 degraded stripes, but a has $short stripes with fewer than k+m fragments"
	# Without the healer, which would rebuild a's stripes still flagged (or d's, flagged by
	# the read) while this mount runs: between the two dry runs only the read flags.
	check "mount without the healer" env TESSERA_FS_OPTS="$TESSERA_FS_OPTS,heal=0" \
		"$TESSERA_LOCAL" mount "$LIB_WORK"
	lib_load_env
	M=$TESSERA_MNT
	verify_rc 0 "d reads back identical with a flipped byte in a data fragment" "$M/d" "$DSIZE" 22
	check "unmount after the read" lib_local unmount
	scrub_json 4 "dry run after the read" -n --no-namespace
	DMG1=$(json_stat stripes_damaged "$REPORT")
	((DMG1 == DMG0 + 1)) && ok "the read flagged the damaged stripe ($DMG0 -> $DMG1 damaged stripes)" ||
		fail "the read did not record the damage: $DMG0 -> ${DMG1:-?} damaged stripes"
	# The repair finds the bad fragment by its crc and rebuilds exactly it.
	scrub_json 1 "repair" -v --no-namespace
	grep -q "\"kind\":\"fragment_rebuilt\",\"fixed\":true,\"ino\":$D_INO,\"stripe\":0,[^}]*\"fragment\":0," "$REPORT" &&
		ok "the repair rebuilt d's stripe 0 fragment 0" ||
		fail "the repair did not rebuild d's stripe 0 fragment 0"
	scrub_json 0 "deep scrub after the repair" --deep --no-namespace
	check "mount after the repair" lib_local mount
	M=$TESSERA_MNT
fi

# ---------------------------------------------------------------- e. m+1 servers down
T_DOWN=$SECONDS
for i in 0 1 2; do
	check "stop server $i" lib_local stop-server "$i"
done
remount
# read_eio NAME SIZE SEED: EIO within the bound, never wrong bytes.
read_eio() {
	lib_time_ms "$DATAGEN" verify "$M/$1" "$2" "$3" 2>"$LIB_WORK/e.err"
	local err
	err=$(head -c 300 "$LIB_WORK/e.err")
	if ((LIB_RC == 1)); then
		fail "$1 with 3 servers down: WRONG DATA or size ($err)"
	elif ((LIB_RC != 3)) || [[ $err != *"Input/output error"* ]]; then
		fail "$1 with 3 servers down: exit $LIB_RC, want 3 with EIO ($err)"
	elif ((LIB_MS > EIO_BOUND_MS)); then
		fail "$1 with 3 servers down: EIO after $LIB_MS ms (bound $EIO_BOUND_MS ms)"
	else
		ok "$1 with 3 servers down: EIO after $LIB_MS ms"
	fi
}
read_eio b "$BSIZE" 21
read_eio d "$DSIZE" 22
read_eio a "$ASIZE" 11

# write_eio DESC WHERE CMD...: CMD must fail, with EIO reported by WHERE (a regex over its
# stderr: "write", "fsync", "clos").
write_eio() {
	local desc=$1 where=$2 out rc
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	if ((rc == 0)); then
		fail "$desc: SILENT SUCCESS with 3 servers down"
	elif [[ $out != *"Input/output error"* ]]; then
		fail "$desc: exit $rc but not EIO: $(head -c 300 <<<"$out")"
	elif ! grep -Eq "$where" <<<"$out"; then
		fail "$desc: EIO, but not at $where: $(head -c 300 <<<"$out")"
	else
		ok "$desc: EIO ($(head -n 1 <<<"$out" | head -c 120))"
	fi
}
write_eio "6 MiB write + fsync" "fsync" "$DATAGEN" write "$M/e1" $((6 << 20)) 31
write_eio "6 MiB write + close, no fsync (dd)" "clos" \
	dd if=/dev/zero of="$M/e2" bs=1M count=6 status=none
write_eio "64 MiB write (more than the file's stripe buffers)" "write '" \
	"$DATAGEN" write "$M/e3" $((64 << 20)) 33
write_eio "8 KiB write + fsync (beyond the inline threshold)" "fsync" \
	"$DATAGEN" write "$M/e4" 8192 34

# ---------------------------------------------------------------- f. all servers back
for i in 0 1 2; do
	check "start server $i" lib_local start-server "$i"
done
# The same mount has to find out by itself that they are back: its block client probes every
# server that is not up about once a second, so the servers are used again within seconds.
# The bound is the outage's length plus 6 s, which a back-off that grows with the failed
# probes (doubling: never longer than the outage so far plus 1 s) would still meet, and one
# that grows faster, or a server never probed again, would not; on a slow machine the outage
# is longer too.
t0=$SECONDS
OUTAGE=$((t0 - T_DOWN))
placed=0 wfail=0
while ((SECONDS - t0 < BACKOFF_BOUND_S)); do
	if ! "$DATAGEN" write "$M/probe" "$S" 41 >/dev/null 2>&1; then
		wfail=$((wfail + 1))
	elif stripes_placed "$(ino_of "$M/probe")" 1 >/dev/null; then
		placed=1
		break
	fi
	sleep 1
done
waited=$((SECONDS - t0))
if ((!placed)); then
	fail "servers back: new stripes still lack fragments after ${BACKOFF_BOUND_S}s"
elif ((waited > OUTAGE + 6)); then
	fail "servers back: a new stripe has k+m fragments only after $waited s, for an outage of $OUTAGE s (back-off grown beyond its failed probes; $wfail writes failed with all servers up meanwhile)"
else
	ok "servers back: a new stripe has k+m fragments after $waited s (outage $OUTAGE s)"
fi
FSIZE=$((3 * S + 99))
check "write f with all servers back" "$DATAGEN" write "$M/f" "$FSIZE" 42
out=$(stripes_placed "$(ino_of "$M/f")" 4) && ok "f: every stripe has k+m fragments on distinct servers" ||
	fail "f: placement after the servers came back: $out"
remount
verify_rc 0 "f reads back identical" "$M/f" "$FSIZE" 42
verify_rc 0 "b reads back identical (end)" "$M/b" "$BSIZE" 21
verify_rc 0 "d reads back identical (end)" "$M/d" "$DSIZE" 22
verify_rc 0 "a reads back identical (end)" "$M/a" "$ASIZE" 11

lib_finish
