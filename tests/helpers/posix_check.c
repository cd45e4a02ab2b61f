/*
 * posix_check: exact POSIX semantics checks for a mounted tesserafs (or any filesystem),
 * one subcommand per area, each working in a fresh subdirectory of DIR:
 *
 *   posix_check SUBCOMMAND DIR
 *
 * Subcommands: rename-rules, links, symlink, mknod, names, xattr, acl, unlink-open, times,
 * open-flags, rmdir, readdir, perms (needs root: switches uid/gid in child processes),
 * atime, bigdir (env POSIX_CHECK_N entries, default 100000), deep, all (everything but bigdir).
 *
 *   posix_check bench PHASE DIR
 *
 * times one metadata phase over POSIX_CHECK_N files (default 10000) in DIR/bench and prints
 * "PHASE OPS_PER_SECOND" (scripts/bench/meta.sh): create (empty files), stat, readdir (entries
 * listed per second), rename (each to a new name in the same directory), unlink (the renamed
 * files), small (create, write 4 KiB, close, in DIR/small). Phases run in that order; caches
 * are the caller's business.
 * Every failed expectation prints "FAIL file:line: what (errno)". A subcommand that cannot run
 * here (acl where the filesystem answers EOPNOTSUPP, perms when not root) prints "SKIP
 * subcommand: why". The exit status is 1 when anything failed, else 77 when a subcommand was
 * skipped, else 0. Each check names the POSIX rule it checks.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static int failures;
static int skipped;
static char base[PATH_MAX];

/* The running subcommand cannot run here: says why; main() exits 77 unless something failed. */
static void skip(const char *what, const char *why)
{
	printf("SKIP %s: %s\n", what, why);
	skipped++;
}

#define FAIL(...)                                                           \
	do {                                                                \
		int e_ = errno;                                             \
		fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);        \
		fprintf(stderr, __VA_ARGS__);                               \
		fprintf(stderr, " (errno %d %s)\n", e_, strerror(e_));      \
		failures++;                                                 \
	} while (0)

