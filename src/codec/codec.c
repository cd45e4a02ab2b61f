/*
 * codec: Reed-Solomon erasure coding of stripes with ISA-L.
 *
 * A stripe is cut into k data fragments of frag_len bytes; m parity fragments are computed
 * from them with the generator matrix E ((k+m) x k, identity on top, Cauchy rows below, from
 * gf_gen_cauchy1_matrix). Every k x k submatrix of a Cauchy generator is invertible, so any k
 * of the k+m fragments rebuild the others. (ISA-L's Vandermonde gf_gen_rs_matrix lacks that
 * property for some (k, m): never use it here, fragments already stored depend on E.)
 *
 * Decoding: choose k present fragments (the lowest indices, so data fragments are preferred
 * and a missing parity fragment with all data present is a plain re-encode), take their rows
 * of E as the k x k matrix B, invert it (D = B^-1 maps the chosen fragments back to the data),
 * and derive one decode row per wanted missing fragment: row w of D for data, E[w] * D for
 * parity. ec_init_tables() expands those rows and ec_encode_data() applies them.
 *
 * This module does no I/O and does not checksum: callers verify fragments (crc32c in the
 * fragment header) before marking them present.
 *
 * Threads and locks: a struct codec is immutable after codec_new() except for the decode
 * table cache, protected by codec->lock. Cache entries are reference counted so that a
 * decode runs outside the lock while another thread may evict the entry; the lock is held
 * only for lookup, insertion and reference count changes. The cache is a small LRU bounded
 * by CODEC_CACHE_SLOTS entries of at most 32*k*m bytes of tables each.
 *
 * Invariants: k + m <= CODEC_MAX_FRAGS (64, the width of the fragment masks); the encode
 * matrix and tables never change after codec_new(); a cache entry's tables are immutable once
 * inserted, and are valid for exactly its (chosen set, want set) key.
 */
#include "tessera/codec.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "tessera/common.h"
#include "tessera/proto.h"

#define CODEC_MAX_FRAGS (PROTO_MAX_K + PROTO_MAX_M)
#define CODEC_CACHE_SLOTS 64
/* ec_encode_data() takes an int length: longer fragments are processed in chunks. */
#define CODEC_CHUNK ((size_t)1 << 30)

_Static_assert(CODEC_MAX_FRAGS <= 64, "fragment masks are 64 bits wide");

/* Decode tables for one (chosen, want) pattern. refs: the cache's reference plus one per
 * decode in progress; protected by codec->lock. */
struct codec_dtab {
	uint64_t chosen; /* the k source fragments, in increasing index order */
	uint64_t want;   /* the fragments produced, in increasing index order */
	unsigned rows;   /* popcount(want) */
	unsigned refs;
	uint64_t last_use;
	uint8_t tables[]; /* 32 * k * rows bytes */
};

struct codec {
	unsigned k, m;
	uint8_t *matrix;     /* (k+m) x k generator, row-major */
	uint8_t *enc_tables; /* 32 * k * m bytes, for the m parity rows */

	pthread_mutex_t lock; /* protects everything below */
	struct codec_dtab *cache[CODEC_CACHE_SLOTS];
	uint64_t tick;
	uint64_t hits, misses; /* statistics, for tests and debugging */
};

int codec_new(unsigned k, unsigned m, struct codec **ret)
{
	struct codec *c = NULL;
	int r;

	if (k < 1 || k > PROTO_MAX_K || m < 1 || m > PROTO_MAX_M || k + m > 255 ||
	    k + m > CODEC_MAX_FRAGS)
		return -EINVAL;

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->k = k;
	c->m = m;
	c->matrix = malloc((size_t)(k + m) * k);
	c->enc_tables = malloc((size_t)32 * k * m);
	if (!c->matrix || !c->enc_tables) {
		r = -ENOMEM;
		goto out;
	}
	r = -pthread_mutex_init(&c->lock, NULL);
	if (r < 0)
		goto out;

	gf_gen_cauchy1_matrix(c->matrix, (int)(k + m), (int)k);
	ec_init_tables((int)k, (int)m, c->matrix + (size_t)k * k, c->enc_tables);

	*ret = c;
	c = NULL;
out:
	if (c) {
		free(c->matrix);
		free(c->enc_tables);
		free(c);
	}
	return r;
}

