/*
 * fs: FUSE low-level operations over meta (the namespace) and data (file contents).
 *
 * Every namespace change is one metadata batch, so a crash leaves the old or the new tree.
 * fs->lock (the inode lock, shared with the data layer) is held for each read-check-write of
 * dentries and inode records; it is never held while calling into data functions that take
 * a file's lock (data.h gives the order: file lock, then inode lock).
 *
 * Inode numbers are the FUSE node ids (the root is 1 on both sides). The kernel's lookup
 * counts need no bookkeeping here: inodes live in the metadata, not in memory, and an unlinked
 * inode stays (flagged orphan) while any handle has it open; it is removed at the last
 * release, or at the next mount after a crash.
 */
#define FUSE_USE_VERSION 34

#include "tessera/fs.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tessera/blockclient.h"
#include "tessera/common.h"
#include "tessera/data.h"
#include "tessera/meta.h"

#define FS_BLKSIZE (1u << 20)
#define FS_MAX_IO (1u << 20)

struct fs {
	struct meta *meta;
	struct blockclient *bc;
	struct data *data;
	pthread_mutex_t lock; /* the inode lock */
	double timeout;
};

struct fs_dir {
	pthread_mutex_t lock;
	bool have_cursor;
	off_t next_off;        /* offset the next entry after the cursor gets */
	size_t last_len;
	char last_name[META_NAME_MAX + 1];
};

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct data_file *file_of(struct fuse_file_info *fi)
{
	return (struct data_file *)(uintptr_t)fi->fh;
}

static struct timespec ts_of(uint64_t ns)
{
	return (struct timespec){ .tv_sec = (time_t)(ns / 1000000000ull),
				  .tv_nsec = (long)(ns % 1000000000ull) };
}

static uint64_t ns_of(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000000ull + (uint64_t)ts->tv_nsec;
}

static void stat_of(struct fs *fs, const struct meta_inode *in, struct stat *st)
{
	uint64_t size = in->size, mtime = in->mtime_ns, osize, omtime;

	if (S_ISREG(in->mode) && data_file_attr(fs->data, in->ino, &osize, &omtime)) {
		size = osize;
		if (omtime > mtime)
			mtime = omtime;
	}
	memset(st, 0, sizeof(*st));
	st->st_ino = in->ino;
	st->st_mode = in->mode;
	st->st_nlink = in->nlink;
	st->st_uid = in->uid;
	st->st_gid = in->gid;
	st->st_rdev = in->rdev;
	st->st_size = (off_t)size;
	st->st_blksize = FS_BLKSIZE;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
	st->st_atim = ts_of(in->atime_ns);
	st->st_mtim = ts_of(mtime);
	st->st_ctim = ts_of(in->ctime_ns > mtime ? in->ctime_ns : mtime);
}

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
	fuse_reply_entry(req, &e);
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

/* ---------------------------------------------------------------- lifecycle */

static int load_credentials(const char *meta_dir, const struct meta_superblock *sb,
			    struct blockclient_config *cfg)
{
	const char *ak = NULL, *sk = NULL;
	char path[PATH_MAX], *buf = NULL;
	int r = 0;

	if (strncmp(sb->credentials, "file:", 5) == 0) {
		const char *f = sb->credentials + 5;
		if (f[0] == '/')
			snprintf(path, sizeof(path), "%s", f);
		else
			snprintf(path, sizeof(path), "%s/%s", meta_dir, f);
		r = tfile_read_all(path, 4096, &buf, NULL);
		if (r < 0) {
			tlog_error("cannot read credentials '%s': %s", path, strerror(-r));
			return r;
		}
		char *save = NULL;
		ak = strtok_r(buf, " \t\r\n", &save);
		sk = ak ? strtok_r(NULL, " \t\r\n", &save) : NULL;
	} else {
		ak = getenv("TESSERA_ACCESS_KEY");
		sk = getenv("TESSERA_SECRET_KEY");
	}
	if (!ak || !sk || strlen(ak) >= sizeof(cfg->access_key) ||
	    strlen(sk) >= sizeof(cfg->secret_key)) {
		tlog_error("no usable access key (credentials '%s')", sb->credentials);
		r = -EINVAL;
		goto out;
	}
	snprintf(cfg->access_key, sizeof(cfg->access_key), "%s", ak);
	snprintf(cfg->secret_key, sizeof(cfg->secret_key), "%s", sk);
out:
	if (buf) {
		memset(buf, 0, strlen(buf));
		free(buf);
	}
	return r;
}

