/*
 * stripe_io: reading, checking and sealing the fragments of one stripe, shared by the data path
 * and the scrubber (both need "fetch k good fragments, decode the rest").
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
#ifndef TESSERA_STRIPE_IO_H
#define TESSERA_STRIPE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/proto.h"

struct blockclient;
struct codec;
struct meta_stripe;

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
int stripe_fetch_into(struct blockclient *bc, struct codec *codec, const uint8_t fs_uuid[16],
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
int stripe_fetch(struct blockclient *bc, struct codec *codec, const uint8_t fs_uuid[16],
		 uint64_t ino, uint64_t stripe, const struct meta_stripe *rec, uint64_t avoid_mask,
		 uint64_t want_mask, uint8_t *buf, uint64_t *ret_good, uint64_t *ret_bad);

/* Copies the file data of a fetched stripe (its data fragments, which must be good or
 * decoded) into out: rec->data_len bytes, then zeros up to out_size. */
void stripe_gather(uint8_t *buf, const struct meta_stripe *rec, uint8_t *out, size_t out_size);

#endif
