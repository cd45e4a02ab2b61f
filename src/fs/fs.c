/*
 * fs: FUSE low-level operations over meta (the namespace) and data (file contents).
 *
 * Every namespace change is one metadata batch, so a crash leaves the old or the new tree.
 * fs->lock (the inode lock, shared with the data layer and the mounted scrubber) is held for each read-check-write of
 * dentries, xattrs and inode records; it is never held while calling into data functions
 * that take a file's lock (data.h gives the order: file lock, then inode lock).
 *
 * Inode numbers are the FUSE node ids (the root is 1 on both sides). Lifetime of an inode:
 * it is removed (record, stripes, inline value, xattrs, in one batch) when it has no name
 * (nlink 0), the kernel holds no lookup on it and no file handle has it open. Until then an
 * unlinked inode stays in the metadata flagged META_INODE_F_ORPHAN (and in meta's orphan
 * index), so fstat, fchmod, reads, writes and /proc/self/fd reopens keep working; when the
 * last forget or release comes, the reaper thread removes it (FS_REAP_BATCH inodes per
 * commit), and fs_new() removes the orphans a crash left, found through the index.
 * The kernel's lookup counts live in a hash table (fs->lk, its own leaf mutex lk_lock, taken
 * after the inode lock when both are held): every reply that hands the kernel an entry
 * (lookup, create, mknod, mkdir, symlink, link, readdirplus) counts one, forget subtracts.
 *
 * Directories keep their parent's inode number in meta_inode.rdev (meta.h), so that ".."
 * is exact in readdir and rename can refuse to move a directory into its own subtree.
 *
 * POSIX ACLs (FUSE_CAP_POSIX_ACL): the kernel enforces them from the system.posix_acl_*
 * xattrs; this layer keeps the mode bits in sync with an access ACL (setxattr and chmod),
 * does not store an access ACL that the mode expresses exactly, applies the umask itself
 * (the kernel leaves it to us on an ACL mount) and inherits default ACLs on create.
 *
 * Directory offsets: "." ends at 1, ".." at 2; every further entry gets a fresh offset from
 * a per-handle counter, and the handle remembers the name behind each offset it handed out
 * (up to FS_DIR_HISTORY_MAX bytes of names, then it starts over), so a readdir or seekdir
 * resumes after that name: entries added or removed meanwhile neither repeat nor hide the
 * others (the listing is in name order, a prefix scan of the dentries).
 */
#define FUSE_USE_VERSION 34

#include "tessera/fs.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <linux/falloc.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "tessera/common.h"
#include "tessera/data.h"
#include "tessera/meta.h"
#include "tessera/stripe.h"

#define FS_BLKSIZE (1u << 20)
#define FS_MAX_IO (1u << 20)
#define FS_SYMLINK_MAX 4095u          /* PATH_MAX - 1, as Linux filesystems */
#define FS_XATTR_LIST_MAX 65536u      /* Linux XATTR_LIST_MAX */
#define FS_DIR_HISTORY_MAX (32u << 20)
#define FS_RELATIME_NS (24ull * 3600 * 1000000000ull)
#define FS_MAX_DEPTH (1u << 20)       /* loop guard when walking up the tree */
#define FS_REAP_BATCH 64              /* inode removals per reaper commit */
#define FS_READDIRPLUS_MAX (32u << 10) /* bytes of entries per readdirplus reply */
#define FS_REAP_DELAY_MS 5            /* a reaper round waits this long for more */

#define ACL_ACCESS "system.posix_acl_access"
#define ACL_DEFAULT "system.posix_acl_default"

struct lk_slot {
	uint64_t ino; /* 0: empty */
	uint64_t n;
};

struct fs {
	struct meta *meta;    /* borrowed */
	struct data *data;    /* borrowed */
	pthread_mutex_t *lock; /* the inode lock, borrowed */
	double timeout;
	bool posix_acl;       /* FUSE_CAP_POSIX_ACL was granted */
	pthread_mutex_t lk_lock; /* protects lk, lk_cap, lk_n */
	struct lk_slot *lk;   /* open addressing, linear probing, lk_cap a power of two */
	size_t lk_cap, lk_n;
	/* The reaper: inodes that may have lost their last reference (forget, release), removed
	 * by one thread in batches. rp_lock (a leaf, never held with another lock) protects
	 * rp_q, rp_n, rp_cap and rp_stop. */
	pthread_mutex_t rp_lock;
	pthread_cond_t rp_cond;
	pthread_t reaper;
	bool reaper_started, rp_stop;
	uint64_t *rp_q;
	size_t rp_n, rp_cap;
};

struct fs_dir {
	pthread_mutex_t lock;     /* protects everything below */
	uint64_t next_off;        /* next offset to hand out (>= 3) */
	uint64_t base_off;        /* offset of the first remembered name */
	uint32_t *pos;            /* pos[off - base_off]: where that name starts in names */
	size_t n, cap;            /* entries in pos, its capacity */
	char *names;              /* NUL-terminated names, one after the other */
	size_t names_len, names_cap;
};

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct data_file *file_of(struct fuse_file_info *fi)
{
	return (struct data_file *)(uintptr_t)fi->fh;
}

/* Times are nanoseconds since the epoch, two's complement before 1970 (meta.h): tar and rsync
 * bring files from 1960 too. */
static struct timespec ts_of(uint64_t ns)
{
	int64_t t = (int64_t)ns, sec = t / 1000000000, nsec = t % 1000000000;

	if (nsec < 0) {
		sec--;
		nsec += 1000000000;
	}
	return (struct timespec){ .tv_sec = (time_t)sec, .tv_nsec = (long)nsec };
}

static uint64_t ns_of(const struct timespec *ts)
{
	return (uint64_t)((int64_t)ts->tv_sec * 1000000000 + (int64_t)ts->tv_nsec);
}

/* a > b for two times */
static bool ns_after(uint64_t a, uint64_t b)
{
	return (int64_t)a > (int64_t)b;
}

static uint64_t dir_parent(const struct meta_inode *in)
{
	return in->rdev ? in->rdev : META_ROOT_INO;
}

static void stat_of(struct fs *fs, const struct meta_inode *in, struct stat *st)
{
	uint64_t size = in->size, mtime = in->mtime_ns, ctime = in->ctime_ns, osize, omtime;

	if (S_ISREG(in->mode) && data_file_attr(fs->data, in->ino, &osize, &omtime)) {
		/* buffered writes: their size and time are not in the record yet */
		size = osize;
		if (ns_after(omtime, mtime))
			mtime = omtime;
		if (ns_after(omtime, ctime))
			ctime = omtime;
	}
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	if (S_ISCHR(in->mode) || S_ISBLK(in->mode))
		st->st_rdev = (dev_t)in->rdev;
	st->st_size = (off_t)size;
	/* stripes want big I/O; a directory does not (glibc sizes readdir buffers by it) */
	st->st_blksize = S_ISREG(in->mode) ? FS_BLKSIZE : 4096;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_atim = ts_of(in->atime_ns);
	st->st_mtim = ts_of(mtime);
	st->st_ctim = ts_of(ctime);
}

static int check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0)
		return -ENOENT;
	if (len > META_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

/* ---------------------------------------------------------------- lookup counts */

static size_t lk_home(uint64_t ino, size_t mask)
{
	return (size_t)((ino * 0x9E3779B97F4A7C15ull) >> 24) & mask;
}

/* With lk_lock held. Returns the slot of ino or of the empty slot where it would go. */
static size_t lk_find(const struct fs *fs, uint64_t ino)
{
	size_t mask = fs->lk_cap - 1, i = lk_home(ino, mask);

	while (fs->lk[i].ino && fs->lk[i].ino != ino)
		i = (i + 1) & mask;
	return i;
}

static int lk_grow(struct fs *fs)
{
	size_t cap = fs->lk_cap ? fs->lk_cap * 2 : 4096;
	struct lk_slot *old = fs->lk, *t = calloc(cap, sizeof(*t));
	size_t ocap = fs->lk_cap;

	if (!t)
		return -ENOMEM;
	fs->lk = t;
	fs->lk_cap = cap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].ino)
			fs->lk[lk_find(fs, old[i].ino)] = old[i];
	free(old);
	return 0;
}

