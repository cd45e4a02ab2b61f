/*
 * Unit tests for the fragment header (proto_frag_hdr_*, proto_frag_verify) and fragment
 * keys (proto_frag_key, proto_frag_key_parse).
 *
 * The header must never be mistaken: every single-byte and single-bit corruption of the 80
 * header bytes is rejected (by a field check or by the header crc), payload damage is caught
 * by the payload crc, and an object of another filesystem is reported as -EXDEV.
 *
 * Randomised: the seed is printed and TESSERA_TEST_SEED replays it (unit.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"
#include "tessera/proto.h"

#include "unit.h"

static const uint8_t uuid_a[16] = { 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78,
				    0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0xf0 };

static struct proto_frag_hdr sample_hdr(uint32_t payload_len, const uint8_t *payload)
{
	struct proto_frag_hdr h = {
		.ino = 0x0102030405060708ull,
		.stripe = 42,
		.version = 0xfedcba9876543210ull,
		.index = 5,
		.k = 4,
		.m = 2,
		.matrix = PROTO_MATRIX_CAUCHY,
		.flags = PROTO_FRAG_F_COMPRESSED,
		.payload_len = payload_len,
		.payload_crc = tcrc32c(0, payload, payload_len),
		.stripe_len = 4u << 20,
	};
	memcpy(h.fs_uuid, uuid_a, 16);
	return h;
}

/* An object: header followed by payload_len random bytes. Free with free(). */
static uint8_t *make_object(uint32_t payload_len, uint64_t *rng, struct proto_frag_hdr *ret)
{
	uint8_t *obj = malloc(PROTO_FRAG_HDR_SIZE + payload_len + 1);

	ck_assert_ptr_nonnull(obj);
	for (uint32_t i = 0; i < payload_len; i++)
		obj[PROTO_FRAG_HDR_SIZE + i] = (uint8_t)unit_rng_next(rng);
	*ret = sample_hdr(payload_len, obj + PROTO_FRAG_HDR_SIZE);
	proto_frag_hdr_encode(ret, obj);
	return obj;
}

static void assert_hdr_eq(const struct proto_frag_hdr *a, const struct proto_frag_hdr *b)
{
	ck_assert_mem_eq(a->fs_uuid, b->fs_uuid, 16);
	ck_assert_uint_eq(a->ino, b->ino);
	ck_assert_uint_eq(a->stripe, b->stripe);
	ck_assert_uint_eq(a->version, b->version);
	ck_assert_uint_eq(a->index, b->index);
	ck_assert_uint_eq(a->k, b->k);
	ck_assert_uint_eq(a->m, b->m);
	ck_assert_uint_eq(a->matrix, b->matrix);
	ck_assert_uint_eq(a->flags, b->flags);
	ck_assert_uint_eq(a->payload_len, b->payload_len);
	ck_assert_uint_eq(a->payload_crc, b->payload_crc);
	ck_assert_uint_eq(a->stripe_len, b->stripe_len);
}

START_TEST(test_roundtrip)
{
	uint64_t rng = unit_seed;
	struct proto_frag_hdr h, got;
	uint8_t *obj = make_object(1000, &rng, &h);

	ck_assert_int_eq(proto_frag_hdr_decode(obj, PROTO_FRAG_HDR_SIZE, &got), 0);
	assert_hdr_eq(&h, &got);
	memset(&got, 0, sizeof(got));
	ck_assert_int_eq(proto_frag_verify(obj, PROTO_FRAG_HDR_SIZE + 1000, uuid_a, &got), 0);
	assert_hdr_eq(&h, &got);
	ck_assert_int_eq(proto_frag_verify(obj, PROTO_FRAG_HDR_SIZE + 1000, NULL, NULL), 0);
	free(obj);

	/* random headers with valid fields */
	for (int i = 0; i < 1000; i++) {
		uint8_t buf[PROTO_FRAG_HDR_SIZE];
		struct proto_frag_hdr r = { .matrix = PROTO_MATRIX_CAUCHY };
		for (int j = 0; j < 16; j++)
			r.fs_uuid[j] = (uint8_t)unit_rng_next(&rng);
		r.ino = unit_rng_next(&rng);
		r.stripe = unit_rng_next(&rng);
		r.version = unit_rng_next(&rng);
		r.k = (uint8_t)(1 + unit_rng_next(&rng) % PROTO_MAX_K);
		r.m = (uint8_t)(1 + unit_rng_next(&rng) % PROTO_MAX_M);
		r.index = (uint8_t)(unit_rng_next(&rng) % (r.k + r.m));
		r.flags = (uint32_t)(unit_rng_next(&rng) & PROTO_FRAG_F_KNOWN);
		r.payload_len = (uint32_t)(unit_rng_next(&rng) % (PROTO_MAX_PAYLOAD + 1));
		r.payload_crc = (uint32_t)unit_rng_next(&rng);
		r.stripe_len = unit_rng_next(&rng);
		proto_frag_hdr_encode(&r, buf);
		ck_assert_int_eq(proto_frag_hdr_decode(buf, sizeof(buf), &got), 0);
		assert_hdr_eq(&r, &got);
	}
}
END_TEST

