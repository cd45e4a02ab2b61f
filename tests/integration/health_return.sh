#!/usr/bin/env bash
# health_return: a block server that answers again is back in use within seconds, however
# long it was away. Server 0 is stopped while files keep being written for 12 s (stripes go
# degraded, and a back-off that doubles would by now keep it out for 8 s or more); it starts
# again, and a file written 3 s later has every fragment of every stripe: it reads back with
# two other servers down, which needs server 0's fragments. The daemon's log says, at the
# default level, that server 0 went down, that degraded stripes were stored, and that the
# server came back. Then the healer rebuilds, with no command given, what server 0 missed:
# the files written while it was away read back with two other servers down too.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

lib_init
lib_up --servers 6 --k 4 --m 2
S=$LIB_STRIPE
LOG=$LIB_WORK/tesserafs.log

write_file before $((2 * S)) 801
check "stop server 0" lib_local stop-server 0
t_end=$((SECONDS + 12))
n=0
while ((SECONDS < t_end)); do
	n=$((n + 1))
	"$DATAGEN" write "$TESSERA_MNT/during.$n" "$S" $((900 + n)) ||
		fail "write during.$n with server 0 down"
	sync -f "$TESSERA_MNT"
	sleep 0.5
done
ok "$n files written while server 0 was down"
"$TESSERA_BUILD/tessera" status "$TESSERA_MNT" >"$LIB_WORK/status.down" 2>&1
check_down() { grep -Eq "^0 .*down for [0-9]+ s \(Connection refused\)" "$LIB_WORK/status.down"; }
check "tessera status shows the daemon's view: server 0 down, and why" check_down
check "start server 0" lib_local start-server 0
sleep 3
"$TESSERA_BUILD/tessera" status "$TESSERA_MNT" >"$LIB_WORK/status.up" 2>&1
check "... and server 0 up again 3 s after its start" grep -Eq "^0 .*up for [0-9]+ s" "$LIB_WORK/status.up"
write_file after $((6 * S)) 803
check "fsync of the file written after the return" sync -f "$TESSERA_MNT"

check "the daemon warned that server 0 went down" grep -q "server 0 (.*) is down" "$LOG"
check "... that it stored degraded stripes" grep -q "stored with 5 of 6 fragments" "$LOG"
check "... and that server 0 answers again" grep -q "server 0 (.*) answers again" "$LOG"

# The healer rebuilds what server 0 missed, with no command given: within 60 s a dry-run
# scrub of the mount finds nothing to repair.
healed() {
	local i
	for ((i = 0; i < 60; i++)); do
		"$TESSERA_BUILD/tessera-scrub" -n --json "$TESSERA_MNT" >"$LIB_WORK/heal.json" \
			2>"$LIB_WORK/heal.err" && return 0
		sleep 1
	done
	return 1
}
lib_time_ms healed
check "the healer rebuilt every degraded stripe within 60 s (${LIB_MS} ms; tessera-scrub -n exits 0)" \
	test "$LIB_RC" -eq 0
check "... and the daemon logged it" grep -q "healer: .* fragments rebuilt" "$LOG"

# Two other servers down: every stripe needs all four fragments that are left, server 0's
# among them: those of 'after' (stored whole) and those of 'during.*' (rebuilt by the healer).
check "stop server 1" lib_local stop-server 1
check "stop server 2" lib_local stop-server 2
remount
check "'after' reads back whole with servers 1 and 2 down" \
	"$DATAGEN" verify "$TESSERA_MNT/after" $((6 * S)) 803
for ((i = 1; i <= n; i++)); do
	"$DATAGEN" verify "$TESSERA_MNT/during.$i" "$S" $((900 + i)) ||
		fail "during.$i (written while server 0 was down) with servers 1 and 2 down"
done
ok "the $n files written while server 0 was down read back with servers 1 and 2 down"

lib_finish
