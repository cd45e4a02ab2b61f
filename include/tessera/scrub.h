/*
 * scrub: the verification and repair engine behind tessera-scrub (fsck.tesserafs).
 *
 * One run goes through these phases, in this order (doc/scrub.md explains each):
 *   1. namespace: every inode and directory entry; dangling entries, entry types, nlink
 *      counts, orphan and lost inodes, stripe maps past the file size, inline data that
 *      disagrees with the size; fixed unless dry_run.
 *   2. stripes, in rounds ("windows") of up to opt.window stripes in (inode, stripe) order:
 *      a. verify: every fragment of every stripe exists on its server with the right size and
 *         a valid header (deep: is read whole and its crc32c checked);
 *      b. repair: the round's damaged stripes, those with the fewest good fragments first (and
 *         the ones the data path flagged META_STRIPE_F_DEGRADED), are rebuilt from k good
 *         fragments; each rebuilt fragment goes to its own server when that server is healthy,
 *         else to one chosen by placement; the stripe maps are then updated in one batch per
 *         group, each only if its version did not change meanwhile;
 *      c. checkpoint (opt.checkpoint): the last (inode, stripe) done and the counts so far, so
 *         that an interrupted run resumes after it.
 *   3. gc (optional): the metadata garbage queue is drained, every server is listed and
 *      fragments of this filesystem that no stripe map references are deleted once older than
 *      the grace period.
 *
 * The engine works on a struct meta opened by the caller (it never opens the metadata itself)
 * and a struct blockclient. It does not print: problems and fixes go to the caller's event
 * callback, progress to the progress callback. Library code logs at debug level only.
 *
 * Mounted mode (the daemon runs the engine on its own metadata, control.h): opt.meta_lock is
 * the daemon's inode lock. The namespace phase runs holding it (a consistent view; namespace
 * operations wait meanwhile), every stripe-map update is a compare-and-set under it (re-read,
 * applied only when the stripe's version is the one repaired), inodes opt.in_use reports are
 * never removed as orphans, and stripes the filesystem rewrote while they were checked are
 * counted as changed, not as damaged.
 *
 * Threads: scrub_run() runs the verify and repair steps on `jobs` worker threads (several
 * stripes in flight); the callbacks are called with an internal lock held, one at a time, from
 * any of those threads (in mounted mode also with opt.meta_lock held: they must not block for
 * long). One struct scrub runs once, from one thread; scrub_cancel() may be called from any
 * thread or a signal handler.
 */
#ifndef TESSERA_SCRUB_H
#define TESSERA_SCRUB_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct meta;
struct meta_superblock;
struct blockstore;

enum scrub_event_kind {
	SCRUB_EV_FRAG_MISSING,     /* no object (404), never stored, or its server left the list */
	SCRUB_EV_FRAG_UNREACHABLE, /* its server did not answer or answered with an error */
	SCRUB_EV_FRAG_CORRUPT,     /* wrong size, bad header, wrong identity or crc32c */
	SCRUB_EV_FRAG_REBUILT,     /* rebuilt and stored on `server` (fixed) */
	SCRUB_EV_STRIPE_LOST,      /* fewer than k good fragments: file bytes [off, off+len) lost */
	SCRUB_EV_STRIPE_FAILED,    /* repairable but the repair failed (store or commit error) */
	SCRUB_EV_NAMESPACE,        /* a namespace problem (msg says which); fixed or not */
	SCRUB_EV_GC_ORPHAN,        /* an unreferenced object: deleted when fixed */
	SCRUB_EV_WARNING,          /* an operational problem (a server that cannot be listed...) */
	SCRUB_EV_NOTICE,           /* information, not a problem (resuming from a checkpoint) */
};

/* One finding. Strings are borrowed for the duration of the callback. */
struct scrub_event {
	enum scrub_event_kind kind;
	bool fixed;         /* corrected in this run */
	uint64_t ino;       /* 0 when not about an inode */
	uint64_t stripe;
	int index;          /* fragment index, -1 when not about one fragment */
	int server;         /* server id, -1 when none */
	uint64_t off, len;  /* file byte range (stripe events) */
	const char *path;   /* the file's path from the root when known ("/a/b"), else NULL */
	const char *key;    /* object key (fragment and gc events), else NULL */
	const char *msg;    /* short human-readable detail, never NULL */
};

