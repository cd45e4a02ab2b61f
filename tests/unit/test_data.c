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
 * Randomised data: the seed is printed and TESSERA_TEST_SEED replays it (unit.h).
 */
#include "memfs.h"

#define N (K + M)

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

Suite *unit_suite(void)
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
