# lib.sh: shared harness of the end-to-end tests (sourced by tests/integration/*.sh).
#
# A test does:
#     LIB_TIMEOUT=300                  # optional, seconds for the whole test
#     . "$(dirname "$0")/lib.sh"
#     lib_init
#     lib_up --servers 6 --k 4 --m 2   # scripts/tessera-local up; sources cluster.env
#     check "a file round-trips" "$DATAGEN" verify "$TESSERA_MNT/f" 1M 7
#     lib_finish
#
# Time bound: sourcing lib.sh re-executes the test under timeout(1) (TESSERA_TEST_TIMEOUT
# overrides LIB_TIMEOUT, default 300 s). On expiry the whole process group gets SIGTERM (the
# daemons too), the test reports "not ok" and its cleanup still runs.
# Cleanup (trap on EXIT, INT, TERM): tessera-local down (unmount, stop every daemon by PID),
# the blockd of blockd_start and every PID given to lib_track_pid stopped;
# sanitizer reports ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:") in
# any daemon log turn the test into a failure; the work directory is removed on success (and
# on a skip) and kept on failure, with its path and the log tails printed; then every failed
# check is named again (lib_repeat_failures), just before the summary line.
# Skips: lib_skip REASON exits 77 (meson: skipped) when a prerequisite is absent, but only if
# nothing failed before (then it is a failure); lib_skip_case REASON marks one sub-case as
# not run: the test goes on and ends with 77 instead of 0. A skip never hides a failure.
# Environment: TESSERA_BUILD (build directory, default SRC/build), TESSERA_SRC (source tree),
# TESSERA_KEEP=1 keeps the work directory even on success.

if [[ -z ${TESSERA_TEST_TIMED:-} ]]; then
	export TESSERA_TEST_TIMED=1
	# -k: time for the cleanup trap after SIGTERM before SIGKILL.
	exec timeout -k 60 "${TESSERA_TEST_TIMEOUT:-${LIB_TIMEOUT:-300}}" bash "$0" "$@"
fi

set -uo pipefail

