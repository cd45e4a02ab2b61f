#!/usr/bin/env bash
# blockd_robust: tessera-blockd under hostile or unlucky clients (what blockd_basic does not
# already cover).
#
#  - concurrent PUT/PUT/DELETE/GET of one key: every GET returns one of the PUT bodies whole
#    (with its own ETag) or 404, never a torn or mixed object (store.c invariants 1 and 3);
#  - parallel deletes of the last keys of one key directory: each is 204 (the directory that
#    one of them prunes is not an error for the others);
#  - a stalled client (half a request header) does not hold up other clients and is cut off
#    after --connection-timeout; a slow body is cut off too and leaves no temp file;
#  - the connection limit: clients beyond --max-connections get 503 SlowDown, and service
#    resumes when the stalled connections time out;
#  - request dates at the edges of the 15-minute skew window, in the past and the future;
#  - header size limits (one huge header, too many headers, an overlong request target);
#  - digests: a wrong x-amz-checksum-crc32, and the aws-chunked encoding done by hand
#    (good, wrong trailer checksum, truncated, malformed framing): nothing wrong is stored.
#
# Environment: TESSERA_BUILD; the harness is lib.sh (time bound, cleanup, work directory kept
# on failure, the blockd's log checked for sanitizer reports). About 40 s.
LIB_TIMEOUT=300
. "$(dirname "$0")/lib.sh"

BLOCKD_AK=tessera-robust
BLOCKD_SK='robust-secret'
lib_init
WORK=$LIB_WORK
DATA="$WORK/data"
BLOCKD_DATA=$DATA

blockd_start blockd || bail "blockd starts"
ok "blockd starts"
s3 -X PUT "$(url tessera)" >/dev/null

# ---------------------------------------------------------------- one key, many clients

for i in 1 2 3; do
	python3 -c "import sys; sys.stdout.buffer.write(bytes([$i * 40]) * (262144 + $i * 1000))" \
		>"$WORK/body$i"
done
md5s=" $(md5sum "$WORK"/body? | cut -c1-32 | tr '\n' ' ')"
STOP=$((SECONDS + 6))
writer() { while ((SECONDS < STOP)); do s3 -T "$WORK/body$1" "$(url tessera/hot)" >/dev/null; done; }
deleter() { while ((SECONDS < STOP)); do s3 -X DELETE "$(url tessera/hot)" >/dev/null; sleep 0.05; done; }
reader() { # prints one line per GET: "200 <md5 of body> <etag>" or "404"
	local o="$WORK/r$1" code
	while ((SECONDS < STOP)); do
		code=$(timeout 20 curl -sS --max-time 15 --aws-sigv4 "$BLOCKD_SIGV4" \
			--user "$BLOCKD_AK:$BLOCKD_SK" \
			-D "$o.h" -o "$o" -w '%{http_code}' "$(url tessera/hot)" 2>/dev/null)
		if [[ $code == 200 ]]; then
			echo "200 $(md5sum <"$o" | cut -c1-32) $(grep -i '^etag:' "$o.h" | tr -dc '0-9a-f' | tail -c 32)"
		else
			echo "$code"
		fi
	done >"$WORK/reads$1"
}
writer 1 & w1=$!; writer 2 & w2=$!; writer 3 & w3=$!; deleter & d1=$!
reader 1 & r1=$!; reader 2 & r2=$!
wait $w1 $w2 $w3 $d1 $r1 $r2
total=$(cat "$WORK"/reads? | wc -l)
bad=0; whole=0; gone=0
while read -r code sum etag; do
	if [[ $code == 404 ]]; then
		gone=$((gone + 1))
	elif [[ $code == 200 && $md5s == *" $sum "* && $sum == "$etag" ]]; then
		whole=$((whole + 1))
	else
		bad=$((bad + 1)); echo "# bad read: $code $sum $etag"
	fi
done < <(cat "$WORK"/reads?)
check "concurrent PUT x3/DELETE/GET of one key: $total reads, $whole whole bodies with their ETag, $gone 404, $bad torn" \
	eval '[[ $bad -eq 0 && $whole -gt 0 && $total -ge 20 ]]'
