/*
 * data: files to erasure-coded stripes and back.
 *
 * Design notes
 * ------------
 * A stripe is written copy-on-write. Its life:
 *
 *   buffered --(store_stripe: codec_encode)--> encoded
 *   encoded  --(store_stripe: blockclient_run PUT x (k+m))--> quorum stored
 *   quorum stored --(store_stripe: meta_commit, synced)--> map committed
 *   map committed --(same batch: meta_batch_garbage_add)--> old version queued for garbage
 *   queued --(gc_thread: DELETE, then meta_batch_garbage_del)--> gone
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
 *  D5. A failed store leaves the stripe dirty in memory and reports the error to the caller of
 *      data_write/data_flush (and through them to write, fsync, close): never dropped.
 *
 * Threads and locks: see include/tessera/data.h. The garbage thread holds no data_file lock.
 */
#include "tessera/data.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockclient.h"
#include "tessera/codec.h"
#include "tessera/common.h"
#include "tessera/meta.h"
#include "tessera/placement.h"
#include "tessera/proto.h"

#define DATA_HASH 256
#define DATA_GC_BATCH 128
#define DATA_GC_PERIOD_S 30
#define DATA_STATFS_CACHE_NS 5000000000ull
#define DATA_MAX_FILE_SIZE ((uint64_t)INT64_MAX)

struct sbuf {
	uint64_t idx;
	bool valid;
	bool dirty;
	uint64_t last_use;
	uint8_t *data; /* stripe_size bytes */
};

struct data_file {
	struct data *d;
	uint64_t ino;
	unsigned refs;           /* under d->files_lock */
	struct data_file *next;  /* hash chain, under d->files_lock */
	pthread_mutex_t lock;
	_Atomic uint64_t size;
	_Atomic uint64_t mtime_ns;
	bool attr_dirty;         /* size/mtime not yet in the inode record */
	uint64_t tick;
	struct sbuf bufs[DATA_FILE_BUFFERS];
};

struct data {
	struct meta *meta;
	struct blockclient *bc;
	pthread_mutex_t *inode_lock;
	const struct meta_superblock *sb;
	struct codec *codec;
	unsigned k, m, quorum;
	uint32_t stripe_size;
	size_t n_servers;
	struct placement_server servers[META_MAX_SERVERS];

	pthread_mutex_t files_lock;
	struct data_file *files[DATA_HASH];

	pthread_t gc_thread;
	bool gc_started;
	pthread_mutex_t gc_lock;
	pthread_cond_t gc_cond;
	bool gc_stop, gc_kicked;

	pthread_mutex_t statfs_lock;
	uint64_t statfs_at_ns, statfs_total, statfs_free;
};

static void *gc_main(void *arg);

int data_new(struct meta *meta, struct blockclient *bc, pthread_mutex_t *inode_lock,
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
	d->meta = meta;
	d->bc = bc;
	d->inode_lock = inode_lock;
	d->sb = sb;
	d->k = sb->k;
	d->m = sb->m;
	d->stripe_size = sb->stripe_size;
	d->quorum = cfg && cfg->write_quorum ? cfg->write_quorum : sb->write_quorum;
	if (d->quorum < d->k)
		d->quorum = d->k;
	if (d->quorum > d->k + d->m)
		d->quorum = d->k + d->m;
	d->n_servers = sb->n_servers;
	for (size_t i = 0; i < sb->n_servers; i++) {
		d->servers[i].id = sb->servers[i].id;
		d->servers[i].weight = sb->servers[i].weight ? sb->servers[i].weight : 1;
		d->servers[i].zone = sb->servers[i].zone;
		d->servers[i].up = true;
	}
	r = codec_new(d->k, d->m, &d->codec);
	if (r < 0) {
		free(d);
		return r;
	}
	pthread_mutex_init(&d->files_lock, NULL);
	pthread_mutex_init(&d->gc_lock, NULL);
	pthread_cond_init(&d->gc_cond, NULL);
	pthread_mutex_init(&d->statfs_lock, NULL);
	if (pthread_create(&d->gc_thread, NULL, gc_main, d) == 0)
		d->gc_started = true;
	*ret = d;
	return 0;
}