/* Removes slot i (backward-shift deletion: no tombstones). With lk_lock held. */
static void lk_del_at(struct fs *fs, size_t i)
{
	size_t mask = fs->lk_cap - 1, j = i;

	for (;;) {
		j = (j + 1) & mask;
		if (!fs->lk[j].ino)
			break;
		size_t k = lk_home(fs->lk[j].ino, mask);
		/* the entry at j may move to i unless its home lies cyclically in (i, j] */
		bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
		if (!stays) {
			fs->lk[i] = fs->lk[j];
			i = j;
		}
	}
	fs->lk[i].ino = 0;
	fs->lk[i].n = 0;
	fs->lk_n--;
}

/* Counts n kernel lookups of ino. Returns 0 or -ENOMEM. */
static int lk_ref(struct fs *fs, uint64_t ino, uint64_t n)
{
	int r = 0;
	size_t i;

	if (ino == META_ROOT_INO)
		return 0;
	pthread_mutex_lock(&fs->lk_lock);
	if ((fs->lk_n + 1) * 4 > fs->lk_cap * 3) {
		r = lk_grow(fs);
		if (r < 0)
			goto out;
	}
	i = lk_find(fs, ino);
	if (!fs->lk[i].ino) {
		fs->lk[i].ino = ino;
		fs->lk_n++;
	}
	fs->lk[i].n += n;
out:
	pthread_mutex_unlock(&fs->lk_lock);
	return r;
}

/* Drops n lookups of ino; returns the lookups left. */
static uint64_t lk_unref(struct fs *fs, uint64_t ino, uint64_t n)
{
	uint64_t left = 0;
	size_t i;

	if (ino == META_ROOT_INO)
		return 1;
	pthread_mutex_lock(&fs->lk_lock);
	if (fs->lk_cap) {
		i = lk_find(fs, ino);
		if (fs->lk[i].ino) {
			if (fs->lk[i].n > n) {
				fs->lk[i].n -= n;
				left = fs->lk[i].n;
			} else {
				lk_del_at(fs, i);
			}
		}
	}
	pthread_mutex_unlock(&fs->lk_lock);
	return left;
}

static bool lk_held(struct fs *fs, uint64_t ino)
{
	bool held = false;

	if (ino == META_ROOT_INO)
		return true;
	pthread_mutex_lock(&fs->lk_lock);
	if (fs->lk_cap)
		held = fs->lk[lk_find(fs, ino)].ino != 0;
	pthread_mutex_unlock(&fs->lk_lock);
	return held;
}

/* ---------------------------------------------------------------- POSIX ACL xattrs */

/* The xattr form of an ACL (Linux posix_acl_xattr.h): le32 version 2, then entries of
 * le16 tag, le16 perm, le32 id. */
#define ACL_VERSION 2u
#define ACL_USER_OBJ 0x01u
#define ACL_USER 0x02u
#define ACL_GROUP_OBJ 0x04u
#define ACL_GROUP 0x08u
#define ACL_MASK 0x10u
#define ACL_OTHER 0x20u

static uint16_t le16_get(const uint8_t *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static void le16_put(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

/* Returns the number of entries, or -EINVAL for a malformed value. */
static int acl_count(const uint8_t *v, size_t len)
{
	if (len < 4 || (len - 4) % 8 != 0)
		return -EINVAL;
	if ((uint32_t)(v[0] | v[1] << 8 | v[2] << 16 | (uint32_t)v[3] << 24) != ACL_VERSION)
		return -EINVAL;
	return (int)((len - 4) / 8);
}

/* posix_acl_equiv_mode(): *ret_perm gets the rwx bits the ACL means for the mode (mask in
 * place of the group bits). Returns 0 when the mode expresses the ACL exactly, 1 when the ACL
 * has more (named entries, a mask), -EINVAL. */
static int acl_equiv_mode(const uint8_t *v, size_t len, uint32_t *ret_perm)
{
	int n = acl_count(v, len), not_equiv = 0;
	uint32_t mode = 0, seen = 0;

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		const uint8_t *e = v + 4 + 8 * i;
		uint32_t tag = le16_get(e), perm = le16_get(e + 2) & 7u;
		switch (tag) {
		case ACL_USER_OBJ:
			mode |= perm << 6;
			break;
		case ACL_GROUP_OBJ:
			if (!(seen & ACL_MASK))
				mode = (mode & ~070u) | perm << 3;
			break;
		case ACL_OTHER:
			mode |= perm;
			break;
		case ACL_MASK:
			mode = (mode & ~070u) | perm << 3;
			not_equiv = 1;
			break;
		case ACL_USER:
		case ACL_GROUP:
			not_equiv = 1;
			break;
		default:
			return -EINVAL;
		}
		seen |= tag;
	}
	if ((seen & (ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER)) !=
	    (ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_OTHER))
		return -EINVAL;
	*ret_perm = mode;
	return not_equiv;
}

/* posix_acl_create_masq(): masks the inherited ACL v (in place) with the requested mode
 * and the mode with the ACL. Returns 0 (the mode alone expresses the ACL), 1, -EINVAL. */
static int acl_create_masq(uint8_t *v, size_t len, uint32_t *mode_p)
{
	int n = acl_count(v, len), not_equiv = 0;
	uint32_t mode = *mode_p;
	uint8_t *group_obj = NULL, *mask_obj = NULL;

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		uint8_t *e = v + 4 + 8 * i;
		uint32_t perm = le16_get(e + 2);
		switch (le16_get(e)) {
		case ACL_USER_OBJ:
			perm &= (mode >> 6) | ~7u;
			mode &= (perm << 6) | ~0700u;
			le16_put(e + 2, (uint16_t)perm);
			break;
		case ACL_USER:
		case ACL_GROUP:
			not_equiv = 1;
			break;
		case ACL_GROUP_OBJ:
			group_obj = e;
			break;
		case ACL_OTHER:
			perm &= mode | ~7u;
			mode &= perm | ~07u;
			le16_put(e + 2, (uint16_t)perm);
			break;
		case ACL_MASK:
			mask_obj = e;
			not_equiv = 1;
			break;
		default:
			return -EINVAL;
		}
	}
	uint8_t *g = mask_obj ? mask_obj : group_obj;
	if (!g)
		return -EINVAL;
	uint32_t perm = le16_get(g + 2);
	perm &= (mode >> 3) | ~7u;
	mode &= (perm << 3) | ~070u;
	le16_put(g + 2, (uint16_t)perm);
	*mode_p = (*mode_p & ~0777u) | (mode & 0777u);
	return not_equiv;
}

/* posix_acl_chmod(): the owner, mask (or group) and other entries follow a new mode. */
static void acl_chmod(uint8_t *v, size_t len, uint32_t mode)
{
	int n = acl_count(v, len);
	uint8_t *group_obj = NULL, *mask_obj = NULL;

	for (int i = 0; i < n; i++) {
		uint8_t *e = v + 4 + 8 * i;
		switch (le16_get(e)) {
		case ACL_USER_OBJ:
			le16_put(e + 2, (uint16_t)((mode >> 6) & 7u));
			break;
		case ACL_GROUP_OBJ:
			group_obj = e;
			break;
		case ACL_MASK:
			mask_obj = e;
			break;
		case ACL_OTHER:
			le16_put(e + 2, (uint16_t)(mode & 7u));
			break;
		}
	}
	if (mask_obj)
		le16_put(mask_obj + 2, (uint16_t)((mode >> 3) & 7u));
	else if (group_obj)
		le16_put(group_obj + 2, (uint16_t)((mode >> 3) & 7u));
}

