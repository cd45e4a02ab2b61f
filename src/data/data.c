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
 *      It does not wait for the metadata journal: fsync does (fs calls meta_sync()).
 *  D7. A store commits a file size no larger than the application's size and never shrinks it
 *      (only data_truncate does), so that stores finishing out of order are harmless.
 *
 * Threads: the FUSE threads call in; `workers` threads run queued stores and prefetches; one
 * garbage thread deletes old fragments. Lock order: file lock, then the inode lock (shared
 * with fs), then files_lock or the queue lock; never the other way round.
 *
 * This file: lifecycle, open files, the garbage thread, statfs. data_int.h lists the others.
 */
#include "data_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"
#include "tessera/placement.h"
#include "tessera/proto.h"

static void *gc_main(void *arg);
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
		if (pthread_create(&d->workers[d->n_workers], NULL, data_worker_main, d) != 0)
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

int data_check_access(struct data *d, uint16_t *bad, int *why, size_t bad_size, size_t *ret_n)
{
	uint16_t ids[META_MAX_SERVERS];
	int refused[META_MAX_SERVERS];
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
		if (!refused[i])
			continue;
		if (n < bad_size) {
			bad[n] = ids[i];
			why[n] = refused[i];
		}
		n++;
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
