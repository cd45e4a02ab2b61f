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
# Requests to blockd are SigV4-signed (signing is part of the cost compared); nginx gets plain
# requests: static GET, and PUT through its WebDAV module (dav_methods PUT). nginx does not
# fsync a PUT; blockd does (temp file, fsync, rename, fsync of the directory) before it
# answers, so the PUT ratio includes the price of durability.
#
# nginx is installed with apt-get when missing (root needed); this script starts it on
# 127.0.0.1 with a temporary prefix and config and stops it by its PID. Environment:
# TESSERA_BUILD, BENCH_DIR (scratch; default a new directory under /var/tmp),
# BENCH_SECONDS (per measurement, default 3).
set -euo pipefail

REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${TESSERA_BUILD:-$REPO/build}
BLOCKD="$BUILD/tessera-blockd"
BCC="$BUILD/tests/bcclient"
SECS=${BENCH_SECONDS:-3}
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

# run SERVER OP SIZE CONC -> sets R_rate R_tput R_p50 R_p99
run() {
	local server=$1 op=$2 size=$3 conc=$4 bytes out url prefix sign=
	bytes=$([[ $size == 1m ]] && echo 1048576 || echo 4096)
	if [[ $server == blockd ]]; then url=$BURL; sign=sign; else url=$NURL; fi
	prefix=$([[ $op == get ]] && echo "bench/obj-$size" || echo "bench/put-$size")
	out=$("$BCC" bench "$url" "$prefix" "$op" "$bytes" "$conc" "$SECS" $sign 2>"$W/bench.err") || {
		echo "# $server $op $size c$conc failed: $(head -n 3 "$W/bench.err")" >&2
	}
	R_rate=$(awk '$1 == "rate" { print $2 }' <<<"$out")
	R_tput=$(awk '$1 == "throughput" { print $2 }' <<<"$out")
	R_p50=$(awk '$1 == "p50" { print $2 }' <<<"$out")
	R_p99=$(awk '$1 == "p99" { print $2 }' <<<"$out")
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "nan" }'; }

echo "# blockd $BURL vs nginx $("$NGINX" -v 2>&1 | sed 's/.*: //') $NURL, $(nproc) cores, ${SECS}s per figure"
for op in get put; do
	for size in 1m 4k; do
		for conc in 1 8 32; do
			name="${op}_${size}_c${conc}"
			run blockd "$op" "$size" "$conc"
			b_rate=$R_rate b_tput=$R_tput b_p50=$R_p50 b_p99=$R_p99
			run nginx "$op" "$size" "$conc"
			n_rate=$R_rate n_tput=$R_tput n_p50=$R_p50 n_p99=$R_p99
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
		done
	done
done