/* Reads xattr name of ino into a new buffer (free()). Returns 0, -ENODATA, -ENOMEM, -EIO. */
static int xattr_read(struct fs *fs, uint64_t ino, const char *name, uint8_t **ret,
		      size_t *ret_len)
{
	size_t len;
	uint8_t *buf;
	int r = meta_xattr_get(fs->meta, ino, name, strlen(name), NULL, 0, &len);

	if (r < 0)
		return r;
	buf = malloc(len ? len : 1);
	if (!buf)
		return -ENOMEM;
	r = meta_xattr_get(fs->meta, ino, name, strlen(name), buf, len, &len);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* ---------------------------------------------------------------- lifecycle */

/* Adds to b the removal of inode `in` and everything it owns. With the inode lock held. */
static int remove_inode_locked(struct fs *fs, struct meta_batch *b, const struct meta_inode *in)
{
	int r;

	r = stripe_purge_inode(fs->meta, in->ino, b);
	if (r < 0)
		tlog_debug("listing what inode %llu owns failed", (unsigned long long)in->ino);
	return r;
}

/* Adds to b the removal of ino when nothing refers to it any more: no name, no kernel lookup,
 * no open file. With the inode lock held. Returns 1 when added, 0 when kept (or gone), -errno
 * (b may then hold part of the removal: do not commit it). */
static int reap_locked(struct fs *fs, struct meta_batch *b, uint64_t ino)
{
	struct meta_inode in;
	int r;

	if (lk_held(fs, ino) || data_is_open(fs->data, ino))
		return 0;
	r = meta_inode_get(fs->meta, ino, &in);
	if (r == -ENOENT)
		return 0;
	if (r < 0 || in.nlink != 0)
		return r;
	r = remove_inode_locked(fs, b, &in);
	return r < 0 ? r : 1;
}

/* Removes the inodes in q (under the inode lock, FS_REAP_BATCH per commit). An error leaves
 * that batch's inodes for the orphan cleanup of the next mount. */
static void reap_many(struct fs *fs, const uint64_t *q, size_t n)
{
	struct meta_batch *b = meta_batch_new(fs->meta);
	size_t i = 0, removed = 0;
	int r = 0;

	if (!b) {
		tlog_warn("cannot remove %zu unlinked inode(s): out of memory", n);
		return;
	}
	while (i < n) {
		size_t added = 0, first = i;
		pthread_mutex_lock(fs->lock);
		for (; i < n && added < FS_REAP_BATCH; i++) {
			r = reap_locked(fs, b, q[i]);
			if (r < 0)
				break;
			added += (size_t)r;
		}
		if (r == 0 && added)
			r = meta_commit(fs->meta, b, false);
		pthread_mutex_unlock(fs->lock);
		if (r < 0) {
			tlog_warn("cannot remove unlinked inode %llu: %s (left for the next mount)",
				  (unsigned long long)q[i < n ? i : first], strerror(-r));
			meta_batch_free(b);
			b = meta_batch_new(fs->meta);
			if (!b)
				break;
			i += i < n; /* skip the one that failed */
			r = 0;
			continue;
		}
		removed += added;
	}
	meta_batch_free(b);
	if (removed)
		data_gc_kick(fs->data);
}

static void *reaper_main(void *arg)
{
	struct fs *fs = arg;
	uint64_t *q = NULL;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&fs->rp_lock);
	for (;;) {
		while (!fs->rp_n && !fs->rp_stop)
			pthread_cond_wait(&fs->rp_cond, &fs->rp_lock);
		if (!fs->rp_n && fs->rp_stop)
			break;
		if (fs->rp_n < FS_REAP_BATCH && !fs->rp_stop) {
			/* let a burst of forgets (rm -r) gather into one commit */
			struct timespec t;
			clock_gettime(CLOCK_REALTIME, &t);
			t.tv_nsec += FS_REAP_DELAY_MS * 1000000L;
			if (t.tv_nsec >= 1000000000L) {
				t.tv_sec++;
				t.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&fs->rp_cond, &fs->rp_lock, &t);
		}
		/* take the queue, hand back the spare buffer */
		uint64_t *tq = fs->rp_q;
		size_t tcap = fs->rp_cap;
		n = fs->rp_n;
		fs->rp_q = q;
		fs->rp_cap = cap;
		fs->rp_n = 0;
		q = tq;
		cap = tcap;
		pthread_mutex_unlock(&fs->rp_lock);
		reap_many(fs, q, n);
		pthread_mutex_lock(&fs->rp_lock);
	}
	pthread_mutex_unlock(&fs->rp_lock);
	free(q);
	return NULL;
}

/* ino may have lost its last reference: queues it for the reaper (at once when there is no
 * reaper thread). Never blocks on the inode lock when the reaper runs. */
static void reap(struct fs *fs, uint64_t ino)
{
	bool queued = false;

	if (lk_held(fs, ino))
		return; /* its forget comes later (a release usually comes with lookups held) */
	pthread_mutex_lock(&fs->rp_lock);
	if (fs->reaper_started && !fs->rp_stop) {
		uint64_t *t = tgrow(fs->rp_q, &fs->rp_cap, fs->rp_n + 1, sizeof(*t), 256);
		if (t)
			fs->rp_q = t;
		if (fs->rp_n < fs->rp_cap) {
			fs->rp_q[fs->rp_n++] = ino;
			queued = true;
			if (fs->rp_n == 1 || fs->rp_n == FS_REAP_BATCH)
				pthread_cond_signal(&fs->rp_cond);
		}
	}
	pthread_mutex_unlock(&fs->rp_lock);
	if (!queued)
		reap_many(fs, &ino, 1);
}

struct orphan_ctx {
	uint64_t inos[256];
	unsigned n;
};

static int collect_orphan(void *arg, uint64_t ino)
{
	struct orphan_ctx *o = arg;

	o->inos[o->n++] = ino;
	return o->n == TESSERA_ARRAY_SIZE(o->inos) ? 1 : 0;
}

/* Removes the inodes that were unlinked while open or looked up when the daemon stopped
 * (from the orphan index: a mount does not read every inode). Runs before the session. */
static int remove_orphans(struct fs *fs)
{
	struct orphan_ctx *o = calloc(1, sizeof(*o));
	struct meta_batch *b = NULL;
	struct meta_inode in;
	unsigned total = 0, removed;
	int r;

	if (!o)
		return -ENOMEM;
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	do {
		o->n = 0;
		removed = 0;
		r = meta_orphan_list(fs->meta, collect_orphan, o);
		for (unsigned i = 0; r == 0 && i < o->n; i++) {
			r = meta_inode_get(fs->meta, o->inos[i], &in);
			if (r == -ENOENT) {
				r = 0; /* removed already (by tessera-scrub) */
			} else if (r == 0 && in.nlink == 0) {
				r = remove_inode_locked(fs, b, &in);
				removed++;
			} else if (r == 0 && (in.flags & META_INODE_F_ORPHAN)) {
				in.flags &= ~META_INODE_F_ORPHAN;
				meta_batch_inode_put(b, &in);
			}
			meta_batch_orphan_del(b, o->inos[i]);
		}
		if (r == 0 && o->n)
			r = meta_commit(fs->meta, b, true);
		total += r == 0 ? removed : 0;
	} while (r == 0 && o->n == TESSERA_ARRAY_SIZE(o->inos));
	if (total) {
		tlog_info("removed %u orphan inode(s)", total);
		data_gc_kick(fs->data);
	}
out:
	meta_batch_free(b);
	free(o);
	return r;
}

int fs_new(struct meta *meta, struct data *data, pthread_mutex_t *inode_lock,
	   const struct fs_options *opt, struct fs **ret)
{
	struct fs *fs = calloc(1, sizeof(*fs));
	int r;

	if (!fs)
		return -ENOMEM;
	fs->meta = meta;
	fs->data = data;
	fs->lock = inode_lock;
	fs->timeout = opt && opt->attr_timeout_s >= 0 ? opt->attr_timeout_s : 1.0;
	pthread_mutex_init(&fs->lk_lock, NULL);
	pthread_mutex_init(&fs->rp_lock, NULL);
	pthread_cond_init(&fs->rp_cond, NULL);
	if (lk_grow(fs) < 0) {
		fs_free(fs);
		return -ENOMEM;
	}
	r = remove_orphans(fs);
	if (r < 0)
		tlog_warn("orphan cleanup failed: %s", strerror(-r));
	r = pthread_create(&fs->reaper, NULL, reaper_main, fs);
	if (r != 0)
		tlog_warn("cannot start the reaper thread: %s (inodes are removed inline)",
			  strerror(r));
	fs->reaper_started = r == 0;
	*ret = fs;
	return 0;
}

