/*
 * fuzz_meta: libFuzzer target for the metadata record decoders (src/meta/meta_record.c):
 * what RocksDB hands back is trusted by nobody, since a restored or damaged database can hold
 * anything. The first input byte picks the record type, the rest is the record:
 *   0  meta_inode_decode(): a record that decodes encodes back to the same 85 bytes;
 *   1  meta_stripe_decode(): a record that decodes encodes to one that decodes and encodes
 *      to itself (the encoding is canonical after one round);
 *   2  meta_superblock_decode(): the same property.
 * A violated property abort()s, which libFuzzer and the replay runner report.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/meta.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t a[META_SUPERBLOCK_ENC_MAX], b[META_SUPERBLOCK_ENC_MAX];

typedef int (*decode_fn)(const uint8_t *buf, size_t len, void *ret);
typedef size_t (*encode_fn)(const void *rec, uint8_t *out, size_t size);

static int stripe_dec(const uint8_t *buf, size_t len, void *ret)
{
	return meta_stripe_decode(buf, len, ret);
}

static size_t stripe_enc(const void *rec, uint8_t *out, size_t size)
{
	return meta_stripe_encode(rec, out, size);
}

static int sb_dec(const uint8_t *buf, size_t len, void *ret)
{
	return meta_superblock_decode(buf, len, ret);
}

static size_t sb_enc(const void *rec, uint8_t *out, size_t size)
{
	return meta_superblock_encode(rec, out, size);
}

/* A record that decodes encodes to one that decodes and encodes to itself. */
static void canonical(const uint8_t *in, size_t n, decode_fn dec, encode_fn enc, void *r1,
		      void *r2)
{
	if (dec(in, n, r1) != 0)
		return;
	size_t la = enc(r1, a, sizeof(a));
	if (la == 0 || la > sizeof(a) || dec(a, la, r2) != 0)
		abort();
	size_t lb = enc(r2, b, sizeof(b));
	if (lb != la || memcmp(a, b, la) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *in = data + 1;
	size_t n = size ? size - 1 : 0;
	static struct meta_stripe st1, st2;
	static struct meta_superblock sb1, sb2;

	if (size == 0 || size > (1u << 16))
		return 0;
	switch (data[0] % 3) {
	case 0: {
		struct meta_inode ino;
		if (meta_inode_decode(in, n, &ino) != 0)
			break;
		if (meta_inode_encode(&ino, a, sizeof(a)) != n || memcmp(a, in, n) != 0)
			abort();
		break;
	}
	case 1:
		canonical(in, n, stripe_dec, stripe_enc, &st1, &st2);
		break;
	case 2:
		canonical(in, n, sb_dec, sb_enc, &sb1, &sb2);
		break;
	}
	return 0;
}
