/*
 * proto/http: the request parsers of the block protocol that take bytes straight from the
 * network: the Range header, query parameters, and the aws-chunked body encoding. blockd
 * calls them; tests/fuzz/fuzz_http.c feeds them arbitrary input.
 *
 * No I/O and no allocation; every buffer is the caller's and bounded. The chunked decoder
 * keeps its state in the caller's struct proto_chunked and may be fed any split of the body.
 */
#include "tessera/proto.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "tessera/common.h"

/* A strict decimal: digits only. 0, -EINVAL, or -ERANGE above 64 bits. */
static int parse_dec(const char *s, uint64_t *ret)
{
	return tparse_uint(s, 0, UINT64_MAX, ret);
}

int proto_http_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
	char a[24], b[24];
	const char *dash;
	uint64_t x, y;

	if (!h)
		return 0;
	while (*h == ' ')
		h++;
	if (strncasecmp(h, "bytes=", 6) != 0 || strchr(h, ','))
		return 0;
	h += 6;
	dash = strchr(h, '-');
	if (!dash || (size_t)(dash - h) >= sizeof(a) || strlen(dash + 1) >= sizeof(b))
		return 0;
	memcpy(a, h, (size_t)(dash - h));
	a[dash - h] = '\0';
	strcpy(b, dash + 1);
	for (char *e = b + strlen(b); e > b && (e[-1] == ' ' || e[-1] == '\t');)
		*--e = '\0';
	if (!a[0]) { /* suffix: the last y bytes */
		if (parse_dec(b, &y) < 0)
			return 0;
		if (y == 0 || size == 0)
			return -ERANGE;
		*len = TESSERA_MIN(y, size);
		*off = size - *len;
		return 1;
	}
	int ra = parse_dec(a, &x);
	if (ra == -EINVAL)
		return 0;
	if (ra == -ERANGE || x >= size)
		return -ERANGE;
	if (!b[0]) {
		*off = x;
		*len = size - x;
		return 1;
	}
	int rb = parse_dec(b, &y);
	if (rb == -EINVAL || (rb == 0 && y < x))
		return 0;
	if (rb == -ERANGE || y >= size)
		y = size - 1;
	*off = x;
	*len = y - x + 1;
	return 1;
}

int proto_query_get(const char *query, const char *name, char *out, size_t size)
{
	char dname[64];

	for (const char *p = query; p && *p;) {
		size_t seg = strcspn(p, "&");
		const char *eq = memchr(p, '=', seg);
		size_t nlen = eq ? (size_t)(eq - p) : seg;
		int n = proto_uri_decode(dname, sizeof(dname), p, nlen);

		if (n >= 0 && strcmp(dname, name) == 0) {
			const char *v = eq ? eq + 1 : p + seg;
			size_t vlen = eq ? seg - nlen - 1 : 0;
			return proto_uri_decode(out, size, v, vlen) < 0 ? -EINVAL : 1;
		}
		p += seg;
		if (*p == '&')
			p++;
	}
	return 0;
}

/* ---------------------------------------------------------------- aws-chunked */

static int chunk_fail(struct proto_chunked *k, const char *why)
{
	if (!k->error)
		k->error = why;
	return -EINVAL;
}

/* One complete line of the framing (without CRLF). */
static int chunk_line(struct proto_chunked *k, char *line, proto_chunk_trailer_fn trailer,
		      void *ctx)
{
	uint64_t size = 0;
	char *colon;
	int d;

	switch (k->state) {
	case PROTO_CK_SIZE:
		line[strcspn(line, ";")] = '\0'; /* chunk extensions carry nothing we use */
		if (!line[0] || strlen(line) > 15)
			return chunk_fail(k, "malformed aws-chunked chunk size");
		for (char *p = line; *p; p++) {
			if ((d = thex_digit(*p)) < 0)
				return chunk_fail(k, "malformed aws-chunked chunk size");
			size = size << 4 | (uint64_t)d;
		}
		k->left = size;
		k->state = size ? PROTO_CK_DATA : PROTO_CK_TRAILER;
		return 0;
	case PROTO_CK_DATA_END:
		if (line[0])
			return chunk_fail(k, "aws-chunked data longer than its chunk size");
		k->state = PROTO_CK_SIZE;
		return 0;
	case PROTO_CK_TRAILER:
		if (!line[0]) {
			k->state = PROTO_CK_END;
			return 0;
		}
		if (++k->trailers > PROTO_CHUNK_MAX_TRAILERS)
			return chunk_fail(k, "too many aws-chunked trailers");
		if (!(colon = strchr(line, ':')))
			return chunk_fail(k, "malformed aws-chunked trailer");
		*colon = '\0';
		const char *v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		return trailer ? trailer(ctx, line, v) : 0;
	default:
		return chunk_fail(k, "malformed aws-chunked framing");
	}
}

int proto_chunked_feed(struct proto_chunked *k, const char *data, size_t n,
		       proto_chunk_payload_fn payload, proto_chunk_trailer_fn trailer, void *ctx)
{
	int rr;

	while (n > 0) {
		if (k->state == PROTO_CK_END)
			return chunk_fail(k, "bytes after the end of the aws-chunked body");
		if (k->state == PROTO_CK_DATA) {
			size_t take = (size_t)TESSERA_MIN((uint64_t)n, k->left);
			if ((rr = payload(ctx, data, take)) < 0)
				return rr;
			data += take;
			n -= take;
			k->left -= take;
			if (k->left == 0)
				k->state = PROTO_CK_DATA_END;
			continue;
		}
		char ch = *data++;
		n--;
		if (ch == '\n') {
			if (k->line_len == 0 || k->line[k->line_len - 1] != '\r')
				return chunk_fail(k, "malformed aws-chunked framing (bare LF)");
			k->line[k->line_len - 1] = '\0';
			k->line_len = 0;
			if ((rr = chunk_line(k, k->line, trailer, ctx)) < 0)
				return rr;
			continue;
		}
		if (k->line_len + 1 >= sizeof(k->line))
			return chunk_fail(k, "aws-chunked line longer than 256 bytes");
		k->line[k->line_len++] = ch;
	}
	return 0;
}
