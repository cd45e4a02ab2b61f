#!/usr/bin/env bash
# meta_restore: the metadata machine is lost; the metadata comes back from the servers alone.
#
# Through a mount of 6 servers (k=4 m=2) the test writes fsynced files (inline, one stripe,
# several), makes unsynced changes of every kind (files, mkdir, symlink, hard link, xattr,
# rename, unlink) and waits 2 s (journal_interval 1 s plus 1 s), then runs crashload (fsynced
# files logged outside the mount, and random namespace churn) and SIGKILLs tesserafs while it
# runs. META_DIR is deleted. `tessera meta restore` rebuilds it from the servers:
#   - with every server up; again with m=2 servers stopped; again with the journal objects of 2
#     servers corrupted: the same position each time;
#   - with the newest segment corrupt on every server: it stops earlier and says where;
# then the first restore is mounted: every fsynced file is identical, every unsynced change
# older than the interval is there, crashload's check passes, tessera-scrub -n finds nothing.
# Last, a consistent copy of the old metadata (tessera meta backup, made before the kill) is
# refused once the restored filesystem has written a later epoch, and -o takeover mounts it.
LIB_TIMEOUT=400
. "$(dirname "$0")/lib.sh"

CL="$TESSERA_BUILD/tests/crashload"
ADMIN="$TESSERA_BUILD/tessera"
lib_require "$CL" "$ADMIN" "$TESSERA_BUILD/tessera-scrub"

lib_init
lib_up
M=$TESSERA_MNT
META=$LIB_WORK/meta

# ---------------------------------------------------------------- a. the workload
write_file f/empty 0 1
write_file f/inline 3000 3
write_file f/one 100000 4
write_file f/multi 9000000 5
write_file f/deep/a/b/c 70000 6

# Unsynced changes, older than the interval when the daemon dies.
mkdir -p "$M/u/dir/sub"
for i in 1 2 3; do
	"$DATAGEN" write "$LIB_WORK/src.$i" $((i * 40000)) $((100 + i)) >/dev/null
	cp "$LIB_WORK/src.$i" "$M/u/c$i"
done
echo "a small one" >"$M/u/tiny"
ln -s ../f/one "$M/u/link"
ln "$M/u/c1" "$M/u/c1.hard"
setfattr -n user.colour -v blue "$M/u/c2"
mv "$M/u/c3" "$M/u/dir/sub/c3.moved"
echo "gone soon" >"$M/u/removed"
rm "$M/u/removed"
check "tessera meta backup while mounted" "$ADMIN" meta backup "$M" "$LIB_WORK/old-copy"
(cd "$M/u" && find . -printf '%p %y %s %n\n' | sort) >"$LIB_WORK/u.before"
sleep 2

CLDIR=$M/crash
CLLOG=$LIB_WORK/durable.log
mkdir -p "$CLDIR"
"$CL" run "$CLDIR" "$CLLOG" 777 >"$LIB_WORK/crashload.log" 2>&1 &
cl_pid=$!
lib_track_pid "$cl_pid"
sleep 3
kill -0 "$cl_pid" 2>/dev/null || fail "crashload ended early: $(tail -n 2 "$LIB_WORK/crashload.log")"
check "SIGKILL tesserafs while crashload runs" kill -KILL "$TESSERA_FS_PID"
for _ in $(seq 50); do kill -0 "$cl_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$cl_pid" 2>/dev/null
wait "$cl_pid" 2>/dev/null
lib_untrack_pid "$cl_pid"
diag "crashload made $(wc -l <"$CLLOG") files durable before the kill"
check "unmount after the SIGKILL" lib_local unmount
rm -rf "$META"
check "META_DIR deleted" test ! -e "$META"

# ---------------------------------------------------------------- b. restores
SERVERS=()
for u in $TESSERA_SERVERS; do SERVERS+=(--server "$u"); done
# restore DIR: runs tessera meta restore into DIR; its output in $LIB_WORK/restore.out
restore() {
	"$ADMIN" meta restore "${SERVERS[@]}" --credentials "$LIB_WORK/credentials" "$1" \
		>"$LIB_WORK/restore.out" 2>&1
}
position() { grep '^position:' "$LIB_WORK/restore.out"; }
# restore_ok DESC DIR: one check, the tool's output shown when it fails
restore_ok() {
	if restore "$2"; then
		ok "$1"
	else
		fail "$1: exit $?"
		lib_show "$(cat "$LIB_WORK/restore.out")"
	fi
}

restore_ok "restore with every server up" "$LIB_WORK/r1"
P1=$(position)
[[ -n $P1 ]] && ok "it prints the restored position ($P1)" || fail "no position printed"
[[ -f $LIB_WORK/r1/credentials ]] && ok "the credentials were copied in" ||
	fail "no credentials file in the restored directory"
check "restoring into an existing directory is refused" eval '! restore "$LIB_WORK/r1"'
grep -q "exists" "$LIB_WORK/restore.out" && ok "  ... saying why" ||
	fail "  ... without saying why: $(head -c 200 "$LIB_WORK/restore.out")"

check "stop server 0" lib_local stop-server 0
check "stop server 3" lib_local stop-server 3
restore_ok "restore with 2 servers stopped" "$LIB_WORK/r2"
[[ $(position) == "$P1" ]] && ok "same position with 2 servers down" ||
	fail "position with 2 servers down: '$(position)', want '$P1'"
check "start server 0" lib_local start-server 0
check "start server 3" lib_local start-server 3

