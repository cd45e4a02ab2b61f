#!/usr/bin/env bash
# mkfs.sh: tessera-mkfs end to end, without servers (mkfs does not contact them).
# Usage errors exit 2, k+m > servers is refused, a second mkfs is refused (exit 1) and
# --force overwrites (tessera status then shows the new k, m and stripe size and a new uuid);
# the credentials file is private; a config file works and the command
# line overrides it. No cluster: mkfs runs on directories of lib.sh's work directory.
# Environment: TESSERA_BUILD (build directory), TESSERA_SRC (source tree).

. "$(dirname "$0")/lib.sh"

MKFS="$TESSERA_BUILD/tessera-mkfs"
lib_init
[[ -x $MKFS ]] || bail "missing $MKFS"
WORK=$LIB_WORK
exec </dev/null # mkfs never reads a terminal here

servers=()
for p in 9000 9001 9002 9003 9004 9005; do
	servers+=(--server "http://127.0.0.1:$p")
done
keys=(--access-key AKIDTEST --secret-key s3cr3t/KEY+x)

# ---- usage errors: exit 2
check_rc 2 "no arguments" "$MKFS"
check_rc 0 "--help" "$MKFS" --help
check_rc 2 "unknown option" "$MKFS" --bogus "$WORK/x"
check_rc 2 "two directories" "$MKFS" "${servers[@]}" "${keys[@]}" "$WORK/x" "$WORK/y"
check_rc 2 "no keys" env -u TESSERA_ACCESS_KEY -u TESSERA_SECRET_KEY \
	"$MKFS" "${servers[@]}" "$WORK/x"
check_rc 2 "no servers" "$MKFS" "${keys[@]}" "$WORK/x"
check_rc 2 "k+m > servers" "$MKFS" "${servers[@]:0:10}" "${keys[@]}" "$WORK/x"
check_out 2 "at least 6 servers, 5 given" "k+m > servers says why" \
	"$MKFS" "${servers[@]:0:10}" "${keys[@]}" "$WORK/x"
check_rc 2 "k = 0" "$MKFS" "${servers[@]}" "${keys[@]}" --k 0 "$WORK/x"
check_rc 2 "m = 0" "$MKFS" "${servers[@]}" "${keys[@]}" --m 0 "$WORK/x"
check_rc 2 "k > 32" "$MKFS" "${servers[@]}" "${keys[@]}" --k 33 --m 1 "$WORK/x"
check_rc 2 "m > 16" "$MKFS" "${servers[@]}" "${keys[@]}" --k 1 --m 17 "$WORK/x"
check_rc 2 "quorum below k" "$MKFS" "${servers[@]}" "${keys[@]}" --quorum 3 "$WORK/x"
check_rc 2 "quorum above k+m" "$MKFS" "${servers[@]}" "${keys[@]}" --quorum 7 "$WORK/x"
check_rc 2 "inline-max above 64k" "$MKFS" "${servers[@]}" "${keys[@]}" --inline-max 65537 "$WORK/x"
check_rc 2 "inline-max not a size" "$MKFS" "${servers[@]}" "${keys[@]}" --inline-max 4q "$WORK/x"
check_rc 2 "stripe size not a multiple of k*64" \
	"$MKFS" "${servers[@]}" "${keys[@]}" --stripe-size 1000 "$WORK/x"
check_rc 2 "stripe size above k*64M" \
	"$MKFS" "${servers[@]}" "${keys[@]}" --stripe-size 512M "$WORK/x"
check_rc 2 "ftp URL" "$MKFS" "${servers[@]}" --server ftp://h "${keys[@]}" "$WORK/x"
check_rc 2 "duplicate server" "$MKFS" "${servers[@]}" --server http://127.0.0.1:9000/ \
	"${keys[@]}" "$WORK/x"
check_rc 2 "bad server option" "$MKFS" "${servers[@]}" --server http://h,color=red \
	"${keys[@]}" "$WORK/x"
check_rc 2 "bad bucket" "$MKFS" "${servers[@]}" "${keys[@]}" --bucket Not_A_Bucket "$WORK/x"
check_rc 2 "bad uuid" "$MKFS" "${servers[@]}" "${keys[@]}" --uuid nope "$WORK/x"
[[ -e $WORK/x ]] && fail "a refused mkfs created the directory" || ok "nothing created"

