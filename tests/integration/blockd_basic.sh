#!/usr/bin/env bash
# blockd_basic: end-to-end test of tessera-blockd with curl --aws-sigv4 (the same libcurl
# signing the filesystem's block client uses).
#
# Starts blockd on 127.0.0.1:0 (port from --port-file) over a temporary data directory and
# checks: object round trip, ranges, HEAD, DELETE, the non-MD5 ETag that
# "x-tessera-etag: no-md5" allows, keep-alive, listing, the payload-hash
# modes curl produces (none, POSTFIELDS body hash, explicit hash, UNSIGNED-PAYLOAD), that
# unsigned, wrongly signed, skewed, traversal and oversize requests are refused without
# storing anything, that a replaced object's old version is deleted, and that objects
# acknowledged before a SIGKILL survive a restart with no temp files left behind (store.c
# invariants 1, 2 and 4).
#
# Environment: TESSERA_BUILD (build directory); the harness is lib.sh (time bound, cleanup,
# work directory kept on failure, the blockd's log checked for sanitizer reports). The
# disk-full part needs root (a tmpfs); without it the test ends as skipped.
LIB_TIMEOUT=180
. "$(dirname "$0")/lib.sh"

BLOCKD_AK=tessera-test
BLOCKD_SK='s3cr3t/key+with=odd/chars'
lib_init
WORK=$LIB_WORK
DATA="$WORK/data"
BLOCKD_DATA=$DATA
SMALL_MNT=
lib_at_exit '[[ -z $SMALL_MNT ]] || umount "$SMALL_MNT"'

# ---------------------------------------------------------------- refuses to start badly

if "$BLOCKD" --data "$DATA" --listen 127.0.0.1:0 >"$WORK/nokey.log" 2>&1; then
	fail "refuses to start without credentials"
else
	rc=$?
	if [[ $rc -eq 2 ]] && grep -q "no credentials" "$WORK/nokey.log"; then
		ok "refuses to start without credentials (exit 2, clear message)"
	else
		fail "refuses to start without credentials (exit $rc)"
	fi
fi
rc=0; "$BLOCKD" --bogus >/dev/null 2>&1 || rc=$?
check "unknown option is a usage error (exit 2)" test "$rc" -eq 2

# ---------------------------------------------------------------- basic object operations

TESSERA_DEBUG=1 blockd_start blockd --max-object-size 1M || bail "blockd starts"
ok "blockd starts on an ephemeral port ($BLOCKD_PORT) and answers /-/status"

grep -q '"objects":0' "$OUT" && grep -q '"dirs":\[{"path"' "$OUT" &&
	ok "status JSON has dirs and objects" || fail "status JSON: $(head -c 300 "$OUT")"

head -c 300000 /dev/urandom >"$WORK/obj"
code=$(s3 -T "$WORK/obj" "$(url tessera/dir/sub/obj1)")
check "PUT object -> 200 (curl -T, upload with read callback)" test "$code" = 200
etag=$(md5sum <"$WORK/obj" | cut -c1-32)

code=$(s3 -D "$WORK/hdr" "$(url tessera/dir/sub/obj1)")
check "GET object -> 200" test "$code" = 200
check "GET returns the identical bytes" cmp -s "$OUT" "$WORK/obj"
check "GET has the MD5 ETag" grep -qi "^etag: \"$etag\"" "$WORK/hdr"

code=$(s3 -D "$WORK/hdr" -H "Range: bytes=1000-1999" "$(url tessera/dir/sub/obj1)")
check "ranged GET a-b -> 206" test "$code" = 206
check "ranged GET a-b returns the slice" cmp -s "$OUT" <(tail -c +1001 "$WORK/obj" | head -c 1000)
check "ranged GET has Content-Range" grep -qi "^content-range: bytes 1000-1999/300000" "$WORK/hdr"
code=$(s3 -H "Range: bytes=-100" "$(url tessera/dir/sub/obj1)")
check "ranged GET -n returns the tail" cmp -s "$OUT" <(tail -c 100 "$WORK/obj")
code=$(s3 -H "Range: bytes=299990-" "$(url tessera/dir/sub/obj1)")
check "ranged GET a- returns the rest" cmp -s "$OUT" <(tail -c 10 "$WORK/obj")
code=$(s3 -H "Range: bytes=300000-" "$(url tessera/dir/sub/obj1)")
check "unsatisfiable range -> 416 InvalidRange" eval 'test "$code" = 416 && xml_code InvalidRange'

