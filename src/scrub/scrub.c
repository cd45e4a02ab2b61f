/*
 * scrub: verify every fragment of every stripe, rebuild the damaged ones.
 *
 * This file runs the whole scrub (scrub_run): setup, the worker pool, rounds and checkpoints.
 * The stripes phase is in scrub_verify.c and scrub_repair.c, the namespace phase in
 * scrub_ns.c, garbage collection in scrub_gc.c. The phases and their order are listed in
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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"

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

bool scrub_transport_error(int r)
{
	return r == -ECONNREFUSED || r == -ETIMEDOUT || r == -EHOSTDOWN;
}

void scrub_mark_down(struct run *run, uint16_t id)
{
	int p = stripe_server_pos(&run->s->ss, id);

	if (p >= 0)
		run->srv_down[p] = true;
}

bool scrub_server_healthy(struct run *run, uint16_t id)
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
	int refused[META_MAX_SERVERS];
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
		scrub_warn(s, "server %u (%s) %s: its fragments count as unreachable", ids[i],
			   s->ss.srv[i]->url, blockstore_refusal_str(refused[i]));
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

uint8_t *scrub_worker_buf(struct worker *w, size_t size)
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
	int r = scrub_repair_drain(run);

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
	pool_run(run, run->chunk, run->n_chunk, sizeof(struct vitem), scrub_verify_stripe);
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

	if (s->opt.flagged_only && !(rec->flags & META_STRIPE_F_DEGRADED))
		return scrub_cancelled(s) ? -ECANCELED : 0;
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
	r = scrub_repair_pool_start(run);
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
	int rd = scrub_repair_drain(run);
	if (r == 0)
		r = rd;
	scrub_stripes_progress(run, true);
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
	scrub_repair_pool_stop(run);
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
