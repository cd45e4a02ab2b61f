/*
 * proto/s3: the S3 pieces that are pure string work: validating object keys and bucket names
 * received from the network, percent-decoding request paths, XML escaping and S3 error
 * documents.
 *
 * No I/O, no state, no allocation: safe from any thread. Every function writes into a buffer
 * the caller sized and fails with -ENOBUFS rather than truncating.
 *
 * Invariant that keeps blockd's data directories safe: a key that passes proto_key_validate()
 * is a relative path of plain components made of [A-Za-z0-9._-] only, none of them "." or
 * "..", so joining it under a directory can never name anything outside that directory.
 */
#include "tessera/proto.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tessera/common.h"

static bool key_char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-' || c == '/';
}

int proto_key_validate(const char *key, size_t len)
{
	size_t comp_start = 0;

	if (!key || len == 0 || len > PROTO_KEY_MAX)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (!key_char_ok((unsigned char)key[i]))
			return -EINVAL; /* also NUL, controls, spaces, '%', '\\' */
	if (key[0] == '/' || key[len - 1] == '/')
		return -EINVAL;
	for (size_t i = 0; i <= len; i++) {
		if (i < len && key[i] != '/')
			continue;
		size_t clen = i - comp_start;
		const char *c = key + comp_start;
		if (clen == 0 || (clen == 1 && c[0] == '.') ||
		    (clen == 2 && c[0] == '.' && c[1] == '.'))
			return -EINVAL;
		comp_start = i + 1;
	}
	return 0;
}

static bool bucket_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int proto_bucket_validate(const char *bucket)
{
	size_t len;

	if (!bucket)
		return -EINVAL;
	len = strnlen(bucket, 64);
	if (len < 3 || len > 63)
		return -EINVAL;
	if (!bucket_alnum(bucket[0]) || !bucket_alnum(bucket[len - 1]))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		char c = bucket[i];
		if (!bucket_alnum(c) && c != '.' && c != '-')
			return -EINVAL;
		if (c == '.' && bucket[i + 1] == '.')
			return -EINVAL; /* S3 forbids adjacent periods */
	}
	return 0;
}

int proto_xml_escape(char *out, size_t size, const char *s)
{
	size_t n = 0;

	if (size == 0)
		return -ENOBUFS;
	for (; s && *s; s++) {
		unsigned char c = (unsigned char)*s;
		const char *rep = NULL;
		char one[2] = { (char)c, '\0' };

		switch (c) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&apos;"; break;
		default:
			/* XML 1.0 cannot carry most C0 controls even as references. */
			if (c < 0x20 && c != '\t' && c != '\n' && c != '\r')
				one[0] = '?';
			rep = one;
		}
		size_t rl = strlen(rep);
		if (n + rl >= size)
			return -ENOBUFS;
		memcpy(out + n, rep, rl);
		n += rl;
	}
	out[n] = '\0';
	return (int)n;
}

/* Appends the escaped s (or nothing for NULL) between <tag> and </tag>. */
static int xml_element(char *out, size_t size, size_t *pos, const char *tag, const char *s)
{
	int r;

	r = snprintf(out + *pos, size - *pos, "<%s>", tag);
	if (r < 0 || (size_t)r >= size - *pos)
		return -ENOBUFS;
	*pos += (size_t)r;
	r = proto_xml_escape(out + *pos, size - *pos, s ? s : "");
	if (r < 0)
		return r;
	*pos += (size_t)r;
	r = snprintf(out + *pos, size - *pos, "</%s>", tag);
	if (r < 0 || (size_t)r >= size - *pos)
		return -ENOBUFS;
	*pos += (size_t)r;
	return 0;
}

int proto_s3_error_xml(char *out, size_t size, const char *code, const char *message,
		       const char *resource, const char *request_id)
{
	static const char head[] = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>";
	static const char tail[] = "</Error>\n";
	size_t pos = 0;
	int r;

	if (size < sizeof(head))
		return -ENOBUFS;
	memcpy(out, head, sizeof(head) - 1);
	pos = sizeof(head) - 1;
	r = xml_element(out, size, &pos, "Code", code);
	if (r == 0)
		r = xml_element(out, size, &pos, "Message", message);
	if (r == 0 && resource)
		r = xml_element(out, size, &pos, "Resource", resource);
	if (r == 0 && request_id)
		r = xml_element(out, size, &pos, "RequestId", request_id);
	if (r < 0)
		return r;
	if (size - pos < sizeof(tail))
		return -ENOBUFS;
	memcpy(out + pos, tail, sizeof(tail));
	return (int)(pos + sizeof(tail) - 1);
}

int proto_uri_decode(char *out, size_t size, const char *in, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		char c = in[i];

		if (c == '\0')
			return -EINVAL;
		if (c == '%') {
			if (len - i < 3)
				return -EINVAL;
			int hi = thex_digit(in[i + 1]), lo = thex_digit(in[i + 2]);
			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (char)(hi << 4 | lo);
			if (c == '\0')
				return -EINVAL;
			i += 2;
		}
		if (n + 1 >= size)
			return -ENOBUFS;
		out[n++] = c;
	}
	if (size == 0)
		return -ENOBUFS;
	out[n] = '\0';
	return (int)n;
}
