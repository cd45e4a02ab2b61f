/*
 * Unit tests for codec: encode, then decode every combination of at most m lost fragments
 * (data and parity alike) for several geometries and check that every fragment comes back
 * bit-identical. Also: too few fragments, fragment lengths, bad geometries, the decode-table
 * cache, and concurrent decodes on one shared codec.
 *
 * Randomised: the seed is printed and TESSERA_TEST_SEED replays it (unit.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/codec.h"
#include "tessera/proto.h"

#include "unit.h"

/* k+m fragments of len bytes: orig holds the encoded stripe, work is what decode sees. */
struct stripe {
	unsigned k, m, n;
	size_t len;
	uint8_t *orig[PROTO_MAX_K + PROTO_MAX_M];
	uint8_t *work[PROTO_MAX_K + PROTO_MAX_M];
};

static void stripe_init(struct stripe *s, struct codec *c, size_t len, uint64_t *rng)
{
	s->k = codec_k(c);
	s->m = codec_m(c);
	s->n = s->k + s->m;
	s->len = len;
	for (unsigned i = 0; i < s->n; i++) {
		s->orig[i] = malloc(len);
		s->work[i] = malloc(len);
		ck_assert_ptr_nonnull(s->orig[i]);
		ck_assert_ptr_nonnull(s->work[i]);
	}
	for (unsigned i = 0; i < s->k; i++)
		unit_rng_fill(rng, s->orig[i], len);
	codec_encode(c, s->orig, s->orig + s->k, len);
}

static void stripe_release(struct stripe *s)
{
	for (unsigned i = 0; i < s->n; i++) {
		free(s->orig[i]);
		free(s->work[i]);
	}
}

/* Copies the present fragments into work, poisons the lost ones with 0xa5. */
static void stripe_damage(struct stripe *s, uint64_t lost)
{
	for (unsigned i = 0; i < s->n; i++) {
		if (lost & (UINT64_C(1) << i))
			memset(s->work[i], 0xa5, s->len);
		else
			memcpy(s->work[i], s->orig[i], s->len);
	}
}

/* 0 when all fragments of work equal orig, else 1 + the first bad index. */
static unsigned stripe_diff(const struct stripe *s)
{
	for (unsigned i = 0; i < s->n; i++)
		if (memcmp(s->work[i], s->orig[i], s->len) != 0)
			return i + 1;
	return 0;
}

/* Next combination of the same popcount (Gosper's hack); 0 when exhausted below limit. */
static uint64_t next_combination(uint64_t x, unsigned n)
{
	uint64_t c = x & -x, r = x + c;
	uint64_t next = (((r ^ x) >> 2) / c) | r;
	return next < (UINT64_C(1) << n) ? next : 0;
}

static const unsigned geometries[][2] = {
	{ 4, 2 }, { 6, 3 }, { 8, 3 }, { 10, 4 }, { 1, 1 }, { 2, 1 }, { 3, 2 },
};

/* Every set of at most m lost fragments is rebuilt bit-identical. */
START_TEST(test_every_loss_pattern)
{
	unsigned k = geometries[_i][0], m = geometries[_i][1], n = k + m;
	uint64_t rng = unit_seed + _i, all = (UINT64_C(1) << n) - 1;
	struct codec *c = NULL;
	struct stripe s;
	unsigned patterns = 0;

	ck_assert_int_eq(codec_new(k, m, &c), 0);
	ck_assert_uint_eq(codec_k(c), k);
	ck_assert_uint_eq(codec_m(c), m);
	stripe_init(&s, c, 4096, &rng);

	for (unsigned lost_n = 0; lost_n <= m; lost_n++) {
		uint64_t lost = lost_n ? (UINT64_C(1) << lost_n) - 1 : 0;
		do {
			stripe_damage(&s, lost);
			int r = codec_decode(c, s.work, all & ~lost, all, s.len);
			ck_assert_msg(r == 0, "k=%u m=%u lost=%#" PRIx64 ": decode returned %d", k,
				      m, lost, r);
			unsigned bad = stripe_diff(&s);
			ck_assert_msg(bad == 0, "k=%u m=%u lost=%#" PRIx64 ": fragment %u differs",
				      k, m, lost, bad - 1);
			patterns++;
		} while (lost && (lost = next_combination(lost, n)) != 0);
	}
	/* sum of C(n, i) for i = 0..m */
	unsigned expect = 0, binom = 1;
	for (unsigned i = 0; i <= m; i++) {
		expect += binom;
		binom = binom * (n - i) / (i + 1);
	}
	ck_assert_uint_eq(patterns, expect);

	stripe_release(&s);
	codec_free(c);
}
END_TEST

