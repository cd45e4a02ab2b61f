/*
 * data: files to erasure-coded stripes and back.
 *
 * Design notes
 * ------------
 * A stripe is written copy-on-write. Its life:
 *
 *   buffered --(submit_store: the stripe was written to its end, evicted, or flushed)--> queued
 *   queued   --(worker: store_stripe, codec_encode)--> encoded
 *   encoded  --(store_stripe: blockstore_run_quorum PUT x (k+m))--> quorum stored
 *   quorum stored --(store_stripe: meta_commit)--> map committed
 *   map committed --(same batch: meta_batch_garbage_add)--> old version queued for garbage
 *   queued for garbage --(gc_main: DELETE, then meta_batch_garbage_del)--> gone
 *
 * A stripe buffer (struct sbuf) is in one of these states:
 *
 *   FREE --get_buf--> LOADING --(loaded)--> CLEAN --data_write--> DIRTY --submit_store--> STORING
 *   STORING --(stored)--> CLEAN;  STORING --(failed)--> DIRTY (b->error set, data kept)
 *   CLEAN --(evicted)--> FREE;    LOADING --(failed)--> FREE
 *
 * LOADING and STORING buffers belong to the thread doing their I/O and are neither read nor
 * written by anyone else: a reader or writer that needs one waits on the file's condition
 * variable. Everything else about a file is protected by its mutex, which is never held
 * during network I/O.
 *
 * Durability invariants:
 *  D1. A stripe map never points at a version whose fragments were not stored on at least
 *      write_quorum (>= k) servers: the map is committed only after the PUTs answered.
 *  D2. The old version's fragments are deleted only after the batch that switched the map
 *      (and queued them as garbage) was committed: a crash at any point leaves the old or the
 *      new version readable, and at worst garbage that the scrubber collects.
 *  D3. Stripe versions come from the metadata's never-reused id counter (meta_alloc_ino), so a
 *      fragment key is never reused, even for a stripe that was truncated away and rewritten
 *      while its old fragments still wait in the garbage queue.
 *  D4. Every fragment read is checked (header, identity, payload crc32c against the crc in the
 *      stripe map) before its bytes are used; a bad fragment counts as missing and is rebuilt
 *      from the others. Fewer than k good fragments is EIO: wrong bytes are never returned.
 *  D5. A failed store leaves the stripe DIRTY in memory with its error; data_flush() retries it
 *      and reports the error when the retry fails too (to fsync and close); a write that needs
 *      the buffer back gets the error. Nothing is dropped silently.
 *  D6. data_flush() returns only after every stripe and the file size were committed and the
 *      metadata WAL was synced (stripe commits during writing are not synced; the flush is).
 *  D7. A store commits a file size no larger than the application's size and never shrinks it
 *      (only data_truncate does), so that stores finishing out of order are harmless.
 *
 * Threads: the FUSE threads call in; `workers` threads run queued stores and prefetches; one
 * garbage thread deletes old fragments. Lock order: file lock, then the inode lock (shared
 * with fs), then files_lock or the queue lock; never the other way round.
 */
#include "tessera/data.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "tessera/blockstore.h"
#include "tessera/codec.h"
#include "tessera/common.h"
#include "tessera/meta.h"
#include "tessera/placement.h"
#include "tessera/proto.h"
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
	                        only when touched (ensure_filled): a small file's buffer costs
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
};

static void *gc_main(void *arg);
static void *worker_main(void *arg);
static int close_last(struct data_file *f, uint64_t *ret_lost);

void data_config_defaults(struct data_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->workers = 8;
	cfg->readahead = 4;
	cfg->inline_max = DATA_INLINE_FROM_SB;
	cfg->buffer_budget = 256ull << 20;
	cfg->hedge_ms = 2000;
}

int data_new(struct meta *meta, struct blockstore *bs, pthread_mutex_t *inode_lock,
	     const struct data_config *cfg, struct data **ret)
{
	const struct meta_superblock *sb = meta_superblock(meta);
	struct data *d;
	int r;

	if (!sb || sb->k == 0 || sb->m == 0 || sb->k + sb->m > 64 || sb->stripe_size == 0 ||
	    sb->stripe_size % (sb->k * 64) != 0)
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	if (cfg)
		d->cfg = *cfg;
	else
		data_config_defaults(&d->cfg);
	if (!d->cfg.workers)
		d->cfg.workers = 8;
	if (d->cfg.workers > TESSERA_ARRAY_SIZE(d->workers))
		d->cfg.workers = TESSERA_ARRAY_SIZE(d->workers);
	if (!d->cfg.buffer_budget)
		d->cfg.buffer_budget = 256ull << 20;
	if (!d->cfg.hedge_ms)
		d->cfg.hedge_ms = 2000;
	if (d->cfg.inline_max == DATA_INLINE_FROM_SB)
		d->cfg.inline_max = sb->inline_max;
	if (d->cfg.inline_max > META_INLINE_MAX)
		d->cfg.inline_max = META_INLINE_MAX;
	if (d->cfg.readahead > DATA_FILE_BUFFERS - DATA_MIN_BUFFERS)
		d->cfg.readahead = DATA_FILE_BUFFERS - DATA_MIN_BUFFERS;
	d->meta = meta;
	d->bs = bs;
	d->inode_lock = inode_lock;
	d->sb = sb;
	d->k = sb->k;
	d->m = sb->m;
	d->stripe_size = sb->stripe_size;
	if (d->cfg.inline_max > d->stripe_size)
		d->cfg.inline_max = d->stripe_size;
	d->quorum = d->cfg.write_quorum ? d->cfg.write_quorum : sb->write_quorum;
	if (d->quorum < d->k)
		d->quorum = d->k;
	if (d->quorum > d->k + d->m)
		d->quorum = d->k + d->m;
	r = stripe_servers_init(&d->ss, sb, bs);
	if (r < 0) {
		free(d);
		return r;
	}
	r = codec_new(d->k, d->m, &d->codec);
	if (r < 0) {
		free(d);
		return r;
	}
	pthread_mutex_init(&d->files_lock, NULL);
	pthread_mutex_init(&d->queue_lock, NULL);
	pthread_cond_init(&d->queue_cond, NULL);
	pthread_mutex_init(&d->gc_lock, NULL);
	pthread_cond_init(&d->gc_cond, NULL);
	pthread_mutex_init(&d->statfs_lock, NULL);
	for (unsigned i = 0; i < d->cfg.workers; i++) {
		if (pthread_create(&d->workers[d->n_workers], NULL, worker_main, d) != 0)
			break;
		d->n_workers++;
	}
	if (d->n_workers == 0) {
		data_free(d);
		return -EAGAIN;
	}
	if (pthread_create(&d->gc_thread, NULL, gc_main, d) == 0)
		d->gc_started = true;
	*ret = d;
	return 0;
}