/* EXPECT_OK(expr): expr must be >= 0. EXPECT_ERR(expr, E): expr must fail with errno E. */
#define EXPECT_OK(expr)                                      \
	do {                                                 \
		errno = 0;                                   \
		if ((long)(expr) < 0)                        \
			FAIL("%s failed", #expr);            \
	} while (0)
#define EXPECT_ERR(expr, E)                                                     \
	do {                                                                    \
		errno = 0;                                                      \
		long r_ = (long)(expr);                                         \
		if (r_ >= 0)                                                    \
			FAIL("%s succeeded, wanted %s", #expr, #E);             \
		else if (errno != (E))                                          \
			FAIL("%s: wrong errno, wanted %s", #expr, #E);          \
	} while (0)
#define EXPECT(cond, ...)                    \
	do {                                 \
		if (!(cond))                 \
			FAIL(__VA_ARGS__);   \
	} while (0)

static const char *P(const char *fmt, ...)
{
	static char bufs[8][2 * PATH_MAX + 2];
	static int i;
	char rel[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	i = (i + 1) % 8;
	snprintf(bufs[i], sizeof(bufs[i]), "%s/%s", base, rel);
	return bufs[i];
}

/* A path that stays valid (P() reuses its buffers). */
#define HOLD(var, ...)                   \
	char var[2 * PATH_MAX + 2];      \
	snprintf(var, sizeof(var), "%s", P(__VA_ARGS__))

static void mkfile(const char *path, const char *content)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (fd < 0) {
		FAIL("create %s", path);
		return;
	}
	if (content && write(fd, content, strlen(content)) != (ssize_t)strlen(content))
		FAIL("write %s", path);
	close(fd);
}

static struct stat st_of(const char *path)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	if (lstat(path, &st) < 0)
		FAIL("lstat %s", path);
	return st;
}

static int renameat2_(const char *a, const char *b, unsigned flags)
{
	return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, flags);
}

static uint64_t ns(struct timespec t)
{
	return (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec;
}

/* Lets the clock move past the last timestamp (so "changed" is visible). */
static void tick(void)
{
	struct timespec t = { 0, 20 * 1000 * 1000 };
	nanosleep(&t, NULL);
}

static int setup(const char *dir, const char *name)
{
	snprintf(base, sizeof(base), "%s/%s.%d", dir, name, (int)getpid());
	if (mkdir(base, 0755) < 0) {
		FAIL("mkdir %s", base);
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- rename */

static void t_rename_rules(void)
{
	struct stat a, b, d;

	mkfile(P("f1"), "one");
	mkfile(P("f2"), "two");
	EXPECT_OK(mkdir(P("d1"), 0755));
	EXPECT_OK(mkdir(P("d2"), 0755));
	EXPECT_OK(mkdir(P("full"), 0755));
	mkfile(P("full/x"), NULL);

	/* directory over a file: ENOTDIR; file over a directory: EISDIR */
	EXPECT_ERR(rename(P("d1"), P("f1")), ENOTDIR);
	EXPECT_ERR(rename(P("f1"), P("d1")), EISDIR);
	/* over a non-empty directory: ENOTEMPTY (or EEXIST) */
	errno = 0;
	if (rename(P("d1"), P("full")) == 0 || (errno != ENOTEMPTY && errno != EEXIST))
		FAIL("rename dir over non-empty dir");
	/* into its own subtree: EINVAL */
	EXPECT_OK(mkdir(P("d1/sub"), 0755));
	EXPECT_ERR(rename(P("d1"), P("d1/sub/inside")), EINVAL);
	EXPECT_ERR(rename(P("d1"), P("d1/inside")), EINVAL);
	/* missing source: ENOENT */
	EXPECT_ERR(rename(P("nothing"), P("f9")), ENOENT);

	/* a file over a file: the target's inode loses its name */
	a = st_of(P("f1"));
	EXPECT_OK(rename(P("f1"), P("f2")));
	b = st_of(P("f2"));
	EXPECT(a.st_ino == b.st_ino, "renamed inode keeps its number");
	EXPECT(access(P("f1"), F_OK) < 0 && errno == ENOENT, "old name gone");

	/* a directory over an empty directory, across parents: parents' nlink exact */
	EXPECT_OK(mkdir(P("p1"), 0755));
	EXPECT_OK(mkdir(P("p2"), 0755));
	EXPECT_OK(mkdir(P("p1/m"), 0755));
	EXPECT_OK(mkdir(P("p2/empty"), 0755));
	EXPECT(st_of(P("p1")).st_nlink == 3 && st_of(P("p2")).st_nlink == 3, "nlink before");
	EXPECT_OK(rename(P("p1/m"), P("p2/empty")));
	EXPECT(st_of(P("p1")).st_nlink == 2, "source parent lost a subdirectory");
	EXPECT(st_of(P("p2")).st_nlink == 3, "target parent has one subdirectory");
	/* same parent, directory over empty directory */
	EXPECT_OK(mkdir(P("p2/e2"), 0755));
	EXPECT(st_of(P("p2")).st_nlink == 4, "nlink 4");
	EXPECT_OK(rename(P("p2/empty"), P("p2/e2")));
	EXPECT(st_of(P("p2")).st_nlink == 3, "same-parent replace: nlink 3, got %ju",
	       (uintmax_t)st_of(P("p2")).st_nlink);
	/* same parent, plain rename of a directory */
	EXPECT_OK(rename(P("p2/e2"), P("p2/e3")));
	EXPECT(st_of(P("p2")).st_nlink == 3, "same-parent move keeps nlink");
	/* ".." follows the move */
	EXPECT_OK(rename(P("p2/e3"), P("p1/e3")));
	a = st_of(P("p1/e3/.."));
	b = st_of(P("p1"));
	EXPECT(a.st_ino == b.st_ino, "'..' of a moved directory is its new parent");

	/* onto a hard link of itself: nothing happens, both names stay */
	mkfile(P("h1"), "h");
	EXPECT_OK(link(P("h1"), P("h2")));
	EXPECT_OK(rename(P("h1"), P("h2")));
	EXPECT(access(P("h1"), F_OK) == 0 && access(P("h2"), F_OK) == 0, "both names stay");
	EXPECT(st_of(P("h1")).st_nlink == 2, "nlink stays 2");
	/* onto itself */
	EXPECT_OK(rename(P("h1"), P("h1")));

	/* RENAME_NOREPLACE */
	mkfile(P("n1"), "a");
	mkfile(P("n2"), "b");
	EXPECT_ERR(renameat2_(P("n1"), P("n2"), RENAME_NOREPLACE), EEXIST);
	EXPECT_OK(renameat2_(P("n1"), P("n3"), RENAME_NOREPLACE));
	/* RENAME_EXCHANGE: file with directory, across parents */
	EXPECT_OK(mkdir(P("x1"), 0755));
	EXPECT_OK(mkdir(P("x2"), 0755));
	EXPECT_OK(mkdir(P("x1/dir"), 0755));
	mkfile(P("x2/file"), "f");
	a = st_of(P("x1/dir"));
	b = st_of(P("x2/file"));
	EXPECT_OK(renameat2_(P("x1/dir"), P("x2/file"), RENAME_EXCHANGE));
	EXPECT(st_of(P("x1/dir")).st_ino == b.st_ino, "exchanged: file under the dir name");
	EXPECT(st_of(P("x2/file")).st_ino == a.st_ino, "exchanged: dir under the file name");
	EXPECT(S_ISDIR(st_of(P("x2/file")).st_mode), "type follows the inode");
	EXPECT(st_of(P("x1")).st_nlink == 2 && st_of(P("x2")).st_nlink == 3,
	       "exchange moves the subdirectory link");
	d = st_of(P("x2/file/.."));
	EXPECT(d.st_ino == st_of(P("x2")).st_ino, "'..' after exchange");
	EXPECT_ERR(renameat2_(P("x1/dir"), P("x2/none"), RENAME_EXCHANGE), ENOENT);
	EXPECT_ERR(renameat2_(P("x1/dir"), P("x2/file"), RENAME_EXCHANGE | RENAME_NOREPLACE),
		   EINVAL);
	/* exchange of a directory into its own subtree */
	EXPECT_OK(mkdir(P("x2/file/deep"), 0755));
	EXPECT_ERR(renameat2_(P("x2/file"), P("x2/file/deep"), RENAME_EXCHANGE), EINVAL);
	/* the contents went with the names */
	char buf[8] = { 0 };
	int fd = open(P("x1/dir"), O_RDONLY);
	EXPECT(fd >= 0 && read(fd, buf, sizeof(buf)) == 1 && buf[0] == 'f', "content follows");
	if (fd >= 0)
		close(fd);
}

/* ---------------------------------------------------------------- links */

static void t_links(void)
{
	struct stat a, b;

	EXPECT_OK(mkdir(P("d1"), 0755));
	EXPECT_OK(mkdir(P("d2"), 0755));
	mkfile(P("d1/f"), "data");
	a = st_of(P("d1/f"));
	EXPECT(a.st_nlink == 1, "new file nlink 1");
	tick();
	EXPECT_OK(link(P("d1/f"), P("d2/g")));
	EXPECT_OK(link(P("d1/f"), P("d1/h")));
	b = st_of(P("d2/g"));
	EXPECT(b.st_ino == a.st_ino, "one inode for every name");
	EXPECT(b.st_nlink == 3, "nlink 3 after two links, got %ju", (uintmax_t)b.st_nlink);
	EXPECT(ns(b.st_ctim) > ns(a.st_ctim), "link changes ctime");
	EXPECT_ERR(link(P("d1/f"), P("d2/g")), EEXIST);
	EXPECT_ERR(link(P("d1"), P("d2/dirlink")), EPERM);
	EXPECT_ERR(link(P("d1/none"), P("d2/x")), ENOENT);
	a = st_of(P("d1/f"));
	tick();
	EXPECT_OK(unlink(P("d1/h")));
	b = st_of(P("d1/f"));
	EXPECT(b.st_nlink == 2, "unlink drops nlink");
	EXPECT(ns(b.st_ctim) > ns(a.st_ctim), "unlink changes the inode's ctime");
	EXPECT_OK(unlink(P("d1/f")));
	b = st_of(P("d2/g"));
	EXPECT(b.st_nlink == 1, "last name has nlink 1");
	int fd = open(P("d2/g"), O_RDONLY);
	char buf[8] = { 0 };
	EXPECT(fd >= 0 && read(fd, buf, sizeof(buf)) == 4 && memcmp(buf, "data", 4) == 0,
	       "data reachable through the remaining name");
	if (fd >= 0)
		close(fd);
	/* hard link to a symlink and to a fifo */
	EXPECT_OK(symlink("target", P("sl")));
	EXPECT_OK(link(P("sl"), P("sl2")));
	EXPECT(st_of(P("sl2")).st_nlink == 2 && S_ISLNK(st_of(P("sl2")).st_mode), "symlink link");
	EXPECT_OK(mkfifo(P("fifo"), 0600));
	EXPECT_OK(link(P("fifo"), P("fifo2")));
	EXPECT(st_of(P("fifo")).st_nlink == 2, "fifo link");
}

/* ---------------------------------------------------------------- symlinks */

static void t_symlink(void)
{
	char buf[PATH_MAX + 8], target[PATH_MAX + 2];
	ssize_t n;

	EXPECT_OK(symlink("some/where", P("s1")));
	n = readlink(P("s1"), buf, sizeof(buf));
	EXPECT(n == 10 && memcmp(buf, "some/where", 10) == 0, "readlink returns the target");
	EXPECT(st_of(P("s1")).st_size == 10, "symlink size is the target length");
	EXPECT(S_ISLNK(st_of(P("s1")).st_mode), "S_IFLNK");
	/* short buffer: truncated, no error */
	n = readlink(P("s1"), buf, 4);
	EXPECT(n == 4 && memcmp(buf, "some", 4) == 0, "short readlink buffer");
	/* 4095 bytes is the longest target */
	memset(target, 'a', sizeof(target));
	for (int i = 100; i < 4095; i += 100)
		target[i] = '/';
	target[4095] = '\0';
	EXPECT_OK(symlink(target, P("long")));
	n = readlink(P("long"), buf, sizeof(buf));
	EXPECT(n == 4095 && memcmp(buf, target, 4095) == 0, "4095-byte target round-trips");
	target[4095] = 'a';
	target[4096] = '\0';
	EXPECT_ERR(symlink(target, P("toolong")), ENAMETOOLONG);
	mkfile(P("reg"), NULL);
	EXPECT_ERR(readlink(P("reg"), buf, sizeof(buf)), EINVAL);
	EXPECT_ERR(symlink("x", P("reg")), EEXIST);
	/* following the link */
	mkfile(P("t"), "abc");
	EXPECT_OK(symlink("t", P("tl")));
	struct stat st;
	EXPECT(stat(P("tl"), &st) == 0 && st.st_size == 3, "stat follows");
	EXPECT_OK(symlink("nowhere", P("dangling")));
	EXPECT_ERR(stat(P("dangling"), &st), ENOENT);
	EXPECT_OK(unlink(P("tl")));
	EXPECT(access(P("t"), F_OK) == 0, "unlink of a symlink keeps its target");
	/* a symlink loop */
	EXPECT_OK(symlink("loop2", P("loop1")));
	EXPECT_OK(symlink("loop1", P("loop2")));
	EXPECT_ERR(open(P("loop1"), O_RDONLY), ELOOP);
	/* UTF-8 and odd characters in the target */
	EXPECT_OK(symlink("dir with space/\xc3\xa9t\xc3\xa9\n", P("odd")));
	n = readlink(P("odd"), buf, sizeof(buf));
	EXPECT(n == 21 && memcmp(buf, "dir with space/\xc3\xa9t\xc3\xa9\n", 21) == 0, "odd target");
}

/* ---------------------------------------------------------------- mknod */

static void t_mknod(void)
{
	struct stat st;

	EXPECT_OK(mknod(P("reg"), S_IFREG | 0640, 0));
	st = st_of(P("reg"));
	EXPECT(S_ISREG(st.st_mode) && (st.st_mode & 07777) == (0640 & ~(unsigned)0), "regular");
	EXPECT(st.st_size == 0, "empty");
	EXPECT_OK(mknod(P("fifo"), S_IFIFO | 0600, 0));
	EXPECT(S_ISFIFO(st_of(P("fifo")).st_mode), "fifo");
	EXPECT_OK(mknod(P("sock"), S_IFSOCK | 0600, 0));
	EXPECT(S_ISSOCK(st_of(P("sock")).st_mode), "socket");
	if (geteuid() == 0) {
		EXPECT_OK(mknod(P("chr"), S_IFCHR | 0600, makedev(1, 3)));
		st = st_of(P("chr"));
		EXPECT(S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3,
		       "char device 1:3");
		EXPECT_OK(mknod(P("blk"), S_IFBLK | 0600, makedev(259, 70000)));
		st = st_of(P("blk"));
		EXPECT(S_ISBLK(st.st_mode) && major(st.st_rdev) == 259 && minor(st.st_rdev) == 70000,
		       "block device with a large minor");
	}
	EXPECT_ERR(mknod(P("fifo"), S_IFIFO | 0600, 0), EEXIST);
	/* a fifo in the mount works as a fifo */
	pid_t pid = fork();
	if (pid == 0) {
		int fd = open(P("fifo"), O_WRONLY);
		_exit(fd >= 0 && write(fd, "pipe", 4) == 4 ? 0 : 1);
	}
	int fd = open(P("fifo"), O_RDONLY);
	char buf[8] = { 0 };
	EXPECT(fd >= 0 && read(fd, buf, sizeof(buf)) == 4 && memcmp(buf, "pipe", 4) == 0,
	       "data through the fifo");
	if (fd >= 0)
		close(fd);
	int status;
	waitpid(pid, &status, 0);
	/* a directory with mknod is not allowed: use mkdir */
	EXPECT_OK(mkdir(P("dir"), 0750));
	st = st_of(P("dir"));
	EXPECT(S_ISDIR(st.st_mode) && st.st_nlink == 2, "new directory nlink 2");
}

/* ---------------------------------------------------------------- names */

static void t_names(void)
{
	char name[300];
	struct stat st;

	memset(name, 'n', 255);
	name[255] = '\0';
	mkfile(P("%s", name), "x");
	EXPECT(lstat(P("%s", name), &st) == 0, "255-byte name");
	EXPECT_OK(mkdir(P("d"), 0755));
	EXPECT_OK(rename(P("%s", name), P("d/%s", name)));
	name[254] = 'm';
	EXPECT_OK(symlink("t", P("d/%s", name)));
	memset(name, 'n', 256);
	name[256] = '\0';
	EXPECT_ERR(open(P("%s", name), O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
	EXPECT_ERR(mkdir(P("%s", name), 0755), ENAMETOOLONG);
	/* 255 bytes of UTF-8 (85 three-byte characters) */
	name[0] = '\0';
	for (int i = 0; i < 85; i++)
		strcat(name, "\xe2\x82\xac"); /* euro sign */
	mkfile(P("%s", name), "e");
	EXPECT(lstat(P("%s", name), &st) == 0, "255 bytes of UTF-8");
	const char *odd[] = { " lead", "trail ", "new\nline", "tab\there", "-dash", "*star?",
			      "back\\slash", "quote\"'", "\x01\x7f\xff", "..." };
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		mkfile(P("%s", odd[i]), odd[i]);
		EXPECT(lstat(P("%s", odd[i]), &st) == 0 && st.st_size == (off_t)strlen(odd[i]),
		       "odd name %zu", i);
	}
	/* they all list */
	DIR *d = opendir(base);
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n++;
	if (d)
		closedir(d);
	EXPECT(n == 2 + 1 + 1 + (int)(sizeof(odd) / sizeof(odd[0])), "listing count %d", n);
}

/* ---------------------------------------------------------------- xattr */

static void t_xattr(void)
{
	char buf[70000], big[65537], name[300];
	HOLD(f, "f");
	ssize_t n;
	struct stat a, b;

	mkfile(f, "x");
	EXPECT_ERR(getxattr(f, "user.none", buf, sizeof(buf)), ENODATA);
	EXPECT_ERR(removexattr(f, "user.none"), ENODATA);
	EXPECT_ERR(setxattr(f, "user.a", "1", 1, XATTR_REPLACE), ENODATA);
	a = st_of(f);
	tick();
	EXPECT_OK(setxattr(f, "user.a", "value-a", 7, XATTR_CREATE));
	b = st_of(f);
	EXPECT(ns(b.st_ctim) > ns(a.st_ctim), "setxattr changes ctime");
	EXPECT_ERR(setxattr(f, "user.a", "x", 1, XATTR_CREATE), EEXIST);
	EXPECT_OK(setxattr(f, "user.a", "v2", 2, XATTR_REPLACE));
	n = getxattr(f, "user.a", buf, sizeof(buf));
	EXPECT(n == 2 && memcmp(buf, "v2", 2) == 0, "replaced value");
	EXPECT(getxattr(f, "user.a", NULL, 0) == 2, "size query");
	EXPECT_ERR(getxattr(f, "user.a", buf, 1), ERANGE);
	/* empty value, binary value */
	EXPECT_OK(setxattr(f, "user.empty", "", 0, 0));
	EXPECT(getxattr(f, "user.empty", buf, sizeof(buf)) == 0, "empty value");
	EXPECT_OK(setxattr(f, "user.bin", "\0\1\2\0", 4, 0));
	EXPECT(getxattr(f, "user.bin", buf, sizeof(buf)) == 4 && memcmp(buf, "\0\1\2\0", 4) == 0,
	       "binary value");
	/* the largest value (XATTR_SIZE_MAX) and one byte more */
	memset(big, 'v', sizeof(big));
	EXPECT_OK(setxattr(f, "user.big", big, 65536, 0));
	EXPECT(getxattr(f, "user.big", buf, sizeof(buf)) == 65536, "64 KiB value");
	EXPECT_ERR(setxattr(f, "user.big2", big, 65537, 0), E2BIG);
	/* the longest name and one byte more */
	memcpy(name, "user.", 5);
	memset(name + 5, 'k', 250);
	name[255] = '\0';
	EXPECT_OK(setxattr(f, name, "n", 1, 0));
	EXPECT(getxattr(f, name, buf, sizeof(buf)) == 1, "255-byte name");
	name[255] = 'k';
	name[256] = '\0';
	EXPECT_ERR(setxattr(f, name, "n", 1, 0), ERANGE);
	/* listing */
	n = listxattr(f, NULL, 0);
	EXPECT(n > 0, "list size");
	EXPECT_ERR(listxattr(f, buf, 3), ERANGE);
	n = listxattr(f, buf, sizeof(buf));
	int count = 0;
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1)
		if (strncmp(buf + i, "user.", 5) == 0)
			count++;
	EXPECT(count == 5, "five user xattrs listed, got %d", count);
	EXPECT_OK(removexattr(f, "user.a"));
	EXPECT_ERR(getxattr(f, "user.a", buf, sizeof(buf)), ENODATA);
	/* on a directory; on a symlink (lsetxattr in user.*: EPERM) */
	EXPECT_OK(mkdir(P("d"), 0755));
	EXPECT_OK(setxattr(P("d"), "user.dir", "d", 1, 0));
	EXPECT(getxattr(P("d"), "user.dir", buf, sizeof(buf)) == 1, "directory xattr");
	EXPECT_OK(symlink("f", P("sl")));
	EXPECT_ERR(lsetxattr(P("sl"), "user.x", "1", 1, 0), EPERM);
	if (geteuid() == 0) {
		EXPECT_OK(lsetxattr(P("sl"), "trusted.x", "1", 1, 0));
		EXPECT(lgetxattr(P("sl"), "trusted.x", buf, sizeof(buf)) == 1, "trusted on symlink");
	}
	/* xattrs go with the inode: through a hard link, and away with the last name */
	EXPECT_OK(link(f, P("g")));
	EXPECT(getxattr(P("g"), "user.bin", buf, sizeof(buf)) == 4, "xattr through a link");
	EXPECT_OK(unlink(f));
	EXPECT_OK(unlink(P("g")));
	mkfile(f, NULL);
	EXPECT_ERR(getxattr(f, "user.bin", buf, sizeof(buf)), ENODATA);
	EXPECT(listxattr(f, buf, sizeof(buf)) == 0 ||
	       strncmp(buf, "user.", 5) != 0, "a new inode has no old xattrs");
}

/* ---------------------------------------------------------------- ACLs */

static void acl_put(uint8_t *p, uint16_t tag, uint16_t perm, uint32_t id)
{
	p[0] = (uint8_t)tag;
	p[1] = (uint8_t)(tag >> 8);
	p[2] = (uint8_t)perm;
	p[3] = (uint8_t)(perm >> 8);
	p[4] = (uint8_t)id;
	p[5] = (uint8_t)(id >> 8);
	p[6] = (uint8_t)(id >> 16);
	p[7] = (uint8_t)(id >> 24);
}

/* An ACL: user::u, user:1000:named, group::g, mask::m, other::o (named < 0: no named/mask). */
static size_t acl_make(uint8_t *buf, int u, int named, int g, int m, int o)
{
	size_t n = 4;

	buf[0] = 2;
	buf[1] = buf[2] = buf[3] = 0;
	acl_put(buf + n, 0x01, (uint16_t)u, 0xffffffff), n += 8;
	if (named >= 0)
		acl_put(buf + n, 0x02, (uint16_t)named, 1000), n += 8;
	acl_put(buf + n, 0x04, (uint16_t)g, 0xffffffff), n += 8;
	if (named >= 0)
		acl_put(buf + n, 0x10, (uint16_t)m, 0xffffffff), n += 8;
	acl_put(buf + n, 0x20, (uint16_t)o, 0xffffffff), n += 8;
	return n;
}

static int as_user(uid_t uid, gid_t gid, int (*fn)(void *), void *arg);

struct acl_arg {
	const char *path;
	const uint8_t *acl;
	size_t len;
};

static int u_setacl(void *arg)
{
	const struct acl_arg *a = arg;
	return setxattr(a->path, "system.posix_acl_access", a->acl, a->len, 0);
}

static void t_acl(void)
{
	uint8_t acl[64], got[256];
	size_t n;
	HOLD(f, "f");

	mkfile(f, "x");
	EXPECT_OK(chmod(f, 0644));
	n = acl_make(acl, 7, 6, 4, 5, 1);
	if (setxattr(f, "system.posix_acl_access", acl, n, 0) < 0) {
		if (errno == EOPNOTSUPP) {
			skip("acl", "setxattr system.posix_acl_access: EOPNOTSUPP (no ACL support)");
			return;
		}
		FAIL("set access ACL");
	}
	/* the mode follows: owner from user::, group bits from the mask, other */
	EXPECT((st_of(f).st_mode & 0777) == 0751, "mode from ACL, got %o",
	       st_of(f).st_mode & 0777);
	EXPECT(getxattr(f, "system.posix_acl_access", got, sizeof(got)) == (ssize_t)n,
	       "ACL stored");
	/* chmod moves the mask */
	EXPECT_OK(chmod(f, 0640));
	EXPECT(getxattr(f, "system.posix_acl_access", got, sizeof(got)) == (ssize_t)n &&
	       got[4 + 3 * 8 + 2] == 4 && got[4 + 2] == 6 && got[4 + 4 * 8 + 2] == 0,
	       "chmod updates user::, mask:: and other::");
	/* a minimal ACL is the mode itself */
	n = acl_make(acl, 6, -1, 0, 0, 4);
	EXPECT_OK(setxattr(f, "system.posix_acl_access", acl, n, 0));
	EXPECT((st_of(f).st_mode & 0777) == 0604, "minimal ACL sets the mode, got %o",
	       st_of(f).st_mode & 0777);
	/* the kernel enforces a named entry */
	/* default ACL inherited by new files and directories */
	EXPECT_OK(mkdir(P("d"), 0755));
	n = acl_make(acl, 7, 5, 5, 7, 0);
	EXPECT_OK(setxattr(P("d"), "system.posix_acl_default", acl, n, 0));
	mode_t old = umask(077);
	mkfile(P("d/new"), NULL);
	EXPECT_OK(mkdir(P("d/sub"), 0777));
	umask(old);
	/* file: requested 0644 masked by the ACL, umask ignored: 0640 (mask r--? see below) */
	struct stat st = st_of(P("d/new"));
	EXPECT((st.st_mode & 0777) == 0640, "inherited file mode 0640, got %o",
	       st.st_mode & 0777);
	EXPECT(getxattr(P("d/new"), "system.posix_acl_access", got, sizeof(got)) == (ssize_t)n,
	       "file inherits an access ACL");
	EXPECT(getxattr(P("d/new"), "system.posix_acl_default", got, sizeof(got)) < 0 &&
	       errno == ENODATA, "a file gets no default ACL");
	st = st_of(P("d/sub"));
	EXPECT((st.st_mode & 0777) == 0770, "inherited directory mode 0770, got %o",
	       st.st_mode & 0777);
	EXPECT(getxattr(P("d/sub"), "system.posix_acl_default", got, sizeof(got)) == (ssize_t)n,
	       "a directory inherits the default ACL");
	/* default ACL on a file: EACCES */
	EXPECT_ERR(setxattr(f, "system.posix_acl_default", acl, n, 0), EACCES);
	/* enforcement: user 1000 (named rx under a mask) may read but not write d/new */
	if (geteuid() == 0) {
		EXPECT_OK(chmod(base, 0755));
		n = acl_make(acl, 6, 4, 0, 4, 0);
		EXPECT_OK(setxattr(P("d/new"), "system.posix_acl_access", acl, n, 0));
		EXPECT_OK(chmod(P("d"), 0755));
		pid_t pid = fork();
		if (pid == 0) {
			if (setresgid(2000, 2000, 2000) || setresuid(1000, 1000, 1000))
				_exit(2);
			int rd = open(P("d/new"), O_RDONLY);
			int wr = open(P("d/new"), O_WRONLY);
			_exit(rd >= 0 && wr < 0 && errno == EACCES ? 0 : 1);
		}
		int status;
		waitpid(pid, &status, 0);
		EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		       "the kernel enforces the named entry (status %d)", status);
		/* setting an access ACL is a chmod: an owner outside the file's group loses
		 * S_ISGID (CVE-2016-7097), with a full ACL and with a minimal one */
		mkfile(P("sg"), "x");
		EXPECT_OK(chown(P("sg"), 1001, 5000));
		for (int full = 1; full >= 0; full--) {
			EXPECT_OK(chmod(P("sg"), 02644));
			n = full ? acl_make(acl, 6, 4, 4, 4, 4) : acl_make(acl, 6, -1, 4, 0, 4);
			struct acl_arg a = { P("sg"), acl, n };
			EXPECT(as_user(1001, 1001, u_setacl, &a) == 0, "owner sets an ACL");
			st = st_of(P("sg"));
			EXPECT(!(st.st_mode & S_ISGID), "%s ACL by a non-member drops S_ISGID (%o)",
			       full ? "a full" : "a minimal", st.st_mode & 07777);
			EXPECT_OK(chmod(P("sg"), 02644));
			EXPECT(as_user(1001, 5000, u_setacl, &a) == 0, "member sets an ACL");
			st = st_of(P("sg"));
			EXPECT(st.st_mode & S_ISGID, "%s ACL by a member keeps S_ISGID (%o)",
			       full ? "a full" : "a minimal", st.st_mode & 07777);
		}
	}
}

/* ---------------------------------------------------------------- unlink while open */

static void t_unlink_open(void)
{
	char buf[64] = { 0 }, path[64];
	struct stat st;
	int fd, fd2;

	mkfile(P("f"), "still here");
	fd = open(P("f"), O_RDWR);
	EXPECT(fd >= 0, "open");
	EXPECT_OK(unlink(P("f")));
	EXPECT_ERR(access(P("f"), F_OK), ENOENT);
	EXPECT(fstat(fd, &st) == 0 && st.st_nlink == 0, "fstat of an unlinked open file: nlink 0");
	EXPECT(pread(fd, buf, sizeof(buf), 0) == 10 && memcmp(buf, "still here", 10) == 0,
	       "data readable after unlink");
	EXPECT(pwrite(fd, "!", 1, 10) == 1, "write after unlink");
	EXPECT(fsync(fd) == 0, "fsync after unlink");
	EXPECT_OK(fchmod(fd, 0600));
	EXPECT(fstat(fd, &st) == 0 && (st.st_mode & 0777) == 0600 && st.st_size == 11,
	       "fchmod and size of an unlinked file");
	/* reopen through /proc/self/fd */
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	fd2 = open(path, O_RDONLY);
	EXPECT(fd2 >= 0, "reopen through /proc/self/fd");
	if (fd2 >= 0) {
		memset(buf, 0, sizeof(buf));
		EXPECT(read(fd2, buf, sizeof(buf)) == 11 && memcmp(buf, "still here!", 11) == 0,
		       "reopened handle reads the data");
		close(fd2);
	}
	/* a new file with the same name is a different inode */
	mkfile(P("f"), "new");
	struct stat st2 = st_of(P("f"));
	EXPECT(st2.st_ino != st.st_ino, "new inode for the name");
	EXPECT(pread(fd, buf, sizeof(buf), 0) == 11, "old data still there");
	close(fd);
	/* rename over an open file keeps the old data for its handle */
	mkfile(P("g"), "old-g");
	fd = open(P("g"), O_RDONLY);
	mkfile(P("h"), "new-h");
	EXPECT_OK(rename(P("h"), P("g")));
	memset(buf, 0, sizeof(buf));
	EXPECT(fd >= 0 && pread(fd, buf, sizeof(buf), 0) == 5 && memcmp(buf, "old-g", 5) == 0,
	       "replaced file's handle keeps its data");
	if (fd >= 0)
		close(fd);
	/* an open directory that is removed */
	EXPECT_OK(mkdir(P("d"), 0755));
	int dfd = open(P("d"), O_RDONLY | O_DIRECTORY);
	EXPECT_OK(rmdir(P("d")));
	EXPECT(dfd >= 0 && fstat(dfd, &st) == 0, "fstat of a removed open directory");
	EXPECT_ERR(openat(dfd, "x", O_CREAT | O_WRONLY, 0644), ENOENT);
	if (dfd >= 0)
		close(dfd);
}

/* ---------------------------------------------------------------- times */

static void t_times(void)
{
	HOLD(f, "f");
	struct timespec ts[2];
	struct stat a, b;
	int fd;

	mkfile(f, "x");
	/* nanoseconds are kept */
	ts[0] = (struct timespec){ 1000000000, 123456789 };
	ts[1] = (struct timespec){ 1200000000, 987654321 };
	EXPECT_OK(utimensat(AT_FDCWD, f, ts, 0));
	a = st_of(f);
	EXPECT(a.st_atim.tv_sec == 1000000000 && a.st_atim.tv_nsec == 123456789, "atime ns");
	EXPECT(a.st_mtim.tv_sec == 1200000000 && a.st_mtim.tv_nsec == 987654321, "mtime ns");
	/* UTIME_OMIT leaves one alone, UTIME_NOW sets now */
	ts[0].tv_nsec = UTIME_OMIT;
	ts[1].tv_nsec = UTIME_NOW;
	EXPECT_OK(utimensat(AT_FDCWD, f, ts, 0));
	b = st_of(f);
	EXPECT(ns(b.st_atim) == ns(a.st_atim), "UTIME_OMIT keeps atime");
	EXPECT(b.st_mtim.tv_sec > 1600000000, "UTIME_NOW sets mtime");
	/* times before 1970 and far ahead */
	ts[0] = (struct timespec){ 0, 0 };
	ts[1] = (struct timespec){ 4102444800, 1 }; /* 2100 */
	EXPECT_OK(utimensat(AT_FDCWD, f, ts, 0));
	b = st_of(f);
	EXPECT(b.st_mtim.tv_sec == 4102444800 && b.st_mtim.tv_nsec == 1, "year 2100 mtime");
	EXPECT(b.st_atim.tv_sec == 0, "epoch atime");
	/* ctime: chmod, chown, truncate, write, rename, utimes; not by a plain read */
	struct {
		const char *what;
		int kind;
	} steps[] = { { "chmod", 0 }, { "chown", 1 }, { "truncate", 2 }, { "write", 3 },
		      { "rename", 4 }, { "utimes", 5 }, { "setxattr", 6 } };
	char cur[sizeof(f)];
	snprintf(cur, sizeof(cur), "%s", f);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		a = st_of(cur);
		tick();
		switch (steps[i].kind) {
		case 0:
			EXPECT_OK(chmod(cur, 0600));
			break;
		case 1:
			EXPECT_OK(chown(cur, geteuid(), getegid()));
			break;
		case 2:
			EXPECT_OK(truncate(cur, 100));
			break;
		case 3:
			fd = open(cur, O_WRONLY);
			EXPECT(fd >= 0 && write(fd, "y", 1) == 1, "write");
			if (fd >= 0)
				close(fd);
			break;
		case 4:
			EXPECT_OK(rename(cur, P("moved")));
			snprintf(cur, sizeof(cur), "%s", P("moved"));
			break;
		case 5:
			EXPECT_OK(utimensat(AT_FDCWD, cur, NULL, 0));
			break;
		case 6:
			EXPECT_OK(setxattr(cur, "user.t", "1", 1, 0));
			break;
		}
		b = st_of(cur);
		EXPECT(ns(b.st_ctim) > ns(a.st_ctim), "%s changes ctime", steps[i].what);
	}
	/* directory mtime and ctime change with entries */
	EXPECT_OK(mkdir(P("d"), 0755));
	a = st_of(P("d"));
	tick();
	mkfile(P("d/x"), NULL);
	b = st_of(P("d"));
	EXPECT(ns(b.st_mtim) > ns(a.st_mtim) && ns(b.st_ctim) > ns(a.st_ctim), "create: dir times");
	a = b;
	tick();
	EXPECT_OK(unlink(P("d/x")));
	b = st_of(P("d"));
	EXPECT(ns(b.st_mtim) > ns(a.st_mtim), "unlink: dir mtime");
	/* write changes mtime */
	a = st_of(cur);
	tick();
	fd = open(cur, O_WRONLY);
	EXPECT(fd >= 0 && pwrite(fd, "z", 1, 5) == 1, "pwrite");
	if (fd >= 0)
		close(fd);
	b = st_of(cur);
	EXPECT(ns(b.st_mtim) > ns(a.st_mtim), "write changes mtime");
}

/* ---------------------------------------------------------------- open flags */

static void t_open_flags(void)
{
	char buf[32] = { 0 };
	int fd;

	fd = open(P("f"), O_CREAT | O_EXCL | O_WRONLY, 0644);
	EXPECT(fd >= 0, "O_EXCL create");
	if (fd >= 0) {
		EXPECT(write(fd, "0123456789", 10) == 10, "write");
		close(fd);
	}
	EXPECT_ERR(open(P("f"), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
	EXPECT_OK(symlink("f", P("sl")));
	EXPECT_ERR(open(P("sl"), O_CREAT | O_EXCL | O_WRONLY, 0644), EEXIST);
	/* O_TRUNC */
	fd = open(P("f"), O_WRONLY | O_TRUNC);
	EXPECT(fd >= 0, "O_TRUNC");
	if (fd >= 0) {
		EXPECT(write(fd, "ab", 2) == 2, "write after O_TRUNC");
		close(fd);
	}
	EXPECT(st_of(P("f")).st_size == 2, "O_TRUNC truncates, size %jd",
	       (intmax_t)st_of(P("f")).st_size);
	/* O_TRUNC on a read-only open of a file: still truncates on Linux only with write
	 * permission; O_RDONLY|O_TRUNC is unspecified, so not checked. O_APPEND: */
	fd = open(P("f"), O_WRONLY | O_APPEND);
	EXPECT(fd >= 0, "O_APPEND");
	if (fd >= 0) {
		lseek(fd, 0, SEEK_SET);
		EXPECT(write(fd, "cd", 2) == 2, "append write");
		close(fd);
	}
	fd = open(P("f"), O_RDONLY);
	EXPECT(fd >= 0 && read(fd, buf, sizeof(buf)) == 4 && memcmp(buf, "abcd", 4) == 0,
	       "O_APPEND writes at the end");
	if (fd >= 0)
		close(fd);
	/* umask */
	mode_t old = umask(027);
	fd = open(P("m"), O_CREAT | O_WRONLY, 0777);
	if (fd >= 0)
		close(fd);
	EXPECT_OK(mkdir(P("md"), 0777));
	umask(old);
	EXPECT((st_of(P("m")).st_mode & 07777) == 0750, "umask on create, got %o",
	       st_of(P("m")).st_mode & 07777);
	EXPECT((st_of(P("md")).st_mode & 07777) == 0750, "umask on mkdir");
	/* odd modes survive */
	EXPECT_OK(chmod(P("m"), 07777));
	EXPECT((st_of(P("m")).st_mode & 07777) == 07777, "mode 7777");
	EXPECT_OK(chmod(P("m"), 0));
	EXPECT((st_of(P("m")).st_mode & 07777) == 0, "mode 0");
	/* directories */
	EXPECT_ERR(open(P("md"), O_WRONLY), EISDIR);
	EXPECT_ERR(open(P("f/x"), O_RDONLY), ENOTDIR);
	EXPECT_ERR(open(P("f"), O_RDONLY | O_DIRECTORY), ENOTDIR);
	/* ftruncate up and down */
	fd = open(P("t"), O_CREAT | O_RDWR, 0644);
	EXPECT(fd >= 0 && ftruncate(fd, 10000) == 0, "ftruncate up");
	memset(buf, 1, sizeof(buf));
	EXPECT(pread(fd, buf, 8, 5000) == 8 && !memcmp(buf, "\0\0\0\0\0\0\0\0", 8),
	       "a truncated-up tail reads as zeros");
	EXPECT(ftruncate(fd, 3) == 0 && st_of(P("t")).st_size == 3, "ftruncate down");
	if (fd >= 0)
		close(fd);
}

/* ---------------------------------------------------------------- rmdir */

static void t_rmdir(void)
{
	EXPECT_OK(mkdir(P("d"), 0755));
	EXPECT_OK(mkdir(P("d/a"), 0755));
	EXPECT_OK(mkdir(P("d/b"), 0755));
	mkfile(P("d/f"), NULL);
	EXPECT(st_of(P("d")).st_nlink == 4, "nlink = 2 + subdirectories");
	EXPECT_ERR(rmdir(P("d")), ENOTEMPTY);
	EXPECT_ERR(rmdir(P("d/f")), ENOTDIR);
	EXPECT_ERR(unlink(P("d/a")), EISDIR);
	EXPECT_ERR(rmdir(P("d/none")), ENOENT);
	EXPECT_ERR(rmdir(P("d/.")), EINVAL);
	EXPECT_OK(rmdir(P("d/a")));
	EXPECT(st_of(P("d")).st_nlink == 3, "nlink after rmdir");
	EXPECT_OK(unlink(P("d/f")));
	EXPECT_OK(rmdir(P("d/b")));
	EXPECT_OK(rmdir(P("d")));
	EXPECT(st_of(base).st_nlink == 2, "parent nlink back to 2");
}

/* ---------------------------------------------------------------- readdir */

static int list_count(const char *dir, const char *prefix, int want_max, char *seen)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d))) {
		int i;
		if (sscanf(e->d_name, "e%d", &i) == 1 && i >= 0 && i < want_max && seen)
			seen[i]++;
		if (!prefix || strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	}
	closedir(d);
	return n;
}

static void t_readdir(void)
{
	enum { N = 3000 };
	static char seen[N];
	HOLD(dir, "d");
	struct dirent *e;
	int n = 0;

	EXPECT_OK(mkdir(dir, 0755));
	for (int i = 0; i < N; i++)
		mkfile(P("d/e%d", i), NULL);
	EXPECT(list_count(dir, "e", N, NULL) == N, "all entries listed");
	/* change the directory while listing it: the entries that stay are seen exactly
	 * once, the removed ones at most once (POSIX readdir) */
	memset(seen, 0, sizeof(seen));
	DIR *d = opendir(dir);
	while (d && (e = readdir(d))) {
		int i;
		if (sscanf(e->d_name, "e%d", &i) == 1 && i >= 0 && i < N)
			seen[i]++;
		if (++n % 100 == 0) {
			/* remove some entries ahead and behind, add new ones */
			char nm[32];
			snprintf(nm, sizeof(nm), "e%d", (n * 7) % N);
			if (unlinkat(dirfd(d), nm, 0) == 0)
				seen[(n * 7) % N] += 10; /* removed: seen 10 or 11 times */
			snprintf(nm, sizeof(nm), "new%d", n);
			int fd = openat(dirfd(d), nm, O_CREAT | O_WRONLY, 0644);
			if (fd >= 0)
				close(fd);
		}
	}
	if (d)
		closedir(d);
	for (int i = 0; i < N; i++) {
		if (seen[i] == 1 || seen[i] == 10 || seen[i] == 11)
			continue;
		FAIL("entry e%d seen %d times while the directory changed", i, seen[i]);
		break;
	}
	/* telldir/seekdir */
	d = opendir(dir);
	long pos = -1;
	char name_at[256] = "";
	for (int i = 0; d && (e = readdir(d)); i++) {
		if (i == 500) {
			pos = telldir(d);
		} else if (i == 501) {
			snprintf(name_at, sizeof(name_at), "%s", e->d_name);
		} else if (i > 2000) {
			break;
		}
	}
	if (d && pos >= 0) {
		seekdir(d, pos);
		e = readdir(d);
		EXPECT(e && strcmp(e->d_name, name_at) == 0, "seekdir back to a telldir position");
		rewinddir(d);
		e = readdir(d);
		EXPECT(e != NULL, "rewinddir");
	}
	if (d)
		closedir(d);
	/* "." and ".." */
	d = opendir(dir);
	struct stat me = st_of(dir), up = st_of(base);
	int dots = 0;
	while (d && (e = readdir(d))) {
		if (strcmp(e->d_name, ".") == 0) {
			dots++;
			EXPECT(e->d_ino == me.st_ino, "'.' d_ino");
		} else if (strcmp(e->d_name, "..") == 0) {
			dots++;
			EXPECT(e->d_ino == up.st_ino, "'..' d_ino");
		} else if (strncmp(e->d_name, "e", 1) == 0) {
			EXPECT(e->d_type == DT_REG, "d_type");
		}
	}
	if (d)
		closedir(d);
	EXPECT(dots == 2, "'.' and '..' once each");
}

/* ---------------------------------------------------------------- permissions */

/* Runs fn as uid/gid in a child; returns its exit status (0: fn returned 0). */
static int as_user(uid_t uid, gid_t gid, int (*fn)(void *), void *arg)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		gid_t groups[1] = { gid };
		if (setgroups(1, groups) || setresgid(gid, gid, gid) || setresuid(uid, uid, uid))
			_exit(99);
		umask(022);
		_exit(fn(arg) == 0 ? 0 : 1);
	}
	if (pid < 0 || waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int u_create(void *arg)
{
	int fd = open((const char *)arg, O_CREAT | O_EXCL | O_WRONLY, 0644);
	return fd < 0 ? 1 : close(fd);
}

static int u_unlink_eperm(void *arg)
{
	return unlink((const char *)arg) < 0 && (errno == EPERM || errno == EACCES) ? 0 : 1;
}

static int u_unlink_ok(void *arg)
{
	return unlink((const char *)arg);
}

static int u_write_eacces(void *arg)
{
	return open((const char *)arg, O_WRONLY) < 0 && errno == EACCES ? 0 : 1;
}

static int u_chmod_eperm(void *arg)
{
	return chmod((const char *)arg, 0777) < 0 && errno == EPERM ? 0 : 1;
}

static int u_mkdir(void *arg)
{
	return mkdir((const char *)arg, 0755);
}

static int u_rename_eperm(void *arg)
{
	const char **p = arg;
	return rename(p[0], p[1]) < 0 && (errno == EPERM || errno == EACCES) ? 0 : 1;
}

static int u_write_kills_suid(void *arg)
{
	int fd = open((const char *)arg, O_WRONLY);
	if (fd < 0 || write(fd, "x", 1) != 1)
		return 1;
	close(fd);
	struct stat st;
	return stat((const char *)arg, &st) == 0 && !(st.st_mode & S_ISUID) ? 0 : 1;
}

static int u_chmod_sgid(void *arg)
{
	return chmod((const char *)arg, 02755);
}

/* One change of contents by an unprivileged writer, by name (see t_killpriv). */
static int u_modify(void *arg)
{
	const char *op = ((const char **)arg)[0], *path = ((const char **)arg)[1];
	int fd = open(path, O_RDWR), r = -1;

	if (fd < 0)
		return 1;
	if (strcmp(op, "write") == 0)
		r = pwrite(fd, "y", 1, 0) == 1 ? 0 : -1;
	else if (strcmp(op, "truncate") == 0)
		r = truncate(path, 100);
	else if (strcmp(op, "ftruncate") == 0)
		r = ftruncate(fd, 200);
	else if (strcmp(op, "fallocate") == 0)
		r = fallocate(fd, 0, 0, 65536);
	else if (strcmp(op, "fallocate-keep-size") == 0)
		r = fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 65536);
	else if (strcmp(op, "punch-hole") == 0)
		r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1);
	else if (strcmp(op, "copy_file_range") == 0) {
		int in = open(((const char **)arg)[2], O_RDONLY);
		loff_t o = 0;
		r = in >= 0 && copy_file_range(in, NULL, fd, &o, 1, 0) == 1 ? 0 : -1;
		if (in >= 0)
			close(in);
	}
	close(fd);
	return r == 0 ? 0 : 1;
}

