/*
 * stripe: what the data path and the scrubber share, below both of them.
 *
 *   - the fragments of one stripe: fetch k good ones and decode the rest, check, seal
 *     (stripe_io.c);
 *   - the servers: the active list with its placement weights (the capacities the servers
 *     report when mkfs was given none, calibrated), and the choice of servers for fragments,
 *     so that a repair places exactly as a write does (stripe_servers.c);
 *   - the block store of a filesystem, from its superblock and credentials;
 *   - the metadata batches that release stripes (their records, and garbage entries for their
 *     fragments), and the drain of the garbage queue (stripe_gc.c).
 *
 * Uses codec, placement, blockstore, meta and proto; never data, scrub or fs.
 *
 * A stripe buffer holds k+m slots; slot i is one whole object of fragment i: the
 * PROTO_FRAG_HDR_SIZE-byte header followed by rec->frag_len payload bytes, exactly as stored on
 * a block server. stripe_buf_size() gives the size to allocate, stripe_slot() and
 * stripe_payload() the addresses.
 *
 * Uses codec, blockclient and proto; no metadata writes, no logging above debug level.
 * Thread-safety: every function may be called from any thread (blockclient and codec are
 * thread-safe); a stripe buffer belongs to its caller.
 */
#ifndef TESSERA_STRIPE_H
#define TESSERA_STRIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "tessera/blockclient.h"
#include "tessera/meta.h"
#include "tessera/placement.h"
#include "tessera/proto.h"

struct blockstore;
struct codec;

/* Bytes of a buffer holding every slot of rec's stripe: (k+m) * (header + frag_len). */
size_t stripe_buf_size(const struct meta_stripe *rec);
/* Slot i (header first) and its payload inside buf. */
uint8_t *stripe_slot(uint8_t *buf, const struct meta_stripe *rec, unsigned i);
uint8_t *stripe_payload(uint8_t *buf, const struct meta_stripe *rec, unsigned i);

/* Checks a stripe record against the codec it will be decoded with: k and m equal, k+m <= 64,
 * 0 < frag_len <= PROTO_MAX_PAYLOAD, data_len <= k * frag_len. Returns 0 or -EINVAL. */
int stripe_rec_check(const struct meta_stripe *rec, const struct codec *codec);

/* Checks one fetched object (len bytes) as fragment `index` of rec's stripe: a valid header of
 * our filesystem (fs_uuid), the right identity (ino, stripe, version, index), geometry (k, m),
 * payload length equal to rec->frag_len, payload crc32c equal to the header's and to
 * rec->crcs[index]. With payload false only the header is checked (obj may hold just the
 * PROTO_FRAG_HDR_SIZE header bytes). Fills *ret_hdr (may be NULL) when it returns true. */
bool stripe_frag_check(const uint8_t fs_uuid[16], const uint8_t *obj, size_t len, bool payload,
		       uint64_t ino, uint64_t stripe, const struct meta_stripe *rec, unsigned index,
		       struct proto_frag_hdr *ret_hdr);

/* The same for a fragment received in two parts: its header (PROTO_FRAG_HDR_SIZE bytes) and
 * its payload (rec->frag_len bytes, or NULL to check the header only); len is the number of
 * bytes received in all. */
bool stripe_frag_check_parts(const uint8_t fs_uuid[16], const uint8_t *hdr, const uint8_t *payload,
			     size_t len, uint64_t ino, uint64_t stripe, const struct meta_stripe *rec,
			     unsigned index, struct proto_frag_hdr *ret_hdr);

/* Fills the header of fragment `index` in obj (whose payload of frag_len bytes is already in
 * place after the header): computes the payload crc32c, encodes the header. stripe_len is the
 * header's "stripe data length". Returns the payload crc. */
uint32_t stripe_frag_seal(uint8_t *obj, const uint8_t fs_uuid[16], uint64_t ino, uint64_t stripe,
			  uint64_t version, unsigned index, unsigned k, unsigned m,
			  uint32_t frag_len, uint64_t stripe_len);

