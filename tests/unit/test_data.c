/*
 * Unit tests of the data layer (src/data/data.c) against the in-memory, fault-injecting block
 * store (include/tessera/blockstore.h) and a real metadata store in a temporary directory.
 * Each case cites the invariant of data.c it checks:
 *  - round trip of sizes around the stripe size, every fragment on its own server (D1);
 *  - write-back: with every server down, writes are buffered, flush fails and keeps the data,
 *    and a later flush stores it (D5);
 *  - write quorum: below it nothing is committed and what was stored is deleted; one server
 *    down commits a degraded stripe without that server; a hung server is left out (D1);
 *  - copy-on-write: an overwrite stores a new version from the never-reused counter, the old
 *    one's fragments go to the garbage queue and are deleted (D2, D3);
 *  - reads check every fragment: a fragment corrupt at rest or flipped in transit is decoded
 *    around and the stripe flagged for repair; m servers down still read; m+1 fragments lost or
 *    corrupt give EIO, never wrong bytes (D4);
 *  - stores finishing out of order never shrink the size (D7); truncation; holes; ENOSPC;
 *    inline small files moving to the servers when they grow;
 *  - the close contract: a last close whose data cannot be stored says how much is lost.
 * Randomised data: the seed is printed and TESSERA_SEED overrides it.
 */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/data.h"
#include "tessera/meta.h"
#include "tessera/proto.h"

#define K 4
#define M 2
#define N (K + M)
#define S (256u << 10) /* stripe size */

static uint64_t seed;

static const uint8_t UUID[16] = { 0x51, 0x2c, 0x9e, 0x04, 0x7b, 0x33, 0x4a, 0x10,
				  0x8f, 0x61, 0x22, 0xd7, 0x0c, 0xe5, 0x93, 0x4b };

struct env {
	char dir[128];
	struct meta *meta;
	struct memstore *ms;
	struct blockstore *bs;
	pthread_mutex_t lock;
	struct data_config cfg;
	struct data *d;
};
static struct env E;

