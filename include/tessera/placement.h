/*
 * placement: which servers hold the fragments of a stripe.
 *
 * Weighted rendezvous (highest random weight) hashing: every server gets a score
 * -weight / ln(u), with u in (0,1) a hash of (stripe seed, server id); the highest scores win.
 * A server's share of fragments is proportional to its weight, and adding or removing one
 * server moves only the fragments that must move. The choice is recorded in the stripe map
 * by the caller, so a later change of the server list never loses track of data.
 *
 * Pure computation, thread-safe.
 */
#ifndef TESSERA_PLACEMENT_H
#define TESSERA_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct placement_server {
	uint16_t id;
	uint64_t weight;  /* > 0 */
	const char *zone; /* failure domain label, borrowed; "" or NULL = its own domain */
	bool up;          /* false: never chosen */
};

/* The seed of a stripe: a hash of (inode, stripe index). */
uint64_t placement_seed(uint64_t ino, uint64_t stripe);

/* Chooses up to `count` distinct servers among the n given (only those up), best first,
 * into ret_ids[0..count-1]. At most max_per_zone servers of one zone are chosen while other
 * zones still have candidates (0 = no limit); when the cluster has too few zones the limit
 * is relaxed rather than failing. Returns how many were chosen (< count when fewer servers are
 * up), or -EINVAL. */
int placement_choose(const struct placement_server *servers, size_t n, uint64_t seed,
		     unsigned count, unsigned max_per_zone, uint16_t *ret_ids);

/* The same for a stripe some of whose fragments already have servers: held[0..n_held-1] (ids,
 * which need not be among servers[] or up) are never chosen, and count towards the zone
 * limit with the zone they have in servers[] (a held id not in servers[] is a domain of its
 * own). placement_choose() is this with no held servers. */
int placement_choose_more(const struct placement_server *servers, size_t n, uint64_t seed,
			  const uint16_t *held, size_t n_held, unsigned count,
			  unsigned max_per_zone, uint16_t *ret_ids);

/* Top-count selection by rendezvous scores is not proportional to the weights once count > 1:
 * a heavy server can hold at most one fragment of a stripe, so light servers win more than
 * their share. This rewrites the weights of servers[] in place to effective weights, found by
 * a few rounds of deterministic sampling (the same input always gives the same output), such
 * that choosing `count` of them puts fragments on each server in proportion to its original
 * weight, as far as that is possible (no server can hold more than one fragment per stripe).
 * Zones are not considered. Returns 0 or -EINVAL, -ENOMEM. */
int placement_calibrate(struct placement_server *servers, size_t n, unsigned count);

#endif
