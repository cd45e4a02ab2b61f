/*
 * powerloss: a FUSE filesystem over a backing directory that can lose power. It keeps
 * everything a real disk could still lose in memory or in an undo log, and on command throws
 * it away, so that a test can check that what a program was told is durable survives.
 *
 *   powerloss [-f] [-d] [-o opt,...] BACKING MOUNTPOINT
 *
 * -f stays in the foreground (tests use it, to know the PID; without it stderr, and with it
 * the helper's messages, go to /dev/null), -d is libfuse's debug output;
 * -s is accepted and changes nothing: the helper is always single-threaded.
 *
 * Model (doc/testing.md, "The power-loss helper"):
 *   - File data. Writes and size changes (truncate, O_TRUNC, fallocate) stay in memory per
 *     inode: dirty 4 KiB pages, the pending size, and how much of the backing file is still
 *     valid after a truncation. Reads see the dirty pages merged over the backing file.
 *     fsync() and fdatasync() of the file write its dirty pages and size to the backing
 *     file and fsync it; nothing else does (close, fsync of another file, of a directory).
 *   - Namespace. create, mknod, mkdir, symlink, link, unlink, rmdir and rename are applied
 *     to BACKING at once and appended to an undo log. An fsync() of a directory makes the
 *     log's changes in that directory durable. A file's rename is two such changes, the
 *     old name's removal and the new name's creation, each durable with its directory (only
 *     the target synced: the file keeps both names; only the source: neither); a
 *     directory's rename is durable once both directories were synced after it, and
 *     RENAME_EXCHANGE likewise. Names that unlink, rmdir or a replacing rename take
 *     away are moved into BACKING/.powerloss-graveyard (hidden from the mount), so that
 *     their undo can bring them back; durable changes leave the log and their graveyard
 *     entries are deleted.
 *   - Power loss, on SIGUSR1: every dirty page and pending size is discarded, every change
 *     still in the undo log is undone, newest first, the graveyard is emptied, and from then
 *     on every request fails with EIO until the filesystem is unmounted. The line
 *     "powerloss: power lost ..." on stderr says it is done. BACKING then holds exactly the
 *     synced state, and mounting the helper over it again starts from there.
 *   - A clean unmount (no power loss) writes every dirty file, keeps every change and empties
 *     the graveyard, as a real filesystem's unmount does.
 * Not modelled: attributes (mode, owner, times), extended attributes and the allocation of
 * blocks are applied at once and never lost; syncfs() and sync() do not reach a FUSE
 * filesystem; writes within one synced file are never reordered or torn.
 *
 * Inodes are O_PATH descriptors of the backing files, keyed by (st_dev, st_ino), with the
 * kernel's lookup count as in tests/helpers/passthrough.c. An inode also stays while it has
 * dirty data (the kernel may forget it and look it up again), while an undo record names it
 * as a directory, or while it has names in the graveyard (those links are subtracted from
 * st_nlink, so that an unlinked file counts its links as it would on a real filesystem).
 * One thread serves every request and the power-loss signal (a self-pipe next to /dev/fuse
 * in the loop), so nothing here takes a lock.
 */
#define FUSE_USE_VERSION 312

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tessera/common.h"

#include "fuse_helpers.h"

#define PL_PAGE 4096u
#define PL_GRAVE ".powerloss-graveyard"
#define PL_BUCKETS 4096u

/* ------------------------------------------------------------------ state */

struct pl_page {
	uint64_t idx;
	uint8_t *data;
};

/* Unsynced data of a regular file. Invariant: valid <= size; the file's content at offset x
 * is the dirty page holding x if there is one, else the backing file's byte when x < valid,
 * else zero; nothing at or beyond size. */
struct pl_dirty {
	uint64_t size;
	uint64_t valid;
	struct pl_page *pages; /* sorted by idx */
	size_t n, cap;
};

struct pl_inode {
	struct pl_inode *hnext;
	dev_t dev;
	ino_t ino;
	int fd; /* O_PATH */
	int rw; /* read-write descriptor for file data, -1 until needed */
	uint64_t nlookup;
	unsigned pins;   /* undo records naming this directory */
	unsigned graves; /* its links in the graveyard */
	struct pl_dirty *dirty;
};

enum pl_kind {
	PL_MADE,      /* dir[0]/name[0] is new (create, mknod, mkdir, symlink, link, the target
		       * of a file's rename); an entry it replaced went to grave */
	PL_REMOVED,   /* dir[0]/name[0] went to the graveyard as grave (unlink, rmdir), or
		       * left by a file's rename (grave is then a link of the file) */
	PL_RENAMED,   /* a directory's dir[0]/name[0] -> dir[1]/name[1]; a replaced one: grave */
	PL_EXCHANGED, /* RENAME_EXCHANGE of the two */
};

struct pl_rec {
	struct pl_rec *prev, *next;
	enum pl_kind kind;
	struct pl_inode *dir[2]; /* dir[1] only for renames; pinned */
	bool synced[2];
	char *name[2];
	char *grave;                /* graveyard name, or NULL */
	struct pl_inode *grave_in;  /* the inode under it */
	dev_t dev;                  /* the entry the change made or moved */
	ino_t ino;
};

struct pl_dir_handle {
	DIR *d;
	bool root;
};

static struct {
	struct pl_inode root;
	struct pl_inode *hash[PL_BUCKETS];
	struct pl_rec *log_head, *log_tail;
	size_t log_len;
	int grave_fd; /* O_PATH of BACKING/.powerloss-graveyard */
	uint64_t grave_seq;
	bool dead;
	int sigpipe[2];
	size_t undo_failed;
} pl = { .grave_fd = -1, .sigpipe = { -1, -1 } };

static struct pl_inode *inode_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &pl.root : (struct pl_inode *)(uintptr_t)ino;
}

