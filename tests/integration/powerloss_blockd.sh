#!/usr/bin/env bash
# powerloss_blockd: tessera-blockd on a disk that loses power (tests/helpers/powerloss.c).
#
# blockd's data directory is on the power-loss helper. Four clients (curl --aws-sigv4, each
# with keys of its own, in nested "directories") PUT objects of 0 B to 300 KB (small ones
# through the page cache, those of 128 KiB and more with O_DIRECT), overwrite them and DELETE
# some, and log each request before it is sent ("try") and after a 200/204 ("ack"). While
# they run, the power is cut; then blockd is SIGKILLed, the helper unmounted and mounted
# again over the synced state, and blockd restarted. Then, for every key: an acknowledged
# PUT reads back byte-exact unless a later request to the key was in flight at the power
# loss (then it is that one's outcome, never anything else); an acknowledged DELETE stays
# deleted likewise; every object stored is one a client sent. blockd must also have failed
# the requests after the power loss rather than acknowledge them, and start again cleanly.
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

command -v curl >/dev/null || lib_skip "curl is not installed"
lib_require "$BLOCKD" "$POWERLOSS"

lib_init
B=$LIB_WORK/backing
M=$LIB_WORK/mnt
BLOCKD_DATA=$M/blockd

# client ID: PUTs, overwrites and DELETEs keys c<ID>/... until $STOP exists.
client() {
	local id=$1 log=$LIB_WORK/client.$1.log body=$LIB_WORK/body.$1 n=0 key size seed code
	local OUT=/dev/null
	local sizes=(0 1 4095 4096 5000 20000 65536 131072 150000 300000)
	while [[ ! -e $STOP ]]; do
		n=$((n + 1))
		key="c$id/d$((RANDOM % 3))/k$((RANDOM % 25))"
		if ((RANDOM % 8 == 0)); then
			echo "try DEL $key" >>"$log"
			code=$(s3 -X DELETE "$(url "tessera/$key")")
			[[ $code == 204 ]] && echo "ack DEL $key" >>"$log"
		else
			size=${sizes[RANDOM % ${#sizes[@]}]}
			seed=$((id * 100000 + n))
			"$DATAGEN" write "$body" "$size" "$seed" >/dev/null || return 1
			echo "try PUT $key $size $seed" >>"$log"
			code=$(s3 -T "$body" "$(url "tessera/$key")")
			[[ $code == 200 ]] && echo "ack PUT $key $size $seed" >>"$log"
		fi
		[[ $code == 200 || $code == 204 ]] || echo "err $code" >>"$log"
	done
}

acks() { cat "$LIB_WORK"/client.*.log 2>/dev/null | grep -c '^ack'; }

pl_mount "$B" "$M" "$LIB_WORK/powerloss.1.log"
blockd_start blockd.1 --max-object-size 1M || bail "blockd starts on the helper"
ok "blockd serves from a data directory on the power-loss helper (port $BLOCKD_PORT)"

STOP=$LIB_WORK/stop
CLIENTS=()
for id in 1 2 3 4; do
	client "$id" &
	CLIENTS+=($!)
done
end=$((SECONDS + 60))
while (($(acks) < 300 && SECONDS < end)); do sleep 0.2; done
before=$(acks)
check "power loss with the clients running ($before requests acknowledged so far)" pl_power_loss
sleep 1
touch "$STOP"
for p in "${CLIENTS[@]}"; do wait "$p"; done
total=$(acks)
errs=$(cat "$LIB_WORK"/client.*.log | grep -c '^err')
check "enough requests were acknowledged before the power loss ($before)" test "$before" -ge 100
check "blockd failed the requests after the power loss ($errs errors)" test "$errs" -ge 4
check "blockd is still running after the power loss (it reports errors, it does not crash)" \
	kill -0 "$BLOCKD_PID"
blockd_stop KILL
pl_unmount "$M" "$PL_PID"
check "the helper unmounted" eval '! mountpoint -q "$M"'

pl_mount "$B" "$M" "$LIB_WORK/powerloss.2.log"
blockd_start blockd.2 --max-object-size 1M || bail "blockd restarts on the synced state"
ok "blockd restarts on the synced state"
leftovers=$(find "$BLOCKD_DATA/tmp" -type f | wc -l)
check "no temp files left after the restart ($leftovers)" test "$leftovers" -eq 0

# Every key's allowed outcomes: the state of its last acknowledged request (or absent when it
# never had one), or that of a request after it that was not acknowledged (the one in flight
# at the power loss; those after it failed).
# One line per outcome: "KEY absent" or "KEY SIZE SEED".
for log in "$LIB_WORK"/client.*.log; do
	awk '
		$1 == "try" { o = ($2 == "DEL") ? "absent" : $4 " " $5; pend[$3] = pend[$3] "\n" $3 " " o; seen[$3] = 1 }
		$1 == "ack" { state[$3] = ($2 == "DEL") ? "absent" : $4 " " $5; delete pend[$3] }
		END {
			for (k in seen) {
				print k, (k in state) ? state[k] : "absent"
				if (k in pend) print substr(pend[k], 2)
			}
		}' "$log"
done | sort -u >"$LIB_WORK/allowed"
nkeys=$(cut -d' ' -f1 "$LIB_WORK/allowed" | sort -u | wc -l)
nacked_put=$(cat "$LIB_WORK"/client.*.log | grep -c '^ack PUT')

bad=0 present=0
OUT=$LIB_WORK/got
for key in $(cut -d' ' -f1 "$LIB_WORK/allowed" | sort -u); do
	code=$(s3 "$(url "tessera/$key")")
	got=""
	if [[ $code == 404 ]]; then
		got=absent
	elif [[ $code == 200 ]]; then
		present=$((present + 1))
		while read -r _ size seed; do
			[[ $size == absent ]] && continue
			if "$DATAGEN" verify "$OUT" "$size" "$seed" >/dev/null 2>&1; then
				got="$size $seed"
				break
			fi
		done < <(grep "^$key " "$LIB_WORK/allowed")
		[[ -n $got ]] || got="unexpected content ($(stat -c %s "$OUT") bytes)"
	else
		got="HTTP $code"
	fi
	if ! grep -qxF "$key $got" "$LIB_WORK/allowed"; then
		bad=$((bad + 1))
		((bad <= 10)) && diag "$key: $got; allowed: $(grep "^$key " "$LIB_WORK/allowed" | cut -d' ' -f2- | tr '\n' ';')"
	fi
done
check "every key reads back as its last acknowledged state or its in-flight request ($nkeys keys, $present present, $nacked_put PUTs and $((total - nacked_put)) DELETEs acknowledged, $bad wrong)" \
	test "$bad" -eq 0
# Nothing is stored that no client sent.
stray=$(cd "$BLOCKD_DATA/objects/tessera" && find . -type f | sed 's|^\./||' |
	sort | comm -23 - <(cut -d' ' -f1 "$LIB_WORK/allowed" | sort -u) | wc -l)
check "no object is stored under a key no client used ($stray)" test "$stray" -eq 0
rc=0
blockd_stop TERM || rc=$?
check "blockd stops cleanly on SIGTERM (exit $rc)" test "$rc" -eq 0
lib_finish
