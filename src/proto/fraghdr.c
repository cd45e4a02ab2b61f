/*
 * proto/fraghdr: the self-describing header in front of every stored fragment.
 *
 * Encodes and validates the 80-byte version-1 header whose layout is fixed in
 * include/tessera/proto.h, and verifies whole objects (header + payload). It does no I/O and
 * keeps no state: safe from any thread. Input comes from disk and network, so every field is
 * range-checked; nothing here asserts on input.
 *
 * Forward compatibility: every format version keeps magic (0..3), version (4..5) and header
 * size (6..7) where version 1 has them, and ends its header with a crc32c of all the bytes
 * before it. That lets a version-1 reader tell a header of a newer version (its own crc
 * matches: -EPROTONOSUPPORT, leave the object alone) from a damaged version-1 header whose
 * version field was hit (crc mismatch: -EBADMSG, repair it). When the buffer is too short to
 * hold the newer, larger header, the crc cannot be checked and -EPROTONOSUPPORT is returned.
 *
 * Check order in proto_frag_hdr_decode(): length, magic, version, header size, header crc,
 * then the fields. Every byte of a header is covered by the crc, so any corruption that the
 * field checks let through is still rejected.
 */
#include "tessera/proto.h"

#include <errno.h>
#include <string.h>

#include "tessera/common.h"

#define OFF_MAGIC 0
#define OFF_VERSION 4
#define OFF_HDR_SIZE 6
#define OFF_UUID 8
#define OFF_INO 24
#define OFF_STRIPE 32
#define OFF_SVERSION 40
#define OFF_INDEX 48
#define OFF_K 49
#define OFF_M 50
#define OFF_MATRIX 51
#define OFF_FLAGS 52
#define OFF_PAYLOAD_LEN 56
#define OFF_PAYLOAD_CRC 60
#define OFF_STRIPE_LEN 64
#define OFF_RESERVED 72
#define OFF_HDR_CRC 76

/* The largest header a future version may declare; bounds the crc check below. */
#define FRAGHDR_MAX_SIZE 4096

_Static_assert(OFF_HDR_CRC + 4 == PROTO_FRAG_HDR_SIZE, "header layout");

void proto_frag_hdr_encode(const struct proto_frag_hdr *h, uint8_t out[PROTO_FRAG_HDR_SIZE])
{
	memcpy(out + OFF_MAGIC, PROTO_FRAG_MAGIC, 4);
	be_put16(out + OFF_VERSION, PROTO_FRAG_VERSION);
	be_put16(out + OFF_HDR_SIZE, PROTO_FRAG_HDR_SIZE);
	memcpy(out + OFF_UUID, h->fs_uuid, 16);
	be_put64(out + OFF_INO, h->ino);
	be_put64(out + OFF_STRIPE, h->stripe);
	be_put64(out + OFF_SVERSION, h->version);
	out[OFF_INDEX] = h->index;
	out[OFF_K] = h->k;
	out[OFF_M] = h->m;
	out[OFF_MATRIX] = h->matrix;
	be_put32(out + OFF_FLAGS, h->flags);
	be_put32(out + OFF_PAYLOAD_LEN, h->payload_len);
	be_put32(out + OFF_PAYLOAD_CRC, h->payload_crc);
	be_put64(out + OFF_STRIPE_LEN, h->stripe_len);
	memset(out + OFF_RESERVED, 0, 4);
	be_put32(out + OFF_HDR_CRC, tcrc32c(0, out, OFF_HDR_CRC));
}

/* A header that claims a version newer than ours: -EPROTONOSUPPORT when it is intact as far
 * as we can tell, -EBADMSG when its own crc shows damage. */
static int fraghdr_newer(const uint8_t *buf, size_t len)
{
	size_t hsize = be_get16(buf + OFF_HDR_SIZE);

	if (hsize < OFF_HDR_SIZE + 2 + 4 || hsize > FRAGHDR_MAX_SIZE)
		return -EBADMSG;
	if (len < hsize)
		return -EPROTONOSUPPORT;
	if (tcrc32c(0, buf, hsize - 4) != be_get32(buf + hsize - 4))
		return -EBADMSG;
	return -EPROTONOSUPPORT;
}

int proto_frag_hdr_decode(const uint8_t *buf, size_t len, struct proto_frag_hdr *ret)
{
	struct proto_frag_hdr h;
	unsigned version;

	if (len < OFF_HDR_SIZE + 2)
		return -EBADMSG;
	if (memcmp(buf + OFF_MAGIC, PROTO_FRAG_MAGIC, 4) != 0)
		return -EBADMSG;
	version = be_get16(buf + OFF_VERSION);
	if (version == 0)
		return -EBADMSG;
	if (version > PROTO_FRAG_VERSION)
		return fraghdr_newer(buf, len);
	if (len < PROTO_FRAG_HDR_SIZE || be_get16(buf + OFF_HDR_SIZE) != PROTO_FRAG_HDR_SIZE)
		return -EBADMSG;
	if (tcrc32c(0, buf, OFF_HDR_CRC) != be_get32(buf + OFF_HDR_CRC))
		return -EBADMSG;

	memcpy(h.fs_uuid, buf + OFF_UUID, 16);
	h.ino = be_get64(buf + OFF_INO);
	h.stripe = be_get64(buf + OFF_STRIPE);
	h.version = be_get64(buf + OFF_SVERSION);
	h.index = buf[OFF_INDEX];
	h.k = buf[OFF_K];
	h.m = buf[OFF_M];
	h.matrix = buf[OFF_MATRIX];
	h.flags = be_get32(buf + OFF_FLAGS);
	h.payload_len = be_get32(buf + OFF_PAYLOAD_LEN);
	h.payload_crc = be_get32(buf + OFF_PAYLOAD_CRC);
	h.stripe_len = be_get64(buf + OFF_STRIPE_LEN);

	if (h.k < 1 || h.k > PROTO_MAX_K || h.m < 1 || h.m > PROTO_MAX_M)
		return -EBADMSG;
	if ((unsigned)h.index >= (unsigned)h.k + h.m)
		return -EBADMSG;
	if (h.matrix != PROTO_MATRIX_CAUCHY)
		return -EBADMSG;
	if (h.flags & ~PROTO_FRAG_F_KNOWN)
		return -EBADMSG;
	if (h.payload_len > PROTO_MAX_PAYLOAD)
		return -EBADMSG;
	if (be_get32(buf + OFF_RESERVED) != 0)
		return -EBADMSG;

	*ret = h;
	return 0;
}

int proto_frag_verify(const uint8_t *obj, size_t len, const uint8_t *expect_uuid,
		      struct proto_frag_hdr *ret)
{
	struct proto_frag_hdr h;
	int r;

	r = proto_frag_hdr_decode(obj, len, &h);
	if (r < 0)
		return r;
	if (expect_uuid && memcmp(h.fs_uuid, expect_uuid, 16) != 0)
		return -EXDEV;
	if (len != (size_t)PROTO_FRAG_HDR_SIZE + h.payload_len)
		return -EBADMSG;
	if (tcrc32c(0, obj + PROTO_FRAG_HDR_SIZE, h.payload_len) != h.payload_crc)
		return -EBADMSG;
	if (ret)
		*ret = h;
	return 0;
}