static fuse_ino_t ino_of(struct pl_inode *in)
{
	return in == &pl.root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)in;
}

static unsigned bucket_of(dev_t dev, ino_t ino)
{
	return (unsigned)(((uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev) >> 52) %
	       PL_BUCKETS;
}

static struct pl_inode *inode_find(dev_t dev, ino_t ino)
{
	struct pl_inode *in;

	for (in = pl.hash[bucket_of(dev, ino)]; in; in = in->hnext)
		if (in->dev == dev && in->ino == ino)
			return in;
	return NULL;
}

/* The inode st describes; takes over fd (O_PATH) or closes it. */
static struct pl_inode *inode_get(int fd, const struct stat *st)
{
	struct pl_inode *in = inode_find(st->st_dev, st->st_ino);
	unsigned b;

	if (in) {
		close(fd);
		return in;
	}
	in = calloc(1, sizeof(*in));
	if (!in) {
		close(fd);
		return NULL;
	}
	in->fd = fd;
	in->rw = -1;
	in->dev = st->st_dev;
	in->ino = st->st_ino;
	b = bucket_of(in->dev, in->ino);
	in->hnext = pl.hash[b];
	pl.hash[b] = in;
	return in;
}

static void dirty_free(struct pl_inode *in)
{
	if (!in->dirty)
		return;
	for (size_t i = 0; i < in->dirty->n; i++)
		free(in->dirty->pages[i].data);
	free(in->dirty->pages);
	free(in->dirty);
	in->dirty = NULL;
}

/* Frees an inode nothing refers to any more. */
static void inode_maybe_free(struct pl_inode *in)
{
	struct pl_inode **p;

	if (in == &pl.root || in->nlookup || in->pins || in->graves || in->dirty)
		return;
	for (p = &pl.hash[bucket_of(in->dev, in->ino)]; *p && *p != in; p = &(*p)->hnext)
		;
	if (*p)
		*p = in->hnext;
	if (in->rw >= 0)
		close(in->rw);
	close(in->fd);
	free(in);
}

/* Corrects what the backing file's attributes say by what is only in memory. */
static void attr_fix(const struct pl_inode *in, struct stat *st)
{
	if (in->dirty && S_ISREG(st->st_mode)) {
		uint64_t blocks = (in->dirty->size + 511) / 512;
		st->st_size = (off_t)in->dirty->size;
		if ((uint64_t)st->st_blocks < blocks)
			st->st_blocks = (blkcnt_t)blocks;
	}
	if (in->graves)
		st->st_nlink = S_ISDIR(st->st_mode) || st->st_nlink < in->graves ?
				       0 :
				       st->st_nlink - in->graves;
}

static bool hidden(fuse_ino_t parent, const char *name)
{
	return parent == FUSE_ROOT_ID && strcmp(name, PL_GRAVE) == 0;
}

/* ------------------------------------------------------------------ file data */

static int rw_fd(struct pl_inode *in)
{
	char path[64];

	if (in->rw >= 0)
		return in->rw;
	fh_proc_path(path, sizeof(path), in->fd);
	in->rw = open(path, O_RDWR | O_CLOEXEC);
	if (in->rw < 0 && (errno == EACCES || errno == EPERM || errno == EROFS))
		in->rw = open(path, O_RDONLY | O_CLOEXEC);
	return in->rw >= 0 ? in->rw : -errno;
}

static int dirty_get(struct pl_inode *in, struct pl_dirty **ret)
{
	struct stat st;
	int fd;

	if (!in->dirty) {
		if ((fd = rw_fd(in)) < 0)
			return -fd;
		if (fstat(fd, &st) < 0)
			return errno;
		if (!S_ISREG(st.st_mode))
			return EINVAL;
		in->dirty = calloc(1, sizeof(*in->dirty));
		if (!in->dirty)
			return ENOMEM;
		in->dirty->size = in->dirty->valid = (uint64_t)st.st_size;
	}
	*ret = in->dirty;
	return 0;
}

/* Index of the first page with idx >= want. */
static size_t page_search(const struct pl_dirty *d, uint64_t want)
{
	size_t lo = 0, hi = d->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (d->pages[mid].idx < want)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Reads pread(2)-style (short only at the end of the file) from the file's current content. */
static ssize_t data_read(struct pl_inode *in, uint8_t *buf, size_t len, uint64_t off)
{
	struct pl_dirty *d = in->dirty;
	int fd = rw_fd(in);
	size_t done = 0;

	if (fd < 0) {
		errno = -fd;
		return -1;
	}
	if (!d) {
		while (done < len) {
			ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return -1;
			if (n == 0)
				break;
			done += (size_t)n;
		}
		return (ssize_t)done;
	}
	if (off >= d->size)
		return 0;
	if (len > d->size - off)
		len = (size_t)(d->size - off);
	/* The backing bytes that are still valid, then zeros, then the dirty pages over them. */
	while (off + done < d->valid && done < len) {
		size_t want = (size_t)TESSERA_MIN((uint64_t)(len - done), d->valid - off - done);
		ssize_t n = pread(fd, buf + done, want, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break; /* shorter than valid: cannot happen unless changed below us */
		done += (size_t)n;
	}
	memset(buf + done, 0, len - done);
	for (size_t i = page_search(d, off / PL_PAGE); i < d->n; i++) {
		uint64_t pstart = d->pages[i].idx * PL_PAGE;
		uint64_t from, to;

		if (pstart >= off + len)
			break;
		from = TESSERA_MAX(pstart, off);
		to = TESSERA_MIN(pstart + PL_PAGE, off + len);
		memcpy(buf + (from - off), d->pages[i].data + (from - pstart), (size_t)(to - from));
	}
	return (ssize_t)len;
}

/* The dirty page idx, made from the file's current content when it is new. */
static uint8_t *page_get(struct pl_inode *in, uint64_t idx)
{
	struct pl_dirty *d = in->dirty;
	size_t at = page_search(d, idx);
	uint8_t *data;

	if (at < d->n && d->pages[at].idx == idx)
		return d->pages[at].data;
	data = malloc(PL_PAGE);
	if (!data)
		return NULL;
	memset(data, 0, PL_PAGE);
	if (data_read(in, data, PL_PAGE, idx * PL_PAGE) < 0) {
		free(data);
		return NULL;
	}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 16;
		struct pl_page *p = realloc(d->pages, cap * sizeof(*p));
		if (!p) {
			free(data);
			return NULL;
		}
		d->pages = p;
		d->cap = cap;
	}
	memmove(d->pages + at + 1, d->pages + at, (d->n - at) * sizeof(*d->pages));
	d->pages[at].idx = idx;
	d->pages[at].data = data;
	d->n++;
	return data;
}

static int data_write(struct pl_inode *in, const uint8_t *buf, size_t len, uint64_t off)
{
	struct pl_dirty *d;
	size_t done = 0;
	int err;

	if ((err = dirty_get(in, &d)))
		return err;
	while (done < len) {
		uint64_t pos = off + done;
		size_t in_page = (size_t)(pos % PL_PAGE);
		size_t n = TESSERA_MIN(len - done, (size_t)PL_PAGE - in_page);
		uint8_t *page = page_get(in, pos / PL_PAGE);

		if (!page)
			return errno ? errno : ENOMEM;
		memcpy(page + in_page, buf + done, n);
		done += n;
		if (pos + n > d->size)
			d->size = pos + n;
	}
	return 0;
}

static int data_truncate(struct pl_inode *in, uint64_t size)
{
	struct pl_dirty *d;
	int err;

	if ((err = dirty_get(in, &d)))
		return err;
	if (size < d->size) {
		size_t keep = page_search(d, (size + PL_PAGE - 1) / PL_PAGE);
		for (size_t i = keep; i < d->n; i++)
			free(d->pages[i].data);
		d->n = keep;
		if (size % PL_PAGE && keep && d->pages[keep - 1].idx == size / PL_PAGE)
			memset(d->pages[keep - 1].data + size % PL_PAGE, 0,
			       PL_PAGE - size % PL_PAGE);
		if (d->valid > size)
			d->valid = size;
	}
	d->size = size;
	return 0;
}

/* Zeros [off, off + len) within the file's size (a punched hole reads as zeros). */
static int data_zero(struct pl_inode *in, uint64_t off, uint64_t len)
{
	static const uint8_t zeros[PL_PAGE];
	struct pl_dirty *d;
	int err;

	if ((err = dirty_get(in, &d)))
		return err;
	if (off >= d->size)
		return 0;
	len = TESSERA_MIN(len, d->size - off);
	while (len) {
		size_t n = (size_t)TESSERA_MIN(len, (uint64_t)PL_PAGE - off % PL_PAGE);
		if ((err = data_write(in, zeros, n, off)))
			return err;
		off += n;
		len -= n;
	}
	return 0;
}

static int write_all(int fd, const uint8_t *buf, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* fsync/fdatasync: the dirty pages and the size go to the backing file, which is synced. */
static int data_sync(struct pl_inode *in, bool datasync)
{
	struct pl_dirty *d = in->dirty;
	struct stat st;
	int fd = rw_fd(in), err;

	if (fd < 0)
		return -fd;
	if (d) {
		if (fstat(fd, &st) < 0)
			return errno;
		/* Cut what a truncation invalidated first, so that it reads as zeros. */
		if ((uint64_t)st.st_size > d->valid && ftruncate(fd, (off_t)d->valid) < 0)
			return errno;
		for (size_t i = 0; i < d->n; i++) {
			uint64_t start = d->pages[i].idx * PL_PAGE;
			size_t n = (size_t)TESSERA_MIN((uint64_t)PL_PAGE, d->size - start);
			if (start < d->size && (err = write_all(fd, d->pages[i].data, n, start)))
				return err;
		}
		if (fstat(fd, &st) < 0)
			return errno;
		if ((uint64_t)st.st_size != d->size && ftruncate(fd, (off_t)d->size) < 0)
			return errno;
	}
	if ((datasync ? fdatasync(fd) : fsync(fd)) < 0)
		return errno;
	dirty_free(in);
	inode_maybe_free(in);
	return 0;
}

/* ------------------------------------------------------------------ graveyard and undo log */

/* Opens directory at/name (name "." for at itself) as a stream; NULL and errno on failure. */
static DIR *dir_open(int at, const char *name)
{
	int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d = fd >= 0 ? fdopendir(fd) : NULL;

	if (!d && fd >= 0) {
		int err = errno;
		close(fd);
		errno = err;
	}
	return d;
}

/* Removes name below at, a directory with everything in it too. */
static int remove_tree(int at, const char *name)
{
	struct stat st;
	DIR *d;
	struct dirent *de;
	int r = 0;

	if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : errno;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(at, name, 0) < 0 ? errno : 0;
	if (!(d = dir_open(at, name)))
		return errno;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			int err = remove_tree(dirfd(d), de->d_name);
			if (err)
				r = err;
		}
	closedir(d);
	return unlinkat(at, name, AT_REMOVEDIR) < 0 ? errno : r;
}

/* Moves at/name into the graveyard, or with link makes a hard link of it there; *ret_name
 * (malloc'ed) and *ret_in say where. */
static int grave_put(int at, const char *name, bool link, char **ret_name,
		     struct pl_inode **ret_in)
{
	char gname[48];
	struct stat st;
	struct pl_inode *in;
	int fd;

	snprintf(gname, sizeof(gname), "g%llu", (unsigned long long)++pl.grave_seq);
	if (link ? linkat(at, name, pl.grave_fd, gname, 0) < 0 :
		   renameat2(at, name, pl.grave_fd, gname, RENAME_NOREPLACE) < 0)
		return errno;
	fd = openat(pl.grave_fd, gname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0 ||
	    !(in = inode_get(fd, &st)) || !(*ret_name = strdup(gname))) {
		int err = errno ? errno : ENOMEM;
		if (link ? unlinkat(pl.grave_fd, gname, 0) < 0 :
			   renameat2(pl.grave_fd, gname, at, name, RENAME_NOREPLACE) < 0)
			fprintf(stderr, "powerloss: cannot put back '%s': %s\n", name, strerror(errno));
		return err;
	}
	in->graves++;
	*ret_in = in;
	return 0;
}

/* Forgets a graveyard entry; delete: remove it from the graveyard too. */
static void grave_drop(char *gname, struct pl_inode *in, bool delete)
{
	int err;

	if (!gname)
		return;
	if (delete && (err = remove_tree(pl.grave_fd, gname)))
		fprintf(stderr, "powerloss: cannot remove graveyard entry %s: %s\n", gname,
			strerror(err));
	free(gname);
	in->graves--;
	inode_maybe_free(in);
}

static void rec_free(struct pl_rec *r, bool delete_grave)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		pl.log_head = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		pl.log_tail = r->prev;
	pl.log_len--;
	grave_drop(r->grave, r->grave_in, delete_grave);
	for (int i = 0; i < 2; i++) {
		free(r->name[i]);
		if (r->dir[i]) {
			r->dir[i]->pins--;
			inode_maybe_free(r->dir[i]);
		}
	}
	free(r);
}

/* Appends a change to the undo log; dir1/name1 only for renames. Takes over grave. */
static void rec_add(enum pl_kind kind, fuse_ino_t dir0, const char *name0, fuse_ino_t dir1,
		    const char *name1, char *grave, struct pl_inode *grave_in, dev_t dev, ino_t ino)
{
	struct pl_rec *r = calloc(1, sizeof(*r));

	if (!r || !(r->name[0] = strdup(name0)) || (name1 && !(r->name[1] = strdup(name1)))) {
		/* Without a record the change could not be undone: never half-model it. */
		fprintf(stderr, "powerloss: out of memory for the undo log\n");
		abort();
	}
	r->kind = kind;
	r->dir[0] = inode_of(dir0);
	r->dir[0]->pins++;
	if (name1) {
		r->dir[1] = inode_of(dir1);
		r->dir[1]->pins++;
	}
	r->grave = grave;
	r->grave_in = grave_in;
	r->dev = dev;
	r->ino = ino;
	r->prev = pl.log_tail;
	if (pl.log_tail)
		pl.log_tail->next = r;
	else
		pl.log_head = r;
	pl.log_tail = r;
	pl.log_len++;
}

static bool rec_durable(const struct pl_rec *r)
{
	return r->synced[0] && (!r->dir[1] || r->synced[1]);
}

/* An fsync of directory dir: what the log changed in it so far is durable. */
static void log_dir_synced(struct pl_inode *dir)
{
	struct pl_rec *r, *next;

	for (r = pl.log_head; r; r = next) {
		next = r->next;
		for (int i = 0; i < 2; i++)
			if (r->dir[i] == dir)
				r->synced[i] = true;
		if (rec_durable(r))
			rec_free(r, true);
	}
}

static bool entry_is(int at, const char *name, dev_t dev, ino_t ino)
{
	struct stat st;

	return fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dev &&
	       st.st_ino == ino;
}

/* Undoes one change in BACKING. Returns 0 or an errno (the change is then left as it is). */
static int rec_undo(const struct pl_rec *r)
{
	int d0 = r->dir[0]->fd, d1 = r->dir[1] ? r->dir[1]->fd : -1;
	char gname[48];

	switch (r->kind) {
	case PL_MADE:
		if (!entry_is(d0, r->name[0], r->dev, r->ino))
			return ESTALE;
		snprintf(gname, sizeof(gname), "g%llu", (unsigned long long)++pl.grave_seq);
		if (renameat2(d0, r->name[0], pl.grave_fd, gname, RENAME_NOREPLACE) < 0)
			return errno;
		if (r->grave && renameat2(pl.grave_fd, r->grave, d0, r->name[0], RENAME_NOREPLACE) < 0)
			return errno;
		return 0;
	case PL_REMOVED:
		return renameat2(pl.grave_fd, r->grave, d0, r->name[0], RENAME_NOREPLACE) < 0 ?
			       errno :
			       0;
	case PL_RENAMED:
		if (!entry_is(d1, r->name[1], r->dev, r->ino))
			return ESTALE;
		if (renameat2(d1, r->name[1], d0, r->name[0], RENAME_NOREPLACE) < 0)
			return errno;
		if (r->grave && renameat2(pl.grave_fd, r->grave, d1, r->name[1], RENAME_NOREPLACE) < 0)
			return errno;
		return 0;
	case PL_EXCHANGED:
		return renameat2(d0, r->name[0], d1, r->name[1], RENAME_EXCHANGE) < 0 ? errno : 0;
	}
	return EINVAL;
}

static const char *kind_name(enum pl_kind k)
{
	static const char *const names[] = { "creation", "removal", "rename", "exchange" };
	return names[k];
}

/* Empties the graveyard directory (everything in it is garbage once no record needs it). */
static void grave_purge(void)
{
	DIR *d = dir_open(pl.grave_fd, ".");
	struct dirent *de;
	int err;

	if (!d) {
		fprintf(stderr, "powerloss: cannot read the graveyard: %s\n", strerror(errno));
		return;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    (err = remove_tree(dirfd(d), de->d_name)))
			fprintf(stderr, "powerloss: cannot remove graveyard entry %s: %s\n",
				de->d_name, strerror(err));
	closedir(d);
}

static void for_each_inode(void (*fn)(struct pl_inode *, void *), void *arg)
{
	fn(&pl.root, arg);
	for (unsigned b = 0; b < PL_BUCKETS; b++)
		for (struct pl_inode *in = pl.hash[b], *next; in; in = next) {
			next = in->hnext;
			if (in != &pl.root)
				fn(in, arg);
		}
}

static void discard_one(struct pl_inode *in, void *arg)
{
	size_t *counts = arg;

	if (in->dirty) {
		counts[0]++;
		counts[1] += in->dirty->n;
		dirty_free(in);
		inode_maybe_free(in);
	}
}

static void flush_one(struct pl_inode *in, void *arg)
{
	size_t *failed = arg;
	int err;

	if (in->dirty && (err = data_sync(in, false))) {
		fprintf(stderr, "powerloss: cannot write a file at unmount: %s\n", strerror(err));
		++*failed;
	}
}

/* The power loss: unsynced data and namespace changes are gone; the disk is dead. */
static void power_loss(void)
{
	size_t counts[2] = { 0, 0 }, undone = 0;
	struct pl_rec *r, *prev;
	int err;

	for_each_inode(discard_one, counts);
	for (r = pl.log_tail; r; r = prev) {
		prev = r->prev;
		if (!rec_durable(r) && (err = rec_undo(r))) {
			pl.undo_failed++;
			fprintf(stderr, "powerloss: cannot undo the %s of '%s': %s\n",
				kind_name(r->kind), r->name[r->kind == PL_RENAMED ? 1 : 0],
				strerror(err));
		} else if (!rec_durable(r)) {
			undone++;
		}
		rec_free(r, false);
	}
	grave_purge();
	pl.dead = true;
	fprintf(stderr,
		"powerloss: power lost: %zu dirty pages of %zu files discarded, %zu namespace "
		"changes undone, %zu could not be\n",
		counts[1], counts[0], undone, pl.undo_failed);
}

/* A clean unmount: everything is written and every change kept. */
static void clean_shutdown(void)
{
	size_t failed = 0;

	for_each_inode(flush_one, &failed);
	while (pl.log_head)
		rec_free(pl.log_head, false);
	grave_purge();
	fprintf(stderr, "powerloss: unmounted cleanly%s\n",
		failed ? " (some files could not be written)" : "");
}

/* ------------------------------------------------------------------ requests */

#define DEAD_CHECK(req)                                                                       \
	do {                                                                                  \
		if (pl.dead) {                                                                \
			fuse_reply_err((req), EIO);                                           \
			return;                                                               \
		}                                                                             \
	} while (0)

static int do_lookup(fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	struct pl_inode *in;
	int fd;

	memset(e, 0, sizeof(*e));
	if (hidden(parent, name))
		return ENOENT;
	fd = openat(inode_of(parent)->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno;
	if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int err = errno;
		close(fd);
		return err;
	}
	if (!(in = inode_get(fd, &e->attr)))
		return ENOMEM;
	in->nlookup++;
	attr_fix(in, &e->attr);
	e->ino = ino_of(in);
	return 0;
}

static void reply_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	fh_reply_entry(req, do_lookup(parent, name, &e), &e);
}