/* Every change of a file's contents by a writer who is not root drops S_ISUID, and S_ISGID
 * (with group execute) where the writer is not in the file's group, as local filesystems do. */
static void t_killpriv(void)
{
	static const char *ops[] = { "write",	   "truncate",	 "ftruncate",	   "fallocate",
				     "fallocate-keep-size", "punch-hole", "copy_file_range" };

	if (geteuid() != 0) {
		skip("killpriv", "needs root (switches uid and gid)");
		return;
	}
	EXPECT_OK(chmod(base, 0777));
	mkfile(P("src"), "abc");
	EXPECT_OK(chmod(P("src"), 0644));
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		const char *f = P("kp-%s", ops[i]);
		mkfile(f, "xxxxxxxx");
		EXPECT_OK(chown(f, 1001, 5000));
		EXPECT_OK(chmod(f, 06770));
		const char *arg[3] = { ops[i], f, P("src") };
		int rc = as_user(1001, 1001, u_modify, arg);
		if (rc != 0) {
			FAIL("%s as the owner (status %d)", ops[i], rc);
			continue;
		}
		struct stat st = st_of(f);
		EXPECT((st.st_mode & 07777) == 0770, "%s by a non-member drops S_ISUID and "
		       "S_ISGID (mode %o)", ops[i], st.st_mode & 07777);
	}
}

