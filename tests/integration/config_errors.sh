#!/usr/bin/env bash
# config_errors: every program meets a bad configuration with a clear error naming the file,
# a non-zero exit, and nothing lost or half-done:
#  - tessera-blockd: credentials file missing, a directory, malformed, empty, unreadable (as an
#    unprivileged user); a data directory it cannot write;
#  - tessera-mkfs: --config missing, malformed, with an unknown key, unreadable: no metadata
#    directory is made;
#  - tesserafs: META_DIR/credentials with no key pair, missing, a directory, or a key the
#    servers refuse, in the foreground and detached: it does not mount (no dead mount left);
#    with the key restored it mounts and every byte is there;
#  - tessera-scrub: a key the servers refuse, or servers down, is an operational error
#    (exit 12: errors left + operational), reported as unavailable, never as lost data, and
#    nothing is changed.
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

B=$TESSERA_BUILD
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)

lib_init
CFG="$LIB_WORK/cfg"
mkdir -p "$CFG/data" "$CFG/adir"
chmod 755 "$LIB_WORK" "$CFG"

# expect RC PATTERN DESC CMD...: CMD exits with RC and its output matches PATTERN (grep -E).
expect() {
	local want=$1 pat=$2 desc=$3 rc
	shift 3
	timeout 30 "$@" >"$LIB_WORK/out" 2>&1
	rc=$?
	if ((rc == want)) && grep -Eq -- "$pat" "$LIB_WORK/out"; then
		ok "$desc: exit $rc"
	else
		fail "$desc: exit $rc (want $want), output: $(head -c 400 "$LIB_WORK/out")"
	fi
}

# ---- tessera-blockd
echo "onlyone" >"$CFG/bad"
: >"$CFG/empty"
echo "AK SK" >"$CFG/good" && chmod 600 "$CFG/good"
BD=("$B/tessera-blockd" --data "$CFG/data" --listen 127.0.0.1:0)
expect 2 "cannot read credentials file '/nonexistent'" "blockd: missing credentials file" \
	"${BD[@]}" --credentials /nonexistent
expect 2 "Is a directory" "blockd: credentials file is a directory" "${BD[@]}" --credentials "$CFG/adir"
expect 2 "bad' at line 1" "blockd: malformed credentials (line named)" "${BD[@]}" --credentials "$CFG/bad"
expect 2 "no credentials" "blockd: empty credentials file" "${BD[@]}" --credentials "$CFG/empty"
expect 2 "Permission denied" "blockd: unreadable credentials file" \
	"${NOBODY[@]}" "$B/tessera-blockd" --data "$CFG/data2" --listen 127.0.0.1:0 --credentials "$CFG/good"
mkdir -p "$CFG/rootonly" && chmod 700 "$CFG/rootonly"
cp "$CFG/good" "$CFG/public" && chmod 644 "$CFG/public"
expect 1 "cannot prepare data directory" "blockd: a data directory it cannot write" \
	"${NOBODY[@]}" "$B/tessera-blockd" --data "$CFG/rootonly" --listen 127.0.0.1:0 --credentials "$CFG/public"

# ---- tessera-mkfs
printf 'k = 4\nbogus line\n' >"$CFG/mk.bad"
printf 'server = http://127.0.0.1:1\nk = 4\ncolour = red\n' >"$CFG/mk.unknown"
export TESSERA_ACCESS_KEY=AK TESSERA_SECRET_KEY=SK
expect 1 "cannot read config '/nonexistent'" "mkfs: missing config" \
	"$B/tessera-mkfs" --config /nonexistent "$CFG/m1"
expect 2 "line 2" "mkfs: malformed config (line named)" "$B/tessera-mkfs" --config "$CFG/mk.bad" "$CFG/m2"
expect 2 "unknown key 'colour'" "mkfs: unknown key" "$B/tessera-mkfs" --config "$CFG/mk.unknown" "$CFG/m3"
chmod 600 "$CFG/mk.bad"
expect 1 "Permission denied" "mkfs: unreadable config" \
	"${NOBODY[@]}" "$B/tessera-mkfs" --config "$CFG/mk.bad" "$CFG/m4"
unset TESSERA_ACCESS_KEY TESSERA_SECRET_KEY
[[ ! -e $CFG/m1 && ! -e $CFG/m2 && ! -e $CFG/m3 && ! -e $CFG/m4 ]] &&
	ok "mkfs made no metadata directory for any of them" || fail "a metadata directory appeared"