static void file_free(struct data_file *f)
{
	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		if (f->bufs[i].data)
			atomic_fetch_sub(&f->d->buffer_bytes, f->d->stripe_size);
		free(f->bufs[i].data);
	}
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->cond);
	free(f);
}

void data_free(struct data *d)
{
	if (!d)
		return;
	for (size_t h = 0; h < DATA_HASH; h++) {
		while (d->files[h]) {
			struct data_file *f = d->files[h];
			uint64_t ino = f->ino, lost = 0;
			d->files[h] = f->next;
			int r = close_last(f, &lost);
			if (r < 0)
				tlog_error("inode %llu: %llu bytes of written data are lost: they "
					   "could not be stored at unmount (%s)",
					   (unsigned long long)ino, (unsigned long long)lost,
					   strerror(-r));
		}
	}
	pthread_mutex_lock(&d->queue_lock);
	d->queue_stop = true;
	pthread_cond_broadcast(&d->queue_cond);
	pthread_mutex_unlock(&d->queue_lock);
	for (unsigned i = 0; i < d->n_workers; i++)
		pthread_join(d->workers[i], NULL);
	if (d->gc_started) {
		pthread_mutex_lock(&d->gc_lock);
		d->gc_stop = true;
		pthread_cond_signal(&d->gc_cond);
		pthread_mutex_unlock(&d->gc_lock);
		pthread_join(d->gc_thread, NULL);
	}
	codec_free(d->codec);
	pthread_mutex_destroy(&d->files_lock);
	pthread_mutex_destroy(&d->queue_lock);
	pthread_cond_destroy(&d->queue_cond);
	pthread_mutex_destroy(&d->gc_lock);
	pthread_cond_destroy(&d->gc_cond);
	pthread_mutex_destroy(&d->statfs_lock);
	free(d);
}

/* ---------------------------------------------------------------- open files */

static struct data_file **file_slot(struct data *d, uint64_t ino)
{
	struct data_file **p = &d->files[placement_seed(ino, 0) % DATA_HASH];

	while (*p && (*p)->ino != ino)
		p = &(*p)->next;
	return p;
}

int data_open(struct data *d, uint64_t ino, uint64_t size, struct data_file **ret)
{
	struct data_file *f;

	pthread_mutex_lock(&d->files_lock);
	f = *file_slot(d, ino);
	if (f) {
		f->refs++;
		pthread_mutex_unlock(&d->files_lock);
		*ret = f;
		return 0;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		pthread_mutex_unlock(&d->files_lock);
		return -ENOMEM;
	}
	f->d = d;
	f->ino = ino;
	f->refs = 1;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->cond, NULL);
	atomic_store(&f->size, size);
	atomic_store(&f->mtime_ns, 0);
	*file_slot(d, ino) = f;
	pthread_mutex_unlock(&d->files_lock);
	*ret = f;
	return 0;
}

/* Bytes of file data in stripes that are still dirty (not stored). File lock held. */
static uint64_t dirty_bytes(struct data_file *f)
{
	uint64_t size = atomic_load(&f->size), n = 0, S = f->d->stripe_size;

	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		const struct sbuf *b = &f->bufs[i];
		if (b->state != SB_DIRTY || b->idx * S >= size)
			continue;
		n += TESSERA_MIN(S, size - b->idx * S);
	}
	return n;
}

/* The last reference of f: stores what is buffered, then frees. On failure *ret_lost gets the
 * bytes that could not be stored (0 when only the metadata commit failed). */
static int close_last(struct data_file *f, uint64_t *ret_lost)
{
	int r = data_flush(f);

	if (r < 0) {
		pthread_mutex_lock(&f->lock);
		*ret_lost = dirty_bytes(f);
		pthread_mutex_unlock(&f->lock);
	}
	file_free(f);
	return r;
}