/* Only the wanted missing fragments are written; other absent buffers are left alone. */
START_TEST(test_partial_want)
{
	unsigned k = geometries[_i][0], m = geometries[_i][1], n = k + m;
	uint64_t rng = unit_seed ^ 0x55u ^ _i, all = (UINT64_C(1) << n) - 1;
	struct codec *c = NULL;
	struct stripe s;
	uint8_t *poison = malloc(256);

	memset(poison, 0xa5, 256);
	ck_assert_int_eq(codec_new(k, m, &c), 0);
	stripe_init(&s, c, 256, &rng);
	for (int iter = 0; iter < 200; iter++) {
		/* a random loss of exactly m fragments, a random non-empty subset wanted */
		uint64_t lost = 0;
		while ((unsigned)__builtin_popcountll(lost) < m)
			lost |= UINT64_C(1) << (unit_rng_next(&rng) % n);
		uint64_t want = unit_rng_next(&rng) & lost;
		if (!want)
			want = lost & -lost;
		stripe_damage(&s, lost);
		ck_assert_int_eq(codec_decode(c, s.work, all & ~lost, want, s.len), 0);
		for (unsigned i = 0; i < n; i++) {
			const uint8_t *expect = (lost & ~want) & (UINT64_C(1) << i) ? poison
										   : s.orig[i];
			ck_assert_msg(memcmp(s.work[i], expect, s.len) == 0,
				      "k=%u m=%u lost=%#" PRIx64 " want=%#" PRIx64 ": fragment %u", k,
				      m, lost, want, i);
		}
	}
	stripe_release(&s);
	codec_free(c);
	free(poison);
}
END_TEST

/* Fewer than k present -> -EIO, buffers untouched; nothing wanted -> 0 and no work. */
START_TEST(test_too_few)
{
	uint64_t rng = unit_seed + 100;
	struct codec *c = NULL;
	struct stripe s;
	unsigned k = 4, m = 2, n = 6;
	uint64_t all = 0x3f;

	ck_assert_int_eq(codec_new(k, m, &c), 0);
	stripe_init(&s, c, 128, &rng);

	uint64_t lost = 0x7; /* m + 1 lost */
	do {
		stripe_damage(&s, lost);
		ck_assert_int_eq(codec_decode(c, s.work, all & ~lost, all, s.len), -EIO);
		for (unsigned i = 0; i < n; i++)
			if (lost & (UINT64_C(1) << i))
				ck_assert_uint_eq(s.work[i][0], 0xa5);
	} while ((lost = next_combination(lost, n)) != 0);
	ck_assert_int_eq(codec_decode(c, s.work, 0, all, s.len), -EIO);

	/* all wanted fragments present: nothing to do, even with bits beyond k+m */
	stripe_damage(&s, 0x30);
	ck_assert_int_eq(codec_decode(c, s.work, 0x0f, 0x0f, s.len), 0);
	ck_assert_int_eq(codec_decode(c, s.work, 0x0f, 0, s.len), 0);
	ck_assert_int_eq(codec_decode(c, s.work, 0x0f, ~UINT64_C(0) << n, s.len), 0);
	ck_assert_uint_eq(s.work[4][0], 0xa5);
	ck_assert_uint_eq(s.work[5][0], 0xa5);

	stripe_release(&s);
	codec_free(c);
}
END_TEST