static void file_free(struct data_file *f)
{
	for (int i = 0; i < DATA_FILE_BUFFERS; i++)
		free(f->bufs[i].data);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void data_free(struct data *d)
{
	if (!d)
		return;
	for (size_t h = 0; h < DATA_HASH; h++) {
		while (d->files[h]) {
			struct data_file *f = d->files[h];
			d->files[h] = f->next;
			int r = data_flush(f);
			if (r < 0)
				tlog_debug("flush of inode %llu at shutdown failed: %d",
					   (unsigned long long)f->ino, r);
			file_free(f);
		}
	}
	if (d->gc_started) {
		pthread_mutex_lock(&d->gc_lock);
		d->gc_stop = true;
		pthread_cond_signal(&d->gc_cond);
		pthread_mutex_unlock(&d->gc_lock);
		pthread_join(d->gc_thread, NULL);
	}
	codec_free(d->codec);
	pthread_mutex_destroy(&d->files_lock);
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
	atomic_store(&f->size, size);
	atomic_store(&f->mtime_ns, 0);
	*file_slot(d, ino) = f;
	pthread_mutex_unlock(&d->files_lock);
	*ret = f;
	return 0;
}

bool data_close(struct data *d, struct data_file *f)
{
	bool last;

	pthread_mutex_lock(&d->files_lock);
	last = --f->refs == 0;
	if (last)
		*file_slot(d, f->ino) = f->next;
	pthread_mutex_unlock(&d->files_lock);
	if (!last)
		return false;
	int r = data_flush(f);
	if (r < 0)
		tlog_debug("flush of inode %llu at release failed: %d", (unsigned long long)f->ino, r);
	file_free(f);
	return true;
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

/* Checks one fetched fragment against what the stripe map says (D4). */
static bool frag_good(struct data *d, const uint8_t *obj, size_t len, uint64_t ino,
		      uint64_t stripe, const struct meta_stripe *rec, unsigned index)
{
	struct proto_frag_hdr h;

	if (proto_frag_verify(obj, len, d->sb->fs_uuid, &h) < 0)
		return false;
	return h.ino == ino && h.stripe == stripe && h.version == rec->version &&
	       h.index == index && h.k == rec->k && h.m == rec->m &&
	       h.payload_len == rec->frag_len && h.payload_crc == rec->crcs[index];
}

/* Reads stripe `stripe` of ino as described by rec into out (stripe_size bytes; bytes past
 * rec->data_len are zeroed). */
static int fetch_stripe(struct data *d, uint64_t ino, uint64_t stripe,
			const struct meta_stripe *rec, uint8_t *out)
{
	const unsigned n = (unsigned)rec->k + rec->m;
	const size_t fl = rec->frag_len, slot = PROTO_FRAG_HDR_SIZE + fl;
	struct blockclient_op ops[64];
	char keys[64][PROTO_KEY_MAX];
	uint8_t *frags[64];
	unsigned idx_of_op[64];
	uint64_t good = 0, tried = 0;
	uint8_t *buf;
	int r = 0;

	if (rec->k != d->k || rec->m != d->m || n > 64 || fl == 0 || fl > PROTO_MAX_PAYLOAD ||
	    rec->data_len > d->stripe_size || rec->data_len > (uint64_t)fl * rec->k)
		return -EIO;
	buf = malloc(slot * n);
	if (!buf)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++)
		frags[i] = buf + i * slot + PROTO_FRAG_HDR_SIZE;

	/* Round 0: data fragments on servers that are up. Round 1: parity on servers that are
	 * up, as many as are missing. Round 2: everything not tried yet, down servers too. */
	for (int round = 0; round < 3 && __builtin_popcountll(good) < (int)rec->k; round++) {
		unsigned nops = 0;
		int need = (int)rec->k - __builtin_popcountll(good);

		for (unsigned i = 0; i < n && (round == 2 || need > 0); i++) {
			if (!(rec->present & (1ull << i)) || (tried & (1ull << i)))
				continue;
			if (round == 0 && i >= rec->k)
				break;
			if (round < 2 && !blockclient_server_up(d->bc, rec->servers[i]))
				continue;
			frag_key(d, keys[nops], sizeof(keys[nops]), ino, stripe, rec->version, i);
			ops[nops] = (struct blockclient_op){
				.method = BC_GET, .server = rec->servers[i], .key = keys[nops],
				.buf = buf + i * slot, .buf_size = slot,
			};
			idx_of_op[nops++] = i;
			tried |= 1ull << i;
			if (round == 1)
				need--;
		}
		if (nops == 0)
			continue;
		blockclient_run(d->bc, ops, nops, round == 2);
		for (unsigned j = 0; j < nops; j++) {
			unsigned i = idx_of_op[j];
			if (ops[j].result == 0 &&
			    frag_good(d, buf + i * slot, ops[j].result_len, ino, stripe, rec, i))
				good |= 1ull << i;
			else
				tlog_debug("fragment %u of inode %llu stripe %llu unusable: %d", i,
					   (unsigned long long)ino, (unsigned long long)stripe,
					   ops[j].result);
		}
	}
	if (__builtin_popcountll(good) < (int)rec->k) {
		r = -EIO;
		goto out;
	}
	uint64_t data_mask = (1ull << rec->k) - 1;
	if ((good & data_mask) != data_mask) {
		r = codec_decode(d->codec, frags, good, data_mask & ~good, fl);
		if (r < 0)
			goto out;
	}
	for (unsigned i = 0; i < rec->k; i++) {
		size_t off = (size_t)i * fl;
		if (off >= rec->data_len)
			break;
		memcpy(out + off, frags[i], TESSERA_MIN(fl, rec->data_len - off));
	}
	memset(out + rec->data_len, 0, d->stripe_size - rec->data_len);
out:
	free(buf);
	return r;
}

/* Loads the current contents of stripe idx into b->data. */
static int load_stripe(struct data_file *f, struct sbuf *b, uint64_t idx)
{
	struct data *d = f->d;
	struct meta_stripe rec;
	int r = meta_stripe_get(d->meta, f->ino, idx, &rec);

	if (r == -ENOENT) {
		memset(b->data, 0, d->stripe_size);
		return 0;
	}
	if (r < 0)
		return r;
	return fetch_stripe(d, f->ino, idx, &rec, b->data);
}

/* Adds garbage entries for every stored fragment of rec. */
static void queue_garbage(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			  const struct meta_stripe *rec)
{
	for (unsigned i = 0; i < (unsigned)rec->k + rec->m; i++) {
		if (!(rec->present & (1ull << i)))
			continue;
		struct meta_garbage g = { .ino = ino, .stripe = stripe, .version = rec->version,
					  .index = (uint8_t)i, .server = rec->servers[i] };
		meta_batch_garbage_add(b, &g);
	}
}

/* Writes the inode's size and mtime (and ctime) from f into the batch. Called with the inode
 * lock held. Returns 0, -ENOENT when the inode is gone, -EIO. */
static int put_inode_attr(struct data_file *f, struct meta_batch *b, bool ctime)
{
	struct meta_inode in;
	int r = meta_inode_get(f->d->meta, f->ino, &in);

	if (r < 0)
		return r;
	in.size = atomic_load(&f->size);
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
		blockclient_run(d->bc, dels, nd, false);
}

/* Stores a dirty buffer as a new stripe version and commits the map (the stripe-write state
 * diagram at the top of this file). On error the buffer stays dirty (D5). */
static int store_stripe(struct data_file *f, struct sbuf *b)
{
	struct data *d = f->d;
	const unsigned k = d->k, n = d->k + d->m;
	const uint64_t size = atomic_load(&f->size);
	const uint64_t start = b->idx * d->stripe_size;
	struct blockclient_op ops[64];
	char keys[64][PROTO_KEY_MAX];
	uint16_t ids[64];
	uint8_t *enc = NULL, *dptr[64], *pptr[64];
	struct meta_stripe rec, old;
	struct meta_batch *batch = NULL;
	bool have_old;
	int r, chosen, stored = 0, nospc = 0;

	if (start >= size) {
		/* Truncated away while buffered: nothing to store. */
		b->dirty = false;
		return 0;
	}
	uint32_t data_len = (uint32_t)TESSERA_MIN((uint64_t)d->stripe_size, size - start);
	size_t fl = codec_frag_len(d->codec, data_len), slot = PROTO_FRAG_HDR_SIZE + fl;

	r = meta_stripe_get(d->meta, f->ino, b->idx, &old);
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

	struct placement_server servers[META_MAX_SERVERS];
	memcpy(servers, d->servers, d->n_servers * sizeof(servers[0]));
	for (size_t i = 0; i < d->n_servers; i++)
		servers[i].up = blockclient_server_up(d->bc, servers[i].id);
	chosen = placement_choose(servers, d->n_servers, placement_seed(f->ino, b->idx), n, d->m,
				  ids);
	if (chosen < (int)d->quorum) {
		tlog_debug("inode %llu stripe %llu: only %d servers up, quorum %u",
			   (unsigned long long)f->ino, (unsigned long long)b->idx, chosen,
			   d->quorum);
		return chosen < 0 ? chosen : -EIO;
	}

	enc = calloc(n, slot);
	if (!enc)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		uint8_t *p = enc + i * slot + PROTO_FRAG_HDR_SIZE;
		if (i < k) {
			size_t off = (size_t)i * fl;
			if (off < data_len)
				memcpy(p, b->data + off, TESSERA_MIN(fl, data_len - off));
			dptr[i] = p;
		} else {
			pptr[i - k] = p;
		}
	}
	codec_encode(d->codec, dptr, pptr, fl);

	for (unsigned i = 0; i < (unsigned)chosen; i++) {
		uint8_t *obj = enc + i * slot;
		struct proto_frag_hdr h = {
			.ino = f->ino, .stripe = b->idx, .version = rec.version,
			.index = (uint8_t)i, .k = (uint8_t)k, .m = (uint8_t)d->m,
			.matrix = PROTO_MATRIX_CAUCHY, .payload_len = (uint32_t)fl,
			.payload_crc = tcrc32c(0, obj + PROTO_FRAG_HDR_SIZE, fl),
			.stripe_len = data_len,
		};
		memcpy(h.fs_uuid, d->sb->fs_uuid, 16);
		proto_frag_hdr_encode(&h, obj);
		rec.crcs[i] = h.payload_crc;
		rec.servers[i] = ids[i];
		frag_key(d, keys[i], sizeof(keys[i]), f->ino, b->idx, rec.version, i);
		ops[i] = (struct blockclient_op){ .method = BC_PUT, .server = ids[i],
						  .key = keys[i], .body = obj, .body_len = slot };
	}
	blockclient_run(d->bc, ops, (size_t)chosen, false);
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
			   (unsigned long long)f->ino, (unsigned long long)b->idx, stored, n,
			   d->quorum);
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
	meta_batch_stripe_put(batch, f->ino, b->idx, &rec);
	if (have_old)
		queue_garbage(batch, f->ino, b->idx, &old); /* D2 */
	pthread_mutex_lock(d->inode_lock);
	r = put_inode_attr(f, batch, false);
	if (r == 0)
		r = meta_commit(d->meta, batch, true);
	pthread_mutex_unlock(d->inode_lock);
	if (r == -ENOENT) {
		/* The inode was removed meanwhile: what we stored is garbage, not an error. */
		delete_stored(d, ops, (unsigned)chosen);
		r = 0;
	} else if (r < 0) {
		delete_stored(d, ops, (unsigned)chosen);
		goto out;
	}
	b->dirty = false;
	f->attr_dirty = false;
	if (have_old)
		data_gc_kick(d);
