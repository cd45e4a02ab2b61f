/*
 * fs: FUSE low-level operations over meta (the namespace) and data (file contents). This file
 * holds the lifecycle (fs_new, the reaper, orphans left by a crash), statfs and the operation
 * table; fs_int.h lists the other files.
 *
 * Every namespace change is one metadata batch, so a crash leaves the old or the new tree.
 * fs->lock (the inode lock, shared with the data layer and the mounted scrubber) is held for
 * each read-check-write of dentries, xattrs and inode records; it is never held while calling
 * into data functions that take a file's lock (data.h gives the order: file lock, then inode
 * lock).
 *
 * Inode numbers are the FUSE node ids (the root is 1 on both sides). Lifetime of an inode:
 * it is removed (record, stripes, inline value, xattrs, in one batch) when it has no name
 * (nlink 0), the kernel holds no lookup on it and no file handle has it open. Until then an
 * unlinked inode stays in the metadata flagged META_INODE_F_ORPHAN (and in meta's orphan
 * index), so fstat, fchmod, reads, writes and /proc/self/fd reopens keep working; when the
 * last forget or release comes, the reaper thread removes it (FS_REAP_BATCH inodes per
 * commit), and fs_new() removes the orphans a crash left, found through the index.
 *
 * Directories keep their parent's inode number in meta_inode.rdev (meta.h), so that ".."
 * is exact in readdir and rename can refuse to move a directory into its own subtree.
 */
#include "fs_int.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/statvfs.h>

#include "tessera/common.h"
#include "tessera/stripe.h"

/* ---------------------------------------------------------------- lifecycle */

/* Adds to b the removal of inode `in` and everything it owns. With the inode lock held. */
int fs_remove_inode_locked(struct fs *fs, struct meta_batch *b, const struct meta_inode *in)
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

	if (fs_lk_held(fs, ino) || data_is_open(fs->data, ino))
		return 0;
	r = meta_inode_get(fs->meta, ino, &in);
	if (r == -ENOENT)
		return 0;
	if (r < 0 || in.nlink != 0)
		return r;
	r = fs_remove_inode_locked(fs, b, &in);
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
void fs_reap(struct fs *fs, uint64_t ino)
{
	bool queued = false;

	if (fs_lk_held(fs, ino))
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
				r = fs_remove_inode_locked(fs, b, &in);
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
	if (fs_lk_grow(fs) < 0) {
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
bool fs_close_file(struct fs *fs, struct data_file *f, uint64_t ino)
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

static struct fuse_lowlevel_ops ops;
static pthread_once_t ops_once = PTHREAD_ONCE_INIT;

static void ops_build(void)
{
	ops.init = op_init;
	ops.statfs = op_statfs;
	fs_attr_ops(&ops);
	fs_ns_ops(&ops);
	fs_file_ops(&ops);
	fs_dir_ops(&ops);
	fs_xattr_ops(&ops);
}

const struct fuse_lowlevel_ops *fs_ops(void)
{
	pthread_once(&ops_once, ops_build);
	return &ops;
}

bool fs_inode_in_use(struct fs *fs, uint64_t ino)
{
	return fs_lk_held(fs, ino) || data_is_open(fs->data, ino);
}
