/*
 * data_int.h: what the files of the data module share: struct data, struct data_file, the
 * stripe buffers and jobs, and the functions one file calls in another. Not a public header:
 * the module's interface is include/tessera/data.h.
 *
 * Files: data.c (the design notes and invariants D1-D7, lifecycle, open files, the garbage
 * thread, statfs), data_store.c (fragments to stripes and back: fetch, decode, store, commit;
 * the job queue and its workers), data_cache.c (the stripe buffers: lookup, eviction,
 * loading, readahead), data_file.c (read, write, flush, truncate, allocate, punch, seek).
 */
#ifndef TESSERA_DATA_INT_H
#define TESSERA_DATA_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tessera/blockstore.h"
#include "tessera/codec.h"
#include "tessera/data.h"
#include "tessera/meta.h"
#include "tessera/stripe.h"

#define DATA_HASH 256
#define DATA_GC_BATCH 128
#define DATA_GC_PERIOD_S 30
#define DATA_STATFS_CACHE_NS 5000000000ull
#define DATA_MAX_FILE_SIZE ((uint64_t)INT64_MAX)
#define DATA_MIN_BUFFERS 2

enum sb_state { SB_FREE, SB_LOADING, SB_CLEAN, SB_DIRTY, SB_STORING };

struct sbuf {
	uint64_t idx;
	enum sb_state state;
	int error;           /* last failed store (state DIRTY), else 0 */
	unsigned pins;       /* data_read_with() is handing its bytes out: not evictable */
	size_t filled;       /* data[0, filled) is real; the rest reads as zeros and is zeroed
	                        only when touched (data_ensure_filled): a small file's buffer costs
	                        its size, not the stripe size */
	uint64_t last_use;
	uint8_t *data;       /* stripe_size bytes, or NULL until first used */
};

struct data_file {
	struct data *d;
	uint64_t ino;
	unsigned refs;           /* under d->files_lock */
	struct data_file *next;  /* hash chain, under d->files_lock */
	pthread_mutex_t lock;
	pthread_cond_t cond;     /* a buffer changed state, or pending dropped */
	_Atomic uint64_t size;
	_Atomic uint64_t mtime_ns;
	bool attr_dirty;         /* size/mtime not yet in the inode record */
	bool unsynced;           /* commits since the last WAL sync */
	unsigned pending;        /* queued or running jobs of this file */
	uint64_t tick;
	uint64_t seq_next;       /* where the next read continues a sequential run */
	struct sbuf bufs[DATA_FILE_BUFFERS];
};

enum job_kind { JOB_STORE, JOB_LOAD };

struct job {
	struct job *next;
	enum job_kind kind;
	struct data_file *f;
	struct sbuf *b;
	uint32_t data_len;  /* JOB_STORE: bytes of the stripe inside the file */
	bool inline_ok;     /* JOB_STORE: stripe 0 of a small file: keep it in the metadata */
};

struct data {
	struct meta *meta;
	struct blockstore *bs;
	pthread_mutex_t *inode_lock;
	const struct meta_superblock *sb;
	struct data_config cfg;
	struct codec *codec;
	unsigned k, m, quorum;
	uint32_t stripe_size;
	struct stripe_servers ss; /* the active servers; retired ones are never read */

	pthread_mutex_t files_lock;
	struct data_file *files[DATA_HASH];
	_Atomic uint64_t buffer_bytes;

	pthread_mutex_t queue_lock;
	pthread_cond_t queue_cond;
	struct job *queue_head, *queue_tail;
	bool queue_stop;
	unsigned n_workers;
	pthread_t workers[64];

	pthread_t gc_thread;
	bool gc_started;
	pthread_mutex_t gc_lock;
	pthread_cond_t gc_cond;
	bool gc_stop, gc_kicked;

	pthread_mutex_t statfs_lock;
	uint64_t statfs_at_ns, statfs_total, statfs_free;

	/* Degraded stripes stored: warned about at most every DATA_WARN_INTERVAL_NS. */
	_Atomic uint64_t degraded_warned_ns;
	_Atomic uint64_t degraded_unwarned;
	_Atomic uint64_t heal_gen; /* stripes flagged degraded (data_heal_generation()) */
};
#define DATA_WARN_INTERVAL_NS 10000000000ull

/* The object key of a fragment of this filesystem (proto_frag_key). */
int data_frag_key(struct data *d, char *out, size_t size, uint64_t ino, uint64_t stripe,
		  uint64_t version, unsigned index);

/* Flags a stripe whose fragment was found damaged or missing, so that the scrubber repairs it
 * first (read-repair queue). Only the version that was read is flagged. */
void data_mark_degraded(struct data *d, uint64_t ino, uint64_t stripe, uint64_t version);

/* Reads the current contents of stripe idx of ino into out (stripe_size bytes): from its
 * fragments, from the metadata when stripe 0 is inline, or nothing for a hole. *ret_filled
 * gets how much of out was written; the rest is to read as zeros. */
int data_load_stripe(struct data *d, uint64_t ino, uint64_t idx, uint8_t *out,
		     size_t *ret_filled);

/* Makes data[0, upto) real: zeros what lies past the filled part. File lock held (or the
 * buffer owned by a job). */
void data_ensure_filled(struct sbuf *b, size_t upto);

/* Commits batch b with the file's size/mtime under the inode lock. */
int data_commit_with_attr(struct data_file *f, struct meta_batch *b, uint64_t grow_to,
			  bool ctime);

/* A worker thread: runs queued stores and loads until data_free() stops the queue. */
void *data_worker_main(void *arg);

/* Queues a job for buffer b of f (file lock held; b already in its LOADING/STORING state).
 * Returns 0 or -ENOMEM. */
int data_submit(struct data_file *f, struct sbuf *b, enum job_kind kind);

/* Starts storing a DIRTY buffer in the background (file lock held). A buffer wholly past the
 * end of the file (truncated away) is just dropped. */
int data_submit_store(struct data_file *f, struct sbuf *b);

/* Waits until no job of f is queued or running and no buffer is being loaded or stored by
 * another thread (file lock held). */
void data_wait_idle(struct data_file *f);

/* The buffer of f that holds stripe idx, in any state but FREE, or NULL (file lock held). */
struct sbuf *data_find_buf(struct data_file *f, uint64_t idx);

/* Returns the buffer holding stripe idx in state CLEAN or DIRTY, loading it when `load`
 * (else it starts zeroed). Waits for busy buffers; stores dirty ones to make room. File lock
 * held (released while waiting and while loading). */
int data_get_buf(struct data_file *f, uint64_t idx, bool load, struct sbuf **ret);

/* Prefetches the stripes after idx for a sequential reader, into buffers that are free or
 * clean and not recently used (never waits). File lock held. */
void data_readahead(struct data_file *f, uint64_t idx);

#endif
