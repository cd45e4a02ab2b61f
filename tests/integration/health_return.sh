#!/usr/bin/env bash
# health_return: a block server that answers again is back in use within seconds, however
# long it was away. Server 0 is stopped while files keep being written for 12 s (stripes go
# degraded, and a back-off that doubles would by now keep it out for 8 s or more); it starts
# again, and a file written 3 s later has every fragment of every stripe: it reads back with
# two other servers down, which needs server 0's fragments. The daemon's log says, at the
# default level, that server 0 went down, that degraded stripes were stored, and that the
# server came back.
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

# Two other servers down: the stripes of 'after' need all four fragments that are left,
# server 0's among them.
check "stop server 1" lib_local stop-server 1
check "stop server 2" lib_local stop-server 2
remount
check "'after' reads back whole with servers 1 and 2 down" \
	"$DATAGEN" verify "$TESSERA_MNT/after" $((6 * S)) 803

lib_finish