out:
	meta_batch_free(batch);
	free(enc);
	return r;
}

/* ---------------------------------------------------------------- buffers */

/* Returns the buffer holding stripe idx, loading it when `load` (else it starts zeroed),
 * evicting (and storing) the least recently used one when needed. */
static int get_buf(struct data_file *f, uint64_t idx, bool load, struct sbuf **ret)
{
	struct data *d = f->d;
	struct sbuf *b = NULL;
	int r;

	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		if (f->bufs[i].valid && f->bufs[i].idx == idx) {
			b = &f->bufs[i];
			goto found;
		}
	}
	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		struct sbuf *c = &f->bufs[i];
		if (!c->valid) {
			b = c;
			break;
		}
		if (!b || c->last_use < b->last_use)
			b = c;
	}
	if (b->valid && b->dirty) {
		r = store_stripe(f, b);
		if (r < 0)
			return r;
	}
	b->valid = false;
	if (!b->data) {
		b->data = malloc(d->stripe_size);
		if (!b->data)
			return -ENOMEM;
	}
	if (load && idx * d->stripe_size < atomic_load(&f->size)) {
		r = load_stripe(f, b, idx);
		if (r < 0)
			return r;
	} else {
		memset(b->data, 0, d->stripe_size);
	}
	b->idx = idx;
	b->valid = true;
	b->dirty = false;