static void t_perms(void)
{
	struct stat st;

	if (geteuid() != 0) {
		skip("perms", "needs root (switches uid and gid)");
		return;
	}
	EXPECT_OK(chmod(base, 0777));
	/* new inodes belong to the caller */
	EXPECT(as_user(1001, 1001, u_create, (void *)P("owned")) == 0, "create as 1001");
	st = st_of(P("owned"));
	EXPECT(st.st_uid == 1001 && st.st_gid == 1001, "owned by the caller (%u:%u)",
	       st.st_uid, st.st_gid);
	/* sticky directory: others' files cannot be removed or renamed away */
	EXPECT_OK(mkdir(P("tmp"), 0777));
	EXPECT_OK(chmod(P("tmp"), 01777));
	EXPECT(as_user(1001, 1001, u_create, (void *)P("tmp/a")) == 0, "create in sticky dir");
	EXPECT(as_user(1002, 1002, u_unlink_eperm, (void *)P("tmp/a")) == 0,
	       "sticky: another user cannot unlink");
	const char *rn[2] = { P("tmp/a"), P("tmp/b") };
	EXPECT(as_user(1002, 1002, u_rename_eperm, (void *)rn) == 0,
	       "sticky: another user cannot rename");
	EXPECT(as_user(1001, 1001, u_unlink_ok, (void *)P("tmp/a")) == 0, "owner can unlink");
	/* setgid directory: gid and S_ISGID inherited */
	EXPECT_OK(mkdir(P("sg"), 0777));
	EXPECT_OK(chown(P("sg"), 0, 5000));
	EXPECT_OK(chmod(P("sg"), 02777));
	EXPECT(as_user(1001, 1001, u_create, (void *)P("sg/f")) == 0, "create in setgid dir");
	EXPECT(as_user(1001, 1001, u_mkdir, (void *)P("sg/d")) == 0, "mkdir in setgid dir");
	st = st_of(P("sg/f"));
	EXPECT(st.st_gid == 5000 && st.st_uid == 1001, "file gets the directory's gid");
	st = st_of(P("sg/d"));
	EXPECT(st.st_gid == 5000 && (st.st_mode & S_ISGID), "subdirectory gets gid and S_ISGID");
	/* mode bits enforced */
	mkfile(P("ro"), "x");
	EXPECT_OK(chmod(P("ro"), 0444));
	EXPECT(as_user(1001, 1001, u_write_eacces, (void *)P("ro")) == 0, "EACCES on 0444");
	EXPECT(as_user(1001, 1001, u_chmod_eperm, (void *)P("ro")) == 0, "chmod of other's: EPERM");
	/* writes by the owner clear setuid */
	mkfile(P("suid"), "x");
	EXPECT_OK(chown(P("suid"), 1001, 1001));
	EXPECT_OK(chmod(P("suid"), 04755));
	EXPECT(as_user(1001, 1001, u_write_kills_suid, (void *)P("suid")) == 0,
	       "a write clears S_ISUID");
	/* an owner outside the file's group cannot set S_ISGID: chmod succeeds, the bit is
	 * dropped (CVE-2016-7097); a member of the group keeps it */
	mkfile(P("sgid"), "x");
	EXPECT_OK(chown(P("sgid"), 1001, 5000));
	EXPECT(as_user(1001, 1001, u_chmod_sgid, (void *)P("sgid")) == 0, "owner's chmod 02755");
	st = st_of(P("sgid"));
	EXPECT((st.st_mode & 07777) == 0755, "chmod by a non-member drops S_ISGID (mode %o)",
	       st.st_mode & 07777);
	EXPECT(as_user(1001, 5000, u_chmod_sgid, (void *)P("sgid")) == 0, "member's chmod 02755");
	st = st_of(P("sgid"));
	EXPECT((st.st_mode & 07777) == 02755, "chmod by a member keeps S_ISGID (mode %o)",
	       st.st_mode & 07777);
	/* chown clears setuid/setgid */
	EXPECT_OK(chmod(P("suid"), 06755));
	EXPECT_OK(chown(P("suid"), 1002, 1002));
	st = st_of(P("suid"));
	EXPECT(!(st.st_mode & S_ISUID), "chown clears S_ISUID (mode %o)", st.st_mode);
}