code=$(s3 -I -D "$WORK/hdr" "$(url tessera/dir/sub/obj1)")
check "HEAD -> 200 with Content-Length and ETag" eval \
	'test "$code" = 200 && grep -qi "^content-length: 300000" "$WORK/hdr" && grep -qi "^etag: \"$etag\"" "$WORK/hdr"'

# "x-tessera-etag: no-md5" (what tesserafs's block client sends): the ETag is a unique tag,
# not the MD5, and GET/HEAD return the same one; with a Content-MD5 it is the MD5 again.
# 300000 bytes go to disk with O_DIRECT (and a truncated last block), 5000 through the cache.
for n in 300000 5000; do
	head -c "$n" "$WORK/obj" >"$WORK/nomd5"
	code=$(s3 -D "$WORK/hdr" -H "x-tessera-etag: no-md5" -T "$WORK/nomd5" "$(url tessera/nomd5/$n)")
	tag=$(grep -i '^etag:' "$WORK/hdr" | tr -d '\r' | sed 's/^[^"]*//')
	check "PUT $n bytes with x-tessera-etag: no-md5 -> 200, a non-MD5 ETag ($tag)" eval \
		'test "$code" = 200 && [[ $tag =~ ^\"[0-9a-f]{32}-1\"$ ]]'
	code=$(s3 -D "$WORK/hdr" "$(url tessera/nomd5/$n)")
	check "GET of it: the same bytes and the same ETag" eval \
		'test "$code" = 200 && cmp -s "$OUT" "$WORK/nomd5" && grep -qiF "etag: $tag" "$WORK/hdr"'
	code=$(s3 -I -D "$WORK/hdr" "$(url tessera/nomd5/$n)")
	check "HEAD of it: the same ETag" eval 'test "$code" = 200 && grep -qiF "etag: $tag" "$WORK/hdr"'
done
md5b64=$(openssl dgst -md5 -binary "$WORK/nomd5" | base64)
code=$(s3 -D "$WORK/hdr" -H "x-tessera-etag: no-md5" -H "Content-MD5: $md5b64" -T "$WORK/nomd5" \
	"$(url tessera/nomd5/withmd5)")
check "no-md5 with a Content-MD5 -> the MD5 ETag" eval \
	'test "$code" = 200 && grep -qi "^etag: \"$(md5sum <"$WORK/nomd5" | cut -c1-32)\"" "$WORK/hdr"'
for k in 300000 5000 withmd5; do s3 -X DELETE "$(url tessera/nomd5/$k)" >/dev/null; done