/* The layout is the one documented in proto.h, byte for byte. */
START_TEST(test_layout)
{
	struct proto_frag_hdr h = sample_hdr(0, NULL);
	uint8_t b[PROTO_FRAG_HDR_SIZE];

	proto_frag_hdr_encode(&h, b);
	ck_assert_mem_eq(b, "TSRF", 4);
	ck_assert_uint_eq(be_get16(b + 4), 1);
	ck_assert_uint_eq(be_get16(b + 6), 80);
	ck_assert_mem_eq(b + 8, uuid_a, 16);
	ck_assert_uint_eq(be_get64(b + 24), h.ino);
	ck_assert_uint_eq(be_get64(b + 32), 42);
	ck_assert_uint_eq(be_get64(b + 40), h.version);
	ck_assert_uint_eq(b[48], 5);
	ck_assert_uint_eq(b[49], 4);
	ck_assert_uint_eq(b[50], 2);
	ck_assert_uint_eq(b[51], PROTO_MATRIX_CAUCHY);
	ck_assert_uint_eq(be_get32(b + 52), PROTO_FRAG_F_COMPRESSED);
	ck_assert_uint_eq(be_get32(b + 56), 0);
	ck_assert_uint_eq(be_get32(b + 60), 0); /* crc32c of nothing */
	ck_assert_uint_eq(be_get64(b + 64), 4u << 20);
	ck_assert_uint_eq(be_get32(b + 72), 0);
	ck_assert_uint_eq(be_get32(b + 76), tcrc32c(0, b, 76));
}
END_TEST

/* Every corrupted byte or bit of the header is rejected. */
START_TEST(test_every_flip_rejected)
{
	uint64_t rng = unit_seed + 1;
	struct proto_frag_hdr h, got;
	uint8_t *obj = make_object(64, &rng, &h);
	size_t len = PROTO_FRAG_HDR_SIZE + 64;
	static const uint8_t masks[] = { 0xff, 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80 };

	for (size_t i = 0; i < PROTO_FRAG_HDR_SIZE; i++) {
		for (size_t j = 0; j < sizeof(masks); j++) {
			obj[i] ^= masks[j];
			int r = proto_frag_hdr_decode(obj, len, &got);
			ck_assert_msg(r == -EBADMSG, "byte %zu ^ %#x: decode returned %d", i,
				      masks[j], r);
			r = proto_frag_verify(obj, len, uuid_a, &got);
			ck_assert_msg(r == -EBADMSG, "byte %zu ^ %#x: verify returned %d", i,
				      masks[j], r);
			obj[i] ^= masks[j];
		}
	}
	ck_assert_int_eq(proto_frag_verify(obj, len, uuid_a, NULL), 0);
	free(obj);
}
END_TEST

/* Re-encodes a header with one field changed but a correct crc: the field checks alone must
 * reject it. */
static int decode_with(void (*mutate)(uint8_t *b))
{
	struct proto_frag_hdr h = sample_hdr(0, NULL), got;
	uint8_t b[PROTO_FRAG_HDR_SIZE];

	proto_frag_hdr_encode(&h, b);
	mutate(b);
	be_put32(b + 76, tcrc32c(0, b, 76));
	memset(&got, 0x77, sizeof(got));
	int r = proto_frag_hdr_decode(b, sizeof(b), &got);
	if (r < 0)
		ck_assert_uint_eq(got.k, 0x77); /* output untouched on failure */
	return r;
}

