#!/usr/bin/env bash
# posix_rsync: an rsync -aHAX round trip through a mounted tesserafs is exact (issue 6).
#
# A generated tree holds every file type (regular, directory, symlink, fifo, socket, character
# and block devices), hard links within and across directories (also of a fifo), user.*
# xattrs (empty, binary, 3000 bytes), POSIX ACLs (access and default), sparse files, odd names
# (spaces, a newline, UTF-8, 255 bytes in ASCII and in UTF-8, shell metacharacters), odd modes
# (setuid, setgid, sticky, 0000) and owners, and odd times (1960, the epoch, 2100,
# nanoseconds, on files, directories and symlinks). It is copied in with rsync -aHAXS, then
# `rsync -aHAXn --checksum --itemize-changes` must list nothing, with times compared to the
# nanosecond (--modify-window=-1): right after the copy, after
# copying it back out to the local disk (compared with the source), and after a remount.
# Needs root (devices, owners).
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

[[ $(id -u) == 0 ]] || lib_skip "needs root (device nodes, owners)"
for t in rsync setfacl setfattr mknod; do
	command -v "$t" >/dev/null || lib_skip "$t is not installed"
done

lib_init
lib_up --servers 3 --k 2 --m 1
M=$TESSERA_MNT
SRC=$LIB_WORK/src
BACK=$LIB_WORK/back
# --modify-window=-1: times compared to the nanosecond, also when rsync decides what to copy
# (else a fifo made in the same second as the copy keeps the copy's time)
RSYNC_OPTS=(-aHAX --numeric-ids --modify-window=-1)

# ---- the tree
gen_tree() {
	local d=$1 n255 u255 i
	mkdir -p "$d"/{a/b/c,empty,perm,acl,times,names,hl1,hl2,sparse}
	# regular files: empty, small, multi-stripe-ish, binary
	: >"$d/empty-file"
	echo "hello" >"$d/a/small"
	head -c 100000 /dev/urandom >"$d/a/b/random100k"
	head -c 3000000 /dev/urandom >"$d/a/b/c/random3m"
	printf 'no newline at end' >"$d/a/nonl"
	# links
	ln -s small "$d/a/rel-link"
	ln -s /etc/hostname "$d/a/abs-link"
	ln -s does/not/exist "$d/a/dangling"
	ln -s ../a "$d/empty/dir-link"
	echo shared >"$d/hl1/one"
	ln "$d/hl1/one" "$d/hl1/two"
	ln "$d/hl1/one" "$d/hl2/three"
	mkfifo "$d/fifo"
	ln "$d/fifo" "$d/hl2/fifo-link"
	mknod "$d/chardev" c 1 3
	mknod "$d/blockdev" b 7 42
	if command -v python3 >/dev/null; then
		python3 -c 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' \
			"$d/socket"
	else
		lib_skip_case "the tree has no socket: making one needs python3"
	fi
	# xattrs
	setfattr -n user.color -v blue "$d/a/small"
	setfattr -n user.empty "$d/a/small"
	setfattr -n user.bin -v 0x00ff10feff00 "$d/a/b/random100k"
	setfattr -n user.big -v "0x$(head -c 3000 /dev/urandom | xxd -p | tr -d '\n')" "$d/a/nonl"
	setfattr -n user.dir -v "on a directory" "$d/a/b"
	setfattr -n user.shared -v "on a hard link" "$d/hl1/one"
	# ACLs
	echo acl >"$d/acl/file"
	setfacl -m u:1000:rw-,g:1000:r--,m::rw- "$d/acl/file"
	setfacl -m u:1001:rwx "$d/acl"
	setfacl -d -m u:1000:rwx,g::r-x,o::--- "$d/acl"
	echo inherits >"$d/acl/inherited"
	mkdir "$d/acl/subdir"
	# modes and owners
	echo x >"$d/perm/setuid" && chmod 4755 "$d/perm/setuid"
	echo x >"$d/perm/setgid" && chmod 2711 "$d/perm/setgid"
	mkdir "$d/perm/sticky" && chmod 1777 "$d/perm/sticky"
	mkdir "$d/perm/sgid-dir" && chmod 2775 "$d/perm/sgid-dir"
	echo x >"$d/perm/none" && chmod 0000 "$d/perm/none"
	mkdir "$d/perm/none-dir" && chmod 0000 "$d/perm/none-dir"
	echo x >"$d/perm/owned" && chown 1000:1000 "$d/perm/owned"
	echo x >"$d/perm/owned-odd" && chown 12345:54321 "$d/perm/owned-odd"
	ln -s owned "$d/perm/owned-link" && chown -h 1000:1001 "$d/perm/owned-link"
	# sparse: holes at the start, in the middle and at the end
	truncate -s 16M "$d/sparse/holes"
	printf 'middle' | dd of="$d/sparse/holes" bs=1 seek=5000000 conv=notrunc status=none
	printf 'late' | dd of="$d/sparse/holes" bs=1 seek=9437184 conv=notrunc status=none
	truncate -s 64M "$d/sparse/all-hole"
	# names
	echo >"$d/names/with space"
	echo >"$d/names/  "
	echo >"$d/names/new
line"
	echo >"$d/names/tab	tab"
	echo >"$d/names/-dash"
	echo >"$d/names/*star?[x]"
	echo >"$d/names/back\\slash"
	echo >"$d/names/quote'\"dq"
	echo >"$d/names/ünïcødé-日本語-🙂"
	n255=$(printf 'n%.0s' {1..255})
	echo >"$d/names/$n255"
	u255=$(printf 'é%.0s' {1..127})x # 127 * 2 bytes + 1 = 255 bytes
	echo >"$d/names/$u255"
	mkdir "$d/names/$(printf 'd%.0s' {1..255})"
	# times (directories last: creating entries changes them)
	touch -h -d '1960-05-01 12:00:00.5' "$d/times/pre-epoch" 2>/dev/null ||
		touch -d '1960-05-01 12:00:00.5' "$d/times/pre-epoch"
	touch -d '@0' "$d/times/epoch"
	touch -d '@1' "$d/times/epoch-plus-1"
	touch -d '2100-01-01 00:00:00' "$d/times/future"
	touch -d '@1234567890.123456789' "$d/times/nanos"
	ln -s nanos "$d/times/link" && touch -h -d '@1000000000.987654321' "$d/times/link"
	for i in 1 2 3; do echo "$i" >"$d/times/f$i"; done
	touch -a -d '@1500000000.1' "$d/times/f1"
	find "$d" -type d -print0 | xargs -0 touch -d '2001-02-03 04:05:06.111222333'
	touch -d '1969-12-31 23:59:59.5' "$d/times"
}

