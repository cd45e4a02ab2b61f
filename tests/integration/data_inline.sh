#!/usr/bin/env bash
# data_inline: small files live in the metadata (issue 4 "Small files up to a threshold live
# inline in the metadata, not on the servers"; src/data/data.c store_inline, default
# inline_max 4096):
#  1. files of 0, 1, 4095 and 4096 bytes leave no fragment on any server; 4097 bytes is one
#     stripe with k+m fragments;
#  2. an inline file that grows past the threshold (by a write at its end, by appends through
#     separate opens, by an overwrite in place) moves to a stripe, with the right content; one
#     that grows within the threshold stays inline;
#  3. truncate of inline files (shrink, extend within and past the threshold, to 0); a striped
#     file cut or rewritten below the threshold; its old fragments are collected;
#  4. after a remount everything reads back identical; with m+1 servers down the inline files
#     still read (and a new small file can be written), striped ones fail with EIO.
# Every file has a reference copy on the local disk; contents are compared with cmp.
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

export TESSERA_FS_OPTS="${TESSERA_FS_OPTS:+$TESSERA_FS_OPTS,}request_timeout=5"
INLINE_MAX=4096

lib_init
lib_up --servers 6 --k 4 --m 2

M=$TESSERA_MNT
N=$((TESSERA_K + TESSERA_M))
REF="$LIB_WORK/ref"
mkdir -p "$REF"
ALL=()   # every file name, compared at the end

# frags NAME: fragment objects of the file's inode on all servers.
frags() {
	local hex
	hex=$(printf '%016x' "$(stat -c %i "$M/$1")")
	find "$LIB_WORK"/servers/*/data/objects/"$TESSERA_BUCKET"/*/"$hex" -type f 2>/dev/null | wc -l
}

# inline NAME: no fragment anywhere.
expect_inline() {
	local n
	n=$(frags "$1")
	((n == 0)) && ok "$1 ($(stat -c %s "$M/$1") bytes) has no fragment on the servers" ||
		fail "$1 ($(stat -c %s "$M/$1") bytes) has $n fragments on the servers, want none (inline)"
}

# expect_striped NAME: exactly one stripe's k+m fragments.
expect_striped() {
	local n
	n=$(frags "$1")
	((n == N)) && ok "$1 ($(stat -c %s "$M/$1") bytes) is striped: $n fragments" ||
		fail "$1 ($(stat -c %s "$M/$1") bytes) has $n fragments, want $N (one stripe)"
}

# same NAME WHEN: the mounted file equals its reference copy.
same() {
	local out
	if out=$(cmp "$REF/$1" "$M/$1" 2>&1); then
		ok "$1 identical ($2)"
	else
		fail "$1 differs ($2): $out (sizes: ref $(stat -c %s "$REF/$1"), fs $(stat -c %s "$M/$1" 2>&1))"
	fi
}

# mk NAME SIZE SEED: a datagen file, on the mount and as the reference.
mk() {
	"$DATAGEN" write "$REF/$1" "$2" "$3" || bail "cannot write the reference $REF/$1"
	check "write $1 ($2 bytes)" "$DATAGEN" write "$M/$1" "$2" "$3"
	ALL+=("$1")
}

# ---------------------------------------------------------------- 1. the threshold
for size in 0 1 4095 4096 4097; do
	mk "s$size" "$size" $((100 + size % 97))
done
for size in 0 1 4095 4096; do
	expect_inline "s$size"
done
expect_striped s4097
for size in 0 1 4095 4096 4097; do
	same "s$size" "written"
done

# ---------------------------------------------------------------- 2. growing
# g: 4000 inline bytes, then bytes 4000..4999 written at the end in a second open.
mk g 4000 51
expect_inline g
"$DATAGEN" write "$REF/g" 5000 51
check "append 1000 bytes to g" dd if="$REF/g" of="$M/g" bs=1000 skip=4 seek=4 count=1 \
	conv=notrunc,fsync status=none
same g "grown from 4000 to 5000 bytes"
expect_striped g

# h: grows within the threshold: stays inline.
mk h 100 52
"$DATAGEN" write "$REF/h" 4096 52
check "append to h up to 4096 bytes" dd if="$REF/h" of="$M/h" bs=4096 skip=100 seek=100 \
	iflag=skip_bytes oflag=seek_bytes conv=notrunc,fsync status=none
same h "grown from 100 to 4096 bytes"
expect_inline h

# j: 120 appends of 50 bytes through separate opens (each close flushes), across the threshold.
: >"$REF/j"
: >"$M/j"
ALL+=(j)
ok_app=1
for i in $(seq 1 120); do
	line=$(printf 'line %03d of j %*s' "$i" 35 "" | head -c 49)
	printf '%s\n' "$line" >>"$REF/j"
	printf '%s\n' "$line" >>"$M/j" || ok_app=0
