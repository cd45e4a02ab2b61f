/*
 * fs_ns: the namespace operations: mknod, mkdir, symlink, readlink, unlink, rmdir, rename
 * (with RENAME_NOREPLACE and RENAME_EXCHANGE) and link. Each is one metadata batch under the
 * inode lock; a new node inherits its directory's default ACL.
 */
#include "fs_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "tessera/common.h"

/* ---------------------------------------------------------------- namespace */

int fs_check_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0)
		return -ENOENT;
	if (len > META_NAME_MAX)
		return -ENAMETOOLONG;
	return 0;
}

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
	r = fs_xattr_read(fs, dir->ino, ACL_DEFAULT, &v, &len);
	if (r == -ENODATA) {
		in->mode &= ~(uint32_t)fuse_req_ctx(req)->umask;
		return 0;
	}
	if (r < 0)
		return r;
	if (fs_acl_count(v, len) <= 0)
		goto out; /* an empty default ACL means none; a bad one is ignored */
	if (S_ISDIR(in->mode))
		meta_batch_xattr_put(b, in->ino, ACL_DEFAULT, strlen(ACL_DEFAULT), v, len);
	r = fs_acl_create_masq(v, len, &mode);
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
int fs_make_node(fuse_req_t req, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
		 const char *target, struct meta_inode *ret)
{
	struct fs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct meta_inode dir, in;
	struct meta_batch *b = NULL;
	uint64_t now, ino;
	int r = fs_check_name(name);

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
	r = fs_make_node(req, parent, name, (mode & S_IFMT) | (mode & 07777), rdev, NULL, &in);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fs_reply_entry(req, &in);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct meta_inode in;
	int r = fs_make_node(req, parent, name, S_IFDIR | (mode & 07777), 0, NULL, &in);

	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fs_reply_entry(req, &in);
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
	r = fs_make_node(req, parent, name, S_IFLNK | 0777, 0, link, &in);
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fs_reply_entry(req, &in);
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
 * orphan when nlink is 0, removed later by fs_reap()). */
static int drop_link_locked(struct fs *fs, struct meta_batch *b, struct meta_inode *in,
			    uint64_t now, bool *ret_gc)
{
	in->nlink = S_ISDIR(in->mode) || in->nlink == 0 ? 0 : in->nlink - 1;
	in->ctime_ns = now;
	if (in->nlink == 0 && !fs_lk_held(fs, in->ino) && !data_is_open(fs->data, in->ino)) {
		*ret_gc = true;
		return fs_remove_inode_locked(fs, b, in);
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
	int r = fs_check_name(name);

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
	r = fs_check_name(name);
	if (r == 0)
		r = fs_check_name(newname);
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
	int r = fs_check_name(newname);

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
		fs_reply_entry(req, &in);
}

void fs_ns_ops(struct fuse_lowlevel_ops *ops)
{
	ops->readlink = op_readlink;
	ops->mknod = op_mknod;
	ops->mkdir = op_mkdir;
	ops->unlink = op_unlink;
	ops->rmdir = op_rmdir;
	ops->symlink = op_symlink;
	ops->rename = op_rename;
	ops->link = op_link;
}