check "... and no temp file is left" no_tmp_leftovers

# ---------------------------------------------------------------- sibling deletes
# Deleting the last keys of one key directory in parallel: one delete prunes the emptied
# directory while another still syncs it; every delete of an existing key must still be 204.
printf 'x' >"$WORK/tiny"
codes=""
for round in 1 2 3 4 5; do
	for i in $(seq 16); do s3 -T "$WORK/tiny" "$(url "tessera/sib$round/k$i")" >/dev/null; done
	dels=()
	for i in $(seq 16); do
		(OUT="$WORK/del$i"; s3 -X DELETE "$(url "tessera/sib$round/k$i")" >"$WORK/code$i") &
		dels+=($!)
	done
	wait "${dels[@]}"
	for f in "$WORK"/code*; do codes+=" $(<"$f")"; done
	rm -f "$WORK"/code* "$WORK"/del*
done
n204=$(tr ' ' '\n' <<<"$codes" | grep -c '^204$')
check "80 parallel deletes of sibling keys: all 204 (got:${codes// 204/})" eval '[[ $n204 -eq 80 ]]'
left=$(find "$DATA/objects/tessera" -path '*sib*' 2>/dev/null | wc -l)
check "... and the key directories are gone" eval '[[ $left -eq 0 ]]'

# ---------------------------------------------------------------- stalled and slow clients

blockd_stop
blockd_start blockd --connection-timeout 2 --body-timeout 3 --max-connections 4 ||
	bail "blockd restarts"
ok "blockd restarts with --connection-timeout 2 --body-timeout 3 --max-connections 4"

exec 5<>"/dev/tcp/127.0.0.1/$BLOCKD_PORT"
printf 'GET /tessera/hot HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ' >&5
t0=$(date +%s%N)
code=$(s3 "$(url tessera/hot)")
t1=$(date +%s%N)
check "another client is served while one connection stalls mid-header ($(((t1 - t0) / 1000000)) ms)" \
	eval '[[ $code == 200 || $code == 404 ]] && (( (t1 - t0) / 1000000 < 1500 ))'
t0=$SECONDS
timeout 8 cat <&5 >/dev/null
closed_after=$((SECONDS - t0))
exec 5>&-
check "the stalled connection is closed by the server after the 2 s timeout (${closed_after} s)" \
	test "$closed_after" -le 5

# a body that stops halfway: cut off after the timeout, nothing stored, no temp file
{ head -c 50000 "$WORK/body1"; sleep 5; } | timeout 8 curl -sS --max-time 8 \
	--aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:$BLOCKD_SK" -H "Content-Length: 262144" -T - \
	"$(url tessera/slowbody)" >/dev/null 2>&1 &
slow=$!
sleep 3.5
code=$(s3 "$(url tessera/slowbody)")
check "a stalled PUT body is cut off by the timeout: nothing visible, no temp file" \
	eval '[[ $code == 404 ]] && no_tmp_leftovers'
wait "$slow" 2>/dev/null

# a body that keeps trickling (100 bytes every 0.2 s: never idle for the 2 s connection
# timeout) is cut off by --body-timeout while the client is still sending
t0=$(date +%s%N)
{
	for _ in $(seq 60); do
		head -c 100 "$WORK/body1" 2>/dev/null || break
		sleep 0.2
	done
} | {
	timeout 20 curl -sS -o /dev/null -w '%{http_code}' --max-time 20 \
		--aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:$BLOCKD_SK" -H "Content-Length: 6000" \
		-T - "$(url tessera/trickle)" \
		>"$WORK/trickle.code" 2>/dev/null
	date +%s%N >"$WORK/trickle.end"
}
cut_ms=$((($(cat "$WORK/trickle.end") - t0) / 1000000))
tcode=$(cat "$WORK/trickle.code")
check "a PUT body still trickling in is cut off by --body-timeout 3 (after ${cut_ms} ms of the 12 s it would take; answer ${tcode:-none})" eval '(( cut_ms >= 2500 && cut_ms < 7000 ))'
code=$(s3 "$(url tessera/trickle)")
check "... nothing of it is visible and no temp file is left" \
	eval '[[ $code == 404 ]] && no_tmp_leftovers'