static void remove_inode_locked(struct fs *fs, struct meta_batch *b, uint64_t ino)
{
	meta_batch_inode_del(b, ino);
	if (data_release_stripes(fs->data, ino, b) < 0)
		tlog_debug("listing stripes of inode %llu failed", (unsigned long long)ino);
}

struct orphan_ctx {
	uint64_t inos[1024];
	unsigned n;
};

static int collect_orphan(void *arg, const struct meta_inode *in)
{
	struct orphan_ctx *o = arg;

	if (in->nlink == 0 && o->n < TESSERA_ARRAY_SIZE(o->inos))
		o->inos[o->n++] = in->ino;
	return 0;
}

/* Removes inodes that were unlinked while open when the daemon stopped. */
static int remove_orphans(struct fs *fs)
{
	struct orphan_ctx *o = calloc(1, sizeof(*o));
	struct meta_batch *b = NULL;
	int r;

	if (!o)
		return -ENOMEM;
	r = meta_inode_list(fs->meta, collect_orphan, o);
	if (r < 0 || o->n == 0)
		goto out;
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	for (unsigned i = 0; i < o->n; i++)
		remove_inode_locked(fs, b, o->inos[i]);
	r = meta_commit(fs->meta, b, true);
	if (r == 0) {
		tlog_info("removed %u orphan inode(s)", o->n);
		data_gc_kick(fs->data);
	}
out:
	meta_batch_free(b);
	free(o);
	return r;
}

struct fs *fs_alloc(void)
{
	struct fs *fs = calloc(1, sizeof(*fs));

	if (fs)
		pthread_mutex_init(&fs->lock, NULL);
	return fs;
}

int fs_open(struct fs *fs, const char *meta_dir, const struct fs_options *opt)
{
	struct blockclient_config bcfg;
	const struct meta_superblock *sb;
	uint16_t ids[META_MAX_SERVERS];
	const char *urls[META_MAX_SERVERS];
	int r;

	fs->timeout = opt && opt->attr_timeout_s >= 0 ? opt->attr_timeout_s : 1.0;
	r = meta_open(meta_dir, &fs->meta);
	if (r < 0) {
		if (r == -ENOENT)
			tlog_error("'%s' holds no tesserafs filesystem (run tessera-mkfs)", meta_dir);
		else if (r == -EBUSY)
			tlog_error("metadata '%s' is in use by another process", meta_dir);
		else
			tlog_error("cannot open metadata '%s': %s", meta_dir, strerror(-r));
		goto fail;
	}
	sb = meta_superblock(fs->meta);
	memset(&bcfg, 0, sizeof(bcfg));
	snprintf(bcfg.bucket, sizeof(bcfg.bucket), "%s", sb->bucket);
	snprintf(bcfg.region, sizeof(bcfg.region), "%s", sb->region);
	bcfg.request_timeout_ms = (opt && opt->request_timeout_s ? opt->request_timeout_s : 10) * 1000;
	bcfg.connect_timeout_ms = opt && opt->connect_timeout_ms ? opt->connect_timeout_ms : 2000;
	r = load_credentials(meta_dir, sb, &bcfg);
	if (r < 0)
		goto fail;
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		ids[i] = sb->servers[i].id;
		urls[i] = sb->servers[i].url;
	}
	r = blockclient_new(&bcfg, ids, urls, sb->n_servers, &fs->bc);
	memset(&bcfg, 0, sizeof(bcfg));
	if (r < 0) {
		tlog_error("cannot set up the block client: %s", strerror(-r));
		goto fail;
	}
	r = data_new(fs->meta, fs->bc, &fs->lock, opt ? &opt->data : NULL, &fs->data);
	if (r < 0) {
		tlog_error("cannot set up the data layer: %s", strerror(-r));
		goto fail;
	}
	r = remove_orphans(fs);
	if (r < 0)
		tlog_warn("orphan cleanup failed: %s", strerror(-r));
	return 0;
