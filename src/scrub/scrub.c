/*
 * scrub: verify every fragment of every stripe, rebuild the damaged ones.
 *
 * This file runs the whole scrub (scrub_run) and holds the stripe phases; the namespace phase
 * is in scrub_ns.c, garbage collection in scrub_gc.c. The phases and their order are listed in
 * include/tessera/scrub.h and explained in doc/scrub.md.
 *
 * Threads and locks: scrub_run() runs on the caller's thread. The stripes phase goes in
 * rounds (windows) of opt.window stripes in (inode, stripe) order. Verify hands chunks of up
 * to SCRUB_CHUNK stripes to opt.jobs worker threads (started per chunk); a damaged stripe goes
 * into a heap (most at risk on top) that opt.jobs repair threads, alive for the whole phase,
 * drain meanwhile, so that verification and rebuilding overlap. At the end of a round the
 * caller waits for the heap to empty, commits the pending map updates and writes the
 * checkpoint. blockclient and the metadata reads are thread-safe. Locks: s->lock (statistics,
 * callbacks), run->rep_lock (heap, in-flight count), run->commit_lock (pending map updates;
 * serialises the commits, made by whichever thread fills the batch, or at a round's end),
 * s->rate_lock (token bucket). Order: commit_lock, then opt.meta_lock, then s->lock; rep_lock
 * and rate_lock are leaves. Metadata writes are made under opt.meta_lock when it is set
 * (mounted mode).
 *
 * Design notes: repair invariants.
 *  R1. A rebuilt fragment keeps its stripe version and therefore its key. Encoding is
 *      deterministic, so the rebuilt object (header and payload) is byte for byte the one the
 *      data path stored: its crc32c must equal the crc in the stripe map, and a mismatch stops
 *      the repair of that stripe instead of writing anything. Rewriting a key on the same
 *      server replaces the object atomically (blockd renames), so a concurrent reader sees the
 *      old (missing or corrupt, and detected as such) or the correct object, never a mix.
 *      A new version would cost rewriting all k+m fragments and a garbage round for nothing.
 *  R2. A fragment moved to another server is stored there before the stripe map names that
 *      server (map updated only after the PUT answered). A crash in between leaves an
 *      unreferenced object, which --gc collects.
 *  R3. The copy a move leaves behind on the old server is NOT put on the garbage queue: the key
 *      is the same as the live one, and a later repair could move the fragment back to that
 *      server before the queue is drained, which would then delete live data. --gc removes such
 *      copies by listing, and it checks the current stripe map at deletion time.
 *  R4. Never two fragments of one stripe on one server: a target is never a server that holds
 *      (or is about to hold) another fragment of the stripe. Zones are honoured as in the data
 *      path: at most m fragments of a stripe per zone while other zones have room.
 *  R5. Fewer than k good fragments: nothing is written; the stripe is reported lost with its
 *      file's path and byte range.
 *  R6. A stripe-map update is a compare-and-set: under opt.meta_lock the current record is read
 *      again and changed only when its version is the repaired one; only the rebuilt
 *      fragments' server, present bit and crc (and the degraded flag, when every fragment is
 *      present and the flag was seen before the repair) are written into it, so that a
 *      concurrent change of another field (a truncation shrinking data_len, a read flagging
 *      the stripe degraded again) is kept. A stripe rewritten meanwhile keeps its new version;
 *      the rebuilt objects of the old one are garbage for --gc (R2).
 *  R7. A checkpoint names the last stripe of a round whose damaged stripes were all repaired
 *      and committed (or found lost): resuming after it skips nothing that needed work. It is
 *      written atomically (tfile_write_atomic) and removed when the run completes.
 */
#include "scrub_int.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/proto.h"

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

/* ---------------------------------------------------------------- reporting */

void scrub_event(struct scrub *s, const struct scrub_event *ev)
{
	pthread_mutex_lock(&s->lock);
	if (ev->kind == SCRUB_EV_WARNING)
		s->st.warnings++;
	if (s->opt.on_event)
		s->opt.on_event(s->opt.ctx, ev);
	pthread_mutex_unlock(&s->lock);
}

void scrub_warn(struct scrub *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	tlog_debug("scrub: %s", msg);
	scrub_event(s, &(struct scrub_event){ .kind = SCRUB_EV_WARNING, .index = -1,
					     .server = -1, .msg = msg });
}