typedef void (*scrub_event_fn)(void *ctx, const struct scrub_event *ev);
/* phase: "namespace" (done: inodes and directories), "stripes" (verify and repair; done/total
 * in stripes, total an estimate from the file sizes, done includes the stripes a resumed run
 * skipped), "gc" (objects listed); bytes: fragment bytes read and written so far in the run. */
typedef void (*scrub_progress_fn)(void *ctx, const char *phase, uint64_t done, uint64_t total,
				  uint64_t bytes);

typedef bool (*scrub_in_use_fn)(void *ctx, uint64_t ino);

struct scrub_options {
	bool dry_run;        /* report only, change nothing (-n); never writes a checkpoint */
	bool deep;           /* read every fragment whole, check its crc32c */
	bool gc;             /* drain the garbage queue, delete unreferenced objects */
	bool skip_namespace; /* do not report or fix namespace problems (the walk still runs:
	                        it gives the paths of damaged files) */
	uint64_t gc_grace_s; /* unreferenced objects younger than this are kept (default 3600
	                        when gc_grace_set is false) */
	bool gc_grace_set;
	unsigned jobs;       /* stripes in flight, default 8, at most SCRUB_MAX_JOBS */
	uint64_t rate_limit; /* fragment bytes read + written per second over all workers (a
	                        token bucket, 100 ms of burst); 0 = unlimited */
	uint64_t window;     /* stripes verified per round before their repair and a checkpoint;
	                        0 = SCRUB_WINDOW_DEFAULT (a round also ends after 30 s) */
	const char *checkpoint; /* path of the checkpoint file (borrowed), NULL = none. A run
	                        resumes from a checkpoint of the same filesystem and options
	                        (deep, gc, skip_namespace), writes one after every round and
	                        removes it when it completes. */
	bool no_resume;      /* ignore an existing checkpoint (it is replaced) */
	bool flagged_only;   /* only the stripes flagged degraded (stored short, or found
	                        damaged by a read): the healer's pass */
	pthread_mutex_t *meta_lock;    /* mounted mode (see above), NULL otherwise; borrowed */
	scrub_in_use_fn in_use;        /* mounted mode: whether an inode is open or looked up */
	void *in_use_ctx;
	scrub_event_fn on_event;       /* may be NULL */
	scrub_progress_fn on_progress; /* may be NULL; called at most every 100 ms per phase */
	void *ctx;                     /* passed to both callbacks */
};
#define SCRUB_MAX_JOBS 64

/* ---- the healer (healer.c): the daemon's background repair of flagged stripes ---- */
struct scrub_healer_config {
	struct meta *meta;             /* the daemon's; borrowed */
	struct blockstore *bs;
	pthread_mutex_t *meta_lock;    /* the inode lock (mounted mode) */
	scrub_in_use_fn in_use;
	void *in_use_ctx;
	/* Grows whenever the data path flags a stripe degraded; NULL: never looked at. */
	uint64_t (*work_gen)(void *ctx);
	void *gen_ctx;
	uint64_t rate_limit;           /* fragment bytes per second, 0 = unlimited */
	unsigned jobs;                 /* stripes in flight, default 4 */
	unsigned interval_ms;          /* how often it looks for work, default 1000 */
};
struct scrub_healer_status {
	uint64_t passes, frags_rebuilt;
	uint64_t stripes_left;         /* after the last pass: flagged, not yet repairable */
	int64_t last_pass_s;           /* wall clock, 0 = none yet */
	bool running;
};
struct scrub_healer;
/* Starts the healer thread; its first pass runs at once. 0 or -errno. */
int scrub_healer_start(const struct scrub_healer_config *cfg, struct scrub_healer **ret);
/* Cancels a running pass (what it rebuilt is committed) and stops. Accepts NULL. */
void scrub_healer_stop(struct scrub_healer *h);
void scrub_healer_status(struct scrub_healer *h, struct scrub_healer_status *ret);
#define SCRUB_WINDOW_DEFAULT 16384

/* Every counter of struct scrub_stats, in order (reports, the control protocol). */
#define SCRUB_STATS_FIELDS(X) \
	X(inodes) X(files) X(dirs) X(stripes) X(fragments) X(bytes_checked) \
	X(frags_missing) X(frags_unreachable) X(frags_corrupt) X(frags_rebuilt) X(frags_moved) \
	X(bytes_rebuilt) X(stripes_damaged) X(stripes_repaired) X(stripes_lost) \
	X(stripes_failed) X(stripes_changed) X(ns_errors) X(ns_fixed) X(garbage_drained) \
	X(gc_listed) X(gc_orphans) X(gc_deleted) X(gc_young) X(gc_foreign) X(warnings) \
	X(errors_fixed) X(errors_left) X(resumed) X(verify_ns) X(repair_ns) X(total_ns)

