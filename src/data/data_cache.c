/*
 * data_cache: the stripe buffers of an open file (DATA_FILE_BUFFERS each, within the
 * buffer budget): finding one, choosing a victim to evict (clean first, least recently
 * used), loading a stripe into a buffer, and sequential readahead.
 */
#include "data_int.h"

#include <stdlib.h>

/* ---------------------------------------------------------------- buffers */

struct sbuf *data_find_buf(struct data_file *f, uint64_t idx)
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
int data_get_buf(struct data_file *f, uint64_t idx, bool load, struct sbuf **ret)
{
	struct data *d = f->d;
	struct sbuf *b;
	int r;

	for (;;) {
		b = data_find_buf(f, idx);
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
			r = data_submit_store(f, lru);
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
			r = data_load_stripe(d, f->ino, idx, b->data, &filled);
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
void data_readahead(struct data_file *f, uint64_t idx)
{
	struct data *d = f->d;
	uint64_t size = atomic_load(&f->size);

	for (unsigned a = 1; a <= d->cfg.readahead; a++) {
		uint64_t next = idx + a;
		if (next * d->stripe_size >= size)
			break;
		if (data_find_buf(f, next))
			continue;
		struct sbuf *b = pick_victim(f);
		/* Do not evict what the reader is using now. */
		if (!b || (b->state == SB_CLEAN && b->idx >= idx))
			break;
		b->idx = next;
		b->error = 0;
		b->state = SB_LOADING;
		b->last_use = ++f->tick;
		if (data_submit(f, b, JOB_LOAD) < 0) {
			b->state = SB_FREE;
			break;
		}
	}
}
