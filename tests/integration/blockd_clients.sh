#!/usr/bin/env bash
# blockd_clients: tessera-blockd against the clients that need nothing beyond the build and
# curl (blockd_interop.sh adds the npm ones: the AWS SDK and s3rver).
#
#  (a) curl's own --aws-sigv4 client: create a bucket, PUT/GET/ranged GET/HEAD/DELETE and a
#      listing, bytes compared;
#  (b) tesserafs's block client (tests/helpers/bcclient.c over blockclient.h): PUT/GET/ranged
#      GET/HEAD/DELETE, bytes compared, "not found" and a refused key (lib.sh bcclient_round).
#
# Environment: TESSERA_BUILD; the harness is lib.sh (time bound, cleanup, the blockd's log
# checked for sanitizer reports).
LIB_TIMEOUT=120
. "$(dirname "$0")/lib.sh"

BLOCKD_AK=tessera-interop
BLOCKD_SK='interop/secret+key=1'
lib_init
[[ -x $TESSERA_BUILD/tests/bcclient ]] || bail "missing $TESSERA_BUILD/tests/bcclient"
blockd_start blockd || bail "blockd starts"
EP="http://127.0.0.1:$BLOCKD_PORT"
ok "blockd starts ($EP)"

# ---------------------------------------------------------------- (a) curl --aws-sigv4

head -c 200000 /dev/urandom >"$LIB_WORK/obj"
code=$(s3 -X PUT "$EP/curlbucket")
check "curl: create bucket -> 200" test "$code" = 200
code=$(s3 -T "$LIB_WORK/obj" "$EP/curlbucket/k/1")
check "curl: PUT -> 200" test "$code" = 200
code=$(s3 "$EP/curlbucket/k/1")
check "curl: GET returns the bytes" eval 'test "$code" = 200 && cmp -s "$OUT" "$LIB_WORK/obj"'
code=$(s3 -r 5-104 "$EP/curlbucket/k/1")
check "curl: ranged GET -> 206, the slice" eval \
	'test "$code" = 206 && cmp -s "$OUT" <(tail -c +6 "$LIB_WORK/obj" | head -c 100)'
code=$(s3 -I "$EP/curlbucket/k/1")
check "curl: HEAD -> 200" test "$code" = 200
code=$(s3 "$EP/curlbucket?list-type=2")
check "curl: ListObjectsV2" eval 'test "$code" = 200 && grep -q "<Key>k/1</Key><LastModified>" "$OUT"'
code=$(s3 -X DELETE "$EP/curlbucket/k/1")
code2=$(s3 "$EP/curlbucket/k/1")
check "curl: DELETE -> 204, then 404" eval 'test "$code" = 204 && test "$code2" = 404'

# ---------------------------------------------------------------- (b) tesserafs's block client

s3 -X PUT "$EP/tessera-frags" >/dev/null
bcclient_round blockd "$EP" "$BLOCKD_AK" "$BLOCKD_SK" tessera-frags

rc=0
blockd_stop || rc=$?
check "blockd stops cleanly on SIGTERM (exit $rc)" test "$rc" -eq 0
lib_finish
