/*
 * data_store: a stripe to fragments on the servers and back. Reads fetch k fragments
 * (more when some are missing or fail their crc, D4) and decode; stores encode, PUT k+m
 * fragments, wait for the write quorum (D1) and commit the map with the file size (D7),
 * queueing the old version as garbage (D2). Small files stay inline in the metadata. The
 * job queue and its worker threads run stores and loads off the caller's thread.
 */
#include "data_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"
#include "tessera/proto.h"

/* ---------------------------------------------------------------- fragments */

uint64_t data_heal_generation(struct data *d)
{
	return atomic_load(&d->heal_gen);
}

int data_frag_key(struct data *d, char *out, size_t size, uint64_t ino, uint64_t stripe,
		  uint64_t version, unsigned index)
{
	return proto_frag_key(out, size, d->sb->fs_uuid, ino, stripe, version, index);
}

/* Flags a stripe whose fragment was found damaged or missing, so that the scrubber repairs it
 * first (read-repair queue). Only the version that was read is flagged. */
void data_mark_degraded(struct data *d, uint64_t ino, uint64_t stripe, uint64_t version)
{
	struct meta_stripe rec;
	struct meta_batch *b;

	pthread_mutex_lock(d->inode_lock);
	if (meta_stripe_get(d->meta, ino, stripe, &rec) == 0 && rec.version == version &&
	    !(rec.flags & META_STRIPE_F_DEGRADED) && (b = meta_batch_new(d->meta))) {
		rec.flags |= META_STRIPE_F_DEGRADED;
		meta_batch_stripe_put(b, ino, stripe, &rec);
		if (meta_commit(d->meta, b, false) == 0) {
			atomic_fetch_add(&d->heal_gen, 1);
			tlog_debug("inode %llu stripe %llu queued for repair",
				   (unsigned long long)ino, (unsigned long long)stripe);
		}
		meta_batch_free(b);
	}
	pthread_mutex_unlock(d->inode_lock);
}

/* Reads stripe `stripe` of ino as described by rec into out (stripe_size bytes): the file data
 * and zeros up to *ret_filled (k * frag_len); out is not touched past that. Data fragments land
 * in place in out; parity, when needed, in a scratch buffer. */
static int fetch_stripe(struct data *d, uint64_t ino, uint64_t stripe,
			const struct meta_stripe *rec, uint8_t *out, size_t *ret_filled)
{
	struct stripe_fetch_opts o = { .want_mask = (1ull << rec->k) - 1,
				       .hedge_ms = d->cfg.hedge_ms };
	const size_t fl = rec->frag_len;
	uint8_t hdrs[64][PROTO_FRAG_HDR_SIZE], *hp[64], *dest[64] = { NULL };
	uint64_t good, damaged = 0;
	int r;

	if (rec->k != d->k || rec->m != d->m || (uint64_t)fl * rec->k > d->stripe_size)
		return -EIO;
	for (unsigned i = 0; i < (unsigned)rec->k + rec->m; i++) {
		hp[i] = hdrs[i];
		if (i < rec->k)
			dest[i] = out + (size_t)i * fl; /* in place; parity only when needed */
		if (stripe_server_retired(&d->ss, rec->servers[i]))
			o.avoid_mask |= 1ull << i;
	}
	r = stripe_fetch_into(d->bs, d->codec, d->sb->fs_uuid, ino, stripe, rec, &o, hp, dest,
			      &good, NULL, &damaged);
	if (damaged && !(rec->flags & META_STRIPE_F_DEGRADED))
		data_mark_degraded(d, ino, stripe, rec->version);
	if (r < 0)
		return r == -EINVAL ? -EIO : r;
	/* Bytes past data_len within the fragments are padding, or stale after a truncation. */
	memset(out + rec->data_len, 0, (size_t)rec->k * fl - rec->data_len);
	*ret_filled = (size_t)rec->k * fl;
	return 0;
}

/* Reads the current contents of stripe idx of ino into out (stripe_size bytes): from its
 * fragments, from the metadata when stripe 0 is inline, or nothing for a hole. *ret_filled
 * gets how much of out was written; the rest is to read as zeros. */
