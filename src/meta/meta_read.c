/*
 * meta_read: the metadata store's reads: the superblock, inodes, dentries and directory
 * scans, stripe maps, chunk sums, xattrs, inline data, the garbage queue; and inode number
 * allocation (meta_alloc_ino, invariant 3 in meta.c). Every record is decoded and checked
 * (meta_record.c) before it is returned.
 */
#include "meta_db.h"

#include <errno.h>
#include <string.h>

#include "tessera/common.h"

/* ---- reads ---- */

int meta_inode_get(struct meta *m, uint64_t ino, struct meta_inode *ret)
{
	rocksdb_pinnableslice_t *v = NULL;
	struct meta_inode in;
	uint8_t key[8];
	const uint8_t *p;
	size_t len;
	int r;

	be_put64(key, ino);
	r = meta_db_get(m, CF_INODES, key, sizeof(key), &v);
	if (r < 0)
		goto out;
	p = meta_slice_value(v, &len);
	if (meta_inode_decode(p, len, &in) < 0 || in.ino != ino) {
		tlog_debug("meta: inode %llu: damaged record", (unsigned long long)ino);
		r = -EIO;
		goto out;
	}
	*ret = in;
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

int meta_dentry_get(struct meta *m, uint64_t parent, const char *name, size_t name_len,
		    uint64_t *ret_ino, uint32_t *ret_mode)
{
	rocksdb_pinnableslice_t *v = NULL;
	uint8_t key[META_DENTRY_KEY_MAX];
	const uint8_t *p;
	size_t klen, len;
	int r;

	if (name_len > META_NAME_MAX)
		return -ENAMETOOLONG;
	if (name_len == 0)
		return -ENOENT;
	klen = meta_dentry_key(key, parent, name, name_len);
	r = meta_db_get(m, CF_DENTRIES, key, klen, &v);
	if (r < 0)
		goto out;
	p = meta_slice_value(v, &len);
	if (len != META_DENTRY_VAL_SIZE || be_get64(p) == 0) {
		tlog_debug("meta: dentry in %llu: damaged record", (unsigned long long)parent);
		r = -EIO;
		goto out;
	}
	*ret_ino = be_get64(p);
	if (ret_mode)
		*ret_mode = be_get32(p + 8);
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

struct dentry_scan {
	meta_dentry_fn fn;
	meta_dentry_all_fn fn_all; /* instead of fn: every entry, with its parent */
	void *ctx;
};

static int dentry_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			   size_t vlen)
{
	struct dentry_scan *s = ctx;
	char name[META_NAME_MAX + 1];
	size_t n = klen - 8;

	if (n == 0 || n > META_NAME_MAX || vlen != META_DENTRY_VAL_SIZE) {
		tlog_debug("meta: dentry in %llu: damaged record",
			   (unsigned long long)be_get64(key));
		return -EIO;
	}
	memcpy(name, key + 8, n);
	name[n] = '\0';
	if (s->fn_all)
		return s->fn_all(s->ctx, be_get64(key), name, n, be_get64(val), be_get32(val + 8));
	return s->fn(s->ctx, name, n, be_get64(val), be_get32(val + 8));
}

int meta_dentry_list(struct meta *m, uint64_t parent, const char *after, size_t after_len,
		     meta_dentry_fn fn, void *ctx)
{
	struct dentry_scan s = { .fn = fn, .ctx = ctx };
	uint8_t start[8 + META_NAME_MAX];
	size_t slen;

	if (!after)
		after_len = 0;
	if (after_len > META_NAME_MAX)
		return -ENAMETOOLONG;
	slen = meta_dentry_key(start, parent, after, after_len);
	return meta_db_scan(m, CF_DENTRIES, start, start, slen, after_len > 0, dentry_scan_one, &s);
}

int meta_dentry_list_all(struct meta *m, meta_dentry_all_fn fn, void *ctx)
{
	struct dentry_scan s = { .fn_all = fn, .ctx = ctx };

	return meta_db_scan(m, CF_DENTRIES, NULL, NULL, 0, false, dentry_scan_one, &s);
}

static int has_entries_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			   size_t vlen)
{
	*(int *)ctx = 1;
	return 1;
}