int data_close(struct data *d, struct data_file *f, uint64_t *ret_lost)
{
	bool last;

	pthread_mutex_lock(&d->files_lock);
	last = --f->refs == 0;
	if (last)
		*file_slot(d, f->ino) = f->next;
	pthread_mutex_unlock(&d->files_lock);
	if (!last)
		return 0;
	uint64_t lost = 0;
	int r = close_last(f, &lost);
	if (ret_lost)
		*ret_lost = lost;
	return r < 0 ? r : 1;
}

bool data_is_open(struct data *d, uint64_t ino)
{
	bool open;

	pthread_mutex_lock(&d->files_lock);
	open = *file_slot(d, ino) != NULL;
	pthread_mutex_unlock(&d->files_lock);
	return open;
}

bool data_file_attr(struct data *d, uint64_t ino, uint64_t *ret_size, uint64_t *ret_mtime_ns)
{
	struct data_file *f;

	pthread_mutex_lock(&d->files_lock);
	f = *file_slot(d, ino);
	if (f) {
		*ret_size = atomic_load(&f->size);
		*ret_mtime_ns = atomic_load(&f->mtime_ns);
	}
	pthread_mutex_unlock(&d->files_lock);
	return f != NULL;
}

/* ---------------------------------------------------------------- fragments */

static int frag_key(struct data *d, char *out, size_t size, uint64_t ino, uint64_t stripe,
		    uint64_t version, unsigned index)
{
	return proto_frag_key(out, size, d->sb->fs_uuid, ino, stripe, version, index);
}

/* Flags a stripe whose fragment was found damaged or missing, so that the scrubber repairs it
 * first (read-repair queue). Only the version that was read is flagged. */
