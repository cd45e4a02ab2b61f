/*
 * fs_attr: lookup, forget, getattr and setattr (chmod, chown, truncate, utimes), and the
 * struct stat a reply carries. An ACL mount keeps an access ACL's mask in step with chmod.
 */
#include "fs_int.h"

#include <errno.h>
#include <stdlib.h>

#include "tessera/common.h"

/* ---------------------------------------------------------------- attributes */

void fs_stat_of(struct fs *fs, const struct meta_inode *in, struct stat *st)
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

/* Replies with an entry for `in` and counts the kernel's lookup. */
void fs_reply_entry(fuse_req_t req, const struct meta_inode *in)
{
	struct fs *fs = fs_of(req);
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = in->ino;
	e.generation = in->generation;
	e.attr_timeout = fs->timeout;
	e.entry_timeout = fs->timeout;
	fs_stat_of(fs, in, &e.attr);
	if (fs_lk_ref(fs, in->ino, 1) < 0) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (fuse_reply_entry(req, &e) != 0 && fs_lk_unref(fs, in->ino, 1) == 0)
		fs_reap(fs, in->ino);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct meta_inode in;
	uint64_t ino;
	int r = fs_check_name(name);

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
		fs_reply_entry(req, &in);
}

void fs_forget_one(struct fs *fs, uint64_t ino, uint64_t nlookup)
{
	if (fs_lk_unref(fs, ino, nlookup) == 0)
		fs_reap(fs, ino);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	fs_forget_one(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		fs_forget_one(fs_of(req), forgets[i].ino, forgets[i].nlookup);
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
	fs_stat_of(fs, &in, &st);
	fuse_reply_attr(req, &st, fs->timeout);
}

/* Keeps an access ACL in step with a new mode (chmod). With the inode lock held. */
static int acl_follow_mode_locked(struct fs *fs, struct meta_batch *b, uint64_t ino,
				  uint32_t mode)
{
	uint8_t *v = NULL;
	size_t len;
	int r = fs_xattr_read(fs, ino, ACL_ACCESS, &v, &len);

	if (r == -ENODATA)
		return 0;
	if (r < 0)
		return r;
	if (fs_acl_count(v, len) > 0) {
		fs_acl_chmod(v, len, mode);
		meta_batch_xattr_put(b, ino, ACL_ACCESS, strlen(ACL_ACCESS), v, len);
	}
	free(v);
	return 0;
}

/* Whether the caller of req is root or a member of group gid (its primary group or one of
 * its supplementary groups as the kernel reports them). */
bool fs_caller_in_group(fuse_req_t req, gid_t gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[64];
	int n;

	if (ctx->uid == 0 || ctx->gid == gid)
		return true;
	n = fuse_req_getgroups(req, (int)(sizeof(groups) / sizeof(groups[0])), groups);
	for (int i = 0; i < n && i < (int)(sizeof(groups) / sizeof(groups[0])); i++)
		if (groups[i] == gid)
			return true;
	return false;
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
		fs_close_file(fs, f, ino);
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
			fs_close_file(fs, f, ino);
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
		/* As the kernel's setattr_prepare does: an owner who is not in the file's
		 * group cannot keep S_ISGID set on it (CVE-2016-7097). */
		gid_t g = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : in.gid;
		if ((in.mode & S_ISGID) && !fs_caller_in_group(req, g))
			in.mode &= ~(uint32_t)S_ISGID;
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
	fs_stat_of(fs, &in, &st);
	fuse_reply_attr(req, &st, fs->timeout);
}

void fs_attr_ops(struct fuse_lowlevel_ops *ops)
{
	ops->lookup = op_lookup;
	ops->forget = op_forget;
	ops->forget_multi = op_forget_multi;
	ops->getattr = op_getattr;
	ops->setattr = op_setattr;
}