int data_load_stripe(struct data *d, uint64_t ino, uint64_t idx, uint8_t *out,
		     size_t *ret_filled)
{
	struct meta_stripe rec;
	size_t len;
	int r = meta_stripe_get(d->meta, ino, idx, &rec);

	if (r == 0)
		return fetch_stripe(d, ino, idx, &rec, out, ret_filled);
	if (r != -ENOENT)
		return r;
	*ret_filled = 0;
	if (idx == 0) {
		r = meta_inline_get(d->meta, ino, out, d->stripe_size, &len);
		if (r == 0)
			*ret_filled = len;
		else if (r != -ENOENT)
			return r == -ERANGE ? -EIO : r;
	}
	return 0;
}

/* Makes data[0, upto) real: zeros what lies past the filled part. File lock held (or the
 * buffer owned by a job). */
void data_ensure_filled(struct sbuf *b, size_t upto)
{
	if (upto > b->filled) {
		memset(b->data + b->filled, 0, upto - b->filled);
		b->filled = upto;
	}
}

/* Writes the inode's size and mtime from f into the batch, with the inode lock held.
 * grow_to: a store's view (D7): the size becomes max(current, min(grow_to, f->size));
 * UINT64_MAX: the size becomes f->size exactly (flush, truncate).
 * Returns 0, -ENOENT when the inode is gone, -EIO. */
static int put_inode_attr(struct data_file *f, struct meta_batch *b, uint64_t grow_to,
			  bool ctime)
{
	struct meta_inode in;
	uint64_t size = atomic_load(&f->size);
	int r = meta_inode_get(f->d->meta, f->ino, &in);

	if (r < 0)
		return r;
	if (grow_to == UINT64_MAX)
		in.size = size;
	else
		in.size = TESSERA_MAX(in.size, TESSERA_MIN(grow_to, size));
	uint64_t mt = atomic_load(&f->mtime_ns);
	if (mt) {
		in.mtime_ns = mt;
		in.ctime_ns = mt;
	}
	if (ctime)
		in.ctime_ns = tclock_realtime_ns();
	meta_batch_inode_put(b, &in);
	return 0;
}

/* Deletes fragments that were stored for a stripe whose commit did not happen. */
static void delete_stored(struct data *d, struct blockclient_op *puts, unsigned n)
{
	struct blockclient_op dels[64];
	unsigned nd = 0;

	for (unsigned i = 0; i < n; i++) {
		if (puts[i].result != 0)
			continue;
		dels[nd++] = (struct blockclient_op){ .method = BC_DELETE,
						      .server = puts[i].server,
						      .key = puts[i].key };
	}
	if (nd)
		blockstore_run(d->bs, dels, nd, false);
}

/* Commits batch b with the file's size/mtime under the inode lock. */
int data_commit_with_attr(struct data_file *f, struct meta_batch *b, uint64_t grow_to,
			  bool ctime)
{
	int r;

	pthread_mutex_lock(f->d->inode_lock);
	r = put_inode_attr(f, b, grow_to, ctime);
	if (r == 0)
		r = meta_commit(f->d->meta, b, false);
	pthread_mutex_unlock(f->d->inode_lock);
	return r;
}

/* Keeps stripe 0 of a small file in the metadata: the inline value replaces any striped
 * version of it in one batch. */
static int store_inline(struct data_file *f, const uint8_t *data, uint32_t data_len)
{
	struct data *d = f->d;
	struct meta_stripe old;
	struct meta_batch *b;
	int r = meta_stripe_get(d->meta, f->ino, 0, &old);
	bool have_old = r == 0;

	if (r < 0 && r != -ENOENT)
		return r;
	b = meta_batch_new(d->meta);
	if (!b)
		return -ENOMEM;
	meta_batch_inline_put(b, f->ino, data, data_len);
	if (have_old) {
		meta_batch_stripe_del(b, f->ino, 0);
		stripe_garbage_add(b, f->ino, 0, &old);
	}
	r = data_commit_with_attr(f, b, data_len, false);
	meta_batch_free(b);
	if (r == -ENOENT)
		r = 0; /* removed meanwhile */
	if (r == 0 && have_old)
		data_gc_kick(d);
	return r;
}