fail:
	data_free(fs->data);
	blockclient_free(fs->bc);
	meta_close(fs->meta);
	fs->data = NULL;
	fs->bc = NULL;
	fs->meta = NULL;
	return r;
}

void fs_free(struct fs *fs)
{
	if (!fs)
		return;
	data_free(fs->data);
	blockclient_free(fs->bc);
	meta_close(fs->meta);
	pthread_mutex_destroy(&fs->lock);
	free(fs);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* 1 MiB requests: fewer round trips through the kernel per stripe. */
	if (conn->max_write < FS_MAX_IO)
		conn->max_write = FS_MAX_IO;
	conn->max_readahead = FS_MAX_IO;
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want &= ~FUSE_CAP_SPLICE_READ;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

/* ---------------------------------------------------------------- attributes */

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

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
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

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	struct meta_batch *b = NULL;
	struct stat st;
	uint64_t now = tclock_realtime_ns();
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
		data_close(fs->data, f);
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
			data_close(fs->data, f);
		}
		if (r < 0)
			goto out;
	}

	pthread_mutex_lock(&fs->lock);
	r = meta_inode_get(fs->meta, ino, &in);
	if (r < 0)
		goto unlock;
	if (to_set & FUSE_SET_ATTR_MODE)
		in.mode = (in.mode & S_IFMT) | (attr->st_mode & 07777);
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
	else
		in.ctime_ns = now;
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto unlock;
	}
	meta_batch_inode_put(b, &in);
	r = meta_commit(fs->meta, b, false);
unlock:
	pthread_mutex_unlock(&fs->lock);
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