int meta_dir_has_entries(struct meta *m, uint64_t parent)
{
	uint8_t prefix[8];
	int found = 0, r;

	be_put64(prefix, parent);
	r = meta_db_scan(m, CF_DENTRIES, prefix, prefix, sizeof(prefix), false, has_entries_one,
			 &found);
	return r < 0 ? r : found;
}

int meta_stripe_get(struct meta *m, uint64_t ino, uint64_t stripe, struct meta_stripe *ret)
{
	rocksdb_pinnableslice_t *v = NULL;
	uint8_t key[16];
	const uint8_t *p;
	size_t len;
	int r;

	meta_stripe_key(key, ino, stripe);
	r = meta_db_get(m, CF_STRIPES, key, sizeof(key), &v);
	if (r < 0)
		goto out;
	p = meta_slice_value(v, &len);
	r = meta_stripe_decode(p, len, ret);
	if (r < 0) {
		tlog_debug("meta: stripe %llu/%llu: damaged record", (unsigned long long)ino,
			   (unsigned long long)stripe);
		r = -EIO;
	}
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

struct stripe_scan {
	meta_stripe_fn fn;
	meta_stripe_all_fn fn_all; /* instead of fn: every record, with its inode */
	void *ctx;
	struct meta_stripe s; /* scratch: about 400 bytes, kept off the callback's stack */
};

static int stripe_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			   size_t vlen)
{
	struct stripe_scan *s = ctx;

	if (klen != 16 || meta_stripe_decode(val, vlen, &s->s) < 0) {
		tlog_debug("meta: stripe of %llu: damaged record",
			   (unsigned long long)be_get64(key));
		return -EIO;
	}
	if (s->fn_all)
		return s->fn_all(s->ctx, be_get64(key), be_get64(key + 8), &s->s);
	return s->fn(s->ctx, be_get64(key + 8), &s->s);
}

int meta_stripe_list_all(struct meta *m, meta_stripe_all_fn fn, void *ctx)
{
	struct stripe_scan s = { .fn_all = fn, .ctx = ctx };

	return meta_db_scan(m, CF_STRIPES, NULL, NULL, 0, false, stripe_scan_one, &s);
}

int meta_stripe_list(struct meta *m, uint64_t ino, uint64_t from, meta_stripe_fn fn, void *ctx)
{
	struct stripe_scan s = { .fn = fn, .ctx = ctx };
	uint8_t start[16];

	meta_stripe_key(start, ino, from);
	return meta_db_scan(m, CF_STRIPES, start, start, sizeof(start), false, stripe_scan_one, &s);
}

struct inode_scan {
	meta_inode_fn fn;
	void *ctx;
};

static int inode_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			  size_t vlen)
{
	struct inode_scan *s = ctx;
	struct meta_inode in;

	if (klen != 8 || meta_inode_decode(val, vlen, &in) < 0 || in.ino != be_get64(key)) {
		tlog_debug("meta: inode table: damaged record");
		return -EIO;
	}
	return s->fn(s->ctx, &in);
}

int meta_inode_list(struct meta *m, meta_inode_fn fn, void *ctx)
{
	struct inode_scan s = { fn, ctx };

	return meta_db_scan(m, CF_INODES, NULL, NULL, 0, false, inode_scan_one, &s);
}

struct garbage_scan {
	meta_garbage_fn fn;
	void *ctx;
};

static int garbage_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			    size_t vlen)
{
	struct garbage_scan *s = ctx;
	struct meta_garbage g;

	if (klen != 8 || meta_garbage_decode(val, vlen, &g) < 0) {
		tlog_debug("meta: garbage queue: damaged record");
		return -EIO;
	}
	return s->fn(s->ctx, be_get64(key), &g);
}

