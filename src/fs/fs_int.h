/*
 * fs_int.h: what the files of the fs module share: struct fs, the constants, the small
 * conversions, and the functions one file of the module calls in another. Not a public
 * header: the module's interface is include/tessera/fs.h.
 *
 * Files: fs.c (lifecycle, the reaper, orphans, statfs, the operation table), fs_lookup.c (the
 * kernel's lookup counts), fs_acl.c (the POSIX ACL xattr codec), fs_attr.c (lookup, forget,
 * getattr, setattr), fs_ns.c (mknod, mkdir, symlink, unlink, rmdir, rename, link),
 * fs_file.c (open, read, write, fsync, release, fallocate, lseek), fs_dir.c (directory
 * handles and readdir), fs_xattr.c (extended attributes).
 */
#ifndef TESSERA_FS_INT_H
#define TESSERA_FS_INT_H

#define FUSE_USE_VERSION 34

#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tessera/data.h"
#include "tessera/fs.h"
#include "tessera/meta.h"

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

static inline struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static inline struct data_file *file_of(struct fuse_file_info *fi)
{
	return (struct data_file *)(uintptr_t)fi->fh;
}

/* Times are nanoseconds since the epoch, two's complement before 1970 (meta.h): tar and rsync
 * bring files from 1960 too. */
static inline struct timespec ts_of(uint64_t ns)
{
	int64_t t = (int64_t)ns, sec = t / 1000000000, nsec = t % 1000000000;

	if (nsec < 0) {
		sec--;
		nsec += 1000000000;
	}
	return (struct timespec){ .tv_sec = (time_t)sec, .tv_nsec = (long)nsec };
}

static inline uint64_t ns_of(const struct timespec *ts)
{
	return (uint64_t)((int64_t)ts->tv_sec * 1000000000 + (int64_t)ts->tv_nsec);
}

/* a > b for two times */
static inline bool ns_after(uint64_t a, uint64_t b)
{
	return (int64_t)a > (int64_t)b;
}

static inline uint64_t dir_parent(const struct meta_inode *in)
{
	return in->rdev ? in->rdev : META_ROOT_INO;
}

/* fs_lookup.c: the kernel's lookup counts. fs_lk_ref counts n lookups of ino (0 or
 * -ENOMEM), fs_lk_unref drops n and returns the lookups left, fs_lk_held says whether the
 * kernel holds any. fs_lk_grow sizes the table up front (0 or -ENOMEM). */
int fs_lk_grow(struct fs *fs);
int fs_lk_ref(struct fs *fs, uint64_t ino, uint64_t n);
uint64_t fs_lk_unref(struct fs *fs, uint64_t ino, uint64_t n);
bool fs_lk_held(struct fs *fs, uint64_t ino);

/* fs_acl.c: the ACL xattr value (le32 version 2, then le16 tag, le16 perm, le32 id entries).
 * fs_acl_count: the number of entries, or -EINVAL for a malformed value.
 * fs_acl_equiv_mode (posix_acl_equiv_mode): *ret_perm gets the rwx bits the ACL means for the
 * mode; 0 when the mode expresses the ACL exactly, 1 when the ACL has more, -EINVAL.
 * fs_acl_create_masq (posix_acl_create_masq): masks an inherited ACL with the requested mode
 * and the mode with the ACL; 0 (the mode alone expresses it), 1, -EINVAL.
 * fs_acl_chmod (posix_acl_chmod): the owner, mask (or group) and other entries follow mode.
 * fs_xattr_read: xattr name of ino into a new buffer (free()); 0, -ENODATA, -ENOMEM, -EIO. */
bool fs_caller_in_group(fuse_req_t req, gid_t gid);
int fs_acl_count(const uint8_t *v, size_t len);
int fs_acl_equiv_mode(const uint8_t *v, size_t len, uint32_t *ret_perm);
int fs_acl_create_masq(uint8_t *v, size_t len, uint32_t *mode_p);
void fs_acl_chmod(uint8_t *v, size_t len, uint32_t mode);
int fs_xattr_read(struct fs *fs, uint64_t ino, const char *name, uint8_t **ret,
		  size_t *ret_len);

/* fs.c: lifecycle. fs_remove_inode_locked adds to b the removal of `in` and everything it
 * owns (inode lock held). fs_reap queues ino, which may have lost its last reference, for
 * the reaper. fs_close_file drops a file reference and returns true when it was the last;
 * written data the last close could not store is logged once, at error level, with the
 * path. */
int fs_remove_inode_locked(struct fs *fs, struct meta_batch *b, const struct meta_inode *in);
void fs_reap(struct fs *fs, uint64_t ino);
bool fs_close_file(struct fs *fs, struct data_file *f, uint64_t ino);

/* fs_attr.c: fs_reply_entry replies with an entry for `in` and counts the kernel's lookup;
 * fs_forget_one drops nlookup of them; fs_stat_of fills st from `in` and the file's buffered
 * size and times. */
void fs_reply_entry(fuse_req_t req, const struct meta_inode *in);
void fs_forget_one(struct fs *fs, uint64_t ino, uint64_t nlookup);
void fs_stat_of(struct fs *fs, const struct meta_inode *in, struct stat *st);

/* fs_ns.c: fs_make_node creates a node (file, directory, device, fifo, socket, or a symlink
 * to target) named name in parent, owned by the caller; fs_check_name refuses an empty
 * (-ENOENT) or too long (-ENAMETOOLONG) name. */
int fs_make_node(fuse_req_t req, uint64_t parent, const char *name, mode_t mode, dev_t rdev,
		 const char *target, struct meta_inode *ret);
int fs_check_name(const char *name);

/* Each file's part of the operation table (fs_ops() in fs.c puts them together). */
void fs_attr_ops(struct fuse_lowlevel_ops *ops);
void fs_ns_ops(struct fuse_lowlevel_ops *ops);
void fs_file_ops(struct fuse_lowlevel_ops *ops);
void fs_dir_ops(struct fuse_lowlevel_ops *ops);
void fs_xattr_ops(struct fuse_lowlevel_ops *ops);

#endif