/* Fragment lengths, including ones ISA-L processes with tails and short-buffer paths. */
static const size_t lengths[] = { 64, 4096, 1u << 20, 1, 7, 31, 33, 100, 4097 };

START_TEST(test_lengths)
{
	size_t len = lengths[_i];
	uint64_t rng = unit_seed + 200 + _i;
	struct codec *c = NULL;
	struct stripe s;
	const uint64_t losses[] = { 0x0, 0x3, 0x18, 0x41, 0x120, 0x300, 0x81, 0x0c };
	uint64_t all = (UINT64_C(1) << 11) - 1;

	ck_assert_int_eq(codec_new(8, 3, &c), 0);
	stripe_init(&s, c, len, &rng);
	for (size_t i = 0; i < sizeof(losses) / sizeof(losses[0]); i++) {
		stripe_damage(&s, losses[i]);
		ck_assert_int_eq(codec_decode(c, s.work, all & ~losses[i], all, len), 0);
		ck_assert_msg(stripe_diff(&s) == 0, "len=%zu lost=%#" PRIx64, len, losses[i]);
	}
	stripe_release(&s);
	codec_free(c);
}
END_TEST

/* Encoding is systematic and linear: parity of a zero stripe is zero; flipping one data
 * byte changes every parity fragment at that offset (Cauchy rows have no zero entries). */
START_TEST(test_encode_properties)
{
	struct codec *c = NULL;
	uint8_t *data[10], *parity[4];

	ck_assert_int_eq(codec_new(10, 4, &c), 0);
	for (int i = 0; i < 10; i++)
		data[i] = calloc(1, 64);
	for (int i = 0; i < 4; i++)
		parity[i] = malloc(64);
	for (int i = 0; i < 4; i++)
		memset(parity[i], 0x5a, 64);
	codec_encode(c, data, parity, 64);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 64; j++)
			ck_assert_uint_eq(parity[i][j], 0);
	for (int d = 0; d < 10; d++) {
		data[d][17] = 1;
		codec_encode(c, data, parity, 64);
		for (int i = 0; i < 4; i++) {
			ck_assert_uint_ne(parity[i][17], 0);
			ck_assert_uint_eq(parity[i][16], 0);
		}
		data[d][17] = 0;
	}
	for (int i = 0; i < 10; i++)
		free(data[i]);
	for (int i = 0; i < 4; i++)
		free(parity[i]);
	codec_free(c);
}
END_TEST

START_TEST(test_bad_geometry)
{
	struct codec *c = (struct codec *)0x1;

	ck_assert_int_eq(codec_new(0, 2, &c), -EINVAL);
	ck_assert_int_eq(codec_new(4, 0, &c), -EINVAL);
	ck_assert_int_eq(codec_new(0, 0, &c), -EINVAL);
	ck_assert_int_eq(codec_new(PROTO_MAX_K + 1, 2, &c), -EINVAL);
	ck_assert_int_eq(codec_new(4, PROTO_MAX_M + 1, &c), -EINVAL);
	ck_assert_int_eq(codec_new(200, 56, &c), -EINVAL);
	ck_assert_int_eq(codec_new(255, 1, &c), -EINVAL);
	ck_assert_int_eq(codec_new(1, 255, &c), -EINVAL);
	ck_assert_int_eq(codec_new(~0u, 1, &c), -EINVAL);
	ck_assert_ptr_eq(c, (struct codec *)0x1); /* ret untouched on failure */

	ck_assert_int_eq(codec_new(PROTO_MAX_K, PROTO_MAX_M, &c), 0);
	codec_free(c);
	codec_free(NULL);
}
END_TEST