void fs_free(struct fs *fs)
{
	if (!fs)
		return;
	if (fs->reaper_started) {
		/* the reaper drains its queue before it exits */
		pthread_mutex_lock(&fs->rp_lock);
		fs->rp_stop = true;
		pthread_cond_signal(&fs->rp_cond);
		pthread_mutex_unlock(&fs->rp_lock);
		pthread_join(fs->reaper, NULL);
	}
	pthread_mutex_destroy(&fs->lk_lock);
	pthread_mutex_destroy(&fs->rp_lock);
	pthread_cond_destroy(&fs->rp_cond);
	free(fs->rp_q);
	free(fs->lk);
	free(fs);
}

struct name_ctx {
	uint64_t ino, parent;
	char name[META_NAME_MAX + 1];
	bool found;
};

static int name_any(void *ctx, uint64_t parent, const char *name, size_t name_len,
		    uint64_t ino, uint32_t mode)
{
	struct name_ctx *c = ctx;

	(void)mode;
	if (ino != c->ino)
		return 0;
	c->parent = parent;
	memcpy(c->name, name, name_len);
	c->name[name_len] = '\0';
	c->found = true;
	return 1;
}

static int name_in_dir(void *ctx, const char *name, size_t name_len, uint64_t ino, uint32_t mode)
{
	return name_any(ctx, 0, name, name_len, ino, mode);
}

/* A path of ino for a message ("/a/b", or "inode N" when it has no name any more). Scans the
 * directory entries: for error reports only. */
static void path_of(struct fs *fs, uint64_t ino, char *out, size_t size)
{
	struct name_ctx c = { .ino = ino };
	char tail[PATH_MAX] = "";

	snprintf(out, size, "inode %llu", (unsigned long long)ino);
	if (meta_dentry_list_all(fs->meta, name_any, &c) < 0 || !c.found)
		return;
	for (int depth = 0; depth < 256; depth++) {
		char t[PATH_MAX];
		snprintf(t, sizeof(t), "/%s%s", c.name, tail);
		snprintf(tail, sizeof(tail), "%s", t);
		if (c.parent == META_ROOT_INO) {
			snprintf(out, size, "%s", tail);
			return;
		}
		struct meta_inode dir;
		if (meta_inode_get(fs->meta, c.parent, &dir) < 0)
			return;
		uint64_t grand = dir.rdev ? dir.rdev : META_ROOT_INO;
		c = (struct name_ctx){ .ino = dir.ino };
		if (meta_dentry_list(fs->meta, grand, NULL, 0, name_in_dir, &c) < 0 || !c.found)
			return;
		c.parent = grand;
	}
}

/* Drops a file reference; returns true when it was the last. Written data that the last
 * close could not store is reported once, at error level, with the path. */
static bool close_file(struct fs *fs, struct data_file *f, uint64_t ino)
{
	uint64_t lost = 0;
	int r = data_close(fs->data, f, &lost);

	if (r < 0 && lost) {
		char path[PATH_MAX];
		path_of(fs, ino, path, sizeof(path));
		tlog_error("%s: %llu bytes of written data are lost: the last close could not "
			   "store them (%s)", path, (unsigned long long)lost, strerror(-r));
	} else if (r < 0) {
		tlog_warn("inode %llu: the last close could not commit the size and times: %s",
			  (unsigned long long)ino, strerror(-r));
	}
	return r != 0;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct fs *fs = userdata;

	/* 1 MiB requests: fewer round trips through the kernel per stripe. */
	if (conn->max_write < FS_MAX_IO)
		conn->max_write = FS_MAX_IO;
	conn->max_readahead = FS_MAX_IO;
	conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_WRITEBACK_CACHE);
	/* The kernel turns setuid/setgid clearing (write, truncate, chown) into mode setattrs. */
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	/* open(O_TRUNC) arrives as one open with O_TRUNC (handled in op_open). */
	if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC)
		conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
	if (conn->capable & FUSE_CAP_POSIX_ACL) {
		conn->want |= FUSE_CAP_POSIX_ACL;
		fs->posix_acl = true;
		/* The umask is ours to apply: it does not apply under a default ACL. */
		if (conn->capable & FUSE_CAP_DONT_MASK)
			conn->want |= FUSE_CAP_DONT_MASK;
	}
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
}

/* ---------------------------------------------------------------- attributes */

/* Replies with an entry for `in` and counts the kernel's lookup. */
static void reply_entry(fuse_req_t req, const struct meta_inode *in)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = in->ino;
	e.generation = in->generation;
	e.attr_timeout = fs->timeout;
	e.entry_timeout = fs->timeout;
	stat_of(fs, in, &e.attr);
	if (lk_ref(fs, in->ino, 1) < 0) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (fuse_reply_entry(req, &e) != 0 && lk_unref(fs, in->ino, 1) == 0)
		reap(fs, in->ino);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	uint64_t ino;
	int r = check_name(name);

	if (r == 0)
		r = meta_dentry_get(fs->meta, parent, name, strlen(name), &ino, NULL);
	if (r == -ENOENT) {
		/* Negative entry: this mount is the only writer, so it may be cached. */
		struct fuse_entry_param e = { .ino = 0, .entry_timeout = fs->timeout };
		fuse_reply_entry(req, &e);
		return;
	}
	if (r == 0)
		r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

static void forget_one(struct fs *fs, uint64_t ino, uint64_t nlookup)
{
	if (lk_unref(fs, ino, nlookup) == 0)
		reap(fs, ino);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		forget_one(fs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	struct stat st;
	int r = meta_inode_get(fs->meta, ino, &in);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	stat_of(fs, &in, &st);
	fuse_reply_attr(req, &st, fs->timeout);
}

/* Keeps an access ACL in step with a new mode (chmod). With the inode lock held. */
static int acl_follow_mode_locked(struct fs *fs, struct meta_batch *b, uint64_t ino,
				  uint32_t mode)
{
	uint8_t *v = NULL;
	size_t len;
	int r = xattr_read(fs, ino, ACL_ACCESS, &v, &len);

	if (r == -ENODATA)
		return 0;
	if (r < 0)
		return r;
	if (acl_count(v, len) > 0) {
		acl_chmod(v, len, mode);
		meta_batch_xattr_put(b, ino, ACL_ACCESS, strlen(ACL_ACCESS), v, len);
	}
	free(v);
	return 0;
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	struct meta_batch *b = NULL;
	struct stat st;
	uint64_t now;
	int r;

	r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		goto out;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (S_ISDIR(in.mode)) {
			r = -EISDIR;
			goto out;
		}
		if (!S_ISREG(in.mode)) {
			r = -EINVAL;
			goto out;
		}
		struct data_file *f;
		r = data_open(fs->data, ino, in.size, &f);
		if (r < 0)
			goto out;
		r = data_truncate(f, (uint64_t)attr->st_size);
		close_file(fs, f, ino);
		if (r < 0)
			goto out;
	}
	if ((to_set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW)) && S_ISREG(in.mode) &&
	    data_is_open(fs->data, ino)) {
		/* Buffered writes carry their own mtime; store them first so that an explicit
		 * time set now (cp -p, touch -d on an open file) is the one that stays. */
		struct data_file *f;
		r = data_open(fs->data, ino, in.size, &f);
		if (r == 0) {
			r = data_flush(f);
			close_file(fs, f, ino);
		}
		if (r < 0)
			goto out;
	}
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}

	pthread_mutex_lock(fs->lock);
	now = tclock_realtime_ns();
	r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		goto unlock;
	if (to_set & FUSE_SET_ATTR_MODE) {
		in.mode = (in.mode & S_IFMT) | (attr->st_mode & 07777);
		if (fs->posix_acl) {
			r = acl_follow_mode_locked(fs, b, ino, in.mode);
			if (r < 0)
				goto unlock;
		}
	}
	if (to_set & FUSE_SET_ATTR_UID)
		in.uid = attr->st_uid;
	if (to_set & FUSE_SET_ATTR_GID)
		in.gid = attr->st_gid;
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		in.atime_ns = now;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		in.atime_ns = ns_of(&attr->st_atim);
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		in.mtime_ns = now;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		in.mtime_ns = ns_of(&attr->st_mtim);
	if (to_set & FUSE_SET_ATTR_CTIME)
		in.ctime_ns = ns_of(&attr->st_ctim);
	else if (to_set & ~FUSE_SET_ATTR_SIZE)
		in.ctime_ns = now; /* (a size change set it already, in data_truncate()) */
	meta_batch_inode_put(b, &in);
	r = meta_commit(fs->meta, b, false);
