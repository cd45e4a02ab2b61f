/*
 * fuzz_sigv4: libFuzzer target for the server side of AWS SigV4 (proto/sigv4.c).
 *
 * Input: a request as text lines, "\n"-separated:
 *     METHOD \n RAW-PATH \n RAW-QUERY \n Name: value \n Name: value ...
 * at most FUZZ_MAX_HEADERS headers. The target runs proto_sigv4_parse(), then
 * proto_sigv4_canonical_request() on what parsed, then proto_sigv4_verify() twice: with the
 * clock of the request's own x-amz-date (so that the skew check passes and the signature code
 * runs) and with a fixed clock; the body hash is NULL or a fixed hash. The secret lookup knows
 * one access key, "AKFUZZ". Nothing is expected beyond "no crash, no sanitizer report, return
 * codes from the documented set".
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tessera/proto.h"

#define FUZZ_MAX_HEADERS 64
#define FUZZ_MAX_INPUT (64u << 10)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *fuzz_lookup(void *ctx, const char *access_key)
{
	(void)ctx;
	return strcmp(access_key, "AKFUZZ") == 0 ? "fuzz/secret+key" : NULL;
}

static int64_t amz_time(const char *v)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (!v || strlen(v) != 16 || !strptime(v, "%Y%m%dT%H%M%SZ", &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

static void check_rc(int r)
{
	/* proto.h documents these; anything else is a bug worth a crash. */
	if (r != 0 && r != -EACCES && r != -EINVAL && r != -ETIME && r != -EBADMSG &&
	    r != -EILSEQ && r != -ENOMEM)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_header headers[FUZZ_MAX_HEADERS];
	struct proto_request req = { 0 };
	struct proto_sigv4 sig;
	const char *lines[3 + FUZZ_MAX_HEADERS];
	size_t n_lines = 0, n_headers = 0;
	char *buf, *p, *canon;
	const char *date = NULL;
	int r;

	if (size > FUZZ_MAX_INPUT)
		return 0;
	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	for (p = buf; p && n_lines < 3 + FUZZ_MAX_HEADERS;) {
		lines[n_lines++] = p;
		p = strchr(p, '\n');
		if (p)
			*p++ = '\0';
	}
	req.method = n_lines > 0 ? lines[0] : "GET";
	req.path = n_lines > 1 ? lines[1] : "/";
	req.query = n_lines > 2 ? lines[2] : NULL;
	for (size_t i = 3; i < n_lines; i++) {
		char *colon = strchr(lines[i], ':');
		if (!colon)
			continue;
		*colon = '\0';
		headers[n_headers].name = lines[i];
		headers[n_headers].value = colon[1] == ' ' ? colon + 2 : colon + 1;
		if (strcasecmp(lines[i], "x-amz-date") == 0)
			date = headers[n_headers].value;
		n_headers++;
	}
	req.headers = headers;
	req.n_headers = n_headers;

	r = proto_sigv4_parse(&req, &sig);
	if (r != 0 && r != -EACCES && r != -EINVAL)
		abort();
	if (r == 0) {
		canon = malloc(8192);
		if (canon) {
			int n = proto_sigv4_canonical_request(&req, &sig, canon, 8192);
			if (n >= 8192 || (n < 0 && n != -ENOBUFS && n != -EINVAL))
				abort();
			if (n >= 0 && strlen(canon) != (size_t)n)
				abort();
			free(canon);
		}
	}
	check_rc(proto_sigv4_verify(&req, amz_time(date), fuzz_lookup, NULL, NULL));
	check_rc(proto_sigv4_verify(&req, 1700000000, fuzz_lookup, NULL,
				    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
	free(buf);
	return 0;
}
