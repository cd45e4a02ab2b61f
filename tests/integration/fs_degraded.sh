#!/usr/bin/env bash
# fs_degraded: with m=2 of 6 servers stopped every file still reads back identical (degraded
# decode, DESIGN.md "Data the application was told is written is never lost while no more than
# m servers of a stripe are lost"); with a third server stopped a striped file fails with EIO
# within a bound and never returns wrong bytes ("corrupt data is never returned"); once the
# servers are back everything reads again.
LIB_TIMEOUT=420
. "$(dirname "$0")/lib.sh"

# Each block request gives up after 5 s, so a read beyond m losses fails promptly.
export TESSERA_FS_OPTS="${TESSERA_FS_OPTS:+$TESSERA_FS_OPTS,}request_timeout=5"
EIO_BOUND_MS=60000

lib_init
lib_up --servers 6 --k 4 --m 2

M=$TESSERA_MNT
S=$LIB_STRIPE
NAMES=(tiny small stripe_plus_1 three_stripes big)
SIZES=(1 100000 $((S + 1)) $((3 * S + 5)) $((50 << 20)))
# Files of at least one stripe certainly hold fragments (small ones may live in the metadata).
STRIPED=(stripe_plus_1 three_stripes big)

for i in "${!NAMES[@]}"; do
	check "write ${NAMES[i]} (${SIZES[i]} bytes)" "$DATAGEN" write "$M/${NAMES[i]}" "${SIZES[i]}" $((700 + i))
done

verify_all() {
	local when=$1 i
	for i in "${!NAMES[@]}"; do
		check "verify ${NAMES[i]} ($when)" "$DATAGEN" verify "$M/${NAMES[i]}" "${SIZES[i]}" $((700 + i))
	done
}
verify_all "all servers up"

# Drops the kernel's page cache and tesserafs' own caches.
drop_caches() {
	sync
	[[ -w /proc/sys/vm/drop_caches ]] && echo 3 >/proc/sys/vm/drop_caches
	lib_local remount >/dev/null || bail "remount failed"
	M=$TESSERA_MNT
}

# ---- m = 2 servers down: everything reads
check "stop server 1" lib_local stop-server 1
check "stop server 4" lib_local stop-server 4
drop_caches
check "directory listing with 2 servers down" test "$(ls "$M" | wc -l)" -eq "${#NAMES[@]}"
verify_all "2 servers down"
check "random small reads with 2 servers down" "$DATAGEN" randverify "$M/big" $((50 << 20)) 704

# ---- m + 1 servers down: striped files fail with EIO, promptly, never with wrong bytes
check "stop server 2" lib_local stop-server 2
drop_caches
check "stat with 3 servers down" stat "$M/big"
for i in "${!NAMES[@]}"; do
	name=${NAMES[i]}
	lib_time_ms "$DATAGEN" verify "$M/$name" "${SIZES[i]}" $((700 + i)) 2>"$LIB_WORK/verify.err"
	err=$(head -c 300 "$LIB_WORK/verify.err")
	if ((LIB_RC == 1)); then
		fail "$name with 3 servers down: WRONG DATA returned ($err)"
	elif [[ " ${STRIPED[*]} " == *" $name "* ]]; then
		if ((LIB_RC != 3)); then
			fail "$name with 3 servers down: exit $LIB_RC, want 3 (EIO) ($err)"
		elif [[ $err != *"Input/output error"* ]]; then
			fail "$name with 3 servers down: not EIO: $err"
		elif ((LIB_MS > EIO_BOUND_MS)); then
			fail "$name with 3 servers down: EIO after $LIB_MS ms (bound $EIO_BOUND_MS ms)"
		else
			ok "$name with 3 servers down: EIO after $LIB_MS ms"
		fi
	else
		# a small file may be inline in the metadata: correct bytes or EIO, nothing else
		case $LIB_RC in
		0 | 3) ok "$name with 3 servers down: exit $LIB_RC (correct data or EIO) in $LIB_MS ms" ;;
		*) fail "$name with 3 servers down: exit $LIB_RC ($err)" ;;
		esac
	fi
done

# ---- servers back: everything reads again
for i in 1 2 4; do
	check "start server $i" lib_local start-server "$i"
done
drop_caches
verify_all "servers back"

lib_finish
