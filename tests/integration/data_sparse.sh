#!/usr/bin/env bash
# data_sparse: holes cost nothing on the servers and read as zeros; fallocate (mode 0,
# KEEP_SIZE, PUNCH_HOLE) and lseek SEEK_DATA/SEEK_HOLE work at stripe granularity; files
# beyond 4 GiB; all of it again after a remount. A Python model of the file gives the
# expected bytes.
LIB_TIMEOUT=240
. "$(dirname "$0")/lib.sh"

lib_init
lib_up --servers 6 --k 4 --m 2

M=$TESSERA_MNT
S=$LIB_STRIPE
F=$M/sparse

# Fragments stored for an inode (all servers), by stripe index.
frags_of_stripe() { # INO STRIPE
	local ino_hex stripe_hex
	ino_hex=$(printf '%016x' "$1")
	stripe_hex=$(printf '%016x' "$2")
	find "$LIB_WORK"/servers/*/data/objects -path "*/$ino_hex/$stripe_hex.*" -type f 2>/dev/null | wc -l
}

PY=$(cat <<'PYEOF'
import os, sys, errno
S = int(os.environ["S"])
path = os.environ["F"]
step = sys.argv[1]

def pattern(off, n, seed):
    return bytes(((off + i) * 131 + seed) & 0xff for i in range(n))

def check(cond, what):
    print(("ok" if cond else "FAIL") + " " + what)
    if not cond:
        sys.exit(1)

def seek(fd, off, whence):
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        return -e.errno

if step == "write":
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
    os.pwrite(fd, pattern(0, 2 * S, 1), 0)         # stripes 0-1: data
    os.pwrite(fd, pattern(3 * S, 5000, 2), 3 * S)  # stripe 2: hole; stripe 3: data
    os.fsync(fd)
    os.close(fd)
    sys.exit(0)

size = 3 * S + 5000
expect = bytearray(size)
expect[0:2 * S] = pattern(0, 2 * S, 1)
expect[3 * S:3 * S + 5000] = pattern(3 * S, 5000, 2)

fd = os.open(path, os.O_RDWR)
if step in ("punch", "after-remount"):
    # the punched range [S/2, 3S+100) reads as zeros
    for i in range(S // 2, 3 * S + 100):
        expect[i] = 0
if step == "seek":
    check(os.fstat(fd).st_size == size, "size")
    check(seek(fd, 0, os.SEEK_DATA) == 0, "SEEK_DATA 0 -> 0")
    check(seek(fd, 0, os.SEEK_HOLE) == 2 * S, "SEEK_HOLE 0 -> stripe 2")
    check(seek(fd, S + 7, os.SEEK_DATA) == S + 7, "SEEK_DATA in data -> itself")
    check(seek(fd, 2 * S + 7, os.SEEK_DATA) == 3 * S, "SEEK_DATA in the hole -> stripe 3")
    check(seek(fd, 2 * S + 7, os.SEEK_HOLE) == 2 * S + 7, "SEEK_HOLE in the hole -> itself")
    check(seek(fd, 3 * S, os.SEEK_HOLE) == size, "SEEK_HOLE in the last stripe -> end")
    check(seek(fd, size, os.SEEK_DATA) == -errno.ENXIO, "SEEK_DATA at the end -> ENXIO")
if step == "punch":
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
    r = libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, S // 2, 3 * S + 100 - S // 2)
    check(r == 0, "fallocate PUNCH_HOLE")
    r = libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 10)
    check(r != 0 and ctypes.get_errno() == errno.EOPNOTSUPP, "PUNCH_HOLE without KEEP_SIZE: EOPNOTSUPP")
    r = libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 10 * S)
    check(r == 0 and os.fstat(fd).st_size == size, "KEEP_SIZE keeps the size")
    os.fsync(fd)
data = os.pread(fd, size + 10, 0)
check(len(data) == size, "reads to the end")
bad = [i for i in range(0, size, 4096) if data[i:i + 4096] != bytes(expect[i:i + 4096])]
check(not bad, "contents match the model" + (" (first bad block at %d)" % bad[0] if bad else ""))
if step == "after-remount":
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    check(libc.fallocate(fd, 0, 0, 5 * S) == 0 and os.fstat(fd).st_size == 5 * S, "fallocate mode 0 grows the file")
    check(os.pread(fd, 100, 5 * S - 100) == bytes(100), "the grown range reads as zeros")
    big = 5 * 2**30 + 12345
    os.pwrite(fd, b"beyond 4 GiB", big)
    os.fsync(fd)
    check(os.fstat(fd).st_size == big + 12, "a file beyond 4 GiB")
    check(os.pread(fd, 12, big) == b"beyond 4 GiB", "data beyond 4 GiB reads back")
    check(seek(fd, 5 * S, os.SEEK_DATA) == (big // S) * S, "SEEK_DATA skips the 5 GiB hole")
os.close(fd)
PYEOF
)
export S F
check "write stripes 0, 1 and 3, a hole at 2" python3 -c "$PY" write
ino=$(stat -c %i "$F")
check "the hole holds no fragments" test "$(frags_of_stripe "$ino" 2)" -eq 0
check "a written stripe has k+m fragments" test "$(frags_of_stripe "$ino" 1)" -eq 6
check "SEEK_DATA / SEEK_HOLE" python3 -c "$PY" seek
check "fallocate PUNCH_HOLE / KEEP_SIZE" python3 -c "$PY" punch
sleep 1 # the garbage thread deletes the released fragments
check "the punched stripes' fragments are released" test "$(frags_of_stripe "$ino" 1)$(frags_of_stripe "$ino" 2)" = "00"
# Shared writable mmap: pages written through the mapping reach the stripes (msync, fsync).
MMAP_PY=$(cat <<'PYEOF'
import mmap, os, sys
p, S = sys.argv[1], int(sys.argv[2])
size = 2 * S + 123
offs = (0, 3 * 4096 + 5, S - 2, 2 * S + 113)
if sys.argv[3] == "write":
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    os.ftruncate(fd, size)
    m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    for o in offs:
        m[o:o + 10] = b"0123456789"
    m.flush()
    m.close()
    os.fsync(fd)
    os.close(fd)
d = open(p, "rb").read()
sys.exit(0 if len(d) == size and all(d[o:o + 10] == b"0123456789" for o in offs) else 1)
PYEOF
)
check "shared writable mmap" python3 -c "$MMAP_PY" "$M/mapped" "$S" write
check "remount" "$TESSERA_LOCAL" remount "$LIB_WORK"
check "after remount: contents, growth, beyond 4 GiB" python3 -c "$PY" after-remount
check "the mmap-written file after remount" python3 -c "$MMAP_PY" "$M/mapped" "$S" read
lib_finish
