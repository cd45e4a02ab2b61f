/*
 * scrub_repair: the repair half of the stripes phase: the heap of damaged stripes (most at
 * risk on top), the repair threads that rebuild missing or corrupt fragments from k good
 * ones and store them where a write would place them (R4), and the batched stripe-map
 * updates with compare-and-set against concurrent writers (R6).
 */
#include "scrub_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"

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
		up[i] = scrub_server_healthy(run, s->ss.servers[i].id);
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
		scrub_count_changed(s); /* rewritten or removed meanwhile: nothing left to repair */
		goto done;
	}
	if (r < 0) {
		run->fatal = r;
		goto done;
	}
	n = (unsigned)rec.k + rec.m;
	uint64_t all = n == 64 ? ~0ull : (1ull << n) - 1;
	const size_t slot = PROTO_FRAG_HDR_SIZE + (size_t)rec.frag_len;
	uint8_t *buf = scrub_worker_buf(w, stripe_buf_size(&rec));
	if (!buf) {
		run->fatal = -ENOMEM;
		goto done;
	}
	if (__builtin_popcountll(d->good) < (int)rec.k) {
		scrub_stripe_short(run, d, &rec);
		goto done;
	}
	scrub_rate_take(s, (uint64_t)rec.k * slot);
	r = stripe_fetch(s->bs, s->codec, s->sb->fs_uuid, d->ino, d->stripe, &rec,
			 all & ~d->good, all, buf, &fgood, &fbad);
	if (r == -EIO) {
		if (!scrub_stripe_unchanged(s, d->ino, d->stripe, rec.version)) {
			scrub_count_changed(s);
			goto done;
		}
		snprintf(msg, sizeof(msg), "fewer than %u of %u fragments readable", rec.k, n);
		scrub_stripe_lost(run, d->ino, d->stripe, rec.data_len, true, msg);
		goto done;
	}
	if (r < 0) {
		snprintf(msg, sizeof(msg), "cannot read the stripe: %s", strerror(-r));
		scrub_stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
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
		scrub_stripe_lost(run, d->ino, d->stripe, rec.data_len, false, "internal: bad header");
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
			scrub_stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
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
			    scrub_server_healthy(run, cur))
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
				if (scrub_transport_error(ops[j].result) || ops[j].result == -ENOSPC)
					scrub_mark_down(run, ops[j].server);
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
		scrub_stripe_lost(run, d->ino, d->stripe, rec.data_len, false, msg);
	}
done:
	scrub_stripes_progress(run, false);
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
int scrub_repair_queue(struct run *run, const struct dmg *d)
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
			scrub_stripe_short(run, &d, &rec);
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
int scrub_repair_drain(struct run *run)
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
	scrub_stripes_progress(run, false);
	return r;
}

int scrub_repair_pool_start(struct run *run)
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

void scrub_repair_pool_stop(struct run *run)
{
	pthread_mutex_lock(&run->rep_lock);
	run->rep_stop = true;
	pthread_cond_broadcast(&run->rep_work);
	pthread_mutex_unlock(&run->rep_lock);
	for (unsigned i = 0; i < run->n_rep; i++)
		pthread_join(run->rep_th[i], NULL);
	run->n_rep = 0;
}
