/*
 * codec: stripes to fragments and back with ISA-L, Reed-Solomon over GF(2^8) with a Cauchy
 * generator matrix (every k x k submatrix invertible, for every k, m in range).
 *
 * Pure computation, no I/O. A struct codec is immutable after codec_new() apart from its
 * internal decode-table cache, which has its own lock: one codec may be shared by all threads.
 */
#ifndef TESSERA_CODEC_H
#define TESSERA_CODEC_H

#include <stddef.h>
#include <stdint.h>

struct codec;

/* Creates a codec for k data and m parity fragments, 1 <= k <= PROTO_MAX_K,
 * 1 <= m <= PROTO_MAX_M, k + m <= 255. Returns 0 and *ret (free with codec_free()) or -EINVAL,
 * -ENOMEM. */
int codec_new(unsigned k, unsigned m, struct codec **ret);
void codec_free(struct codec *c);
unsigned codec_k(const struct codec *c);
unsigned codec_m(const struct codec *c);

/* Fragment payload length for a stripe holding data_len bytes: ceil(data_len / k) rounded up
 * to a multiple of 64 bytes (at least 64). */
size_t codec_frag_len(const struct codec *c, size_t data_len);

/* Computes the m parity fragments from the k data fragments, each frag_len bytes.
 * data[0..k-1] are read, parity[0..m-1] written. */
void codec_encode(const struct codec *c, uint8_t *const *data, uint8_t *const *parity,
		  size_t frag_len);

/* Rebuilds missing fragments. frags[0..k+m-1] each point to a frag_len buffer;
 * present is a bit mask (bit i = fragment i is valid). Fragments whose bit is clear are
 * overwritten with their reconstructed contents (data and parity alike) when
 * want_mask has their bit; other absent fragments are left alone. When no wanted fragment is
 * absent, nothing is done and 0 is returned. Decode tables are cached per loss pattern in a
 * small LRU (thread-safe), so repeated degraded reads of one pattern are cheap.
 * Returns 0, or -EIO when fewer than k fragments are present, -ENOMEM. */
int codec_decode(struct codec *c, uint8_t *const *frags, uint64_t present, uint64_t want_mask,
		 size_t frag_len);

/* Decode-table cache counters since codec_new() (for tests and statistics). */
void codec_cache_stats(struct codec *c, uint64_t *hits, uint64_t *misses);

#endif
