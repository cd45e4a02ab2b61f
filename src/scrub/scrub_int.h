/* scrub: private declarations shared by the files of src/scrub (scrub.c, scrub_verify.c,
 * scrub_repair.c, scrub_ns.c, scrub_gc.c, scrub_checkpoint.c). */
#ifndef TESSERA_SCRUB_INT_H
#define TESSERA_SCRUB_INT_H

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#include "tessera/codec.h"
#include "tessera/meta.h"
#include "tessera/placement.h"
#include "tessera/scrub.h"
#include "tessera/stripe.h"

/* One inode as the namespace walk saw it. */
struct scrub_inode {
	uint64_t ino;      /* 0 = free slot */
	uint32_t mode;
	uint32_t nlink;
	uint64_t size;
	uint32_t flags;
	uint32_t refs;     /* directory entries naming it */
	uint32_t subdirs;  /* directories: entries that are directories */
	uint64_t parent;   /* directory of its first entry, 0 = none */
	bool removed;      /* removed by the namespace repair */
	uint8_t reach;     /* directories: SCRUB_REACH_* (scrub_ns.c, step 5) */
};

struct scrub {
	struct meta *meta;
	struct blockstore *bs;
	const struct meta_superblock *sb;
	struct scrub_options opt;
	struct codec *codec;
	unsigned k, m, n;
	/* The active servers, weighted and calibrated as the data path's (retired ones are
	 * left out: their fragments count as lost and nothing is placed on them). */
	struct stripe_servers ss;

	/* inode table: open addressing, capacity a power of two */
	struct scrub_inode *inodes;
	size_t inodes_cap, inodes_len;
	bool table_ready;

	pthread_mutex_t lock; /* stats, callbacks, damaged list, pending commits */
	struct scrub_stats st;
	uint64_t progress_at_ns;

	pthread_mutex_t rate_lock; /* the token bucket */
	double rate_tokens;        /* bytes; negative: debt the next takers sleep off */
	uint64_t rate_at_ns;       /* last refill */

	atomic_bool cancel;        /* scrub_cancel() */
};