static void mark_degraded(struct data *d, uint64_t ino, uint64_t stripe, uint64_t version)
{
	struct meta_stripe rec;
	struct meta_batch *b;

	pthread_mutex_lock(d->inode_lock);
	if (meta_stripe_get(d->meta, ino, stripe, &rec) == 0 && rec.version == version &&
	    !(rec.flags & META_STRIPE_F_DEGRADED) && (b = meta_batch_new(d->meta))) {
		rec.flags |= META_STRIPE_F_DEGRADED;
		meta_batch_stripe_put(b, ino, stripe, &rec);
		if (meta_commit(d->meta, b, false) == 0)
			tlog_debug("inode %llu stripe %llu queued for repair",
				   (unsigned long long)ino, (unsigned long long)stripe);
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
		mark_degraded(d, ino, stripe, rec->version);
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
static int load_stripe(struct data *d, uint64_t ino, uint64_t idx, uint8_t *out,
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
static void ensure_filled(struct sbuf *b, size_t upto)
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
static int commit_with_attr(struct data_file *f, struct meta_batch *b, uint64_t grow_to,
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
	r = commit_with_attr(f, b, data_len, false);
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
	if (chosen >= 0 && chosen < (int)d->quorum) {
		/* Too few servers believed up for a quorum: rather than fail at once, try them
		 * all; the ones in back-off may be back (a refused connection costs little). */
		bool all[META_MAX_SERVERS];
		for (size_t i = 0; i < d->ss.n; i++)
			all[i] = true;
		chosen = stripe_choose(&d->ss, d->bs, all, f->ino, idx, NULL, 0, n, ids);
		probe = true;
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
		frag_key(d, keys[i], sizeof(keys[i]), f->ino, idx, rec.version, i);
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
	if (stored < (int)n)
		rec.flags |= META_STRIPE_F_DEGRADED;

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
	r = commit_with_attr(f, batch, start + data_len, false); /* D7 */
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

static void *worker_main(void *arg)
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
			r = load_stripe(d, f->ino, b->idx, b->data, &filled);
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
static int submit(struct data_file *f, struct sbuf *b, enum job_kind kind)
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
		ensure_filled(b, j->inline_ok ? j->data_len
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
static int submit_store(struct data_file *f, struct sbuf *b)
{
	if (b->idx * f->d->stripe_size >= atomic_load(&f->size)) {
		b->state = SB_CLEAN;
		b->error = 0;
		return 0;
	}
	b->state = SB_STORING;
	int r = submit(f, b, JOB_STORE);
	if (r < 0)
		b->state = SB_DIRTY;
	return r;
}

/* Waits until no job of f is queued or running and no buffer is being loaded or stored by
 * another thread (file lock held). */
static void wait_idle(struct data_file *f)
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

/* ---------------------------------------------------------------- buffers */

static struct sbuf *find_buf(struct data_file *f, uint64_t idx)
{
	for (int i = 0; i < DATA_FILE_BUFFERS; i++)
		if (f->bufs[i].state != SB_FREE && f->bufs[i].idx == idx)
			return &f->bufs[i];
	return NULL;
}

static unsigned allocated_bufs(struct data_file *f)
{
	unsigned n = 0;

	for (int i = 0; i < DATA_FILE_BUFFERS; i++)
		n += f->bufs[i].data != NULL;
	return n;
}

/* Picks a buffer to reuse: a free one with memory, else a new allocation while the budget
 * allows (always up to DATA_MIN_BUFFERS per file), else the least recently used CLEAN one.
 * Returns NULL when every buffer is busy or dirty. File lock held. */
static struct sbuf *pick_victim(struct data_file *f)
{
	struct data *d = f->d;
	struct sbuf *lru = NULL;

	for (int i = 0; i < DATA_FILE_BUFFERS; i++)
		if (f->bufs[i].state == SB_FREE && f->bufs[i].data && !f->bufs[i].pins)
			return &f->bufs[i];
	if (allocated_bufs(f) < DATA_MIN_BUFFERS ||
	    atomic_load(&d->buffer_bytes) + d->stripe_size <= d->cfg.buffer_budget) {
		for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
			struct sbuf *b = &f->bufs[i];
			if (b->data)
				continue;
			b->data = malloc(d->stripe_size);
			if (!b->data)
				break;
			atomic_fetch_add(&d->buffer_bytes, d->stripe_size);
			b->state = SB_FREE;
			return b;
		}
	}
	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		struct sbuf *b = &f->bufs[i];
		if (b->state == SB_CLEAN && !b->pins && (!lru || b->last_use < lru->last_use))
			lru = b;
	}
	return lru;
}

/* Returns the buffer holding stripe idx in state CLEAN or DIRTY, loading it when `load`
 * (else it starts zeroed). Waits for busy buffers; stores dirty ones to make room. File lock
 * held (released while waiting and while loading). */
static int get_buf(struct data_file *f, uint64_t idx, bool load, struct sbuf **ret)
{
	struct data *d = f->d;
	struct sbuf *b;
	int r;

	for (;;) {
		b = find_buf(f, idx);
		if (b && (b->state == SB_LOADING || b->state == SB_STORING)) {
			pthread_cond_wait(&f->cond, &f->lock);
			continue;
		}
		if (b)
			break;
		b = pick_victim(f);
		if (b) {
			b->state = SB_FREE;
			break;
		}
		/* Everything is dirty or busy: store the least recently used dirty buffer and
		 * wait. One whose store failed before is retried; failing again is the caller's
		 * error (D5). */
		struct sbuf *lru = NULL;
		for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
			struct sbuf *c = &f->bufs[i];
			if (c->state == SB_DIRTY && (!lru || c->last_use < lru->last_use))
				lru = c;
		}
		if (lru) {
			bool retry = lru->error != 0;
			r = submit_store(f, lru);
			if (r < 0)
				return r;
			if (retry) {
				while (lru->state == SB_STORING)
					pthread_cond_wait(&f->cond, &f->lock);
				if (lru->state == SB_DIRTY)
					return lru->error;
			}
			continue;
		}
		pthread_cond_wait(&f->cond, &f->lock);
	}
	if (b->state == SB_FREE) {
		b->idx = idx;
		b->error = 0;
		if (load && idx * d->stripe_size < atomic_load(&f->size)) {
			b->state = SB_LOADING;
			pthread_mutex_unlock(&f->lock);
			size_t filled = 0;
			r = load_stripe(d, f->ino, idx, b->data, &filled);
			pthread_mutex_lock(&f->lock);
			b->filled = filled;
			b->state = r == 0 ? SB_CLEAN : SB_FREE;
			pthread_cond_broadcast(&f->cond);
			if (r < 0)
				return r;
		} else {
			b->filled = 0; /* all zeros, none of them written yet */
			b->state = SB_CLEAN;
		}
	}
	b->last_use = ++f->tick;
	*ret = b;
	return 0;
}

/* Prefetches the stripes after idx for a sequential reader, into buffers that are free or
 * clean and not recently used (never waits). File lock held. */
static void readahead(struct data_file *f, uint64_t idx)
{
	struct data *d = f->d;
	uint64_t size = atomic_load(&f->size);

	for (unsigned a = 1; a <= d->cfg.readahead; a++) {
		uint64_t next = idx + a;
		if (next * d->stripe_size >= size)
			break;
		if (find_buf(f, next))
			continue;
		struct sbuf *b = pick_victim(f);
		/* Do not evict what the reader is using now. */
		if (!b || (b->state == SB_CLEAN && b->idx >= idx))
			break;
		b->idx = next;
		b->error = 0;
		b->state = SB_LOADING;
		b->last_use = ++f->tick;
		if (submit(f, b, JOB_LOAD) < 0) {
			b->state = SB_FREE;
			break;
		}
	}
}

ssize_t data_read(struct data_file *f, uint64_t off, void *buf, size_t len)
{
	struct data *d = f->d;
	size_t done = 0;
	uint64_t idx = 0;
	int r = 0;

	pthread_mutex_lock(&f->lock);
	uint64_t size = atomic_load(&f->size);
	if (off >= size)
		goto out;
	len = (size_t)TESSERA_MIN((uint64_t)len, size - off);
	while (done < len) {
		uint64_t pos = off + done;
		size_t so = (size_t)(pos % d->stripe_size);
		size_t n = TESSERA_MIN(len - done, (size_t)d->stripe_size - so);
		struct sbuf *b;

		idx = pos / d->stripe_size;
		r = get_buf(f, idx, true, &b);
		if (r < 0)
			break;
		ensure_filled(b, so + n);
		memcpy((uint8_t *)buf + done, b->data + so, n);
		done += n;
	}
	if (done > 0 && off == f->seq_next && d->cfg.readahead)
		readahead(f, idx);
	f->seq_next = off + done;
out:
	pthread_mutex_unlock(&f->lock);
	return done > 0 || r == 0 ? (ssize_t)done : r;
}

/* A small read that is not part of a sequential run, of a stripe not in memory: fetches only
 * the chunks of the one data fragment that hold [off, off + len) and checks them against
 * their chunk sums (D4). Returns 0 with out filled, or -EAGAIN when this path does not apply
 * or did not work (no sums, server down, a bad chunk...): the caller then reads the whole
 * stripe, which decodes around damage. Called without the file lock. */
static int read_ranged(struct data_file *f, uint64_t off, size_t len, uint8_t *out)
{
	struct data *d = f->d;
	const uint64_t idx = off / d->stripe_size;
	const size_t so = (size_t)(off % d->stripe_size);
	struct meta_stripe rec;
	struct blockclient_op op;
	char key[PROTO_KEY_MAX];
	uint8_t *buf;
	int r;

	if (meta_stripe_get(d->meta, f->ino, idx, &rec) < 0 || rec.k != d->k ||
	    rec.frag_len == 0 || so + len > rec.data_len)
		return -EAGAIN;
	const size_t fl = rec.frag_len;
	const unsigned frag = (unsigned)(so / fl);
	const size_t fo = so % fl; /* offset inside the fragment's payload */
	if (frag >= rec.k || fo + len > fl || !(rec.present & (1ull << frag)) ||
	    stripe_server_retired(&d->ss, rec.servers[frag]) || !blockstore_server_up(d->bs, rec.servers[frag]))
		return -EAGAIN;
	const unsigned c0 = (unsigned)(fo / META_CHUNK_SIZE);
	const unsigned c1 = (unsigned)((fo + len - 1) / META_CHUNK_SIZE);
	const size_t lo = (size_t)c0 * META_CHUNK_SIZE;
	const size_t hi = TESSERA_MIN((size_t)(c1 + 1) * META_CHUNK_SIZE, fl);
	uint32_t want[2];
	if (c1 - c0 > 1)
		return -EAGAIN;
	for (unsigned c = c0; c <= c1; c++)
		if (meta_chunk_crc_get(d->meta, f->ino, idx, rec.version, frag, c,
				       &want[c - c0]) < 0)
			return -EAGAIN;
	buf = malloc(hi - lo);
	if (!buf)
		return -EAGAIN;
	frag_key(d, key, sizeof(key), f->ino, idx, rec.version, frag);
	op = (struct blockclient_op){ .method = BC_GET, .server = rec.servers[frag], .key = key,
				      .buf = buf, .buf_size = hi - lo,
				      .range_off = PROTO_FRAG_HDR_SIZE + lo, .range_len = hi - lo,
				      .timeout_ms = d->cfg.hedge_ms };
	blockstore_run(d->bs, &op, 1, false);
	r = op.result == 0 && op.result_len == hi - lo ? 0 : -EAGAIN;
	for (unsigned c = c0; r == 0 && c <= c1; c++) {
		size_t a = (size_t)c * META_CHUNK_SIZE - lo;
		size_t n = TESSERA_MIN((size_t)META_CHUNK_SIZE, fl - (size_t)c * META_CHUNK_SIZE);
		if (tcrc32c(0, buf + a, n) != want[c - c0])
			r = -EAGAIN;
	}
	if (r == 0)
		memcpy(out, buf + (fo - lo), len);
	else if (op.result == 0)
		mark_degraded(d, f->ino, idx, rec.version); /* answered, but with bad bytes */
	free(buf);
	return r;
}

int data_read_with(struct data_file *f, uint64_t off, size_t len, data_read_fn fn, void *ctx)
{
	struct data *d = f->d;
	const uint64_t S = d->stripe_size;
	struct sbuf *b[2] = { NULL, NULL };
	struct iovec iov[2];
	int count = 0, r;

	pthread_mutex_lock(&f->lock);
	uint64_t size = atomic_load(&f->size);
	if (off >= size || len == 0) {
		pthread_mutex_unlock(&f->lock);
		return fn(ctx, iov, 0);
	}
	len = (size_t)TESSERA_MIN((uint64_t)len, size - off);
	uint64_t first = off / S, last = (off + len - 1) / S;
	if (first == last && off != f->seq_next && len <= META_CHUNK_SIZE && !find_buf(f, first)) {
		/* A small random read: fetch just its bytes, without the lock. */
		f->seq_next = off + len;
		pthread_mutex_unlock(&f->lock);
		uint8_t *tmp = malloc(len);
		if (tmp && read_ranged(f, off, len, tmp) == 0) {
			struct iovec one = { .iov_base = tmp, .iov_len = len };
			r = fn(ctx, &one, 1);
			free(tmp);
			return r;
		}
		free(tmp);
		pthread_mutex_lock(&f->lock);
		size = atomic_load(&f->size);
		if (off >= size) {
			pthread_mutex_unlock(&f->lock);
			return fn(ctx, iov, 0);
		}
		len = (size_t)TESSERA_MIN((uint64_t)len, size - off);
		last = (off + len - 1) / S;
	}
	if (last - first > 1) {
		/* Spans more stripes than can be pinned at once (a tiny stripe size): copy. */
		pthread_mutex_unlock(&f->lock);
		uint8_t *tmp = malloc(len);
		if (!tmp)
			return -ENOMEM;
		ssize_t n = data_read(f, off, tmp, len);
		struct iovec one = { .iov_base = tmp, .iov_len = n > 0 ? (size_t)n : 0 };
		r = n < 0 ? (int)n : fn(ctx, &one, 1);
		free(tmp);
		return r;
	}
	for (uint64_t idx = first; idx <= last; idx++) {
		r = get_buf(f, idx, true, &b[count]);
		if (r < 0)
			goto out;
		b[count]->pins++;
		uint64_t lo = TESSERA_MAX(off, idx * S), hi = TESSERA_MIN(off + len, (idx + 1) * S);
		ensure_filled(b[count], (size_t)(hi - idx * S));
		iov[count].iov_base = b[count]->data + (lo - idx * S);
		iov[count].iov_len = (size_t)(hi - lo);
		count++;
	}
	r = fn(ctx, iov, count);
	if (off == f->seq_next && d->cfg.readahead)
		readahead(f, last);
	f->seq_next = off + len;
out:
	for (int i = 0; i < count; i++)
		b[i]->pins--;
	pthread_mutex_unlock(&f->lock);
	return r;
}

ssize_t data_write(struct data_file *f, uint64_t off, const void *buf, size_t len)
{
	struct data *d = f->d;
	size_t done = 0;
	int r = 0;

	if (off > DATA_MAX_FILE_SIZE || len > DATA_MAX_FILE_SIZE - off)
		return -EFBIG;
	pthread_mutex_lock(&f->lock);
	while (done < len) {
		uint64_t pos = off + done, idx = pos / d->stripe_size;
		size_t so = (size_t)(pos % d->stripe_size);
		size_t n = TESSERA_MIN(len - done, (size_t)d->stripe_size - so);
		bool whole = so == 0 && n == d->stripe_size;
		struct sbuf *b;

		r = get_buf(f, idx, !whole, &b);
		if (r < 0)
			break;
		ensure_filled(b, so);
		memcpy(b->data + so, (const uint8_t *)buf + done, n);
		b->filled = TESSERA_MAX(b->filled, so + n);
		b->state = SB_DIRTY;
		done += n;
		if (pos + n > atomic_load(&f->size))
			atomic_store(&f->size, pos + n);
		atomic_store(&f->mtime_ns, tclock_realtime_ns());
		f->attr_dirty = true;
		/* Written to its end: store it while the application goes on. */
		if (so + n == d->stripe_size) {
			r = submit_store(f, b);
			if (r < 0)
				break;
		}
	}
	pthread_mutex_unlock(&f->lock);
	if (r < 0 && done == 0)
		return r;
	return (ssize_t)done; /* D5: what was buffered stays dirty */
}

static int flush_locked(struct data_file *f)
{
	struct data *d = f->d;
	int r = 0;

	/* Lower stripes first, so that a crash tends to leave a prefix of the file. */
	for (;;) {
		struct sbuf *b = NULL;
		for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
			struct sbuf *c = &f->bufs[i];
			if (c->state == SB_DIRTY && !c->error && (!b || c->idx < b->idx))
				b = c;
		}
		if (!b) {
			/* Retry the ones that failed before, once. */
			for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
				struct sbuf *c = &f->bufs[i];
				if (c->state == SB_DIRTY && c->error) {
					c->error = 0;
					b = c;
					break;
				}
			}
			if (!b)
				break;
		}
		r = submit_store(f, b);
		if (r < 0)
			return r;
	}
	wait_idle(f);
	for (int i = 0; i < DATA_FILE_BUFFERS; i++)
		if (f->bufs[i].state == SB_DIRTY)
			return f->bufs[i].error ? f->bufs[i].error : -EIO;
	if (f->attr_dirty) {
		struct meta_batch *batch = meta_batch_new(d->meta);
		if (!batch)
			return -ENOMEM;
		r = commit_with_attr(f, batch, UINT64_MAX, false);
		meta_batch_free(batch);
		if (r < 0 && r != -ENOENT)
			return r;
		f->attr_dirty = false;
		f->unsynced = true;
	}
	if (f->unsynced) { /* D6 */
		r = meta_sync(d->meta);
		if (r < 0)
			return r;
		f->unsynced = false;
	}
	return 0;
}

int data_flush(struct data_file *f)
{
	int r;

	pthread_mutex_lock(&f->lock);
	r = flush_locked(f);
	pthread_mutex_unlock(&f->lock);
	return r;
}

/* Sets the size; file lock held. */
static int truncate_locked(struct data_file *f, uint64_t size)
{
	struct data *d = f->d;
	const uint64_t S = d->stripe_size;
	struct meta_batch *batch = NULL;
	struct meta_stripe rec;
	uint8_t *inl = NULL;
	size_t inl_len;
	int r;

	wait_idle(f); /* no store or load may run across the change */
	batch = meta_batch_new(d->meta);
	if (!batch) {
		r = -ENOMEM;
		goto out;
	}
	uint64_t first_gone = (size + S - 1) / S; /* first stripe wholly past the end */
	r = stripe_release(d->meta, f->ino, first_gone, 0, batch);
	if (r < 0)
		goto out;
	if (size % S) {
		/* The stripe holding the new end keeps its fragments; its data_len shrinks so
		 * that the bytes past the end read as zeros from now on. */
		uint64_t idx = size / S;
		r = meta_stripe_get(d->meta, f->ino, idx, &rec);
		if (r == 0 && rec.data_len > size % S) {
			rec.data_len = (uint32_t)(size % S);
			meta_batch_stripe_put(batch, f->ino, idx, &rec);
		} else if (r < 0 && r != -ENOENT) {
			goto out;
		}
	}
	/* An inline stripe 0 is cut the same way. */
	inl = malloc(META_INLINE_MAX);
	if (!inl) {
		r = -ENOMEM;
		goto out;
	}
	r = meta_inline_get(d->meta, f->ino, inl, META_INLINE_MAX, &inl_len);
	if (r == 0 && inl_len > size)
		meta_batch_inline_put(batch, f->ino, inl, (size_t)size);
	else if (r < 0 && r != -ENOENT)
		goto out;
	atomic_store(&f->size, size);
	atomic_store(&f->mtime_ns, tclock_realtime_ns());
	r = commit_with_attr(f, batch, UINT64_MAX, true);
	if (r < 0)
		goto out;
	f->attr_dirty = false;
	f->unsynced = true;
	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		struct sbuf *b = &f->bufs[i];
		if (b->state == SB_FREE)
			continue;
		if (b->idx * S >= size) {
			b->state = SB_FREE;
			b->error = 0;
		} else if ((b->idx + 1) * S > size) {
			b->filled = TESSERA_MIN(b->filled, (size_t)(size - b->idx * S));
		}
	}
	data_gc_kick(d);
out:
	free(inl);
	meta_batch_free(batch);
	return r;
}

