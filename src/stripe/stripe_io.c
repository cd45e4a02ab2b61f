/*
 * stripe_io: fetch, check, decode and seal the fragments of one stripe.
 *
 * The read half of the data path's stripe life: data_store.c reads stripes with it (fragments
 * straight into the file's stripe buffer) and the scrubber rebuilds fragments with it (into a
 * buffer of whole objects). It holds no state: every call works on the caller's buffers. Threads: none of its own; any thread may
 * call it. Invariant (data.c D4): a fragment counts as good only after stripe_frag_check()
 * accepted it (header, identity, geometry, payload crc32c against the stripe map); everything
 * else is treated as missing and rebuilt from good ones, never used.
 */
#include "tessera/stripe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockstore.h"
#include "tessera/codec.h"
#include "tessera/common.h"
#include "tessera/meta.h"

size_t stripe_buf_size(const struct meta_stripe *rec)
{
	return ((size_t)rec->k + rec->m) * (PROTO_FRAG_HDR_SIZE + (size_t)rec->frag_len);
}

uint8_t *stripe_slot(uint8_t *buf, const struct meta_stripe *rec, unsigned i)
{
	return buf + (size_t)i * (PROTO_FRAG_HDR_SIZE + (size_t)rec->frag_len);
}

uint8_t *stripe_payload(uint8_t *buf, const struct meta_stripe *rec, unsigned i)
{
	return stripe_slot(buf, rec, i) + PROTO_FRAG_HDR_SIZE;
}

int stripe_rec_check(const struct meta_stripe *rec, const struct codec *codec)
{
	if (rec->k != codec_k(codec) || rec->m != codec_m(codec) || rec->k + rec->m > 64 ||
	    rec->frag_len == 0 || rec->frag_len > PROTO_MAX_PAYLOAD ||
	    rec->data_len > (uint64_t)rec->frag_len * rec->k)
		return -EINVAL;
	return 0;
}

bool stripe_frag_check_parts(const uint8_t fs_uuid[16], const uint8_t *hdr, const uint8_t *payload,
			     size_t len, uint64_t ino, uint64_t stripe, const struct meta_stripe *rec,
			     unsigned index, struct proto_frag_hdr *ret_hdr)
{
	struct proto_frag_hdr h;

	if (len < PROTO_FRAG_HDR_SIZE || proto_frag_hdr_decode(hdr, PROTO_FRAG_HDR_SIZE, &h) < 0 ||
	    memcmp(h.fs_uuid, fs_uuid, 16) != 0)
		return false;
	if (h.ino != ino || h.stripe != stripe || h.version != rec->version || h.index != index ||
	    h.k != rec->k || h.m != rec->m || h.payload_len != rec->frag_len ||
	    h.payload_crc != rec->crcs[index])
		return false;
	if (payload && (len != PROTO_FRAG_HDR_SIZE + (size_t)rec->frag_len ||
			tcrc32c(0, payload, rec->frag_len) != h.payload_crc))
		return false;
	if (ret_hdr)
		*ret_hdr = h;
	return true;
}

bool stripe_frag_check(const uint8_t fs_uuid[16], const uint8_t *obj, size_t len, bool payload,
		       uint64_t ino, uint64_t stripe, const struct meta_stripe *rec, unsigned index,
		       struct proto_frag_hdr *ret_hdr)
{
	return stripe_frag_check_parts(fs_uuid, obj, payload ? obj + PROTO_FRAG_HDR_SIZE : NULL,
				       len, ino, stripe, rec, index, ret_hdr);
}

uint32_t stripe_frag_seal_parts(uint8_t *hdr, const uint8_t *payload, const uint8_t fs_uuid[16],
				uint64_t ino, uint64_t stripe, uint64_t version, unsigned index,
				unsigned k, unsigned m, uint32_t frag_len, uint64_t stripe_len)
{
	struct proto_frag_hdr h = {
		.ino = ino, .stripe = stripe, .version = version, .index = (uint8_t)index,
		.k = (uint8_t)k, .m = (uint8_t)m, .matrix = PROTO_MATRIX_CAUCHY,
		.payload_len = frag_len,
		.payload_crc = tcrc32c(0, payload, frag_len),
		.stripe_len = stripe_len,
	};

	memcpy(h.fs_uuid, fs_uuid, 16);
	proto_frag_hdr_encode(&h, hdr);
	return h.payload_crc;
}

uint32_t stripe_frag_seal(uint8_t *obj, const uint8_t fs_uuid[16], uint64_t ino, uint64_t stripe,
			  uint64_t version, unsigned index, unsigned k, unsigned m,
			  uint32_t frag_len, uint64_t stripe_len)
{
	return stripe_frag_seal_parts(obj, obj + PROTO_FRAG_HDR_SIZE, fs_uuid, ino, stripe, version,
				      index, k, m, frag_len, stripe_len);
}