/* The largest geometry still decodes a few worst-case patterns. */
START_TEST(test_max_geometry)
{
	uint64_t rng = unit_seed + 300;
	struct codec *c = NULL;
	struct stripe s;
	unsigned n = PROTO_MAX_K + PROTO_MAX_M;
	uint64_t all = (UINT64_C(1) << n) - 1;

	ck_assert_int_eq(codec_new(PROTO_MAX_K, PROTO_MAX_M, &c), 0);
	stripe_init(&s, c, 192, &rng);
	for (int iter = 0; iter < 50; iter++) {
		uint64_t lost = 0;
		unsigned want_n = (unsigned)(unit_rng_next(&rng) % (PROTO_MAX_M + 1));
		while ((unsigned)__builtin_popcountll(lost) < want_n)
			lost |= UINT64_C(1) << (unit_rng_next(&rng) % n);
		stripe_damage(&s, lost);
		ck_assert_int_eq(codec_decode(c, s.work, all & ~lost, all, s.len), 0);
		ck_assert_msg(stripe_diff(&s) == 0, "lost=%#" PRIx64, lost);
	}
	/* the first m data fragments and the last: all parity needed */
	uint64_t lost = ((UINT64_C(1) << (PROTO_MAX_M - 1)) - 1) | (UINT64_C(1) << (PROTO_MAX_K - 1));
	stripe_damage(&s, lost);
	ck_assert_int_eq(codec_decode(c, s.work, all & ~lost, all, s.len), 0);
	ck_assert_uint_eq(stripe_diff(&s), 0);
	stripe_release(&s);
	codec_free(c);
}
END_TEST

START_TEST(test_frag_len)
{
	struct codec *c = NULL;

	ck_assert_int_eq(codec_new(4, 2, &c), 0);
	ck_assert_uint_eq(codec_frag_len(c, 0), 64);
	ck_assert_uint_eq(codec_frag_len(c, 1), 64);
	ck_assert_uint_eq(codec_frag_len(c, 256), 64);
	ck_assert_uint_eq(codec_frag_len(c, 257), 128);
	ck_assert_uint_eq(codec_frag_len(c, 4u << 20), 1u << 20);
	ck_assert_uint_eq(codec_frag_len(c, (4u << 20) + 1), (1u << 20) + 64);
	codec_free(c);

	ck_assert_int_eq(codec_new(3, 2, &c), 0);
	ck_assert_uint_eq(codec_frag_len(c, 3 * 64), 64);
	ck_assert_uint_eq(codec_frag_len(c, 3 * 64 + 1), 128);
	ck_assert_uint_eq(codec_frag_len(c, 1000), 384); /* ceil(1000/3) = 334 -> 384 */
	for (size_t len = 0; len < 5000; len += 7) {
		size_t fl = codec_frag_len(c, len);
		ck_assert_uint_eq(fl % 64, 0);
		ck_assert_uint_ge(fl * 3, len);
		ck_assert(fl == 64 || (fl - 64) * 3 < len);
	}
	codec_free(c);
}
END_TEST

/* Repeated decodes of one pattern hit the table cache; many patterns stay bounded and
 * correct after eviction. */
START_TEST(test_cache)
{
	uint64_t rng = unit_seed + 400, hits, misses;
	struct codec *c = NULL;
	struct stripe s;
	uint64_t all = 0x3fff;

	ck_assert_int_eq(codec_new(10, 4, &c), 0);
	stripe_init(&s, c, 128, &rng);
	for (int i = 0; i < 10; i++) {
		stripe_damage(&s, 0x5);
		ck_assert_int_eq(codec_decode(c, s.work, all & ~UINT64_C(0x5), all, s.len), 0);
		ck_assert_uint_eq(stripe_diff(&s), 0);
	}
	codec_cache_stats(c, &hits, &misses);
	ck_assert_uint_eq(misses, 1);
	ck_assert_uint_eq(hits, 9);

	/* 364 three-loss patterns evict each other, twice over */
	for (int round = 0; round < 2; round++) {
		uint64_t lost = 0x7;
		do {
			stripe_damage(&s, lost);
			ck_assert_int_eq(codec_decode(c, s.work, all & ~lost, all, s.len), 0);
			ck_assert_uint_eq(stripe_diff(&s), 0);
		} while ((lost = next_combination(lost, 14)) != 0);
	}
	stripe_damage(&s, 0x5);
	ck_assert_int_eq(codec_decode(c, s.work, all & ~UINT64_C(0x5), all, s.len), 0);
	ck_assert_uint_eq(stripe_diff(&s), 0);
	stripe_release(&s);
	codec_free(c);
}
END_TEST