int data_truncate(struct data_file *f, uint64_t size)
{
	int r;

	if (size > DATA_MAX_FILE_SIZE)
		return -EFBIG;
	pthread_mutex_lock(&f->lock);
	r = truncate_locked(f, size);
	pthread_mutex_unlock(&f->lock);
	return r;
}

int data_allocate(struct data_file *f, uint64_t end)
{
	int r = 0;

	if (end > DATA_MAX_FILE_SIZE)
		return -EFBIG;
	pthread_mutex_lock(&f->lock);
	if (end > atomic_load(&f->size))
		r = truncate_locked(f, end);
	pthread_mutex_unlock(&f->lock);
	return r;
}

int data_punch_hole(struct data_file *f, uint64_t off, uint64_t len)
{
	struct data *d = f->d;
	const uint64_t S = d->stripe_size;
	struct meta_batch *batch = NULL;
	uint8_t *zeros = NULL;
	int r = 0;

	uint64_t size = atomic_load(&f->size);
	if (off >= size || len == 0)
		return 0;
	uint64_t end = off + TESSERA_MIN(len, size - off);
	uint64_t first_whole = (off + S - 1) / S, end_whole = end / S; /* [first, end) */

	/* The partial stripes at the edges: zeros written like any data. */
	uint64_t edges[2][2] = { { off, TESSERA_MIN(end, first_whole * S) },
				 { TESSERA_MAX(off, end_whole * S), end } };
	for (int e = 0; e < 2; e++) {
		uint64_t a = edges[e][0], b = edges[e][1];
		if (a >= b || (e == 1 && a < edges[0][1]))
			continue;
		if (!zeros && !(zeros = calloc(1, S))) {
			r = -ENOMEM;
			goto out;
		}
		ssize_t n = data_write(f, a, zeros, (size_t)(b - a));
		if (n < 0) {
			r = (int)n;
			goto out;
		}
	}
	if (first_whole >= end_whole)
		goto out;

	/* The whole stripes: released like a truncation of the middle of the file. */
	pthread_mutex_lock(&f->lock);
	wait_idle(f);
	batch = meta_batch_new(d->meta);
	if (!batch) {
		r = -ENOMEM;
		goto unlock;
	}
	r = stripe_release(d->meta, f->ino, first_whole, end_whole, batch);
	if (r < 0)
		goto unlock;
	if (first_whole == 0)
		meta_batch_inline_del(batch, f->ino);
	atomic_store(&f->mtime_ns, tclock_realtime_ns());
	r = commit_with_attr(f, batch, UINT64_MAX, true);
	if (r < 0)
		goto unlock;
	f->attr_dirty = false;
	f->unsynced = true;
	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		struct sbuf *b = &f->bufs[i];
		if (b->state != SB_FREE && b->idx >= first_whole && b->idx < end_whole) {
			b->state = SB_FREE;
			b->error = 0;
		}
	}
	data_gc_kick(d);
