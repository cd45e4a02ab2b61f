#!/usr/bin/env bash
# fs_roundtrip: files written through a 6-server 4+2 mount read back bit for bit, before and
# after a remount (DESIGN.md "Durability and consistency rules": what close() acknowledged is
# kept); cp, overwrite in the middle, truncate, mkdir/rmdir, unlink and a 200-entry directory
# behave as on a local filesystem; fragments land on the servers, never two fragments of one
# stripe version on the same server (DESIGN.md "placement").
LIB_TIMEOUT=420
. "$(dirname "$0")/lib.sh"

lib_init
lib_up --servers 6 --k 4 --m 2

M=$TESSERA_MNT
REF="$LIB_WORK/ref"
mkdir -p "$REF"
S=$LIB_STRIPE
SIZES=(0 1 4095 4096 $((S - 1)) $S $((S + 1)) $((50 << 20)))

# ---- files of every interesting size, each with its own seed
for i in "${!SIZES[@]}"; do
	check "write ${SIZES[i]} bytes" "$DATAGEN" write "$M/f$i" "${SIZES[i]}" $((100 + i))
done

verify_sizes() {
	local when=$1 i
	for i in "${!SIZES[@]}"; do
		check "verify ${SIZES[i]} bytes ($when)" "$DATAGEN" verify "$M/f$i" "${SIZES[i]}" $((100 + i))
	done
}
verify_sizes "after write"

