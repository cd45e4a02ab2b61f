/*
 * journal: the running metadata journal of a mount (journal.h; objects in journal_obj.c).
 *
 * Threads and locks: meta calls append() under its journal lock, which orders the records;
 * append() only copies the record into `pend` under j->lock. The flusher thread takes what is
 * pending, stores it as one segment on `copies` servers with j->lock released, and then moves
 * durable_seq and wakes the waiters (group commit). A store that fails keeps its records
 * (`infl`): the next attempt stores them with whatever came since, in one longer segment. The
 * checkpointer thread dumps the store and writes the parts and the manifest, then deletes what
 * the checkpoint covers. Lock order: meta's journal lock, then j->lock.
 *
 * Design notes: invariants
 *   J1. A record is acknowledged (wait() returns 0) only once a segment holding it and every
 *       record before it back to the last durable one is stored on `need` servers.
 *   J2. Segments are never rewritten: a retry is a new object with a longer range; the
 *       restore takes, for each sequence number, the record of the latest epoch.
 *   J3. An object is deleted only once a complete checkpoint (manifest written after every
 *       part) covers it: a restore always finds a checkpoint plus an unbroken tail.
 *   J4. wait() fails (-EIO) only after an attempt that started after the waiter came has
 *       failed to store its record: a waiter never gets the verdict of an older attempt.
 */
#include "journal_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/meta.h"
#include "tessera/stripe.h"

#define PEND_FLUSH_BYTES (8u << 20) /* flush at once beyond this, interval or not */
#define RETRY_MS 200       /* after a failed store; doubles up to RETRY_MAX_MS */
#define RETRY_MAX_MS 5000
#define CKPT_SEGMENTS 4096

struct jbuf {
	uint8_t *p; /* JHDR_LEN bytes reserved at the front for the segment header */
	size_t len, cap;
	uint64_t first, last;
	uint32_t count;
};

struct journal {
	struct meta *meta;
	struct blockstore *bs;
	const struct meta_superblock *sb;
	struct stripe_servers ss;
	unsigned copies, need;
	unsigned interval_ms;
	uint64_t ckpt_bytes;
	uint64_t epoch;

	pthread_mutex_t lock;
	pthread_cond_t wake; /* the flusher and the checkpointer */
	pthread_cond_t done; /* waiters */
	struct jbuf pend;    /* records committed and not yet handed to a store */
	struct jbuf infl;    /* records of the failed stores, to go first next time */
	uint64_t pend_since_ns;
	unsigned waiters;
	uint64_t durable;
	uint64_t attempts, fail_attempt, fail_through;
	int error, broken;
	bool stop;
	uint64_t since_ckpt; /* segment bytes since the last checkpoint */
	uint64_t segs_since; /* segments since the last checkpoint */
	uint64_t ckpt_size;  /* bytes of the last checkpoint's parts */
	bool ckpt_wanted;
	bool gap; /* an offline commit is missing from the journal: checkpoint at start */
	struct journal_status st;

	pthread_t flusher, ckpter;
	bool flusher_on, ckpter_on;
};