void scrub_ns_event(struct scrub *s, uint64_t ino, bool fixed, const char *fmt, ...)
{
	char msg[512], path[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	bool have_path = ino && scrub_path(s, ino, path, sizeof(path)) >= 0;
	pthread_mutex_lock(&s->lock);
	s->st.ns_errors++;
	if (fixed) {
		s->st.ns_fixed++;
		s->st.errors_fixed++;
	} else {
		s->st.errors_left++;
	}
	pthread_mutex_unlock(&s->lock);
	scrub_event(s, &(struct scrub_event){ .kind = SCRUB_EV_NAMESPACE, .fixed = fixed,
					     .ino = ino, .index = -1, .server = -1,
					     .path = have_path ? path : NULL, .msg = msg });
}

void scrub_progress(struct scrub *s, const char *phase, uint64_t done, uint64_t total,
		    uint64_t bytes, bool force)
{
	if (!s->opt.on_progress)
		return;
	uint64_t now = tclock_monotonic_ns();
	pthread_mutex_lock(&s->lock);
	if (force || now - s->progress_at_ns >= SCRUB_PROGRESS_NS) {
		s->progress_at_ns = now;
		s->opt.on_progress(s->opt.ctx, phase, done, total, bytes);
	}
	pthread_mutex_unlock(&s->lock);
}

/* ---------------------------------------------------------------- inode table */

static size_t ino_hash(uint64_t ino, size_t cap)
{
	return (size_t)(placement_seed(ino, 0x5c) & (cap - 1));
}

struct scrub_inode *scrub_inode_find(struct scrub *s, uint64_t ino)
{
	if (!s->inodes_cap || ino == 0)
		return NULL;
	for (size_t i = ino_hash(ino, s->inodes_cap);; i = (i + 1) & (s->inodes_cap - 1)) {
		if (s->inodes[i].ino == ino)
			return &s->inodes[i];
		if (s->inodes[i].ino == 0)
			return NULL;
	}
}

struct scrub_inode *scrub_inode_add(struct scrub *s, uint64_t ino)
{
	struct scrub_inode *e = scrub_inode_find(s, ino);

	if (e)
		return e;
	if ((s->inodes_len + 1) * 2 > s->inodes_cap) {
		size_t cap = s->inodes_cap ? s->inodes_cap * 2 : 1024;
		struct scrub_inode *t = calloc(cap, sizeof(*t));
		if (!t)
			return NULL;
		for (size_t i = 0; i < s->inodes_cap; i++) {
			if (!s->inodes[i].ino)
				continue;
			size_t j = ino_hash(s->inodes[i].ino, cap);
			while (t[j].ino)
				j = (j + 1) & (cap - 1);
			t[j] = s->inodes[i];
		}
		free(s->inodes);
		s->inodes = t;
		s->inodes_cap = cap;
	}
	size_t j = ino_hash(ino, s->inodes_cap);
	while (s->inodes[j].ino)
		j = (j + 1) & (s->inodes_cap - 1);
	s->inodes[j] = (struct scrub_inode){ .ino = ino };
	s->inodes_len++;
	return &s->inodes[j];
}

/* ---------------------------------------------------------------- paths */

struct name_find {
	uint64_t ino;
	char name[META_NAME_MAX + 1];
};

static int name_find_cb(void *ctx, const char *name, size_t name_len, uint64_t ino, uint32_t mode)
{
	struct name_find *f = ctx;

	(void)mode;
	if (ino != f->ino)
		return 0;
	memcpy(f->name, name, name_len);
	f->name[name_len] = '\0';
	return 1;
}

int scrub_entry_name(struct scrub *s, uint64_t parent, uint64_t ino,
		     char name[META_NAME_MAX + 1])
{
	struct name_find f = { .ino = ino };
	int r = meta_dentry_list(s->meta, parent, NULL, 0, name_find_cb, &f);

	if (r < 0)
		return r;
	if (!f.name[0])
		return -ENOENT;
	memcpy(name, f.name, strlen(f.name) + 1);
	return 0;
}

int scrub_path(struct scrub *s, uint64_t ino, char *out, size_t size)
{
	char *tmp;
	size_t pos, len;
	int r = 0;

	if (size == 0)
		return -ENAMETOOLONG;
	if (ino == META_ROOT_INO) {
		if (size < 2)
			return -ENAMETOOLONG;
		memcpy(out, "/", 2);
		return 1;
	}
	if (!s->table_ready)
		return -ENOENT;
	tmp = malloc(size);
	if (!tmp)
		return -ENOMEM;
	/* Built right to left in tmp[0..size-1]. */
	pos = size - 1;
	tmp[pos] = '\0';
	for (int depth = 0; ino != META_ROOT_INO; depth++) {
		struct scrub_inode *e = scrub_inode_find(s, ino);
		struct name_find f = { .ino = ino };
		if (!e || !e->parent || depth >= SCRUB_PATH_DEPTH) {
			r = -ENOENT;
			goto out;
		}
		r = meta_dentry_list(s->meta, e->parent, NULL, 0, name_find_cb, &f);
		if (r < 0)
			goto out;
		len = strlen(f.name);
		if (len == 0) {
			r = -ENOENT;
			goto out;
		}
		if (len + 1 > pos) {
			r = -ENAMETOOLONG;
			goto out;
		}
		pos -= len;
		memcpy(tmp + pos, f.name, len);
		tmp[--pos] = '/';
		ino = e->parent;
	}
	len = size - 1 - pos;
	memcpy(out, tmp + pos, len + 1);
	r = (int)len;
out:
	free(tmp);
	return r;
}

/* ---------------------------------------------------------------- setup */

int scrub_new(struct meta *meta, struct blockstore *bs, const struct scrub_options *opt,
	      struct scrub **ret)
{
	const struct meta_superblock *sb = meta_superblock(meta);
	struct scrub *s;
	int r;

	if (!sb || !bs || sb->k == 0 || sb->m == 0 || sb->k + sb->m > 64 || sb->n_servers == 0)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->meta = meta;
	s->bs = bs;
	s->sb = sb;
	if (opt)
		s->opt = *opt;
	if (!s->opt.jobs)
		s->opt.jobs = 8;
	if (s->opt.jobs > SCRUB_MAX_JOBS)
		s->opt.jobs = SCRUB_MAX_JOBS;
	if (!s->opt.gc_grace_set)
		s->opt.gc_grace_s = 3600;
	s->k = sb->k;
	s->m = sb->m;
	s->n = sb->k + sb->m;
	r = stripe_servers_init(&s->ss, sb, bs);
	if (r < 0) {
		free(s);
		return r;
	}
	if (!s->opt.window)
		s->opt.window = SCRUB_WINDOW_DEFAULT;
	r = codec_new(s->k, s->m, &s->codec);
	if (r < 0) {
		free(s);
		return r;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->rate_lock, NULL);
	atomic_init(&s->cancel, false);
	s->rate_at_ns = tclock_monotonic_ns();
	*ret = s;
	return 0;
}

void scrub_free(struct scrub *s)
{
	if (!s)
		return;
	codec_free(s->codec);
	free(s->inodes);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->rate_lock);
	free(s);
}

void scrub_cancel(struct scrub *s)
{
	atomic_store(&s->cancel, true);
}

bool scrub_cancelled(struct scrub *s)
{
	return atomic_load(&s->cancel);
}

void scrub_meta_lock(struct scrub *s)
{
	if (s->opt.meta_lock)
		pthread_mutex_lock(s->opt.meta_lock);
}

void scrub_meta_unlock(struct scrub *s)
{
	if (s->opt.meta_lock)
		pthread_mutex_unlock(s->opt.meta_lock);
}

/* A token bucket that may go into debt: a taker pays first and then sleeps until the bucket
 * would have refilled, so a request larger than the burst still goes through, and the long-run
 * rate over all workers is rate_limit. */
void scrub_rate_take(struct scrub *s, uint64_t bytes)
{
	const double rate = (double)s->opt.rate_limit;

	if (!s->opt.rate_limit || !bytes)
		return;
	pthread_mutex_lock(&s->rate_lock);
	uint64_t now = tclock_monotonic_ns();
	double burst = rate * (double)SCRUB_RATE_BURST_NS / 1e9;
	s->rate_tokens += rate * (double)(now - s->rate_at_ns) / 1e9;
	if (s->rate_tokens > burst)
		s->rate_tokens = burst;
	s->rate_at_ns = now;
	s->rate_tokens -= (double)bytes;
	double wait_s = s->rate_tokens < 0 ? -s->rate_tokens / rate : 0;
	pthread_mutex_unlock(&s->rate_lock);
	uint64_t until = now + (uint64_t)(wait_s * 1e9);
	while (!scrub_cancelled(s)) {
		now = tclock_monotonic_ns();
		if (now >= until)
			break;
		uint64_t ns = TESSERA_MIN(until - now, 100000000ull);
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)ns };
		nanosleep(&ts, NULL);
	}
}

static bool transport_error(int r)
{
	return r == -ECONNREFUSED || r == -ETIMEDOUT || r == -EHOSTDOWN;
}