# ---- cp inside the mount, and from outside into it
LAST=$((${#SIZES[@]} - 1))
check "cp inside the mount" cp "$M/f$LAST" "$M/copy"
check "the copy verifies" "$DATAGEN" verify "$M/copy" "${SIZES[LAST]}" $((100 + LAST))
"$DATAGEN" write "$REF/outside" $((9 << 20)) 42 || bail "datagen cannot write $REF"
check "cp into the mount" cp "$REF/outside" "$M/outside"
check "cp'd file equals its source" cmp "$REF/outside" "$M/outside"

# ---- overwrites in the middle (dd conv=notrunc), against a reference copy
"$DATAGEN" write "$REF/mid" $((10 << 20)) 200 || bail "datagen cannot write $REF"
check "write file for overwrites" cp "$REF/mid" "$M/mid"
"$DATAGEN" write "$REF/patch" 100000 201 || bail "datagen cannot write $REF"
overwrite() { # overwrite OFFSET LENGTH: same patch bytes into the mount and the reference
	local f
	for f in "$M/mid" "$REF/mid"; do
		dd if="$REF/patch" of="$f" bs=65536 count="$2" iflag=count_bytes \
			seek="$1" oflag=seek_bytes conv=notrunc status=none || return 1
	done
}
check "overwrite across a stripe boundary" overwrite $((S - 12345)) 100000
check "overwrite of one byte mid-stripe" overwrite $((2 * S + 777)) 1
check "overwrite of a whole stripe-aligned 64 KiB" overwrite $((S)) 65536
check "overwritten file equals the reference" cmp "$REF/mid" "$M/mid"
check "fsync of the overwritten file" dd if=/dev/null of="$M/mid" conv=notrunc,fsync status=none

# ---- truncate down and up, against a reference
"$DATAGEN" write "$REF/trunc" $((6 << 20)) 300 || bail "datagen cannot write $REF"
check "write file for truncates" cp "$REF/trunc" "$M/trunc"
for size in 5000000 $((9 << 20)) $((S + 3)) 4097 0 12345; do
	truncate -s "$size" "$REF/trunc"
	check "truncate to $size" truncate -s "$size" "$M/trunc"
	check "size after truncate to $size" test "$(stat -c %s "$M/trunc")" -eq "$size"
	check "content after truncate to $size" cmp "$REF/trunc" "$M/trunc"
done
# a sparse extension read back as zeros with data after it
cp "$REF/trunc" "$REF/trunc2"
check "copy for sparse write" cp "$REF/trunc2" "$M/trunc2"
for f in "$REF/trunc2" "$M/trunc2"; do
	printf 'tail' | dd of="$f" bs=4 seek=$(((3 * S + 5) / 4)) conv=notrunc status=none
done
check "sparse write past the end" cmp "$REF/trunc2" "$M/trunc2"

# ---- directories
check "mkdir -p nested" mkdir -p "$M/d1/d2/d3"
check "a file in a nested directory" "$DATAGEN" write "$M/d1/d2/d3/x" 5000 400
check_rc 1 "rmdir of a non-empty directory fails" rmdir "$M/d1/d2"
check "rm of the file" rm "$M/d1/d2/d3/x"
check "rmdir d3" rmdir "$M/d1/d2/d3"
check "rmdir d2" rmdir "$M/d1/d2"
check "d2 is gone" test ! -e "$M/d1/d2"
check "d1 is empty" test -z "$(ls -A "$M/d1")"

# ---- unlink
check "write a file to unlink" "$DATAGEN" write "$M/gone" $((S + 100)) 500
check "unlink" rm "$M/gone"
check "unlinked file is gone" test ! -e "$M/gone"
check "unlinked file not listed" bash -c "! ls -A '$M' | grep -qx gone"

# ---- a directory with 200 files
mkdir -p "$M/many"
for i in $(seq 1 200); do
	echo "file $i" >"$M/many/n$i" || fail "create many/n$i"
done
many_ok() {
	local n
	n=$(ls "$M/many" | wc -l)
	[[ $n -eq 200 ]] || { echo "ls shows $n entries"; return 1; }
	diff <(ls "$M/many" | sort) <(for i in $(seq 1 200); do echo "n$i"; done | sort) || return 1
	for i in 1 77 200; do
		[[ $(cat "$M/many/n$i") == "file $i" ]] || { echo "many/n$i holds the wrong text"; return 1; }
	done
}
check "ls of a 200-entry directory" many_ok

# ---- everything again after a remount (no caches)
snapshot() { # names, sizes and types of the whole tree
	(cd "$M" && find . -printf '%p %s %y\n' | sort)
}
BEFORE=$(snapshot)
check "remount" lib_local remount
M=$TESSERA_MNT
verify_sizes "after remount"
# Small random reads fetch only the chunks they need (data.c read_ranged), checked against
# the chunk sums: a cold mount, so none is served from a whole-stripe buffer.
check "random small reads of the 50 MiB file" "$DATAGEN" randverify "$M/f$LAST" "${SIZES[LAST]}" $((100 + LAST))
check "the copy verifies after remount" "$DATAGEN" verify "$M/copy" "${SIZES[LAST]}" $((100 + LAST))
check "cp'd file after remount" cmp "$REF/outside" "$M/outside"
check "overwritten file after remount" cmp "$REF/mid" "$M/mid"
check "truncated file after remount" cmp "$REF/trunc" "$M/trunc"
check "sparse file after remount" cmp "$REF/trunc2" "$M/trunc2"
check "200-entry directory after remount" many_ok
check "same tree after remount" diff <(echo "$BEFORE") <(snapshot)

# ---- fragments on the servers
# objects/<bucket>/<uuid>/<ino 16 hex>/<stripe 16 hex>.<version 16 hex>.<index>
fragments_ok() {
	local dir all n bad=0 i dups odd
	all=$(lib_fragments | wc -l)
	((all > 0)) || { echo "no fragment files under $LIB_WORK/servers/*/data/objects"; return 1; }
	for ((i = 0; i < TESSERA_SERVER_COUNT; i++)); do
		dir="$LIB_WORK/servers/$i/data/objects/$TESSERA_BUCKET"
		[[ -d $dir ]] || { echo "server $i holds nothing"; bad=1; continue; }
		n=$(find "$dir" -type f -not -path '*/journal/*' -not -path '*/filesystems/*' | wc -l)
		# the same <uuid>/<ino>/<stripe>.<version> twice on one server
		dups=$(cd "$dir" && find . -type f -not -path '*/journal/*' -not -path '*/filesystems/*' -printf '%P\n' |
			grep -E '^[0-9a-f-]{36}/[0-9a-f]{16}/[0-9a-f]{16}\.[0-9a-f]{16}\.[0-9]+$' |
			sed -E 's/\.[0-9]+$//' | sort | uniq -d)
		if [[ -n $dups ]]; then
			echo "server $i holds two fragments of: $(echo "$dups" | head -n 3 | tr '\n' ' ')"
			bad=1
		fi
		odd=$(cd "$dir" && find . -type f -not -path '*/journal/*' -not -path '*/filesystems/*' -printf '%P\n' |
			grep -vE '^[0-9a-f-]{36}/[0-9a-f]{16}/[0-9a-f]{16}\.[0-9a-f]{16}\.[0-9]+$' | head -n 3)
		[[ -z $odd ]] || { echo "server $i: unexpected object names: $odd"; bad=1; }
		echo "server $i: $n fragments"
	done
	return "$bad"
}
check "fragments on the servers, never two of one stripe on a server" fragments_ok
big_ino=$(printf '%016x' "$(stat -c %i "$M/f$LAST")")
big_fragment_check() { # the 50 MiB file: 13 stripes, the newest version of each in k+m fragments
	local want=$(((SIZES[LAST] + S - 1) / S)) out
	out=$(lib_fragments | grep "/$big_ino/" |
		sed -E 's#.*/([0-9a-f]{16})\.([0-9a-f]{16})\.([0-9]+)$#\1 \2 \3#' | sort -u |
		awk -v want="$want" -v km=$((TESSERA_K + TESSERA_M)) '
			{ if (!($1 in top) || $2 > top[$1]) top[$1] = $2; idx[$1 " " $2] = idx[$1 " " $2] + 1 }
			END {
				n = 0; bad = 0
				for (s in top) { n++; c = idx[s " " top[s]]; if (c != km) { print "stripe " s ": " c " fragments"; bad = 1 } }
				if (n != want) { print n " stripes stored, want " want; bad = 1 }
				exit bad
			}')
	local rc=$?
	[[ -n $out ]] && echo "inode $big_ino: $out"
	return "$rc"
}
check "50 MiB file: every stripe has k+m fragments" big_fragment_check

lib_finish
