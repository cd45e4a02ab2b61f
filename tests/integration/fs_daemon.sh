#!/usr/bin/env bash
# fs_daemon: the daemon's life cycle as mount(8) and fstab drive it.
#  - detached (no -f): the start reports failures on the terminal with a non-zero status, and
#    after umount the daemon's process is gone within seconds;
#  - umount followed at once by a new mount, 20 times: every mount succeeds, every file is
#    there, no daemon is left behind;
#  - a META_DIR that is mounted is refused, naming the mount point;
#  - in the foreground, the process exits after umount;
#  - -o log=FILE when detached: the log reaches FILE and moves to a new FILE on SIGHUP.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"
lib_init
lib_up --servers 6 --k 4 --m 2
lib_local unmount >/dev/null || bail "tessera-local unmount failed"

FS="$TESSERA_BUILD/tesserafs"
MNT="$LIB_WORK/mnt2"
mkdir -p "$MNT"
PIDS=()

# The PIDs of processes whose whole command line is exactly the arguments given.
pids_of() {
	local want p
	want=$(printf '%s\0' "$@" | od -An -c | tr -s ' \n' ' ')
	for p in /proc/[0-9]*; do
		[[ -r $p/cmdline ]] || continue
		if [[ $(od -An -c <"$p/cmdline" 2>/dev/null | tr -s ' \n' ' ') == "$want" ]]; then
			echo "${p#/proc/}"
		fi
	done
}

mounted() {
	awk -v m="$MNT" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# gone PID SECONDS: true once PID has exited (or was never there).
gone() {
	local pid=$1 i
	for ((i = 0; i < $2 * 10; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

cleanup_mnt() {
	if mounted; then
		fusermount3 -u "$MNT" 2>/dev/null || fusermount3 -uz "$MNT" 2>/dev/null
	fi
	local p
	for p in "${PIDS[@]}"; do
		if kill -0 "$p" 2>/dev/null; then
			kill -KILL "$p" 2>/dev/null
		fi
	done
	return 0
}
lib_at_exit cleanup_mnt

# ---- detached start and exit
out=$("$FS" "$TESSERA_META" "$MNT" 2>&1)
rc=$?
if ((rc == 0)) && mounted; then
	ok "detached mount returns 0 once mounted"
else
	bail "detached mount: exit $rc, mounted: $(mounted && echo yes || echo no): $out"
fi
mapfile -t found < <(pids_of "$FS" "$TESSERA_META" "$MNT")
((${#found[@]} == 1)) || bail "expected one daemon process, found ${#found[@]}: ${found[*]}"
pid=${found[0]}
PIDS+=("$pid")
"$DATAGEN" write "$MNT/first" 3M 11 || fail "write through the detached daemon"

out=$("$FS" "$TESSERA_META" "$LIB_WORK" 2>&1)
rc=$?
if ((rc != 0)) && grep -q "already mounted on '$MNT'" <<<"$out"; then
	ok "a second mount of a mounted META_DIR is refused, naming the mount point"
else
	fail "second mount: exit $rc: $out"
	fusermount3 -u "$LIB_WORK" 2>/dev/null
fi

umount "$MNT" || fail "umount"
if gone "$pid" 10; then
	ok "the detached daemon (pid $pid) exits after umount"
else
	fail "the detached daemon (pid $pid) is still running 10 s after umount"
	grep -E '^(State|Threads)' "/proc/$pid/status" | sed 's/^/#   /'
fi

# ---- umount, then mount at once, 20 times
fails=0
for ((i = 1; i <= 20; i++)); do
	out=$("$FS" "$TESSERA_META" "$MNT" 2>&1)
	rc=$?
	if ((rc != 0)) || ! mounted; then
		fails=$((fails + 1))
		diag "round $i: mount exit $rc: $out"
		continue
	fi
	mapfile -t found < <(pids_of "$FS" "$TESSERA_META" "$MNT")
	PIDS+=("${found[@]}")
	if ! "$DATAGEN" verify "$MNT/first" 3M 11 >/dev/null 2>&1 ||
		! echo "round $i" >"$MNT/round-$i"; then
		fails=$((fails + 1))
		diag "round $i: the files are not right"
	fi
	umount "$MNT" || { fails=$((fails + 1)); diag "round $i: umount failed"; }
done
if ((fails == 0)); then
	ok "20 rounds of umount followed at once by mount"
else
	fail "$fails of 20 rounds of umount and mount failed"
fi
left=0
sleep 5
for p in "${PIDS[@]}"; do
	gone "$p" 1 || { left=$((left + 1)); diag "pid $p still running"; }
done
if ((left == 0)); then
	ok "no daemon left behind after ${#PIDS[@]} mounts"
else
	fail "$left daemons left behind"
fi

# ---- foreground
"$FS" -f "$TESSERA_META" "$MNT" >"$LIB_WORK/fg.log" 2>&1 &
fgpid=$!
PIDS+=("$fgpid")
for ((i = 0; i < 100; i++)); do
	mounted && break
	kill -0 "$fgpid" 2>/dev/null || break
	sleep 0.1
done
if mounted && [[ $(cat "$MNT/round-20" 2>/dev/null) == "round 20" ]]; then
	ok "foreground mount sees every round's file"
else
	fail "foreground mount: $(tail -n 5 "$LIB_WORK/fg.log")"
fi
umount "$MNT" 2>/dev/null
if gone "$fgpid" 10 && wait "$fgpid"; then
	ok "the foreground daemon exits 0 after umount"
else
	fail "the foreground daemon did not exit cleanly after umount"
fi

# ---- -o log=FILE, detached, reopened on SIGHUP
LOG="$LIB_WORK/daemon.log"
if "$FS" -o "log=$LOG" "$TESSERA_META" "$MNT" && mounted; then
	mapfile -t found < <(pids_of "$FS" -o "log=$LOG" "$TESSERA_META" "$MNT")
	PIDS+=("${found[@]}")
	if grep -q "mounted '$TESSERA_META' on '$MNT'" "$LOG" 2>/dev/null; then
		ok "detached with -o log=FILE, the log reaches FILE"
	else
		fail "no 'mounted' line in $LOG: $(tail -n 3 "$LOG" 2>/dev/null)"
	fi
	mv "$LOG" "$LOG.1"
	((${#found[@]} == 1)) && kill -HUP "${found[0]}"
	sleep 0.5
	umount "$MNT"
	for p in "${found[@]}"; do gone "$p" 10; done
	if grep -q "unmounted '$TESSERA_META'" "$LOG" 2>/dev/null &&
		! grep -q "unmounted" "$LOG.1"; then
		ok "after SIGHUP the daemon logs to a new FILE"
	else
		fail "SIGHUP did not reopen the log: new: $(tail -n 2 "$LOG" 2>/dev/null) old: $(tail -n 2 "$LOG.1")"
	fi
else
	fail "detached mount with -o log=FILE failed"
fi

# ---- a failed detached start is reported with a non-zero status
mkdir -p "$LIB_WORK/empty"
out=$("$FS" "$LIB_WORK/empty" "$MNT" 2>&1)
rc=$?
if ((rc != 0)) && grep -q "holds no tesserafs filesystem" <<<"$out" && ! mounted; then
	ok "a detached start that fails says why on the terminal and exits $rc"
else
	fail "failed detached start: exit $rc, output: $out"
fi

lib_finish