unlock:
	pthread_mutex_unlock(fs->lock);
out:
	meta_batch_free(b);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	stat_of(fs, &in, &st);
	fuse_reply_attr(req, &st, fs->timeout);
}

/* ---------------------------------------------------------------- namespace */

/* Reads the parent directory for a change; with the inode lock held. */
static int get_dir_locked(struct fs *fs, uint64_t parent, struct meta_inode *ret)
{
	int r = meta_inode_get(fs->meta, parent, ret);

	if (r < 0)
		return r;
	if (!S_ISDIR(ret->mode))
		return -ENOTDIR;
	if (ret->nlink == 0)
		return -ENOENT; /* removed directory still held open */
	return 0;
}

/* The mode and ACLs of a new node in dir (with the inode lock held): on an ACL mount the
 * parent's default ACL is inherited (masked by the requested mode) or else the umask
 * applies; directories inherit the default ACL itself as well. */
static int inherit_acl_locked(struct fs *fs, fuse_req_t req, struct meta_batch *b,
			      const struct meta_inode *dir, struct meta_inode *in)
{
	uint8_t *v = NULL;
	size_t len;
	uint32_t mode = in->mode;
	int r;

	if (!fs->posix_acl)
		return 0;
	r = xattr_read(fs, dir->ino, ACL_DEFAULT, &v, &len);
	if (r == -ENODATA) {
		in->mode &= ~(uint32_t)fuse_req_ctx(req)->umask;
		return 0;
	}
	if (r < 0)
		return r;
	if (acl_count(v, len) <= 0)
		goto out; /* an empty default ACL means none; a bad one is ignored */
	if (S_ISDIR(in->mode))
		meta_batch_xattr_put(b, in->ino, ACL_DEFAULT, strlen(ACL_DEFAULT), v, len);
	r = acl_create_masq(v, len, &mode);
	if (r < 0) {
		r = 0;
		in->mode &= ~(uint32_t)fuse_req_ctx(req)->umask;
		goto out;
	}
	in->mode = mode;
	if (r > 0)
		meta_batch_xattr_put(b, in->ino, ACL_ACCESS, strlen(ACL_ACCESS), v, len);
	r = 0;
out:
	free(v);
	return r;
}

/* Creates a node (file, directory, device, fifo, socket, symlink with target) named name in
 * parent, owned by the caller. */
static int make_node(fuse_req_t req, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
		     const char *target, struct meta_inode *ret)
{
	struct fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct meta_inode dir, in;
	struct meta_batch *b = NULL;
	uint64_t now, ino;
	int r = check_name(name);

	if (r < 0)
		return r;
	b = meta_batch_new(fs->meta);
	if (!b)
		return -ENOMEM;
	pthread_mutex_lock(fs->lock);
	now = tclock_realtime_ns();
	r = get_dir_locked(fs, parent, &dir);
	if (r < 0)
		goto out;
	r = meta_dentry_get(fs->meta, parent, name, strlen(name), &ino, NULL);
	if (r == 0) {
		r = -EEXIST;
		goto out;
	}
	if (r != -ENOENT)
		goto out;
	r = meta_alloc_ino(fs->meta, &ino);
	if (r < 0)
		goto out;
	memset(&in, 0, sizeof(in));
	in.ino = ino;
	in.mode = mode;
	in.uid = ctx->uid;
	in.gid = ctx->gid;
	if (dir.mode & S_ISGID) {
		in.gid = dir.gid;
		if (S_ISDIR(mode))
			in.mode |= S_ISGID;
	}
	in.nlink = S_ISDIR(mode) ? 2 : 1;
	in.rdev = S_ISDIR(mode) ? parent : (S_ISCHR(mode) || S_ISBLK(mode) ? rdev : 0);
	in.atime_ns = in.mtime_ns = in.ctime_ns = in.btime_ns = now;
	in.generation = 1;
	if (target) {
		in.size = strlen(target);
		meta_batch_inline_put(b, ino, target, in.size);
	} else {
		r = inherit_acl_locked(fs, req, b, &dir, &in);
		if (r < 0)
			goto out;
	}
	meta_batch_inode_put(b, &in);
	meta_batch_dentry_put(b, parent, name, strlen(name), ino, mode & S_IFMT);
	if (S_ISDIR(mode))
		dir.nlink++;
	dir.mtime_ns = dir.ctime_ns = now;
	meta_batch_inode_put(b, &dir);
	r = meta_commit(fs->meta, b, false);
	if (r == 0)
		*ret = in;
out:
	pthread_mutex_unlock(fs->lock);
	meta_batch_free(b);
	return r;
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct meta_inode in;
	int r;

	if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode) && !S_ISCHR(mode) &&
	    !S_ISBLK(mode)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = make_node(req, parent, name, (mode & S_IFMT) | (mode & 07777), rdev, NULL, &in);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct meta_inode in;
	int r = make_node(req, parent, name, S_IFDIR | (mode & 07777), 0, NULL, &in);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct meta_inode in;
	size_t len = strlen(link);
	int r;

	if (len == 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (len > FS_SYMLINK_MAX) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	r = make_node(req, parent, name, S_IFLNK | 0777, 0, link, &in);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	char buf[FS_SYMLINK_MAX + 1];
	struct meta_inode in;
	size_t len;
	int r = meta_inode_get(fs->meta, ino, &in);

	if (r == 0 && !S_ISLNK(in.mode))
		r = -EINVAL;
	if (r == 0)
		r = meta_inline_get(fs->meta, ino, buf, sizeof(buf) - 1, &len);
	if (r == -ENOENT || r == -ERANGE)
		r = -EIO; /* a symlink inode without a (sane) target: damaged metadata */
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	buf[len] = '\0';
	fuse_reply_readlink(req, buf);
}

/* Drops one link of `in` in batch b (with the inode lock held): the inode goes in the same
 * batch when that was its last name and nothing else refers to it, else it is kept (as an
 * orphan when nlink is 0, removed later by reap()). */
static int drop_link_locked(struct fs *fs, struct meta_batch *b, struct meta_inode *in,
			    uint64_t now, bool *ret_gc)
{
	in->nlink = S_ISDIR(in->mode) || in->nlink == 0 ? 0 : in->nlink - 1;
	in->ctime_ns = now;
	if (in->nlink == 0 && !lk_held(fs, in->ino) && !data_is_open(fs->data, in->ino)) {
		*ret_gc = true;
		return remove_inode_locked(fs, b, in);
	}
	if (in->nlink == 0 && !(in->flags & META_INODE_F_ORPHAN)) {
		in->flags |= META_INODE_F_ORPHAN;
		meta_batch_orphan_put(b, in->ino);
	}
	meta_batch_inode_put(b, in);
	return 0;
}

