/*
 * stripe/servers: the active servers, their weights, the choice of servers for fragments, and
 * the block store of a filesystem. The data path's writes and the scrubber's repairs both place
 * fragments here, so that a repaired stripe is spread exactly as a written one.
 */
#include "tessera/stripe.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tessera/blockstore.h"
#include "tessera/common.h"

int stripe_client_config(const char *meta_dir, const struct meta_superblock *sb,
			 struct blockclient_config *cfg)
{
	snprintf(cfg->bucket, sizeof(cfg->bucket), "%s", sb->bucket);
	snprintf(cfg->region, sizeof(cfg->region), "%s", sb->region);
	return meta_load_credentials(meta_dir, sb, cfg->access_key, sizeof(cfg->access_key),
				     cfg->secret_key, sizeof(cfg->secret_key));
}

int stripe_store_new(const struct meta_superblock *sb, struct blockclient_config *cfg,
		     struct blockstore **ret)
{
	uint16_t ids[META_MAX_SERVERS];
	const char *urls[META_MAX_SERVERS];
	int r;

	for (uint32_t i = 0; i < sb->n_servers; i++) {
		ids[i] = sb->servers[i].id;
		urls[i] = sb->servers[i].url;
	}
	r = blockstore_client_new(cfg, ids, urls, sb->n_servers, ret);
	memset(cfg->access_key, 0, sizeof(cfg->access_key));
	memset(cfg->secret_key, 0, sizeof(cfg->secret_key));
	return r;
}

int stripe_servers_init(struct stripe_servers *ss, const struct meta_superblock *sb,
			struct blockstore *bs)
{
	if (!sb || sb->k == 0 || sb->m == 0 || sb->k + sb->m > 64)
		return -EINVAL;
	memset(ss, 0, sizeof(*ss));
	ss->k = sb->k;
	ss->m = sb->m;
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		const struct meta_server *sv = &sb->servers[i];
		struct placement_server *ps = &ss->servers[ss->n];

		if (sv->flags & META_SERVER_F_RETIRED) {
			ss->retired[sv->id / 64] |= 1ull << (sv->id % 64);
			continue;
		}
		ss->srv[ss->n] = sv;
		ps->id = sv->id;
		ps->weight = sv->weight ? sv->weight : 1;
		ps->zone = sv->zone;
		ps->up = true;
		ss->n++;
	}
	/* No weights given: the capacities, if every server reports one now. */
	bool weights_given = false;
	for (size_t i = 0; i < ss->n; i++)
		weights_given |= ss->servers[i].weight > 1;
	if (!weights_given && bs && ss->n > 0) {
		struct blockstore_status st[META_MAX_SERVERS];
		uint16_t ids[META_MAX_SERVERS];
		for (size_t i = 0; i < ss->n; i++)
			ids[i] = ss->servers[i].id;
		bool all = blockstore_status(bs, ids, ss->n, false, st) == (int)ss->n;
		for (size_t i = 0; all && i < ss->n; i++)
			all = st[i].capacity > 0;
		for (size_t i = 0; all && i < ss->n; i++)
			ss->servers[i].weight = st[i].capacity >> 20 ? st[i].capacity >> 20 : 1;
	}
	return placement_calibrate(ss->servers, ss->n, ss->k + ss->m);
}

bool stripe_server_retired(const struct stripe_servers *ss, uint16_t id)
{
	return ss->retired[id / 64] & (1ull << (id % 64));
}

int stripe_server_pos(const struct stripe_servers *ss, uint16_t id)
{
	for (size_t i = 0; i < ss->n; i++)
		if (ss->servers[i].id == id)
			return (int)i;
	return -1;
}

int stripe_choose(const struct stripe_servers *ss, struct blockstore *bs, const bool *up,
		  uint64_t ino, uint64_t stripe, const uint16_t *held, size_t n_held,
		  unsigned count, uint16_t *ret_ids)
{
	struct placement_server cand[META_MAX_SERVERS];

	memcpy(cand, ss->servers, ss->n * sizeof(cand[0]));
	for (size_t i = 0; i < ss->n; i++)
		cand[i].up = up ? up[i] : blockstore_server_up(bs, cand[i].id);
	return placement_choose_more(cand, ss->n, placement_seed(ino, stripe), held, n_held,
				     count, ss->m, ret_ids);
}

int stripe_servers_capacity(const struct stripe_servers *ss, struct blockstore *bs,
			    uint64_t *ret_capacity, uint64_t *ret_free, size_t *ret_answered)
{
	struct blockstore_status st[META_MAX_SERVERS];
	uint16_t ids[META_MAX_SERVERS];
	uint64_t cap = 0, fr = 0;
	int r;

	for (size_t i = 0; i < ss->n; i++)
		ids[i] = ss->servers[i].id;
	r = blockstore_status(bs, ids, ss->n, false, st);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ss->n; i++) {
		cap += st[i].capacity;
		fr += st[i].free;
	}
	*ret_capacity = cap;
	*ret_free = fr;
	*ret_answered = (size_t)r;
	return 0;
}