unlock:
	pthread_mutex_unlock(&f->lock);
out:
	meta_batch_free(batch);
	free(zeros);
	return r;
}

struct seek_ctx {
	uint64_t next;  /* the next stripe index expected in a run of stored stripes */
	uint64_t found; /* SEEK_DATA: first stored stripe; SEEK_HOLE: first missing one */
	bool data;
	bool done;
};

static int seek_one(void *arg, uint64_t stripe, const struct meta_stripe *s)
{
	struct seek_ctx *c = arg;

	if (c->data) {
		c->found = stripe;
		c->done = true;
		return 1;
	}
	if (stripe != c->next) {
		c->found = c->next;
		c->done = true;
		return 1;
	}
	c->next = stripe + 1;
	return 0;
}

int64_t data_seek(struct data_file *f, uint64_t off, bool data)
{
	struct data *d = f->d;
	const uint64_t S = d->stripe_size;
	int64_t r;

	pthread_mutex_lock(&f->lock);
	uint64_t size = atomic_load(&f->size);
	if (off >= size) {
		r = -ENXIO;
		goto out;
	}
	/* Walk stripe by stripe from off: buffered stripes are data, then stored ones. */
	for (uint64_t idx = off / S; idx * S < size;) {
		bool is_data = find_buf(f, idx) != NULL;
		size_t len;
		if (!is_data && idx == 0 && meta_inline_get(d->meta, f->ino, NULL, 0, &len) == 0)
			is_data = true;
		if (!is_data) {
			struct seek_ctx c = { .next = idx, .data = data };
			int lr = meta_stripe_list(d->meta, f->ino, idx, seek_one, &c);
			if (lr < 0) {
				r = -EIO;
				goto out;
			}
			if (data) {
				/* The next stored stripe, unless a buffered one comes first. */
				uint64_t next = c.done ? c.found : UINT64_MAX;
				for (int i = 0; i < DATA_FILE_BUFFERS; i++)
					if (f->bufs[i].state != SB_FREE && f->bufs[i].idx >= idx &&
					    f->bufs[i].idx < next)
						next = f->bufs[i].idx;
				if (next == UINT64_MAX || next * S >= size) {
					r = -ENXIO;
					goto out;
				}
				idx = next;
				is_data = true;
			} else if (c.next > idx) {
				/* A run of stored stripes: go on after it. */
				idx = c.next;
				continue;
			}
		}
		if (is_data == data) {
			r = (int64_t)TESSERA_MAX(off, idx * S);
			goto out;
		}
		idx++;
	}
	r = data ? -ENXIO : (int64_t)size; /* the end of the file is a hole */
out:
	pthread_mutex_unlock(&f->lock);
	return r;
}