static void m_magic(uint8_t *b) { b[0] = 'X'; }
static void m_version0(uint8_t *b) { be_put16(b + 4, 0); }
static void m_version2(uint8_t *b) { be_put16(b + 4, 2); }
static void m_hsize(uint8_t *b) { be_put16(b + 6, 96); }
static void m_hsize_small(uint8_t *b) { be_put16(b + 6, 76); }
static void m_k0(uint8_t *b) { b[49] = 0; }
static void m_kbig(uint8_t *b) { b[49] = PROTO_MAX_K + 1; }
static void m_m0(uint8_t *b) { b[50] = 0; }
static void m_mbig(uint8_t *b) { b[50] = PROTO_MAX_M + 1; }
static void m_index(uint8_t *b) { b[48] = (uint8_t)(b[49] + b[50]); }
static void m_index_ff(uint8_t *b) { b[48] = 0xff; }
static void m_matrix0(uint8_t *b) { b[51] = 0; }
static void m_matrix2(uint8_t *b) { b[51] = 2; }
static void m_flags(uint8_t *b) { be_put32(b + 52, 0x4); }
static void m_flags_hi(uint8_t *b) { be_put32(b + 52, 0x80000001u); }
static void m_plen(uint8_t *b) { be_put32(b + 56, PROTO_MAX_PAYLOAD + 1); }
static void m_reserved(uint8_t *b) { b[75] = 1; }
static void m_reserved0(uint8_t *b) { b[72] = 0x80; }
static void m_ok_max(uint8_t *b)
{
	b[49] = PROTO_MAX_K;
	b[50] = PROTO_MAX_M;
	b[48] = PROTO_MAX_K + PROTO_MAX_M - 1;
	be_put32(b + 52, PROTO_FRAG_F_KNOWN);
	be_put32(b + 56, PROTO_MAX_PAYLOAD);
}

START_TEST(test_field_checks)
{
	ck_assert_int_eq(decode_with(m_magic), -EBADMSG);
	ck_assert_int_eq(decode_with(m_version0), -EBADMSG);
	ck_assert_int_eq(decode_with(m_hsize), -EBADMSG);
	ck_assert_int_eq(decode_with(m_hsize_small), -EBADMSG);
	ck_assert_int_eq(decode_with(m_k0), -EBADMSG);
	ck_assert_int_eq(decode_with(m_kbig), -EBADMSG);
	ck_assert_int_eq(decode_with(m_m0), -EBADMSG);
	ck_assert_int_eq(decode_with(m_mbig), -EBADMSG);
	ck_assert_int_eq(decode_with(m_index), -EBADMSG);
	ck_assert_int_eq(decode_with(m_index_ff), -EBADMSG);
	ck_assert_int_eq(decode_with(m_matrix0), -EBADMSG);
	ck_assert_int_eq(decode_with(m_matrix2), -EBADMSG);
	ck_assert_int_eq(decode_with(m_flags), -EBADMSG);
	ck_assert_int_eq(decode_with(m_flags_hi), -EBADMSG);
	ck_assert_int_eq(decode_with(m_plen), -EBADMSG);
	ck_assert_int_eq(decode_with(m_reserved), -EBADMSG);
	ck_assert_int_eq(decode_with(m_reserved0), -EBADMSG);
	/* an intact header of a newer version (its own crc valid) is not ours to judge */
	ck_assert_int_eq(decode_with(m_version2), -EPROTONOSUPPORT);
	ck_assert_int_eq(decode_with(m_ok_max), 0);
}
END_TEST

/* A newer version with a larger header: EPROTONOSUPPORT when intact or when the buffer is
 * too short to tell, EBADMSG when its crc is wrong or its size absurd. */
START_TEST(test_newer_version)
{
	uint8_t b[128] = { 0 };
	struct proto_frag_hdr got;

	memcpy(b, "TSRF", 4);
	be_put16(b + 4, 7);
	be_put16(b + 6, 128);
	be_put32(b + 124, tcrc32c(0, b, 124));
	ck_assert_int_eq(proto_frag_hdr_decode(b, 128, &got), -EPROTONOSUPPORT);
	ck_assert_int_eq(proto_frag_hdr_decode(b, 80, &got), -EPROTONOSUPPORT);
	ck_assert_int_eq(proto_frag_verify(b, 128, uuid_a, &got), -EPROTONOSUPPORT);
	b[100] ^= 1;
	ck_assert_int_eq(proto_frag_hdr_decode(b, 128, &got), -EBADMSG);
	b[100] ^= 1;
	be_put16(b + 6, 5);
	ck_assert_int_eq(proto_frag_hdr_decode(b, 128, &got), -EBADMSG);
	be_put16(b + 6, 0xffff);
	ck_assert_int_eq(proto_frag_hdr_decode(b, 128, &got), -EBADMSG);
}
END_TEST