/* ---------------------------------------------------------------- atime */

static void t_atime(void)
{
	HOLD(f, "f");
	struct timespec ts[2];
	char buf[8];
	struct stat a;
	int fd;

	mkfile(f, "abc");
	/* atime older than mtime: a read updates it (relatime) */
	ts[0] = (struct timespec){ 1000, 0 };
	ts[1] = (struct timespec){ 2000, 0 };
	EXPECT_OK(utimensat(AT_FDCWD, f, ts, 0));
	fd = open(f, O_RDONLY);
	EXPECT(fd >= 0 && read(fd, buf, sizeof(buf)) == 3, "read");
	if (fd >= 0)
		close(fd);
	a = st_of(f);
	EXPECT(a.st_atim.tv_sec > 1600000000, "relatime: read updates an old atime (%jd)",
	       (intmax_t)a.st_atim.tv_sec);
	/* atime newer than mtime and ctime and recent: no update */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	ts[0] = (struct timespec){ now.tv_sec + 10, 0 }; /* newer than the ctime set now */
	ts[1] = (struct timespec){ 2000, 0 };
	EXPECT_OK(utimensat(AT_FDCWD, f, ts, 0));
	fd = open(f, O_RDONLY);
	EXPECT(fd >= 0 && read(fd, buf, sizeof(buf)) == 3, "read");
	if (fd >= 0)
		close(fd);
	a = st_of(f);
	EXPECT(a.st_atim.tv_sec == now.tv_sec + 10, "relatime: a recent atime stays");
}

