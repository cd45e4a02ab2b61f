#!/usr/bin/env bash
# powerloss_helper: the model of the power-loss helper (tests/helpers/powerloss.c) itself,
# with coreutils as the application: `sync FILE` is fsync(2) of a file or a directory,
# `sync -d FILE` fdatasync(2).
#
# Files that exist in the backing directory before the mount are durable. Through the mount,
# the test then writes, truncates, creates, renames and removes, syncing some of it; reads
# through the mount must see every change (dirty data merged over the backing file, compared
# with the same operations on an ordinary file). After the power loss: a write without fsync
# is gone, with fsync it stays; a new file fsynced in a directory that was not is gone, with
# the directory fsynced too it stays; unsynced renames (also one that replaced a file), an
# unsynced unlink, rmdir, mkdir, hard link and symlink are undone; a file's rename is two
# changes, each durable with the fsync of its own directory (only the target synced: both
# names stay; only the source: neither), a directory's rename one change that needs both;
# requests fail with EIO. After the unmount the backing directory holds exactly the synced
# state (no graveyard left) and a new mount over it shows the same.
LIB_TIMEOUT=120
. "$(dirname "$0")/lib.sh"

lib_require "$POWERLOSS"
lib_init
B=$LIB_WORK/backing
M=$LIB_WORK/mnt
REF=$LIB_WORK/ref
mkdir -p "$B/sub" "$B/sub2" "$B/a" "$B/b" "$B/c" "$B/d" "$B/e" "$B/gone" "$B/dsrc/movedir" "$B/ddst" "$REF"

# The durable state before the mount: files with known content.
for f in old1 old2 old3 old4 old5 old6 old7 a/keep d/srconly; do
	"$DATAGEN" write "$B/$f" 20000 "${#f}$RANDOM" >/dev/null || bail "datagen write $f"
	cp "$B/$f" "$REF/$(basename "$f").orig"
done
pl_mount "$B" "$M" "$LIB_WORK/powerloss.1.log"
ok "powerloss mounted over the backing directory"

# ---- file data: dirty pages merged over the backing file
# The same writes, truncations and extensions on an ordinary copy and through the mount.
cp "$B/old7" "$REF/old7"
edit() { # edit FILE: writes inside, past the end, truncates down, extends, writes again
	printf 'middle' | dd of="$1" bs=1 seek=5000 conv=notrunc status=none &&
		head -c 10000 /dev/zero | tr '\0' 'x' | dd of="$1" bs=1 seek=15000 conv=notrunc status=none &&
		truncate -s 12345 "$1" && truncate -s 40000 "$1" &&
		printf 'tail' | dd of="$1" bs=1 seek=39000 conv=notrunc status=none &&
		truncate -s 8195 "$1" && truncate -s 9000 "$1"
}
check "edits through the mount (write, extend, truncate, extend)" edit "$M/old7"
edit "$REF/old7"
check "the mount reads what an ordinary file holds after the same edits" cmp "$M/old7" "$REF/old7"
check "stat through the mount shows the pending size" test "$(stat -c %s "$M/old7")" = 9000
check "the backing file is untouched before fsync" cmp "$B/old7" "$REF/old7.orig"

printf 'one' >>"$M/appended"
printf 'two' >>"$M/appended"
check "appends land at the pending end of the file" eval '[[ $(cat "$M/appended") == onetwo ]]'

# ---- writes with and without fsync
printf 'unsynced data' | dd of="$M/old1" conv=notrunc status=none
check "an unsynced write reads back through the mount" \
	eval '[[ $(head -c 13 "$M/old1") == "unsynced data" ]]'
printf 'synced data' | dd of="$M/old2" conv=notrunc status=none
check "fsync of a written file succeeds" sync "$M/old2"
check "after fsync the backing file has the data" eval '[[ $(head -c 11 "$B/old2") == "synced data" ]]'
head -c 11 "$M/old2" >"$REF/old2.head"
truncate -s 0 "$M/old6"
check "an unsynced truncation is seen through the mount" test "$(stat -c %s "$M/old6")" = 0

# ---- new files and their directories
"$DATAGEN" write "$M/new-nodirsync" 5000 11 >/dev/null
check "fsync of a new file (its directory not synced)" sync "$M/new-nodirsync"
"$DATAGEN" write "$M/sub/new-dirsync" 70000 12 >/dev/null
check "fdatasync of a new file" sync -d "$M/sub/new-dirsync"
check "fsync of its directory" sync "$M/sub"
"$DATAGEN" write "$M/sub2/new-unsynced" 3000 13 >/dev/null
mkdir "$M/newdir"
"$DATAGEN" write "$M/newdir/f" 3000 14 >/dev/null
check "fsync of a file and of the new directory it is in (the parent not synced)" \
	sync "$M/newdir/f" "$M/newdir"

# ---- renames and removals
mv "$M/old3" "$M/sub2/old3-moved"
mv "$M/old4" "$M/old5" # replaces old5
rm "$M/old6"
rmdir "$M/gone"
ln "$M/old1" "$M/sub2/hardlink"
ln -s old1 "$M/sub2/symlink"
check "an unsynced hard link counts as a link" test "$(stat -c %h "$M/old1")" = 2
check "unsynced rename, replacing rename, unlink and rmdir are seen through the mount" eval \
	'[[ -f $M/sub2/old3-moved && ! -e $M/old3 && ! -e $M/old4 && ! -e $M/old6 && ! -e $M/gone ]] &&
	 cmp -s "$M/old5" "$REF/old4.orig"'
check "the graveyard is not visible in the mount" eval '[[ $(ls -A "$M" | grep -c graveyard) == 0 ]]'
check "a replaced file's link count is 1 (its graveyard link is not counted)" \
	test "$(stat -c %h "$M/old5")" = 1
