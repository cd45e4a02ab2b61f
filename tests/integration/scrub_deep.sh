#!/usr/bin/env bash
# scrub_deep: --deep reads every fragment and checks its crc32c (doc/scrub.md "verify").
#  1. bytes flipped in the payload of fragments on two servers: the header check alone does not
#     see them, --deep -n names exactly those objects (and changes nothing), --deep rebuilds
#     exactly those, byte for byte as they were (src/scrub/scrub.c R1), a second --deep is clean;
#  2. --rate-limit: a deep scrub capped at a third of its bytes per second takes about 3 s;
#     an interrupted run (SIGINT) exits 8 and leaves META_DIR/scrub.checkpoint, the next one
#     resumes after it (every stripe counted once) and removes it (src/scrub/scrub.c R7);
#  3. a stripe left with k-1 good fragments: exit 4, nothing written (R5), and the report names
#     the file and its byte range; the other files still read.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

SCRUB="$TESSERA_BUILD/tessera-scrub"

lib_init
lib_up --servers 6 --k 4 --m 2
[[ -x $SCRUB ]] || bail "missing $SCRUB"

M=$TESSERA_MNT
S=$LIB_STRIPE
NAMES=(a b c)
SIZES=($((3 * S)) $((S + 12345)) $((5 << 20)))
for i in "${!NAMES[@]}"; do
	check "write ${NAMES[i]}" "$DATAGEN" write "$M/${NAMES[i]}" "${SIZES[i]}" $((500 + i))
done
# one stripe exactly, well above any inline threshold
mkdir -p "$M/dir"
check "write dir/victim" "$DATAGEN" write "$M/dir/victim" $((S - 100)) 599
VICTIM_INO=$(stat -c %i "$M/dir/victim")
check "unmount" lib_local unmount

OBJ=tessera # bucket directory under each server's data/objects
objects_of() { # objects_of SERVER: relative keys, sorted
	(cd "$LIB_WORK/servers/$1/data/objects/$OBJ" && find . -type f -not -path '*/journal/*' -not -path '*/filesystems/*' | sed 's|^\./||' | sort)
}
# flip FILE OFFSET: inverts one byte
flip() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	printf "\\$(printf '%03o' $((255 - b)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# ---- 1. corrupt one payload byte in three fragments (two on server 2, one on server 3)
mapfile -t K2 < <(objects_of 2 | grep -v "/$(printf '%016x' "$VICTIM_INO")/")
mapfile -t K3 < <(objects_of 3 | grep -v "/$(printf '%016x' "$VICTIM_INO")/")
((${#K2[@]} >= 2 && ${#K3[@]} >= 1)) || bail "too few fragments on servers 2 and 3"
BAD=("2 ${K2[0]}" "2 ${K2[1]}" "3 ${K3[0]}")
for e in "${BAD[@]}"; do
	read -r srv key <<<"$e"
	f="$LIB_WORK/servers/$srv/data/objects/$OBJ/$key"
	cp "$f" "$LIB_WORK/orig.$srv.$(basename "$key")"
	flip "$f" 200
done
EXPECT=$(for e in "${BAD[@]}"; do echo "$e"; done | sort)

check_rc 0 "header-only scrub does not read payloads" "$SCRUB" -n "$TESSERA_META"

# found KIND REPORT: "server key" lines of the findings of one kind in a --json report
found() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[2]))
for f in rep["findings"]:
    if f["kind"] == sys.argv[1]:
        print(f["server"], f["key"])
EOF
}

"$SCRUB" --deep -n --json "$TESSERA_META" >"$LIB_WORK/dry.json"
rc=$?
((rc == 4)) && ok "--deep -n finds damage: exit 4" || fail "--deep -n: exit $rc, want 4"
GOT=$(found fragment_corrupt "$LIB_WORK/dry.json" | sort)
[[ $GOT == "$EXPECT" ]] && ok "--deep -n names exactly the corrupted fragments" ||
	fail "--deep -n found: [$GOT], want: [$EXPECT]"
[[ -z $(found fragment_rebuilt "$LIB_WORK/dry.json") ]] && ok "dry run rebuilt nothing" || fail "dry run rebuilt"

"$SCRUB" --deep --json "$TESSERA_META" >"$LIB_WORK/fix.json"
rc=$?
((rc == 1)) && ok "--deep repairs: exit 1" || fail "--deep: exit $rc, want 1"
GOT=$(found fragment_corrupt "$LIB_WORK/fix.json" | sort)
[[ $GOT == "$EXPECT" ]] && ok "--deep found exactly the corrupted fragments" || fail "found [$GOT]"
GOT=$(found fragment_rebuilt "$LIB_WORK/fix.json" | sort)
[[ $GOT == "$EXPECT" ]] && ok "--deep rebuilt exactly those, on their own servers" || fail "rebuilt [$GOT]"
for e in "${BAD[@]}"; do
	read -r srv key <<<"$e"
	check "fragment $key on server $srv is byte-identical to the original" \
		cmp "$LIB_WORK/servers/$srv/data/objects/$OBJ/$key" "$LIB_WORK/orig.$srv.$(basename "$key")"
