/*
 * fs: the FUSE low-level operations, a thin translation of each request into meta and data
 * calls. Only this layer sees struct stat, off_t and fuse_reply_*.
 *
 * Thread-safety: runs under fuse_session_loop_mt. One mutex (the inode lock) serialises every
 * read-check-write of the namespace and of inode records; file data operations run in
 * parallel under each open file's own lock (see data.h for the lock order).
 */
#ifndef TESSERA_FS_H
#define TESSERA_FS_H

#include <stdbool.h>
#include <stdint.h>

#include <pthread.h>

struct fuse_lowlevel_ops;
struct meta;
struct data;

struct fs_options {
	double attr_timeout_s;      /* kernel attribute/entry cache; < 0 = default (1 s) */
};

struct fs;

/* The FUSE operations over an opened filesystem: meta, data and inode_lock (the lock that the
 * data layer and a mounted scrub share) are borrowed and must outlive the struct fs. Removes
 * the orphans a crash left and starts the reaper. Returns 0 and *ret (free with fs_free()),
 * -ENOMEM. */
int fs_new(struct meta *meta, struct data *data, pthread_mutex_t *inode_lock,
	   const struct fs_options *opt, struct fs **ret);
/* Stops the reaper (it removes what it has queued first) and frees; accepts NULL. The
 * borrowed handles are the caller's to close, after this. */
void fs_free(struct fs *fs);

/* The operations table; the userdata of the session must be the struct fs. */
const struct fuse_lowlevel_ops *fs_ops(void);

/* Whether ino is in use: the kernel holds a lookup on it or a file handle has it open (an
 * unlinked inode in use must stay: the mounted scrubber asks before it removes one). May be
 * called with the inode lock held. */
bool fs_inode_in_use(struct fs *fs, uint64_t ino);

#endif
