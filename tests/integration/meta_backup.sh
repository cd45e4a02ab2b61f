#!/usr/bin/env bash
# meta_backup: `tessera meta backup` (tools/tessera.c, meta_backup()) makes a mountable copy of
# the metadata, from a mounted filesystem (through the daemon's control socket) and from an
# unmounted one; the copy holds the namespace of its moment (files, directories, symlinks,
# xattrs, inline data) and reads the same bytes; what came later is not in it; a destination
# that exists, or whose parent does not, is refused and nothing is written.
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

ADMIN="$TESSERA_BUILD/tessera"
SCRUB="$TESSERA_BUILD/tessera-scrub"

lib_init
lib_up
[[ -x $ADMIN ]] || bail "missing $ADMIN"

M=$TESSERA_MNT
S=$LIB_STRIPE
check "write small (inline)" "$DATAGEN" write "$M/small" 1000 801
check "write big" "$DATAGEN" write "$M/big" $((3 * S + 7)) 802
mkdir -p "$M/d/e" && ln -s ../big "$M/d/link" && setfattr -n user.k -v v1 "$M/big" &&
	ok "directories, symlink, xattr" || fail "directories, symlink, xattr"

BK1="$LIB_WORK/bk1"
check_rc 0 "backup of the mounted filesystem" "$ADMIN" meta backup "$M" "$BK1"
[[ -f $BK1/CURRENT && -s $BK1/credentials ]] && ok "the backup holds a database and the key" ||
	fail "backup contents: $(ls "$BK1" 2>&1 | tr '\n' ' ')"
[[ $(stat -c %a "$BK1/credentials" 2>/dev/null) == 600 ]] && ok "the key file is 0600" ||
	fail "key file mode $(stat -c %a "$BK1/credentials" 2>&1)"
check_rc 1 "an existing destination is refused" "$ADMIN" meta backup "$M" "$BK1"
check_rc 1 "a destination without a parent is refused" "$ADMIN" meta backup "$M" "$LIB_WORK/no/such"
[[ ! -e $LIB_WORK/no ]] && ok "nothing written for the refused one" || fail "'$LIB_WORK/no' appeared"
check_rc 2 "a bad command is a usage error" "$ADMIN" meta restore "$M" "$LIB_WORK/x"
ls -d "$LIB_WORK"/*.partial-* >/dev/null 2>&1 && fail "a temporary directory was left" ||
	ok "no temporary directory left"

# after the backup: a new file, a changed xattr, a removed directory
check "write later" "$DATAGEN" write "$M/later" $((S + 1)) 803
setfattr -n user.k -v v2 "$M/big" && rmdir "$M/d/e" && ok "changes after the backup" ||
	fail "changes after the backup"
check "unmount" lib_local unmount

BK2="$LIB_WORK/bk2"
check_rc 0 "backup of the unmounted filesystem" "$ADMIN" meta backup "$TESSERA_META" "$BK2"

# mount the first backup (the original stays unmounted: never both at once) as it is: with the
# journal on, a mount catches up with the journal (the backup would come back up to date, and
# take the filesystem over from the original); -o journal=0 shows the backed-up moment.
M2="$LIB_WORK/mnt2"
mkdir -p "$M2"
"$TESSERA_BUILD/tesserafs" -f -o request_timeout=5,journal=0 "$BK1" "$M2" >"$LIB_WORK/bk1.log" 2>&1 &
BK_PID=$!
lib_at_exit "mountpoint -q '$M2' && { fusermount3 -u '$M2' || fusermount3 -uz '$M2'; }; kill $BK_PID 2>/dev/null; true"
for _ in $(seq 100); do mountpoint -q "$M2" && break; sleep 0.1; done
if mountpoint -q "$M2"; then
	ok "the backup mounts"
	check "small as backed up" "$DATAGEN" verify "$M2/small" 1000 801
	check "big as backed up" "$DATAGEN" verify "$M2/big" $((3 * S + 7)) 802
	[[ $(getfattr --only-values -n user.k "$M2/big" 2>/dev/null) == v1 ]] &&
		ok "xattr as backed up" || fail "xattr: $(getfattr -n user.k "$M2/big" 2>&1)"
	[[ -d $M2/d/e && $(readlink "$M2/d/link") == ../big ]] && ok "directories and symlink" ||
		fail "namespace of the backup"
	[[ ! -e $M2/later ]] && ok "a later file is not in the backup" || fail "later is in the backup"
	fusermount3 -u "$M2" || fusermount3 -uz "$M2"
	for _ in $(seq 100); do kill -0 "$BK_PID" 2>/dev/null || break; sleep 0.1; done
	! kill -0 "$BK_PID" 2>/dev/null && ok "backup mount stopped" || fail "tesserafs $BK_PID still runs"
else
	fail "the backup did not mount: $(tail -5 "$LIB_WORK/bk1.log")"
fi
check_rc 0 "the backup scrubs clean (nothing was overwritten since)" "$SCRUB" -n "$BK1"

# the second backup and the original have the later state
check "mount the original" lib_local mount
M=$TESSERA_MNT
check "later in the original" "$DATAGEN" verify "$M/later" $((S + 1)) 803
[[ ! -e $M/d/e ]] && ok "the removal stayed" || fail "d/e came back"
lib_finish