# Every journal object of servers 1 and 2 damaged: a byte flipped in the middle.
jobjs() { find "$LIB_WORK/servers/$1/data/objects" -path '*/journal/*' -type f; }
flip() {
	local f=$1 size off
	size=$(stat -c %s "$f")
	off=$((size / 2))
	printf '\x5a' | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}
for s in 1 2; do
	cp -a "$LIB_WORK/servers/$s/data/objects" "$LIB_WORK/objects.$s.saved"
	while read -r f; do flip "$f"; done < <(jobjs "$s")
done
restore_ok "restore with the journal of 2 servers corrupt" "$LIB_WORK/r3"
[[ $(position) == "$P1" ]] && ok "same position with 2 servers' journal corrupt" ||
	fail "position with 2 corrupt: '$(position)', want '$P1'"
for s in 1 2; do
	rm -rf "$LIB_WORK/servers/$s/data/objects"
	mv "$LIB_WORK/objects.$s.saved" "$LIB_WORK/servers/$s/data/objects"
done

# The newest segment corrupt on every server that holds it: the restore stops before it.
last=$(for s in 0 1 2 3 4 5; do jobjs "$s"; done | grep '/seg-' | sed 's|.*/seg-||' | sort | tail -n 1)
for s in 0 1 2 3 4 5; do
	while read -r f; do
		cp "$f" "$f.saved"
		flip "$f"
	done < <(jobjs "$s" | grep "/seg-$last\$")
done
restore_ok "restore with the newest segment corrupt everywhere" "$LIB_WORK/r4"
P4=$(position)
if [[ $P4 != "$P1" ]] && grep -q '^stopped early:' "$LIB_WORK/restore.out"; then
	ok "it stops earlier ($P4) and says why: $(grep '^stopped early:' "$LIB_WORK/restore.out" | head -c 150)"
else
	fail "with the newest segment corrupt: '$P4' (full: '$P1'): $(head -c 300 "$LIB_WORK/restore.out")"
fi
for s in 0 1 2 3 4 5; do
	while read -r f; do mv "$f" "${f%.saved}"; done < <(find "$LIB_WORK/servers/$s/data/objects" -name '*.saved')
done
# What the kill left open and unlinked is an orphan (nlink 0, no name) until a mount purges it;
# nothing else may be wrong, also where the restore stopped early.
ns_only_orphans() {
	"$TESSERA_BUILD/tessera-scrub" -n "$1" >"$LIB_WORK/scrub.out" 2>&1
	local rc=$? other
	other=$(grep -E '^(namespace: |NOT REPAIRED|LOST)' "$LIB_WORK/scrub.out" |
		grep -vE '^namespace: ([0-9]+ problems|orphan inode [0-9]+ \(no entry, nlink 0\))')
	if ((rc == 0 || rc == 4)) && [[ -z $other ]]; then
		ok "$2: tessera-scrub -n exit $rc, only orphans the mount purges ($(grep -c 'orphan inode' "$LIB_WORK/scrub.out"))"
	else
		fail "$2: tessera-scrub -n exit $rc: $(head -c 400 <<<"$other")"
	fi
}
ns_only_orphans "$LIB_WORK/r4" "the early-stopped restore"

# ---------------------------------------------------------------- c. mount the restore
mv "$LIB_WORK/r1" "$META"
ns_only_orphans "$META" "the restored metadata"
check "mount the restored metadata" lib_local mount
M=$TESSERA_MNT
verify_all "restored"
(cd "$M/u" && find . -printf '%p %y %s %n\n' | sort) >"$LIB_WORK/u.after"
if diff "$LIB_WORK/u.before" "$LIB_WORK/u.after" >"$LIB_WORK/u.diff"; then
	ok "every unsynced change older than the interval is there"
else
	fail "unsynced changes lost: $(head -c 400 "$LIB_WORK/u.diff")"
fi
for i in 1 2 3; do
	f=$M/u/c$i
	((i == 3)) && f=$M/u/dir/sub/c3.moved
	check "unsynced copy $i identical" cmp "$LIB_WORK/src.$i" "$f"
done
check "the xattr is back" eval '[[ $(getfattr --only-values -n user.colour "$M/u/c2") == blue ]]'
check "the symlink is back" eval '[[ $(readlink "$M/u/link") == ../f/one ]]'
check "crashload check on the restored tree" "$CL" check "$CLDIR" "$CLLOG"
diag "$(grep 'journal: epoch' "$TESSERA_FS_LOG" | tail -n 1)"
write_file after/restore 200000 9
check "unmount" lib_local unmount
check "tessera-scrub -n after the first mount of the restore" "$TESSERA_BUILD/tessera-scrub" -n "$META"

# ---------------------------------------------------------------- d. the old copy
mv "$META" "$LIB_WORK/restored"
mv "$LIB_WORK/old-copy" "$META"
check "the old copy is refused (a later epoch wrote the journal)" eval '! lib_local mount'
grep -q "old copy" "$TESSERA_FS_LOG" && ok "  ... saying it is an old copy" ||
	fail "  ... without saying why: $(tail -n 3 "$TESSERA_FS_LOG")"
# With -o takeover it mounts and catches up: the later epoch's records are applied to it.
TESSERA_FS_OPTS=takeover check "-o takeover mounts the old copy" lib_local mount
M=$TESSERA_MNT
verify_all "old copy taken over"
check "the unsynced changes are there too" test -f "$M/u/dir/sub/c3.moved"
check "unmount" lib_local unmount
rm -rf "$META"
mv "$LIB_WORK/restored" "$META"
check "the restored metadata is refused now (the copy took over in a later epoch)" \
	eval '! lib_local mount'
lib_finish