/* Creates a node (file, directory, device, fifo, socket) named name in parent. */
static int make_node(fuse_req_t req, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
		     struct meta_inode *ret)
{
	struct fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct meta_inode dir, in;
	struct meta_batch *b = NULL;
	uint64_t now = tclock_realtime_ns(), ino;
	int r = check_name(name);

	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
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
	in.rdev = rdev;
	in.atime_ns = in.mtime_ns = in.ctime_ns = in.btime_ns = now;
	in.generation = 1;
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
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
	pthread_mutex_unlock(&fs->lock);
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
	r = make_node(req, parent, name, mode, rdev, &in);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct meta_inode in;
	int r = make_node(req, parent, name, S_IFDIR | (mode & 07777), 0, &in);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

/* Drops one link of `in` in batch b (with the inode lock held): the inode is removed when
 * this was its last link and no handle has it open, else kept (as an orphan when nlink 0). */
static void drop_link_locked(struct fs *fs, struct meta_batch *b, struct meta_inode *in,
			     uint64_t now, bool *ret_gc)
{
	in->nlink = S_ISDIR(in->mode) ? 0 : in->nlink - 1;
	in->ctime_ns = now;
	if (in->nlink == 0 && !(S_ISREG(in->mode) && data_is_open(fs->data, in->ino))) {
		remove_inode_locked(fs, b, in->ino);
		*ret_gc = true;
	} else {
		if (in->nlink == 0)
			in->flags |= META_INODE_F_ORPHAN;
		meta_batch_inode_put(b, in);
	}
}

static int remove_entry(fuse_req_t req, uint64_t parent, const char *name, bool dir)
{
	struct fs *fs = fs_of(req);
	struct meta_inode pin, in;
	struct meta_batch *b = NULL;
	uint64_t now = tclock_realtime_ns(), ino;
	bool gc = false;
	int r = check_name(name);

	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
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
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	meta_batch_dentry_del(b, parent, name, strlen(name));
	drop_link_locked(fs, b, &in, now, &gc);
	if (dir)
		pin.nlink--;
	pin.mtime_ns = pin.ctime_ns = now;
	meta_batch_inode_put(b, &pin);
	r = meta_commit(fs->meta, b, false);
out:
	pthread_mutex_unlock(&fs->lock);
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

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct fs *fs = fs_of(req);
	struct meta_inode src, dst, op, np;
	struct meta_batch *b = NULL;
	uint64_t now = tclock_realtime_ns(), sino, dino;
	bool have_dst = false, gc = false;
	int r;

	if (flags & ~RENAME_NOREPLACE) {
		fuse_reply_err(req, EINVAL); /* RENAME_EXCHANGE and others: not yet */
		return;
	}
	r = check_name(name);
	if (r == 0)
		r = check_name(newname);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	pthread_mutex_lock(&fs->lock);
	r = get_dir_locked(fs, parent, &op);
	if (r == 0)
		r = get_dir_locked(fs, newparent, &np);
	if (r == 0)
		r = meta_dentry_get(fs->meta, parent, name, strlen(name), &sino, NULL);
	if (r == 0)
		r = meta_inode_get(fs->meta, sino, &src);
	if (r < 0)
		goto out;
	r = meta_dentry_get(fs->meta, newparent, newname, strlen(newname), &dino, NULL);
	if (r == 0) {
		have_dst = true;
		r = meta_inode_get(fs->meta, dino, &dst);
	} else if (r == -ENOENT) {
		r = 0;
	}
	if (r < 0)
		goto out;
	if (have_dst) {
		if (flags & RENAME_NOREPLACE) {
			r = -EEXIST;
			goto out;
		}
		if (dino == sino) /* two names of one inode: POSIX says do nothing */
			goto out;
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
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	meta_batch_dentry_del(b, parent, name, strlen(name));
	meta_batch_dentry_put(b, newparent, newname, strlen(newname), sino, src.mode & S_IFMT);
	if (have_dst) {
		drop_link_locked(fs, b, &dst, now, &gc);
		if (S_ISDIR(dst.mode))
			np.nlink--;
	}
	if (S_ISDIR(src.mode) && parent != newparent) {
		op.nlink--;
		np.nlink++;
	}
	op.mtime_ns = op.ctime_ns = now;
	np.mtime_ns = np.ctime_ns = now;
	if (parent == newparent) {
		np.nlink = op.nlink + (np.nlink - op.nlink); /* same inode: keep one record */
		op = np;
		meta_batch_inode_put(b, &np);
	} else {
		meta_batch_inode_put(b, &op);
		meta_batch_inode_put(b, &np);
	}
	src.ctime_ns = now;
	meta_batch_inode_put(b, &src);
	r = meta_commit(fs->meta, b, false);
out:
	pthread_mutex_unlock(&fs->lock);
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
	uint64_t now = tclock_realtime_ns(), other;
	int r = check_name(newname);

	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	pthread_mutex_lock(&fs->lock);
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
	r = meta_dentry_get(fs->meta, newparent, newname, strlen(newname), &other, NULL);
	if (r == 0) {
		r = -EEXIST;
		goto out;
	}
	if (r != -ENOENT)
		goto out;
	b = meta_batch_new(fs->meta);
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	in.nlink++;
	in.ctime_ns = now;
	dir.mtime_ns = dir.ctime_ns = now;
	meta_batch_dentry_put(b, newparent, newname, strlen(newname), ino, in.mode & S_IFMT);
	meta_batch_inode_put(b, &in);
	meta_batch_inode_put(b, &dir);
	r = meta_commit(fs->meta, b, false);
out:
	pthread_mutex_unlock(&fs->lock);
	meta_batch_free(b);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		reply_entry(req, &in);
}

/* ---------------------------------------------------------------- files */

static int open_file(struct fs *fs, uint64_t ino, struct fuse_file_info *fi)
{
	struct meta_inode in;
	struct data_file *f;
	int r;

	pthread_mutex_lock(&fs->lock);
	r = meta_inode_get(fs->meta, ino, &in);
	if (r == 0 && S_ISDIR(in.mode))
		r = -EISDIR;
	else if (r == 0 && !S_ISREG(in.mode))
		r = -EINVAL;
	if (r == 0)
		r = data_open(fs->data, ino, in.size, &f);
	pthread_mutex_unlock(&fs->lock);
	if (r < 0)
		return r;
	fi->fh = (uintptr_t)f;
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
	int r = make_node(req, parent, name, S_IFREG | (mode & 07777), 0, &in);

	if (r == 0)
		r = open_file(fs, in.ino, fi);
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
	if (fuse_reply_create(req, &e, fi) != 0)
		data_close(fs->data, file_of(fi));
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int r = open_file(fs, ino, fi);

	if (r < 0)
		fuse_reply_err(req, -r);
	else if (fuse_reply_open(req, fi) != 0)
		data_close(fs->data, file_of(fi));
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

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct read_ctx c = { .req = req };
	int r;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	r = data_read_with(file_of(fi), (uint64_t)off, size, read_reply, &c);
	if (!c.replied)
		fuse_reply_err(req, r < 0 ? -r : EIO);
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
	struct meta_inode in;

	if (data_close(fs->data, file_of(fi))) {
		/* Last handle of an unlinked file: its inode and data go now. */
		pthread_mutex_lock(&fs->lock);
		if (!data_is_open(fs->data, ino) && meta_inode_get(fs->meta, ino, &in) == 0 &&
		    in.nlink == 0) {
			struct meta_batch *b = meta_batch_new(fs->meta);
			if (b) {
				remove_inode_locked(fs, b, ino);
				if (meta_commit(fs->meta, b, false) == 0)
					data_gc_kick(fs->data);
				meta_batch_free(b);
			}
		}
		pthread_mutex_unlock(&fs->lock);
	}
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
	fi->fh = (uintptr_t)d;
	fi->cache_readdir = 0;
	if (fuse_reply_open(req, fi) != 0) {
		pthread_mutex_destroy(&d->lock);
		free(d);
	}
}

struct readdir_ctx {
	fuse_req_t req;
	struct fs_dir *d;
	char *buf;
	size_t size, pos;
	off_t off;      /* offset of the entry being added */
	uint64_t skip;  /* entries still to skip (seek to an offset without a cursor) */
	bool full;
};

static int add_entry(struct readdir_ctx *c, const char *name, size_t len, uint64_t ino,
		     uint32_t mode)
{
	struct stat st;
	char nm[META_NAME_MAX + 1];
	size_t need;

	memset(&st, 0, sizeof(st));
	st.st_ino = ino;
	st.st_mode = mode & S_IFMT;
	memcpy(nm, name, len);
	nm[len] = '\0';
	need = fuse_add_direntry(c->req, c->buf + c->pos, c->size - c->pos, nm, &st, c->off + 1);
	if (need > c->size - c->pos) {
		c->full = true;
		return 1;
	}
	c->pos += need;
	c->off++;
	if (len <= META_NAME_MAX) {
		memcpy(c->d->last_name, name, len);
		c->d->last_len = len;
		c->d->have_cursor = true;
		c->d->next_off = c->off;
	}
	return 0;
}

static int readdir_cb(void *arg, const char *name, size_t len, uint64_t ino, uint32_t mode)
{
	struct readdir_ctx *c = arg;

	if (c->skip) {
		c->skip--;
		memcpy(c->d->last_name, name, len);
		c->d->last_len = len;
		return 0;
	}
	return add_entry(c, name, len, ino, mode);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;
	struct readdir_ctx c = { .req = req, .d = d, .size = size, .off = off };
	int r = 0;

	c.buf = malloc(size ? size : 1);
	if (!c.buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_mutex_lock(&d->lock);
	/* Offsets: "." is 0 -> 1, ".." 1 -> 2, then the n-th entry (from 0) ends at 3 + n. */
	if (c.off == 0 && add_entry(&c, ".", 1, ino, S_IFDIR) != 0)
		goto reply;
	if (c.off == 1 && add_entry(&c, "..", 2, ino, S_IFDIR) != 0)
		goto reply;
	if (off == 0 || off == 1)
		d->have_cursor = false;
	if (d->have_cursor && d->next_off == c.off) {
		r = meta_dentry_list(fs->meta, ino, d->last_name, d->last_len, readdir_cb, &c);
	} else {
		/* A seek without a cursor: walk from the start. */
		d->have_cursor = false;
		c.skip = c.off >= 2 ? (uint64_t)(c.off - 2) : 0;
		r = meta_dentry_list(fs->meta, ino, NULL, 0, readdir_cb, &c);
	}
reply:
	pthread_mutex_unlock(&d->lock);
	if (r < 0 && c.pos == 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_buf(req, c.buf, c.pos);
	free(c.buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs_dir *d = (struct fs_dir *)(uintptr_t)fi->fh;

	pthread_mutex_destroy(&d->lock);
	free(d);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	fuse_reply_err(req, -meta_sync(fs_of(req)->meta));
}

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

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
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
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
};

const struct fuse_lowlevel_ops *fs_ops(void)
{
	return &ops;
}