/* Writes the header (PROTO_FRAG_HDR_SIZE bytes at hdr) of fragment `index` whose payload of
 * frag_len bytes is at payload. Returns the payload crc. */
uint32_t stripe_frag_seal_parts(uint8_t *hdr, const uint8_t *payload, const uint8_t fs_uuid[16],
				uint64_t ino, uint64_t stripe, uint64_t version, unsigned index,
				unsigned k, unsigned m, uint32_t frag_len, uint64_t stripe_len);

struct stripe_fetch_opts {
	uint64_t avoid_mask; /* fragments never to fetch (known bad) */
	uint64_t want_mask;  /* fragments to rebuild when they are not good */
	unsigned hedge_ms;   /* timeout of the first round (data fragments); 0 = the client's */
};

/* The general form of stripe_fetch(): fragment i's header goes to hdrs[i] (PROTO_FRAG_HDR_SIZE
 * bytes) and its payload to dest[i] (rec->frag_len bytes); dest[i] may be NULL for a fragment
 * not in want_mask (a scratch buffer is used if it must be fetched). *ret_good as for
 * stripe_fetch(); *ret_bad (may be NULL) the fetched fragments that were unusable, and
 * *ret_damaged (may be NULL) those of them whose server answered (missing or corrupt, as
 * opposed to a server that did not answer). Returns as stripe_fetch(), also -EINVAL when a
 * wanted fragment has no dest. */
int stripe_fetch_into(struct blockstore *bs, struct codec *codec, const uint8_t fs_uuid[16],
		      uint64_t ino, uint64_t stripe, const struct meta_stripe *rec,
		      const struct stripe_fetch_opts *o, uint8_t *const *hdrs, uint8_t *const *dest,
		      uint64_t *ret_good, uint64_t *ret_bad, uint64_t *ret_damaged);

/* Fetches fragments of rec's stripe into buf (stripe_buf_size(rec) bytes) until k good ones
 * are there, then decodes every fragment of want_mask that is not good (payload only: the
 * decoded slots' headers are left as they are). Fragments of avoid_mask are never fetched
 * (known bad). Order: data fragments on servers that are up, then as many parity fragments on
 * servers that are up as are missing, then everything not tried yet, down servers included.
 * *ret_good gets the mask of fetched fragments that passed stripe_frag_check(), *ret_bad (may
 * be NULL) the mask of fetched fragments that did not (missing, unreadable or corrupt).
 * Returns 0, -EIO when fewer than k good fragments could be fetched, -EINVAL (stripe_rec_check() failed), -ENOMEM. */
int stripe_fetch(struct blockstore *bs, struct codec *codec, const uint8_t fs_uuid[16],
		 uint64_t ino, uint64_t stripe, const struct meta_stripe *rec, uint64_t avoid_mask,
		 uint64_t want_mask, uint8_t *buf, uint64_t *ret_good, uint64_t *ret_bad);

/* Copies the file data of a fetched stripe (its data fragments, which must be good or
 * decoded) into out: rec->data_len bytes, then zeros up to out_size. */
void stripe_gather(uint8_t *buf, const struct meta_stripe *rec, uint8_t *out, size_t out_size);

/* ---- the block store of a filesystem ---- */

/* The client settings of sb: bucket and region, and the key pair from the credentials file
 * that sb names (relative to meta_dir). Timeouts are left as they are in *cfg. Returns 0,
 * -EINVAL (no key pair in the file), -errno reading it. */
int stripe_client_config(const char *meta_dir, const struct meta_superblock *sb,
			 struct blockclient_config *cfg);
/* A block store over every server of sb (retired ones too: their URL is known, and a listing
 * may still want them). Wipes the keys in *cfg. Returns 0 and *ret, or -errno. */
int stripe_store_new(const struct meta_superblock *sb, struct blockclient_config *cfg,
		     struct blockstore **ret);

/* ---- the servers ---- */