done
check_rc 0 "second --deep is clean" "$SCRUB" --deep "$TESSERA_META"

# ---- 2. rate limit; checkpoint and resume
"$SCRUB" --deep --json "$TESSERA_META" >"$LIB_WORK/clean.json"
BYTES=$(json_stat bytes_checked "$LIB_WORK/clean.json")
STRIPES=$(json_stat stripes "$LIB_WORK/clean.json")
lib_time_ms "$SCRUB" --deep --json --rate-limit $((BYTES / 3)) "$TESSERA_META" >"$LIB_WORK/rl.json"
((LIB_RC == 0)) && ok "rate-limited scrub: exit 0" || fail "rate-limited scrub: exit $LIB_RC"
((LIB_MS >= 2500 && LIB_MS < 20000)) && ok "$BYTES bytes at $((BYTES / 3)) B/s took $LIB_MS ms" ||
	fail "$BYTES bytes at $((BYTES / 3)) B/s took $LIB_MS ms (want about 3000)"
CKPT="$TESSERA_META/scrub.checkpoint"
"$SCRUB" --deep --json --rate-limit $((BYTES / 4)) --window 1 "$TESSERA_META" \
	>"$LIB_WORK/int.json" 2>"$LIB_WORK/int.err" &
SPID=$!
for ((t = 0; t < 100; t++)); do
	[[ -f $CKPT ]] && break
	sleep 0.1
done
kill -INT "$SPID"
wait "$SPID"
rc=$?
((rc == 8)) && ok "interrupted scrub: exit 8" || fail "interrupted scrub: exit $rc"
[[ -f $CKPT ]] && ok "checkpoint left in the metadata directory" || fail "no checkpoint"
DONE1=$(json_stat stripes "$LIB_WORK/int.json")
((DONE1 > 0 && DONE1 < STRIPES)) && ok "$DONE1 of $STRIPES stripes done before the interrupt" ||
	fail "interrupted after $DONE1 of $STRIPES stripes"
"$SCRUB" --deep --json "$TESSERA_META" >"$LIB_WORK/res.json"
rc=$?
((rc == 0)) && ok "resumed scrub: exit 0" || fail "resumed scrub: exit $rc"
[[ $(json_stat resumed "$LIB_WORK/res.json") == 1 ]] && ok "it resumed" || fail "it did not resume"
[[ $(json_stat stripes "$LIB_WORK/res.json") == "$STRIPES" ]] && ok "every stripe counted once" ||
	fail "$(json_stat stripes "$LIB_WORK/res.json") stripes counted, want $STRIPES"
[[ ! -e $CKPT ]] && ok "checkpoint removed" || fail "checkpoint left"

# ---- 3. three of the victim's six fragments corrupt: k-1 good
n=0
for srv in 0 1 2 3 4 5; do
	while read -r key; do
		[[ -n $key ]] || continue
		if ((n < 3)); then
			flip "$LIB_WORK/servers/$srv/data/objects/$OBJ/$key" 300
			n=$((n + 1))
		fi
	done < <(objects_of "$srv" | grep "/$(printf '%016x' "$VICTIM_INO")/")
done
((n == 3)) || bail "could not corrupt three fragments of the victim ($n)"
BEFORE=$(lib_fragments | xargs md5sum | sort)
"$SCRUB" --deep "$TESSERA_META" >"$LIB_WORK/lost.txt" 2>&1
rc=$?
((rc == 4)) && ok "k-1 good fragments: exit 4" || fail "k-1 good fragments: exit $rc, want 4"
grep -q "UNRECOVERABLE: /dir/victim, bytes 0-$((S - 101)) " "$LIB_WORK/lost.txt" &&
	ok "the report names /dir/victim and its byte range" ||
	{ fail "the report does not name the file"; sed 's/^/#   /' "$LIB_WORK/lost.txt"; }
AFTER=$(lib_fragments | xargs md5sum | sort)
[[ $BEFORE == "$AFTER" ]] && ok "nothing written for the lost stripe" || fail "objects changed"
"$SCRUB" --deep --json "$TESSERA_META" >"$LIB_WORK/lost.json"
python3 - "$LIB_WORK/lost.json" <<'EOF' && ok "--json names the lost file" || fail "--json lacks the lost file"
import json, sys
rep = json.load(open(sys.argv[1]))
lost = [f for f in rep["findings"] if f["kind"] == "stripe_lost"]
sys.exit(0 if len(lost) == 1 and lost[0]["path"] == "/dir/victim" and lost[0]["offset"] == 0 else 1)
EOF

check "mount" lib_local mount
M=$TESSERA_MNT
for i in "${!NAMES[@]}"; do
	check "verify ${NAMES[i]}" "$DATAGEN" verify "$M/${NAMES[i]}" "${SIZES[i]}" $((500 + i))
done
lib_finish
