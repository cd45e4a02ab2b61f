/*
 * placement: weighted rendezvous hashing over the servers that are up.
 *
 * Each (stripe, server) pair gets a pseudo-random u in (0, 1) from a 64-bit mix of the stripe
 * seed and the server id; the score -weight / ln(u) makes the chance of a server ranking first
 * proportional to its weight. The top `count` scores are taken, skipping a zone that already
 * has max_per_zone members as long as servers of other zones remain.
 *
 * No state, no locks.
 */
#include "tessera/placement.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t x)
{
	/* splitmix64 finaliser: a bijection with good avalanche. */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

uint64_t placement_seed(uint64_t ino, uint64_t stripe)
{
	return mix64(mix64(ino + 0x9e3779b97f4a7c15ull) ^ stripe);
}

struct scored {
	double score;
	size_t idx;
};

static int cmp_scored(const void *a, const void *b)
{
	const struct scored *x = a, *y = b;

	if (x->score != y->score)
		return x->score < y->score ? 1 : -1;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static bool same_zone(const char *a, const char *b)
{
	/* A server without a zone label is a domain of its own. */
	if (!a || !*a || !b || !*b)
		return false;
	return strcmp(a, b) == 0;
}

int placement_choose(const struct placement_server *servers, size_t n, uint64_t seed,
		     unsigned count, unsigned max_per_zone, uint16_t *ret_ids)
{
	struct scored *sc;
	bool *taken;
	size_t ns = 0;
	unsigned chosen = 0;

	if (n > 0 && !servers)
		return -EINVAL;
	if (count == 0 || n == 0)
		return 0;
	sc = calloc(n, sizeof(*sc));
	taken = calloc(n, sizeof(*taken));
	if (!sc || !taken) {
		free(sc);
		free(taken);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		if (!servers[i].up || servers[i].weight == 0)
			continue;
		uint64_t h = mix64(seed ^ mix64((uint64_t)servers[i].id + 1));
		/* u in (0, 1): 53 random bits, never 0 or 1. */
		double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0;
		sc[ns].score = -(double)servers[i].weight / log(u);
		sc[ns].idx = i;
		ns++;
	}
	qsort(sc, ns, sizeof(*sc), cmp_scored);

	/* First pass honours the zone limit; the second fills what is left without it. */
	for (int pass = 0; pass < 2 && chosen < count; pass++) {
		for (size_t j = 0; j < ns && chosen < count; j++) {
			size_t i = sc[j].idx;
			if (taken[i])
				continue;
			if (pass == 0 && max_per_zone > 0) {
				unsigned in_zone = 0;
				for (unsigned c = 0; c < chosen; c++) {
					for (size_t t = 0; t < n; t++) {
						if (servers[t].id == ret_ids[c] &&
						    same_zone(servers[t].zone, servers[i].zone))
							in_zone++;
					}
				}
				if (in_zone >= max_per_zone)
					continue;
			}
			taken[i] = true;
			ret_ids[chosen++] = servers[i].id;
		}
	}
	free(sc);
	free(taken);
	return (int)chosen;
}