void codec_free(struct codec *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < CODEC_CACHE_SLOTS; i++)
		free(c->cache[i]);
	pthread_mutex_destroy(&c->lock);
	free(c->matrix);
	free(c->enc_tables);
	free(c);
}

unsigned codec_k(const struct codec *c)
{
	return c->k;
}

unsigned codec_m(const struct codec *c)
{
	return c->m;
}

size_t codec_frag_len(const struct codec *c, size_t data_len)
{
	size_t per = data_len / c->k + (data_len % c->k != 0);

	if (per == 0)
		return 64;
	return (per + 63) & ~(size_t)63;
}

/* Applies tables (rows outputs from k sources) over len bytes, in int-sized chunks. */
static void codec_apply(unsigned k, unsigned rows, uint8_t *tables, uint8_t *const *src,
			uint8_t *const *dst, size_t len)
{
	uint8_t *s[CODEC_MAX_FRAGS], *d[CODEC_MAX_FRAGS];

	for (size_t off = 0; off < len; off += CODEC_CHUNK) {
		size_t n = TESSERA_MIN(len - off, CODEC_CHUNK);

		for (unsigned i = 0; i < k; i++)
			s[i] = src[i] + off;
		for (unsigned i = 0; i < rows; i++)
			d[i] = dst[i] + off;
		ec_encode_data((int)n, (int)k, (int)rows, tables, s, d);
	}
}

void codec_encode(const struct codec *c, uint8_t *const *data, uint8_t *const *parity,
		  size_t frag_len)
{
	codec_apply(c->k, c->m, c->enc_tables, data, parity, frag_len);
}

/* Builds the decode tables for (chosen, want). Returns 0 and *ret (free with free()), or
 * -ENOMEM, -EIO (singular submatrix: cannot happen with a Cauchy generator, checked anyway
 * because a wrong matrix would silently produce wrong data). */
static int codec_dtab_build(const struct codec *c, uint64_t chosen, uint64_t want,
			    struct codec_dtab **ret)
{
	const unsigned k = c->k, n = c->k + c->m;
	unsigned rows = (unsigned)__builtin_popcountll(want);
	uint8_t *b = NULL, *inv = NULL, *dm = NULL;
	struct codec_dtab *t = NULL;
	unsigned i, j, row;
	int r = 0;

	b = malloc((size_t)k * k);
	inv = malloc((size_t)k * k);
	dm = malloc((size_t)k * rows);
	t = malloc(sizeof(*t) + (size_t)32 * k * rows);
	if (!b || !inv || !dm || !t) {
		r = -ENOMEM;
		goto out;
	}

	/* B: the generator rows of the chosen fragments. */
	for (i = 0, row = 0; i < n; i++)
		if (chosen & (UINT64_C(1) << i))
			memcpy(b + (size_t)row++ * k, c->matrix + (size_t)i * k, k);
	if (gf_invert_matrix(b, inv, (int)k) != 0) {
		tlog_debug("codec: singular decode matrix for k=%u m=%u chosen=%#llx", c->k,
			   c->m, (unsigned long long)chosen);
		r = -EIO;
		goto out;
	}

	/* One decode row per wanted fragment: D[w] for data, E[w] * D for parity. */
	for (i = 0, row = 0; i < n; i++) {
		if (!(want & (UINT64_C(1) << i)))
			continue;
		uint8_t *out = dm + (size_t)row++ * k;
		if (i < k) {
			memcpy(out, inv + (size_t)i * k, k);
			continue;
		}
		const uint8_t *e = c->matrix + (size_t)i * k;
		for (j = 0; j < k; j++) {
			uint8_t s = 0;
			for (unsigned x = 0; x < k; x++)
				s ^= gf_mul(e[x], inv[(size_t)x * k + j]);
			out[j] = s;
		}
	}