static void pl_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	fh_init_conn(conn);
}

static void pl_destroy(void *userdata)
{
	(void)userdata;
	if (!pl.dead)
		clean_shutdown();
}

static void pl_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	DEAD_CHECK(req);
	reply_lookup(req, parent, name);
}

static void forget_one(fuse_ino_t ino, uint64_t n)
{
	struct pl_inode *in = inode_of(ino);

	if (in == &pl.root)
		return;
	in->nlookup -= n < in->nlookup ? n : in->nlookup;
	inode_maybe_free(in);
}

static void pl_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	forget_one(ino, n);
	fuse_reply_none(req);
}

static void pl_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	fh_forget_multi(req, count, f, forget_one);
}

static void pl_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pl_inode *in = inode_of(ino);
	struct stat st;

	(void)fi;
	DEAD_CHECK(req);
	if (fstatat(in->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	attr_fix(in, &st);
	fuse_reply_attr(req, &st, 0);
}

static void pl_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct pl_inode *in = inode_of(ino);
	struct stat st;
	int err = 0;

	DEAD_CHECK(req);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (fstatat(in->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
			err = errno;
		else if (S_ISDIR(st.st_mode))
			err = EISDIR;
		else
			err = data_truncate(in, (uint64_t)attr->st_size);
	}
	if (!err)
		err = fh_set_attrs(in->fd, attr, to_set);
	if (err)
		fuse_reply_err(req, err);
	else
		pl_getattr(req, ino, fi);
}

/* A new entry parent/name was made: records it and replies with it. */
static void made(fuse_req_t req, fuse_ino_t parent, const char *name, struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	int err = do_lookup(parent, name, &e);

	if (err) {
		/* It exists in BACKING but cannot be looked up: undo it now. */
		struct stat st;
		if (fstatat(inode_of(parent)->fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0)
			rec_add(PL_MADE, parent, name, 0, NULL, NULL, NULL, st.st_dev, st.st_ino);
		fuse_reply_err(req, err);
		return;
	}
	rec_add(PL_MADE, parent, name, 0, NULL, NULL, NULL, e.attr.st_dev, e.attr.st_ino);
	if (fi)
		fuse_reply_create(req, &e, fi);
	else
		fuse_reply_entry(req, &e);
}

static void make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev,
		 const char *link)
{
	int pfd = inode_of(parent)->fd, r;

	DEAD_CHECK(req);
	if (hidden(parent, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (link)
		r = symlinkat(link, pfd, name);
	else if (S_ISDIR(mode))
		r = mkdirat(pfd, name, mode);
	else
		r = mknodat(pfd, name, mode, rdev);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		made(req, parent, name, NULL);
}

static void pl_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make(req, parent, name, S_IFDIR | mode, 0, NULL);
}

static void pl_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	make(req, parent, name, mode, rdev, NULL);
}

static void pl_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make(req, parent, name, S_IFLNK, 0, link);
}

