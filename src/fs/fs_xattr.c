/*
 * fs_xattr: extended attributes: setxattr, getxattr, listxattr and removexattr, with the
 * POSIX ACL names (system.posix_acl_access, system.posix_acl_default) checked and kept in
 * step with the mode.
 */
#include "fs_int.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/xattr.h>

#include "tessera/common.h"

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
		r = fs_acl_equiv_mode((const uint8_t *)value, size, &perm);
		if (r < 0)
			goto unlock;
		in.mode = (in.mode & ~0777u) | perm;
		/* as chmod: an owner outside the file's group loses S_ISGID (CVE-2016-7097) */
		if ((in.mode & S_ISGID) && !fs_caller_in_group(req, in.gid))
			in.mode &= ~(uint32_t)S_ISGID;
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
		r = fs_acl_count((const uint8_t *)value, size);
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

void fs_xattr_ops(struct fuse_lowlevel_ops *ops)
{
	ops->setxattr = op_setxattr;
	ops->getxattr = op_getxattr;
	ops->listxattr = op_listxattr;
	ops->removexattr = op_removexattr;
}