struct scrub_stats {
	uint64_t inodes, files, dirs;
	uint64_t stripes, fragments, bytes_checked;
	uint64_t frags_missing, frags_unreachable, frags_corrupt;
	uint64_t frags_rebuilt, frags_moved, bytes_rebuilt;
	uint64_t stripes_damaged, stripes_repaired, stripes_lost, stripes_failed;
	uint64_t stripes_changed;  /* rewritten by the filesystem while checked (mounted mode):
	                              neither damaged nor repaired, the new version replaced them */
	uint64_t ns_errors, ns_fixed;
	uint64_t garbage_drained;  /* garbage-queue entries settled */
	uint64_t gc_listed, gc_orphans, gc_deleted, gc_young, gc_foreign;
	uint64_t warnings;
	uint64_t errors_fixed, errors_left; /* damaged stripes and namespace errors */
	uint64_t resumed;          /* 1: this run resumed from a checkpoint; the stripe counters
	                              include the interrupted run's */
	uint64_t verify_ns, repair_ns, total_ns;
};

/* fsck(8) exit status bits. */
#define SCRUB_EXIT_OK 0
#define SCRUB_EXIT_FIXED 1
#define SCRUB_EXIT_LEFT 4
#define SCRUB_EXIT_OPERATIONAL 8
#define SCRUB_EXIT_USAGE 16

struct scrub;

/* meta and bs are borrowed and must outlive the struct scrub; opt is copied (its pointers are
 * borrowed). Returns 0 and *ret (free with scrub_free()), -EINVAL (bad options or superblock),
 * -ENOMEM. */
int scrub_new(struct meta *meta, struct blockstore *bs, const struct scrub_options *opt,
	      struct scrub **ret);
void scrub_free(struct scrub *s);

/* Runs every phase. *ret_stats is filled also when the run fails part-way (what was counted
 * so far). Returns 0 when every phase ran to the end (whatever it found), -ECANCELED after
 * scrub_cancel() (the checkpoint, if any, stays), or a negative errno for an operational
 * failure that stopped the run (-EIO from the metadata, -ENOMEM). */
int scrub_run(struct scrub *s, struct scrub_stats *ret_stats);

/* Asks a running scrub_run() to stop soon (after the stripes in flight; repaired stripes are
 * committed first). Async-signal-safe; any thread. */
void scrub_cancel(struct scrub *s);

/* The fsck(8) status of a run: the sum of SCRUB_EXIT_FIXED (errors corrected),
 * SCRUB_EXIT_LEFT (errors left), SCRUB_EXIT_OPERATIONAL (run_result < 0). A dry run that found
 * errors reports them as left. */
int scrub_exit_status(const struct scrub_stats *st, int run_result);

/* The checkpoint file: where an interrupted run stopped. Text, a few lines (doc/scrub.md). */
#define SCRUB_CHECKPOINT_NAME "scrub.checkpoint"
#define SCRUB_CHECKPOINT_MAX 4096
struct scrub_checkpoint {
	uint8_t fs_uuid[16];
	bool deep, gc, skip_namespace; /* the options it was taken with */
	bool stripes_done;             /* every stripe was done (gc was left) */
	uint64_t ino, stripe;          /* else: the last stripe done, in (inode, stripe) order */
	uint64_t created_s;            /* when the interrupted run started (Unix time) */
	struct scrub_stats st;         /* stripe counters so far (namespace and gc ones are 0) */
};
/* Returns the length written (< size, NUL-terminated), or -ENOSPC when size is too small. */
int scrub_checkpoint_encode(const struct scrub_checkpoint *c, char *out, size_t size);
/* Parses text (NUL-terminated). Returns 0 and *ret, -EBADMSG. Unknown counters are ignored. */
int scrub_checkpoint_decode(const char *text, struct scrub_checkpoint *ret);

/* Builds the path of ino from the root ("/dir/file") into out by walking the directory
 * entries (first link found). Returns the length, -ENOENT (not linked from the root),
 * -ENAMETOOLONG, -EIO. Uses the parent table of scrub_run()'s namespace phase: before it,
 * returns -ENOENT. */
int scrub_path(struct scrub *s, uint64_t ino, char *out, size_t size);

#endif
