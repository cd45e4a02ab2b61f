#!/usr/bin/env bash
# data_enospc: servers whose disks are full make writes fail with ENOSPC (DESIGN.md: "An error
# from the servers reaches the application as EIO (or ENOSPC)"), never a silent success, while
# what was stored before reads back; once space is back, writes work again. Two of six servers
# (4+2, write quorum 5) get a small tmpfs as their data directory. Needs root (mount).
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

[[ $(id -u) -eq 0 ]] || lib_skip "needs root to mount a tmpfs"
lib_init
lib_up --servers 6 --k 4 --m 2

M=$TESSERA_MNT
check "a file written before the disks fill" "$DATAGEN" write "$M/before" 3M 31

FULL=(1 4)
for i in "${FULL[@]}"; do
	dir=$LIB_WORK/servers/$i/data
	check "stop server $i" "$TESSERA_LOCAL" stop-server "$LIB_WORK" "$i"
	check "a 6 MiB tmpfs as server $i's data directory" mount -t tmpfs -o size=6m tmpfs "$dir"
	lib_at_exit "! mountpoint -q '$dir' || umount '$dir'"
	check "start server $i on it" "$TESSERA_LOCAL" start-server "$LIB_WORK" "$i"
done

# 40 MiB: each full server would need 10 MiB of fragments.
"$DATAGEN" write "$M/big" 40M 32 2>"$LIB_WORK/enospc.err"
rc=$?
if ((rc != 0)) && grep -q "No space left on device" "$LIB_WORK/enospc.err"; then
	ok "writing past the full servers fails with ENOSPC ($(head -c 120 "$LIB_WORK/enospc.err"))"
else
	fail "writing past the full servers: exit $rc, $(head -c 200 "$LIB_WORK/enospc.err")"
fi
check "the file written before still reads back" "$DATAGEN" verify "$M/before" 3M 31
for i in "${FULL[@]}"; do
	code=$(curl -s -o /dev/null -w '%{http_code}' "$(echo "$TESSERA_SERVERS" | cut -d' ' -f$((i + 1)))/-/status")
	check "full server $i still answers (status $code)" test "$code" = 200
done

# Space back: the same servers, on their real directories again.
for i in "${FULL[@]}"; do
	check "stop server $i" "$TESSERA_LOCAL" stop-server "$LIB_WORK" "$i"
	check "unmount its tmpfs" umount "$LIB_WORK/servers/$i/data"
	check "start server $i" "$TESSERA_LOCAL" start-server "$LIB_WORK" "$i"
done
sleep 2 # past the back-off of the servers that failed
rm -f "$M/big"
check "writes work again" "$DATAGEN" write "$M/after" 12M 33
check "remount" "$TESSERA_LOCAL" remount "$LIB_WORK"
check "the new file reads back" "$DATAGEN" verify "$M/after" 12M 33
check "the old file reads back" "$DATAGEN" verify "$M/before" 3M 31
lib_finish