static int jbuf_reserve(struct jbuf *b, size_t more)
{
	if (b->len + more <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 64 << 10;
	while (cap < b->len + more)
		cap *= 2;
	uint8_t *np = realloc(b->p, cap);
	if (!np)
		return -ENOMEM;
	b->p = np;
	b->cap = cap;
	return 0;
}

static void jbuf_reset(struct jbuf *b)
{
	b->len = JHDR_LEN;
	b->count = 0;
	b->first = b->last = 0;
}

/* ---- the sink ---- */

static void sink_append(void *ctx, uint64_t seq, const void *ops, size_t len)
{
	struct journal *j = ctx;

	pthread_mutex_lock(&j->lock);
	if (jbuf_reserve(&j->pend, JREC_HDR + len) < 0) {
		j->broken = -ENOMEM; /* a record lost from the journal: no fsync may succeed */
		tlog_error("journal: out of memory: record %llu is not journaled; fsync fails "
			   "from now on", (unsigned long long)seq);
	} else {
		bool first = !j->pend.count;
		if (first) {
			j->pend.first = seq;
			j->pend_since_ns = tclock_monotonic_ns();
		}
		j->pend.last = seq;
		j->pend.count++;
		j->pend.len += jrec_encode(j->pend.p + j->pend.len, seq, ops, len);
		j->st.last_seq = seq;
		/* the flusher sets its deadline by the first record, and goes at once when much
		 * is pending */
		if (first || j->pend.len >= PEND_FLUSH_BYTES)
			pthread_cond_broadcast(&j->wake);
	}
	pthread_mutex_unlock(&j->lock);
}

static int sink_wait(void *ctx, uint64_t seq)
{
	struct journal *j = ctx;
	int r = 0;

	pthread_mutex_lock(&j->lock);
	uint64_t mine = j->attempts; /* J4: only attempts after this one decide */
	while (j->durable < seq) {
		if (j->broken || j->stop || (j->fail_attempt > mine && j->fail_through >= seq)) {
			r = -EIO;
			break;
		}
		j->waiters++;
		pthread_cond_broadcast(&j->wake);
		pthread_cond_wait(&j->done, &j->lock);
		j->waiters--;
	}
	pthread_mutex_unlock(&j->lock);
	return r;
}

/* ---- storing ---- */

/* PUTs body to `copies` servers chosen by placement for (seed), trying further servers when
 * some fail. Returns how many stored it, or -errno. */
static int store_copies(struct journal *j, const char *key, uint64_t seed, const void *body,
			size_t len, int *ret_err)
{
	uint16_t order[META_MAX_SERVERS];
	bool up[META_MAX_SERVERS];
	struct blockclient_op ops[META_MAX_SERVERS];
	size_t tried = 0;
	int stored = 0, n;

	for (size_t i = 0; i < j->ss.n; i++)
		up[i] = true;
	n = stripe_choose(&j->ss, j->bs, up, UINT64_MAX, seed, NULL, 0, (unsigned)j->ss.n, order);
	if (n < 0)
		return n;
	/* servers in back-off last: a try costs a refused connection at most */
	uint16_t sorted[META_MAX_SERVERS];
	size_t ns = 0;
	for (int pass = 0; pass < 2; pass++)
		for (int i = 0; i < n; i++)
			if (blockstore_worth_trying(j->bs, order[i]) == (pass == 0))
				sorted[ns++] = order[i];
	*ret_err = -EIO;
	while (stored < (int)j->copies && tried < ns) {
		size_t want = j->copies - (unsigned)stored, nops = 0;
		while (nops < want && tried < ns) {
			ops[nops] = (struct blockclient_op){ .method = BC_PUT,
							     .server = sorted[tried++],
							     .key = key, .body = body,
							     .body_len = len };
			nops++;
		}
		blockstore_run(j->bs, ops, nops, true);
		for (size_t i = 0; i < nops; i++) {
			if (ops[i].result == 0)
				stored++;
			else
				*ret_err = ops[i].result;
		}
	}
	return stored;
}

/* Stores the records of b as one segment. 0, or -errno with nothing acknowledged. */
static int store_segment(struct journal *j, struct jbuf *b)
{
	char key[JKEY_MAX];
	int err;

	jobj_header(b->p, JOBJ_SEG, j->epoch, b->first, b->last, b->count);
	jkey_segment(key, j->sb->fs_uuid, b->first, b->last, j->epoch);
	int stored = store_copies(j, key, b->first, b->p, b->len, &err);
	if (stored < 0)
		return stored;
	if (stored < (int)j->need) {
		tlog_warn("journal: segment %llu-%llu stored on %d of %u servers: %s",
			  (unsigned long long)b->first, (unsigned long long)b->last, stored,
			  j->copies, strerror(-err));
		return err ? err : -EIO;
	}
	pthread_mutex_lock(&j->lock);
	j->st.segments++;
	j->st.segment_bytes += b->len;
	j->st.puts += (unsigned)stored;
	if (stored < (int)j->copies)
		j->st.copies_short++;
	pthread_mutex_unlock(&j->lock);
	return 0;
}

/* Moves pend behind infl (infl keeps the records of failed stores, oldest first). */
static int take_pending(struct journal *j)
{
	if (!j->pend.count)
		return 0;
	if (!j->infl.count) {
		struct jbuf t = j->infl;
		j->infl = j->pend;
		j->pend = t;
		jbuf_reset(&j->pend);
		return 0;
	}
	size_t add = j->pend.len - JHDR_LEN;
	if (jbuf_reserve(&j->infl, add) < 0)
		return -ENOMEM;
	if (add)
		memcpy(j->infl.p + j->infl.len, j->pend.p + JHDR_LEN, add);
	j->infl.len += add;
	j->infl.last = j->pend.last;
	j->infl.count += j->pend.count;
	jbuf_reset(&j->pend);
	return 0;
}

/* A checkpoint is due after ckpt_bytes of journal, or after CKPT_SEGMENTS segments once they
 * hold a quarter of the last checkpoint's size: many small segments cost a restore requests,
 * a checkpoint costs a dump of the whole store. j->lock held. */
static bool ckpt_due(const struct journal *j)
{
	return j->since_ckpt >= j->ckpt_bytes ||
	       (j->segs_since >= CKPT_SEGMENTS && j->since_ckpt >= j->ckpt_size / 4);
}

static void *flusher_main(void *arg)
{
	struct journal *j = arg;
	uint64_t retry_at = 0, fail_at = 0, retry_ms = RETRY_MS;

	pthread_mutex_lock(&j->lock);
	for (;;) {
		bool have = j->pend.count || j->infl.count;
		if (!have && j->stop)
			break;
		uint64_t now = tclock_monotonic_ns();
		if (!have) {
			pthread_cond_wait(&j->wake, &j->lock);
			continue;
		}
		uint64_t due = j->pend.count ? j->pend_since_ns + j->interval_ms * 1000000ull
					     : UINT64_MAX;
		if (j->waiters || j->stop || j->pend.len >= PEND_FLUSH_BYTES)
			due = now;
		/* records of a failed store: tried again after the retry delay, also when
		 * nothing new comes */
		if (j->infl.count) {
			uint64_t at = retry_at;
			/* a waiting fsync gets its verdict soon: the short delay */
			if (j->waiters && fail_at + RETRY_MS * 1000000ull < at)
				at = fail_at + RETRY_MS * 1000000ull;
			if (due == UINT64_MAX || at > due)
				due = at;
		}
		if (due > now && !(j->stop && now >= retry_at)) {
			tcond_wait_until(&j->wake, &j->lock,
					 due == UINT64_MAX ? now + 1000000000ull : due);
			continue;
		}
		if (take_pending(j) < 0) {
			j->broken = -ENOMEM;
			pthread_cond_broadcast(&j->done);
			break;
		}
		uint64_t attempt = ++j->attempts;
		struct jbuf b = j->infl;
		pthread_mutex_unlock(&j->lock);
		int r = store_segment(j, &b);
		pthread_mutex_lock(&j->lock);
		if (r == 0) {
			j->durable = b.last;
			j->st.durable_seq = b.last;
			j->since_ckpt += b.len;
			j->segs_since++;
			jbuf_reset(&j->infl);
			j->error = 0;
			retry_ms = RETRY_MS;
			if (ckpt_due(j)) {
				j->ckpt_wanted = true;
				pthread_cond_broadcast(&j->wake);
			}
		} else {
			j->fail_attempt = attempt;
			j->fail_through = b.last;
			j->error = r;
			fail_at = tclock_monotonic_ns();
			retry_at = fail_at + retry_ms * 1000000ull;
			retry_ms = retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : retry_ms * 2;
			if (j->stop) {
				tlog_error("journal: records %llu-%llu could not be stored at unmount: "
					   "%s (they are in the local metadata only)",
					   (unsigned long long)b.first, (unsigned long long)b.last,
					   strerror(-r));
				pthread_cond_broadcast(&j->done);
				break;
			}
		}
		j->st.error = j->error;
		pthread_cond_broadcast(&j->done);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* ---- checkpoints ---- */

struct ckpt {
	struct journal *j;
	uint64_t epoch, seq;
	struct jbuf part;
	long parts;
	uint32_t *crcs;
	size_t crc_cap;
	uint64_t rec;
	uint64_t bytes;
	int err;
};

static int ckpt_put_part(struct ckpt *c)
{
	char key[JKEY_MAX];
	int err;

	if (c->parts >= 999999)
		return -EFBIG;
	if ((size_t)c->parts == c->crc_cap) {
		size_t cap = c->crc_cap ? c->crc_cap * 2 : 64;
		uint32_t *n = realloc(c->crcs, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		c->crcs = n;
		c->crc_cap = cap;
	}
	jobj_header(c->part.p, JOBJ_PART, c->epoch, c->seq, (uint64_t)c->parts, c->part.count);
	jkey_ckpt(key, c->j->sb->fs_uuid, c->seq, c->epoch, c->parts);
	int stored = store_copies(c->j, key, c->seq + (uint64_t)c->parts, c->part.p, c->part.len,
				  &err);
	if (stored < 0)
		return stored;
	if (stored < (int)c->j->need)
		return err ? err : -EIO;
	c->crcs[c->parts++] = tcrc32c(0, c->part.p, c->part.len);
	c->bytes += c->part.len;
	jbuf_reset(&c->part);
	return 0;
}

static int ckpt_chunk(void *ctx, const void *ops, size_t len)
{
	struct ckpt *c = ctx;
	int r;

	if (c->part.len > JHDR_LEN && c->part.len + JREC_HDR + len > JPART_BYTES) {
		r = ckpt_put_part(c);
		if (r < 0)
			return r;
	}
	r = jbuf_reserve(&c->part, JREC_HDR + len);
	if (r < 0)
		return r;
	c->part.len += jrec_encode(c->part.p + c->part.len, c->rec++, ops, len);
	c->part.count++;
	return 0;
}

/* Deletes what the checkpoint (epoch, seq) covers: segments that end at or before it or belong
 * to an earlier epoch, and older checkpoints (J3). */
static void ckpt_collect(struct journal *j, uint64_t epoch, uint64_t seq)
{
	struct jcat c;
	uint16_t ids[META_MAX_SERVERS];
	size_t n = 0;

	for (size_t i = 0; i < j->ss.n; i++)
		ids[n++] = j->ss.servers[i].id;
	if (jcat_list(&c, j->bs, ids, n, j->sb->fs_uuid) < 0)
		return;
	size_t cap = 256, nops = 0, deleted = 0;
	struct blockclient_op *ops = malloc(cap * sizeof(*ops));
	char (*keys)[JKEY_MAX] = malloc(cap * JKEY_MAX);
	for (size_t i = 0; ops && keys && i < c.n; i++) {
		const struct jentry *e = &c.e[i];
		bool covered = e->kind == JOBJ_SEG ? e->last <= seq || e->epoch < epoch
						   : e->seq < seq ||
							     (e->seq == seq && e->epoch < epoch);
		if (!covered)
			continue;
		for (size_t s = 0; s < n; s++) {
			if (!(e->holders[s / 64] & (1ull << (s % 64))))
				continue;
			if (e->kind == JOBJ_SEG)
				jkey_segment(keys[nops], j->sb->fs_uuid, e->seq, e->last, e->epoch);
			else
				jkey_ckpt(keys[nops], j->sb->fs_uuid, e->seq, e->epoch,
					  e->kind == JOBJ_MANIFEST ? -1 : (long)e->last);
			ops[nops] = (struct blockclient_op){ .method = BC_DELETE, .server = ids[s],
							     .key = keys[nops] };
			if (++nops == cap) {
				deleted += (size_t)blockstore_run(j->bs, ops, nops, false);
				nops = 0;
			}
		}
	}
	if (ops && nops)
		deleted += (size_t)blockstore_run(j->bs, ops, nops, false);
	if (deleted)
		tlog_debug("journal: %zu objects covered by checkpoint %llu deleted", deleted,
			   (unsigned long long)seq);
	free(ops);
	free(keys);
	jcat_free(&c);
}

static int checkpoint(struct journal *j, uint64_t *ret_size)
{
	struct ckpt c = { .j = j };
	char key[JKEY_MAX];
	uint64_t t0 = tclock_monotonic_ns();
	int r, err;

	jbuf_reset(&c.part);
	r = meta_journal_dump(j->meta, 1u << 20, ckpt_chunk, &c, &c.epoch, &c.seq);
	if (r == 0 && (c.part.count || c.parts == 0))
		r = ckpt_put_part(&c);
	if (r == 0) {
		size_t len = JHDR_LEN + (size_t)c.parts * 4 + 4;
		uint8_t *man = malloc(len);
		if (!man) {
			r = -ENOMEM;
		} else {
			jobj_header(man, JOBJ_MANIFEST, c.epoch, c.seq, (uint64_t)c.parts, 0);
			for (long i = 0; i < c.parts; i++)
				be_put32(man + JHDR_LEN + i * 4, c.crcs[i]);
			be_put32(man + len - 4, tcrc32c(0, man, len - 4));
			jkey_ckpt(key, j->sb->fs_uuid, c.seq, c.epoch, -1);
			int stored = store_copies(j, key, c.seq, man, len, &err);
			r = stored < 0 ? stored : stored < (int)j->need ? (err ? err : -EIO) : 0;
			free(man);
		}
	}
	free(c.part.p);
	free(c.crcs);
	if (r < 0) {
		tlog_warn("journal: checkpoint at record %llu failed: %s (tried again later)",
			  (unsigned long long)c.seq, strerror(-r));
		return r;
	}
	if (j->gap && meta_journal_gap_clear(j->meta) == 0)
		j->gap = false;
	pthread_mutex_lock(&j->lock);
	j->st.ckpt_seq = c.seq;
	j->st.ckpt_time_ns = tclock_realtime_ns();
	pthread_mutex_unlock(&j->lock);
	tlog_info("journal: checkpoint at record %llu (epoch %llu): %ld parts, %.1f s",
		  (unsigned long long)c.seq, (unsigned long long)c.epoch, c.parts,
		  (double)(tclock_monotonic_ns() - t0) / 1e9);
	ckpt_collect(j, c.epoch, c.seq);
	*ret_size = c.bytes;
	return 0;
}

static void *ckpter_main(void *arg)
{
	struct journal *j = arg;

	pthread_mutex_lock(&j->lock);
	while (!j->stop) {
		if (!j->ckpt_wanted) {
			pthread_cond_wait(&j->wake, &j->lock);
			continue;
		}
		uint64_t since = j->since_ckpt, segs = j->segs_since, size = 0;
		pthread_mutex_unlock(&j->lock);
		int r = checkpoint(j, &size);
		pthread_mutex_lock(&j->lock);
		if (r == 0) {
			j->since_ckpt -= since;
			j->segs_since -= segs;
			j->ckpt_size = size;
			j->ckpt_wanted = ckpt_due(j);
		} else if (!j->stop) {
			tcond_wait_until(&j->wake, &j->lock,
					 tclock_monotonic_ns() + 10000000000ull);
		}
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/* ---- start / stop ---- */

void journal_status(struct journal *j, struct journal_status *ret)
{
	pthread_mutex_lock(&j->lock);
	*ret = j->st;
	ret->epoch = j->epoch;
	ret->copies = j->copies;
	pthread_mutex_unlock(&j->lock);
}

static void journal_free(struct journal *j)
{
	free(j->pend.p);
	free(j->infl.p);
	pthread_mutex_destroy(&j->lock);
	pthread_cond_destroy(&j->wake);
	pthread_cond_destroy(&j->done);
	free(j);
}

/* The catch-up at start: what the servers hold after the local position (same epoch, or any
 * later with takeover) is applied; a later epoch without takeover: -ESTALE. */
static int catch_up(struct journal *j, const uint16_t *ids, size_t n, bool takeover,
		    uint64_t *ret_max_epoch, bool *ret_have_ckpt)
{
	uint64_t epoch, seq, max_epoch = 0;
	struct jreplay_stats st = { 0 };
	char why[256];
	struct jcat c;
	int r = jcat_list(&c, j->bs, ids, n, j->sb->fs_uuid);

	meta_journal_pos(j->meta, &epoch, &seq);
	*ret_have_ckpt = false;
	if (r == -EIO) {
		tlog_warn("journal: no server lists the journal: starting without catching up");
		*ret_max_epoch = epoch;
		return 0;
	}
	if (r < 0)
		return r;
	for (size_t i = 0; i < c.n; i++) {
		if (c.e[i].epoch > max_epoch)
			max_epoch = c.e[i].epoch;
		if (c.e[i].kind == JOBJ_MANIFEST)
			*ret_have_ckpt = true;
	}
	*ret_max_epoch = max_epoch;
	if (max_epoch > epoch && !takeover) {
		tlog_error("journal: epoch %llu has written this filesystem's journal since this "
			   "metadata directory was last used (epoch %llu): it is an old copy; "
			   "restore it with `tessera meta restore`, or mount with -o takeover",
			   (unsigned long long)max_epoch, (unsigned long long)epoch);
		jcat_free(&c);
		return -ESTALE;
	}
	uint64_t seq0 = seq, epoch0 = epoch;
	r = jreplay(j->meta, j->bs, ids, &c, j->sb->fs_uuid, &epoch, &seq,
		    takeover ? UINT64_MAX : epoch, &st, why, sizeof(why));
	/* a catch-up that cannot reach the later epoch's end would start a divergent epoch */
	uint64_t behind = 0;
	for (size_t i = 0; r == 0 && i < c.n; i++)
		if (c.e[i].kind == JOBJ_SEG && c.e[i].epoch > epoch && c.e[i].last > behind)
			behind = c.e[i].last;
	jcat_free(&c);
	if (r == -ESTALE || (r == 0 && behind > seq)) {
		tlog_error("journal: cannot take over: %s (restore with `tessera meta restore`)",
			   why[0] ? why : "a later epoch's records are missing from the servers");
		return -ESTALE;
	}
	if (r < 0)
		return r;
	if (seq > seq0 && epoch > epoch0)
		tlog_warn("journal: taking over: records %llu-%llu of epoch %llu applied (this "
			  "metadata directory is an old copy; what it holds beyond record %llu is "
			  "superseded)", (unsigned long long)seq0 + 1, (unsigned long long)seq,
			  (unsigned long long)epoch, (unsigned long long)seq0);
	else if (seq > seq0)
		tlog_warn("journal: the local metadata lacked records %llu-%llu (lost from its "
			  "log in a crash): applied from the servers", (unsigned long long)seq0 + 1,
			  (unsigned long long)seq);
	if (why[0])
		tlog_warn("journal: catch-up stopped at record %llu: %s", (unsigned long long)seq,
			  why);
	return 0;
}

int journal_start(struct meta *meta, struct blockstore *bs, const struct journal_config *cfg,
		  struct journal **ret)
{
	struct journal *j = calloc(1, sizeof(*j));
	uint16_t ids[META_MAX_SERVERS];
	uint64_t max_epoch, epoch, seq;
	bool have_ckpt, attached = false;
	size_t n = 0;
	int r;

	if (!j)
		return -ENOMEM;
	pthread_mutex_init(&j->lock, NULL);
	tcond_init_monotonic(&j->wake);
	tcond_init_monotonic(&j->done);
	j->meta = meta;
	j->bs = bs;
	j->sb = meta_superblock(meta);
	j->interval_ms = cfg->interval_ms ? cfg->interval_ms : 1000;
	j->ckpt_bytes = cfg->checkpoint_bytes ? cfg->checkpoint_bytes : 64ull << 20;
	r = stripe_servers_init(&j->ss, j->sb, NULL);
	if (r < 0)
		goto fail;
	/* m+1 copies survive m lost servers; at least as many as the data's write quorum keeps
	 * beyond k, so that a journal is never less safe than the data it maps */
	j->copies = j->sb->m + 1;
	if (j->copies > j->ss.n)
		j->copies = (unsigned)j->ss.n;
	j->need = j->sb->write_quorum > j->sb->k ? j->sb->write_quorum - j->sb->k + 1 : 1;
	if (j->need > j->copies)
		j->need = j->copies;
	if (jbuf_reserve(&j->pend, JHDR_LEN) < 0 || jbuf_reserve(&j->infl, JHDR_LEN) < 0) {
		r = -ENOMEM;
		goto fail;
	}
	jbuf_reset(&j->pend);
	jbuf_reset(&j->infl);
	for (size_t i = 0; i < j->ss.n; i++)
		ids[n++] = j->ss.servers[i].id;
	r = catch_up(j, ids, n, cfg->takeover, &max_epoch, &have_ckpt);
	if (r < 0)
		goto fail;
	meta_journal_pos(meta, &epoch, &seq);
	j->epoch = (max_epoch > epoch ? max_epoch : epoch) + 1;
	j->durable = seq; /* what the local store holds before this epoch is covered by the
			     checkpoint this start writes when there is none */
	j->st.last_seq = j->st.durable_seq = seq;
	r = meta_journal_gap(meta);
	if (r < 0)
		goto fail;
	j->gap = r > 0;
	j->ckpt_wanted = !have_ckpt || j->gap;
	/* attached first: the first checkpoint is a dump in the new epoch */
	struct meta_journal_sink sink = { sink_append, sink_wait, j };
	r = meta_journal_attach(meta, &sink, j->epoch);
	if (r < 0)
		goto fail;
	attached = true;
	if (pthread_create(&j->flusher, NULL, flusher_main, j) != 0) {
		r = -EAGAIN;
		goto fail;
	}
	j->flusher_on = true;
	if (pthread_create(&j->ckpter, NULL, ckpter_main, j) != 0) {
		r = -EAGAIN;
		goto fail;
	}
	j->ckpter_on = true;
	/* the marker a restore lists to find the filesystem (best effort: re-sent each start) */
	char key[JKEY_MAX], u[37];
	int err;
	jkey_marker(key, j->sb->fs_uuid);
	tuuid_format(j->sb->fs_uuid, u);
	store_copies(j, key, 0, u, strlen(u), &err);
	tlog_info("journal: epoch %llu from record %llu, %u copies per segment (at least %u)",
		  (unsigned long long)j->epoch, (unsigned long long)seq + 1, j->copies, j->need);
	*ret = j;
	return 0;
fail:
	if (attached)
		meta_journal_detach(meta);
	pthread_mutex_lock(&j->lock);
	j->stop = true;
	pthread_cond_broadcast(&j->wake);
	pthread_mutex_unlock(&j->lock);
	if (j->flusher_on)
		pthread_join(j->flusher, NULL);
	if (j->ckpter_on)
		pthread_join(j->ckpter, NULL);
	journal_free(j);
	return r;
}

void journal_stop(struct journal *j)
{
	if (!j)
		return;
	meta_journal_detach(j->meta); /* nothing is appended from now on */
	pthread_mutex_lock(&j->lock);
	j->stop = true;
	pthread_cond_broadcast(&j->wake);
	pthread_mutex_unlock(&j->lock);
	pthread_join(j->flusher, NULL); /* stores what is pending, one try */
	pthread_join(j->ckpter, NULL);
	journal_free(j);
}