#define N_THREADS 8

struct thread_arg {
	struct codec *c;
	const struct stripe *ref;
	uint64_t rng;
	int failures;
};

static void *decode_thread(void *p)
{
	struct thread_arg *a = p;
	const struct stripe *ref = a->ref;
	uint8_t *work[PROTO_MAX_K + PROTO_MAX_M];
	uint64_t all = (UINT64_C(1) << ref->n) - 1;

	for (unsigned i = 0; i < ref->n; i++)
		work[i] = malloc(ref->len);
	for (int iter = 0; iter < 300; iter++) {
		uint64_t lost = 0;
		unsigned lost_n = (unsigned)(unit_rng_next(&a->rng) % (ref->m + 1));
		while ((unsigned)__builtin_popcountll(lost) < lost_n)
			lost |= UINT64_C(1) << (unit_rng_next(&a->rng) % ref->n);
		for (unsigned i = 0; i < ref->n; i++) {
			if (lost & (UINT64_C(1) << i))
				memset(work[i], 0xa5, ref->len);
			else
				memcpy(work[i], ref->orig[i], ref->len);
		}
		if (codec_decode(a->c, work, all & ~lost, all, ref->len) != 0) {
			a->failures++;
			continue;
		}
		for (unsigned i = 0; i < ref->n; i++)
			if (memcmp(work[i], ref->orig[i], ref->len) != 0)
				a->failures++;
	}
	for (unsigned i = 0; i < ref->n; i++)
		free(work[i]);
	return NULL;
}

START_TEST(test_concurrent)
{
	uint64_t rng = unit_seed + 500;
	struct codec *c = NULL;
	struct stripe s;
	pthread_t th[N_THREADS];
	struct thread_arg args[N_THREADS];

	ck_assert_int_eq(codec_new(6, 3, &c), 0);
	stripe_init(&s, c, 4096, &rng);
	for (int i = 0; i < N_THREADS; i++) {
		args[i] = (struct thread_arg){ .c = c, .ref = &s,
						.rng = unit_seed * 31 + (uint64_t)i };
		ck_assert_int_eq(pthread_create(&th[i], NULL, decode_thread, &args[i]), 0);
	}
	for (int i = 0; i < N_THREADS; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(args[i].failures == 0, "thread %d: %d failures", i,
			      args[i].failures);
	}
	stripe_release(&s);
	codec_free(c);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("codec");
	TCase *tc = tcase_create("codec");

	tcase_add_loop_test(tc, test_every_loss_pattern, 0,
			    (int)(sizeof(geometries) / sizeof(geometries[0])));
	tcase_add_loop_test(tc, test_partial_want, 0,
			    (int)(sizeof(geometries) / sizeof(geometries[0])));
	tcase_add_test(tc, test_too_few);
	tcase_add_loop_test(tc, test_lengths, 0, (int)(sizeof(lengths) / sizeof(lengths[0])));
	tcase_add_test(tc, test_encode_properties);
	tcase_add_test(tc, test_bad_geometry);
	tcase_add_test(tc, test_max_geometry);
	tcase_add_test(tc, test_frag_len);
	tcase_add_test(tc, test_cache);
	tcase_add_test(tc, test_concurrent);
	suite_add_tcase(s, tc);
	return s;
}