static void pl_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t n;

	DEAD_CHECK(req);
	n = readlinkat(inode_of(ino)->fd, "", buf, sizeof(buf) - 1);
	if (n < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

static void pl_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	char path[64];

	DEAD_CHECK(req);
	if (hidden(newparent, newname)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fh_proc_path(path, sizeof(path), inode_of(ino)->fd);
	if (linkat(AT_FDCWD, path, inode_of(newparent)->fd, newname, AT_SYMLINK_FOLLOW) < 0)
		fuse_reply_err(req, errno);
	else
		made(req, newparent, newname, NULL);
}

/* Whether directory at/name has no entries. */
static int dir_empty(int at, const char *name)
{
	DIR *d = dir_open(at, name);
	struct dirent *de;
	int r = 0;

	if (!d)
		return errno;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
			r = ENOTEMPTY;
			break;
		}
	closedir(d);
	return r;
}

static void remove_entry(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
	int pfd = inode_of(parent)->fd, err;
	struct pl_inode *gin;
	struct stat st;
	char *gname;

	DEAD_CHECK(req);
	if (hidden(parent, name)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if (dir && !S_ISDIR(st.st_mode))
		err = ENOTDIR;
	else if (!dir && S_ISDIR(st.st_mode))
		err = EISDIR;
	else if (dir)
		err = dir_empty(pfd, name);
	else
		err = 0;
	if (!err)
		err = grave_put(pfd, name, false, &gname, &gin);
	if (!err)
		rec_add(PL_REMOVED, parent, name, 0, NULL, gname, gin, st.st_dev, st.st_ino);
	fuse_reply_err(req, err);
}

static void pl_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_entry(req, parent, name, false);
}