static void mark_down(struct run *run, uint16_t id)
{
	int p = stripe_server_pos(&run->s->ss, id);

	if (p >= 0)
		run->srv_down[p] = true;
}

static bool server_healthy(struct run *run, uint16_t id)
{
	int p = stripe_server_pos(&run->s->ss, id);

	return p >= 0 && !run->srv_down[p] && blockstore_server_up(run->s->bs, id);
}

/* Asks every server for /-/status; those that do not answer are down for this run. */
static void probe_servers(struct run *run)
{
	struct scrub *s = run->s;
	struct blockstore_status st[META_MAX_SERVERS];
	uint16_t ids[META_MAX_SERVERS];
	bool refused[META_MAX_SERVERS];
	char key[PROTO_KEY_MAX];

	for (size_t i = 0; i < s->ss.n; i++)
		ids[i] = s->ss.servers[i].id;
	if (blockstore_status(s->bs, ids, s->ss.n, true, st) < 0)
		return;
	for (size_t i = 0; i < s->ss.n; i++) {
		if (st[i].result == 0)
			continue;
		run->srv_down[i] = true;
		scrub_warn(s, "server %u (%s) does not answer: %s", ids[i], s->ss.srv[i]->url,
			   strerror(-st[i].result));
	}
	/* /-/status needs no key: a signed probe finds the servers that refuse ours, before
	 * their fragments look like lost data. */
	proto_access_key(key, sizeof(key), s->sb->fs_uuid);
	if (blockstore_check_access(s->bs, ids, s->ss.n, key, refused) < 0)
		return;
	for (size_t i = 0; i < s->ss.n; i++) {
		if (run->srv_down[i] || !refused[i])
			continue;
		run->srv_down[i] = true;
		scrub_warn(s, "server %u (%s) refuses the filesystem's access key (check its "
			   "credentials): its fragments count as unreachable",
			   ids[i], s->ss.srv[i]->url);
	}
}

/* ---------------------------------------------------------------- worker pool */

struct pool {
	struct run *run;
	void *items;
	size_t n, item_size;
	_Atomic size_t next;
	void (*fn)(struct run *run, struct worker *w, void *item);
};

static void *pool_main(void *arg)
{
	struct pool *p = arg;
	struct worker w = { 0 };

	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->n || scrub_cancelled(p->run->s) || p->run->fatal)
			break;
		p->fn(p->run, &w, (char *)p->items + i * p->item_size);
	}
	free(w.buf);
	return NULL;
}

/* Runs fn on every item with up to opt.jobs threads; returns when all are done. */
static void pool_run(struct run *run, void *items, size_t n, size_t item_size,
		     void (*fn)(struct run *, struct worker *, void *))
{
	struct pool p = { .run = run, .items = items, .n = n, .item_size = item_size, .fn = fn };
	pthread_t th[SCRUB_MAX_JOBS];
	unsigned started = 0, want = (unsigned)TESSERA_MIN((size_t)run->s->opt.jobs, n);

	atomic_init(&p.next, 0);
	for (unsigned i = 1; i < want; i++)
		if (pthread_create(&th[started], NULL, pool_main, &p) == 0)
			started++;
	pool_main(&p); /* the caller works too; with no thread started it does everything */
	for (unsigned i = 0; i < started; i++)
		pthread_join(th[i], NULL);
}

static uint8_t *worker_buf(struct worker *w, size_t size)
{
	if (w->buf_size < size) {
		uint8_t *b = realloc(w->buf, size);
		if (!b)
			return NULL;
		w->buf = b;
		w->buf_size = size;
	}
	return w->buf;
}

/* ---------------------------------------------------------------- verify */

static void frag_event(struct scrub *s, enum scrub_event_kind kind, const struct vitem *it,
		       unsigned i, const char *msg)
{
	uint64_t S = s->sb->stripe_size;
	char key[PROTO_KEY_MAX];

	proto_frag_key(key, sizeof(key), s->sb->fs_uuid, it->ino, it->stripe, it->rec.version, i);
	pthread_mutex_lock(&s->lock);
	if (kind == SCRUB_EV_FRAG_MISSING)
		s->st.frags_missing++;
	else if (kind == SCRUB_EV_FRAG_UNREACHABLE)
		s->st.frags_unreachable++;
	else
		s->st.frags_corrupt++;
	pthread_mutex_unlock(&s->lock);
	scrub_event(s, &(struct scrub_event){
		.kind = kind, .ino = it->ino, .stripe = it->stripe, .index = (int)i,
		.server = it->rec.present & (1ull << i) ? it->rec.servers[i] : -1,
		.off = it->stripe * S, .len = it->rec.data_len, .key = key, .msg = msg });
}

static void stripe_lost(struct run *run, uint64_t ino, uint64_t stripe, uint64_t len,
			bool fixable_never, const char *msg)
{
	struct scrub *s = run->s;
	char path[PATH_MAX];
	bool have = scrub_path(s, ino, path, sizeof(path)) >= 0;

	pthread_mutex_lock(&s->lock);
	if (fixable_never)
		s->st.stripes_lost++;
	else
		s->st.stripes_failed++;
	s->st.errors_left++;
	pthread_mutex_unlock(&s->lock);
	scrub_event(s, &(struct scrub_event){
		.kind = fixable_never ? SCRUB_EV_STRIPE_LOST : SCRUB_EV_STRIPE_FAILED, .ino = ino,
		.stripe = stripe, .index = -1, .server = -1,
		.off = stripe * s->sb->stripe_size, .len = len, .path = have ? path : NULL,
		.msg = msg });
}

/* Reports a stripe with fewer than k good fragments: lost when even the fragments on servers
 * that did not answer could not make k, else unavailable (not repaired: check again when the
 * servers are back). */
static void stripe_short(struct run *run, const struct dmg *d, const struct meta_stripe *rec)
{
	const int good = __builtin_popcountll(d->good), away = __builtin_popcountll(d->unreach);
	char msg[160];

	if (good + away >= (int)rec->k) {
		snprintf(msg, sizeof(msg),
			 "only %d of %u fragments good and %d on servers that do not answer (or refuse "
			 "the key), %u needed: unavailable, not lost",
			 good, rec->k + rec->m, away, rec->k);
		stripe_lost(run, d->ino, d->stripe, rec->data_len, false, msg);
		return;
	}
	snprintf(msg, sizeof(msg), "only %d of %u fragments good, %u needed", good,
		 rec->k + rec->m, rec->k);
	stripe_lost(run, d->ino, d->stripe, rec->data_len, true, msg);
}