found:
	b->last_use = ++f->tick;
	*ret = b;
	return 0;
}

ssize_t data_read(struct data_file *f, uint64_t off, void *buf, size_t len)
{
	struct data *d = f->d;
	size_t done = 0;
	int r = 0;

	pthread_mutex_lock(&f->lock);
	uint64_t size = atomic_load(&f->size);
	if (off >= size)
		goto out;
	len = (size_t)TESSERA_MIN((uint64_t)len, size - off);
	while (done < len) {
		uint64_t pos = off + done, idx = pos / d->stripe_size;
		size_t so = (size_t)(pos % d->stripe_size);
		size_t n = TESSERA_MIN(len - done, (size_t)d->stripe_size - so);
		struct sbuf *b;

		r = get_buf(f, idx, true, &b);
		if (r < 0)
			break;
		memcpy((uint8_t *)buf + done, b->data + so, n);
		done += n;
	}
out:
	pthread_mutex_unlock(&f->lock);
	return done > 0 || r == 0 ? (ssize_t)done : r;
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
		memcpy(b->data + so, (const uint8_t *)buf + done, n);
		b->dirty = true;
		done += n;
		if (pos + n > atomic_load(&f->size))
			atomic_store(&f->size, pos + n);
		atomic_store(&f->mtime_ns, tclock_realtime_ns());
		f->attr_dirty = true;
	}
	pthread_mutex_unlock(&f->lock);
	if (r < 0)
		return r; /* D5: what was buffered before the error stays dirty */
	return (ssize_t)done;
}