static void pl_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	remove_entry(req, parent, name, true);
}

static void pl_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	int sfd = inode_of(parent)->fd, dfd = inode_of(newparent)->fd, err = 0;
	struct pl_inode *gin = NULL, *sgin = NULL;
	struct stat src, dst;
	char *gname = NULL, *sgname = NULL;

	DEAD_CHECK(req);
	if (hidden(parent, name) || hidden(newparent, newname)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (fstatat(sfd, name, &src, AT_SYMLINK_NOFOLLOW) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	if (flags & RENAME_EXCHANGE) {
		if (renameat2(sfd, name, dfd, newname, RENAME_EXCHANGE) < 0) {
			fuse_reply_err(req, errno);
			return;
		}
		rec_add(PL_EXCHANGED, parent, name, newparent, newname, NULL, NULL, src.st_dev,
			src.st_ino);
		fuse_reply_err(req, 0);
		return;
	}
	if (fstatat(dfd, newname, &dst, AT_SYMLINK_NOFOLLOW) == 0) {
		/* The entry it replaces goes to the graveyard, after the checks rename(2) makes. */
		if (flags & RENAME_NOREPLACE)
			err = EEXIST;
		else if (dst.st_dev == src.st_dev && dst.st_ino == src.st_ino)
			err = -1; /* two links of one file: nothing happens */
		else if (S_ISDIR(dst.st_mode) && !S_ISDIR(src.st_mode))
			err = EISDIR;
		else if (!S_ISDIR(dst.st_mode) && S_ISDIR(src.st_mode))
			err = ENOTDIR;
		else if (S_ISDIR(dst.st_mode))
			err = dir_empty(dfd, newname);
		if (!err)
			err = grave_put(dfd, newname, false, &gname, &gin);
		if (err) {
			fuse_reply_err(req, err < 0 ? 0 : err);
			return;
		}
	} else if (errno != ENOENT) {
		fuse_reply_err(req, errno);
		return;
	}
	/* A file's rename is two changes, one in each directory, each durable with its own
	 * directory's fsync: the old name goes (a link in the graveyard brings it back) and the
	 * new one comes (replacing gname). A directory has one name: its rename is one change,
	 * durable once both directories are synced. */
	if (!S_ISDIR(src.st_mode))
		err = grave_put(sfd, name, true, &sgname, &sgin);
	if (!err && renameat2(sfd, name, dfd, newname, RENAME_NOREPLACE) < 0) {
		err = errno;
		grave_drop(sgname, sgin, true);
	}
	if (err) {
		if (gname) {
			if (renameat2(pl.grave_fd, gname, dfd, newname, RENAME_NOREPLACE) < 0)
				fprintf(stderr, "powerloss: cannot put back '%s': %s\n", newname,
					strerror(errno));
			grave_drop(gname, gin, false);
		}
		fuse_reply_err(req, err);
		return;
	}
	if (S_ISDIR(src.st_mode)) {
		rec_add(PL_RENAMED, parent, name, newparent, newname, gname, gin, src.st_dev,
			src.st_ino);
	} else {
		rec_add(PL_REMOVED, parent, name, 0, NULL, sgname, sgin, src.st_dev, src.st_ino);
		rec_add(PL_MADE, newparent, newname, 0, NULL, gname, gin, src.st_dev, src.st_ino);
	}
	fuse_reply_err(req, 0);
}

static void pl_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	int pfd = inode_of(parent)->fd, fd, err;
	struct fuse_entry_param e;

	DEAD_CHECK(req);
	if (hidden(parent, name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	fd = openat(pfd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, mode);
	if (fd >= 0) {
		close(fd);
		fi->fh = 0;
		made(req, parent, name, fi);
		return;
	}
	if (errno != EEXIST || (fi->flags & O_EXCL)) {
		fuse_reply_err(req, errno);
		return;
	}
	/* It was there already: an open. */
	if ((err = do_lookup(parent, name, &e))) {
		fuse_reply_err(req, err);
		return;
	}
	if ((fi->flags & O_TRUNC) && S_ISREG(e.attr.st_mode) &&
	    (err = data_truncate(inode_of(e.ino), 0))) {
		forget_one(e.ino, 1);
		fuse_reply_err(req, err);
		return;
	}
	if (fi->flags & O_TRUNC)
		e.attr.st_size = 0;
	fi->fh = 0;
	fuse_reply_create(req, &e, fi);
}

static void pl_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pl_inode *in = inode_of(ino);
	int fd, err;

	DEAD_CHECK(req);
	if ((fd = rw_fd(in)) < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	if ((fi->flags & O_TRUNC) && (err = data_truncate(in, 0))) {
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = 0;
	fuse_reply_open(req, fi);
}

static void pl_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	uint8_t *buf;
	ssize_t n;

	(void)fi;
	DEAD_CHECK(req);
	if (!(buf = malloc(size ? size : 1))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = data_read(inode_of(ino), buf, size, (uint64_t)off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, (const char *)buf, (size_t)n);
	free(buf);
}

static void pl_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	int err;

	(void)fi;
	DEAD_CHECK(req);
	if ((err = data_write(inode_of(ino), (const uint8_t *)buf, size, (uint64_t)off)))
		fuse_reply_err(req, err);
	else
		fuse_reply_write(req, size);
}

static void pl_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, pl.dead ? EIO : 0);
}

