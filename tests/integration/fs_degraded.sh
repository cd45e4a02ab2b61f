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
# Files of at least one stripe certainly hold fragments (small ones may live in the metadata).
STRIPED=(stripe_plus_1 three_stripes big)
write_file tiny 1 700
write_file small 100000 701
write_file stripe_plus_1 $((S + 1)) 702
write_file three_stripes $((3 * S + 5)) 703
write_file big $((50 << 20)) 704
verify_all "all servers up"

# ---- m = 2 servers down: everything reads
check "stop server 1" lib_local stop-server 1
check "stop server 4" lib_local stop-server 4
remount
check "directory listing with 2 servers down" test "$(ls "$M" | wc -l)" -eq "${#LIB_FILES[@]}"
verify_all "2 servers down"
check "random small reads with 2 servers down" "$DATAGEN" randverify "$M/big" $((50 << 20)) 704

# ---- m + 1 servers down: striped files fail with EIO, promptly, never with wrong bytes
check "stop server 2" lib_local stop-server 2
remount
check "stat with 3 servers down" stat "$M/big"
for i in "${!LIB_FILES[@]}"; do
	name=${LIB_FILES[i]}
	lib_time_ms "$DATAGEN" verify "$M/$name" "${LIB_SIZES[i]}" "${LIB_SEEDS[i]}" 2>"$LIB_WORK/verify.err"
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
remount
verify_all "servers back"

lib_finish
