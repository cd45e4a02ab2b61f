/*
 * passthrough: a minimal FUSE low-level filesystem that mirrors a local directory. It is the
 * baseline of the benchmarks (scripts/bench/): the same kernel FUSE path as tesserafs, with
 * a local disk instead of RocksDB and block servers behind it.
 *
 *   passthrough [-o opt,...] SOURCE_DIR MOUNTPOINT      (always in the foreground)
 *
 * Options as tesserafs: the same max_write (1 MiB), readahead (read_ahead_kb=K, default 1024)
 * and cache timeouts (attr_timeout=S,
 * default 1), multi-threaded. Inodes are O_PATH descriptors kept in a table keyed by
 * (st_dev, st_ino) with the kernel's lookup count, as libfuse's passthrough_ll does.
 */
/* 3.12: fuse_session_loop_mt() takes the fuse_loop_cfg_*() object. Below 3.12 it expects the
 * old public struct and misreads this one (clone_fd on, no idle thread kept): a new thread
 * and /dev/fuse clone per request. */
#define FUSE_USE_VERSION 312

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "tessera/common.h"

#include "fuse_helpers.h"

struct pt_inode {
	struct pt_inode *next;
	int fd;          /* O_PATH */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;
};

static struct {
	pthread_mutex_t lock;
	struct pt_inode root;
	struct pt_inode *list;
	double timeout;
} pt = { .lock = PTHREAD_MUTEX_INITIALIZER, .timeout = 1.0 };

static struct pt_inode *inode_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &pt.root : (struct pt_inode *)(uintptr_t)ino;
}

static int fd_of(fuse_ino_t ino)
{
	return inode_of(ino)->fd;
}

static int do_lookup(fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	struct pt_inode *in;
	int fd;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = pt.timeout;
	e->entry_timeout = pt.timeout;
	fd = openat(fd_of(parent), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno;
	if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int err = errno;
		close(fd);
		return err;
	}
	pthread_mutex_lock(&pt.lock);
	for (in = pt.list; in; in = in->next)
		if (in->ino == e->attr.st_ino && in->dev == e->attr.st_dev)
			break;
	if (in) {
		close(fd);
	} else {
		in = calloc(1, sizeof(*in));
		if (!in) {
			pthread_mutex_unlock(&pt.lock);
			close(fd);
			return ENOMEM;
		}
		in->fd = fd;
		in->dev = e->attr.st_dev;
		in->ino = e->attr.st_ino;
		in->next = pt.list;
		pt.list = in;
	}
	in->nlookup++;
	pthread_mutex_unlock(&pt.lock);
	e->ino = (uintptr_t)in;
	return 0;
}

static void reply_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	fh_reply_entry(req, do_lookup(parent, name, &e), &e);
}

static void pt_init(void *userdata, struct fuse_conn_info *conn)
{
	fh_init_conn(conn);
	conn->max_readahead = 1u << 20;
}

static void pt_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_lookup(req, parent, name);
}

static void forget_one(fuse_ino_t ino, uint64_t n)
{
	struct pt_inode *in = inode_of(ino), **p;

	if (in == &pt.root)
		return;
	pthread_mutex_lock(&pt.lock);
	in->nlookup -= n < in->nlookup ? n : in->nlookup;
	if (in->nlookup == 0) {
		for (p = &pt.list; *p && *p != in; p = &(*p)->next)
			;
		if (*p)
			*p = in->next;
		close(in->fd);
		free(in);
	}
	pthread_mutex_unlock(&pt.lock);
}

static void pt_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n)
{
	forget_one(ino, n);
	fuse_reply_none(req);
}

static void pt_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	fh_forget_multi(req, count, f, forget_one);
}

static void pt_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	if (fstatat(fd_of(ino), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_attr(req, &st, pt.timeout);
}

static void pt_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	char path[64];
	int fd = fd_of(ino), err;

	fh_proc_path(path, sizeof(path), fd);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		int r = fi ? ftruncate((int)fi->fh, attr->st_size) : truncate(path, attr->st_size);
		if (r < 0) {
			fuse_reply_err(req, errno);
			return;
		}
	}
	if ((err = fh_set_attrs(fd, attr, to_set)))
		fuse_reply_err(req, err);
	else
		pt_getattr(req, ino, fi);
}

static void make(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	int r;

	if (S_ISDIR(mode))
		r = mkdirat(fd_of(parent), name, mode);
	else
		r = mknodat(fd_of(parent), name, mode, rdev);
	if (r < 0)
		fuse_reply_err(req, errno);
	else
		reply_lookup(req, parent, name);
}

static void pt_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make(req, parent, name, S_IFDIR | mode, 0);
}

static void pt_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	make(req, parent, name, mode, rdev);
}

static void pt_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, unlinkat(fd_of(parent), name, 0) < 0 ? errno : 0);
}

