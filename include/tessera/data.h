/*
 * data: file contents as erasure-coded stripes.
 *
 * A file is cut into stripes of stripe_size bytes; stripe i holds bytes
 * [i * stripe_size, (i + 1) * stripe_size). Each stored stripe has a record in the metadata
 * (struct meta_stripe): its version, the server of every fragment, their crc32c. A stripe
 * without a record is a hole and reads as zeros; bytes of a stripe past its data_len read as
 * zeros too (that is how truncation works without rewriting fragments).
 *
 * Open files (struct data_file) are shared by every open handle of one inode and buffer up to
 * DATA_FILE_BUFFERS stripes each. Writes are buffered; a stripe written to its end is stored in
 * the background by a pool of worker threads while the application goes on writing the next
 * one; sequential reads prefetch the following stripes the same way. data_flush() stores every
 * dirty stripe on at least the write quorum of servers, commits the stripe maps, the file size
 * and mtime, and syncs the metadata WAL.
 *
 * Small files: stripe 0 of a file no larger than the inline threshold is kept in the metadata
 * (the inline column family) instead of on the servers.
 *
 * Thread-safety: every function may be called from any thread. Each data_file has a mutex
 * that serialises operations on that file; the open-file table has its own mutex. Inode
 * records are updated under the inode lock passed to data_new() (shared with the fs layer);
 * lock order: data_file lock, then the inode lock. Callers must not hold the inode lock when
 * calling into this module.
 */
#ifndef TESSERA_DATA_H
#define TESSERA_DATA_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct meta;
struct meta_batch;
struct blockstore;

#define DATA_FILE_BUFFERS 8

struct data_config {
	unsigned write_quorum;   /* 0 = from the superblock */
	unsigned workers;        /* background store/prefetch threads; 0 = default (8) */
	unsigned readahead;      /* stripes prefetched ahead of a sequential reader; 0 = none */
	uint32_t inline_max;     /* files up to this size live in the metadata; 0 = never;
	                            DATA_INLINE_FROM_SB = the filesystem's (tessera-mkfs) */
	uint64_t buffer_budget;  /* bytes of stripe buffers over all open files (each file may
	                            always use two); 0 = default (256 MiB) */
	unsigned hedge_ms;       /* a data fragment slower than this is read around (parity
	                            fetched instead); 0 = default (2000) */
};

#define DATA_INLINE_FROM_SB UINT32_MAX

/* The defaults used for a NULL or zeroed config. */
void data_config_defaults(struct data_config *cfg);

struct data;
struct data_file;

/* meta, bs and inode_lock are borrowed and must outlive the struct data. Starts the garbage
 * thread. Returns 0 and *ret (free with data_free()), -EINVAL, -ENOMEM. */
int data_new(struct meta *meta, struct blockstore *bs, pthread_mutex_t *inode_lock,
	     const struct data_config *cfg, struct data **ret);
/* Flushes every dirty open file (data it cannot store is logged at error level, with the
 * inode and the bytes lost), stops the garbage thread, frees. */
void data_free(struct data *d);

/* Opens (or shares) the data_file of ino, whose size is the inode's current size.
 * Returns 0 and *ret, -ENOMEM. Each successful data_open() needs one data_close(). */
int data_open(struct data *d, uint64_t ino, uint64_t size, struct data_file **ret);
/* Drops one reference; the last one stores what is buffered (data_flush()) and frees the
 * file. Returns 0 (other references remain), 1 (that was the last, everything stored), or, for
 * the last reference, the flush's -errno: the file is freed all the same, and *ret_lost (may
 * be NULL) gets the bytes of written data that were not stored and are gone. The caller says
 * so (fs logs it at error level); report errors through data_flush() first where one can. */
int data_close(struct data *d, struct data_file *f, uint64_t *ret_lost);
/* Whether ino has an open data_file. */
bool data_is_open(struct data *d, uint64_t ino);
/* The size and mtime of an open file as the application sees them (including buffered
 * writes). Returns false when ino is not open. */