# A rename made durable by syncing both directories, then one with only its target synced
# (the file keeps both names), and one with only its source synced (it keeps neither).
mv "$M/a/keep" "$M/b/keep-moved"
check "fsync of both directories of a rename" sync "$M/a" "$M/b"
mv "$M/b/keep-moved" "$M/c/kept-half"
check "fsync of only the target directory of another rename" sync "$M/c"
mv "$M/d/srconly" "$M/e/srconly"
check "fsync of only the source directory of a rename" sync "$M/d"
# A directory's rename is one change: with only its target synced it is undone.
mv "$M/dsrc/movedir" "$M/ddst/movedir"
check "fsync of only the target directory of a directory's rename" sync "$M/ddst"

# ---- the power loss
check "power loss" pl_power_loss
check_rc 1 "stat after the power loss fails" stat "$M/old2"
check "it fails with EIO" eval \
	'! stat "$M/old2" 2>"$LIB_WORK/err" >/dev/null && grep -q "Input/output error" "$LIB_WORK/err"'
check "reading a file after the power loss fails with EIO" eval \
	'! cat "$M/old2" 2>"$LIB_WORK/err" >/dev/null && grep -q "Input/output error" "$LIB_WORK/err"'
check "creating a file after the power loss fails with EIO" eval \
	'! touch "$M/after" 2>"$LIB_WORK/err" && grep -q "Input/output error" "$LIB_WORK/err"'
check "listing after the power loss fails with EIO" eval \
	'! ls "$M" >/dev/null 2>"$LIB_WORK/err" && grep -q "Input/output error" "$LIB_WORK/err"'
pl_unmount "$M" "$PL_PID"
check "the helper unmounted and exited" eval '! mountpoint -q "$M"'

# ---- the backing directory holds the synced state
verify_state() { # verify_state DIR: what must be in DIR after the power loss
	local d=$1 err=0
	cmp -s "$d/old1" "$REF/old1.orig" || { echo "old1: the unsynced write survived"; err=1; }
	[[ $(head -c 11 "$d/old2") == "synced data" ]] || { echo "old2: the fsynced write is lost"; err=1; }
	cmp -s <(tail -c +12 "$d/old2") <(tail -c +12 "$REF/old2.orig") || { echo "old2: the rest changed"; err=1; }
	cmp -s "$d/old7" "$REF/old7.orig" || { echo "old7: unsynced edits survived"; err=1; }
	[[ ! -e $d/new-nodirsync ]] || { echo "new-nodirsync: survived without a directory fsync"; err=1; }
	"$DATAGEN" verify "$d/sub/new-dirsync" 70000 12 >/dev/null 2>&1 || { echo "sub/new-dirsync: lost or wrong"; err=1; }
	[[ ! -e $d/sub2/new-unsynced ]] || { echo "sub2/new-unsynced survived"; err=1; }
	[[ ! -e $d/sub2/hardlink && ! -L $d/sub2/symlink ]] || { echo "unsynced link or symlink survived"; err=1; }
	[[ $(stat -c %h "$d/old1") == 1 ]] || { echo "old1 has $(stat -c %h "$d/old1") links"; err=1; }
	[[ ! -e $d/newdir ]] || { echo "newdir survived without its parent's fsync"; err=1; }
	cmp -s "$d/old3" "$REF/old3.orig" && [[ ! -e $d/sub2/old3-moved ]] || { echo "rename of old3 not undone"; err=1; }
	cmp -s "$d/old4" "$REF/old4.orig" && cmp -s "$d/old5" "$REF/old5.orig" || { echo "replacing rename not undone"; err=1; }
	cmp -s "$d/old6" "$REF/old6.orig" || { echo "unlink (or truncation) of old6 not undone"; err=1; }
	[[ -d $d/gone ]] || { echo "rmdir not undone"; err=1; }
	cmp -s "$d/b/keep-moved" "$REF/keep.orig" && [[ ! -e $d/a/keep ]] ||
		{ echo "synced rename lost"; err=1; }
	[[ $d/c/kept-half -ef $d/b/keep-moved && $(stat -c %h "$d/c/kept-half") == 2 ]] ||
		{ echo "a rename with its target synced: not both names of one file"; err=1; }
	[[ ! -e $d/d/srconly && ! -e $d/e/srconly ]] ||
		{ echo "a rename with only its source synced kept a name"; err=1; }
	[[ -d $d/dsrc/movedir && ! -e $d/ddst/movedir ]] ||
		{ echo "a directory's rename with one directory synced was not undone"; err=1; }
	return "$err"
}
check "the backing directory holds the synced state" verify_state "$B"
check "no graveyard is left in the backing directory" eval '[[ ! -e $B/.powerloss-graveyard ]]'
check "nothing else is left: exactly the expected names" eval \
	'[[ $(cd "$B" && find . | sort | tr "\n" " ") == ". ./a ./b ./b/keep-moved ./c ./c/kept-half ./d ./ddst ./dsrc ./dsrc/movedir ./e ./gone ./old1 ./old2 ./old3 ./old4 ./old5 ./old6 ./old7 ./sub ./sub/new-dirsync ./sub2 " ]]'

# ---- a new mount starts from there, and a clean unmount keeps everything
pl_mount "$B" "$M" "$LIB_WORK/powerloss.2.log"
check "a new mount over it shows the same state" verify_state "$M"
printf 'clean' >"$M/clean-unmount"
pl_unmount "$M" "$PL_PID"
check "a clean unmount writes what was not synced" eval '[[ $(cat "$B/clean-unmount") == clean ]]'
check "and says so" grep -q "unmounted cleanly" "$LIB_WORK/powerloss.2.log"
lib_finish
