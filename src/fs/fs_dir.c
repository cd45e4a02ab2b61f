/*
 * fs_dir: directory handles, readdir and readdirplus.
 *
 * Directory offsets: "." ends at 1, ".." at 2; every further entry gets a fresh offset from
 * a per-handle counter, and the handle remembers the name behind each offset it handed out
 * (up to FS_DIR_HISTORY_MAX bytes of names, then it starts over), so a readdir or seekdir
 * resumes after that name: entries added or removed meanwhile neither repeat nor hide the
 * others (the listing is in name order, a prefix scan of the dentries).
 */
#include "fs_int.h"

#include <errno.h>
#include <stdlib.h>

#include "tessera/common.h"

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
			fs_stat_of(c->fs, &in, &e.attr);
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
		if (fs_lk_ref(fs, c.refs[i], 1) < 0) {
			for (size_t j = 0; j < i; j++)
				fs_forget_one(fs, c.refs[j], 1);
			fuse_reply_err(req, ENOMEM);
			goto out;
		}
	}
	if (fuse_reply_buf(req, c.buf, c.pos) != 0) {
		for (size_t i = 0; i < c.nrefs; i++)
			fs_forget_one(fs, c.refs[i], 1);
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

void fs_dir_ops(struct fuse_lowlevel_ops *ops)
{
	ops->opendir = op_opendir;
	ops->readdir = op_readdir;
	ops->readdirplus = op_readdirplus;
	ops->releasedir = op_releasedir;
	ops->fsyncdir = op_fsyncdir;
}