TESSERA_SRC=${TESSERA_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
TESSERA_BUILD=${TESSERA_BUILD:-$TESSERA_SRC/build}
TESSERA_BUILD=$(cd "$TESSERA_BUILD" && pwd -P) || { echo "bad TESSERA_BUILD" >&2; exit 1; }
export TESSERA_SRC TESSERA_BUILD
TESSERA_LOCAL="$TESSERA_SRC/scripts/tessera-local"
DATAGEN="$TESSERA_BUILD/tests/datagen"
LIB_NAME=$(basename "$0" .sh)
LIB_N=0
LIB_FAILED=0
LIB_WORK=""
LIB_CLEANED=0
LIB_START=$SECONDS

# ---- reporting

ok() {
	LIB_N=$((LIB_N + 1))
	echo "ok $LIB_N - $*"
}

# Every "not ok" line, repeated at the end of the output (lib_cleanup): meson test
# --print-errorlogs shows only a long log's last 100 lines, which the log tails fill.
LIB_NOT_OK=()
fail() {
	LIB_N=$((LIB_N + 1))
	LIB_FAILED=$((LIB_FAILED + 1))
	echo "not ok $LIB_N - $*"
	LIB_NOT_OK+=("not ok $LIB_N - $*")
}

# lib_repeat_failures: the first failed checks again, one line each (newlines folded, cut at
# 300 characters), so that the end of any log names them.
LIB_REPEAT_MAX=10
lib_repeat_failures() {
	local i line
	((${#LIB_NOT_OK[@]})) || return 0
	diag "$LIB_NAME: the ${#LIB_NOT_OK[@]} failed checks:"
	for ((i = 0; i < ${#LIB_NOT_OK[@]} && i < LIB_REPEAT_MAX; i++)); do
		line=${LIB_NOT_OK[i]//$'\n'/ \/ }
		((${#line} > 300)) && line="${line:0:300}..."
		diag "  $line"
	done
	((${#LIB_NOT_OK[@]} > LIB_REPEAT_MAX)) &&
		diag "  ... and $((${#LIB_NOT_OK[@]} - LIB_REPEAT_MAX)) more (above)"
	return 0
}

diag() {
	echo "# $*"
}

# lib_show OUTPUT: the first lines of a failed command's output, as diagnostics.
lib_show() {
	[[ -n $1 ]] && printf '%s\n' "$1" | head -n 20 | sed 's/^/#   /'
	return 0
}

# check DESC CMD...: runs CMD; ok when it exits 0 (its output is shown on failure).
check() {
	local desc=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	if ((rc == 0)); then
		ok "$desc"
	else
		fail "$desc (exit $rc: $*)"
		lib_show "$out"
	fi
	return "$rc"
}

# check_rc WANT DESC CMD...: ok when CMD exits with status WANT.
check_rc() {
	local want=$1 desc=$2 out rc
	shift 2
	out=$("$@" 2>&1)
	rc=$?
	if ((rc == want)); then
		ok "$desc"
	else
		fail "$desc (exit $rc, wanted $want: $*)"
		lib_show "$out"
	fi
	[[ $rc == "$want" ]]
}

# bail MSG: a fatal failure; the cleanup trap still runs.
bail() {
	fail "$*"
	diag "bailing out"
	exit 1
}

# lib_skip REASON: a prerequisite of the whole test is absent: exit 77. After a failure it is
# no skip: the test fails.
lib_skip() {
	if ((LIB_FAILED)); then
		diag "cannot go on ($*), and $LIB_FAILED checks failed already"
		exit 1
	fi
	LIB_SKIPPED+=("$*")
	diag "SKIP: $*"
	exit 77
}

# lib_skip_case REASON: one part of the test cannot run here; the rest goes on, and a test
# that passes everything else exits 77, not 0.
LIB_SKIPPED=()
lib_skip_case() {
	LIB_SKIPPED+=("$*")
	diag "SKIP: $*"
}

# check_or_skip DESC CMD...: like check, but CMD's exit status 77 means "cannot run here"
# (lib_skip_case), not a failure.
check_or_skip() {
	local desc=$1 out rc
	shift
	out=$("$@" 2>&1)
	rc=$?
	case $rc in
	0) ok "$desc" ;;
	77)
		lib_skip_case "$desc"
		lib_show "$out"
		;;
	*)
		fail "$desc (exit $rc: $*)"
		lib_show "$out"
		;;
	esac
	return 0
}

# check_out WANT_RC PATTERN DESC CMD...: ok when CMD exits with WANT_RC and its output (stdout
# and stderr) matches the extended regular expression PATTERN.
check_out() {
	local want=$1 pat=$2 desc=$3 out rc
	shift 3
	out=$("$@" 2>&1)
	rc=$?
	if ((rc == want)) && grep -qE -- "$pat" <<<"$out"; then
		ok "$desc"
	else
		fail "$desc (exit $rc, wanted $want and /$pat/: $*)"
		lib_show "$out"
	fi
	((rc == want))
}

# ---- cluster

# Runs tessera-local COMMAND on this test's work directory and re-reads cluster.env.
lib_local() {
	local cmd=$1 rc
	shift
	"$TESSERA_LOCAL" "$cmd" "$LIB_WORK" "$@"
	rc=$?
	lib_load_env
	return "$rc"
}

lib_load_env() {
	if [[ -f $LIB_WORK/cluster.env ]]; then
		# shellcheck disable=SC1091
		. "$LIB_WORK/cluster.env"
	fi
}

# lib_up [ARGS]: tessera-local up with this test's build; bails out on failure.
lib_up() {
	# meson test has just built everything: do not run ninja inside a test.
	if [[ -x $TESSERA_BUILD/tesserafs && -x $TESSERA_BUILD/tessera-blockd &&
		-x $TESSERA_BUILD/tessera-mkfs ]]; then
		export TESSERA_NO_BUILD=${TESSERA_NO_BUILD:-1}
	fi
	lib_local up --build "$TESSERA_BUILD" "$@" || bail "tessera-local up failed"
	ok "cluster up (${TESSERA_SERVER_COUNT} servers, k=$TESSERA_K m=$TESSERA_M)"
}

# The last lines of every daemon log of the work directory.
lib_log_tails() {
	local f
	for f in "$LIB_WORK"/servers/*/log "$LIB_WORK"/*.log; do
		[[ -s $f ]] || continue
		echo "#---- tail of $f"
		tail -n 25 "$f" | sed 's/^/#   /'
	done
}

# lib_log_sanitizers FILE [FROM]: fails when a sanitizer reported anything in FILE (from its
# byte FROM on, 1 = the start).
LIB_SAN_RE='ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:'
lib_log_sanitizers() {
	local f=$1 from=${2:-1}
	[[ -f $f ]] || return 0
	tail -c "+$from" "$f" | grep -qE "$LIB_SAN_RE" || return 0
	fail "sanitizer report in $f"
	tail -c "+$from" "$f" | grep -E -m 5 -A 12 "$LIB_SAN_RE" | sed 's/^/#   /'
	return 1
}

# Fails when a sanitizer reported anything in a daemon log of the cluster.
lib_check_sanitizers() {
	local f hits=0
	for f in "$LIB_WORK"/servers/*/log "$LIB_WORK/tesserafs.log" "$LIB_WORK/mkfs.log" \
		"$LIB_WORK"/powerloss*.log; do
		lib_log_sanitizers "$f" || hits=1
	done
	return "$hits"
}

# True while anything is still mounted below the work directory.
lib_mounted() {
	awk -v w="$LIB_WORK/" 'index($5, w) == 1 { found = 1 } END { exit !found }' \
		/proc/self/mountinfo
}

lib_cleanup() {
	local rc=$1
	((LIB_CLEANED)) && return
	LIB_CLEANED=1
	# A second signal (the time bound's SIGTERM to the whole group) must not cut the cleanup
	# short; timeout -k sends SIGKILL 60 s later if it hangs.
	trap '' INT TERM
	if [[ -n $LIB_WORK && -d $LIB_WORK ]]; then
		if [[ -f $LIB_WORK/settings ]]; then
			timeout 120 "$TESSERA_LOCAL" down "$LIB_WORK" >/dev/null 2>&1 ||
				fail "tessera-local down failed"
		fi
		[[ -n $BLOCKD_PID ]] && { blockd_stop || true; }
		lib_stop_tracked
		local hook
		for hook in "${LIB_AT_EXIT[@]}"; do
			eval "$hook" || fail "cleanup step failed: $hook"
		done
		lib_check_sanitizers || true
		((LIB_FAILED)) && ((rc == 0 || rc == 77)) && rc=1
		if ((rc != 0 && rc != 77)) || [[ ${TESSERA_KEEP:-0} == 1 ]]; then
			((rc != 0 && rc != 77)) && lib_log_tails
			diag "work directory kept: $LIB_WORK"
		elif lib_mounted; then
			diag "something is still mounted under $LIB_WORK; not removing it"
			rc=1
		else
			rm -rf "$LIB_WORK"
		fi
	fi
	((LIB_FAILED)) && ((rc == 0 || rc == 77)) && rc=1
	((rc == 0 && ${#LIB_SKIPPED[@]})) && rc=77
	lib_repeat_failures
	diag "$LIB_NAME: $((LIB_N - LIB_FAILED)) passed, $LIB_FAILED failed, ${#LIB_SKIPPED[@]} skipped, $((SECONDS - LIB_START)) s"
	exit "$rc"
}

# lib_at_exit CMD: a shell command for the cleanup, run after the cluster is down and before
# the work directory is removed (e.g. unmounting a filesystem the test mounted in it).
LIB_AT_EXIT=()
lib_at_exit() {
	LIB_AT_EXIT+=("$1")
}

lib_on_signal() {
	fail "$LIB_NAME interrupted by SIG$1 (time bound ${TESSERA_TEST_TIMEOUT:-${LIB_TIMEOUT:-300}} s?)"
	exit 1
}

# lib_init: makes the work directory and installs the cleanup traps; sets OUT.
lib_init() {
	[[ -x $DATAGEN ]] || { echo "not ok - missing $DATAGEN" >&2; exit 1; }
	LIB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-$LIB_NAME.XXXXXX") ||
		{ echo "not ok - mktemp failed" >&2; exit 1; }
	OUT="$LIB_WORK/out" # req's response bodies
	trap 'lib_cleanup $?' EXIT
	trap 'lib_on_signal INT' INT
	trap 'lib_on_signal TERM' TERM
	diag "$LIB_NAME: work directory $LIB_WORK, build $TESSERA_BUILD"
}

# lib_finish: exit 1 when anything failed, else 77 when a sub-case was skipped, else 0.
lib_finish() {
	if ((LIB_FAILED)); then
		exit 1
	fi
	((${#LIB_SKIPPED[@]})) && exit 77
	exit 0
}

# lib_track_pid PID: a process this test started, stopped (SIGTERM, then SIGKILL after 10 s)
# by the cleanup unless lib_untrack_pid said it is gone.
LIB_PIDS=()
lib_track_pid() {
	LIB_PIDS+=("$1")
}

# lib_untrack_pid PID: the process was waited for: its PID is not ours any more, never signal it.
lib_untrack_pid() {
	local keep=() p
	for p in "${LIB_PIDS[@]}"; do
		[[ $p == "$1" ]] || keep+=("$p")
	done
	LIB_PIDS=("${keep[@]}")
}

lib_stop_tracked() {
	local p t
	for p in "${LIB_PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${LIB_PIDS[@]}"; do
		for ((t = 0; t < 100; t++)); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	LIB_PIDS=()
}

# ---- helpers for the tests

# Stripe size of the cluster (tessera-local uses mkfs's default unless TESSERA_STRIPE_SIZE).
LIB_STRIPE=$((4 << 20))

# lib_time_ms CMD...: runs CMD and sets LIB_MS (elapsed ms) and LIB_RC.
lib_time_ms() {
	local t0 t1
	t0=$(date +%s%N)
	"$@"
	LIB_RC=$?
	t1=$(date +%s%N)
	LIB_MS=$(((t1 - t0) / 1000000))
	return 0
}

# Fragment object files stored by the servers (not the metadata journal's objects, which live
# under <uuid>/journal/ and filesystems/).
lib_fragments() {
	find "$LIB_WORK"/servers/*/data/objects -type f -not -path '*/journal/*' -not -path '*/filesystems/*' 2>/dev/null
}

# json_stat NAME FILE: a number from the "stats" of a tessera-scrub --json report.
json_stat() {
	grep -o "\"$1\":[0-9]*" "$2" | head -n 1 | cut -d: -f2
}

# lib_scrub WANT_RC DESC TARGET ARGS...: runs tessera-scrub --json ARGS TARGET (a metadata
# directory or a mountpoint); the report goes to $REPORT, stderr to $LIB_WORK/scrub.err.
# Passes when the exit status is WANT_RC, else fails and shows both.
lib_scrub() {
	local want=$1 desc=$2 target=$3 rc
	shift 3
	REPORT="$LIB_WORK/report.json"
	"$TESSERA_BUILD/tessera-scrub" --json "$@" "$target" >"$REPORT" 2>"$LIB_WORK/scrub.err"
	rc=$?
	if ((rc == want)); then
		ok "$desc: exit $rc"
	else
		fail "$desc: exit $rc, wanted $want"
		head -c 2000 "$REPORT" | sed 's/^/#   /'
		sed 's/^/#   /' "$LIB_WORK/scrub.err"
	fi
	return 0
}

# ---- a set of files written and verified with datagen

# The set: names relative to the mountpoint, sizes and datagen seeds, in the order written.
LIB_FILES=()
LIB_SIZES=()
LIB_SEEDS=()

# write_file NAME SIZE SEED: writes $TESSERA_MNT/NAME (directories made) with datagen and adds
# it to the set (one check).
write_file() {
	LIB_FILES+=("$1")
	LIB_SIZES+=("$2")
	LIB_SEEDS+=("$3")
	mkdir -p "$(dirname "$TESSERA_MNT/$1")"
	check "write $1 ($2 bytes)" "$DATAGEN" write "$TESSERA_MNT/$1" "$2" "$3"
}

# verify_all WHEN: verifies every file of the set (one check each, "verify NAME (WHEN)").
verify_all() {
	local i
	for i in "${!LIB_FILES[@]}"; do
		check "verify ${LIB_FILES[i]} ($1)" "$DATAGEN" verify "$TESSERA_MNT/${LIB_FILES[i]}" \
			"${LIB_SIZES[i]}" "${LIB_SEEDS[i]}"
	done
}

# remount: drops the kernel's page cache and tesserafs' own caches (and its view of server
# health): sync, drop_caches where writable, tessera-local remount. Bails out on failure.
remount() {
	sync
	[[ -w /proc/sys/vm/drop_caches ]] && echo 3 >/proc/sys/vm/drop_caches
	lib_local remount >/dev/null || bail "remount failed"
}

# server_objects I: how many fragment objects the cluster's server I holds on its disk (the
# journal's objects not counted).
server_objects() {
	find "$LIB_WORK/servers/$1/data/objects" -type f -not -path '*/journal/*' -not -path '*/filesystems/*' 2>/dev/null | wc -l
}

# ---- one block server without a cluster (blockd_*.sh)
#
# BLOCKD_AK, BLOCKD_SK: the credentials blockd_start gives the server and s3 signs with (set
# them before the first start). BLOCKD_DATA: its data directory (default $LIB_WORK/data).
BLOCKD="$TESSERA_BUILD/tessera-blockd"
BLOCKD_AK=${BLOCKD_AK:-tessera-test}
BLOCKD_SK=${BLOCKD_SK:-tessera-test-secret}
BLOCKD_SIGV4="aws:amz:us-east-1:s3"
BLOCKD_PID=""
BLOCKD_PORT=""
BLOCKD_LOG=""
BLOCKD_LOG_FROM=1

# blockd_start NAME [ARGS...]: starts tessera-blockd ARGS on 127.0.0.1:0 with the credentials
# in its environment; port file $LIB_WORK/NAME.port, log $LIB_WORK/NAME.log (appended). Waits
# (TESSERA_SERVER_DEADLINE, default 10 s) until it wrote its port and /-/status answers 200;
# sets BLOCKD_PID and BLOCKD_PORT. Returns 1, with the log's tail, when it exits or is late.
# One blockd at a time: blockd_stop the last one first.
blockd_start() {
	local name=$1 port_file="$LIB_WORK/$1.port" until
	shift
	[[ -x $BLOCKD ]] || bail "missing $BLOCKD"
	: "${BLOCKD_DATA:=$LIB_WORK/data}"
	BLOCKD_LOG="$LIB_WORK/$name.log"
	BLOCKD_LOG_FROM=$(($(stat -c %s "$BLOCKD_LOG" 2>/dev/null || echo 0) + 1))
	rm -f "$port_file"
	TESSERA_ACCESS_KEY=$BLOCKD_AK TESSERA_SECRET_KEY=$BLOCKD_SK "$BLOCKD" --data "$BLOCKD_DATA" \
		--listen 127.0.0.1:0 --port-file "$port_file" "$@" >>"$BLOCKD_LOG" 2>&1 &
	BLOCKD_PID=$!
	until=$((SECONDS + ${TESSERA_SERVER_DEADLINE:-10}))
	while :; do
		if ! kill -0 "$BLOCKD_PID" 2>/dev/null; then
			diag "blockd exited during start-up"
			BLOCKD_PID=""
			tail -n 20 "$BLOCKD_LOG" | sed 's/^/#   /'
			return 1
		fi
		if [[ -s $port_file ]]; then
			BLOCKD_PORT=$(<"$port_file")
			[[ $(req "http://127.0.0.1:$BLOCKD_PORT/-/status") == 200 ]] && return 0
		fi
		if ((SECONDS >= until)); then
			diag "blockd not ready in ${TESSERA_SERVER_DEADLINE:-10} s"
			tail -n 20 "$BLOCKD_LOG" | sed 's/^/#   /'
			return 1
		fi
		sleep 0.05
	done
}

# blockd_stop [SIGNAL]: signals the blockd (TERM by default), waits for it and returns its exit
# status; what it logged since its start is checked for sanitizer reports (a failure).
blockd_stop() {
	local rc=0
	[[ -n $BLOCKD_PID ]] || return 0
	kill -s "${1:-TERM}" "$BLOCKD_PID" 2>/dev/null
	wait "$BLOCKD_PID" 2>/dev/null || rc=$?
	BLOCKD_PID=""
	lib_log_sanitizers "$BLOCKD_LOG" "$BLOCKD_LOG_FROM"
	return "$rc"
}

# url PATH: the blockd's URL of PATH (no leading '/').
url() {
	echo "http://127.0.0.1:$BLOCKD_PORT/$1"
}

# req CURL_ARGS...: curl with a hard time bound; prints the HTTP status ("curl-failed" when
# curl failed), the body goes to $OUT ($LIB_WORK/out unless a caller changes it), curl's
# errors to $LIB_WORK/curl.err.
req() {
	timeout 20 curl -sS --max-time 15 -o "$OUT" -w '%{http_code}' "$@" \
		2>"$LIB_WORK/curl.err" || echo "curl-failed"
}

# s3 CURL_ARGS...: req signed with SigV4 by curl (as the blockd's client).
s3() {
	req --aws-sigv4 "$BLOCKD_SIGV4" --user "$BLOCKD_AK:$BLOCKD_SK" "$@"
}

# xml_code CODE: the S3 error document in $OUT has <Code>CODE</Code>.
xml_code() {
	grep -q "<Code>$1</Code>" "$OUT"
}

# status_field NAME: a number from the blockd's /-/status.
status_field() {
	req "$(url -/status)" >/dev/null
	grep -o "\"$1\":[0-9]*" "$OUT" | head -n 1 | cut -d: -f2
}

# no_tmp_leftovers: the blockd's tmp/ is empty. The version a PUT replaced waits there for the
# deleter thread a moment: polls up to 2 s.
no_tmp_leftovers() {
	local i
	for ((i = 0; i < 20; i++)); do
		[[ -z $(find "$BLOCKD_DATA/tmp" -type f) ]] && return 0
		sleep 0.1
	done
	return 1
}

# bcclient_round NAME URL AK SK BUCKET: tesserafs's block client (tests/helpers/bcclient.c, over
# blockclient.h) against the S3 server at URL: PUT, GET, ranged GET, HEAD, DELETE of a 1 MiB
# fragment, bytes compared; HEAD after DELETE and GET of a missing key are "not found"; an
# unknown access key is refused. Eight checks.
bcclient_round() {
	local name=$1 url=$2 ak=$3 sk=$4 bucket=$5 rc key="f/0000/1.2.3" f="$LIB_WORK/frag"
	local bc=(timeout 30 env TESSERA_ACCESS_KEY="$ak" TESSERA_SECRET_KEY="$sk"
		"$TESSERA_BUILD/tests/bcclient")
	head -c 1048656 /dev/urandom >"$f"
	check "$name: blockclient PUT" "${bc[@]}" put "$url" "$bucket" "$key" "$f"
	rm -f "$f.out"
	"${bc[@]}" get "$url" "$bucket" "$key" "$f.out"
	check "$name: blockclient GET returns the same bytes" cmp -s "$f" "$f.out"
	"${bc[@]}" get "$url" "$bucket" "$key" "$f.r" 80 4096
	check "$name: blockclient ranged GET returns the slice" cmp -s "$f.r" \
		<(tail -c +81 "$f" | head -c 4096)
	check "$name: blockclient HEAD gives the size" \
		test "$("${bc[@]}" head "$url" "$bucket" "$key")" = 1048656
	check "$name: blockclient DELETE" "${bc[@]}" delete "$url" "$bucket" "$key"
	check_rc 3 "$name: blockclient HEAD after DELETE -> not found (exit 3)" \
		"${bc[@]}" head "$url" "$bucket" "$key"
	check_rc 3 "$name: blockclient GET of a missing key -> not found (exit 3)" \
		"${bc[@]}" get "$url" "$bucket" "f/none" "$LIB_WORK/x"
	check_rc 1 "$name: an unknown access key is refused (exit 1)" \
		timeout 30 env TESSERA_ACCESS_KEY=nobody TESSERA_SECRET_KEY="$sk" \
		"$TESSERA_BUILD/tests/bcclient" head "$url" "$bucket" "f/none"
}

# lib_require PROGRAM...: fails the test at once when a program of the build is missing.
lib_require() {
	local p
	for p in "$@"; do
		[[ -x $p ]] || { echo "not ok - missing $p" >&2; exit 1; }
	done
}

# ---- the power-loss helper (tests/helpers/powerloss.c)

POWERLOSS="$TESSERA_BUILD/tests/powerloss"
PL_PIDS=()

# pl_mount BACKING MNT LOG: mounts the power-loss helper over BACKING at MNT (its stderr to
# LOG, a new file for each mount) and sets PL_PID and PL_LOG; bails out when it does not come
# up in 10 s. The cleanup unmounts it and waits for it (pl_unmount).
pl_mount() {
	local backing=$1 mnt=$2 end=$((SECONDS + 10))
	[[ -x $POWERLOSS ]] || bail "missing $POWERLOSS"
	PL_LOG=$3
	mkdir -p "$backing" "$mnt"
	"$POWERLOSS" -f "$backing" "$mnt" </dev/null >>"$PL_LOG" 2>&1 &
	PL_PID=$!
	PL_PIDS+=("$PL_PID")
	lib_at_exit "pl_unmount '$mnt' $PL_PID"
	until grep -qs " mounted at " "$PL_LOG" && mountpoint -q "$mnt"; do
		kill -0 "$PL_PID" 2>/dev/null || { wait "$PL_PID"; bail "powerloss exited while mounting"; }
		((SECONDS < end)) || bail "powerloss did not mount $mnt in 10 s"
		sleep 0.05
	done
}

# pl_power_loss: cuts the power of the last pl_mount and waits (10 s) until it is done.
pl_power_loss() {
	local end=$((SECONDS + 10))
	kill -USR1 "$PL_PID" || return 1
	until grep -qs "powerloss: power lost" "$PL_LOG"; do
		((SECONDS < end)) || { echo "no power loss reported in $PL_LOG"; return 1; }
		sleep 0.05
	done
	! grep -q "cannot undo" "$PL_LOG" || { grep "cannot undo" "$PL_LOG"; return 1; }
}

# True while PID runs (a child that exited but was not waited for is a zombie: not running).
pl_alive() {
	local state
	state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

# pl_unmount MNT PID: unmounts MNT (lazily when busy) and waits 20 s for the helper PID to
# exit, SIGTERM then; does nothing for what is already gone. A PID that was waited for is
# never signalled again.
pl_unmount() {
	local mnt=$1 pid=$2 i keep=() p
	if mountpoint -q "$mnt" 2>/dev/null || grep -qsF " $mnt " /proc/self/mountinfo; then
		for i in 1 2 3 4 5; do
			timeout 10 fusermount3 -u "$mnt" 2>/dev/null && break
			sleep 0.2
		done
		grep -qsF " $mnt " /proc/self/mountinfo && timeout 10 fusermount3 -uz "$mnt"
	fi
	for p in "${PL_PIDS[@]+"${PL_PIDS[@]}"}"; do
		[[ $p == "$pid" ]] && continue
		keep+=("$p")
	done
	((${#keep[@]} == ${#PL_PIDS[@]})) && return 0
	PL_PIDS=("${keep[@]+"${keep[@]}"}")
	for i in $(seq 200); do
		pl_alive "$pid" || break
		sleep 0.1
	done
	pl_alive "$pid" && { echo "powerloss (pid $pid) still running; SIGTERM"; kill "$pid"; }
	wait "$pid" 2>/dev/null
	return 0
}