/* Calls the event callback (and counts warnings) under s->lock. */
void scrub_event(struct scrub *s, const struct scrub_event *ev);
/* A namespace finding: counts it (fixed or left) and reports it. */
void scrub_ns_event(struct scrub *s, uint64_t ino, bool fixed, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* A warning (operational, not a filesystem error). */
void scrub_warn(struct scrub *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Progress callback, rate-limited (force: always). */
void scrub_progress(struct scrub *s, const char *phase, uint64_t done, uint64_t total,
		    uint64_t bytes, bool force);

/* The daemon's inode lock around metadata read-check-writes (mounted mode; no-op otherwise). */
void scrub_meta_lock(struct scrub *s);
void scrub_meta_unlock(struct scrub *s);
bool scrub_cancelled(struct scrub *s);
/* Rate limit: accounts `bytes` of fragment I/O, sleeping as long as the bucket is in debt.
 * Returns early when the run is cancelled. */
void scrub_rate_take(struct scrub *s, uint64_t bytes);

struct scrub_inode *scrub_inode_find(struct scrub *s, uint64_t ino);
/* Adds (or returns the existing) entry. Returns NULL when out of memory. */
struct scrub_inode *scrub_inode_add(struct scrub *s, uint64_t ino);

/* The name of ino's entry in directory parent (the first one in name order). Returns 0,
 * -ENOENT, -EIO. */
int scrub_entry_name(struct scrub *s, uint64_t parent, uint64_t ino,
		     char name[META_NAME_MAX + 1]);

/* Phase 1 (scrub_ns.c): builds the inode table; checks and (unless dry_run) fixes. */
int scrub_namespace(struct scrub *s);
/* Phase 3 (scrub_gc.c). Returns 0, -ECANCELED, -errno. */
int scrub_gc(struct scrub *s);

/* Checkpoints (scrub_checkpoint.c), at opt.checkpoint. load: 0 and *ret when a checkpoint of
 * this filesystem and these options exists; -ENOENT when none (one of other options or a
 * damaged one is reported and ignored). save: 0 or -errno. remove: ignores errors. */
int scrub_checkpoint_load(struct scrub *s, struct scrub_checkpoint *ret);
int scrub_checkpoint_save(struct scrub *s, const struct scrub_checkpoint *c);
void scrub_checkpoint_remove(struct scrub *s);
/* The counters a checkpoint carries: the stripe ones of st, and the stripe part of
 * errors_fixed/errors_left. */
void scrub_checkpoint_stats(const struct scrub_stats *st, struct scrub_stats *ret);
/* Adds a checkpoint's counters to st (after the namespace phase of the resumed run). */
void scrub_checkpoint_resume(struct scrub_stats *st, const struct scrub_stats *carried);

/* ---- the stripes phase: scrub.c (setup, pool, rounds), scrub_verify.c, scrub_repair.c */

#define SCRUB_CHUNK 256
#define SCRUB_PROGRESS_NS 100000000ull
#define SCRUB_PATH_DEPTH 4096
#define SCRUB_WINDOW_NS (30ull * 1000000000ull)
#define SCRUB_RATE_BURST_NS 100000000ull

/* A stripe found damaged by the verify phase. */
struct dmg {
	uint64_t ino, stripe, version;
	uint64_t good;   /* fragments that passed the check */
	uint64_t unreach; /* fragments whose server did not answer (or refused our key) */
	uint32_t flags;
};

struct vitem {
	uint64_t ino, stripe;
	struct meta_stripe rec;
};

struct worker {
	uint8_t *buf;
	size_t buf_size;
};

/* A repaired stripe waiting for its map update (R6). */
struct pend {
	uint64_t ino, stripe, version;
	uint64_t stored;          /* fragments rebuilt and stored */
	uint16_t servers[64];     /* where (for the stored ones) */
	uint32_t crcs[64];
	bool complete;            /* every damaged fragment stored */
	bool clear_degraded;      /* the flag was seen, and every fragment is present now */
};

/* Extra state of a run, kept out of struct scrub's public-ish part. */
struct run {
	struct scrub *s;
	bool srv_down[META_MAX_SERVERS];   /* by position in the superblock's list */
	/* repair pool: damaged stripes wait in a heap, most at risk on top (dmg_cmp), and
	 * opt.jobs repair threads take them while the verify goes on */
	pthread_mutex_t rep_lock;          /* heap, n_heap, cap_heap, in_flight, rep_stop */
	pthread_cond_t rep_work;           /* a stripe was queued, or rep_stop */
	pthread_cond_t rep_idle;           /* nothing in flight */
	struct dmg *heap;
	size_t n_heap, cap_heap;
	unsigned in_flight;
	bool rep_stop;
	pthread_t rep_th[SCRUB_MAX_JOBS];
	unsigned n_rep;
	uint64_t repair_t0;                /* first stripe queued in this round, 0: none */
	pthread_mutex_t commit_lock;       /* pending, n_pending; serialises the commits */
	struct vitem *chunk;
	size_t n_chunk;
	uint64_t total_estimate, done;
	/* stripe-map updates waiting for their commit (at most SCRUB_CHUNK) */
	struct pend *pending;
	size_t n_pending;
	/* rounds and checkpoints */
	uint64_t win_stripes, win_t0;
	bool have_pos;
	uint64_t pos_ino, pos_stripe;      /* last stripe verified (whole chunks only) */
	bool ckpt;                         /* checkpoints are written */
	uint64_t created_s;
	_Atomic int fatal;
};

/* Whether r means the server could not be reached (rather than an answer about the object). */
bool scrub_transport_error(int r);

/* A server that stopped answering is marked down for the rest of the run (and not asked
 * again); scrub_server_healthy says whether it may still be used. */
void scrub_mark_down(struct run *run, uint16_t id);
bool scrub_server_healthy(struct run *run, uint16_t id);

/* A worker's scratch buffer of at least size bytes, or NULL. */
uint8_t *scrub_worker_buf(struct worker *w, size_t size);

/* Reports a stripe that cannot be rebuilt (msg says why). */
void scrub_stripe_lost(struct run *run, uint64_t ino, uint64_t stripe, uint64_t len,
			bool fixable_never, const char *msg);

/* Reports a stripe with fewer than k good fragments: lost when even the fragments on servers
 * that did not answer could not make k, else unavailable (not repaired: check again when the
 * servers are back). */
void scrub_stripe_short(struct run *run, const struct dmg *d, const struct meta_stripe *rec);

/* Whether the map of (ino, stripe) is still at `version`: in mounted mode the filesystem may
 * have rewritten or removed the stripe since it was read (a metadata error counts as
 * unchanged: the stripe is then reported as found). */
bool scrub_stripe_unchanged(struct scrub *s, uint64_t ino, uint64_t stripe, uint64_t version);

/* Counts a stripe that changed under the scrub (mounted mode). */
void scrub_count_changed(struct scrub *s);
/* Reports progress, at most every SCRUB_PROGRESS_NS unless force. */
void scrub_stripes_progress(struct run *run, bool force);
/* Verifies one stripe (item: a struct vitem), queueing it for repair when damaged. */
void scrub_verify_stripe(struct run *run, struct worker *w, void *item);

/* Queues a damaged stripe for the repair threads (from a verify worker). */
int scrub_repair_queue(struct run *run, const struct dmg *d);

/* Waits until every damaged stripe queued so far is repaired (or the run is cancelled or
 * failed), then commits the pending map updates: what was stored is committed, even when
 * cancelled. */
int scrub_repair_drain(struct run *run);

/* Starts the opt.jobs repair threads for the stripes phase; stops and joins them. */
int scrub_repair_pool_start(struct run *run);
void scrub_repair_pool_stop(struct run *run);

#endif