static void pt_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, unlinkat(fd_of(parent), name, AT_REMOVEDIR) < 0 ? errno : 0);
}

static void pt_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	int r = renameat2(fd_of(parent), name, fd_of(newparent), newname, flags);

	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void pt_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fuse_entry_param e;
	int fd, err;

	fd = openat(fd_of(parent), name, (fi->flags | O_CREAT) & ~O_NOFOLLOW, mode);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	err = do_lookup(parent, name, &e);
	if (err) {
		close(fd);
		fuse_reply_err(req, err);
		return;
	}
	fuse_reply_create(req, &e, fi);
}

static void pt_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char path[64];
	int fd;

	fh_proc_path(path, sizeof(path), fd_of(ino));
	fd = open(path, fi->flags & ~O_NOFOLLOW);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	fi->keep_cache = 1;
	fuse_reply_open(req, fi);
}

static void pt_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	char *buf = malloc(size ? size : 1);
	ssize_t n;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = pread((int)fi->fh, buf, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

static void pt_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	ssize_t n = pwrite((int)fi->fh, buf, size, off);

	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}

static void pt_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* close(dup()) as a local filesystem's flush: reports errors of the descriptor. */
	int r = close(dup((int)fi->fh));

	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void pt_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static void pt_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int r = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);

	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void pt_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int fd = openat(fd_of(ino), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;

	if (fd < 0 || !(d = fdopendir(fd))) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void pt_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	fh_reply_readdir(req, (DIR *)(uintptr_t)fi->fh, size, off, NULL);
}

static void pt_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	closedir((DIR *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void pt_statfs(fuse_req_t req, fuse_ino_t ino)
{
	fh_reply_statfs(req, fd_of(ino));
}

static const struct fuse_lowlevel_ops pt_ops = {
	.init = pt_init,
	.lookup = pt_lookup,
	.forget = pt_forget,
	.forget_multi = pt_forget_multi,
	.getattr = pt_getattr,
	.setattr = pt_setattr,
	.mkdir = pt_mkdir,
	.mknod = pt_mknod,
	.unlink = pt_unlink,
	.rmdir = pt_rmdir,
	.rename = pt_rename,
	.create = pt_create,
	.open = pt_open,
	.read = pt_read,
	.write = pt_write,
	.flush = pt_flush,
	.release = pt_release,
	.fsync = pt_fsync,
	.opendir = pt_opendir,
	.readdir = pt_readdir,
	.releasedir = pt_releasedir,
	.statfs = pt_statfs,
};

struct pt_cmdline {
	char *source;
	char *mountpoint;
	char *attr_timeout;
	unsigned read_ahead_kb;
};

static const struct fuse_opt pt_opts[] = {
	{ "attr_timeout=%s", offsetof(struct pt_cmdline, attr_timeout), 0 },
	{ "read_ahead_kb=%u", offsetof(struct pt_cmdline, read_ahead_kb), 0 },
	FUSE_OPT_KEY("-f", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_END
};

static int pt_opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct pt_cmdline *c = data;

	if (key != FUSE_OPT_KEY_NONOPT)
		return 1;
	if (!c->source)
		c->source = strdup(arg);
	else if (!c->mountpoint)
		c->mountpoint = strdup(arg);
	else
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct pt_cmdline c = { .read_ahead_kb = 1024 }; /* as tesserafs */
	struct fuse_session *se;
	int ret = 1;

	if (fuse_opt_parse(&args, &c, pt_opts, pt_opt_proc) == -1 || !c.source || !c.mountpoint) {
		fprintf(stderr, "usage: passthrough [-o opts] SOURCE_DIR MOUNTPOINT\n");
		return 2;
	}
	if (c.attr_timeout)
		pt.timeout = strtod(c.attr_timeout, NULL);
	pt.root.fd = open(c.source, O_PATH | O_CLOEXEC);
	if (pt.root.fd < 0) {
		fprintf(stderr, "passthrough: cannot open '%s': %s\n", c.source, strerror(errno));
		return 1;
	}
	pt.root.nlookup = 2;
	se = fuse_session_new(&args, &pt_ops, sizeof(pt_ops), NULL);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_destroy;
	if (fuse_session_mount(se, c.mountpoint) != 0)
		goto out_signals;
	if (c.read_ahead_kb)
		tmount_set_readahead(c.mountpoint, c.read_ahead_kb);
	struct fuse_loop_config *lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(lc, 16);
	fuse_loop_cfg_set_idle_threads(lc, 8);
	ret = fuse_session_loop_mt(se, lc) ? 1 : 0;
	fuse_loop_cfg_destroy(lc);
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
out:
	fuse_opt_free_args(&args);
	close(pt.root.fd);
	free(c.source);
	free(c.mountpoint);
	free(c.attr_timeout);
	return ret;
}
