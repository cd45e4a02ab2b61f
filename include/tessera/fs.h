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

#include "tessera/data.h"

struct fuse_lowlevel_ops;

struct fs_options {
	unsigned request_timeout_s; /* per block request; 0 = default (10 s) */
	unsigned connect_timeout_ms; /* 0 = default (2000) */
	double attr_timeout_s;      /* kernel attribute/entry cache; < 0 = default (1 s) */
	unsigned lock_wait_ms;      /* how long to wait for another process (a daemon that is
	                               still exiting after its unmount, a scrub) to release the
	                               metadata; a META_DIR that is mounted is refused at once */
	struct data_config data;    /* the data layer's settings (data_config_defaults()) */
};

struct fs;

/* Allocates an unopened filesystem (no I/O), so that a FUSE session can be created with it
 * as userdata before the process detaches. Returns NULL when out of memory. */
struct fs *fs_alloc(void);
/* Opens the filesystem in meta_dir: metadata, credentials, block client, data layer, and
 * removes the orphans a crash left. Returns 0 or -errno with a message already logged. */
int fs_open(struct fs *fs, const char *meta_dir, const struct fs_options *opt);
/* Flushes and closes everything; accepts NULL and an unopened fs. */
void fs_free(struct fs *fs);

/* The operations table; the userdata of the session must be the struct fs. */
const struct fuse_lowlevel_ops *fs_ops(void);

/* For the control socket (control.h), which runs the scrubber inside the daemon: the opened
 * filesystem's metadata, block client and inode lock (borrowed, valid until fs_free()). */
struct meta *fs_meta(struct fs *fs);
struct blockclient *fs_blockclient(struct fs *fs);
pthread_mutex_t *fs_inode_lock(struct fs *fs);
/* Whether ino is in use: the kernel holds a lookup on it or a file handle has it open (an
 * unlinked inode in use must stay). May be called with the inode lock held. */
bool fs_inode_in_use(struct fs *fs, uint64_t ino);

#endif