/* ---------------------------------------------------------------- scale */

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void t_bigdir(void)
{
	const char *env = getenv("POSIX_CHECK_N");
	int n = env ? atoi(env) : 100000;
	double t0 = now_s(), t1, t2, t3;
	char name[64];
	struct stat st;

	EXPECT_OK(mkdir(P("big"), 0755));
	int dfd = open(P("big"), O_RDONLY | O_DIRECTORY);
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof(name), "entry-%08d", i);
		int fd = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd < 0) {
			FAIL("create %s", name);
			break;
		}
		close(fd);
	}
	t1 = now_s();
	int listed = list_count(P("big"), "entry-", 0, NULL);
	t2 = now_s();
	EXPECT(listed == n, "listed %d of %d", listed, n);
	srandom(42);
	for (int i = 0; i < 2000; i++) {
		snprintf(name, sizeof(name), "entry-%08ld", random() % n);
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			FAIL("stat %s", name);
			break;
		}
	}
	t3 = now_s();
	printf("# bigdir: %d creates %.1f s, listing %.2f s, 2000 random lookups %.2f s\n", n,
	       t1 - t0, t2 - t1, t3 - t2);
	close(dfd);
}

static void t_deep(void)
{
	enum { DEPTH = 200 };
	char path[PATH_MAX];
	size_t len;

	snprintf(path, sizeof(path), "%s", base);
	len = strlen(path);
	for (int i = 0; i < DEPTH && len + 16 < sizeof(path); i++) {
		len += (size_t)snprintf(path + len, sizeof(path) - len, "/l%d", i);
		if (mkdir(path, 0755) < 0) {
			FAIL("mkdir depth %d", i);
			return;
		}
	}
	mkfile(P("%s/leaf", path + strlen(base) + 1), "deep");
	struct stat st;
	EXPECT(stat(P("%s/leaf", path + strlen(base) + 1), &st) == 0 && st.st_size == 4,
	       "a file 200 levels down");
	/* moving the deep tree under itself is refused at every level */
	EXPECT_ERR(rename(P("l0"), P("%s/x", path + strlen(base) + 1)), EINVAL);
	EXPECT_OK(rename(P("l0"), P("top")));
}

