/*
 * Unit tests for placement: weighted rendezvous hashing.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/placement.h"

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

int main(void)
{
	Suite *s = suite_create("placement");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_distinct_and_stable);
	tcase_add_test(tc, test_down_servers_skipped);
	tcase_add_test(tc, test_weights_proportional);
	tcase_add_test(tc, test_zones_spread);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
