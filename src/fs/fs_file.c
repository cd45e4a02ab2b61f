/*
 * fs_file: open files: create, open, read, write, flush, fsync, release, fallocate and
 * lseek (SEEK_DATA, SEEK_HOLE), thin over the data layer; atime follows relatime.
 */
#include "fs_int.h"

#include <errno.h>
#include <linux/falloc.h>
#include <unistd.h>

#include "tessera/common.h"

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
			fs_close_file(fs, f, ino);
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
	int r = fs_make_node(req, parent, name, S_IFREG | (mode & 07777), 0, NULL, &in);

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
	fs_stat_of(fs, &in, &e.attr);
	if (fs_lk_ref(fs, in.ino, 1) < 0) {
		fs_close_file(fs, file_of(fi), in.ino);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (fuse_reply_create(req, &e, fi) != 0) {
		fs_close_file(fs, file_of(fi), in.ino);
		fs_forget_one(fs, in.ino, 1);
	}
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int r = open_file(fs, ino, fi, false);

	if (r < 0)
		fuse_reply_err(req, -r);
	else if (fuse_reply_open(req, fi) != 0)
		fs_close_file(fs, file_of(fi), ino);
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
	if (fs_close_file(fs, file_of(fi), ino))
		fs_reap(fs, ino);
	fuse_reply_err(req, 0);
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

void fs_file_ops(struct fuse_lowlevel_ops *ops)
{
	ops->create = op_create;
	ops->open = op_open;
	ops->read = op_read;
	ops->write = op_write;
	ops->flush = op_flush;
	ops->fsync = op_fsync;
	ops->release = op_release;
	ops->fallocate = op_fallocate;
	ops->lseek = op_lseek;
}