static void pl_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	fuse_reply_err(req, 0);
}

static void pl_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)fi;
	DEAD_CHECK(req);
	fuse_reply_err(req, data_sync(inode_of(ino), datasync != 0));
}

static void pl_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	struct pl_inode *in = inode_of(ino);
	struct pl_dirty *d;
	int err;

	(void)fi;
	DEAD_CHECK(req);
	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (mode == 0) {
		/* Only the size is modelled: blocks are not allocated ahead. */
		err = dirty_get(in, &d);
		if (!err && (uint64_t)off + (uint64_t)len > d->size)
			err = data_truncate(in, (uint64_t)off + (uint64_t)len);
	} else if (mode == FALLOC_FL_KEEP_SIZE) {
		err = 0;
	} else if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
		err = data_zero(in, (uint64_t)off, (uint64_t)len);
	} else {
		err = EOPNOTSUPP;
	}
	fuse_reply_err(req, err);
}

static void pl_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pl_dir_handle *h;

	DEAD_CHECK(req);
	h = calloc(1, sizeof(*h));
	if (!h || !(h->d = dir_open(inode_of(ino)->fd, "."))) {
		fuse_reply_err(req, h ? errno : ENOMEM);
		free(h);
		return;
	}
	h->root = ino == FUSE_ROOT_ID;
	fi->fh = (uintptr_t)h;
	fuse_reply_open(req, fi);
}

