#!/usr/bin/env bash
# bench/blockd: tessera-blockd against nginx on the same machine, in the same run.
#
# For 1 MiB GET, 1 MiB PUT, 4 KiB GET and 4 KiB PUT at concurrency 1, 8 and 32 over loopback
# (keep-alive connections driven by libcurl multi: tests/helpers/bcclient.c "bench"), prints
# one `name value unit` line per figure:
#     blockd_<op>_<size>_c<N>_{rate,throughput,p50,p99}  (req/s, MiB/s, ms, ms)
#     nginx_<op>_<size>_c<N>_{...}
#     ratio_<op>_<size>_c<N> blockd/nginx                (x; latency ratios are nginx/blockd,
#                                                          so > 1 always means blockd is better)
# Requests to blockd are SigV4-signed as tesserafs's block client sends them (verifying them
# is part of the cost compared; the load generator signs with a cached signing key, see
# tests/helpers/bcclient.c) and PUTs carry "x-tessera-etag: no-md5" as the block client's do;
# nginx gets plain requests: static GET, and PUT through its WebDAV module (dav_methods PUT).
# nginx does not fsync a PUT (and a PUT that replaces the previous one before writeback never
# reaches the disk at all); blockd makes it durable (temp file, fdatasync, rename, fsync of the
# directory, shared between concurrent PUTs) before it answers, so the PUT ratio includes the
# price of durability, which at concurrency 1 is the disk's flush latency.
#
# The machine may be shared: every figure is measured BENCH_REPEAT times, blockd and nginx
# alternately, and the median of each is reported (the ratio is of the medians).
#
# nginx is installed with apt-get when missing (root needed); this script starts it on
# 127.0.0.1 with a temporary prefix and config and stops it by its PID. Environment:
# TESSERA_BUILD, BENCH_DIR (scratch; default a new directory under /var/tmp),
# BENCH_SECONDS (per measurement, default 2), BENCH_REPEAT (default 3).
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TESSERA_BUILD:-$REPO/build}
BLOCKD="$BUILD/tessera-blockd"
BCC="$BUILD/tests/bcclient"
SECS=${BENCH_SECONDS:-2}
REPEAT=${BENCH_REPEAT:-3}
export TESSERA_ACCESS_KEY=bench TESSERA_SECRET_KEY=bench-secret

