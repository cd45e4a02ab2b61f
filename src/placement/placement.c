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

#include "tessera/common.h"

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

/* The zone of server id in servers[], or NULL (a domain of its own). */
static const char *zone_of(const struct placement_server *servers, size_t n, uint16_t id)
{
	for (size_t t = 0; t < n; t++)
		if (servers[t].id == id)
			return servers[t].zone;
	return NULL;
}

int placement_choose_more(const struct placement_server *servers, size_t n, uint64_t seed,
			  const uint16_t *held, size_t n_held, unsigned count,
			  unsigned max_per_zone, uint16_t *ret_ids)
{
	struct scored *sc;
	bool *taken;
	size_t ns = 0;
	unsigned chosen = 0;

	if ((n > 0 && !servers) || (n_held > 0 && !held))
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
		bool is_held = false;
		for (size_t h = 0; h < n_held; h++)
			is_held |= held[h] == servers[i].id;
		if (is_held)
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
				for (size_t h = 0; h < n_held; h++)
					in_zone += same_zone(zone_of(servers, n, held[h]),
							     servers[i].zone);
				for (unsigned c = 0; c < chosen; c++)
					in_zone += same_zone(zone_of(servers, n, ret_ids[c]),
							     servers[i].zone);
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

int placement_choose(const struct placement_server *servers, size_t n, uint64_t seed,
		     unsigned count, unsigned max_per_zone, uint16_t *ret_ids)
{
	return placement_choose_more(servers, n, seed, NULL, 0, count, max_per_zone, ret_ids);
}

#define CALIBRATE_SAMPLES 8000
#define CALIBRATE_ROUNDS 8
#define CALIBRATE_SCALE 1048576.0

int placement_calibrate(struct placement_server *servers, size_t n, unsigned count)
{
	double *target = NULL, *eff = NULL, *corr = NULL;
	uint64_t *servers_w = NULL; /* the original weights */
	unsigned *hits = NULL;
	uint16_t *ids = NULL;
	double total = 0;
	int r = 0;

	if (!servers || n == 0 || count == 0)
		return -EINVAL;
	if (count >= n)
		return 0; /* every server is in every stripe: nothing to balance */
	target = calloc(n, sizeof(*target));
	eff = calloc(n, sizeof(*eff));
	hits = calloc(n, sizeof(*hits));
	ids = calloc(count, sizeof(*ids));
	servers_w = calloc(n, sizeof(*servers_w));
	corr = calloc(n, sizeof(*corr));
	if (!target || !eff || !hits || !ids || !servers_w || !corr) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		total += (double)servers[i].weight;
	if (total <= 0) {
		r = -EINVAL;
		goto out;
	}
	/* Each server's expected fragments per stripe, capped at one; what the cap removes is
	 * shared among the others (water filling). */
	for (int pass = 0; pass < 8; pass++) {
		double capped = 0, free_w = 0;
		for (size_t i = 0; i < n; i++) {
			if (target[i] >= 1.0)
				capped += 1.0;
			else
				free_w += (double)servers[i].weight;
		}
		for (size_t i = 0; i < n; i++)
			if (target[i] < 1.0)
				target[i] = TESSERA_MIN(1.0, ((double)count - capped) *
								 (double)servers[i].weight / free_w);
	}
	for (size_t i = 0; i < n; i++) {
		eff[i] = (double)servers[i].weight;
		servers_w[i] = servers[i].weight;
	}

	for (int round = 0; round < CALIBRATE_ROUNDS; round++) {
		struct placement_server *tmp = servers;
		for (size_t i = 0; i < n; i++) {
			tmp[i].weight = (uint64_t)(eff[i] / total * CALIBRATE_SCALE * (double)n) + 1;
			hits[i] = 0;
		}
		for (uint64_t s = 0; s < CALIBRATE_SAMPLES; s++) {
			int got = placement_choose(tmp, n, placement_seed(0x7e55e4a, s), count, 0, ids);
			for (int j = 0; j < got; j++)
				for (size_t i = 0; i < n; i++)
					if (servers[i].id == ids[j])
						hits[i]++;
		}
		/* Servers of equal weight are interchangeable: correct them by their average
		 * share, which is what sampling noise cannot skew. */
		for (size_t i = 0; i < n; i++) {
			double sum = 0;
			unsigned members = 0;
			for (size_t j = 0; j < n; j++) {
				if (servers_w[j] != servers_w[i])
					continue;
				sum += hits[j];
				members++;
			}
			double share = sum / members / CALIBRATE_SAMPLES;
			corr[i] = share > 0 && target[i] < 1.0 ? pow(target[i] / share, 0.8) : 1.0;
		}
		for (size_t i = 0; i < n; i++)
			eff[i] *= corr[i];
	}
	for (size_t i = 0; i < n; i++)
		servers[i].weight = (uint64_t)(eff[i] / total * CALIBRATE_SCALE * (double)n) + 1;
out:
	free(target);
	free(eff);
	free(hits);
	free(ids);
	free(servers_w);
	free(corr);
	return r;
}
