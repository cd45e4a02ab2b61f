/*
 * fuzz_proto: libFuzzer target for the parsers of proto/ that take network bytes, other than
 * SigV4 (fuzz_sigv4.c). The first input byte picks the parser, the rest is its input:
 *   0  proto_key_validate(): an accepted key has no "", "." or ".." component, no leading or
 *      trailing '/', only [A-Za-z0-9._-/] (the store builds paths from it: no traversal);
 *   1  proto_uri_decode(): the output is never longer than the input and holds no NUL;
 *   2  proto_frag_hdr_decode() / proto_frag_verify(): a header that decodes encodes back to
 *      the same 80 bytes;
 *   3  proto_bucket_validate();
 *   4  proto_frag_key_parse(): a key that parses is rebuilt identically by proto_frag_key().
 * A violated property abort()s, which libFuzzer and the replay runner report.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void key_property(const char *k, size_t n)
{
	if (n == 0 || n > PROTO_KEY_MAX || k[0] == '/' || k[n - 1] == '/')
		abort();
	for (size_t i = 0, start = 0; i <= n; i++) {
		if (i < n) {
			char c = k[i];
			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			      c == '.' || c == '_' || c == '-' || c == '/'))
				abort();
			if (c != '/')
				continue;
		}
		size_t clen = i - start;
		if (clen == 0 || (clen == 1 && k[start] == '.') ||
		    (clen == 2 && k[start] == '.' && k[start + 1] == '.'))
			abort();
		start = i + 1;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data + 1;
	size_t n = size ? size - 1 : 0;
	char *s, out[1024];
	int r;

	if (size == 0 || size > (1u << 16))
		return 0;
	switch (data[0] % 5) {
	case 0:
		if (proto_key_validate(in, n) == 0)
			key_property(in, n);
		break;
	case 1:
		r = proto_uri_decode(out, sizeof(out), in, n);
		if (r >= 0 && ((size_t)r > n || (size_t)r >= sizeof(out) || memchr(out, 0, (size_t)r) ||
			       out[r] != '\0'))
			abort();
		break;
	case 2: {
		struct proto_frag_hdr h;
		uint8_t again[PROTO_FRAG_HDR_SIZE];
		if (proto_frag_hdr_decode((const uint8_t *)in, n, &h) == 0) {
			proto_frag_hdr_encode(&h, again);
			if (n < PROTO_FRAG_HDR_SIZE || memcmp(again, in, PROTO_FRAG_HDR_SIZE) != 0)
				abort();
		}
		r = proto_frag_verify((const uint8_t *)in, n, NULL, &h);
		if (r != 0 && r != -EBADMSG && r != -EPROTONOSUPPORT)
			abort();
		break;
	}
	case 3:
	case 4:
		s = malloc(n + 1);
		if (!s)
			return 0;
		memcpy(s, in, n);
		s[n] = '\0';
		if (data[0] % 5 == 3) {
			(void)proto_bucket_validate(s);
		} else {
			uint8_t uuid[16];
			uint64_t ino, stripe, version;
			unsigned index;
			if (proto_frag_key_parse(s, uuid, &ino, &stripe, &version, &index) == 0) {
				r = proto_frag_key(out, sizeof(out), uuid, ino, stripe, version, index);
				if (r < 0 || strcmp(out, s) != 0)
					abort();
			}
		}
		free(s);
		break;
	}
	return 0;
}