/* Whether the map of (ino, stripe) is still at `version`: in mounted mode the filesystem may
 * have rewritten or removed the stripe since it was read (a metadata error counts as
 * unchanged: the stripe is then reported as found). */
static bool stripe_unchanged(struct scrub *s, uint64_t ino, uint64_t stripe, uint64_t version)
{
	struct meta_stripe cur;
	int r = meta_stripe_get(s->meta, ino, stripe, &cur);

	if (r < 0)
		return r != -ENOENT;
	return cur.version == version;
}

static void count_changed(struct scrub *s)
{
	pthread_mutex_lock(&s->lock);
	s->st.stripes_changed++;
	pthread_mutex_unlock(&s->lock);
}

static void stripes_progress(struct run *run, bool force)
{
	struct scrub *s = run->s;

	pthread_mutex_lock(&s->lock);
	uint64_t done = run->done, total = TESSERA_MAX(run->done, run->total_estimate);
	uint64_t nb = s->st.bytes_checked + s->st.bytes_rebuilt;
	pthread_mutex_unlock(&s->lock);
	scrub_progress(s, "stripes", done, total, nb, force);
}

static int repair_queue(struct run *run, const struct dmg *d);

static void verify_stripe(struct run *run, struct worker *w, void *item)
{
	struct scrub *s = run->s;
	struct vitem *it = item;
	const struct meta_stripe *rec = &it->rec;
	const bool deep = s->opt.deep;
	struct blockclient_op ops[128];
	char keys[64][PROTO_KEY_MAX];
	int op_of[64][2];
	uint8_t hdrs[64][PROTO_FRAG_HDR_SIZE];
	enum scrub_event_kind bad_kind[64];
	const char *bad_msg[64];
	uint64_t good = 0, bad = 0, bytes = 0;
	unsigned nops = 0, n;

	if (stripe_rec_check(rec, s->codec) < 0) {
		if (stripe_unchanged(s, it->ino, it->stripe, rec->version))
			stripe_lost(run, it->ino, it->stripe, rec->data_len, true,
				    "stripe map record does not match the filesystem's geometry");
		else
			count_changed(s);
		goto done;
	}
	n = (unsigned)rec->k + rec->m;
	const size_t slot = PROTO_FRAG_HDR_SIZE + (size_t)rec->frag_len;
	uint8_t *buf = deep ? worker_buf(w, stripe_buf_size(rec)) : NULL;
	if (deep && !buf) {
		run->fatal = -ENOMEM;
		goto done;
	}
#define FINDING(i, k, m)                          \
	do {                                      \
		bad |= 1ull << (i);               \
		bad_kind[i] = (k);                \
		bad_msg[i] = (m);                 \
	} while (0)
	for (unsigned i = 0; i < n; i++) {
		op_of[i][0] = op_of[i][1] = -1;
		if (!(rec->present & (1ull << i))) {
			FINDING(i, SCRUB_EV_FRAG_MISSING, "never stored");
			continue;
		}
		if (stripe_server_pos(&s->ss, rec->servers[i]) < 0) {
			FINDING(i, SCRUB_EV_FRAG_MISSING,
				meta_server_find(s->sb, rec->servers[i]) ? "its server is retired"
									 : "its server left the list");
			continue;
		}
		proto_frag_key(keys[i], sizeof(keys[i]), s->sb->fs_uuid, it->ino, it->stripe,
			       rec->version, i);
		if (deep) {
			op_of[i][0] = (int)nops;
			ops[nops++] = (struct blockclient_op){
				.method = BC_GET, .server = rec->servers[i], .key = keys[i],
				.buf = stripe_slot(buf, rec, i), .buf_size = slot };
		} else {
			op_of[i][0] = (int)nops;
			ops[nops++] = (struct blockclient_op){
				.method = BC_HEAD, .server = rec->servers[i], .key = keys[i] };
			op_of[i][1] = (int)nops;
			ops[nops++] = (struct blockclient_op){
				.method = BC_GET, .server = rec->servers[i], .key = keys[i],
				.buf = hdrs[i], .buf_size = PROTO_FRAG_HDR_SIZE,
				.range_off = 0, .range_len = PROTO_FRAG_HDR_SIZE };
		}
	}
	if (nops) {
		scrub_rate_take(s, deep ? (uint64_t)nops * slot
					: (uint64_t)(nops / 2) * PROTO_FRAG_HDR_SIZE);
		blockstore_run(s->bs, ops, nops, false);
	}
	for (unsigned i = 0; i < n; i++) {
		if (op_of[i][0] < 0)
			continue;
		struct blockclient_op *a = &ops[op_of[i][0]];
		struct blockclient_op *b = op_of[i][1] >= 0 ? &ops[op_of[i][1]] : NULL;
		int r = a->result ? a->result : b ? b->result : 0;
		if (transport_error(r))
			mark_down(run, rec->servers[i]);
		if (r == -ENOENT) {
			FINDING(i, SCRUB_EV_FRAG_MISSING, "no such object");
			continue;
		}
		if (r == -EMSGSIZE || r == -ERANGE) {
			FINDING(i, SCRUB_EV_FRAG_CORRUPT, "wrong size");
			continue;
		}
		if (r < 0) {
			FINDING(i, SCRUB_EV_FRAG_UNREACHABLE, strerror(-r));
			continue;
		}
		if (deep) {
			bytes += a->result_len;
			if (!stripe_frag_check(s->sb->fs_uuid, stripe_slot(buf, rec, i),
					       a->result_len, true, it->ino, it->stripe, rec, i,
					       NULL)) {
				FINDING(i, SCRUB_EV_FRAG_CORRUPT,
					a->result_len != slot ? "wrong size" : "bad header or crc32c");
				continue;
			}
		} else {
			bytes += b->result_len;
			if (a->result_len != slot) {
				FINDING(i, SCRUB_EV_FRAG_CORRUPT, "wrong size");
				continue;
			}
			if (!stripe_frag_check(s->sb->fs_uuid, hdrs[i], b->result_len, false,
					       it->ino, it->stripe, rec, i, NULL)) {
				FINDING(i, SCRUB_EV_FRAG_CORRUPT, "bad header");
				continue;
			}
		}
		good |= 1ull << i;
	}
#undef FINDING
	pthread_mutex_lock(&s->lock);
	s->st.fragments += n;
	s->st.bytes_checked += bytes;
	pthread_mutex_unlock(&s->lock);
	/* A stripe the filesystem rewrote meanwhile: its old fragments may be deleted already
	 * (garbage), which is not damage. */
	if (bad && !stripe_unchanged(s, it->ino, it->stripe, rec->version)) {
		count_changed(s);
		goto done;
	}
	for (unsigned i = 0; i < n; i++)
		if (bad & (1ull << i))
			frag_event(s, bad_kind[i], it, i, bad_msg[i]);
	if (bad || (rec->flags & META_STRIPE_F_DEGRADED)) {
		uint64_t unreach = 0;
		for (unsigned i = 0; i < n; i++)
			if ((bad & (1ull << i)) && bad_kind[i] == SCRUB_EV_FRAG_UNREACHABLE)
				unreach |= 1ull << i;
		int r = repair_queue(run, &(struct dmg){ .ino = it->ino, .stripe = it->stripe,
							.version = rec->version, .good = good,
							.unreach = unreach, .flags = rec->flags });
		if (r < 0)
			run->fatal = r;
		pthread_mutex_lock(&s->lock);
		s->st.stripes_damaged++;
		pthread_mutex_unlock(&s->lock);
	}
done:
	pthread_mutex_lock(&s->lock);
	s->st.stripes++;
	run->done++;
	pthread_mutex_unlock(&s->lock);
	stripes_progress(run, false);
}

