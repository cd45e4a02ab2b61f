/*
 * proto/fragkey: the object key that names one fragment on a block server.
 *
 *   <uuid 36>/<ino 16 hex>/<stripe 16 hex>.<version 16 hex>.<index decimal>
 *
 * The uuid is the filesystem's, in its 36-character lowercase form; the integers are
 * fixed-width lowercase hex, so that a listing by prefix comes out in (inode, stripe,
 * version) order; the fragment index is decimal without leading zeros, 0..254.
 *
 * Keys come back from the network (ListObjectsV2 results scanned by the scrubber), so the
 * parser is strict: exact lengths, lowercase hex only, no signs or spaces, and every key it
 * accepts is exactly the one proto_frag_key() writes for the parsed values (round trip).
 * No state, no I/O: safe from any thread.
 */
#include "tessera/proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tessera/common.h"

#define FRAGKEY_UUID_LEN 36
#define FRAGKEY_HEX_LEN 16
#define FRAGKEY_MAX_INDEX 254
/* uuid '/' ino '/' stripe '.' version '.' index (1..3 digits) */
#define FRAGKEY_FIXED_LEN (FRAGKEY_UUID_LEN + 1 + FRAGKEY_HEX_LEN + 1 + FRAGKEY_HEX_LEN + 1 + \
			   FRAGKEY_HEX_LEN + 1)

int proto_frag_key(char *out, size_t size, const uint8_t fs_uuid[16], uint64_t ino,
		   uint64_t stripe, uint64_t version, unsigned index)
{
	char uuid[37];
	int n;

	if (index > FRAGKEY_MAX_INDEX)
		return -EINVAL;
	tuuid_format(fs_uuid, uuid);
	n = snprintf(out, size, "%s/%016llx/%016llx.%016llx.%u", uuid, (unsigned long long)ino,
		     (unsigned long long)stripe, (unsigned long long)version, index);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return n;
}

static int fragkey_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Parses exactly FRAGKEY_HEX_LEN lowercase hex digits. */
static int fragkey_hex64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	for (size_t i = 0; i < FRAGKEY_HEX_LEN; i++) {
		int d = fragkey_hexval(s[i]);
		if (d < 0)
			return -EINVAL;
		v = v << 4 | (uint64_t)d;
	}
	*ret = v;
	return 0;
}

static int fragkey_uuid(const char *s, uint8_t uuid[16])
{
	uint8_t u[16];
	size_t n = 0;

	for (size_t i = 0; i < FRAGKEY_UUID_LEN;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			i++;
			continue;
		}
		int hi = fragkey_hexval(s[i]), lo = fragkey_hexval(s[i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		u[n++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	memcpy(uuid, u, 16);
	return 0;
}

int proto_frag_key_parse(const char *key, uint8_t fs_uuid[16], uint64_t *ino, uint64_t *stripe,
			 uint64_t *version, unsigned *index)
{
	uint8_t u[16];
	uint64_t i_ino, i_stripe, i_version;
	unsigned idx = 0;
	size_t len = strnlen(key, FRAGKEY_FIXED_LEN + 4);
	const char *p = key;

	if (len < FRAGKEY_FIXED_LEN + 1 || len > FRAGKEY_FIXED_LEN + 3)
		return -EINVAL;
	if (fragkey_uuid(p, u) < 0)
		return -EINVAL;
	p += FRAGKEY_UUID_LEN;
	if (*p++ != '/' || fragkey_hex64(p, &i_ino) < 0)
		return -EINVAL;
	p += FRAGKEY_HEX_LEN;
	if (*p++ != '/' || fragkey_hex64(p, &i_stripe) < 0)
		return -EINVAL;
	p += FRAGKEY_HEX_LEN;
	if (*p++ != '.' || fragkey_hex64(p, &i_version) < 0)
		return -EINVAL;
	p += FRAGKEY_HEX_LEN;
	if (*p++ != '.')
		return -EINVAL;
	/* Index: 1..3 decimal digits, no leading zero unless it is "0", at most 254. */
	if (p[0] == '0' && p[1] != '\0')
		return -EINVAL;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		idx = idx * 10 + (unsigned)(*p - '0');
	}
	if (idx > FRAGKEY_MAX_INDEX)
		return -EINVAL;

	memcpy(fs_uuid, u, 16);
	*ino = i_ino;
	*stripe = i_stripe;
	*version = i_version;
	*index = idx;
	return 0;
}

int proto_access_key(char *out, size_t size, const uint8_t fs_uuid[16])
{
	char uuid[37];
	int n;

	tuuid_format(fs_uuid, uuid);
	n = snprintf(out, size, "%s/access-check", uuid);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return n;
}