int meta_garbage_list(struct meta *m, meta_garbage_fn fn, void *ctx)
{
	struct garbage_scan s = { fn, ctx };

	return meta_db_scan(m, CF_GARBAGE, NULL, NULL, 0, false, garbage_scan_one, &s);
}

/* Reads a raw value of at most max bytes (longer: a damaged record, -EIO) into buf (when
 * not NULL; -ERANGE when size is too small). Returns 0 and *ret_len, -ENOENT, -EIO. */
int meta_get_bytes(struct meta *m, int cf, const uint8_t *key, size_t klen, size_t max,
		   void *buf, size_t size, size_t *ret_len)
{
	rocksdb_pinnableslice_t *v = NULL;
	const uint8_t *p;
	size_t len;
	int r = meta_db_get(m, cf, key, klen, &v);

	if (r < 0)
		goto out;
	p = meta_slice_value(v, &len);
	if (len > max) {
		r = -EIO;
		goto out;
	}
	if (buf) {
		if (size < len) {
			r = -ERANGE;
			goto out;
		}
		if (len)
			memcpy(buf, p, len);
	}
	*ret_len = len;
out:
	if (v)
		rocksdb_pinnableslice_destroy(v);
	return r;
}

int meta_xattr_get(struct meta *m, uint64_t ino, const char *name, size_t name_len, void *buf,
		   size_t size, size_t *ret_len)
{
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen;
	int r;

	if (name_len > META_XATTR_NAME_MAX)
		return -ENAMETOOLONG;
	if (name_len == 0)
		return -ENODATA;
	klen = meta_dentry_key(key, ino, name, name_len); /* same layout: ino + name */
	r = meta_get_bytes(m, CF_XATTRS, key, klen, META_XATTR_SIZE_MAX, buf, size, ret_len);
	return r == -ENOENT ? -ENODATA : r;
}

struct xattr_scan {
	meta_xattr_fn fn;
	void *ctx;
};

static int xattr_scan_one(void *ctx, const uint8_t *key, size_t klen, const uint8_t *val,
			  size_t vlen)
{
	struct xattr_scan *s = ctx;
	char name[META_XATTR_NAME_MAX + 1];
	size_t n = klen - 8;

	if (n == 0 || n > META_XATTR_NAME_MAX || vlen > META_XATTR_SIZE_MAX) {
		tlog_debug("meta: xattr of %llu: damaged record",
			   (unsigned long long)be_get64(key));
		return -EIO;
	}
	memcpy(name, key + 8, n);
	name[n] = '\0';
	return s->fn(s->ctx, name, n, val, vlen);
}

int meta_xattr_list(struct meta *m, uint64_t ino, meta_xattr_fn fn, void *ctx)
{
	struct xattr_scan s = { fn, ctx };
	uint8_t prefix[8];

	be_put64(prefix, ino);
	return meta_db_scan(m, CF_XATTRS, prefix, prefix, sizeof(prefix), false, xattr_scan_one, &s);
}

int meta_alloc_ino(struct meta *m, uint64_t *ret)
{
	int r = 0;

	pthread_mutex_lock(&m->ino_lock);
	if (m->ino_next >= m->ino_limit) {
		uint64_t limit = m->ino_next + META_INO_RESERVE;
		struct meta_batch *b;
		uint8_t v[8];

		if (limit < m->ino_next) {
			r = -ENOSPC;
			goto out;
		}
		/* a batch, so that the reservation travels in the journal too (synced there: a
		 * restored filesystem never hands out a number given before) */
		b = meta_batch_new(m);
		if (!b) {
			r = -ENOMEM;
			goto out;
		}
		be_put64(v, limit);
		meta_batch_put(b, CF_SYSTEM, META_KEY_NEXT_INO, strlen(META_KEY_NEXT_INO), v,
			       sizeof(v));
		r = meta_commit(m, b, true);
		meta_batch_free(b);
		if (r < 0)
			goto out;
		m->ino_limit = limit;
	}
	*ret = m->ino_next++;
out:
	pthread_mutex_unlock(&m->ino_lock);
	return r;
}