static int flush_locked(struct data_file *f)
{
	bool tried[DATA_FILE_BUFFERS] = { false };
	int first_err = 0;

	/* Lower stripes first, so that a crash leaves a prefix of the file. A stripe that fails
	 * stays dirty (D5); the others are still tried, and the first error is reported. */
	for (;;) {
		int best = -1;
		for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
			struct sbuf *c = &f->bufs[i];
			if (c->valid && c->dirty && !tried[i] &&
			    (best < 0 || c->idx < f->bufs[best].idx))
				best = i;
		}
		if (best < 0)
			break;
		tried[best] = true;
		int r = store_stripe(f, &f->bufs[best]);
		if (r < 0 && !first_err)
			first_err = r;
	}
	if (first_err)
		return first_err;
	if (f->attr_dirty) {
		struct meta_batch *batch = meta_batch_new(f->d->meta);
		int r;
		if (!batch)
			return -ENOMEM;
		pthread_mutex_lock(f->d->inode_lock);
		r = put_inode_attr(f, batch, false);
		if (r == 0)
			r = meta_commit(f->d->meta, batch, true);
		pthread_mutex_unlock(f->d->inode_lock);
		meta_batch_free(batch);
		if (r < 0 && r != -ENOENT)
			return r;
		f->attr_dirty = false;
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

struct trunc_ctx {
	struct meta_batch *b;
	uint64_t ino;
};

static int trunc_one(void *arg, uint64_t stripe, const struct meta_stripe *s)
{
	struct trunc_ctx *t = arg;

	meta_batch_stripe_del(t->b, t->ino, stripe);
	queue_garbage(t->b, t->ino, stripe, s);
	return 0;
}

int data_truncate(struct data_file *f, uint64_t size)
{
	struct data *d = f->d;
	const uint64_t S = d->stripe_size;
	struct meta_batch *batch;
	struct meta_stripe rec;
	int r;

	if (size > DATA_MAX_FILE_SIZE)
		return -EFBIG;
	pthread_mutex_lock(&f->lock);
	batch = meta_batch_new(d->meta);
	if (!batch) {
		r = -ENOMEM;
		goto out;
	}
	uint64_t first_gone = (size + S - 1) / S; /* first stripe wholly past the end */
	struct trunc_ctx t = { .b = batch, .ino = f->ino };
	r = meta_stripe_list(d->meta, f->ino, first_gone, trunc_one, &t);
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
	atomic_store(&f->size, size);
	atomic_store(&f->mtime_ns, tclock_realtime_ns());
	pthread_mutex_lock(d->inode_lock);
	r = put_inode_attr(f, batch, true);
	if (r == 0)
		r = meta_commit(d->meta, batch, true);
	pthread_mutex_unlock(d->inode_lock);
	if (r < 0)
		goto out;
	f->attr_dirty = false;
	for (int i = 0; i < DATA_FILE_BUFFERS; i++) {
		struct sbuf *b = &f->bufs[i];
		if (!b->valid)
			continue;
		if (b->idx * S >= size) {
			b->valid = false;
			b->dirty = false;
		} else if ((b->idx + 1) * S > size) {
			memset(b->data + (size - b->idx * S), 0, (size_t)((b->idx + 1) * S - size));
		}
	}
	data_gc_kick(d);
out:
	meta_batch_free(batch);
	pthread_mutex_unlock(&f->lock);
	return r;
}

int data_release_stripes(struct data *d, uint64_t ino, struct meta_batch *b)
{
	struct trunc_ctx t = { .b = b, .ino = ino };

	return meta_stripe_list(d->meta, ino, 0, trunc_one, &t);
}

/* ---------------------------------------------------------------- garbage */

void data_gc_kick(struct data *d)
{
	pthread_mutex_lock(&d->gc_lock);
	d->gc_kicked = true;
	pthread_cond_signal(&d->gc_cond);
	pthread_mutex_unlock(&d->gc_lock);
}

struct gc_ctx {
	unsigned n;
	uint64_t seq[DATA_GC_BATCH];
	struct meta_garbage g[DATA_GC_BATCH];
};

static int gc_collect(void *arg, uint64_t seq, const struct meta_garbage *g)
{
	struct gc_ctx *c = arg;

	c->seq[c->n] = seq;
	c->g[c->n] = *g;
	return ++c->n == DATA_GC_BATCH ? 1 : 0;
}

/* Deletes one batch of queued fragments. Returns how many entries were settled. */
static unsigned gc_pass(struct data *d)
{
	struct gc_ctx *c = calloc(1, sizeof(*c));
	struct blockclient_op *ops = NULL;
	char (*keys)[PROTO_KEY_MAX] = NULL;
	struct meta_batch *b = NULL;
	unsigned settled = 0;

	if (!c || meta_garbage_list(d->meta, gc_collect, c) < 0 || c->n == 0)
		goto out;
	ops = calloc(c->n, sizeof(*ops));
	keys = calloc(c->n, sizeof(*keys));
	b = meta_batch_new(d->meta);
	if (!ops || !keys || !b)
		goto out;
	for (unsigned i = 0; i < c->n; i++) {
		frag_key(d, keys[i], sizeof(keys[i]), c->g[i].ino, c->g[i].stripe,
			 c->g[i].version, c->g[i].index);
		ops[i] = (struct blockclient_op){ .method = BC_DELETE, .server = c->g[i].server,
						  .key = keys[i] };
	}
	blockclient_run(d->bc, ops, c->n, false);
	for (unsigned i = 0; i < c->n; i++) {
		if (ops[i].result == 0 || ops[i].result == -ENOENT) {
			meta_batch_garbage_del(b, c->seq[i]);
			settled++;
		}
	}
	if (settled && meta_commit(d->meta, b, false) < 0)
		settled = 0;
out:
	meta_batch_free(b);
	free(keys);
	free(ops);
	free(c);
	return settled;
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
		while (gc_pass(d) == DATA_GC_BATCH) {
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

/* Sums every `"name":NUMBER` in a JSON text: good enough for blockd's flat status document. */
static uint64_t json_sum(const char *json, const char *name)
{
	char pat[64];
	uint64_t sum = 0;
	size_t pl = (size_t)snprintf(pat, sizeof(pat), "\"%s\":", name);

	for (const char *p = strstr(json, pat); p; p = strstr(p + pl, pat)) {
		const char *q = p + pl;
		while (*q == ' ')
			q++;
		sum += strtoull(q, NULL, 10);
	}
	return sum;
}

int data_statfs(struct data *d, uint64_t *ret_total, uint64_t *ret_free)
{
	enum { STATUS_MAX = 16384 };
	struct blockclient_op ops[META_MAX_SERVERS];
	char *bufs = NULL;
	uint64_t total = 0, avail = 0, now = tclock_monotonic_ns();
	int ok = 0;

	pthread_mutex_lock(&d->statfs_lock);
	if (d->statfs_at_ns && now - d->statfs_at_ns < DATA_STATFS_CACHE_NS) {
		*ret_total = d->statfs_total;
		*ret_free = d->statfs_free;
		pthread_mutex_unlock(&d->statfs_lock);
		return 0;
	}
	pthread_mutex_unlock(&d->statfs_lock);

	bufs = calloc(d->n_servers, STATUS_MAX + 1);
	if (!bufs)
		return -ENOMEM;
	for (size_t i = 0; i < d->n_servers; i++)
		ops[i] = (struct blockclient_op){ .method = BC_GET, .server = d->servers[i].id,
						  .key = "-/status", .raw_path = true,
						  .buf = bufs + i * (STATUS_MAX + 1),
						  .buf_size = STATUS_MAX };
	blockclient_run(d->bc, ops, d->n_servers, false);
	for (size_t i = 0; i < d->n_servers; i++) {
		if (ops[i].result != 0)
			continue;
		char *s = bufs + i * (STATUS_MAX + 1);
		s[ops[i].result_len] = '\0';
		total += json_sum(s, "capacity");
		avail += json_sum(s, "free");
		ok++;
	}
	free(bufs);
	if (!ok)
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