# ---- a filesystem, then a second mkfs refused, then --force
meta="$WORK/meta"
check_out 0 "k=4 m=2.*quorum 5" "mkfs with defaults" "$MKFS" "${servers[@]}" "${keys[@]}" "$meta"
[[ -f $meta/CURRENT ]] && ok "database created" || fail "no $meta/CURRENT"
if [[ $(stat -c %a "$meta/credentials" 2>/dev/null) == 600 &&
	$(cat "$meta/credentials") == "AKIDTEST s3cr3t/KEY+x" ]]; then
	ok "credentials file, mode 0600"
else
	fail "credentials file: $(stat -c %a "$meta/credentials" 2>&1) $(cat "$meta/credentials" 2>&1)"
fi
check_rc 1 "second mkfs refused" "$MKFS" "${servers[@]}" "${keys[@]}" "$meta"
check_out 1 "use --force" "refusal mentions --force" "$MKFS" "${servers[@]}" "${keys[@]}" "$meta"
# The geometry as tessera status reads it back from the metadata (the servers need not answer:
# status prints them as down and still exits 0).
geometry() { "$TESSERA_BUILD/tessera" status "$1" 2>/dev/null | sed -n '1s/^filesystem //p'; }
g0=$(geometry "$meta")
[[ $g0 == *": k=4 m=2, stripe 4.0 MiB, write quorum 5,"* ]] && ok "status shows the default geometry" ||
	fail "default geometry: '$g0'"
check_rc 0 "--force overwrites" "$MKFS" "${servers[@]}" "${keys[@]}" --k 2 --m 2 \
	--stripe-size 256k --force --quiet "$meta"
g1=$(geometry "$meta")
[[ $g1 == *": k=2 m=2, stripe 256.0 KiB, write quorum 3,"* ]] && ok "--force: the new geometry is in place" ||
	fail "geometry after --force: '$g1'"
[[ -n $g1 && ${g1%%:*} != "${g0%%:*}" ]] && ok "--force: a new filesystem uuid" ||
	fail "uuid not renewed by --force: '$g0' then '$g1'"
out=$("$MKFS" "${servers[@]}" "${keys[@]}" --force --quiet "$meta" 2>&1)
[[ -z $out ]] && ok "--quiet prints nothing" || fail "--quiet printed: $out"
g2=$(geometry "$meta")
[[ $g2 == *": k=4 m=2, stripe 4.0 MiB,"* ]] && ok "--force back to the defaults" ||
	fail "geometry after the second --force: '$g2'"

# ---- keys from the environment, config file, command line overriding it
check_rc 0 "keys from the environment" env TESSERA_ACCESS_KEY=a TESSERA_SECRET_KEY=b \
	"$MKFS" "${servers[@]}" --quiet "$WORK/env"
[[ $(cat "$WORK/env/credentials" 2>&1) == "a b" ]] && ok "environment keys stored" ||
	fail "environment keys: $(cat "$WORK/env/credentials" 2>&1)"

cat >"$WORK/conf" <<'EOF'
# a test configuration
server = http://10.0.0.1:9000,zone=a   # inline comment
server = http://10.0.0.2:9000,zone=b,weight=2T
server = http://10.0.0.3:9000,zone=c
k = 2
m = 1
stripe-size = 128k
bucket = fs-bucket
access-key = CONFKEY
secret-key = CONFSECRET
EOF
check_out 0 "k=2 m=1.*quorum 3" "config file" "$MKFS" --config "$WORK/conf" "$WORK/c1"
check_out 0 "10.0.0.2:9000  zone=b  weight=2199023255552" "config server options" \
	"$MKFS" --config "$WORK/conf" --force "$WORK/c1"
check_out 0 "k=1 m=2" "command line overrides the config" \
	"$MKFS" --config "$WORK/conf" --k 1 --m 2 --force "$WORK/c1"
check_rc 2 "config: unknown key" bash -c "echo 'colour = red' >'$WORK/bad'; '$MKFS' --config '$WORK/bad' '$WORK/c2'"
check_rc 1 "config: missing file" "$MKFS" --config "$WORK/nonexistent" "$WORK/c2"

lib_finish
