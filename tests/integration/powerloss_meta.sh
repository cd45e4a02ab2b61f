#!/usr/bin/env bash
# powerloss_meta: the metadata machine loses power (tests/helpers/powerloss.c).
#
# META_DIR of a tesserafs mount is on the power-loss helper; the block servers are on the
# ordinary disk. Through the mount the test writes files of 0 B to 9 MB (inline, one stripe,
# several stripes) and fsyncs each (datagen write), overwrites some of them with new content
# and fsyncs again, and runs tests/helpers/crashload (creates, renames, links, unlinks, files
# made durable with fsync or write + fsync + rename + fsync of the directory, logged outside
# the mount once durable). While crashload runs, more files are copied in without fsync and
# the helper loses power; tesserafs is SIGKILLed, both are unmounted, the helper is mounted
# again over the synced state and tesserafs mounted again on it. Then every fsynced file is
# there with its last fsynced content, the unsynced ones are there or not (crashload's
# fsyncs flush the whole metadata log, theirs included) but never unreadable, `crashload
# check` finds a consistent namespace with every durable file intact, and tessera-scrub -n
# on the unmounted metadata finds nothing wrong.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

CL="$TESSERA_BUILD/tests/crashload"
lib_require "$CL" "$TESSERA_BUILD/tessera-scrub" "$POWERLOSS"

lib_init
MB=$LIB_WORK/meta-backing
# tessera-local keeps the metadata in WORKDIR/meta: the helper is mounted there first.
pl_mount "$MB" "$LIB_WORK/meta" "$LIB_WORK/powerloss.1.log"
lib_up --servers 3 --k 2 --m 1
D=$TESSERA_MNT/files
mkdir -p "$D"
SYNCED=$LIB_WORK/synced   # NAME SIZE SEED, the last fsynced content of each file
UNSYNCED=$LIB_WORK/unsynced
: >"$SYNCED"
: >"$UNSYNCED"

sizes=(0 1 100 4095 70000 1000000 4194304 5000000 9000000)
for i in $(seq 1 18); do
	size=${sizes[i % ${#sizes[@]}]}
	"$DATAGEN" write "$D/s$i" "$size" "$i" >/dev/null || bail "datagen write s$i"
	echo "s$i $size $i" >>"$SYNCED"
done
# Overwritten and fsynced again: the new content counts.
for i in 2 5 7; do
	size=${sizes[(i + 3) % ${#sizes[@]}]}
	"$DATAGEN" write "$D/s$i" "$size" "$((i + 1000))" >/dev/null || bail "datagen rewrite s$i"
	sed -i "/^s$i /d" "$SYNCED"
	echo "s$i $size $((i + 1000))" >>"$SYNCED"
done
ok "$(wc -l <"$SYNCED") files written and fsynced through tesserafs"

# The namespace workload, cut by the power loss while it runs.
CLDIR=$TESSERA_MNT/crash
CLLOG=$LIB_WORK/durable.log
mkdir -p "$CLDIR"
"$CL" run "$CLDIR" "$CLLOG" 4242 >"$LIB_WORK/crashload.log" 2>&1 &
cl_pid=$!
sleep 2
# Without fsync, just before the power loss: the data goes through an ordinary copy.
for i in $(seq 1 8); do
	size=${sizes[(i * 5) % ${#sizes[@]}]}
	"$DATAGEN" write "$LIB_WORK/src.$i" "$size" "$((i + 2000))" >/dev/null
done
for i in $(seq 1 8); do
	cp "$LIB_WORK/src.$i" "$D/u$i"
	echo "u$i $((i + 2000))" >>"$UNSYNCED"
done
ok "$(wc -l <"$UNSYNCED") files written without fsync"
kill -0 "$cl_pid" 2>/dev/null || fail "crashload stopped before the power loss: $(tail -n 2 "$LIB_WORK/crashload.log")"
check "power loss of the metadata disk while crashload runs" pl_power_loss
kill -KILL "$TESSERA_FS_PID" 2>/dev/null
for _ in $(seq 50); do kill -0 "$cl_pid" 2>/dev/null || break; sleep 0.1; done
kill -KILL "$cl_pid" 2>/dev/null
wait "$cl_pid" 2>/dev/null
durable=$(wc -l <"$CLLOG")
check "tesserafs unmounts after the SIGKILL" lib_local unmount
pl_unmount "$LIB_WORK/meta" "$PL_PID"
check "the helper unmounted" eval '! mountpoint -q "$LIB_WORK/meta"'
grep -q "powerloss: power lost" "$LIB_WORK/powerloss.1.log" &&
	diag "$(grep "powerloss: power lost" "$LIB_WORK/powerloss.1.log")"

pl_mount "$MB" "$LIB_WORK/meta" "$LIB_WORK/powerloss.2.log"
check "tesserafs mounts on the metadata the power loss left" lib_local mount
mountpoint -q "$TESSERA_MNT" || bail "not mounted"

bad=0
while read -r name size seed; do
	if ! "$DATAGEN" verify "$D/$name" "$size" "$seed" >"$LIB_WORK/verify.out" 2>&1; then
		bad=$((bad + 1))
		diag "$name (size $size, seed $seed): $(head -n 1 "$LIB_WORK/verify.out")"
	fi
done <"$SYNCED"
check "every fsynced file is there with its last fsynced content ($(wc -l <"$SYNCED") files, $bad wrong)" \
	test "$bad" -eq 0
present=0 unreadable=0
while read -r name seed; do
	[[ -e $D/$name ]] || continue
	present=$((present + 1))
	cat "$D/$name" >/dev/null 2>&1 || { unreadable=$((unreadable + 1)); diag "$name: read error"; }
done <"$UNSYNCED"
check "the unsynced files that are there ($present of $(wc -l <"$UNSYNCED")) can be read" \
	test "$unreadable" -eq 0
check "crashload: the namespace is consistent and its $durable durable files are intact" \
	"$CL" check "$CLDIR" "$CLLOG"
check "tesserafs unmounts" lib_local unmount
lib_scrub 0 "tessera-scrub -n on the metadata after the power loss finds nothing" "$TESSERA_META" -n
lib_finish
