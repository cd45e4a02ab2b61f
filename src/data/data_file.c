/*
 * data_file: the file operations: read (buffered or ranged, straight from the
 * fragments), write into the stripe buffers, flush (D5, D6), truncate, allocate, punch a
 * hole, and SEEK_DATA/SEEK_HOLE.
 */
#include "data_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "tessera/common.h"

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
		r = data_get_buf(f, idx, true, &b);
		if (r < 0)
			break;
		data_ensure_filled(b, so + n);
		memcpy((uint8_t *)buf + done, b->data + so, n);
		done += n;
	}
	if (done > 0 && off == f->seq_next && d->cfg.readahead)
		data_readahead(f, idx);
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
	data_frag_key(d, key, sizeof(key), f->ino, idx, rec.version, frag);
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
		data_mark_degraded(d, f->ino, idx, rec.version); /* answered, but with bad bytes */
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
	if (first == last && off != f->seq_next && len <= META_CHUNK_SIZE && !data_find_buf(f, first)) {
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
		r = data_get_buf(f, idx, true, &b[count]);
		if (r < 0)
			goto out;
		b[count]->pins++;
		uint64_t lo = TESSERA_MAX(off, idx * S), hi = TESSERA_MIN(off + len, (idx + 1) * S);
		data_ensure_filled(b[count], (size_t)(hi - idx * S));
		iov[count].iov_base = b[count]->data + (lo - idx * S);
		iov[count].iov_len = (size_t)(hi - lo);
		count++;
	}
	r = fn(ctx, iov, count);
	if (off == f->seq_next && d->cfg.readahead)
		data_readahead(f, last);
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

		r = data_get_buf(f, idx, !whole, &b);
		if (r < 0)
			break;
		data_ensure_filled(b, so);
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
			r = data_submit_store(f, b);
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
		r = data_submit_store(f, b);
		if (r < 0)
			return r;
	}
	data_wait_idle(f);
	for (int i = 0; i < DATA_FILE_BUFFERS; i++)
		if (f->bufs[i].state == SB_DIRTY)
			return f->bufs[i].error ? f->bufs[i].error : -EIO;
	if (f->attr_dirty) {
		struct meta_batch *batch = meta_batch_new(d->meta);
		if (!batch)
			return -ENOMEM;
		r = data_commit_with_attr(f, batch, UINT64_MAX, false);
		meta_batch_free(batch);
		if (r < 0 && r != -ENOENT)
			return r;
		f->attr_dirty = false;
		f->unsynced = true;
	}
	if (f->unsynced) { /* D6; fsync waits for the journal (fs) */
		r = meta_sync_local(d->meta);
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

	data_wait_idle(f); /* no store or load may run across the change */
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
	r = data_commit_with_attr(f, batch, UINT64_MAX, true);
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
	data_wait_idle(f);
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
	r = data_commit_with_attr(f, batch, UINT64_MAX, true);
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
		bool is_data = data_find_buf(f, idx) != NULL;
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