int stripe_fetch_into(struct blockstore *bs, struct codec *codec, const uint8_t fs_uuid[16],
		      uint64_t ino, uint64_t stripe, const struct meta_stripe *rec,
		      const struct stripe_fetch_opts *o, uint8_t *const *hdrs, uint8_t *const *dest,
		      uint64_t *ret_good, uint64_t *ret_bad, uint64_t *ret_damaged)
{
	const unsigned k = rec->k, n = (unsigned)rec->k + rec->m;
	const size_t fl = rec->frag_len;
	struct blockclient_op ops[64];
	char keys[64][PROTO_KEY_MAX];
	uint8_t *frags[64], *scratch = NULL;
	unsigned idx_of_op[64];
	uint64_t good = 0, bad = 0, damaged = 0, tried = o->avoid_mask;
	uint64_t want = o->want_mask & (n == 64 ? ~0ull : (1ull << n) - 1);
	int r;

	r = stripe_rec_check(rec, codec);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < n; i++) {
		frags[i] = dest[i];
		if (!frags[i] && (want & (1ull << i)))
			return -EINVAL; /* a fragment to rebuild needs a place */
	}

	/* Round 0: the data fragments on servers that are up, within the hedge timeout (a slow
	 * one is read around). Round 1: as many other fragments on servers that are up as are
	 * missing. Round 2: everything not tried yet, servers in back-off too. */
	for (int round = 0; round < 3 && __builtin_popcountll(good) < (int)k; round++) {
		unsigned nops = 0;
		int need = (int)k - __builtin_popcountll(good);

		for (unsigned i = 0; i < n && (round == 2 || need > 0); i++) {
			if (!(rec->present & (1ull << i)) || (tried & (1ull << i)))
				continue;
			if (round == 0 && i >= k)
				break;
			if (round < 2 && !blockstore_server_up(bs, rec->servers[i]))
				continue;
			if (!frags[i]) {
				/* A fragment the caller gave no place: scratch, on first need. */
				if (!scratch && !(scratch = malloc((size_t)n * fl))) {
					r = -ENOMEM;
					goto out;
				}
				frags[i] = scratch + (size_t)i * fl;
			}
			r = proto_frag_key(keys[nops], sizeof(keys[nops]), fs_uuid, ino, stripe,
					   rec->version, i);
			if (r < 0)
				goto out;
			ops[nops] = (struct blockclient_op){
				.method = BC_GET, .server = rec->servers[i], .key = keys[nops],
				.head = hdrs[i], .head_len = PROTO_FRAG_HDR_SIZE,
				.buf = frags[i], .buf_size = fl,
				.timeout_ms = round == 0 ? o->hedge_ms : 0,
			};
			idx_of_op[nops++] = i;
			tried |= 1ull << i;
			if (round == 1)
				need--;
		}
		if (nops == 0)
			continue;
		blockstore_run(bs, ops, nops, round == 2);
		for (unsigned j = 0; j < nops; j++) {
			unsigned i = idx_of_op[j];
			if (ops[j].result == 0 &&
			    stripe_frag_check_parts(fs_uuid, hdrs[i], frags[i], ops[j].result_len, ino,
						    stripe, rec, i, NULL)) {
				good |= 1ull << i;
				continue;
			}
			bad |= 1ull << i;
			/* A server that answered with a missing or bad fragment: damage. One that
			 * did not answer may come back: not (yet) damage. */
			if (ops[j].result == 0 || ops[j].result == -ENOENT ||
			    ops[j].result == -EMSGSIZE)
				damaged |= 1ull << i;
			tlog_debug("fragment %u of inode %llu stripe %llu unusable: %d", i,
				   (unsigned long long)ino, (unsigned long long)stripe,
				   ops[j].result);
		}
	}
	if (ret_bad)
		*ret_bad = bad;
	if (ret_damaged)
		*ret_damaged = damaged;
	if (__builtin_popcountll(good) < (int)k) {
		r = -EIO;
		goto out;
	}
	if (want & ~good) {
		/* The decode reads k good fragments and writes the wanted ones; the others need no
		 * place, but every pointer must be valid. */
		for (unsigned i = 0; i < n; i++) {
			if (frags[i])
				continue;
			if (!scratch && !(scratch = malloc((size_t)n * fl))) {
				r = -ENOMEM;
				goto out;
			}
			frags[i] = scratch + (size_t)i * fl;
		}
		r = codec_decode(codec, frags, good, want & ~good, fl);
		if (r < 0)
			goto out;
	}
	*ret_good = good;
	r = 0;
out:
	free(scratch);
	return r;
}

int stripe_fetch(struct blockstore *bs, struct codec *codec, const uint8_t fs_uuid[16],
		 uint64_t ino, uint64_t stripe, const struct meta_stripe *rec, uint64_t avoid_mask,
		 uint64_t want_mask, uint8_t *buf, uint64_t *ret_good, uint64_t *ret_bad)
{
	const struct stripe_fetch_opts o = { .avoid_mask = avoid_mask, .want_mask = want_mask };
	uint8_t *hdrs[64], *dest[64];
	int r = stripe_rec_check(rec, codec);

	if (r < 0)
		return r;
	for (unsigned i = 0; i < (unsigned)rec->k + rec->m; i++) {
		hdrs[i] = stripe_slot(buf, rec, i);
		dest[i] = stripe_payload(buf, rec, i);
	}
	return stripe_fetch_into(bs, codec, fs_uuid, ino, stripe, rec, &o, hdrs, dest, ret_good,
				 ret_bad, NULL);
}

void stripe_gather(uint8_t *buf, const struct meta_stripe *rec, uint8_t *out, size_t out_size)
{
	size_t len = TESSERA_MIN((size_t)rec->data_len, out_size);

	for (unsigned i = 0; i < rec->k; i++) {
		size_t off = (size_t)i * rec->frag_len;
		if (off >= len)
			break;
		memcpy(out + off, stripe_payload(buf, rec, i), TESSERA_MIN(rec->frag_len, len - off));
	}
	memset(out + len, 0, out_size - len);
}