/* Stores stripe idx of f (data_len bytes of file data at `data`) as a new stripe version and
 * commits the map (the stripe-write state diagram at the top of this file). Runs without
 * the file lock: `data` must not change meanwhile (the buffer is STORING). */
/* A stripe was stored with fewer than k+m fragments: warned about (at most every
 * DATA_WARN_INTERVAL_NS, with how many more there were), since redundancy is reduced until
 * it is repaired. */
static void warn_degraded(struct data *d, uint64_t ino, uint64_t idx,
			  const struct blockclient_op *ops, unsigned chosen, unsigned stored,
			  unsigned n)
{
	uint64_t now = tclock_monotonic_ns(), last = atomic_load(&d->degraded_warned_ns);
	uint64_t more = atomic_fetch_add(&d->degraded_unwarned, 1);
	char missing[128] = "";
	size_t o = 0;

	if ((last && now - last < DATA_WARN_INTERVAL_NS) ||
	    !atomic_compare_exchange_strong(&d->degraded_warned_ns, &last, now))
		return;
	atomic_fetch_sub(&d->degraded_unwarned, more + 1);
	for (unsigned i = 0; i < chosen && o < sizeof(missing) - 24; i++)
		if (ops[i].result != 0)
			o += (size_t)snprintf(missing + o, sizeof(missing) - o, "%s%u (%s)",
					      o ? ", " : "", ops[i].server, strerror(-ops[i].result));
	tlog_warn("inode %llu stripe %llu stored with %u of %u fragments (not stored on %s%s); "
		  "%llu more degraded stripes since the last warning: redundancy is reduced until "
		  "they are repaired",
		  (unsigned long long)ino, (unsigned long long)idx, stored, n,
		  o ? missing : "servers that are down", chosen < n ? "; too few servers up" : "",
		  (unsigned long long)more);
}

