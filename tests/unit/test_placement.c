/*
 * Unit tests for placement: weighted rendezvous hashing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/placement.h"

#include "unit.h"

START_TEST(test_distinct_and_stable)
{
	struct placement_server s[8];
	uint16_t a[6], b[6];

	for (int i = 0; i < 8; i++)
		s[i] = (struct placement_server){ .id = (uint16_t)(10 + i), .weight = 1, .up = true };
	for (uint64_t st = 0; st < 2000; st++) {
		uint64_t seed = placement_seed(7, st);
		ck_assert_int_eq(placement_choose(s, 8, seed, 6, 0, a), 6);
		ck_assert_int_eq(placement_choose(s, 8, seed, 6, 0, b), 6);
		ck_assert_mem_eq(a, b, sizeof(a)); /* deterministic */
		for (int i = 0; i < 6; i++)
			for (int j = i + 1; j < 6; j++)
				ck_assert_uint_ne(a[i], a[j]);
	}
}
END_TEST

START_TEST(test_down_servers_skipped)
{
	struct placement_server s[6];
	uint16_t ids[6];

	for (int i = 0; i < 6; i++)
		s[i] = (struct placement_server){ .id = (uint16_t)i, .weight = 1, .up = i != 2 };
	for (uint64_t st = 0; st < 500; st++) {
		int n = placement_choose(s, 6, placement_seed(1, st), 6, 0, ids);
		ck_assert_int_eq(n, 5);
		for (int i = 0; i < n; i++)
			ck_assert_uint_ne(ids[i], 2);
	}
	ck_assert_int_eq(placement_choose(s, 6, 1, 0, 0, ids), 0);
	ck_assert_int_eq(placement_choose(NULL, 6, 1, 3, 0, ids), -EINVAL);
}
END_TEST

/* Capacities 1:2:4 (three servers of each weight): over 10 000 stripes of one fragment the
 * counts land within 10% of the proportion. */
START_TEST(test_weights_proportional)
{
	struct placement_server s[9];
	unsigned count[9] = { 0 };
	const unsigned stripes = 10000, per = 1;
	uint16_t id;

	for (int i = 0; i < 9; i++)
		s[i] = (struct placement_server){ .id = (uint16_t)i,
						  .weight = 1ull << (i / 3), .up = true };
	for (uint64_t st = 0; st < stripes; st++) {
		ck_assert_int_eq(placement_choose(s, 9, placement_seed(3, st), per, 0, &id), 1);
		count[id]++;
	}
	for (int i = 0; i < 9; i++) {
		double expect = (double)stripes * (double)s[i].weight / 21.0;
		double dev = ((double)count[i] - expect) / expect;
		ck_assert_msg(dev < 0.10 && dev > -0.10, "server %d: %u fragments, expected %.0f",
			      i, count[i], expect);
	}
}
END_TEST

/* The case: capacities 1:2:4 (six servers of each), 10 000 stripes of k+m = 6
 * fragments, three zones: after calibration every server's fragment count lands within 10% of
 * its share of the capacity, no stripe has two fragments on one server or more than m = 2 in
 * one zone. */
START_TEST(test_weights_calibrated)
{
	static const char *zones[3] = { "z0", "z1", "z2" };
	struct placement_server s[18];
	uint64_t orig[18];
	unsigned count[18] = { 0 };
	double total = 0;
	uint16_t ids[6];

	for (int i = 0; i < 18; i++) {
		s[i] = (struct placement_server){ .id = (uint16_t)(100 + i),
						  .weight = (uint64_t)(1u << (i / 6)) << 40,
						  .zone = zones[i % 3], .up = true };
		orig[i] = s[i].weight;
		total += (double)orig[i];
	}
	ck_assert_int_eq(placement_calibrate(s, 18, 6), 0);
	for (uint64_t st = 0; st < 10000; st++) {
		int per_zone[3] = { 0 };
		ck_assert_int_eq(placement_choose(s, 18, placement_seed(11, st), 6, 2, ids), 6);
		for (int j = 0; j < 6; j++) {
			for (int t = j + 1; t < 6; t++)
				ck_assert_uint_ne(ids[j], ids[t]);
			count[ids[j] - 100]++;
			per_zone[(ids[j] - 100) % 3]++;
		}
		for (int z = 0; z < 3; z++)
			ck_assert_int_le(per_zone[z], 2);
	}
	for (int i = 0; i < 18; i++) {
		double expect = 60000.0 * (double)orig[i] / total;
		double dev = ((double)count[i] - expect) / expect;
		ck_assert_msg(dev < 0.10 && dev > -0.10, "server %d (weight %d): %u fragments, expected %.0f",
			      i, 1 << (i / 6), count[i], expect);
	}
	/* Deterministic: the same input gives the same weights. */
	struct placement_server again[18];
	for (int i = 0; i < 18; i++) {
		again[i] = s[i];
		again[i].weight = orig[i];
	}
	ck_assert_int_eq(placement_calibrate(again, 18, 6), 0);
	for (int i = 0; i < 18; i++)
		ck_assert_uint_eq(again[i].weight, s[i].weight);
	ck_assert_int_eq(placement_calibrate(s, 0, 6), -EINVAL);
}
END_TEST

START_TEST(test_zones_spread)
{
	/* Three zones of three servers, 4+2: at most m = 2 fragments in one zone. */
	static const char *zones[3] = { "a", "b", "c" };
	struct placement_server s[9];
	uint16_t ids[6];

	for (int i = 0; i < 9; i++)
		s[i] = (struct placement_server){ .id = (uint16_t)i, .weight = 1,
						  .zone = zones[i / 3], .up = true };
	for (uint64_t st = 0; st < 3000; st++) {
		int per_zone[3] = { 0 };
		ck_assert_int_eq(placement_choose(s, 9, placement_seed(5, st), 6, 2, ids), 6);
		for (int i = 0; i < 6; i++)
			per_zone[ids[i] / 3]++;
		for (int z = 0; z < 3; z++)
			ck_assert_int_le(per_zone[z], 2);
	}
	/* Too few zones: the limit is relaxed rather than failing. */
	for (int i = 0; i < 9; i++)
		s[i].zone = "same";
	ck_assert_int_eq(placement_choose(s, 9, 42, 6, 2, ids), 6);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("placement");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_distinct_and_stable);
	tcase_add_test(tc, test_down_servers_skipped);
	tcase_add_test(tc, test_weights_proportional);
	tcase_add_test(tc, test_zones_spread);
	tcase_add_test(tc, test_weights_calibrated);
	suite_add_tcase(s, tc);
	return s;
}
