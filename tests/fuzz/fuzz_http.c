/*
 * fuzz_http: libFuzzer target for the parsers of proto/ that read HTTP requests and S3
 * answers. The first input byte picks the parser, the rest is its input:
 *   0  proto_http_range(): 8 bytes of object size (big-endian), then the header; a slice it
 *      returns lies inside the object and is not empty;
 *   1  proto_query_get(): the value found for "prefix" fits the buffer and holds no NUL
 *      before its end;
 *   2  proto_chunked_feed(): the body fed in pieces of (second byte) bytes; the payload never
 *      exceeds the input, a decoder that reached the end refuses any further byte, and the
 *      same body fed whole decodes to the same result;
 *   3  proto_s3_list_parse(): every key handed out is NUL-terminated and at most
 *      PROTO_LIST_KEY_MAX bytes; the token fits its buffer;
 *   4  proto_s3_error_code(): a code it returns is letters and digits only.
 * A violated property abort()s, which libFuzzer and the replay runner report.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"
#include "tessera/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct feed {
	uint64_t payload;
	unsigned trailers;
};

static int on_payload(void *ctx, const char *d, size_t n)
{
	struct feed *f = ctx;

	(void)d;
	f->payload += n;
	return 0;
}

static int on_trailer(void *ctx, const char *name, const char *value)
{
	struct feed *f = ctx;

	if (strlen(name) >= PROTO_CHUNK_LINE_MAX || strlen(value) >= PROTO_CHUNK_LINE_MAX)
		abort();
	f->trailers++;
	return 0;
}

static int feed_all(const char *in, size_t n, size_t piece, struct proto_chunked *k,
		    struct feed *f)
{
	memset(k, 0, sizeof(*k));
	memset(f, 0, sizeof(*f));
	for (size_t at = 0; at < n;) {
		size_t take = TESSERA_MIN(piece, n - at);
		int r = proto_chunked_feed(k, in + at, take, on_payload, on_trailer, f);
		if (r < 0)
			return r;
		if (k->line_len >= PROTO_CHUNK_LINE_MAX)
			abort();
		at += take;
	}
	return 0;
}

static int on_entry(void *ctx, const char *key, uint64_t size, int64_t mtime_s)
{
	(void)ctx;
	(void)size;
	(void)mtime_s;
	if (strnlen(key, PROTO_LIST_KEY_MAX + 1) > PROTO_LIST_KEY_MAX)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *in = (const char *)data + 1;
	size_t n = size ? size - 1 : 0;
	char *s, out[64];
	int r;

	if (size == 0 || size > (1u << 16))
		return 0;
	s = malloc(n + 1);
	if (!s)
		return 0;
	memcpy(s, in, n);
	s[n] = '\0';
	switch (data[0] % 5) {
	case 0: {
		uint64_t osize = 0, off = 0, len = 0;
		if (n < 8)
			break;
		for (int i = 0; i < 8; i++)
			osize = osize << 8 | (uint8_t)in[i];
		r = proto_http_range(s + 8, osize, &off, &len);
		if (r == 1 && (len == 0 || off >= osize || len > osize - off))
			abort();
		if (r != 0 && r != 1 && r != -ERANGE)
			abort();
		break;
	}
	case 1:
		r = proto_query_get(s, "prefix", out, sizeof(out));
		if (r == 1 && strnlen(out, sizeof(out)) >= sizeof(out))
			abort();
		if (r != 0 && r != 1 && r != -EINVAL)
			abort();
		break;
	case 2: {
		struct proto_chunked k1, k2;
		struct feed f1, f2;
		if (n < 1)
			break;
		size_t piece = (uint8_t)in[0] ? (uint8_t)in[0] : 1;
		int r1 = feed_all(in + 1, n - 1, piece, &k1, &f1);
		int r2 = feed_all(in + 1, n - 1, n, &k2, &f2);
		if (f1.payload > n || r1 != r2 || (r1 == 0 && (f1.payload != f2.payload ||
							      k1.state != k2.state ||
							      f1.trailers != f2.trailers)))
			abort();
		if (r1 == 0 && k1.state == PROTO_CK_END &&
		    proto_chunked_feed(&k1, "x", 1, on_payload, on_trailer, &f1) != -EINVAL)
			abort();
		break;
	}
	case 3: {
		char token[PROTO_LIST_KEY_MAX + 1];
		r = proto_s3_list_parse(in, n, on_entry, NULL, token, sizeof(token));
		if (strnlen(token, sizeof(token)) >= sizeof(token))
			abort();
		if (r != 0 && r != -EBADMSG && r != -ENAMETOOLONG)
			abort();
		break;
	}
	case 4:
		r = proto_s3_error_code(in, n, out, sizeof(out));
		if (r > 0) {
			if ((size_t)r >= sizeof(out) || strlen(out) != (size_t)r)
				abort();
			for (int i = 0; i < r; i++) {
				char c = out[i];
				if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				      (c >= '0' && c <= '9')))
					abort();
			}
		}
		break;
	}
	free(s);
	return 0;
}
