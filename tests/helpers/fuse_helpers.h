/*
 * fuse_helpers.h: what the FUSE test helpers (passthrough.c, powerloss.c) do the same way over
 * a backing directory whose inodes they hold as O_PATH descriptors. Header-only (static
 * functions); include after fuse_lowlevel.h.
 */
#ifndef TESSERA_TESTS_FUSE_HELPERS_H
#define TESSERA_TESTS_FUSE_HELPERS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* /proc/self/fd path of an O_PATH descriptor, to reopen it or name it to path-only calls. */
static inline void fh_proc_path(char *buf, size_t size, int fd)
{
	snprintf(buf, size, "/proc/self/fd/%d", fd);
}

/* The mode, owner and times of a FUSE setattr on the inode behind the O_PATH descriptor fd
 * (the size is the caller's). Returns 0 or an errno. */
static inline int fh_set_attrs(int fd, const struct stat *attr, int to_set)
{
	char path[64];

	fh_proc_path(path, sizeof(path), fd);
	if ((to_set & FUSE_SET_ATTR_MODE) && chmod(path, attr->st_mode) < 0)
		return errno;
	if ((to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) &&
	    fchownat(fd, "", (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1,
		     (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1,
		     AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return errno;
	if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if (utimensat(AT_FDCWD, path, tv, 0) < 0)
			return errno;
	}
	return 0;
}

/* Replies to a readdir from the directory stream d at off, leaving out the entry named skip
 * (NULL: none). */
static inline void fh_reply_readdir(fuse_req_t req, DIR *d, size_t size, off_t off,
				    const char *skip)
{
	char *buf = malloc(size ? size : 1);
	size_t pos = 0;
	struct dirent *de;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	seekdir(d, off);
	while ((de = readdir(d))) {
		struct stat st = { .st_ino = de->d_ino, .st_mode = (mode_t)de->d_type << 12 };
		size_t need;

		if (skip && strcmp(de->d_name, skip) == 0)
			continue;
		need = fuse_add_direntry(req, buf + pos, size - pos, de->d_name, &st, de->d_off);
		if (need > size - pos)
			break;
		pos += need;
	}
	fuse_reply_buf(req, buf, pos);
	free(buf);
}

/* The connection both helpers want: 1 MiB writes, no writeback cache (every write reaches the
 * filesystem when it is made), no splice. */
static inline void fh_init_conn(struct fuse_conn_info *conn)
{
	if (conn->max_write < (1u << 20))
		conn->max_write = 1u << 20;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	conn->want &= ~FUSE_CAP_SPLICE_READ;
}

/* Replies to a lookup (or mknod, mkdir, ...) with e, or with the error err. */
static inline void fh_reply_entry(fuse_req_t req, int err, const struct fuse_entry_param *e)
{
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_entry(req, e);
}

/* A batch of forgets, each through forget_one. */
static inline void fh_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f,
				   void (*forget_one)(fuse_ino_t, uint64_t))
{
	for (size_t i = 0; i < count; i++)
		forget_one(f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

/* statfs of the backing filesystem that holds the descriptor fd. */
static inline void fh_reply_statfs(fuse_req_t req, int fd)
{
	struct statvfs sv;

	if (fstatvfs(fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

#endif