/* ---------------------------------------------------------------- bench */

static int bench(const char *phase, const char *dir)
{
	const char *env = getenv("POSIX_CHECK_N");
	int n = env ? atoi(env) : 10000, done = 0, dfd;
	char path[PATH_MAX], name[64], to[64], buf[4096];
	bool small = strcmp(phase, "small") == 0;
	struct stat st;
	double t0;

	snprintf(path, sizeof(path), "%s/%s", dir, small ? "small" : "bench");
	if ((strcmp(phase, "create") == 0 || small) && mkdir(path, 0755) < 0) {
		perror(path);
		return 1;
	}
	dfd = open(path, O_RDONLY | O_DIRECTORY);
	if (dfd < 0) {
		perror(path);
		return 1;
	}
	memset(buf, 'x', sizeof(buf));
	t0 = now_s();
	if (strcmp(phase, "readdir") == 0) {
		DIR *d = opendir(path);
		struct dirent *e;
		while (d && (e = readdir(d)))
			done += e->d_name[0] != '.';
		if (d)
			closedir(d);
	}
	if (strcmp(phase, "fsync") == 0) {
		/* 4 KiB overwrites of a 1 MiB file, each fsynced: n / 20 of them */
		int fd = openat(dfd, "fsync-file", O_CREAT | O_TRUNC | O_RDWR, 0644);
		if (fd < 0 || ftruncate(fd, 1 << 20) < 0 || fsync(fd) < 0) {
			perror("fsync-file");
			return 1;
		}
		t0 = now_s();
		for (int i = 0; i < n / 20; i++, done++) {
			if (pwrite(fd, buf, sizeof(buf), (off_t)(i % 256) * 4096) != sizeof(buf) ||
			    fsync(fd) < 0) {
				perror("fsync-file");
				return 1;
			}
		}
		close(fd);
		unlinkat(dfd, "fsync-file", 0);
	}
	for (int i = 0; i < n && strcmp(phase, "readdir") != 0 && strcmp(phase, "fsync") != 0;
	     i++) {
		int fd, r = 0;
		snprintf(name, sizeof(name), "f%08d", i);
		snprintf(to, sizeof(to), "r%08d", i);
		if (strcmp(phase, "create") == 0 || small) {
			fd = openat(dfd, name, O_CREAT | O_EXCL | O_WRONLY, 0644);
			if (fd >= 0 && small && write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
				r = -1;
			if (fd < 0 || close(fd) < 0)
				r = -1;
		} else if (strcmp(phase, "stat") == 0) {
			r = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW);
		} else if (strcmp(phase, "rename") == 0) {
			r = renameat(dfd, name, dfd, to);
		} else if (strcmp(phase, "unlink") == 0) {
			r = unlinkat(dfd, to, 0);
		} else {
			fprintf(stderr, "posix_check: unknown bench phase '%s'\n", phase);
			return 2;
		}
		if (r < 0) {
			fprintf(stderr, "posix_check: bench %s %s/%s: %s\n", phase, path, name,
				strerror(errno));
			return 1;
		}
		done++;
	}
	double t = now_s() - t0;
	close(dfd);
	printf("%s %.0f\n", phase, t > 0 ? done / t : 0.0);
	return 0;
}