struct stripe_servers {
	unsigned k, m;
	size_t n; /* active servers: placement chooses among them */
	struct placement_server servers[META_MAX_SERVERS]; /* effective (calibrated) weights */
	const struct meta_server *srv[META_MAX_SERVERS];   /* the superblock entry of servers[i] */
	uint64_t retired[65536 / 64];                      /* bits of retired ids: never read */
};

/* The active servers of sb. Weights: as tessera-mkfs was told; when it was told none (all 1)
 * and bs is not NULL, the capacity each server reports, if every one of them answers now.
 * Then calibrated (placement_calibrate()) so that fragments go in proportion. sb is borrowed
 * and must outlive ss. Returns 0, -EINVAL (a bad geometry), -ENOMEM. */
int stripe_servers_init(struct stripe_servers *ss, const struct meta_superblock *sb,
			struct blockstore *bs);
/* Whether id is a retired server (not read, nothing placed on it, its garbage dropped). */
bool stripe_server_retired(const struct stripe_servers *ss, uint16_t id);
/* Position of an active server in ss->servers, or -1. */
int stripe_server_pos(const struct stripe_servers *ss, uint16_t id);

/* Chooses `count` servers for fragments of stripe (ino, stripe) by placement, best first:
 * among the active servers that up[] allows (up[i] for ss->servers[i]; NULL: those the store
 * does not hold in back-off), never one of held[0..n_held-1] (servers that already hold a
 * fragment of the stripe), at most m fragments of the stripe in one zone while other zones
 * have candidates, the held ones counted. Returns how many were chosen (fewer when fewer
 * servers qualify), or -EINVAL, -ENOMEM. */
int stripe_choose(const struct stripe_servers *ss, struct blockstore *bs, const bool *up,
		  uint64_t ino, uint64_t stripe, const uint16_t *held, size_t n_held,
		  unsigned count, uint16_t *ret_ids);

/* Capacity and free bytes over the active servers (the retired ones not counted) from their
 * /-/status. *ret_answered gets how many answered. Returns 0 or -ENOMEM. */
int stripe_servers_capacity(const struct stripe_servers *ss, struct blockstore *bs,
			    uint64_t *ret_capacity, uint64_t *ret_free, size_t *ret_answered);

/* ---- releasing stripes (metadata batches) ---- */

/* Adds to b a garbage entry for every stored fragment of rec (stripe `stripe` of ino). */
void stripe_garbage_add(struct meta_batch *b, uint64_t ino, uint64_t stripe,
			const struct meta_stripe *rec);
/* Adds to b the deletion of the stripe records of ino with from <= index < end (end 0: no
 * bound) and garbage entries for their fragments. Returns how many, or -EIO. */
int stripe_release(struct meta *meta, uint64_t ino, uint64_t from, uint64_t end,
		   struct meta_batch *b);
/* Adds to b the removal of inode ino and everything it owns: its record, inline data, xattrs,
 * orphan mark, stripe records (their fragments to the garbage queue). Whatever its mode says:
 * the scrubber purges inodes whose record is damaged. Returns 0 or -EIO. */
int stripe_purge_inode(struct meta *meta, uint64_t ino, struct meta_batch *b);

/* ---- the garbage queue ---- */

#define STRIPE_GC_BATCH 128

struct stripe_gc_pass {
	unsigned listed;   /* entries looked at */
	unsigned settled;  /* deleted (or nothing left to delete: 404, a retired or unknown
	                      server) and removed from the queue */
	uint64_t last_seq; /* the last entry looked at: the next pass starts after it */
};

/* One pass over at most STRIPE_GC_BATCH entries of the garbage queue after sequence `after`
 * (has_after false: from the start): each fragment is deleted on its server (in parallel), and
 * the settled entries leave the queue in one commit, made with lock held when lock is not
 * NULL. dry_run: entries are only counted. Returns 0 with *ret, or -errno (the listing or the
 * commit failed). */
int stripe_gc_pass(struct meta *meta, struct blockstore *bs, const struct stripe_servers *ss,
		   pthread_mutex_t *lock, bool has_after, uint64_t after, bool dry_run,
		   struct stripe_gc_pass *ret);

#endif
