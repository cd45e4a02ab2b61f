/*
 * crashload: a namespace workload to SIGKILL a filesystem daemon under, and the checker for
 * what the crash left (tests/integration/posix_crash.sh, issue 6).
 *
 *   crashload run DIR LOG SEED [SECONDS]
 *   crashload check DIR LOG
 *
 * run works in DIR until SECONDS pass (default: until the filesystem goes away, ENOTCONN):
 *   - DIR/keep: files written from a seed and fsync'ed, some by the atomic-replace pattern
 *     (write a temporary name, fsync, rename, fsync the directory). Only after the fsync
 *     that makes a file durable returns does a line "NAME SIZE SEED" go to LOG (outside the
 *     filesystem, appended and fsync'ed itself). A file in LOG is never touched again.
 *   - DIR/play-SEED: everything else, at random and never synced: creates, writes, O_TRUNC,
 *     truncate, renames (over files, of directories, RENAME_EXCHANGE), hard links within and
 *     across directories, unlinks, mkdir/rmdir, files unlinked while open and written on.
 * Exit 0 when stopped by SECONDS or by the filesystem going away (ENOTCONN, ECONNABORTED),
 * 1 on an unexpected error (EIO and the like while the filesystem was up).
 *
 * check walks DIR without following symlinks and checks the crash-consistency rules:
 *   every name lstat()s (no entry without a live inode), every file reads to its end,
 *   st_nlink of a non-directory equals the number of names it has under DIR (the workload
 *   makes none elsewhere), a directory's st_nlink is 2 + its subdirectories, ".." of every
 *   directory is its parent and no directory is reached twice (no loop, no lost parent),
 *   and every file in LOG is there with its size and bytes.
 * Prints "FAIL ..." lines and exits 1 when anything is wrong; 0 and a summary otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAMES 256
#define MAX_OPEN_UNLINKED 4

static uint64_t rng;

static uint64_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static unsigned rnd_below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

/* The byte at off of a file made from seed (8-byte words of a splitmix64 of seed and word). */
static uint8_t gen_byte(uint64_t seed, uint64_t off)
{
	uint64_t z = seed * 0x9E3779B97F4A7C15ull + (off / 8) + 1;

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	z ^= z >> 31;
	return (uint8_t)(z >> (8 * (off % 8)));
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- run */

static bool gone(int e)
{
	return e == ENOTCONN || e == ECONNABORTED || e == ENODEV;
}

/* An operation failed with errno e: fine when bookkeeping was stale (ENOENT, EEXIST...);
 * stops the run when the filesystem went away; an unexpected error fails it. */
static void op_failed(const char *what, const char *path, int e)
{
	if (gone(e)) {
		printf("crashload: filesystem gone (%s)\n", strerror(e));
		exit(0);
	}
	switch (e) {
	case ENOENT: case EEXIST: case ENOTEMPTY: case ENOTDIR: case EISDIR: case EINVAL:
	case EXDEV: case EMLINK: case EPERM: /* link() of a name an exchange made a directory */
		return;
	}
	fprintf(stderr, "crashload: %s '%s': %s\n", what, path, strerror(e));
	exit(1);
}

static int write_all(int fd, uint64_t seed, uint64_t off, uint64_t len)
{
	uint8_t buf[65536];

	while (len) {
		size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = gen_byte(seed, off + i);
		ssize_t w = pwrite(fd, buf, n, (off_t)off);
		if (w < 0)
			return -1;
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	return 0;
}

static uint64_t pick_size(void)
{
	switch (rnd_below(10)) {
	case 0:
		return 0;
	case 1: case 2: case 3:
		return rnd_below(4096) + 1;      /* inline */
	case 4:
		return 5000000 + rnd_below(100000); /* more than a stripe of a small cluster */
	default:
		return rnd_below(300000) + 1;
	}
}

struct run {
	const char *dir;
	char play[PATH_MAX];
	int log_fd;
	uint64_t seed;
	unsigned keep_n;
	char files[MAX_NAMES][PATH_MAX]; /* play files and dirs we made (may be stale) */
	unsigned nfiles;
	char dirs[MAX_NAMES][PATH_MAX];
	unsigned ndirs;
	int open_unlinked[MAX_OPEN_UNLINKED];
	unsigned n_open;
};

static void remember(char (*list)[PATH_MAX], unsigned *n, const char *path)
{
	unsigned i = *n < MAX_NAMES ? (*n)++ : rnd_below(MAX_NAMES);

	snprintf(list[i], PATH_MAX, "%s", path);
}

static const char *any(char (*list)[PATH_MAX], unsigned n)
{
	return n ? list[rnd_below(n)] : NULL;
}

static void new_name(struct run *r, char *out, bool dir)
{
	const char *parent = rnd_below(3) == 0 || r->ndirs == 0 ? r->play : any(r->dirs, r->ndirs);
	int n = snprintf(out, PATH_MAX, "%s/%c%06u", parent, dir ? 'd' : 'f', rnd_below(1000000));

	if (n < 0 || n >= PATH_MAX) { /* a deep chain of renamed directories: start over */
		n = snprintf(out, PATH_MAX, "%s/%c%06u", r->play, dir ? 'd' : 'f',
			     rnd_below(1000000));
		if (n < 0 || n >= PATH_MAX)
			abort(); /* play is short */
		r->ndirs = 0;
	}
}

/* A durable file in keep/, then its line in the log. */
static void keep_one(struct run *r)
{
	char path[PATH_MAX], tmp[PATH_MAX], name[64], line[128];
	uint64_t size = pick_size(), seed = rnd();
	bool replace = rnd_below(2);
	int fd;

	snprintf(name, sizeof(name), "k%016" PRIx64 "-%u", r->seed, r->keep_n++);
	snprintf(path, sizeof(path), "%s/keep/%s", r->dir, name);
	snprintf(tmp, sizeof(tmp), "%s/keep/.tmp-%s", r->dir, name);
	fd = open(replace ? tmp : path, O_CREAT | O_EXCL | O_WRONLY, 0644);
	if (fd < 0)
		return op_failed("create", path, errno);
	if (write_all(fd, seed, 0, size) < 0 || fsync(fd) < 0) {
		int e = errno;
		close(fd);
		return op_failed("write+fsync", path, e);
	}
	if (close(fd) < 0)
		return op_failed("close", path, errno);
	if (replace) {
		char kdir[PATH_MAX];
		snprintf(kdir, sizeof(kdir), "%s/keep", r->dir);
		if (rename(tmp, path) < 0)
			return op_failed("rename", tmp, errno);
		int dfd = open(kdir, O_RDONLY | O_DIRECTORY);
		if (dfd < 0)
			return op_failed("open", kdir, errno);
		if (fsync(dfd) < 0) {
			int e = errno;
			close(dfd);
			return op_failed("fsync dir", kdir, e);
		}
		close(dfd);
	}
	int n = snprintf(line, sizeof(line), "%s %" PRIu64 " %" PRIu64 "\n", name, size, seed);
	if (write(r->log_fd, line, (size_t)n) != n || fsync(r->log_fd) < 0) {
		perror("crashload: log");
		exit(1);
	}
}

static void play_one(struct run *r)
{
	char a[PATH_MAX], b[PATH_MAX];
	const char *p, *q;
	int fd;

	switch (rnd_below(16)) {
	case 0: case 1: case 2: /* create and write */
		new_name(r, a, false);
		fd = open(a, O_CREAT | O_WRONLY | O_TRUNC, 0600 | rnd_below(0100));
		if (fd < 0)
			return op_failed("create", a, errno);
		if (write_all(fd, rnd(), 0, pick_size() / 4) < 0) {
			int e = errno;
			close(fd);
			return op_failed("write", a, e);
		}
		if (rnd_below(8) == 0 && fsync(fd) < 0) {
			int e = errno;
			close(fd);
			return op_failed("fsync", a, e);
		}
		if (close(fd) < 0)
			return op_failed("close", a, errno);
		remember(r->files, &r->nfiles, a);
		return;
	case 3: /* overwrite part of a file, or truncate it */
		if (!(p = any(r->files, r->nfiles)))
			return;
		if (rnd_below(3) == 0) {
			if (truncate(p, (off_t)rnd_below(200000)) < 0)
				return op_failed("truncate", p, errno);
			return;
		}
		fd = open(p, O_WRONLY | (rnd_below(4) == 0 ? O_TRUNC : 0));
		if (fd < 0)
			return op_failed("open", p, errno);
		if (write_all(fd, rnd(), rnd_below(100000), rnd_below(50000) + 1) < 0) {
			int e = errno;
			close(fd);
			return op_failed("write", p, e);
		}
		if (close(fd) < 0)
			return op_failed("close", p, errno);
		return;
	case 4: case 5: /* rename a file, sometimes over another */
		if (!(p = any(r->files, r->nfiles)))
			return;
		if (rnd_below(3) == 0 && (q = any(r->files, r->nfiles)))
			snprintf(b, sizeof(b), "%s", q);
		else
			new_name(r, b, false);
		if (rename(p, b) < 0)
			return op_failed("rename", p, errno);
		remember(r->files, &r->nfiles, b);
		return;
	case 6: /* hard link */
		if (!(p = any(r->files, r->nfiles)))
			return;
		new_name(r, b, false);
		if (link(p, b) < 0)
			return op_failed("link", p, errno);
		remember(r->files, &r->nfiles, b);
		return;
	case 7: case 8: /* unlink */
		if (!(p = any(r->files, r->nfiles)))
			return;
		if (unlink(p) < 0)
			return op_failed("unlink", p, errno);
		return;
	case 9: /* mkdir */
		new_name(r, a, true);
		if (mkdir(a, 0755) < 0)
			return op_failed("mkdir", a, errno);
		remember(r->dirs, &r->ndirs, a);
		return;
	case 10: /* rename a directory (refused into itself: EINVAL) */
		if (!(p = any(r->dirs, r->ndirs)))
			return;
		new_name(r, b, true);
		if (rename(p, b) < 0)
			return op_failed("rename dir", p, errno);
		remember(r->dirs, &r->ndirs, b);
		return;
	case 11: /* rmdir (ENOTEMPTY most of the time) */
		if (!(p = any(r->dirs, r->ndirs)))
			return;
		if (rmdir(p) < 0)
			return op_failed("rmdir", p, errno);
		return;
	case 12: /* exchange two names */
		if (!(p = any(r->files, r->nfiles)) || !(q = rnd_below(2) ? any(r->dirs, r->ndirs) :
								 any(r->files, r->nfiles)))
			return;
		if (syscall(SYS_renameat2, AT_FDCWD, p, AT_FDCWD, q, 2 /* RENAME_EXCHANGE */) < 0)
			return op_failed("exchange", p, errno);
		return;
	case 13: /* a file unlinked while open, written on afterwards */
		if (r->n_open == MAX_OPEN_UNLINKED) {
			close(r->open_unlinked[--r->n_open]);
			return;
		}
		new_name(r, a, false);
		fd = open(a, O_CREAT | O_RDWR, 0644);
		if (fd < 0)
			return op_failed("create", a, errno);
		if (unlink(a) < 0) {
			int e = errno;
			close(fd);
			return op_failed("unlink open", a, e);
		}
		if (write_all(fd, rnd(), 0, rnd_below(100000)) < 0) {
			int e = errno;
			close(fd);
			return op_failed("write unlinked", a, e);
		}
		r->open_unlinked[r->n_open++] = fd;
		return;
	default: /* a durable file */
		keep_one(r);
		return;
	}
}

static int run(const char *dir, const char *log, uint64_t seed, double secs)
{
	static struct run r; /* large: keep it off the stack */
	char keep[PATH_MAX];
	double end = secs > 0 ? now_s() + secs : 0;

	r.dir = dir;
	r.seed = seed;
	rng = seed ? seed : 1;
	snprintf(keep, sizeof(keep), "%s/keep", dir);
	snprintf(r.play, sizeof(r.play), "%s/play-%016" PRIx64, dir, seed);
	if ((mkdir(keep, 0755) < 0 && errno != EEXIST) || mkdir(r.play, 0755) < 0) {
		perror("crashload: mkdir");
		return gone(errno) ? 0 : 1;
	}
	r.log_fd = open(log, O_WRONLY | O_APPEND | O_CREAT, 0644);
	if (r.log_fd < 0) {
		perror(log);
		return 1;
	}
	for (unsigned long ops = 0;; ops++) {
		if (end && now_s() > end) {
			printf("crashload: %lu operations\n", ops);
			return 0;
		}
		play_one(&r);
	}
}

/* ---------------------------------------------------------------- check */

struct node {
	ino_t ino;
	nlink_t nlink;
	unsigned names;
	bool dir;
	char path[PATH_MAX];
};

static struct node *nodes;
static size_t n_nodes, cap_nodes;
static int failures;

#define FAIL(...)                                  \
	do {                                       \
		fprintf(stderr, "FAIL ");          \
		fprintf(stderr, __VA_ARGS__);      \
		fprintf(stderr, "\n");             \
		failures++;                        \
	} while (0)

static struct node *node_of(const struct stat *st, const char *path, bool *ret_new)
{
	for (size_t i = 0; i < n_nodes; i++)
		if (nodes[i].ino == st->st_ino) {
			*ret_new = false;
			return &nodes[i];
		}
	if (n_nodes == cap_nodes) {
		cap_nodes = cap_nodes ? 2 * cap_nodes : 1024;
		nodes = realloc(nodes, cap_nodes * sizeof(*nodes));
		if (!nodes) {
			perror("crashload");
			exit(2);
		}
	}
	struct node *n = &nodes[n_nodes++];
	memset(n, 0, sizeof(*n));
	n->ino = st->st_ino;
	n->nlink = st->st_nlink;
	n->dir = S_ISDIR(st->st_mode);
	snprintf(n->path, sizeof(n->path), "%s", path);
	*ret_new = true;
	return n;
}

static void read_through(const char *path, const struct stat *st)
{
	char buf[65536];
	off_t total = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0) {
		FAIL("open '%s': %s", path, strerror(errno));
		return;
	}
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		total += n;
	if (n < 0)
		FAIL("read '%s': %s", path, strerror(errno));
	else if (total != st->st_size)
		FAIL("'%s' read %lld bytes, size %lld", path, (long long)total,
		     (long long)st->st_size);
	close(fd);
}

/* Walks directory path (inode ino, parent inode parent_ino). Returns its subdirectory count. */
static unsigned walk(const char *path, ino_t ino, ino_t parent_ino, unsigned depth)
{
	char child[PATH_MAX];
	struct stat st, dot;
	unsigned subdirs = 0;
	DIR *d;
	struct dirent *e;

	if (depth > 1000) {
		FAIL("'%s': deeper than 1000 levels (a loop?)", path);
		return 0;
	}
	snprintf(child, sizeof(child), "%s/..", path);
	if (lstat(child, &dot) < 0)
		FAIL("lstat '%s': %s", child, strerror(errno));
	else if (parent_ino && dot.st_ino != parent_ino)
		FAIL("'%s' is inode %llu, the parent is %llu", child, (unsigned long long)dot.st_ino,
		     (unsigned long long)parent_ino);
	d = opendir(path);
	if (!d) {
		FAIL("opendir '%s': %s", path, strerror(errno));
		return 0;
	}
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
		if (lstat(child, &st) < 0) {
			FAIL("entry '%s' has no live inode: %s", child, strerror(errno));
			continue;
		}
		if (e->d_ino != st.st_ino)
			FAIL("'%s': readdir says inode %llu, lstat %llu", child,
			     (unsigned long long)e->d_ino, (unsigned long long)st.st_ino);
		bool fresh;
		struct node *n = node_of(&st, child, &fresh);
		n->names++;
		if (S_ISDIR(st.st_mode)) {
			subdirs++;
			if (!fresh) {
				FAIL("directory inode %llu reached twice: '%s' and '%s'",
				     (unsigned long long)st.st_ino, n->path, child);
				continue;
			}
			unsigned sub = walk(child, st.st_ino, ino, depth + 1);
			if (st.st_nlink != 2 + sub)
				FAIL("directory '%s': st_nlink %lu, 2 + %u subdirectories", child,
				     (unsigned long)st.st_nlink, sub);
		} else if (S_ISREG(st.st_mode) && fresh) {
			read_through(child, &st);
		}
	}
	closedir(d);
	return subdirs;
}