static int remove_entry(fuse_req_t req, uint64_t parent, const char *name, bool dir)
{
	struct fs *fs = fs_of(req);
	struct meta_inode pin, in;
	struct meta_batch *b = NULL;
	uint64_t now, ino;
	bool gc = false;
	int r = check_name(name);

	if (r < 0)
		return r;
	b = meta_batch_new(fs->meta);
	if (!b)
		return -ENOMEM;
	pthread_mutex_lock(fs->lock);
	now = tclock_realtime_ns();
	r = get_dir_locked(fs, parent, &pin);
	if (r < 0)
		goto out;
	r = meta_dentry_get(fs->meta, parent, name, strlen(name), &ino, NULL);
	if (r < 0)
		goto out;
	r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		goto out;
	if (dir && !S_ISDIR(in.mode)) {
		r = -ENOTDIR;
		goto out;
	}
	if (!dir && S_ISDIR(in.mode)) {
		r = -EISDIR;
		goto out;
	}
	if (dir) {
		r = meta_dir_has_entries(fs->meta, ino);
		if (r < 0)
			goto out;
		if (r > 0) {
			r = -ENOTEMPTY;
			goto out;
		}
	}
	meta_batch_dentry_del(b, parent, name, strlen(name));
	r = drop_link_locked(fs, b, &in, now, &gc);
	if (r < 0)
		goto out;
	if (dir)
		pin.nlink--;
	pin.mtime_ns = pin.ctime_ns = now;
	meta_batch_inode_put(b, &pin);
	r = meta_commit(fs->meta, b, false);
out:
	pthread_mutex_unlock(fs->lock);
	meta_batch_free(b);
	if (r == 0 && gc)
		data_gc_kick(fs->data);
	return r;
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -remove_entry(req, parent, name, false));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, -remove_entry(req, parent, name, true));
}

/* Whether directory dir is ancestor (or the same) of directory ino. With the inode lock. */
static int is_ancestor_locked(struct fs *fs, uint64_t dir, uint64_t ino)
{
	struct meta_inode in;

	for (unsigned depth = 0; depth < FS_MAX_DEPTH; depth++) {
		if (ino == dir)
			return 1;
		if (ino == META_ROOT_INO)
			return 0;
		int r = meta_inode_get(fs->meta, ino, &in);
		if (r < 0)
			return r;
		ino = dir_parent(&in);
	}
	return -ELOOP;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct meta_inode src, dst, op, npr, *np;
	struct meta_batch *b = NULL;
	uint64_t now, sino, dino = 0;
	bool have_dst = false, gc = false, exchange = flags & RENAME_EXCHANGE;
	size_t len = strlen(name), newlen = strlen(newname);
	int r;

	if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) ||
	    (flags & RENAME_NOREPLACE && exchange)) {
		fuse_reply_err(req, EINVAL); /* RENAME_WHITEOUT: overlayfs only */
		return;
	}
	r = check_name(name);
	if (r == 0)
		r = check_name(newname);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	b = meta_batch_new(fs->meta);
	if (!b) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(fs->lock);
	now = tclock_realtime_ns();
	/* op and *np are the same record when the parents are one directory. */
	np = parent == newparent ? &op : &npr;
	r = get_dir_locked(fs, parent, &op);
	if (r == 0 && np != &op)
		r = get_dir_locked(fs, newparent, np);
	if (r == 0)
		r = meta_dentry_get(fs->meta, parent, name, len, &sino, NULL);
	if (r == 0)
		r = meta_inode_get(fs->meta, sino, &src);
	if (r < 0)
		goto out;
	r = meta_dentry_get(fs->meta, newparent, newname, newlen, &dino, NULL);
	if (r == 0) {
		have_dst = true;
		r = meta_inode_get(fs->meta, dino, &dst);
	} else if (r == -ENOENT) {
		r = exchange ? -ENOENT : 0;
	}
	if (r < 0)
		goto out;
	if (have_dst && (flags & RENAME_NOREPLACE)) {
		r = -EEXIST;
		goto out;
	}
	if (have_dst && dino == sino) /* one inode (or one name): POSIX says do nothing */
		goto out;
	/* A directory never moves below itself. */
	if (S_ISDIR(src.mode) && parent != newparent) {
		r = is_ancestor_locked(fs, sino, newparent);
		if (r != 0) {
			r = r > 0 ? -EINVAL : r;
			goto out;
		}
	}
	if (exchange && S_ISDIR(dst.mode) && parent != newparent) {
		r = is_ancestor_locked(fs, dino, parent);
		if (r != 0) {
			r = r > 0 ? -EINVAL : r;
			goto out;
		}
	}
	if (have_dst && !exchange) {
		if (S_ISDIR(src.mode) && !S_ISDIR(dst.mode)) {
			r = -ENOTDIR;
			goto out;
		}
		if (!S_ISDIR(src.mode) && S_ISDIR(dst.mode)) {
			r = -EISDIR;
			goto out;
		}
		if (S_ISDIR(dst.mode)) {
			r = meta_dir_has_entries(fs->meta, dino);
			if (r != 0) {
				r = r > 0 ? -ENOTEMPTY : r;
				goto out;
			}
		}
	}

	meta_batch_dentry_put(b, newparent, newname, newlen, sino, src.mode & S_IFMT);
	if (exchange) {
		meta_batch_dentry_put(b, parent, name, len, dino, dst.mode & S_IFMT);
		if (S_ISDIR(dst.mode)) {
			dst.rdev = parent == META_ROOT_INO ? 0 : parent;
			op.nlink++;
			np->nlink--;
		}
		dst.ctime_ns = now;
		meta_batch_inode_put(b, &dst);
	} else {
		meta_batch_dentry_del(b, parent, name, len);
		if (have_dst) {
			r = drop_link_locked(fs, b, &dst, now, &gc);
			if (r < 0)
				goto out;
			if (S_ISDIR(dst.mode))
				np->nlink--; /* the replaced directory's ".." */
		}
	}
	if (S_ISDIR(src.mode)) {
		src.rdev = newparent == META_ROOT_INO ? 0 : newparent;
		op.nlink--;
		np->nlink++;
	}
	src.ctime_ns = now;
	meta_batch_inode_put(b, &src);
	op.mtime_ns = op.ctime_ns = now;
	np->mtime_ns = np->ctime_ns = now;
	meta_batch_inode_put(b, &op);
	if (np != &op)
		meta_batch_inode_put(b, np);
	r = meta_commit(fs->meta, b, false);
out:
	pthread_mutex_unlock(fs->lock);
	meta_batch_free(b);
	if (r == 0 && gc)
		data_gc_kick(fs->data);
	fuse_reply_err(req, -r);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in, dir;
	struct meta_batch *b = NULL;
	uint64_t now, other;
	int r = check_name(newname);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	b = meta_batch_new(fs->meta);
	if (!b) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(fs->lock);
	now = tclock_realtime_ns();
	r = get_dir_locked(fs, newparent, &dir);
	if (r == 0)
		r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		goto out;
	if (S_ISDIR(in.mode)) {
		r = -EPERM;
		goto out;
	}
	if (in.nlink == 0) {
		r = -ENOENT;
		goto out;
	}
	if (in.nlink >= UINT32_MAX - 1) {
		r = -EMLINK;
		goto out;
	}
	r = meta_dentry_get(fs->meta, newparent, newname, strlen(newname), &other, NULL);
	if (r == 0) {
		r = -EEXIST;
		goto out;
	}
	if (r != -ENOENT)
		goto out;
	in.nlink++;
	in.ctime_ns = now;
	dir.mtime_ns = dir.ctime_ns = now;
	meta_batch_dentry_put(b, newparent, newname, strlen(newname), ino, in.mode & S_IFMT);
	meta_batch_inode_put(b, &in);
	meta_batch_inode_put(b, &dir);
	r = meta_commit(fs->meta, b, false);
out:
	pthread_mutex_unlock(fs->lock);
	meta_batch_free(b);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

/* ---------------------------------------------------------------- files */

/* relatime: a read updates atime when it is not newer than mtime or ctime, or a day old. */
static void touch_atime(struct fs *fs, uint64_t ino)
{
	struct meta_inode in;
	struct meta_batch *b;
	uint64_t now = tclock_realtime_ns();

	if (meta_inode_get(fs->meta, ino, &in) < 0)
		return;
	if (ns_after(in.atime_ns, in.mtime_ns) && ns_after(in.atime_ns, in.ctime_ns) &&
	    now - in.atime_ns < FS_RELATIME_NS)
		return;
	b = meta_batch_new(fs->meta);
	if (!b)
		return;
	pthread_mutex_lock(fs->lock);
	if (meta_inode_get(fs->meta, ino, &in) == 0) {
		in.atime_ns = now;
		meta_batch_inode_put(b, &in);
		if (meta_commit(fs->meta, b, false) < 0)
			tlog_debug("atime of inode %llu not stored", (unsigned long long)ino);
	}
	pthread_mutex_unlock(fs->lock);
	meta_batch_free(b);
}