check "... and the server says why (RequestTimeout in its log)" grep -q "RequestTimeout\|did not arrive within" "$WORK/blockd.log"

# ---------------------------------------------------------------- connection limit

for fd in 5 6 7 8; do
	eval "exec $fd<>/dev/tcp/127.0.0.1/$BLOCKD_PORT"
	printf 'GET /tessera/hot HTTP/1.1\r\nHost: 127.0.0.1\r\n' >&"$fd"
done
sleep 0.3
code=$(s3 -D "$WORK/hdr" "$(url tessera/hot)")
check "beyond --max-connections: 503 SlowDown with Connection: close" eval \
	'[[ $code == 503 ]] && xml_code SlowDown && grep -qi "^connection: close" "$WORK/hdr"'
code=$(req "$(url -/status)")
check "/-/status still answers at the connection limit" test "$code" = 200
sleep 3
code=$(s3 "$(url tessera/hot)")
check "service resumes once the stalled connections timed out ($code)" eval '[[ $code == 200 || $code == 404 ]]'
exec 5>&- 6>&- 7>&- 8>&-
check "the refusals are counted (slowdowns in /-/status)" test "$(status_field slowdowns)" -ge 1

# ---------------------------------------------------------------- dates

printf 'x' >"$WORK/small"
s3 -T "$WORK/small" "$(url tessera/dated)" >/dev/null
# curl 7.88 does not sign with a date given in an X-Amz-Date header of its own: these
# requests are signed here (SigV4 in a few lines of Python, independent of blockd's code).
signed_at() { # signed_at METHOD KEY OFFSET_S [BODYFILE]: prints the HTTP status, body to $OUT
	python3 - "$BLOCKD_PORT" "$BLOCKD_AK" "$BLOCKD_SK" "$@" >"$WORK/py" <<'PY'
import datetime, hashlib, hmac, http.client, sys
port, ak, sk, method, key, off = sys.argv[1:7]
body = open(sys.argv[7], "rb").read() if len(sys.argv) > 7 else b""
t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(off))
amz, day = t.strftime("%Y%m%dT%H%M%SZ"), t.strftime("%Y%m%d")
host = f"127.0.0.1:{port}"
path = "/tessera/" + key
h = {"host": host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": amz}
names = ";".join(sorted(h))
canon = "\n".join([method, path, "", "".join(f"{n}:{h[n]}\n" for n in sorted(h)), names,
                   "UNSIGNED-PAYLOAD"])
scope = f"{day}/us-east-1/s3/aws4_request"
sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canon.encode()).hexdigest()])
k = ("AWS4" + sk).encode()
for part in (day, "us-east-1", "s3", "aws4_request"):
    k = hmac.new(k, part.encode(), hashlib.sha256).digest()
sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
h["authorization"] = f"AWS4-HMAC-SHA256 Credential={ak}/{scope}, SignedHeaders={names}, Signature={sig}"
c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
c.request(method, path, body=body, headers=h)
r = c.getresponse()
sys.stderr.buffer.write(r.read())
print(r.status)
PY
}
for spec in "-840:200:14 minutes old" "840:200:14 minutes ahead" "-960:403:16 minutes old (expired)" \
	"960:403:16 minutes ahead" "-86400:403:a day old"; do
	IFS=: read -r off want what <<<"$spec"
	code=$(signed_at GET dated "$off" 2>"$OUT"; cat "$WORK/py")
	if [[ $want == 403 ]]; then
		check "x-amz-date $what -> 403 RequestTimeTooSkewed" eval '[[ $code == 403 ]] && xml_code RequestTimeTooSkewed'
	else
		check "x-amz-date $what -> 200 ($code)" test "$code" = 200
	fi
done
code=$(signed_at PUT expired-put -960 "$WORK/body1" 2>"$OUT"; cat "$WORK/py")
code2=$(s3 "$(url tessera/expired-put)")
check "an expired PUT ($code) stores nothing" eval '[[ $code == 403 && $code2 == 404 ]]'
code=$(signed_at PUT fresh-put -600 "$WORK/small" 2>"$OUT"; cat "$WORK/py")
check "a PUT signed 10 minutes ago is accepted ($code)" test "$code" = 200