static void pl_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct pl_dir_handle *h = (struct pl_dir_handle *)(uintptr_t)fi->fh;

	(void)ino;
	DEAD_CHECK(req);
	fh_reply_readdir(req, h->d, size, off, h->root ? PL_GRAVE : NULL);
}

static void pl_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pl_dir_handle *h = (struct pl_dir_handle *)(uintptr_t)fi->fh;

	(void)ino;
	closedir(h->d);
	free(h);
	fuse_reply_err(req, 0);
}

static void pl_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct pl_dir_handle *h = (struct pl_dir_handle *)(uintptr_t)fi->fh;

	(void)datasync;
	DEAD_CHECK(req);
	if (fsync(dirfd(h->d)) < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	log_dir_synced(inode_of(ino));
	fuse_reply_err(req, 0);
}

static void pl_statfs(fuse_req_t req, fuse_ino_t ino)
{
	DEAD_CHECK(req);
	fh_reply_statfs(req, inode_of(ino)->fd);
}

/* Extended attributes: passed through at once (not modelled). */
static void pl_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	char path[64];

	DEAD_CHECK(req);
	fh_proc_path(path, sizeof(path), inode_of(ino)->fd);
	fuse_reply_err(req, setxattr(path, name, value, size, flags) < 0 ? errno : 0);
}

static void reply_xattr(fuse_req_t req, size_t size, ssize_t (*get)(const char *, const char *,
								      char *, size_t, void *),
			fuse_ino_t ino, const char *name)
{
	char path[64], *buf = size ? malloc(size) : NULL;
	ssize_t n;

	fh_proc_path(path, sizeof(path), inode_of(ino)->fd);
	if (size && !buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = get(path, name, buf, size, NULL);
	if (n < 0)
		fuse_reply_err(req, errno);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static ssize_t get_one(const char *path, const char *name, char *buf, size_t size, void *arg)
{
	(void)arg;
	return getxattr(path, name, buf, size);
}

static ssize_t list_all(const char *path, const char *name, char *buf, size_t size, void *arg)
{
	(void)name;
	(void)arg;
	return listxattr(path, buf, size);
}

static void pl_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	DEAD_CHECK(req);
	reply_xattr(req, size, get_one, ino, name);
}

static void pl_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	DEAD_CHECK(req);
	reply_xattr(req, size, list_all, ino, NULL);
}

static void pl_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	char path[64];

	DEAD_CHECK(req);
	fh_proc_path(path, sizeof(path), inode_of(ino)->fd);
	fuse_reply_err(req, removexattr(path, name) < 0 ? errno : 0);
}