static int store_stripe(struct data_file *f, uint64_t idx, const uint8_t *data,
			uint32_t data_len)
{
	struct data *d = f->d;
	const unsigned k = d->k, n = d->k + d->m;
	const uint64_t start = idx * d->stripe_size;
	struct blockclient_op ops[64];
	char keys[64][PROTO_KEY_MAX];
	uint16_t ids[64];
	uint8_t hdrs[64][PROTO_FRAG_HDR_SIZE];
	uint8_t *parity = NULL, *frags[64];
	uint32_t *chunks = NULL;
	unsigned per_frag;
	struct meta_stripe rec, old;
	struct meta_batch *batch = NULL;
	bool have_old;
	int r, chosen, stored = 0, nospc = 0;
	size_t fl = codec_frag_len(d->codec, data_len);

	r = meta_stripe_get(d->meta, f->ino, idx, &old);
	if (r < 0 && r != -ENOENT)
		return r;
	have_old = r == 0;

	memset(&rec, 0, sizeof(rec));
	r = meta_alloc_ino(d->meta, &rec.version); /* D3 */
	if (r < 0)
		return r;
	rec.data_len = data_len;
	rec.frag_len = (uint32_t)fl;
	rec.k = (uint8_t)k;
	rec.m = (uint8_t)d->m;

	chosen = stripe_choose(&d->ss, d->bs, NULL, f->ino, idx, NULL, 0, n, ids);
	bool probe = false;
	if (chosen >= 0 && chosen < (int)n) {
		/* Too few servers up for a whole stripe: rather than store it degraded, try the
		 * ones whose state the prober has not settled yet (suspect) and those that refuse
		 * connections (a try costs nothing, and one may have just come back). Never the
		 * ones that time out: a try would hold every write for the hedge. With too few
		 * for a quorum, try every server. */
		bool try[META_MAX_SERVERS];
		uint16_t more_ids[64];
		for (size_t i = 0; i < d->ss.n; i++)
			try[i] = chosen < (int)d->quorum ||
				 blockstore_worth_trying(d->bs, d->ss.servers[i].id);
		int more = stripe_choose(&d->ss, d->bs, try, f->ino, idx, NULL, 0, n, more_ids);
		if (more > chosen) {
			memcpy(ids, more_ids, (size_t)more * sizeof(ids[0]));
			chosen = more;
			probe = true;
		}
	}
	if (chosen < (int)d->quorum) {
		tlog_debug("inode %llu stripe %llu: only %d servers up, quorum %u",
			   (unsigned long long)f->ino, (unsigned long long)idx, chosen, d->quorum);
		return chosen < 0 ? chosen : -EIO;
	}

	/* Data fragments are sent from the stripe buffer itself: its bytes past data_len are
	 * zero, and k * fl <= stripe_size. Parity goes to its own buffer. */
	parity = malloc((size_t)d->m * fl);
	if (!parity)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		frags[i] = i < k ? (uint8_t *)data + (size_t)i * fl : parity + (size_t)(i - k) * fl;
	codec_encode(d->codec, frags, frags + k, fl);

	/* Chunk sums of the data fragments, for reads of part of a fragment. Without them
	 * (out of memory) such reads fetch the whole stripe: slower, still checked. */
	per_frag = (unsigned)((fl + META_CHUNK_SIZE - 1) / META_CHUNK_SIZE);
	if (per_frag <= META_CHUNKS_PER_FRAG_MAX && (chunks = malloc(sizeof(*chunks) * k * per_frag)))
		for (unsigned i = 0; i < k; i++)
			for (unsigned c = 0; c < per_frag; c++)
				chunks[i * per_frag + c] = tcrc32c(
					0, frags[i] + (size_t)c * META_CHUNK_SIZE,
					TESSERA_MIN((size_t)META_CHUNK_SIZE,
						    fl - (size_t)c * META_CHUNK_SIZE));

	for (unsigned i = 0; i < (unsigned)chosen; i++) {
		rec.crcs[i] = stripe_frag_seal_parts(hdrs[i], frags[i], d->sb->fs_uuid, f->ino, idx,
						     rec.version, i, k, d->m, (uint32_t)fl,
						     data_len);
		rec.servers[i] = ids[i];
		data_frag_key(d, keys[i], sizeof(keys[i]), f->ino, idx, rec.version, i);
		ops[i] = (struct blockclient_op){ .method = BC_PUT, .server = ids[i],
						  .key = keys[i], .head = hdrs[i],
						  .head_len = PROTO_FRAG_HDR_SIZE, .body = frags[i],
						  .body_len = fl };
	}
	/* Once the quorum is stored, a hung server gets hedge_ms more before it is left out
	 * (the stripe is then recorded degraded, for the scrubber). */
	blockstore_run_quorum(d->bs, ops, (size_t)chosen, probe, d->quorum, d->cfg.hedge_ms);
	for (unsigned i = 0; i < (unsigned)chosen; i++) {
		if (ops[i].result == 0) {
			rec.present |= 1ull << i;
			stored++;
		} else if (ops[i].result == -ENOSPC) {
			nospc++;
		}
	}
	if (stored < (int)d->quorum) { /* D1 */
		tlog_debug("inode %llu stripe %llu: %d of %u fragments stored, quorum %u",
			   (unsigned long long)f->ino, (unsigned long long)idx, stored, n, d->quorum);
		delete_stored(d, ops, (unsigned)chosen);
		r = nospc ? -ENOSPC : -EIO;
		goto out;
	}
	if (stored < (int)n) {
		rec.flags |= META_STRIPE_F_DEGRADED;
		warn_degraded(d, f->ino, idx, ops, (unsigned)chosen, (unsigned)stored, n);
		atomic_fetch_add(&d->heal_gen, 1);
	}

	batch = meta_batch_new(d->meta);
	if (!batch) {
		r = -ENOMEM;
		delete_stored(d, ops, (unsigned)chosen);
		goto out;
	}
	meta_batch_stripe_put(batch, f->ino, idx, &rec);
	if (chunks)
		meta_batch_chunks_put(batch, f->ino, idx, rec.version, k, per_frag, chunks);
	if (have_old)
		stripe_garbage_add(batch, f->ino, idx, &old); /* D2 */
	if (idx == 0)
		meta_batch_inline_del(batch, f->ino); /* it outgrew the metadata */
	r = data_commit_with_attr(f, batch, start + data_len, false); /* D7 */
	if (r == -ENOENT) {
		/* The inode was removed meanwhile: what we stored is garbage, not an error. */
		delete_stored(d, ops, (unsigned)chosen);
		r = 0;
	} else if (r < 0) {
		delete_stored(d, ops, (unsigned)chosen);
		goto out;
	}
	if (have_old)
		data_gc_kick(d);
out:
	meta_batch_free(batch);
	free(chunks);
	free(parity);
	return r;
}