done
((ok_app)) && ok "120 appends to j" || fail "an append to j failed"
same j "6000 bytes by appends"
expect_striped j

# o: an inline file overwritten in place past its end in one write that crosses 4096.
mk o 3000 53
head -c 2000 /dev/urandom >"$LIB_WORK/chunk"
dd if="$LIB_WORK/chunk" of="$REF/o" bs=2000 oflag=seek_bytes seek=2500 conv=notrunc status=none
check "overwrite o at 2500 with 2000 bytes" dd if="$LIB_WORK/chunk" of="$M/o" bs=2000 \
	oflag=seek_bytes seek=2500 conv=notrunc status=none
same o "overwritten across the threshold (4500 bytes)"
expect_striped o

# p: an inline file overwritten in the middle: stays inline.
mk p 4000 54
dd if="$LIB_WORK/chunk" of="$REF/p" bs=1 count=300 seek=1000 conv=notrunc status=none
check "overwrite 300 bytes in the middle of p" dd if="$LIB_WORK/chunk" of="$M/p" bs=300 count=1 \
	oflag=seek_bytes seek=1000 conv=notrunc status=none
same p "overwritten in the middle"
expect_inline p

# ---------------------------------------------------------------- 3. truncate
# tr_both NAME SIZE: truncate the file and its reference.
tr_both() {
	truncate -s "$2" "$REF/$1"
	check "truncate $1 to $2" truncate -s "$2" "$M/$1"
}
mk t1 4000 61
tr_both t1 100
same t1 "inline, cut to 100"
expect_inline t1

mk t2 100 62
tr_both t2 3000
same t2 "inline, extended to 3000"
expect_inline t2

mk t3 100 63
tr_both t3 10000
same t3 "inline, extended past the threshold to 10000"
diag "t3 (100 bytes extended to 10000, never written past 100): $(frags t3) fragments"
printf 'tail' >>"$REF/t3"
check "append to t3 after the extension" sh -c "printf tail >>'$M/t3'"
same t3 "extended, then appended"
expect_striped t3

mk t4 4096 64
tr_both t4 0
same t4 "inline, cut to 0"
expect_inline t4
printf 'again' >"$REF/t4"
check "write t4 again after the cut" sh -c "printf again >>'$M/t4'"
same t4 "written again after the cut"
expect_inline t4

# t5: striped, cut below the threshold (it may stay striped; the content must be right).
mk t5 5000 65
tr_both t5 100
same t5 "striped, cut to 100"
diag "t5 (5000 bytes cut to 100): $(frags t5) fragments"

# t6: striped, rewritten (O_TRUNC) with 100 bytes: inline, the old stripe collected.
mk t6 5000 66
expect_striped t6
"$DATAGEN" write "$REF/t6" 100 67
check "rewrite t6 with 100 bytes" "$DATAGEN" write "$M/t6" 100 67
same t6 "rewritten with 100 bytes"
end=$((SECONDS + 15))
while (($(frags t6) > 0)) && ((SECONDS < end)); do
	sleep 0.5
done
expect_inline t6

# t7: cut to 0 and grown past the threshold in one open (truncate then write).
mk t7 3000 68
"$DATAGEN" write "$REF/t7" 9000 69
check "rewrite t7 with 9000 bytes" "$DATAGEN" write "$M/t7" 9000 69
same t7 "inline rewritten with 9000 bytes"
expect_striped t7

# ---------------------------------------------------------------- 4. remount, servers down
remount
for f in "${ALL[@]}"; do
	same "$f" "after a remount"
done

for i in 0 1 2; do
	check "stop server $i" lib_local stop-server "$i"
done
remount
for f in s0 s1 s4095 s4096 h p t1 t2 t4 t6; do
	same "$f" "3 servers down"
done
for f in s4097 g j o t7; do
	out=$(cat "$M/$f" 2>&1 >/dev/null)
	rc=$?
	if ((rc != 0)) && [[ $out == *"Input/output error"* ]]; then
		ok "$f (striped) with 3 servers down: EIO"
	else
		fail "$f (striped) with 3 servers down: exit $rc: $out"
	fi
done
"$DATAGEN" write "$REF/n" 2000 70
check "write a small file with 3 servers down (it lives in the metadata)" \
	"$DATAGEN" write "$M/n" 2000 70
ALL+=(n)
for i in 0 1 2; do
	check "start server $i" lib_local start-server "$i"
done
remount
for f in "${ALL[@]}"; do
	same "$f" "servers back, remounted"
done
expect_inline n

lib_finish