	t->chosen = chosen;
	t->want = want;
	t->rows = rows;
	t->refs = 0;
	t->last_use = 0;
	ec_init_tables((int)k, (int)rows, dm, t->tables);
	*ret = t;
	t = NULL;
out:
	free(b);
	free(inv);
	free(dm);
	free(t);
	return r;
}

/* Drops one reference; frees t when it was the last. Called with c->lock held. */
static void codec_dtab_unref_locked(struct codec_dtab *t)
{
	if (--t->refs == 0)
		free(t);
}

/* Returns a referenced table for (chosen, want), from the cache or freshly built and
 * inserted. Release with codec_dtab_put(). */
static int codec_dtab_get(struct codec *c, uint64_t chosen, uint64_t want,
			  struct codec_dtab **ret)
{
	struct codec_dtab *t = NULL, *built = NULL;
	size_t slot, victim = 0;
	int r;

	pthread_mutex_lock(&c->lock);
	for (slot = 0; slot < CODEC_CACHE_SLOTS; slot++) {
		t = c->cache[slot];
		if (t && t->chosen == chosen && t->want == want)
			break;
	}
	if (slot < CODEC_CACHE_SLOTS) {
		t->refs++;
		t->last_use = ++c->tick;
		c->hits++;
		pthread_mutex_unlock(&c->lock);
		*ret = t;
		return 0;
	}
	c->misses++;
	pthread_mutex_unlock(&c->lock);

	/* Build outside the lock: O(k^3) field operations. */
	r = codec_dtab_build(c, chosen, want, &built);
	if (r < 0)
		return r;

	pthread_mutex_lock(&c->lock);
	/* Another thread may have inserted the same pattern meanwhile: use its copy. */
	for (slot = 0; slot < CODEC_CACHE_SLOTS; slot++) {
		t = c->cache[slot];
		if (t && t->chosen == chosen && t->want == want)
			break;
		if (!t || (c->cache[victim] && t->last_use < c->cache[victim]->last_use))
			victim = slot;
	}
	if (slot < CODEC_CACHE_SLOTS) {
		free(built);
	} else {
		if (c->cache[victim])
			codec_dtab_unref_locked(c->cache[victim]);
		t = built;
		t->refs = 1; /* the cache's reference */
		c->cache[victim] = t;
	}
	t->refs++;
	t->last_use = ++c->tick;
	pthread_mutex_unlock(&c->lock);
	*ret = t;
	return 0;
}

static void codec_dtab_put(struct codec *c, struct codec_dtab *t)
{
	pthread_mutex_lock(&c->lock);
	codec_dtab_unref_locked(t);
	pthread_mutex_unlock(&c->lock);
}

int codec_decode(struct codec *c, uint8_t *const *frags, uint64_t present, uint64_t want_mask,
		 size_t frag_len)
{
	const unsigned k = c->k, n = c->k + c->m;
	const uint64_t all = n == 64 ? UINT64_MAX : (UINT64_C(1) << n) - 1;
	uint8_t *src[CODEC_MAX_FRAGS], *dst[CODEC_MAX_FRAGS];
	struct codec_dtab *t;
	uint64_t chosen = 0, want;
	unsigned i, ns = 0, nd = 0;
	int r;

	present &= all;
	want = want_mask & all & ~present;
	if (want == 0)
		return 0;
	if ((unsigned)__builtin_popcountll(present) < k)
		return -EIO;

	/* The k lowest present indices: data fragments first. */
	for (i = 0; i < n && ns < k; i++) {
		if (present & (UINT64_C(1) << i)) {
			chosen |= UINT64_C(1) << i;
			src[ns++] = frags[i];
		}
	}
	for (i = 0; i < n; i++)
		if (want & (UINT64_C(1) << i))
			dst[nd++] = frags[i];

	r = codec_dtab_get(c, chosen, want, &t);
	if (r < 0)
		return r;
	codec_apply(k, t->rows, t->tables, src, dst, frag_len);
	codec_dtab_put(c, t);
	return 0;
}

void codec_cache_stats(struct codec *c, uint64_t *hits, uint64_t *misses)
{
	pthread_mutex_lock(&c->lock);
	*hits = c->hits;
	*misses = c->misses;
	pthread_mutex_unlock(&c->lock);
}