/* ---------------------------------------------------------------- jobs */

void *data_worker_main(void *arg)
{
	struct data *d = arg;

	for (;;) {
		struct job *j;
		int r;

		pthread_mutex_lock(&d->queue_lock);
		while (!d->queue_head && !d->queue_stop)
			pthread_cond_wait(&d->queue_cond, &d->queue_lock);
		j = d->queue_head;
		if (j) {
			d->queue_head = j->next;
			if (!d->queue_head)
				d->queue_tail = NULL;
		}
		pthread_mutex_unlock(&d->queue_lock);
		if (!j)
			return NULL; /* stopping, queue drained */

		struct data_file *f = j->f;
		struct sbuf *b = j->b;
		if (j->kind == JOB_STORE) {
			r = j->inline_ok ? store_inline(f, b->data, j->data_len)
					 : store_stripe(f, b->idx, b->data, j->data_len);
			pthread_mutex_lock(&f->lock);
			b->state = r == 0 ? SB_CLEAN : SB_DIRTY; /* D5 */
			b->error = r;
			if (r == 0)
				f->unsynced = true;
		} else {
			size_t filled = 0;
			r = data_load_stripe(d, f->ino, b->idx, b->data, &filled);
			pthread_mutex_lock(&f->lock);
			b->filled = filled;
			b->state = r == 0 ? SB_CLEAN : SB_FREE;
		}
		f->pending--;
		pthread_cond_broadcast(&f->cond);
		pthread_mutex_unlock(&f->lock);
		free(j);
	}
}

/* Queues a job for buffer b of f (file lock held; b already in its LOADING/STORING state).
 * Returns 0 or -ENOMEM. */
int data_submit(struct data_file *f, struct sbuf *b, enum job_kind kind)
{
	struct data *d = f->d;
	struct job *j = calloc(1, sizeof(*j));

	if (!j)
		return -ENOMEM;
	j->kind = kind;
	j->f = f;
	j->b = b;
	if (kind == JOB_STORE) {
		uint64_t size = atomic_load(&f->size), start = b->idx * d->stripe_size;
		j->data_len = (uint32_t)TESSERA_MIN((uint64_t)d->stripe_size, size - start);
		j->inline_ok = b->idx == 0 && size <= d->cfg.inline_max;
		/* The store reads the whole data fragments: k * frag_len bytes. */
		data_ensure_filled(b, j->inline_ok ? j->data_len
					      : d->k * codec_frag_len(d->codec, j->data_len));
	}
	f->pending++;
	pthread_mutex_lock(&d->queue_lock);
	if (d->queue_tail)
		d->queue_tail->next = j;
	else
		d->queue_head = j;
	d->queue_tail = j;
	pthread_cond_signal(&d->queue_cond);
	pthread_mutex_unlock(&d->queue_lock);
	return 0;
}

/* Starts storing a DIRTY buffer in the background (file lock held). A buffer wholly past the
 * end of the file (truncated away) is just dropped. */
int data_submit_store(struct data_file *f, struct sbuf *b)
{
	if (b->idx * f->d->stripe_size >= atomic_load(&f->size)) {
		b->state = SB_CLEAN;
		b->error = 0;
		return 0;
	}
	b->state = SB_STORING;
	int r = data_submit(f, b, JOB_STORE);
	if (r < 0)
		b->state = SB_DIRTY;
	return r;
}

/* Waits until no job of f is queued or running and no buffer is being loaded or stored by
 * another thread (file lock held). */
void data_wait_idle(struct data_file *f)
{
	for (;;) {
		bool busy = f->pending > 0;
		for (int i = 0; i < DATA_FILE_BUFFERS && !busy; i++)
			busy = f->bufs[i].state == SB_LOADING || f->bufs[i].state == SB_STORING;
		if (!busy)
			return;
		pthread_cond_wait(&f->cond, &f->lock);
	}
}