struct read_ctx {
	fuse_req_t req;
	bool replied;
};

/* Hands the bytes to the kernel straight from the stripe buffers. */
static int read_reply(void *arg, const struct iovec *iov, int count)
{
	struct read_ctx *c = arg;

	c->replied = true;
	fuse_reply_iov(c->req, iov, count); /* req is gone after a reply */
	return 0;
}

static int open_file(struct fs *fs, uint64_t ino, struct fuse_file_info *fi, bool created)
{
	struct meta_inode in;
	struct data_file *f;
	int r;

	pthread_mutex_lock(fs->lock);
	r = meta_inode_get(fs->meta, ino, &in);
	if (r == 0 && S_ISDIR(in.mode))
		r = -EISDIR;
	else if (r == 0 && !S_ISREG(in.mode))
		r = -EINVAL;
	if (r == 0)
		r = data_open(fs->data, ino, in.size, &f);
	pthread_mutex_unlock(fs->lock);
	if (r < 0)
		return r;
	if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
		r = data_truncate(f, 0);
		if (r < 0) {
			close_file(fs, f, ino);
			return r;
		}
	}
	fi->fh = (uintptr_t)f;
	if (!created && (fi->flags & O_ACCMODE) != O_WRONLY)
		touch_atime(fs, ino); /* reads may come from the page cache, unseen */
	/* This mount is the only writer: cached pages stay valid across opens. */
	fi->keep_cache = 1;
	return 0;
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;
	struct meta_inode in;
	int r = make_node(req, parent, name, S_IFREG | (mode & 07777), 0, NULL, &in);

	if (r == 0) {
		fi->flags &= ~O_TRUNC; /* new and empty */
		r = open_file(fs, in.ino, fi, true);
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	memset(&e, 0, sizeof(e));
	e.ino = in.ino;
	e.generation = in.generation;
	e.attr_timeout = fs->timeout;
	e.entry_timeout = fs->timeout;
	stat_of(fs, &in, &e.attr);
	if (lk_ref(fs, in.ino, 1) < 0) {
		close_file(fs, file_of(fi), in.ino);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (fuse_reply_create(req, &e, fi) != 0) {
		close_file(fs, file_of(fi), in.ino);
		forget_one(fs, in.ino, 1);
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int r = open_file(fs, ino, fi, false);

	if (r < 0)
		fuse_reply_err(req, -r);
	else if (fuse_reply_open(req, fi) != 0)
		close_file(fs, file_of(fi), ino);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct read_ctx c = { .req = req };
	int r;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = data_read_with(file_of(fi), (uint64_t)off, size, read_reply, &c);
	if (!c.replied)
		fuse_reply_err(req, r < 0 ? -r : EIO);
	else
		touch_atime(fs, ino);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	ssize_t n;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	n = data_write(file_of(fi), (uint64_t)off, buf, size);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, -data_flush(file_of(fi)));
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int r = data_flush(file_of(fi));

	if (r == 0)
		r = meta_sync(fs->meta);
	fuse_reply_err(req, -r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);

	/* The last handle of an unlinked file that the kernel forgot already: it goes now. */
	if (close_file(fs, file_of(fi), ino))
		reap(fs, ino);
	fuse_reply_err(req, 0);
}

/* ---------------------------------------------------------------- directories */

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	struct fs_dir *d;
	int r = meta_inode_get(fs->meta, ino, &in);

	if (r == 0 && !S_ISDIR(in.mode))
		r = -ENOTDIR;
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_init(&d->lock, NULL);
	d->next_off = 3;
	fi->fh = (uintptr_t)d;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) != 0) {
		pthread_mutex_destroy(&d->lock);
		free(d);
	}
}

struct readdir_ctx {
	fuse_req_t req;
	struct fs *fs;
	struct fs_dir *d;
	bool plus;
	char *buf;
	size_t size, pos;
	uint64_t *refs;  /* readdirplus: the inodes this reply counts a lookup for */
	size_t nrefs, refs_cap;
	int err;
};

/* Adds one entry ending at offset off; returns 1 when the buffer is full. */
static int add_entry(struct readdir_ctx *c, const char *name, uint64_t ino, uint32_t mode,
		     off_t off)
{
	struct stat st;
	size_t need, room = c->size - c->pos;

	if (!c->plus) {
		memset(&st, 0, sizeof(st));
		st.st_ino = ino;
		st.st_mode = mode & S_IFMT;
		need = fuse_add_direntry(c->req, c->buf + c->pos, room, name, &st, off);
	} else {
		struct fuse_entry_param e;
		struct meta_inode in;
		bool dots = name[0] == '.' && (!name[1] || (name[1] == '.' && !name[2]));

		memset(&e, 0, sizeof(e));
		if (dots) {
			e.attr.st_ino = ino;
			e.attr.st_mode = mode & S_IFMT;
		} else {
			int r = meta_inode_get(c->fs->meta, ino, &in);
			if (r == -ENOENT)
				return 0; /* removed meanwhile */
			if (r < 0) {
				c->err = r;
				return r;
			}
			e.ino = ino;
			e.generation = in.generation;
			e.attr_timeout = c->fs->timeout;
			e.entry_timeout = c->fs->timeout;
			stat_of(c->fs, &in, &e.attr);
		}
		need = fuse_add_direntry_plus(c->req, c->buf + c->pos, room, name, &e, off);
		if (need <= room && !dots) {
			uint64_t *t = tgrow(c->refs, &c->refs_cap, c->nrefs + 1, sizeof(*t), 64);
			if (!t) {
				c->err = -ENOMEM;
				return -ENOMEM;
			}
			c->refs = t;
			c->refs[c->nrefs++] = ino;
		}
	}
	if (need > room)
		return 1;
	c->pos += need;
	return 0;
}

static int readdir_cb(void *arg, const char *name, size_t len, uint64_t ino, uint32_t mode)
{
	struct readdir_ctx *c = arg;
	struct fs_dir *d = c->d;
	uint64_t off = d->next_off;
	int r;

	/* Remember the name first: an entry the kernel got must be resumable. */
	if (d->names_len + len + 1 > FS_DIR_HISTORY_MAX) {
		d->n = 0;
		d->names_len = 0;
	}
	if (d->n == 0)
		d->base_off = off;
	uint32_t *pos = tgrow(d->pos, &d->cap, d->n + 1, sizeof(*pos), 256);
	if (!pos)
		return -ENOMEM;
	d->pos = pos;
	char *names = tgrow(d->names, &d->names_cap, d->names_len + len + 1, 1, 8192);
	if (!names)
		return -ENOMEM;
	d->names = names;
	r = add_entry(c, name, ino, mode, (off_t)off);
	if (r != 0)
		return r;
	d->pos[d->n++] = (uint32_t)d->names_len;
	memcpy(d->names + d->names_len, name, len + 1);
	d->names_len += len + 1;
	d->next_off++;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, bool plus)
{
	struct fs *fs = fs_of(req);
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	/* A readdirplus reply makes the kernel build an inode for every entry: a listing that
	 * does not stat (FUSE_CAP_READDIRPLUS_AUTO asks for "plus" at offset 0 regardless) should
	 * not pay that for thousands of entries. The kernel asks again for the rest. */
	size_t cap = plus && size > FS_READDIRPLUS_MAX ? FS_READDIRPLUS_MAX : size;
	struct readdir_ctx c = { .req = req, .fs = fs, .d = d, .plus = plus, .size = cap };
	struct meta_inode self;
	const char *after = NULL;
	size_t after_len = 0;
	int r = 0;

	c.buf = malloc(size ? size : 1);
	if (!c.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&d->lock);
	if (off < 2) {
		r = meta_inode_get(fs->meta, ino, &self);
		if (r < 0)
			goto reply;
		if (off == 0 && add_entry(&c, ".", ino, S_IFDIR, 1) != 0)
			goto reply;
		if (add_entry(&c, "..", S_ISDIR(self.mode) ? dir_parent(&self) : ino, S_IFDIR, 2) != 0)
			goto reply;
	} else if (off > 2) {
		uint64_t i = (uint64_t)off - d->base_off;
		if ((uint64_t)off < d->base_off || i >= d->n) {
			/* not an offset this handle remembers (forgotten after FS_DIR_HISTORY_MAX
			 * bytes of names, or never handed out): the listing ends there */
			r = (uint64_t)off < d->next_off ? 0 : -EINVAL;
			goto reply;
		}
		after = d->names + d->pos[i];
		after_len = strlen(after);
	}
	r = meta_dentry_list(fs->meta, ino, after, after_len, readdir_cb, &c);
reply:
	pthread_mutex_unlock(&d->lock);
	if (r < 0 && c.pos == 0) {
		fuse_reply_err(req, -r);
		goto out;
	}
	for (size_t i = 0; i < c.nrefs; i++) {
		if (lk_ref(fs, c.refs[i], 1) < 0) {
			for (size_t j = 0; j < i; j++)
				forget_one(fs, c.refs[j], 1);
			fuse_reply_err(req, ENOMEM);
			goto out;
		}
	}
	if (fuse_reply_buf(req, c.buf, c.pos) != 0) {
		for (size_t i = 0; i < c.nrefs; i++)
			forget_one(fs, c.refs[i], 1);
	}
out:
	free(c.refs);
	free(c.buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, false);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, true);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;

	pthread_mutex_destroy(&d->lock);
	free(d->pos);
	free(d->names);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	fuse_reply_err(req, -meta_sync(fs_of(req)->meta));
}