/* ---------------------------------------------------------------- repair */

/* Chooses a server for a fragment that must move, as a write would place it (R4): by
 * placement among the healthy servers, holding nothing of this stripe (used[]), zone-limited
 * to m fragments while possible. Returns the id or -1. */
static int choose_target(struct run *run, uint64_t ino, uint64_t stripe, const uint16_t *used,
			 unsigned n_used)
{
	struct scrub *s = run->s;
	bool up[META_MAX_SERVERS];
	uint16_t id;

	for (size_t i = 0; i < s->ss.n; i++)
		up[i] = server_healthy(run, s->ss.servers[i].id);
	return stripe_choose(&s->ss, s->bs, up, ino, stripe, used, n_used, 1, &id) == 1 ? id : -1;
}

static void pend_add(struct run *run, const struct pend *p);

static void repair_stripe(struct run *run, struct worker *w, void *item)
{
	struct scrub *s = run->s;
	struct dmg *d = item;
	struct meta_stripe rec;
	struct pend p;
	struct blockclient_op ops[64];
	char keys[64][PROTO_KEY_MAX];
	unsigned idx_of[64], nops, n;
	uint16_t used[64];
	unsigned n_used = 0;
	uint64_t fgood = 0, fbad = 0, rebuild, stored = 0, moved = 0, bytes = 0;
	struct proto_frag_hdr h;
	char msg[160];
	int r;

	r = meta_stripe_get(s->meta, d->ino, d->stripe, &rec);
	if (r == -ENOENT || (r == 0 && rec.version != d->version)) {
		count_changed(s); /* rewritten or removed meanwhile: nothing left to repair */
		goto done;
	}
	if (r < 0) {
		run->fatal = r;
		goto done;
	}
	n = (unsigned)rec.k + rec.m;
	uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
	const size_t slot = PROTO_FRAG_HDR_SIZE + (size_t)rec.frag_len;
	uint8_t *buf = worker_buf(w, stripe_buf_size(&rec));
	if (!buf) {
		run->fatal = -ENOMEM;
		goto done;
	}
	if (__builtin_popcountll(d->good) < (int)rec.k) {
		stripe_short(run, d, &rec);
		goto done;
	}
	scrub_rate_take(s, (uint64_t)rec.k * slot);
	r = stripe_fetch(s->bs, s->codec, s->sb->fs_uuid, d->ino, d->stripe, &rec,
			 all & ~d->good, all, buf, &fgood, &fbad);
	if (r == -EIO) {
		if (!stripe_unchanged(s, d->ino, d->stripe, rec.version)) {
			count_changed(s);
			goto done;
		}
		snprintf(msg, sizeof(msg), "fewer than %u of %u fragments readable", rec.k, n);
		stripe_lost(run, d->ino, d->stripe, rec.data_len, true, msg);
		goto done;
	}
	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot read the stripe: %s", strerror(-r));
		stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
		goto done;
	}
	unsigned fetched = (unsigned)__builtin_popcountll(fgood | fbad);
	if (fetched > rec.k)
		scrub_rate_take(s, (uint64_t)(fetched - rec.k) * slot);
	pthread_mutex_lock(&s->lock);
	s->st.bytes_checked += (uint64_t)fetched * slot;
	pthread_mutex_unlock(&s->lock);
	rebuild = (all & ~d->good) | fbad;
	/* The header's stripe length as the data path wrote it (truncation may since have
	 * shrunk data_len in the map, not in the fragments). */
	unsigned any = (unsigned)__builtin_ctzll(fgood);
	if (proto_frag_hdr_decode(stripe_slot(buf, &rec, any), PROTO_FRAG_HDR_SIZE, &h) < 0) {
		stripe_lost(run, d->ino, d->stripe, rec.data_len, false, "internal: bad header");
		goto done;
	}
	memset(&p, 0, sizeof(p));
	p.ino = d->ino;
	p.stripe = d->stripe;
	p.version = rec.version;
	for (unsigned i = 0; i < n; i++)
		if ((all & ~rebuild) & (1ull << i) && (rec.present & (1ull << i)))
			used[n_used++] = rec.servers[i];

	/* Seal every fragment to rebuild (R1). */
	for (unsigned i = 0; i < n; i++) {
		if (!(rebuild & (1ull << i)))
			continue;
		uint32_t crc = stripe_frag_seal(stripe_slot(buf, &rec, i), s->sb->fs_uuid, d->ino,
						d->stripe, rec.version, i, rec.k, rec.m,
						rec.frag_len, h.stripe_len);
		if ((rec.present & (1ull << i)) && crc != rec.crcs[i]) {
			snprintf(msg, sizeof(msg), "rebuilt fragment %u has crc32c %08x, the map says "
				 "%08x: not written", i, crc, rec.crcs[i]);
			stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
			goto done;
		}
		p.crcs[i] = crc;
	}

	/* Attempt 0: each fragment to its own server when healthy; attempt 1: moved (R2, R4). */
	uint64_t todo = rebuild;
	for (int attempt = 0; attempt < 2 && todo; attempt++) {
		uint16_t target[64];
		nops = 0;
		for (unsigned i = 0; i < n; i++) {
			if (!(todo & (1ull << i)))
				continue;
			int t = -1;
			uint16_t cur = rec.servers[i];
			bool cur_used = false;
			for (unsigned u = 0; u < n_used; u++)
				cur_used |= used[u] == cur;
			if (attempt == 0 && (rec.present & (1ull << i)) && !cur_used &&
			    server_healthy(run, cur))
				t = cur;
			else
				t = choose_target(run, d->ino, d->stripe, used, n_used);
			if (t < 0)
				continue;
			target[i] = (uint16_t)t;
			used[n_used++] = (uint16_t)t; /* reserved while the PUT runs */
			proto_frag_key(keys[nops], sizeof(keys[nops]), s->sb->fs_uuid, d->ino,
				       d->stripe, rec.version, i);
			ops[nops] = (struct blockclient_op){
				.method = BC_PUT, .server = (uint16_t)t, .key = keys[nops],
				.body = stripe_slot(buf, &rec, i), .body_len = slot };
			idx_of[nops++] = i;
		}
		if (nops == 0)
			break;
		if (s->opt.dry_run)
			break;
		scrub_rate_take(s, (uint64_t)nops * slot);
		blockstore_run(s->bs, ops, nops, false);
		for (unsigned j = 0; j < nops; j++) {
			unsigned i = idx_of[j] & 63; /* < n <= 64 */
			if (ops[j].result != 0) {
				if (transport_error(ops[j].result) || ops[j].result == -ENOSPC)
					mark_down(run, ops[j].server);
				/* release the reservation */
				for (unsigned u = 0; u < n_used; u++) {
					if (used[u] == ops[j].server) {
						used[u] = used[--n_used];
						break;
					}
				}
				continue;
			}
			todo &= ~(1ull << i);
			stored |= 1ull << i;
			if (!(rec.present & (1ull << i)) || target[i] != rec.servers[i])
				moved |= 1ull << i;
			p.servers[i] = target[i];
			bytes += slot;
			snprintf(msg, sizeof(msg), "%s server %u",
				 moved & (1ull << i) ? "moved to" : "rewritten on", target[i]);
			scrub_event(s, &(struct scrub_event){
				.kind = SCRUB_EV_FRAG_REBUILT, .fixed = true, .ino = d->ino,
				.stripe = d->stripe, .index = (int)i, .server = target[i],
				.off = d->stripe * s->sb->stripe_size, .len = rec.data_len,
				.key = ops[j].key, .msg = msg });
		}
	}
	p.stored = stored;
	p.complete = !todo;
	p.clear_degraded = (rec.flags & META_STRIPE_F_DEGRADED) && !todo;
	pthread_mutex_lock(&s->lock);
	s->st.frags_rebuilt += (uint64_t)__builtin_popcountll(stored);
	s->st.frags_moved += (uint64_t)__builtin_popcountll(moved);
	s->st.bytes_rebuilt += bytes;
	pthread_mutex_unlock(&s->lock);
	if (stored || p.clear_degraded)
		pend_add(run, &p);
	if (todo) {
		snprintf(msg, sizeof(msg), "%d fragment(s) could not be stored (no healthy server "
			 "free for them)", __builtin_popcountll(todo));
		stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
	}
