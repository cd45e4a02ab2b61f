/* scrub: private declarations shared by scrub.c, scrub_ns.c and scrub_gc.c. */
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

#endif