/* ---------------------------------------------------------------- xattrs */

static int check_xattr_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > META_XATTR_NAME_MAX)
		return -ERANGE; /* as the kernel's own check */
	return 0;
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			size_t size, int flags)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	struct meta_batch *b = NULL;
	size_t nlen = strlen(name), old;
	bool store = true;
	int r = check_xattr_name(name);

	if (r == 0 && size > META_XATTR_SIZE_MAX)
		r = -E2BIG;
	if (r == 0 && (flags & ~(XATTR_CREATE | XATTR_REPLACE)))
		r = -EINVAL;
	if (r < 0)
		goto reply;
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto reply;
	}
	pthread_mutex_lock(fs->lock);
	r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		goto unlock;
	r = meta_xattr_get(fs->meta, ino, name, nlen, NULL, 0, &old);
	if (r < 0 && r != -ENODATA)
		goto unlock;
	if (r == 0 && (flags & XATTR_CREATE)) {
		r = -EEXIST;
		goto unlock;
	}
	if (r == -ENODATA && (flags & XATTR_REPLACE))
		goto unlock;
	r = 0;
	if (fs->posix_acl && strcmp(name, ACL_ACCESS) == 0) {
		uint32_t perm;
		r = acl_equiv_mode((const uint8_t *)value, size, &perm);
		if (r < 0)
			goto unlock;
		in.mode = (in.mode & ~0777u) | perm;
		if (r == 0) {
			/* the mode says it all: keep no ACL (as ext4 does) */
			store = false;
			meta_batch_xattr_del(b, ino, name, nlen);
		}
		r = 0;
	} else if (fs->posix_acl && strcmp(name, ACL_DEFAULT) == 0) {
		if (!S_ISDIR(in.mode)) {
			r = -EACCES;
			goto unlock;
		}
		r = acl_count((const uint8_t *)value, size);
		if (r < 0)
			goto unlock;
		r = 0;
	}
	if (store)
		meta_batch_xattr_put(b, ino, name, nlen, value, size);
	in.ctime_ns = tclock_realtime_ns();
	meta_batch_inode_put(b, &in);
	r = meta_commit(fs->meta, b, false);
unlock:
	pthread_mutex_unlock(fs->lock);
reply:
	meta_batch_free(b);
	fuse_reply_err(req, -r);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	char *buf = NULL;
	size_t len;
	int r = check_xattr_name(name);

	if (r == 0)
		r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		goto err;
	if (size == 0) {
		r = meta_xattr_get(fs->meta, ino, name, strlen(name), NULL, 0, &len);
		if (r < 0)
			goto err;
		fuse_reply_xattr(req, len);
		return;
	}
	if (size > META_XATTR_SIZE_MAX)
		size = META_XATTR_SIZE_MAX;
	buf = malloc(size);
	if (!buf) {
		r = -ENOMEM;
		goto err;
	}
	r = meta_xattr_get(fs->meta, ino, name, strlen(name), buf, size, &len);
	if (r < 0)
		goto err;
	fuse_reply_buf(req, buf, len);
	free(buf);
	return;
err:
	free(buf);
	fuse_reply_err(req, -r);
}

struct xlist {
	char *buf;
	size_t len, cap;
};

static int xlist_add(void *arg, const char *name, size_t name_len, const void *value,
		     size_t value_len)
{
	struct xlist *x = arg;

	(void)value;
	(void)value_len;
	if (x->len + name_len + 1 > FS_XATTR_LIST_MAX)
		return -E2BIG;
	char *t = tgrow(x->buf, &x->cap, x->len + name_len + 1, 1, 1024);
	if (!t)
		return -ENOMEM;
	x->buf = t;
	memcpy(x->buf + x->len, name, name_len + 1);
	x->len += name_len + 1;
	return 0;
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	struct xlist x = { 0 };
	int r = meta_inode_get(fs->meta, ino, &in);

	if (r == 0)
		r = meta_xattr_list(fs->meta, ino, xlist_add, &x);
	if (r < 0)
		fuse_reply_err(req, -r);
	else if (size == 0)
		fuse_reply_xattr(req, x.len);
	else if (size < x.len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, x.buf, x.len);
	free(x.buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	struct meta_batch *b = NULL;
	size_t len;
	int r = check_xattr_name(name);

	if (r < 0)
		goto reply;
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto reply;
	}
	pthread_mutex_lock(fs->lock);
	r = meta_inode_get(fs->meta, ino, &in);
	if (r == 0)
		r = meta_xattr_get(fs->meta, ino, name, strlen(name), NULL, 0, &len);
	if (r == 0) {
		meta_batch_xattr_del(b, ino, name, strlen(name));
		in.ctime_ns = tclock_realtime_ns();
		meta_batch_inode_put(b, &in);
		r = meta_commit(fs->meta, b, false);
	}
	pthread_mutex_unlock(fs->lock);
reply:
	meta_batch_free(b);
	fuse_reply_err(req, -r);
}

/* ---------------------------------------------------------------- statfs */

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct statvfs sv;
	uint64_t total = 0, avail = 0;
	int r = data_statfs(fs->data, &total, &avail);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = total / 4096;
	sv.f_bfree = avail / 4096;
	sv.f_bavail = avail / 4096;
	/* Inodes are metadata records: no fixed table to run out of. */
	sv.f_files = UINT32_MAX;
	sv.f_ffree = UINT32_MAX - 1;
	sv.f_favail = UINT32_MAX - 1;
	sv.f_namemax = META_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	int r;

	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) ||
	    ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE))) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (mode & FALLOC_FL_PUNCH_HOLE)
		r = data_punch_hole(file_of(fi), (uint64_t)off, (uint64_t)len);
	else if (!(mode & FALLOC_FL_KEEP_SIZE))
		r = data_allocate(file_of(fi), (uint64_t)off + (uint64_t)len);
	else
		r = 0; /* nothing to reserve: servers allocate on write */
	fuse_reply_err(req, -r);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	int64_t r;

	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	r = data_seek(file_of(fi), (uint64_t)off, whence == SEEK_DATA);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, (off_t)r);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.create = op_create,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.flush = op_flush,
	.fsync = op_fsync,
	.release = op_release,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.fallocate = op_fallocate,
	.lseek = op_lseek,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
};

const struct fuse_lowlevel_ops *fs_ops(void)
{
	return &ops;
}

bool fs_inode_in_use(struct fs *fs, uint64_t ino)
{
	return lk_held(fs, ino) || data_is_open(fs->data, ino);
}
