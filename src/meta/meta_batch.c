/*
 * meta_batch: building and committing WriteBatches (invariants 1 and 2 in meta.c): one
 * batch per namespace change, applied atomically by meta_commit(), synced when asked.
 */
#include "meta_db.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "tessera/common.h"

/* ---- batches ---- */

struct meta_batch *meta_batch_new(struct meta *m)
{
	struct meta_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->m = m;
	b->wb = rocksdb_writebatch_create();
	return b;
}

void meta_batch_free(struct meta_batch *b)
{
	if (!b)
		return;
	rocksdb_writebatch_destroy(b->wb);
	free(b->jbuf);
	free(b);
}

void meta_batch_put(struct meta_batch *b, int cf, const void *key, size_t klen,
		    const void *val, size_t vlen)
{
	rocksdb_writebatch_put_cf(b->wb, b->m->cf[cf], key, klen, val, vlen);
	meta_journal_record(b, 0, cf, key, klen, val, vlen);
}

void meta_batch_del(struct meta_batch *b, int cf, const void *key, size_t klen)
{
	rocksdb_writebatch_delete_cf(b->wb, b->m->cf[cf], key, klen);
	meta_journal_record(b, 1, cf, key, klen, NULL, 0);
}

/* Marks the batch invalid: meta_commit() will refuse it rather than write a bad record. */
void meta_batch_poison(struct meta_batch *b, const char *what)
{
	tlog_debug("meta: batch: invalid %s", what);
	if (b->err == 0)
		b->err = -EINVAL;
}

void meta_batch_inode_put(struct meta_batch *b, const struct meta_inode *in)
{
	uint8_t key[8], val[META_INODE_ENC_SIZE];

	if (in->ino == 0) {
		meta_batch_poison(b, "inode 0");
		return;
	}
	be_put64(key, in->ino);
	meta_inode_encode(in, val, sizeof(val));
	meta_batch_put(b, CF_INODES, key, sizeof(key), val, sizeof(val));
}

void meta_batch_inode_del(struct meta_batch *b, uint64_t ino)
{
	uint8_t key[8];

	be_put64(key, ino);
	meta_batch_del(b, CF_INODES, key, sizeof(key));
}

void meta_batch_dentry_put(struct meta_batch *b, uint64_t parent, const char *name,
			   size_t name_len, uint64_t ino, uint32_t mode)
{
	uint8_t key[META_DENTRY_KEY_MAX], val[META_DENTRY_VAL_SIZE];
	size_t klen;

	if (name_len == 0 || name_len > META_NAME_MAX || ino == 0) {
		meta_batch_poison(b, "directory entry");
		return;
	}
	klen = meta_dentry_key(key, parent, name, name_len);
	be_put64(val, ino);
	be_put32(val + 8, mode & S_IFMT);
	meta_batch_put(b, CF_DENTRIES, key, klen, val, sizeof(val));
}

void meta_batch_dentry_del(struct meta_batch *b, uint64_t parent, const char *name,
			   size_t name_len)
{
	uint8_t key[META_DENTRY_KEY_MAX];
	size_t klen;

	if (name_len == 0 || name_len > META_NAME_MAX) {
		meta_batch_poison(b, "directory entry");
		return;
	}
	klen = meta_dentry_key(key, parent, name, name_len);
	meta_batch_del(b, CF_DENTRIES, key, klen);
}

void meta_batch_stripe_put(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			   const struct meta_stripe *s)
{
	uint8_t key[16], val[META_STRIPE_ENC_MAX];
	size_t len = meta_stripe_encode(s, val, sizeof(val));

	/* the decoder's consistency checks, applied before anything is written */
	if (len == 0 || meta_stripe_decode(val, len, &(struct meta_stripe){ 0 }) < 0) {
		meta_batch_poison(b, "stripe record");
		return;
	}
	meta_stripe_key(key, ino, stripe);
	meta_batch_put(b, CF_STRIPES, key, sizeof(key), val, len);
}

void meta_batch_stripe_del(struct meta_batch *b, uint64_t ino, uint64_t stripe)
{
	uint8_t key[16];

	meta_stripe_key(key, ino, stripe);
	meta_batch_del(b, CF_STRIPES, key, sizeof(key));
	meta_batch_del(b, CF_CHUNKS, key, sizeof(key)); /* the stripe's chunk sums go with it */
}

/* chunks value: version(8) k(1) per_frag(2) then k * per_frag crc32c (4 each), big-endian,
 * fragment-major. */