# ---- tesserafs and tessera-scrub, on a real cluster
lib_up
M=$TESSERA_MNT
META=$TESSERA_META
check "write a file" "$DATAGEN" write "$M/f" $((5 << 20)) 71
check "unmount" lib_local unmount
cp "$META/credentials" "$CFG/creds.saved"
M2="$LIB_WORK/mnt2"
mkdir -p "$M2"
lib_at_exit "! mountpoint -q '$M2' || fusermount3 -u '$M2' || fusermount3 -uz '$M2'"
not_mounted() { ! mountpoint -q "$M2" && ls "$M2" >/dev/null 2>&1; }

echo garbage >"$META/credentials"
expect 1 "no usable access key" "tesserafs -f: credentials without a key pair" "$B/tesserafs" -f "$META" "$M2"
check "... nothing mounted, no dead mount" not_mounted
expect 1 "no usable access key" "tesserafs (detached): credentials without a key pair" "$B/tesserafs" "$META" "$M2"
check "... nothing mounted" not_mounted
rm -f "$META/credentials"
expect 1 "credentials" "tesserafs -f: credentials missing" "$B/tesserafs" -f "$META" "$M2"
mkdir "$META/credentials"
expect 1 "credentials" "tesserafs -f: credentials is a directory" "$B/tesserafs" -f "$META" "$M2"
expect 8 "no usable access key" "scrub: credentials is a directory" "$B/tessera-scrub" -n "$META"
rmdir "$META/credentials"

# ---- numbers: one strict parser everywhere (no sign, no spaces, bounds named)
for bad in workers=-1 "workers= 4" workers=65 request_timeout=0 "hedge_ms=1e3" \
	read_ahead_kb=18446744073709551616; do
	expect 2 "bad ${bad%%=*} " "tesserafs: -o $bad is refused" "$B/tesserafs" -f -o "$bad" "$META" "$M2"
done
check "... nothing mounted" not_mounted
expect 2 "invalid number of seconds '-1' for --body-timeout" "blockd: --body-timeout -1" \
	"${BD[@]}" --credentials "$CFG/good" --body-timeout -1
expect 2 "invalid number '0' for --max-connections" "blockd: --max-connections 0" \
	"${BD[@]}" --credentials "$CFG/good" --max-connections 0
expect 16 "bad --gc-grace '-1'" "scrub: --gc-grace -1 (once read as UINT64_MAX)" \
	"$B/tessera-scrub" --gc-grace -1 "$META"
expect 16 "bad --jobs '0'" "scrub: -j 0" "$B/tessera-scrub" -j 0 "$META"
echo "$(cut -d' ' -f1 "$CFG/creds.saved") wrong-secret" >"$META/credentials"
expect 1 "refuses the filesystem's access key" "tesserafs -f: a key the servers refuse" \
	"$B/tesserafs" -f "$META" "$M2"
expect 1 "refuses the filesystem's access key" "tesserafs (detached): a key the servers refuse" \
	"$B/tesserafs" "$META" "$M2"
check "... nothing mounted, no dead mount" not_mounted
expect 12 "refuses the filesystem's access key" "scrub: a key the servers refuse" "$B/tessera-scrub" "$META"
"$B/tessera" status "$META" >"$LIB_WORK/status" 2>&1 && [[ $(grep -c " refuses " "$LIB_WORK/status") == 6 ]] &&
	ok "status shows the servers refusing the key" || fail "status: $(cat "$LIB_WORK/status")"
grep -q "unavailable, not lost" "$LIB_WORK/out" && ! grep -q UNRECOVERABLE "$LIB_WORK/out" &&
	ok "... reported as unavailable, not as lost" || fail "report: $(head -c 600 "$LIB_WORK/out")"
cp "$CFG/creds.saved" "$META/credentials"

# servers down: unavailable, not lost, and nothing changed
for i in 0 1 2; do check "stop server $i" lib_local stop-server "$i"; done
expect 12 "unavailable, not lost" "scrub with 3 of 6 servers down" "$B/tessera-scrub" "$META"
for i in 0 1 2; do check "start server $i" lib_local start-server "$i"; done
expect 0 "0 damaged" "scrub with every server back is clean" "$B/tessera-scrub" "$META"

check "mount with the key restored" lib_local mount
check "every byte is there" "$DATAGEN" verify "$TESSERA_MNT/f" $((5 << 20)) 71
lib_finish