# rsync -n lists nothing when DST matches SRC (besides its summary lines).
same() {
	local out
	out=$(rsync "${RSYNC_OPTS[@]}" -n --checksum --itemize-changes "$1/" "$2/" 2>&1)
	if [[ -n $out ]]; then
		printf '%s\n' "$out" | head -n 20
		return 1
	fi
	return 0
}

gen_tree "$SRC" || bail "cannot generate the source tree"
diag "source tree: $(find "$SRC" | wc -l) entries"

lib_time_ms rsync "${RSYNC_OPTS[@]}" -S "$SRC/" "$M/dst/"
((LIB_RC == 0)) && ok "rsync -aHAXS into the mount ($((LIB_MS)) ms)" ||
	fail "rsync into the mount exited $LIB_RC"
check "rsync -aHAXn --checksum lists nothing" same "$SRC" "$M/dst"
check "hard links share one inode" \
	test "$(stat -c '%i %h' "$M/dst/hl1/one")" == "$(stat -c '%i %h' "$M/dst/hl2/three")"
check "three names, st_nlink 3" test "$(stat -c %h "$M/dst/hl1/two")" == 3
check "pre-epoch time kept" test "$(stat -c %Y "$M/dst/times/pre-epoch")" == \
	"$(stat -c %Y "$SRC/times/pre-epoch")"
check "nanosecond mtime kept" test "$(stat -c %y "$M/dst/times/nanos")" == \
	"$(stat -c %y "$SRC/times/nanos")"
check "device numbers kept" test "$(stat -c '%F %t %T' "$M/dst/blockdev")" == \
	"$(stat -c '%F %t %T' "$SRC/blockdev")"
check "default ACL kept" test "$(getfacl -cd "$M/dst/acl" 2>/dev/null)" == \
	"$(getfacl -cd "$SRC/acl" 2>/dev/null)"

lib_time_ms rsync "${RSYNC_OPTS[@]}" -S "$M/dst/" "$BACK/"
((LIB_RC == 0)) && ok "rsync -aHAXS back out ($((LIB_MS)) ms)" ||
	fail "rsync out of the mount exited $LIB_RC"
check "the copy back equals the source" same "$SRC" "$BACK"

remount
check "after a remount: rsync -aHAXn --checksum lists nothing" same "$SRC" "$M/dst"

# a second pass changes nothing and transfers nothing
out=$(rsync "${RSYNC_OPTS[@]}" -S --itemize-changes "$SRC/" "$M/dst/" 2>&1)
check "a second rsync transfers nothing" test -z "$out"

# the comparison itself notices a 1 ns time, a mode, an xattr and a byte
touch -d '@1234567890.123456788' "$M/dst/times/nanos"
check_rc 1 "rsync -n notices a 1 ns mtime change" same "$SRC" "$M/dst"
touch -d '@1234567890.123456789' "$M/dst/times/nanos"
chmod 4754 "$M/dst/perm/setuid"
check_rc 1 "rsync -n notices a mode change" same "$SRC" "$M/dst"
chmod 4755 "$M/dst/perm/setuid"
setfattr -n user.color -v bluE "$M/dst/a/small"
check_rc 1 "rsync -n notices an xattr change" same "$SRC" "$M/dst"
setfattr -n user.color -v blue "$M/dst/a/small"
printf 'X' | dd of="$M/dst/a/b/c/random3m" bs=1 seek=2999999 conv=notrunc status=none
touch -r "$SRC/a/b/c/random3m" "$M/dst/a/b/c/random3m"
check_rc 1 "rsync -n --checksum notices one changed byte" same "$SRC" "$M/dst"

lib_finish
