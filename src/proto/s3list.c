/*
 * proto/s3list: the client's reader of ListObjectsV2 answers (ListBucketResult documents).
 *
 * A small scanner, no XML library: the document is size-limited by the caller, every field
 * copied out of it is bounded, entities are the five XML ones, and anything else that does
 * not match the shape S3 sends is -EBADMSG. tests/fuzz/fuzz_http.c feeds it arbitrary input.
 */
#include "tessera/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera/common.h"

/* Finds the text of the first <tag>...</tag> in [p, end), XML-unescaped into out.
 * Returns the text length, -ENOENT when absent, -EBADMSG when malformed or too long
 * (or size is 0). */
static int xml_text(const char *p, const char *end, const char *tag, char *out, size_t size)
{
	char open[48], close[48];
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	const char *a = memmem(p, (size_t)(end - p), open, strlen(open));
	if (!a)
		return -ENOENT;
	a += strlen(open);
	const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
	if (!b || size == 0)
		return -EBADMSG;
	while (a < b) {
		char c = *a++;
		if (c == '&') {
			static const struct { const char *name; char c; } ents[] = {
				{ "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' },
				{ "quot;", '"' }, { "apos;", '\'' },
			};
			size_t i;
			for (i = 0; i < TESSERA_ARRAY_SIZE(ents); i++) {
				size_t l = strlen(ents[i].name);
				if ((size_t)(b - a) >= l && memcmp(a, ents[i].name, l) == 0) {
					c = ents[i].c;
					a += l;
					break;
				}
			}
			if (i == TESSERA_ARRAY_SIZE(ents))
				return -EBADMSG;
		}
		if (o + 1 >= size)
			return -EBADMSG;
		out[o++] = c;
	}
	out[o] = '\0';
	return (int)o;
}

/* "2026-11-27T08:33:12.000Z" to seconds since the epoch. */
static int parse_iso_date(const char *s, int64_t *ret)
{
	struct tm tm = { 0 };
	const char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);

	if (!e)
		return -EBADMSG;
	*ret = (int64_t)timegm(&tm);
	return 0;
}

int proto_s3_list_parse(const char *doc, size_t len, proto_list_entry_fn entry, void *ctx,
			char *next_token, size_t token_size)
{
	const char *p = doc, *end = doc + len;
	char key[PROTO_LIST_KEY_MAX + 1], num[32], date[64], trunc[16] = "";
	int r;

	if (token_size == 0)
		return -ENAMETOOLONG;
	next_token[0] = '\0';
	if (!memmem(p, len, "<ListBucketResult", 17))
		return -EBADMSG;
	for (;;) {
		const char *c0 = memmem(p, (size_t)(end - p), "<Contents>", 10);
		if (!c0)
			break;
		const char *c1 = memmem(c0, (size_t)(end - c0), "</Contents>", 11);
		if (!c1)
			return -EBADMSG;
		uint64_t size;
		int64_t mtime;
		if (xml_text(c0, c1, "Key", key, sizeof(key)) <= 0 ||
		    xml_text(c0, c1, "Size", num, sizeof(num)) <= 0 ||
		    tparse_uint(num, 0, UINT64_MAX, &size) < 0 ||
		    xml_text(c0, c1, "LastModified", date, sizeof(date)) <= 0 ||
		    parse_iso_date(date, &mtime) < 0)
			return -EBADMSG;
		if ((r = entry(ctx, key, size, mtime)) < 0)
			return r;
		p = c1 + 11;
	}
	if (xml_text(doc, end, "IsTruncated", trunc, sizeof(trunc)) > 0 &&
	    strcmp(trunc, "true") == 0) {
		r = xml_text(doc, end, "NextContinuationToken", next_token, token_size);
		if (r <= 0) {
			bool small = r == -EBADMSG && token_size <= PROTO_LIST_KEY_MAX;
			next_token[0] = '\0';
			return small ? -ENAMETOOLONG : -EBADMSG;
		}
	}
	return 0;
}