static void env_up_inline(uint32_t inline_max)
{
	struct meta_superblock *sb = calloc(1, sizeof(*sb));
	uint16_t ids[N];

	ck_assert_ptr_nonnull(sb);
	snprintf(E.dir, sizeof(E.dir), "/tmp/tessera-test-data.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(E.dir));
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
	sb->n_servers = N;
	for (unsigned i = 0; i < N; i++) {
		sb->servers[i].id = (uint16_t)i;
		ids[i] = (uint16_t)i;
		snprintf(sb->servers[i].url, sizeof(sb->servers[i].url), "http://127.0.0.1:%u",
			 9000 + i);
		sb->servers[i].weight = 1;
	}
	char mdir[160];
	snprintf(mdir, sizeof(mdir), "%s/meta", E.dir);
	ck_assert_int_eq(meta_mkfs(mdir, sb, 0, 0, false), 0);
	ck_assert_int_eq(meta_open(mdir, &E.meta), 0);
	free(sb);
	ck_assert_int_eq(memstore_new(ids, N, 0, &E.ms), 0);
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

static void env_up(void)
{
	env_up_inline(0);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void env_down(void)
{
	data_free(E.d);
	blockstore_free(E.bs);
	meta_close(E.meta);
	pthread_mutex_destroy(&E.lock);
	nftw(E.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* A new data layer on the same metadata and store: nothing cached. */
static void restart_data(void)
{
	data_free(E.d);
	ck_assert_int_eq(data_new(E.meta, E.bs, &E.lock, &E.cfg, &E.d), 0);
}

static uint64_t new_file(void)
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

static uint64_t inode_size(uint64_t ino)
{
	struct meta_inode in;

	ck_assert_int_eq(meta_inode_get(E.meta, ino, &in), 0);
	return in.size;
}

static struct data_file *open_file(uint64_t ino)
{
	struct data_file *f;

	ck_assert_int_eq(data_open(E.d, ino, inode_size(ino), &f), 0);
	return f;
}

static void close_file(struct data_file *f)
{
	ck_assert_int_ge(data_close(E.d, f, NULL), 0);
}

static uint8_t *random_bytes(size_t n, uint64_t salt)
{
	uint8_t *p = malloc(n ? n : 1);
	uint64_t x = seed ^ (salt * 0x9e3779b97f4a7c15ull);

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x >> 24);
	}
	return p;
}

/* Writes buf at off in pieces of 64 KiB, as the kernel would. */
static void write_all(struct data_file *f, uint64_t off, const uint8_t *buf, size_t len)
{
	for (size_t at = 0; at < len;) {
		size_t n = TESSERA_MIN((size_t)65536, len - at);
		ck_assert_int_eq(data_write(f, off + at, buf + at, n), (ssize_t)n);
		at += n;
	}
}

/* Reads [off, off + len) through a fresh data layer and compares it with want. */
static void expect_content(uint64_t ino, uint64_t off, const uint8_t *want, size_t len)
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

static struct meta_stripe stripe_rec(uint64_t ino, uint64_t idx)
{
	struct meta_stripe rec;

	ck_assert_int_eq(meta_stripe_get(E.meta, ino, idx, &rec), 0);
	return rec;
}

static void frag_key(char *key, uint64_t ino, uint64_t stripe, uint64_t version, unsigned i)
{
	ck_assert_int_gt(proto_frag_key(key, PROTO_KEY_MAX, UUID, ino, stripe, version, i), 0);
}

/* Fragments of ino on every server. */
static long objects_of(uint64_t ino)
{
	char uuid[37], prefix[64];
	long n = 0;

	tuuid_format(UUID, uuid);
	snprintf(prefix, sizeof(prefix), "%s/%016" PRIx64 "/", uuid, ino);
	for (uint16_t s = 0; s < N; s++)
		n += memstore_count(E.ms, s, prefix);
	return n;
}

static void set_down(uint16_t id, bool down)
{
	struct memstore_faults f = { .down = down };

	ck_assert_int_eq(memstore_set_faults(E.ms, id, &f), 0);
	if (!down)
		blockstore_mark(E.bs, id, true);
}

static unsigned popcount(uint64_t v)
{
	return (unsigned)__builtin_popcountll(v);
}

/* ---------------------------------------------------------------- round trip (D1) */

START_TEST(test_roundtrip)
{
	static const size_t sizes[] = { 1, 4095, S - 1, S, S + 1, 3 * S + 12345 };
	size_t len = sizes[_i];
	uint8_t *buf = random_bytes(len, len);
	uint64_t ino;
	struct data_file *f;

	env_up();
	ino = new_file();
	f = open_file(ino);
	write_all(f, 0, buf, len);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	ck_assert_uint_eq(inode_size(ino), len);
	uint64_t stripes = (len + S - 1) / S;
	for (uint64_t s = 0; s < stripes; s++) {
		struct meta_stripe rec = stripe_rec(ino, s);
		ck_assert_uint_eq(rec.present, (1u << N) - 1);
		ck_assert(!(rec.flags & META_STRIPE_F_DEGRADED));
		for (unsigned i = 0; i < N; i++)
			for (unsigned j = i + 1; j < N; j++)
				ck_assert_uint_ne(rec.servers[i], rec.servers[j]);
	}
	ck_assert_int_eq(objects_of(ino), (long)(stripes * N));
	expect_content(ino, 0, buf, len);
	free(buf);
	env_down();
}
END_TEST

/* ---------------------------------------------------------------- write-back (D5) */

START_TEST(test_writeback_all_down)
{
	const size_t len = 100000;
	uint8_t *buf = random_bytes(len, 2), *got = malloc(len);
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = new_file();
	for (uint16_t s = 0; s < N; s++)
		set_down(s, true);
	f = open_file(ino);
	write_all(f, 0, buf, len);            /* buffered: no server needed */
	ck_assert_int_eq(data_flush(f), -EIO); /* reported, not dropped */
	ck_assert_int_eq(meta_stripe_get(E.meta, ino, 0, &(struct meta_stripe){ 0 }), -ENOENT);
	ck_assert_int_eq(data_read(f, 0, got, len), (ssize_t)len);
	ck_assert(memcmp(got, buf, len) == 0); /* still in the buffer */
	ck_assert_int_eq(data_flush(f), -EIO); /* and again */
	for (uint16_t s = 0; s < N; s++)
		set_down(s, false);
	ck_assert_int_eq(data_flush(f), 0);   /* the retry stores it */
	close_file(f);
	expect_content(ino, 0, buf, len);
	free(got);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_close_reports_loss)
{
	const size_t len = 5000;
	uint8_t *buf = random_bytes(len, 3);
	struct data_file *f;
	uint64_t ino, lost = 0;

	env_up();
	ino = new_file();
	for (uint16_t s = 0; s < N; s++)
		set_down(s, true);
	f = open_file(ino);
	write_all(f, 0, buf, len);
	ck_assert_int_eq(data_close(E.d, f, &lost), -EIO);
	ck_assert_uint_eq(lost, len);
	free(buf);
	env_down();
}
END_TEST

/* ---------------------------------------------------------------- quorum (D1) */

START_TEST(test_below_quorum_commits_nothing)
{
	const size_t len = S;
	uint8_t *buf = random_bytes(len, 4);
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = new_file();
	set_down(1, true);
	set_down(4, true); /* 4 of 6 reachable, quorum 5 */
	f = open_file(ino);
	write_all(f, 0, buf, len);
	ck_assert_int_eq(data_flush(f), -EIO);
	ck_assert_int_eq(meta_stripe_get(E.meta, ino, 0, &(struct meta_stripe){ 0 }), -ENOENT);
	ck_assert_int_eq(objects_of(ino), 0); /* what was stored is deleted again */
	set_down(4, false);                   /* now 5 of 6 */
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	struct meta_stripe rec = stripe_rec(ino, 0);
	ck_assert(rec.flags & META_STRIPE_F_DEGRADED);
	ck_assert_uint_eq(popcount(rec.present), N - 1);
	for (unsigned i = 0; i < N; i++)
		if (rec.present & (1ull << i))
			ck_assert_uint_ne(rec.servers[i], 1);
	ck_assert_int_eq(objects_of(ino), N - 1);
	expect_content(ino, 0, buf, len);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_hung_server_left_out)
{
	const size_t len = 2 * S;
	uint8_t *buf = random_bytes(len, 5);
	struct memstore_faults hung = { .hung = true };
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = new_file();
	ck_assert_int_eq(memstore_set_faults(E.ms, 3, &hung), 0);
	f = open_file(ino);
	write_all(f, 0, buf, len);
	ck_assert_int_eq(data_flush(f), 0); /* the quorum does not wait for server 3 */
	close_file(f);
	for (uint64_t s = 0; s < 2; s++) {
		struct meta_stripe rec = stripe_rec(ino, s);
		for (unsigned i = 0; i < N; i++) {
			if (rec.servers[i] == 3 && (rec.present & (1ull << i)))
				ck_abort_msg("stripe %" PRIu64 " counts the hung server", s);
		}
		ck_assert_uint_ge(popcount(rec.present), K + 1);
		if (popcount(rec.present) < N)
			ck_assert(rec.flags & META_STRIPE_F_DEGRADED);
	}
	ck_assert_int_eq(memstore_set_faults(E.ms, 3, NULL), 0);
	expect_content(ino, 0, buf, len);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_full_servers_enospc)
{
	struct memstore_faults full = { .full = true };
	uint8_t *buf = random_bytes(S, 6);
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = new_file();
	for (uint16_t s = 0; s < N; s++)
		ck_assert_int_eq(memstore_set_faults(E.ms, s, &full), 0);
	f = open_file(ino);
	write_all(f, 0, buf, S);
	ck_assert_int_eq(data_flush(f), -ENOSPC);
	for (uint16_t s = 0; s < N; s++)
		ck_assert_int_eq(memstore_set_faults(E.ms, s, NULL), 0);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	expect_content(ino, 0, buf, S);
	free(buf);
	env_down();
}
END_TEST

/* ---------------------------------------------------------------- copy-on-write (D2, D3) */

START_TEST(test_overwrite_new_version)
{
	const size_t len = 2 * S;
	uint8_t *buf = random_bytes(len, 7), *patch = random_bytes(4096, 8);
	char key[PROTO_KEY_MAX];
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = new_file();
	f = open_file(ino);
	write_all(f, 0, buf, len);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	struct meta_stripe v1 = stripe_rec(ino, 0), other = stripe_rec(ino, 1);

	restart_data(); /* the overwrite reads the stripe back: read-modify-write */
	f = open_file(ino);
	write_all(f, 1000, patch, 4096);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	memcpy(buf + 1000, patch, 4096);
	struct meta_stripe v2 = stripe_rec(ino, 0);
	ck_assert_uint_gt(v2.version, v1.version);
	ck_assert_uint_ne(v2.version, other.version);
	ck_assert_uint_eq(stripe_rec(ino, 1).version, other.version);
	/* The old version's fragments are garbage, deleted by the garbage thread. */
	data_gc_kick(E.d);
	long left = N;
	for (int t = 0; t < 100 && left; t++) {
		left = 0;
		for (unsigned i = 0; i < N; i++) {
			uint8_t tmp[1];
			size_t n;
			frag_key(key, ino, 0, v1.version, i);
			left += memstore_get(E.ms, v1.servers[i], key, tmp, 1, &n) == 0;
		}
		if (left) {
			struct timespec ts = { 0, 50000000 };
			nanosleep(&ts, NULL);
		}
	}
	ck_assert_int_eq(left, 0);
	ck_assert_int_eq(objects_of(ino), 2 * N);
	expect_content(ino, 0, buf, len);
	free(patch);
	free(buf);
	env_down();
}
END_TEST

/* ---------------------------------------------------------------- checked reads (D4) */

static uint64_t stored_file(size_t len, uint64_t salt, uint8_t **ret_buf)
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

START_TEST(test_corrupt_fragment_decoded_around)
{
	char key[PROTO_KEY_MAX];
	uint8_t *buf;
	uint64_t ino;

	env_up();
	ino = stored_file(S, 9, &buf);
	struct meta_stripe rec = stripe_rec(ino, 0);
	ck_assert(!(rec.flags & META_STRIPE_F_DEGRADED));
	frag_key(key, ino, 0, rec.version, 0);
	ck_assert_int_eq(memstore_corrupt(E.ms, rec.servers[0], key, PROTO_FRAG_HDR_SIZE + 10), 0);
	expect_content(ino, 0, buf, S);                          /* the right bytes */
	ck_assert(stripe_rec(ino, 0).flags & META_STRIPE_F_DEGRADED); /* queued for repair */
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_flipped_in_transit_decoded_around)
{
	uint8_t *buf;
	uint64_t ino;

	env_up();
	ino = stored_file(S, 10, &buf);
	struct meta_stripe rec = stripe_rec(ino, 0);
	struct memstore_faults flip = { .flip_gets = 4 };
	ck_assert_int_eq(memstore_set_faults(E.ms, rec.servers[1], &flip), 0);
	expect_content(ino, 0, buf, S);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_m_servers_down_still_read)
{
	uint8_t *buf;
	uint64_t ino;

	env_up();
	ino = stored_file(3 * S, 11, &buf);
	struct meta_stripe rec = stripe_rec(ino, 0);
	set_down(rec.servers[0], true); /* two data fragments of stripe 0 */
	set_down(rec.servers[2], true);
	expect_content(ino, 0, buf, 3 * S);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_m_plus_one_lost_is_eio)
{
	char key[PROTO_KEY_MAX];
	uint8_t *buf, *got = malloc(S);
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = stored_file(S, 12, &buf);
	struct meta_stripe rec = stripe_rec(ino, 0);
	/* _i = 0: three fragments deleted; 1: three corrupt; 2: two deleted, one corrupt */
	for (unsigned i = 0; i < M + 1; i++) {
		frag_key(key, ino, 0, rec.version, i * 2 % N);
		uint16_t srv = rec.servers[i * 2 % N];
		if (_i == 1 || (_i == 2 && i == 2))
			ck_assert_int_eq(memstore_corrupt(E.ms, srv, key, PROTO_FRAG_HDR_SIZE + 7 * i),
					 0);
		else
			ck_assert_int_eq(memstore_delete(E.ms, srv, key), 0);
	}
	restart_data();
	f = open_file(ino);
	memset(got, 0, S);
	ck_assert_int_eq(data_read(f, 0, got, S), -EIO);
	ck_assert_int_eq(data_read(f, 100, got, 10), -EIO); /* small reads too */
	close_file(f);
	free(got);
	free(buf);
	env_down();
}
END_TEST

/* ---------------------------------------------------------------- sizes (D7), holes */

struct slow_ctx {
	uint64_t ino;
	unsigned delay_ms;
};

/* Delays the PUTs of stripe 0 of one inode. */
static int slow_stripe0(void *arg, const struct blockclient_op *op)
{
	struct slow_ctx *c = arg;
	uint8_t uuid[16];
	uint64_t ino, stripe, version;
	unsigned index;

	if (op->method == BC_PUT && !op->raw_path &&
	    proto_frag_key_parse(op->key, uuid, &ino, &stripe, &version, &index) == 0 &&
	    ino == c->ino && stripe == 0) {
		struct timespec ts = { 0, (long)c->delay_ms * 1000000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}

START_TEST(test_out_of_order_stores_keep_size)
{
	const size_t len = S + 5000;
	uint8_t *buf = random_bytes(len, 13);
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = new_file();
	struct slow_ctx c = { .ino = ino, .delay_ms = 100 };
	memstore_set_hook(E.ms, slow_stripe0, &c);
	f = open_file(ino);
	write_all(f, 0, buf, len); /* stripe 0 is stored in the background while stripe 1 fills */
	ck_assert_int_eq(data_flush(f), 0);
	ck_assert_uint_eq(inode_size(ino), len); /* never shrunk by the late store of stripe 0 */
	close_file(f);
	memstore_set_hook(E.ms, NULL, NULL);
	expect_content(ino, 0, buf, len);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_truncate_and_holes)
{
	uint8_t *buf, *zeros = calloc(1, 4 * S), *got = malloc(4 * S);
	struct data_file *f;
	uint64_t ino;

	env_up();
	ino = stored_file(3 * S, 14, &buf);
	f = open_file(ino);
	ck_assert_int_eq(data_truncate(f, S + 100), 0);
	close_file(f);
	ck_assert_uint_eq(inode_size(ino), S + 100);
	ck_assert_int_eq(meta_stripe_get(E.meta, ino, 2, &(struct meta_stripe){ 0 }), -ENOENT);
	ck_assert_uint_eq(stripe_rec(ino, 1).data_len, 100);
	expect_content(ino, 0, buf, S + 100);
	/* Growing again: the cut-off bytes read as zeros, not as the old data. */
	restart_data();
	f = open_file(ino);
	ck_assert_int_eq(data_truncate(f, 3 * S), 0);
	ck_assert_int_eq(data_read(f, S + 100, got, 2 * S - 100), (ssize_t)(2 * S - 100));
	ck_assert(memcmp(got, zeros, 2 * S - 100) == 0);
	close_file(f);
	/* A write far past the end leaves holes that cost nothing and read as zeros. */
	uint64_t sparse = new_file();
	f = open_file(sparse);
	write_all(f, 5 * (uint64_t)S + 7, buf, 10);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	for (uint64_t s = 0; s < 5; s++)
		ck_assert_int_eq(meta_stripe_get(E.meta, sparse, s, &(struct meta_stripe){ 0 }),
				 -ENOENT);
	ck_assert_int_eq(objects_of(sparse), N);
	expect_content(sparse, 0, zeros, 4 * S);
	expect_content(sparse, 5 * (uint64_t)S + 7, buf, 10);
	free(got);
	free(zeros);
	free(buf);
	env_down();
}
END_TEST

START_TEST(test_inline_grows_to_servers)
{
	uint8_t *buf = random_bytes(S + 1, 15), tmp[4096];
	struct data_file *f;
	size_t n;
	uint64_t ino;

	env_up_inline(4096);
	ino = new_file();
	f = open_file(ino);
	write_all(f, 0, buf, 100);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	ck_assert_int_eq(meta_inline_get(E.meta, ino, tmp, sizeof(tmp), &n), 0);
	ck_assert_uint_eq(n, 100);
	ck_assert_int_eq(objects_of(ino), 0);
	expect_content(ino, 0, buf, 100);
	f = open_file(ino);
	write_all(f, 100, buf + 100, S + 1 - 100);
	ck_assert_int_eq(data_flush(f), 0);
	close_file(f);
	ck_assert_int_eq(meta_inline_get(E.meta, ino, tmp, sizeof(tmp), &n), -ENOENT);
	ck_assert_int_eq(objects_of(ino), 2 * N);
	expect_content(ino, 0, buf, S + 1);
	free(buf);
	env_down();
}
END_TEST

static Suite *data_suite(void)
{
	Suite *s = suite_create("data");
	TCase *tc = tcase_create("memstore");

	tcase_add_loop_test(tc, test_roundtrip, 0, 6);
	tcase_add_test(tc, test_writeback_all_down);
	tcase_add_test(tc, test_close_reports_loss);
	tcase_add_test(tc, test_below_quorum_commits_nothing);
	tcase_add_test(tc, test_hung_server_left_out);
	tcase_add_test(tc, test_full_servers_enospc);
	tcase_add_test(tc, test_overwrite_new_version);
	tcase_add_test(tc, test_corrupt_fragment_decoded_around);
	tcase_add_test(tc, test_flipped_in_transit_decoded_around);
	tcase_add_test(tc, test_m_servers_down_still_read);
	tcase_add_loop_test(tc, test_m_plus_one_lost_is_eio, 0, 3);
	tcase_add_test(tc, test_out_of_order_stores_keep_size);
	tcase_add_test(tc, test_truncate_and_holes);
	tcase_add_test(tc, test_inline_grows_to_servers);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	const char *env = getenv("TESSERA_SEED");
	SRunner *sr;
	int failed;

	seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
	printf("test_data: seed %" PRIu64 " (set TESSERA_SEED to repeat)\n", seed);
	sr = srunner_create(data_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
