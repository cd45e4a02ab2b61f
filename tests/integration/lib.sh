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
# Cleanup (trap on EXIT, INT, TERM): tessera-local down (unmount, stop every daemon by PID);
# sanitizer reports ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:") in
# any daemon log turn the test into a failure; the work directory is removed on success and
# kept on failure, with its path and the log tails printed.
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

fail() {
	LIB_N=$((LIB_N + 1))
	LIB_FAILED=$((LIB_FAILED + 1))
	echo "not ok $LIB_N - $*"
}

diag() {
	echo "# $*"
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
		[[ -n $out ]] && printf '%s\n' "$out" | head -n 20 | sed 's/^/#   /'
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
		[[ -n $out ]] && printf '%s\n' "$out" | head -n 20 | sed 's/^/#   /'
	fi
	[[ $rc == "$want" ]]
}

# bail MSG: a fatal failure; the cleanup trap still runs.
bail() {
	fail "$*"
	diag "bailing out"
	exit 1
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
	for f in "$LIB_WORK"/servers/*/log "$LIB_WORK/tesserafs.log" "$LIB_WORK/mkfs.log" \
		"$LIB_WORK/build.log" "$LIB_WORK"/powerloss*.log; do
		[[ -s $f ]] || continue
		echo "#---- tail of $f"
		tail -n 25 "$f" | sed 's/^/#   /'
	done
}

# Fails when a sanitizer reported anything in a daemon log.
lib_check_sanitizers() {
	local f hits=0
	for f in "$LIB_WORK"/servers/*/log "$LIB_WORK/tesserafs.log" "$LIB_WORK/mkfs.log" \
		"$LIB_WORK"/powerloss*.log; do
		[[ -f $f ]] || continue
		if grep -qE 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:' "$f"; then
			fail "sanitizer report in $f"
			grep -E -m 5 -A 12 'ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:' "$f" |
				sed 's/^/#   /'
			hits=1
		fi
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
		local hook
		for hook in "${LIB_AT_EXIT[@]}"; do
			eval "$hook" || fail "cleanup step failed: $hook"
		done
		lib_check_sanitizers || true
		((LIB_FAILED)) && ((rc == 0)) && rc=1
		if ((rc != 0)) || [[ ${TESSERA_KEEP:-0} == 1 ]]; then
			((rc != 0)) && lib_log_tails
			diag "work directory kept: $LIB_WORK"
		elif lib_mounted; then
			diag "something is still mounted under $LIB_WORK; not removing it"
			rc=1
		else
			rm -rf "$LIB_WORK"
		fi
	fi
	((LIB_FAILED)) && ((rc == 0)) && rc=1
	diag "$LIB_NAME: $((LIB_N - LIB_FAILED)) passed, $LIB_FAILED failed, $((SECONDS - LIB_START)) s"
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

# lib_init: makes the work directory and installs the cleanup traps.
lib_init() {
	[[ -x $DATAGEN ]] || { echo "not ok - missing $DATAGEN" >&2; exit 1; }
	LIB_WORK=$(mktemp -d "${TMPDIR:-/tmp}/tessera-$LIB_NAME.XXXXXX") ||
		{ echo "not ok - mktemp failed" >&2; exit 1; }
	trap 'lib_cleanup $?' EXIT
	trap 'lib_on_signal INT' INT
	trap 'lib_on_signal TERM' TERM
	diag "$LIB_NAME: work directory $LIB_WORK, build $TESSERA_BUILD"
}

lib_finish() {
	if ((LIB_FAILED)); then
		exit 1
	fi
	exit 0
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

# Fragment object files stored by the servers.
lib_fragments() {
	find "$LIB_WORK"/servers/*/data/objects -type f 2>/dev/null
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
# LOG, a new file for each mount) and sets PL_PID and PL_LOG; bails out when it does not come up in 10 s. The cleanup
# unmounts it and waits for it (pl_unmount).
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
