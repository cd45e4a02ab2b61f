/*
 * memfs.h: a filesystem for unit tests of the data path and the scrubber, in process: a real
 * metadata store in a directory below the run's temporary one (unit.h), the in-memory block
 * store (blockstore.h) for its servers, and a data layer over both. Included by one test file each (static functions).
 */
#ifndef TESSERA_TEST_MEMFS_H
#define TESSERA_TEST_MEMFS_H

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/data.h"
#include "tessera/meta.h"
#include "tessera/proto.h"

#include "unit.h"

#define K 4
#define M 2
#define S (256u << 10) /* stripe size */
#define MEMFS_MAX_SERVERS 16

static const uint8_t UUID[16] = { 0x51, 0x2c, 0x9e, 0x04, 0x7b, 0x33, 0x4a, 0x10,
				  0x8f, 0x61, 0x22, 0xd7, 0x0c, 0xe5, 0x93, 0x4b };

struct env {
	char dir[128];
	char meta_dir[160];
	unsigned n;          /* servers */
	struct meta *meta;
	struct memstore *ms;
	struct blockstore *bs;
	pthread_mutex_t lock;
	struct data_config cfg;
	struct data *d;
};
static struct env E;

/* A filesystem of n servers (ids 0..n-1; zones[i] may name server i's zone, NULL: none) in a
 * temporary directory, a memstore for them and a data layer. */
static inline void env_up_with(unsigned n, const char *const *zones, uint32_t inline_max)
{
	struct meta_superblock *sb = calloc(1, sizeof(*sb));
	uint16_t ids[MEMFS_MAX_SERVERS];

	ck_assert_ptr_nonnull(sb);
	unit_tmpdir(E.dir, sizeof(E.dir), "fs");
	sb->format_version = META_FORMAT_VERSION;
	memcpy(sb->fs_uuid, UUID, 16);
	sb->k = K;
	sb->m = M;
	sb->stripe_size = S;
	sb->write_quorum = K + 1;
	sb->inline_max = inline_max;
	strcpy(sb->bucket, "tessera");
	strcpy(sb->region, "us-east-1");
	strcpy(sb->credentials, "file:credentials");
	ck_assert_uint_le(n, MEMFS_MAX_SERVERS);
	E.n = n;
	sb->n_servers = n;
	for (unsigned i = 0; i < n; i++) {
		sb->servers[i].id = (uint16_t)i;
		ids[i] = (uint16_t)i;
		snprintf(sb->servers[i].url, sizeof(sb->servers[i].url), "http://127.0.0.1:%u",
			 9000 + i);
		if (zones && zones[i])
			snprintf(sb->servers[i].zone, sizeof(sb->servers[i].zone), "%s", zones[i]);
		sb->servers[i].weight = 1;
	}
	snprintf(E.meta_dir, sizeof(E.meta_dir), "%s/meta", E.dir);
	ck_assert_int_eq(meta_mkfs(E.meta_dir, sb, 0, 0, false), 0);
	ck_assert_int_eq(meta_open(E.meta_dir, &E.meta), 0);
	free(sb);
	ck_assert_int_eq(memstore_new(ids, n, 0, &E.ms), 0);
	memstore_set_timeout_ms(E.ms, 300);
	memstore_set_backoff_ms(E.ms, 100);
	E.bs = memstore_store(E.ms);
	pthread_mutex_init(&E.lock, NULL);
	data_config_defaults(&E.cfg);
	E.cfg.workers = 4;
	E.cfg.hedge_ms = 100;
	E.cfg.readahead = 2;
	ck_assert_int_eq(data_new(E.meta, E.bs, &E.lock, &E.cfg, &E.d), 0);
}

static inline void env_up_inline(uint32_t inline_max)
{
	env_up_with(K + M, NULL, inline_max);
}

static inline void env_up(void)
{
	env_up_inline(0);
}

static inline void env_down(void)
{
	data_free(E.d); /* accepts NULL */
	blockstore_free(E.bs);
	meta_close(E.meta);
	pthread_mutex_destroy(&E.lock);
	unit_rmtree(E.dir);
}

