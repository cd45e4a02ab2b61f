#!/usr/bin/env bash
# posix_crash: SIGKILL the daemon at random points of a namespace workload (issue 6).
#
# Each round runs tests/helpers/crashload (creates, writes, truncates, renames of files and
# directories, RENAME_EXCHANGE, hard links, unlinks, files unlinked while open, and files
# made durable with fsync or with write + fsync + rename + fsync of the directory, logged
# outside the mount only after that returned), SIGKILLs tesserafs after a random delay,
# remounts, and checks with `crashload check`: every entry points to a live inode and reads
# to its end, st_nlink equals the number of names, directories have 2 + subdirectories links
# and the right "..", no directory is lost or reached twice, and every logged file is there
# with its bytes. Then, on the unmounted metadata, `tessera-scrub -n` must find nothing
# (namespace, link counts, orphans, stripe maps) and the orphans a crash left must have been
# removed by the mount. Seed: TESSERA_SEED (printed).
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

CL="$TESSERA_BUILD/tests/crashload"
SCRUB="$TESSERA_BUILD/tessera-scrub"
for p in "$CL" "$SCRUB"; do
	[[ -x $p ]] || { echo "not ok - missing $p" >&2; exit 1; }
done
ROUNDS=${POSIX_CRASH_ROUNDS:-5}
SEED=${TESSERA_SEED:-$(( (RANDOM << 15) | RANDOM ))}
RANDOM=$SEED

lib_init
diag "seed $SEED (TESSERA_SEED=$SEED reproduces the kill times and workloads)"
lib_up --servers 3 --k 2 --m 1
DIR=$TESSERA_MNT/crash
LOG=$LIB_WORK/durable.log
mkdir -p "$DIR"

# tessera-scrub -n on the unmounted metadata finds nothing (exit 0).
scrub_clean() {
	local out rc
	lib_local unmount >/dev/null || { echo "unmount failed"; return 1; }
	out=$("$SCRUB" -n "$TESSERA_META" 2>&1)
	rc=$?
	lib_local mount >/dev/null || { echo "mount failed"; return 1; }
	((rc == 0)) && return 0
	printf '%s\n' "$out" | tail -n 20
	return 1
}

pid_alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

for round in $(seq 1 "$ROUNDS"); do
	wseed=$(( (SEED + round) * 2654435761 % 4294967296 ))
	delay_ms=$(( 700 + RANDOM % 2800 ))
	"$CL" run "$DIR" "$LOG" "$wseed" >"$LIB_WORK/crashload.$round.log" 2>&1 &
	cl_pid=$!
	sleep "$(awk -v ms="$delay_ms" 'BEGIN { printf "%.3f", ms / 1000 }')"
	pid_alive "$TESSERA_FS_PID" || bail "round $round: tesserafs (pid $TESSERA_FS_PID) is not running"
	if ! kill -0 "$cl_pid" 2>/dev/null; then
		wait "$cl_pid"
		fail "round $round: crashload stopped before the kill (exit $?)"
		sed 's/^/#   /' "$LIB_WORK/crashload.$round.log" | head -n 5
	fi
	kill -KILL "$TESSERA_FS_PID" 2>/dev/null
	# crashload stops on ENOTCONN; a request stuck in the dead connection cannot hold it
	for _ in $(seq 50); do kill -0 "$cl_pid" 2>/dev/null || break; sleep 0.1; done
	kill -KILL "$cl_pid" 2>/dev/null
	wait "$cl_pid"
	cl_rc=$?
	((cl_rc == 0)) ||
		fail "round $round: crashload exit $cl_rc: $(tail -n 2 "$LIB_WORK/crashload.$round.log")"
	lib_local remount >/dev/null || bail "round $round: remount after SIGKILL failed"
	durable=$(wc -l <"$LOG")
	check "round $round (kill after $delay_ms ms): namespace consistent, $durable fsynced files intact" \
		"$CL" check "$DIR" "$LOG"
	check "round $round: tessera-scrub -n on the unmounted metadata finds nothing" scrub_clean
	lib_load_env # check ran scrub_clean in a subshell: the daemon's pid is new
	mountpoint -q "$TESSERA_MNT" || bail "round $round: not mounted after the scrub"
done
check "orphans left by the crashes were removed at mount" \
	grep -q 'removed [0-9]* orphan inode' "$TESSERA_FS_LOG"

lib_finish