for f in "$BLOCKD" "$BCC"; do
	[[ -x $f ]] || { echo "bench/blockd: $f not built" >&2; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [[ ! -x $NGINX ]]; then
	if [[ $(id -u) -eq 0 ]]; then
		echo "# installing nginx" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null 2>&1 ||
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null 2>&1 || true
	fi
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
	[[ -x $NGINX ]] || { echo "bench/blockd: nginx is not installed and could not be" >&2; exit 1; }
fi

DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/tessera-bench-blockd.XXXXXX)}
mkdir -p "$DIR"
W=$(mktemp -d "$DIR/blockd.XXXXXX")
BPID= NPID=
cleanup() {
	[[ -n $BPID ]] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
	[[ -n $NPID ]] && kill "$NPID" 2>/dev/null
	for _ in 1 2 3 4 5 6 7 8 9 10; do [[ -n $NPID ]] && kill -0 "$NPID" 2>/dev/null && sleep 0.2; done
	rm -rf "$W"
	[[ -z ${BENCH_DIR:-} ]] && rmdir "$DIR" 2>/dev/null
	return 0
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---- tessera-blockd
mkdir -p "$W/bd"
"$BLOCKD" --data "$W/bd" --listen 127.0.0.1:0 --port-file "$W/bd.port" --max-connections 256 \
	>"$W/blockd.log" 2>&1 &
BPID=$!
for _ in $(seq 100); do [[ -s $W/bd.port ]] && break; sleep 0.05; done
BURL="http://127.0.0.1:$(cat "$W/bd.port")"

# ---- nginx (WebDAV PUT, static GET), one worker per core as blockd uses every core
NPORT=$(free_port)
mkdir -p "$W/ng/root" "$W/ng/tmp" "$W/ng/logs"
# Started as root, nginx's workers would run as nobody and could not write the WebDAV root.
NUSER=$([[ $(id -u) -eq 0 ]] && echo "user root;" || true)
cat >"$W/ng/nginx.conf" <<EOF
$NUSER
daemon off;
master_process on;
worker_processes auto;
pid $W/ng/nginx.pid;
error_log $W/ng/logs/error.log warn;
events { worker_connections 1024; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	keepalive_timeout 60;
	client_body_temp_path $W/ng/tmp;
	proxy_temp_path $W/ng/tmp;
	fastcgi_temp_path $W/ng/tmp;
	uwsgi_temp_path $W/ng/tmp;
	scgi_temp_path $W/ng/tmp;
	client_max_body_size 64m;
	client_body_buffer_size 1m;
	server {
		listen 127.0.0.1:$NPORT;
		root $W/ng/root;
		location / {
			dav_methods PUT;
			create_full_put_path on;
			dav_access user:rw;
		}
	}
}
EOF
"$NGINX" -p "$W/ng" -c "$W/ng/nginx.conf" >"$W/ng/logs/stdout" 2>&1 &
NPID=$!
NURL="http://127.0.0.1:$NPORT"
for _ in $(seq 100); do curl -s -o /dev/null "$NURL/" && break; sleep 0.05; done

# ---- objects to GET
head -c 1048576 /dev/urandom >"$W/1m"
head -c 4096 /dev/urandom >"$W/4k"
curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user "bench:bench-secret" -X PUT "$BURL/bench" >/dev/null
for s in 1m 4k; do
	curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user "bench:bench-secret" -T "$W/$s" \
		"$BURL/bench/obj-$s" >/dev/null
	curl -sf -T "$W/$s" "$NURL/bench/obj-$s" >/dev/null ||
		{ echo "bench/blockd: nginx refused a PUT: $(tail -n 3 "$W/ng/logs/error.log")" >&2; exit 1; }
done

# run SERVER OP SIZE CONC -> appends "rate tput p50 p99" to $W/res.SERVER
run() {
	local server=$1 op=$2 size=$3 conc=$4 bytes out url prefix sign=
	bytes=$([[ $size == 1m ]] && echo 1048576 || echo 4096)
	if [[ $server == blockd ]]; then url=$BURL; sign=sign; else url=$NURL; fi
	prefix=$([[ $op == get ]] && echo "bench/obj-$size" || echo "bench/put-$size")
	# A failed run ends the benchmark: counted as zeros it would pull the median down.
	out=$("$BCC" bench "$url" "$prefix" "$op" "$bytes" "$conc" "$SECS" $sign 2>"$W/bench.err") || {
		echo "bench/blockd: $server $op $size c$conc failed: $(head -n 3 "$W/bench.err")" >&2
		exit 1
	}
	grep -q '^rate ' <<<"$out" || { echo "bench/blockd: $server $op $size c$conc: no rate in the output" >&2; exit 1; }
	awk '$1 == "rate" { r = $2 } $1 == "throughput" { t = $2 } $1 == "p50" { a = $2 }
	     $1 == "p99" { b = $2 } END { print r + 0, t + 0, a + 0, b + 0 }' <<<"$out" >>"$W/res.$server"
}
# median SERVER COLUMN
median() { sort -g -k"$2,$2" "$W/res.$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }
status_field() { curl -s "$BURL/-/status" | python3 -c "import json, sys; print(json.load(sys.stdin).get('$1', 0))"; }

echo "# blockd $BURL vs nginx $("$NGINX" -v 2>&1 | sed 's/.*: //') $NURL, $(nproc) cores, ${SECS}s per figure, median of $REPEAT"
for op in get put; do
	for size in 1m 4k; do
		for conc in 1 8 32; do
			name="${op}_${size}_c${conc}"
			rm -f "$W/res.blockd" "$W/res.nginx"
			f0=$(status_field dir_fsyncs) w0=$(status_field dir_syncs_wanted)
			for _ in $(seq "$REPEAT"); do
				run blockd "$op" "$size" "$conc"
				run nginx "$op" "$size" "$conc"
			done
			b_rate=$(median blockd 1) b_tput=$(median blockd 2) b_p50=$(median blockd 3) b_p99=$(median blockd 4)
			n_rate=$(median nginx 1) n_tput=$(median nginx 2) n_p50=$(median nginx 3) n_p99=$(median nginx 4)
			if [[ $size == 1m ]]; then
				echo "blockd_${name}_throughput $b_tput MiB/s"
				echo "nginx_${name}_throughput $n_tput MiB/s"
			else
				echo "blockd_${name}_rate $b_rate req/s"
				echo "nginx_${name}_rate $n_rate req/s"
			fi
			echo "blockd_${name}_p50 $b_p50 ms"
			echo "blockd_${name}_p99 $b_p99 ms"
			echo "nginx_${name}_p50 $n_p50 ms"
			echo "nginx_${name}_p99 $n_p99 ms"
			echo "ratio_${name} $(ratio "$b_rate" "$n_rate") x"
			echo "ratio_${name}_p50 $(ratio "$n_p50" "$b_p50") x"
			echo "ratio_${name}_p99 $(ratio "$n_p99" "$b_p99") x"
			if [[ $op == put ]]; then
				# Group commit: directory fsyncs per directory change (1 = no sharing).
				f1=$(status_field dir_fsyncs) w1=$(status_field dir_syncs_wanted)
				echo "blockd_${name}_dir_fsyncs_per_put $(ratio $((f1 - f0)) $((w1 - w0))) x"
			fi
		done
	done
done