struct cmd {
	const char *name;
	void (*fn)(void);
};

static const struct cmd cmds[] = {
	{ "rename-rules", t_rename_rules }, { "links", t_links },   { "symlink", t_symlink },
	{ "mknod", t_mknod },               { "names", t_names },   { "xattr", t_xattr },
	{ "acl", t_acl },                   { "unlink-open", t_unlink_open },
	{ "times", t_times },               { "open-flags", t_open_flags },
	{ "rmdir", t_rmdir },               { "readdir", t_readdir }, { "perms", t_perms },
	{ "killpriv", t_killpriv },
	{ "atime", t_atime },               { "deep", t_deep },     { "bigdir", t_bigdir },
};

/* 1 when anything failed, else 77 (skipped, as automake and meson read it) when a subcommand
 * could not run, else 0. */
static int exit_status(void)
{
	return failures ? 1 : skipped ? 77 : 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "bench") == 0)
		return bench(argv[2], argv[3]);
	if (argc != 3) {
		fprintf(stderr, "usage: posix_check SUBCOMMAND DIR\n");
		return 2;
	}
	umask(022);
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		bool all = strcmp(argv[1], "all") == 0 && cmds[i].fn != t_bigdir;
		if (!all && strcmp(argv[1], cmds[i].name) != 0)
			continue;
		int before = failures, skipped_before = skipped;
		if (setup(argv[2], cmds[i].name) == 0)
			cmds[i].fn();
		printf("%s %s\n",
		       failures != before ? "FAILED" : skipped != skipped_before ? "skipped" : "ok",
		       cmds[i].name);
		if (!all)
			return exit_status();
	}
	if (strcmp(argv[1], "all") != 0) {
		fprintf(stderr, "posix_check: unknown subcommand '%s'\n", argv[1]);
		return 2;
	}
	return exit_status();
}