static int check(const char *dir, const char *log)
{
	char line[512], name[256], path[PATH_MAX];
	unsigned long long size, seed;
	unsigned logged = 0;
	struct stat st;
	FILE *f;

	if (lstat(dir, &st) < 0) {
		FAIL("lstat '%s': %s", dir, strerror(errno));
		return 1;
	}
	unsigned sub = walk(dir, st.st_ino, 0, 0);
	if (st.st_nlink != 2 + sub)
		FAIL("directory '%s': st_nlink %lu, 2 + %u subdirectories", dir,
		     (unsigned long)st.st_nlink, sub);
	for (size_t i = 0; i < n_nodes; i++)
		if (!nodes[i].dir && nodes[i].names != nodes[i].nlink)
			FAIL("'%s' (inode %llu): st_nlink %lu, %u names", nodes[i].path,
			     (unsigned long long)nodes[i].ino, (unsigned long)nodes[i].nlink,
			     nodes[i].names);

	f = fopen(log, "r");
	if (!f && errno != ENOENT) {
		perror(log);
		return 1;
	}
	while (f && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%255s %llu %llu", name, &size, &seed) != 3) {
			FAIL("log line '%s'", line);
			continue;
		}
		logged++;
		snprintf(path, sizeof(path), "%s/keep/%s", dir, name);
		int fd = open(path, O_RDONLY);
		if (fd < 0) {
			FAIL("fsynced file '%s' lost: %s", path, strerror(errno));
			continue;
		}
		uint8_t buf[65536];
		uint64_t off = 0;
		ssize_t n;
		bool bad = false;
		while (!bad && (n = read(fd, buf, sizeof(buf))) > 0) {
			for (ssize_t i = 0; i < n; i++)
				if (buf[i] != gen_byte(seed, off + (uint64_t)i)) {
					FAIL("fsynced file '%s': wrong byte at %llu", path,
					     (unsigned long long)(off + (uint64_t)i));
					bad = true;
					break;
				}
			off += (uint64_t)n;
		}
		if (!bad && off != size)
			FAIL("fsynced file '%s': %llu bytes, %llu fsynced", path,
			     (unsigned long long)off, size);
		close(fd);
	}
	if (f)
		fclose(f);
	printf("crashload: %zu inodes, %u fsynced files checked, %d problem(s)\n", n_nodes,
	       logged, failures);
	return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 5 && strcmp(argv[1], "run") == 0)
		return run(argv[2], argv[3], strtoull(argv[4], NULL, 0),
			   argc > 5 ? atof(argv[5]) : 0);
	if (argc == 4 && strcmp(argv[1], "check") == 0)
		return check(argv[2], argv[3]);
	fprintf(stderr, "usage: crashload run DIR LOG SEED [SECONDS]\n"
			"       crashload check DIR LOG\n");
	return 2;
}