done:
	stripes_progress(run, false);
}

/* Commits the pending stripe-map updates in one synced batch, each one a compare-and-set on
 * the stripe's version (R6). With commit_lock held. */
static int repair_commit(struct run *run)
{
	struct scrub *s = run->s;
	struct meta_batch *b;
	size_t puts = 0;
	int r = 0;

	if (run->n_pending == 0)
		return 0;
	b = meta_batch_new(s->meta);
	if (!b)
		return -ENOMEM;
	scrub_meta_lock(s);
	for (size_t j = 0; j < run->n_pending; j++) {
		struct pend *p = &run->pending[j];
		struct meta_stripe cur;
		r = meta_stripe_get(s->meta, p->ino, p->stripe, &cur);
		if (r == -ENOENT || (r == 0 && cur.version != p->version)) {
			r = 0;
			p->version = 0; /* skipped: the filesystem rewrote or removed it */
			continue;
		}
		if (r < 0)
			break;
		unsigned n = (unsigned)cur.k + cur.m;
		uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
		for (unsigned i = 0; i < n; i++) {
			if (!(p->stored & (1ull << i)))
				continue;
			cur.servers[i] = p->servers[i];
			cur.crcs[i] = p->crcs[i];
			cur.present |= 1ull << i;
		}
		if (p->clear_degraded && cur.present == all)
			cur.flags &= ~META_STRIPE_F_DEGRADED;
		meta_batch_stripe_put(b, p->ino, p->stripe, &cur);
		puts++;
	}
	if (r == 0 && puts)
		r = meta_commit(s->meta, b, true);
	scrub_meta_unlock(s);
	meta_batch_free(b);
	pthread_mutex_lock(&s->lock);
	for (size_t j = 0; j < run->n_pending; j++) {
		struct pend *p = &run->pending[j];
		if (p->version == 0) {
			s->st.stripes_changed++;
		} else if (r < 0) {
			s->st.stripes_failed++;
			s->st.errors_left++;
		} else if (p->complete) {
			s->st.stripes_repaired++;
			s->st.errors_fixed++;
		}
	}
	pthread_mutex_unlock(&s->lock);
	if (r < 0)
		scrub_warn(s, "cannot commit %zu repaired stripe maps: %s", run->n_pending,
			   strerror(-r));
	run->n_pending = 0;
	return r;
}

static int dmg_cmp(const void *a, const void *b)
{
	const struct dmg *x = a, *y = b;
	int gx = __builtin_popcountll(x->good), gy = __builtin_popcountll(y->good);

	if (gx != gy)
		return gx < gy ? -1 : 1;
	bool dx = x->flags & META_STRIPE_F_DEGRADED, dy = y->flags & META_STRIPE_F_DEGRADED;
	if (dx != dy)
		return dx ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return x->stripe < y->stripe ? -1 : x->stripe > y->stripe;
}

/* Adds a repaired stripe's map update; commits the batch first when it is full. */
static void pend_add(struct run *run, const struct pend *p)
{
	pthread_mutex_lock(&run->commit_lock);
	if (run->n_pending == SCRUB_CHUNK) {
		int r = repair_commit(run);
		if (r < 0)
			run->fatal = r;
	}
	run->pending[run->n_pending++] = *p;
	pthread_mutex_unlock(&run->commit_lock);
}

/* ---- the heap of damaged stripes (with rep_lock held) */

static void heap_swap(struct dmg *a, struct dmg *b)
{
	struct dmg t = *a;

	*a = *b;
	*b = t;
}

static int heap_push(struct run *run, const struct dmg *d)
{
	struct dmg *h = tgrow(run->heap, &run->cap_heap, run->n_heap + 1, sizeof(*h), 256);
	if (!h)
		return -ENOMEM;
	run->heap = h;
	size_t i = run->n_heap++;
	run->heap[i] = *d;
	while (i > 0 && dmg_cmp(&run->heap[i], &run->heap[(i - 1) / 2]) < 0) {
		heap_swap(&run->heap[i], &run->heap[(i - 1) / 2]);
		i = (i - 1) / 2;
	}
	return 0;
}