START_TEST(test_short_buffers)
{
	uint64_t rng = unit_seed + 2;
	struct proto_frag_hdr h, got;
	uint8_t *obj = make_object(100, &rng, &h);

	for (size_t len = 0; len < PROTO_FRAG_HDR_SIZE; len++) {
		ck_assert_int_eq(proto_frag_hdr_decode(obj, len, &got), -EBADMSG);
		ck_assert_int_eq(proto_frag_verify(obj, len, NULL, &got), -EBADMSG);
	}
	/* truncated or overlong objects */
	for (size_t len = PROTO_FRAG_HDR_SIZE; len < PROTO_FRAG_HDR_SIZE + 100; len++)
		ck_assert_int_eq(proto_frag_verify(obj, len, uuid_a, &got), -EBADMSG);
	obj[PROTO_FRAG_HDR_SIZE + 100] = 0;
	ck_assert_int_eq(proto_frag_verify(obj, PROTO_FRAG_HDR_SIZE + 101, uuid_a, &got),
			 -EBADMSG);
	ck_assert_int_eq(proto_frag_verify(obj, PROTO_FRAG_HDR_SIZE + 100, uuid_a, &got), 0);
	free(obj);
}
END_TEST

START_TEST(test_payload_corruption)
{
	uint64_t rng = unit_seed + 3;
	struct proto_frag_hdr h, got;
	uint32_t plen = 4096;
	uint8_t *obj = make_object(plen, &rng, &h);
	size_t len = PROTO_FRAG_HDR_SIZE + plen;

	for (int i = 0; i < 500; i++) {
		size_t pos = PROTO_FRAG_HDR_SIZE + unit_rng_next(&rng) % plen;
		uint8_t mask = (uint8_t)(1u << (unit_rng_next(&rng) % 8));
		obj[pos] ^= mask;
		ck_assert_int_eq(proto_frag_hdr_decode(obj, len, &got), 0);
		ck_assert_msg(proto_frag_verify(obj, len, uuid_a, &got) == -EBADMSG,
			      "flip at %zu not detected", pos);
		obj[pos] ^= mask;
	}
	ck_assert_int_eq(proto_frag_verify(obj, len, uuid_a, &got), 0);
	free(obj);
}
END_TEST

START_TEST(test_other_fs)
{
	uint64_t rng = unit_seed + 4;
	struct proto_frag_hdr h, got;
	uint8_t *obj = make_object(10, &rng, &h);
	uint8_t other[16];

	memcpy(other, uuid_a, 16);
	other[15] ^= 1;
	memset(&got, 0x33, sizeof(got));
	ck_assert_int_eq(proto_frag_verify(obj, PROTO_FRAG_HDR_SIZE + 10, other, &got), -EXDEV);
	ck_assert_uint_eq(got.k, 0x33);
	ck_assert_int_eq(proto_frag_verify(obj, PROTO_FRAG_HDR_SIZE + 10, uuid_a, &got), 0);
	free(obj);
}
END_TEST

/* ---------------------------------------------------------------- keys */