bool data_file_attr(struct data *d, uint64_t ino, uint64_t *ret_size, uint64_t *ret_mtime_ns);

/* Reads up to len bytes at off (short only at end of file). Returns bytes read or -EIO. */
ssize_t data_read(struct data_file *f, uint64_t off, void *buf, size_t len);
/* Zero-copy read: calls fn once with the bytes [off, off + n) as up to `count` segments
 * pointing into the file's buffers, n being len cut at the end of the file (0 at or past it).
 * The segments are valid only during the call, which runs with the file locked (keep it
 * short: hand them to the kernel and return). Returns fn's result, or -EIO/-ENOMEM before
 * fn was called. */
struct iovec;
typedef int (*data_read_fn)(void *ctx, const struct iovec *iov, int count);
int data_read_with(struct data_file *f, uint64_t off, size_t len, data_read_fn fn, void *ctx);
/* Buffers len bytes at off (may store full stripes on the way). Returns len or -EIO,
 * -ENOSPC, -EFBIG. */
ssize_t data_write(struct data_file *f, uint64_t off, const void *buf, size_t len);
/* Stores every dirty stripe and commits the stripe maps, size and mtime, WAL synced (not
 * waiting for the journal: meta_sync() after it makes them durable on the servers).
 * Returns 0, -EIO or -ENOSPC (the dirty data stays buffered so a later flush can retry). */
int data_flush(struct data_file *f);
/* Sets the size: stripes past it are released, the tail of the last one reads as zeros.
 * Commits at once (with the inode's size, mtime and ctime). Returns 0 or -errno. */
int data_truncate(struct data_file *f, uint64_t size);

/* fallocate without KEEP_SIZE: grows the file to end when it is shorter (the new range reads
 * as zeros). No space is reserved: servers allocate on write, and a hole costs nothing.
 * Returns 0 or -errno. */
int data_allocate(struct data_file *f, uint64_t end);
/* Makes [off, off + len) read as zeros without changing the size (FALLOC_FL_PUNCH_HOLE):
 * stripes wholly inside are released (a hole costs nothing on the servers), partial ones at
 * the edges are rewritten with zeros. The range is cut at the end of the file.
 * Returns 0 or -EIO, -ENOSPC, -ENOMEM. */
int data_punch_hole(struct data_file *f, uint64_t off, uint64_t len);
/* SEEK_DATA (data = true) or SEEK_HOLE: the first offset >= off in a stripe that holds data
 * (stored, inline or buffered) or in a hole (a stripe never written or released, or the end of
 * the file), at stripe granularity. Returns the offset, or -ENXIO when off is at or past the
 * end (or no data follows), -EIO. */
int64_t data_seek(struct data_file *f, uint64_t off, bool data);

/* Wakes the garbage thread (after a commit that queued garbage). */
void data_gc_kick(struct data *d);

/* Usable capacity from the servers' /-/status (cached for a few seconds): bytes of file data
 * that fit, after the erasure-code overhead. Returns 0 or -EIO when no server answers. */
int data_statfs(struct data *d, uint64_t *ret_total, uint64_t *ret_free);

/* Asks every active server, with a signed HEAD of a key that does not exist, whether it takes
 * the filesystem's requests (blockstore_check_access()). The ids of those that refuse them go
 * to bad[] and the refusal (-EACCES, -ETIME) to why[] (at most bad_size) and their number to
 * *ret_n; servers that do not answer are not counted. Returns 0 or -ENOMEM. */
/* A counter that grows whenever a stripe is flagged degraded (stored short, or damaged on a
 * read): the healer's cue. */
uint64_t data_heal_generation(struct data *d);

int data_check_access(struct data *d, uint16_t *bad, int *why, size_t bad_size, size_t *ret_n);

#endif