# Connection reuse, counted by the server: a run of PUT, GET, ranged GET, HEAD, a 404, list,
# DELETE and GET again in one curl invocation (--next keeps the connection cache) must use
# one TCP connection. /-/status "connections" counts accepts; the two status requests
# around the run use one connection each.
c0=$(status_field connections)
A=(--aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:$BLOCKD_SK" -o /dev/null -w '%{http_code}:%{num_connects} ')
timeout 20 curl -sS --max-time 15 \
	"${A[@]}" -T "$WORK/obj" "$(url tessera/ka/1)" --next \
	"${A[@]}" "$(url tessera/ka/1)" --next \
	"${A[@]}" -H "Range: bytes=0-9" "$(url tessera/ka/1)" --next \
	"${A[@]}" -I "$(url tessera/ka/1)" --next \
	"${A[@]}" "$(url tessera/ka/none)" --next \
	"${A[@]}" -X PUT --data-binary @"$WORK/obj" "$(url tessera/ka/2)" --next \
	"${A[@]}" "$(url 'tessera?list-type=2&prefix=ka%2F')" --next \
	"${A[@]}" -X DELETE "$(url tessera/ka/1)" --next \
	"${A[@]}" -X DELETE "$(url tessera/ka/2)" --next \
	"${A[@]}" -I "$(url tessera/ka/1)" >"$WORK/keepalive" 2>&1 || true
c1=$(status_field connections)
check "keep-alive: 10 requests (PUT GET range HEAD 404 PUT list DELETE DELETE HEAD) answered: $(cat "$WORK/keepalive")" \
	eval '[[ $(cat "$WORK/keepalive") == "200:1 200:0 206:0 200:0 404:0 200:0 200:0 204:0 204:0 404:0 " ]]'
check "keep-alive: the server accepted 1 connection for the run ($((c1 - c0 - 1)))" \
	test "$((c1 - c0 - 1))" -eq 1
req "$(url metrics)" >/dev/null
check "/metrics counts connections, requests by method and status, a latency histogram" eval \
	'grep -q "^tessera_blockd_connections_total [0-9]" "$OUT" &&
	 grep -q "^tessera_blockd_requests_total{method=\"PUT\",status=\"200\"} [1-9]" "$OUT" &&
	 grep -q "^tessera_blockd_request_duration_seconds_bucket{le=\"+Inf\"} [1-9]" "$OUT" &&
	 grep -q "^tessera_blockd_dir_free_bytes{path=" "$OUT"'

code=$(s3 "$(url 'tessera?list-type=2&prefix=dir%2F')")
check "ListObjectsV2 lists the key" eval 'test "$code" = 200 && grep -q "<Key>dir/sub/obj1</Key>" "$OUT"'

code=$(s3 -X DELETE "$(url tessera/dir/sub/obj1)")
check "DELETE -> 204" test "$code" = 204
code=$(s3 -X DELETE "$(url tessera/dir/sub/obj1)")
check "DELETE again (absent) -> 204" test "$code" = 204
code=$(s3 "$(url tessera/dir/sub/obj1)")
check "GET after DELETE -> 404 NoSuchKey" eval 'test "$code" = 404 && xml_code NoSuchKey'
code=$(s3 "$(url nosuchbucket/x)")
check "GET in a missing bucket -> 404 NoSuchBucket" eval 'test "$code" = 404 && xml_code NoSuchBucket'

# ---------------------------------------------------------------- payload hash modes

printf 'posted body\n' >"$WORK/small"
code=$(s3 -X PUT --data-binary @"$WORK/small" "$(url tessera/posted)")
check "PUT with a body hash signed by curl (POSTFIELDS) -> 200" test "$code" = 200
s3 "$(url tessera/posted)" >/dev/null
check "POSTFIELDS object reads back" cmp -s "$OUT" "$WORK/small"
sha=$(sha256sum <"$WORK/small" | cut -c1-64)
code=$(s3 -H "x-amz-content-sha256: $sha" -T "$WORK/small" "$(url tessera/hashed)")
check "PUT with a matching x-amz-content-sha256 -> 200" test "$code" = 200
badsha=$(echo other | sha256sum | cut -c1-64)
code=$(s3 -H "x-amz-content-sha256: $badsha" -T "$WORK/small" "$(url tessera/badhash)")
check "PUT whose body does not match x-amz-content-sha256 -> 400" eval \
	'test "$code" = 400 && xml_code XAmzContentSHA256Mismatch'
code=$(s3 "$(url tessera/badhash)")
check "... and nothing was stored" test "$code" = 404
code=$(s3 -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -T "$WORK/small" "$(url tessera/unsigned)")
check "PUT with UNSIGNED-PAYLOAD -> 200" test "$code" = 200

# ---------------------------------------------------------------- refused requests

code=$(req --aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:wrong-secret" -T "$WORK/small" "$(url tessera/wrongsecret)")
check "PUT with a wrong secret -> 403 SignatureDoesNotMatch" eval \
	'test "$code" = 403 && xml_code SignatureDoesNotMatch'
code=$(req --aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:wrong-secret" -X PUT --data-binary @"$WORK/small" \
	"$(url tessera/wrongsecret)")
check "PUT (POSTFIELDS) with a wrong secret -> 403" test "$code" = 403
code=$(s3 "$(url tessera/wrongsecret)")
check "... and nothing was stored" eval 'test "$code" = 404 && no_tmp_leftovers'
code=$(req --aws-sigv4 "$BLOCKD_SIGV4" --user "unknown:$BLOCKD_SK" "$(url tessera/posted)")
check "unknown access key -> 403 AccessDenied" eval 'test "$code" = 403 && xml_code AccessDenied'
code=$(req --aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:wrong-secret" "$(url tessera/posted)")
check "GET with a wrong secret -> 403 and no data" eval \
	'test "$code" = 403 && ! grep -q "posted body" "$OUT"'
code=$(req -T "$WORK/small" "$(url tessera/unsigned2)")
check "unsigned PUT -> 403 AccessDenied" eval 'test "$code" = 403 && xml_code AccessDenied'
code=$(req "$(url tessera/posted)")
check "unsigned GET -> 403 and no data" eval 'test "$code" = 403 && ! grep -q "posted body" "$OUT"'
code=$(req -X DELETE "$(url tessera/posted)")
code2=$(s3 "$(url tessera/posted)")
check "unsigned DELETE -> 403 and the object stays" eval 'test "$code" = 403 && test "$code2" = 200'
code=$(s3 -H "X-Amz-Date: 20200101T000000Z" "$(url tessera/posted)")
check "skewed x-amz-date -> 403 RequestTimeTooSkewed" eval \
	'test "$code" = 403 && xml_code RequestTimeTooSkewed'
code=$(s3 --path-as-is -T "$WORK/small" "$(url tessera/a/../../x)")
check "traversal key a/../../x -> 400 InvalidArgument" eval 'test "$code" = 400 && xml_code InvalidArgument'
code=$(s3 --path-as-is -T "$WORK/small" "$(url 'tessera/a/%2e%2e/%2E%2E/y')")
check "percent-encoded traversal -> 400" test "$code" = 400
code=$(s3 --path-as-is -T "$WORK/small" "$(url 'tessera//z')")
check "empty key component -> 400" test "$code" = 400
check "... and nothing was created anywhere for those keys" eval \
	'test -z "$(find "$WORK" \( -name x -o -name y -o -name z \) -print)"'
code=$(s3 -X POST "$(url tessera/posted)")
check "POST -> 405 MethodNotAllowed" eval 'test "$code" = 405 && xml_code MethodNotAllowed'

# ---------------------------------------------------------------- size limit

head -c $((2 * 1024 * 1024)) /dev/urandom >"$WORK/big"
code=$(s3 -T "$WORK/big" "$(url tessera/big)")
check "oversize PUT (Content-Length) -> 400 EntityTooLarge" eval 'test "$code" = 400 && xml_code EntityTooLarge'
head -c $((1536 * 1024)) "$WORK/big" >"$WORK/big15"
code=$(s3 -H "Transfer-Encoding: chunked" -T - "$(url tessera/bigchunked)" <"$WORK/big15")
check "oversize chunked PUT -> 400 EntityTooLarge" eval 'test "$code" = 400 && xml_code EntityTooLarge'
code=$(s3 "$(url tessera/big)"); code2=$(s3 "$(url tessera/bigchunked)")
check "... and nothing was stored" eval 'test "$code" = 404 && test "$code2" = 404 && no_tmp_leftovers'
head -c $((1024 * 1024)) "$WORK/big" >"$WORK/max"
code=$(s3 -T "$WORK/max" "$(url tessera/max)")
check "PUT of exactly the limit -> 200" test "$code" = 200

# a client that dies mid-body leaves nothing visible
{ head -c 100000 "$WORK/big"; sleep 2; } | timeout 1 curl -sS --max-time 1 \
	--aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:$BLOCKD_SK" -H "Content-Length: 500000" -T - \
	"$(url tessera/truncated)" >/dev/null 2>&1 || true
sleep 0.3
code=$(s3 "$(url tessera/truncated)")
check "a body cut short never becomes visible, temp removed" eval 'test "$code" = 404 && no_tmp_leftovers'

s3 "$(url -/status)" >/dev/null
check "status counts the stored objects" grep -q '"objects":4,' "$OUT"

# ---------------------------------------------------------------- replacing an object

# The replaced version is linked aside into tmp/ and unlinked by the deleter thread once the
# new one is durable (store.c, "Deferred deletes"): the key serves the new bytes at once,
# tmp/ empties, and the object count does not change.
head -c 300000 /dev/urandom >"$WORK/rep1"
head -c 5000 /dev/urandom >"$WORK/rep2"
s3 -T "$WORK/rep1" "$(url tessera/replace/k)" >/dev/null
s3 "$(url -/status)" >/dev/null
objs0=$(grep -o '"objects":[0-9]*,' "$OUT" | tail -n 1)
for i in 1 2 3; do
	s3 -T "$WORK/rep$((i % 2 + 1))" "$(url tessera/replace/k)" >/dev/null
done
code=$(s3 "$(url tessera/replace/k)")
check "a replaced object serves the new bytes" eval 'test "$code" = 200 && cmp -s "$OUT" "$WORK/rep2"'
check "... the old versions are deleted from tmp/" no_tmp_leftovers
s3 "$(url -/status)" >/dev/null
check "... and the object count is unchanged" eval \
	'[[ $(grep -o "\"objects\":[0-9]*," "$OUT" | tail -n 1) == "$objs0" ]]'
s3 -X DELETE "$(url tessera/replace/k)" >/dev/null

# ---------------------------------------------------------------- SIGKILL during PUTs

mkdir -p "$WORK/src"
: >"$WORK/acked"
(
	for i in $(seq 1 400); do
		head -c $((4096 + i * 37)) /dev/urandom >"$WORK/src/k$i"
		c=$(s3 -T "$WORK/src/k$i" "$(url "tessera/crash/k$i")")
		[[ $c == 200 ]] || break
		echo "k$i" >>"$WORK/acked"
	done
) &
writer=$!
sleep 1
blockd_stop KILL
wait "$writer" 2>/dev/null || true
nacked=$(wc -l <"$WORK/acked")
: >"$DATA/tmp/0123456789abcdef.old" # a replaced version the deleter had not removed yet
TESSERA_DEBUG=1 blockd_start blockd-restart --max-object-size 1M || bail "blockd restarts after SIGKILL"
ok "blockd restarts after SIGKILL ($nacked objects were acknowledged)"
check "no temp files (nor replaced versions) left after restart" no_tmp_leftovers
bad=0
while read -r k; do
	c=$(s3 "$(url "tessera/crash/$k")")
	if [[ $c != 200 ]] || ! cmp -s "$OUT" "$WORK/src/$k"; then bad=$((bad + 1)); fi
done <"$WORK/acked"
check "every acknowledged object is intact after SIGKILL ($nacked checked)" eval \
	'test "$bad" -eq 0 && test "$nacked" -gt 0'

# ---------------------------------------------------------------- clean stop

rc=0
blockd_stop || rc=$?
check "SIGTERM stops blockd with exit status 0" test "$rc" -eq 0

# ---------------------------------------------------------------- disk full (root only)

# A 2 MiB tmpfs as the data directory; skipped (the test then ends as skipped) where mounting
# is not allowed.
mkdir -p "$WORK/tiny"
if [[ $(id -u) -ne 0 ]]; then
	lib_skip_case "disk-full test needs root to mount a tmpfs"
elif ! mount -t tmpfs -o size=2m tmpfs "$WORK/tiny" 2>"$WORK/mount.err"; then
	lib_skip_case "disk-full test: cannot mount a tmpfs: $(head -n 1 "$WORK/mount.err")"
else
	SMALL_MNT="$WORK/tiny"
	BLOCKD_DATA="$WORK/tiny"
	TESSERA_DEBUG=1 blockd_start blockd-small || bail "blockd starts on a small tmpfs"
	head -c 600000 /dev/urandom >"$WORK/m"
	codes=""
	for i in 1 2 3 4; do codes+="$(s3 -T "$WORK/m" "$(url "tessera/full$i")") "; done
	check "PUT on a full disk -> 507 InsufficientStorage ($codes)" eval \
		'[[ $codes == "200 200 200 507 " ]] && xml_code InsufficientStorage'
	check "... no temp file is left behind" no_tmp_leftovers
	code=$(s3 "$(url tessera/full1)")
	check "reads keep working on a full disk" eval 'test "$code" = 200 && cmp -s "$OUT" "$WORK/m"'
	s3 -X DELETE "$(url tessera/full1)" >/dev/null
	code=$(s3 -T "$WORK/m" "$(url tessera/full4)")
	check "PUT works again once space is freed" test "$code" = 200
	blockd_stop || true
	umount "$SMALL_MNT" && SMALL_MNT=
	BLOCKD_DATA=$DATA
fi

lib_finish