static const struct fuse_lowlevel_ops pl_ops = {
	.init = pl_init,
	.destroy = pl_destroy,
	.lookup = pl_lookup,
	.forget = pl_forget,
	.forget_multi = pl_forget_multi,
	.getattr = pl_getattr,
	.setattr = pl_setattr,
	.readlink = pl_readlink,
	.mknod = pl_mknod,
	.mkdir = pl_mkdir,
	.symlink = pl_symlink,
	.link = pl_link,
	.unlink = pl_unlink,
	.rmdir = pl_rmdir,
	.rename = pl_rename,
	.create = pl_create,
	.open = pl_open,
	.read = pl_read,
	.write = pl_write,
	.flush = pl_flush,
	.release = pl_release,
	.fsync = pl_fsync,
	.fallocate = pl_fallocate,
	.opendir = pl_opendir,
	.readdir = pl_readdir,
	.releasedir = pl_releasedir,
	.fsyncdir = pl_fsyncdir,
	.statfs = pl_statfs,
	.setxattr = pl_setxattr,
	.getxattr = pl_getxattr,
	.listxattr = pl_listxattr,
	.removexattr = pl_removexattr,
};

/* ------------------------------------------------------------------ main */

static void on_sigusr1(int sig)
{
	int saved = errno;
	char c = 1;

	(void)sig;
	(void)!write(pl.sigpipe[1], &c, 1);
	errno = saved;
}

/* The request loop: /dev/fuse and the power-loss pipe, one at a time. */
static int serve(struct fuse_session *se)
{
	struct fuse_buf fbuf = { 0 };
	int res = 0;

	while (!fuse_session_exited(se)) {
		struct pollfd p[2] = { { .fd = pl.sigpipe[0], .events = POLLIN },
				       { .fd = fuse_session_fd(se), .events = POLLIN } };
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			res = -errno;
			break;
		}
		if (p[0].revents & POLLIN) {
			char c[64];
			while (read(pl.sigpipe[0], c, sizeof(c)) > 0)
				;
			if (!pl.dead)
				power_loss();
		}
		if (p[1].revents) {
			int r = fuse_session_receive_buf(se, &fbuf);
			if (r == -EINTR || r == -EAGAIN)
				continue;
			if (r <= 0) {
				if (r < 0 && r != -ENODEV)
					res = r;
				break;
			}
			fuse_session_process_buf(se, &fbuf);
		}
	}
	free(fbuf.mem);
	fuse_session_reset(se);
	return res;
}

struct pl_cmdline {
	char *backing;
	char *mountpoint;
	int foreground;
};

enum { KEY_FG, KEY_SINGLE };

static const struct fuse_opt pl_opts[] = {
	FUSE_OPT_KEY("-f", KEY_FG),
	FUSE_OPT_KEY("-s", KEY_SINGLE),
	FUSE_OPT_END
};

static int pl_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct pl_cmdline *c = data;

	(void)outargs;
	if (key == KEY_FG) {
		c->foreground = 1;
		return 0;
	}
	if (key == KEY_SINGLE)
		return 0;
	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (!c->backing)
		c->backing = strdup(arg);
	else if (!c->mountpoint)
		c->mountpoint = strdup(arg);
	else
		return -1;
	return 0;
}

/* The graveyard of BACKING, emptied: what a previous run left there is not needed. */
static int grave_open(void)
{
	if (mkdirat(pl.root.fd, PL_GRAVE, 0700) < 0 && errno != EEXIST)
		return -errno;
	pl.grave_fd = openat(pl.root.fd, PL_GRAVE, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pl.grave_fd < 0)
		return -errno;
	grave_purge();
	return 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct pl_cmdline c = { 0 };
	struct fuse_session *se;
	struct sigaction sa = { .sa_handler = on_sigusr1 };
	struct rlimit rl;
	struct stat st;
	int ret = 1, r;

	if (fuse_opt_parse(&args, &c, pl_opts, pl_opt_proc) == -1 || !c.backing || !c.mountpoint) {
		fprintf(stderr, "usage: powerloss [-f] [-d] [-o opts] BACKING MOUNTPOINT\n");
		return 2;
	}
	umask(0); /* the kernel applied the caller's umask already */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
	pl.root.fd = open(c.backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (pl.root.fd < 0 || fstat(pl.root.fd, &st) < 0) {
		fprintf(stderr, "powerloss: cannot open '%s': %s\n", c.backing, strerror(errno));
		return 1;
	}
	pl.root.rw = -1;
	pl.root.dev = st.st_dev;
	pl.root.ino = st.st_ino;
	pl.root.nlookup = 2;
	if ((r = grave_open()) < 0) {
		fprintf(stderr, "powerloss: cannot make '%s/%s': %s\n", c.backing, PL_GRAVE,
			strerror(-r));
		return 1;
	}
	if (pipe2(pl.sigpipe, O_NONBLOCK | O_CLOEXEC) < 0) {
		perror("powerloss: pipe");
		return 1;
	}
	se = fuse_session_new(&args, &pl_ops, sizeof(pl_ops), NULL);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		goto out_signals;
	if (fuse_session_mount(se, c.mountpoint) != 0)
		goto out_signals;
	if (fuse_daemonize(c.foreground) != 0)
		goto out_unmount;
	fprintf(stderr, "powerloss: %s mounted at %s (pid %d); SIGUSR1 cuts the power\n",
		c.backing, c.mountpoint, (int)getpid());
	ret = serve(se) < 0 ? 1 : 0;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	/* Empty now (power loss or clean unmount): BACKING is left as the synced state alone. */
	(void)unlinkat(pl.root.fd, PL_GRAVE, AT_REMOVEDIR);
out:
	fuse_opt_free_args(&args);
	free(c.backing);
	free(c.mountpoint);
	return ret;
}