void meta_batch_chunks_put(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			   uint64_t version, unsigned k, unsigned per_frag, const uint32_t *crcs)
{
	uint8_t key[16], *val;
	size_t n = (size_t)k * per_frag, len = 11 + 4 * n;

	if (k == 0 || k > 64 || per_frag == 0 || per_frag > META_CHUNKS_PER_FRAG_MAX) {
		meta_batch_poison(b, "chunks");
		return;
	}
	val = malloc(len);
	if (!val) {
		meta_batch_poison(b, "chunks");
		return;
	}
	be_put64(val, version);
	val[8] = (uint8_t)k;
	be_put16(val + 9, (uint16_t)per_frag);
	for (size_t i = 0; i < n; i++)
		be_put32(val + 11 + 4 * i, crcs[i]);
	meta_stripe_key(key, ino, stripe);
	meta_batch_put(b, CF_CHUNKS, key, sizeof(key), val, len);
	free(val);
}

int meta_chunk_crc_get(struct meta *m, uint64_t ino, uint64_t stripe, uint64_t version,
		       unsigned frag, unsigned chunk, uint32_t *ret)
{
	rocksdb_pinnableslice_t *v = NULL;
	uint8_t key[16];
	const uint8_t *p;
	size_t len;
	int r;

	meta_stripe_key(key, ino, stripe);
	r = meta_db_get(m, CF_CHUNKS, key, sizeof(key), &v);
	if (r < 0)
		goto out;
	p = meta_slice_value(v, &len);
	if (len < 11) {
		r = -EIO;
		goto out;
	}
	unsigned k = p[8], per = be_get16(p + 9);
	if (len != 11 + 4 * (size_t)k * per) {
		r = -EIO;
		goto out;
	}
	if (be_get64(p) != version || frag >= k || chunk >= per) {
		r = -ENOENT; /* sums of another version, or no such chunk */
		goto out;
	}
	*ret = be_get32(p + 11 + 4 * ((size_t)frag * per + chunk));
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

void meta_batch_xattr_put(struct meta_batch *b, uint64_t ino, const char *name,
			  size_t name_len, const void *value, size_t value_len)
{
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen;

	if (name_len == 0 || name_len > META_XATTR_NAME_MAX || value_len > META_XATTR_SIZE_MAX) {
		meta_batch_poison(b, "xattr");
		return;
	}
	klen = meta_dentry_key(key, ino, name, name_len);
	meta_batch_put(b, CF_XATTRS, key, klen, value_len ? value : "", value_len);
}

void meta_batch_xattr_del(struct meta_batch *b, uint64_t ino, const char *name,
			  size_t name_len)
{
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen;

	if (name_len == 0 || name_len > META_XATTR_NAME_MAX) {
		meta_batch_poison(b, "xattr");
		return;
	}
	klen = meta_dentry_key(key, ino, name, name_len);
	meta_batch_del(b, CF_XATTRS, key, klen);
}

int meta_inline_get(struct meta *m, uint64_t ino, void *buf, size_t size, size_t *ret_len)
{
	uint8_t key[8];

	be_put64(key, ino);
	return meta_get_bytes(m, CF_INLINE, key, sizeof(key), META_INLINE_MAX, buf, size, ret_len);
}

void meta_batch_inline_put(struct meta_batch *b, uint64_t ino, const void *data, size_t len)
{
	uint8_t key[8];

	if (ino == 0 || len > META_INLINE_MAX) {
		meta_batch_poison(b, "inline");
		return;
	}
	be_put64(key, ino);
	meta_batch_put(b, CF_INLINE, key, sizeof(key), len ? data : "", len);
}

void meta_batch_inline_del(struct meta_batch *b, uint64_t ino)
{
	uint8_t key[8];

	be_put64(key, ino);
	meta_batch_del(b, CF_INLINE, key, sizeof(key));
}

void meta_batch_garbage_add(struct meta_batch *b, const struct meta_garbage *g)
{
	uint8_t key[8], val[META_GARBAGE_ENC_SIZE];

	if (g->index >= 64) {
		meta_batch_poison(b, "garbage entry");
		return;
	}
	be_put64(key, atomic_fetch_add(&b->m->garbage_seq, 1));
	meta_garbage_encode(g, val);
	meta_batch_put(b, CF_GARBAGE, key, sizeof(key), val, sizeof(val));
}

void meta_batch_garbage_del(struct meta_batch *b, uint64_t seq)
{
	uint8_t key[8];

	be_put64(key, seq);
	meta_batch_del(b, CF_GARBAGE, key, sizeof(key));
}