/* A new data layer on the same metadata and store: nothing cached. */
static inline void restart_data(void)
{
	data_free(E.d);
	ck_assert_int_eq(data_new(E.meta, E.bs, &E.lock, &E.cfg, &E.d), 0);
}

static inline uint64_t new_file(void)
{
	struct meta_inode in = { .mode = S_IFREG | 0644, .nlink = 1 };
	struct meta_batch *b;

	ck_assert_int_eq(meta_alloc_ino(E.meta, &in.ino), 0);
	b = meta_batch_new(E.meta);
	ck_assert_ptr_nonnull(b);
	meta_batch_inode_put(b, &in);
	ck_assert_int_eq(meta_commit(E.meta, b, true), 0);
	meta_batch_free(b);
	return in.ino;
}

static inline uint64_t inode_size(uint64_t ino)
{
	struct meta_inode in;

	ck_assert_int_eq(meta_inode_get(E.meta, ino, &in), 0);
	return in.size;
}

static inline struct data_file *open_file(uint64_t ino)
{
	struct data_file *f;

	ck_assert_int_eq(data_open(E.d, ino, inode_size(ino), &f), 0);
	return f;
}

static inline void close_file(struct data_file *f)
{
	ck_assert_int_ge(data_close(E.d, f, NULL), 0);
}

static inline uint8_t *random_bytes(size_t n, uint64_t salt)
{
	uint8_t *p = malloc(n ? n : 1);
	uint64_t rng = unit_seed ^ (salt * 0x9e3779b97f4a7c15ull);

	ck_assert_ptr_nonnull(p);
	unit_rng_fill(&rng, p, n);
	return p;
}

/* Writes buf at off in pieces of 64 KiB, as the kernel would. */
static inline void write_all(struct data_file *f, uint64_t off, const uint8_t *buf,
			     size_t len)
{
	for (size_t at = 0; at < len;) {
		size_t n = TESSERA_MIN((size_t)65536, len - at);
		ck_assert_int_eq(data_write(f, off + at, buf + at, n), (ssize_t)n);
		at += n;
	}
}

/* Reads [off, off + len) through a fresh data layer and compares it with want. */
static inline void expect_content(uint64_t ino, uint64_t off, const uint8_t *want,
				  size_t len)
{
	struct data_file *f;
	uint8_t *got = malloc(len ? len : 1);

	restart_data();
	f = open_file(ino);
	ck_assert_int_eq(data_read(f, off, got, len), (ssize_t)len);
	ck_assert_msg(memcmp(got, want, len) == 0, "content of inode %" PRIu64 " differs", ino);
	close_file(f);
	free(got);
}

static inline struct meta_stripe stripe_rec(uint64_t ino, uint64_t idx)
{
	struct meta_stripe rec;

	ck_assert_int_eq(meta_stripe_get(E.meta, ino, idx, &rec), 0);
	return rec;
}

static inline void frag_key(char *key, uint64_t ino, uint64_t stripe, uint64_t version,
			    unsigned i)
{
	ck_assert_int_gt(proto_frag_key(key, PROTO_KEY_MAX, UUID, ino, stripe, version, i), 0);
}

/* Fragments of ino on every server. */
static inline long objects_of(uint64_t ino)
{
	char uuid[37], prefix[64];
	long n = 0;

	tuuid_format(UUID, uuid);
	snprintf(prefix, sizeof(prefix), "%s/%016" PRIx64 "/", uuid, ino);
	for (uint16_t s = 0; s < E.n; s++)
		n += memstore_count(E.ms, s, prefix);
	return n;
}

static inline void set_down(uint16_t id, bool down)
{
	struct memstore_faults f = { .down = down };

	ck_assert_int_eq(memstore_set_faults(E.ms, id, &f), 0);
	if (!down)
		blockstore_mark(E.bs, id, true);
}

static inline unsigned popcount(uint64_t v)
{
	return (unsigned)__builtin_popcountll(v);
}

static inline uint64_t stored_file(size_t len, uint64_t salt, uint8_t **ret_buf)
{
	uint8_t *buf = random_bytes(len, salt);
	struct data_file *f;
	uint64_t ino = new_file();

	f = open_file(ino);
	write_all(f, 0, buf, len);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	*ret_buf = buf;
	return ino;
}

#endif