static struct dmg heap_pop(struct run *run)
{
	struct dmg top = run->heap[0];
	size_t i = 0, n = --run->n_heap;

	run->heap[0] = run->heap[n];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < n && dmg_cmp(&run->heap[l], &run->heap[m]) < 0)
			m = l;
		if (r < n && dmg_cmp(&run->heap[r], &run->heap[m]) < 0)
			m = r;
		if (m == i)
			break;
		heap_swap(&run->heap[i], &run->heap[m]);
		i = m;
	}
	return top;
}

/* Queues a damaged stripe for the repair threads (from a verify worker). */
static int repair_queue(struct run *run, const struct dmg *d)
{
	int r;

	pthread_mutex_lock(&run->rep_lock);
	r = heap_push(run, d);
	if (r == 0 && !run->repair_t0)
		run->repair_t0 = tclock_monotonic_ns();
	pthread_cond_signal(&run->rep_work);
	pthread_mutex_unlock(&run->rep_lock);
	return r;
}

static void *repair_main(void *arg)
{
	struct run *run = arg;
	struct worker w = { 0 };

	pthread_mutex_lock(&run->rep_lock);
	for (;;) {
		while (!run->rep_stop &&
		       (run->n_heap == 0 || scrub_cancelled(run->s) || run->fatal)) {
			if (run->in_flight == 0)
				pthread_cond_broadcast(&run->rep_idle);
			pthread_cond_wait(&run->rep_work, &run->rep_lock);
		}
		if (run->rep_stop)
			break;
		struct dmg d = heap_pop(run);
		run->in_flight++;
		pthread_mutex_unlock(&run->rep_lock);
		repair_stripe(run, &w, &d);
		pthread_mutex_lock(&run->rep_lock);
		run->in_flight--;
		if (run->in_flight == 0 && run->n_heap == 0)
			pthread_cond_broadcast(&run->rep_idle);
	}
	pthread_mutex_unlock(&run->rep_lock);
	free(w.buf);
	return NULL;
}

/* A dry run repairs nothing: what a repair would find lost is reported, the rest counted as
 * left. */
static void repair_dry(struct run *run)
{
	struct scrub *s = run->s;

	while (run->n_heap) {
		struct dmg d = heap_pop(run);
		struct meta_stripe rec;
		if (meta_stripe_get(s->meta, d.ino, d.stripe, &rec) < 0)
			continue;
		if (__builtin_popcountll(d.good) < (int)rec.k) {
			stripe_short(run, &d, &rec);
		} else {
			pthread_mutex_lock(&s->lock);
			s->st.errors_left++;
			pthread_mutex_unlock(&s->lock);
		}
	}
}

/* Waits until every damaged stripe queued so far is repaired (or the run is cancelled or
 * failed), then commits the pending map updates: what was stored is committed, even when
 * cancelled. */
static int repair_drain(struct run *run)
{
	struct scrub *s = run->s;
	int r;

	if (s->opt.dry_run)
		repair_dry(run); /* no repair threads, verify workers joined: the heap is ours */
	pthread_mutex_lock(&run->rep_lock);
	if (!s->opt.dry_run) {
		while (run->in_flight || (run->n_heap && !scrub_cancelled(s) && !run->fatal)) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_nsec += 100000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			pthread_cond_timedwait(&run->rep_idle, &run->rep_lock, &until);
		}
	}
	uint64_t t0 = run->repair_t0;
	run->repair_t0 = 0;
	pthread_mutex_unlock(&run->rep_lock);
	pthread_mutex_lock(&run->commit_lock);
	r = repair_commit(run);
	pthread_mutex_unlock(&run->commit_lock);
	if (t0)
		s->st.repair_ns += tclock_monotonic_ns() - t0;
	if (r == 0)
		r = run->fatal;
	if (r == 0 && scrub_cancelled(s))
		r = -ECANCELED;
	stripes_progress(run, false);
	return r;
}

static int repair_pool_start(struct run *run)
{
	if (run->s->opt.dry_run)
		return 0;
	for (unsigned i = 0; i < run->s->opt.jobs; i++) {
		if (pthread_create(&run->rep_th[run->n_rep], NULL, repair_main, run) != 0)
			break;
		run->n_rep++;
	}
	return run->n_rep ? 0 : -EAGAIN;
}

static void repair_pool_stop(struct run *run)
{
	pthread_mutex_lock(&run->rep_lock);
	run->rep_stop = true;
	pthread_cond_broadcast(&run->rep_work);
	pthread_mutex_unlock(&run->rep_lock);
	for (unsigned i = 0; i < run->n_rep; i++)
		pthread_join(run->rep_th[i], NULL);
	run->n_rep = 0;
}

/* ---------------------------------------------------------------- rounds and checkpoints */

static void checkpoint_write(struct run *run, bool stripes_done)
{
	struct scrub *s = run->s;
	struct scrub_checkpoint c = { .deep = s->opt.deep, .gc = s->opt.gc,
				      .skip_namespace = s->opt.skip_namespace,
				      .stripes_done = stripes_done, .ino = run->pos_ino,
				      .stripe = run->pos_stripe, .created_s = run->created_s };

	if (!run->ckpt || (!stripes_done && !run->have_pos))
		return;
	memcpy(c.fs_uuid, s->sb->fs_uuid, 16);
	pthread_mutex_lock(&s->lock);
	scrub_checkpoint_stats(&s->st, &c.st);
	pthread_mutex_unlock(&s->lock);
	int r = scrub_checkpoint_save(s, &c);
	if (r < 0) {
		scrub_warn(s, "cannot write the checkpoint '%s': %s (an interrupted run will start "
			   "over)", s->opt.checkpoint, strerror(-r));
		run->ckpt = false;
	}
}

/* Ends a round: repairs its damaged stripes, then records the checkpoint (R7). */
static int end_round(struct run *run)
{
	int r = repair_drain(run);

	if (r < 0)
		return r;
	if (scrub_cancelled(run->s))
		return -ECANCELED;
	checkpoint_write(run, false);
	run->win_stripes = 0;
	run->win_t0 = tclock_monotonic_ns();
	return 0;
}

static void verify_flush(struct run *run)
{
	struct scrub *s = run->s;
	uint64_t t0 = tclock_monotonic_ns();

	if (run->n_chunk == 0)
		return;
	pool_run(run, run->chunk, run->n_chunk, sizeof(struct vitem), verify_stripe);
	s->st.verify_ns += tclock_monotonic_ns() - t0;
	if (!scrub_cancelled(s) && !run->fatal) {
		/* the whole chunk was verified: the position may move past it */
		run->have_pos = true;
		run->pos_ino = run->chunk[run->n_chunk - 1].ino;
		run->pos_stripe = run->chunk[run->n_chunk - 1].stripe;
		run->win_stripes += run->n_chunk;
	}
	run->n_chunk = 0;
}