START_TEST(test_key_roundtrip)
{
	uint64_t rng = unit_seed + 5;
	char key[PROTO_KEY_MAX];
	uint8_t u[16];
	uint64_t ino, stripe, version;
	unsigned index;
	int n;

	n = proto_frag_key(key, sizeof(key), uuid_a, 2, 0, 1, 3);
	ck_assert_str_eq(key, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
			      "0000000000000000.0000000000000001.3");
	ck_assert_int_eq(n, (int)strlen(key));
	ck_assert_int_eq(proto_frag_key_parse(key, u, &ino, &stripe, &version, &index), 0);
	ck_assert_mem_eq(u, uuid_a, 16);
	ck_assert_uint_eq(ino, 2);
	ck_assert_uint_eq(stripe, 0);
	ck_assert_uint_eq(version, 1);
	ck_assert_uint_eq(index, 3);

	for (int i = 0; i < 2000; i++) {
		uint8_t uu[16];
		char again[PROTO_KEY_MAX];
		for (int j = 0; j < 16; j++)
			uu[j] = (uint8_t)unit_rng_next(&rng);
		uint64_t a = unit_rng_next(&rng), b = unit_rng_next(&rng) >> (unit_rng_next(&rng) % 64);
		uint64_t c = i == 0 ? UINT64_MAX : unit_rng_next(&rng);
		unsigned idx = i < 255 ? (unsigned)i : (unsigned)(unit_rng_next(&rng) % 255);
		n = proto_frag_key(key, sizeof(key), uu, a, b, c, idx);
		ck_assert_int_gt(n, 0);
		ck_assert_int_eq(proto_frag_key_parse(key, u, &ino, &stripe, &version, &index), 0);
		ck_assert_mem_eq(u, uu, 16);
		ck_assert_uint_eq(ino, a);
		ck_assert_uint_eq(stripe, b);
		ck_assert_uint_eq(version, c);
		ck_assert_uint_eq(index, idx);
		ck_assert_int_eq(proto_frag_key(again, sizeof(again), u, ino, stripe, version,
						index),
				 n);
		ck_assert_str_eq(again, key);
	}

	/* sizes: exact fit works, one byte less does not */
	n = proto_frag_key(key, sizeof(key), uuid_a, 1, 2, 3, 254);
	ck_assert_int_eq(n, 91);
	ck_assert_int_eq(proto_frag_key(key, 92, uuid_a, 1, 2, 3, 254), 91);
	ck_assert_int_eq(proto_frag_key(key, 91, uuid_a, 1, 2, 3, 254), -ENAMETOOLONG);
	ck_assert_int_eq(proto_frag_key(key, 0, uuid_a, 1, 2, 3, 254), -ENAMETOOLONG);
	ck_assert_int_eq(proto_frag_key(key, sizeof(key), uuid_a, 1, 2, 3, 255), -EINVAL);
}
END_TEST

START_TEST(test_key_reject)
{
	static const char *const bad[] = {
		"",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.255",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.999",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.1000",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.03",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.00",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.-1",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.+1",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.3 ",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.3/",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.1a",
		/* uppercase hex */
		"0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0/0000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/000000000000000A/"
		"0000000000000000.0000000000000001.3",
		/* wrong separators */
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0.0000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002."
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000/0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001/3",
		"0f1e2d3c_4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c4b5a-6978-8796-a5b4c3d2e1f0-/0000000000000002/"
		"0000000000000000.0000000000000001.3",
		/* wrong widths */
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f/0000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/00000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"000000000000000.0000000000000001.34",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.000000000000001.34",
		/* non-hex, spaces, signs */
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1g0/0000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/ 000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/-000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0x00000000000002/"
		"0000000000000000.0000000000000001.3",
		"/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.3",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/"
		"0000000000000000.0000000000000001.3.tmp",
	};
	uint8_t u[16] = { 0 };
	uint64_t ino = 7, stripe = 7, version = 7;
	unsigned index = 7;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_msg(proto_frag_key_parse(bad[i], u, &ino, &stripe, &version, &index) ==
				      -EINVAL,
			      "accepted \"%s\"", bad[i]);
	}
	/* outputs untouched on failure */
	ck_assert_uint_eq(ino, 7);
	ck_assert_uint_eq(stripe, 7);
	ck_assert_uint_eq(version, 7);
	ck_assert_uint_eq(index, 7);
	ck_assert_uint_eq(u[0], 0);

	/* the boundary values that must pass */
	ck_assert_int_eq(proto_frag_key_parse("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/"
					      "ffffffffffffffff/0000000000000000."
					      "0000000000000001.254",
					      u, &ino, &stripe, &version, &index),
			 0);
	ck_assert_uint_eq(ino, UINT64_MAX);
	ck_assert_uint_eq(index, 254);
	ck_assert_int_eq(proto_frag_key_parse("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/"
					      "0000000000000000/0000000000000000."
					      "0000000000000000.0",
					      u, &ino, &stripe, &version, &index),
			 0);
	ck_assert_uint_eq(index, 0);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("fraghdr");
	TCase *tc = tcase_create("header");

	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_layout);
	tcase_add_test(tc, test_every_flip_rejected);
	tcase_add_test(tc, test_field_checks);
	tcase_add_test(tc, test_newer_version);
	tcase_add_test(tc, test_short_buffers);
	tcase_add_test(tc, test_payload_corruption);
	tcase_add_test(tc, test_other_fs);
	suite_add_tcase(s, tc);

	tc = tcase_create("keys");
	tcase_add_test(tc, test_key_roundtrip);
	tcase_add_test(tc, test_key_reject);
	suite_add_tcase(s, tc);
	return s;
}