/* ---------------------------------------------------------------- garbage */

void data_gc_kick(struct data *d)
{
	pthread_mutex_lock(&d->gc_lock);
	d->gc_kicked = true;
	pthread_cond_signal(&d->gc_cond);
	pthread_mutex_unlock(&d->gc_lock);
}

static void *gc_main(void *arg)
{
	struct data *d = arg;

	for (;;) {
		pthread_mutex_lock(&d->gc_lock);
		if (!d->gc_kicked && !d->gc_stop) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += DATA_GC_PERIOD_S;
			pthread_cond_timedwait(&d->gc_cond, &d->gc_lock, &ts);
		}
		bool stop = d->gc_stop;
		d->gc_kicked = false;
		pthread_mutex_unlock(&d->gc_lock);
		if (stop)
			break;
		struct stripe_gc_pass pass = { .listed = STRIPE_GC_BATCH };
		while (pass.listed == STRIPE_GC_BATCH &&
		       stripe_gc_pass(d->meta, d->bs, &d->ss, NULL, false, 0, false, &pass) == 0 &&
		       pass.settled == STRIPE_GC_BATCH) {
			pthread_mutex_lock(&d->gc_lock);
			stop = d->gc_stop;
			pthread_mutex_unlock(&d->gc_lock);
			if (stop)
				return NULL;
		}
	}
	return NULL;
}