struct list_ctx {
	struct run *run;
	uint64_t ino;
};

static int verify_collect(void *ctx, uint64_t stripe, const struct meta_stripe *rec)
{
	struct list_ctx *l = ctx;
	struct run *run = l->run;
	struct scrub *s = run->s;
	size_t chunk = (size_t)TESSERA_MIN((uint64_t)SCRUB_CHUNK, s->opt.window);

	run->chunk[run->n_chunk++] = (struct vitem){ .ino = l->ino, .stripe = stripe, .rec = *rec };
	if (run->n_chunk >= chunk) {
		verify_flush(run);
		if (run->fatal)
			return run->fatal;
		if (scrub_cancelled(s))
			return -ECANCELED;
		if (run->win_stripes >= s->opt.window ||
		    tclock_monotonic_ns() - run->win_t0 >= SCRUB_WINDOW_NS) {
			int r = end_round(run);
			if (r < 0)
				return r;
		}
	}
	if (scrub_cancelled(s))
		return -ECANCELED;
	return run->fatal;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Phase 2: every stripe of every regular file, in (inode, stripe) order, in rounds; a resumed
 * run starts after the checkpoint's position. */
static int phase_stripes(struct run *run, const struct scrub_checkpoint *ck)
{
	struct scrub *s = run->s;
	const uint64_t S = s->sb->stripe_size;
	uint64_t *files = malloc((s->inodes_len + 1) * sizeof(*files));
	size_t nf = 0, first = 0;
	uint64_t from = 0;
	int r = 0;

	if (!files)
		return -ENOMEM;
	for (size_t i = 0; i < s->inodes_cap; i++) {
		struct scrub_inode *e = &s->inodes[i];
		if (!e->ino || e->removed || (e->mode & 0170000) != 0100000)
			continue;
		files[nf++] = e->ino;
		run->total_estimate += (e->size + S - 1) / S;
	}
	qsort(files, nf, sizeof(*files), u64_cmp);
	if (ck && ck->stripes_done) {
		first = nf;
		run->done = run->total_estimate;
	} else if (ck) {
		for (; first < nf && files[first] <= ck->ino; first++) {
			if (files[first] == ck->ino) {
				from = ck->stripe + 1;
				run->done += from;
				break;
			}
			run->done += (scrub_inode_find(s, files[first])->size + S - 1) / S;
		}
		run->have_pos = true;
		run->pos_ino = ck->ino;
		run->pos_stripe = ck->stripe;
	}
	run->win_t0 = tclock_monotonic_ns();
	r = repair_pool_start(run);
	for (size_t i = first; i < nf && r == 0; i++) {
		struct list_ctx l = { .run = run, .ino = files[i] };
		r = meta_stripe_list(s->meta, files[i], i == first ? from : 0, verify_collect, &l);
	}
	if (r == 0) {
		verify_flush(run);
		r = run->fatal;
	}
	if (r == 0 && scrub_cancelled(s))
		r = -ECANCELED;
	/* the last round: its repairs are committed even after a failure or a cancel */
	int rd = repair_drain(run);
	if (r == 0)
		r = rd;
	stripes_progress(run, true);
	free(files);
	return r;
}

/* ---------------------------------------------------------------- run */

int scrub_run(struct scrub *s, struct scrub_stats *ret_stats)
{
	struct run *run = calloc(1, sizeof(*run));
	struct scrub_checkpoint ck;
	bool resume = false;
	uint64_t t0 = tclock_monotonic_ns();
	int r;

	if (!run)
		return -ENOMEM;
	run->s = s;
	run->created_s = (uint64_t)time(NULL);
	pthread_mutex_init(&run->rep_lock, NULL);
	pthread_cond_init(&run->rep_work, NULL);
	pthread_cond_init(&run->rep_idle, NULL);
	pthread_mutex_init(&run->commit_lock, NULL);
	run->chunk = calloc(SCRUB_CHUNK, sizeof(*run->chunk));
	run->pending = calloc(SCRUB_CHUNK, sizeof(*run->pending));
	if (!run->chunk || !run->pending) {
		r = -ENOMEM;
		goto out;
	}
	run->ckpt = s->opt.checkpoint && !s->opt.dry_run;
	if (run->ckpt && s->opt.no_resume)
		scrub_checkpoint_remove(s);
	else if (run->ckpt && scrub_checkpoint_load(s, &ck) == 0)
		resume = true;
	probe_servers(run);
	r = scrub_namespace(s);
	if (r < 0)
		goto out;
	if (resume) {
		char msg[160];
		scrub_checkpoint_resume(&s->st, &ck.st);
		s->st.resumed = 1;
		run->created_s = ck.created_s;
		if (ck.stripes_done)
			snprintf(msg, sizeof(msg), "resuming an interrupted run: every stripe was "
				 "done, garbage collection was not");
		else
			snprintf(msg, sizeof(msg), "resuming an interrupted run after inode %llu "
				 "stripe %llu", (unsigned long long)ck.ino,
				 (unsigned long long)ck.stripe);
		scrub_event(s, &(struct scrub_event){ .kind = SCRUB_EV_NOTICE, .index = -1,
						     .server = -1, .msg = msg });
	}
	if (scrub_cancelled(s)) {
		r = -ECANCELED;
		goto out;
	}
	r = phase_stripes(run, resume ? &ck : NULL);
	if (r < 0)
		goto out;
	if (s->opt.gc) {
		checkpoint_write(run, true);
		r = scrub_gc(s);
		if (r < 0)
			goto out;
	}
	if (!s->opt.dry_run)
		r = meta_sync(s->meta);
	if (r == 0 && run->ckpt)
		scrub_checkpoint_remove(s);
out:
	repair_pool_stop(run);
	s->st.total_ns = tclock_monotonic_ns() - t0;
	*ret_stats = s->st;
	free(run->chunk);
	free(run->pending);
	free(run->heap);
	pthread_mutex_destroy(&run->rep_lock);
	pthread_cond_destroy(&run->rep_work);
	pthread_cond_destroy(&run->rep_idle);
	pthread_mutex_destroy(&run->commit_lock);
	free(run);
	return r;
}

int scrub_exit_status(const struct scrub_stats *st, int run_result)
{
	int rc = 0;

	if (st->errors_fixed)
		rc |= SCRUB_EXIT_FIXED;
	if (st->errors_left)
		rc |= SCRUB_EXIT_LEFT;
	/* errors left while servers did not answer: the run could not do its whole job */
	if (run_result < 0 || (st->errors_left && st->frags_unreachable))
		rc |= SCRUB_EXIT_OPERATIONAL;
	return rc;
}