# ---------------------------------------------------------------- header limits

big=$(head -c 70000 /dev/zero | tr '\0' 'a')
code=$(s3 -H "X-Big: $big" "$(url tessera/dated)")
check "a 70 KB header is refused (HTTP $code), not served" eval '[[ $code == 4* || $code == curl-failed ]]'
hdrs=()
for i in $(seq 1 120); do hdrs+=(-H "X-Many-$i: v"); done
code=$(s3 "${hdrs[@]}" "$(url tessera/dated)")
check "120 headers are refused (HTTP $code)" eval '[[ $code == 4* ]]'
long=$(head -c 9000 /dev/zero | tr '\0' 'k')
code=$(s3 "$(url "tessera/$long")")
check "a 9000-byte request target is refused (HTTP $code)" eval '[[ $code == 4* ]]'
code=$(s3 "$(url tessera/dated)")
check "the server still serves after the oversize requests" test "$code" = 200

# ---------------------------------------------------------------- digests and aws-chunked

printf 'hello world' >"$WORK/hw"
crc=$(python3 -c "import zlib,base64,struct; print(base64.b64encode(struct.pack('>I', zlib.crc32(b'hello world'))).decode())")
code=$(s3 -H "x-amz-checksum-crc32: AAAAAA==" -T "$WORK/hw" "$(url tessera/badcrc)")
code2=$(s3 "$(url tessera/badcrc)")
check "a wrong x-amz-checksum-crc32 -> 400 BadDigest, nothing stored" eval \
	'[[ $code == 400 && $code2 == 404 ]]'
code=$(s3 -H "x-amz-checksum-crc32: $crc" -T "$WORK/hw" "$(url tessera/goodcrc)")
check "the right x-amz-checksum-crc32 -> 200" test "$code" = 200

chunked() { # chunked KEY FILE DECODED_LEN
	s3 -X PUT -H "x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER" \
		-H "Content-Encoding: aws-chunked" -H "x-amz-decoded-content-length: $3" \
		-H "x-amz-trailer: x-amz-checksum-crc32" --data-binary @"$2" "$(url "tessera/$1")"
}
printf '5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:%s\r\n\r\n' "$crc" >"$WORK/ck-good"
code=$(chunked ck-good "$WORK/ck-good" 11)
s3 "$(url tessera/ck-good)" >/dev/null
check "aws-chunked body with a CRC32 trailer -> 200, decoded body stored" eval \
	'[[ $code == 200 ]] && cmp -s "$OUT" "$WORK/hw"'
printf '5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n' >"$WORK/ck-badcrc"
printf '5\r\nhello\r\n6\r\n wor' >"$WORK/ck-short"
printf '5\r\nhelloXX6\r\n world\r\n0\r\n\r\n' >"$WORK/ck-garbled"
printf '5\r\nhello\r\n0\r\n\r\n' >"$WORK/ck-lenmismatch"
for spec in "ck-badcrc:BadDigest" "ck-short:IncompleteBody" "ck-garbled:InvalidArgument" \
	"ck-lenmismatch:IncompleteBody"; do
	IFS=: read -r name want <<<"$spec"
	code=$(chunked "$name" "$WORK/$name" 11)
	c=$(grep -o '<Code>[A-Za-z]*</Code>' "$OUT")
	code2=$(s3 "$(url "tessera/$name")")
	check "aws-chunked $name -> 400 $want, nothing stored ($code $c)" eval \
		'[[ $code == 400 && $c == "<Code>$want</Code>" && $code2 == 404 ]]'
done
code=$(s3 -X PUT -H "x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD" \
	--data-binary @"$WORK/ck-good" "$(url tessera/signedchunks)")
check "signed aws-chunked (not implemented) is refused ($code)" eval '[[ $code == 4* || $code == 501 ]]'
check "no temp file is left after the refused bodies" no_tmp_leftovers

rc=0
blockd_stop || rc=$?
check "blockd stops cleanly on SIGTERM (exit $rc)" test "$rc" -eq 0
lib_finish