/* ---------------------------------------------------------------- statfs */

int data_check_access(struct data *d, uint16_t *bad, size_t bad_size, size_t *ret_n)
{
	uint16_t ids[META_MAX_SERVERS];
	bool refused[META_MAX_SERVERS];
	char key[PROTO_KEY_MAX];
	size_t n = 0;
	int r;

	for (size_t i = 0; i < d->ss.n; i++)
		ids[i] = d->ss.servers[i].id;
	proto_access_key(key, sizeof(key), d->sb->fs_uuid);
	r = blockstore_check_access(d->bs, ids, d->ss.n, key, refused);
	if (r < 0)
		return r;
	for (size_t i = 0; i < d->ss.n; i++) {
		if (refused[i] && n < bad_size)
			bad[n] = ids[i];
		n += refused[i];
	}
	*ret_n = n;
	return 0;
}

int data_statfs(struct data *d, uint64_t *ret_total, uint64_t *ret_free)
{
	uint64_t total = 0, avail = 0, now = tclock_monotonic_ns();
	size_t answered;
	int r;

	pthread_mutex_lock(&d->statfs_lock);
	if (d->statfs_at_ns && now - d->statfs_at_ns < DATA_STATFS_CACHE_NS) {
		*ret_total = d->statfs_total;
		*ret_free = d->statfs_free;
		pthread_mutex_unlock(&d->statfs_lock);
		return 0;
	}
	pthread_mutex_unlock(&d->statfs_lock);

	r = stripe_servers_capacity(&d->ss, d->bs, &total, &avail, &answered);
	if (r < 0)
		return r;
	if (answered == 0)
		return -EIO;
	/* Usable bytes after the erasure-code overhead. */
	total = total / (d->k + d->m) * d->k;
	avail = avail / (d->k + d->m) * d->k;
	pthread_mutex_lock(&d->statfs_lock);
	d->statfs_at_ns = now;
	d->statfs_total = total;
	d->statfs_free = avail;
	pthread_mutex_unlock(&d->statfs_lock);
	*ret_total = total;
	*ret_free = avail;
	return 0;
}
