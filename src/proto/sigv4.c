/*
 * proto/sigv4: server-side verification of AWS Signature Version 4 (header-based, as S3
 * uses it). Clients sign with libcurl's CURLOPT_AWS_SIGV4; this file checks what they send.
 *
 * The algorithm, exactly as AWS specifies it for S3:
 *   canonical request = method \n canonical URI \n canonical query \n canonical headers \n
 *                       signed headers \n hashed payload
 *     - canonical URI: the path as sent (S3 does not normalise or double-encode), "/" if empty;
 *     - canonical query: every name and value percent-decoded, re-encoded with the RFC 3986
 *       unreserved set (uppercase hex), sorted by name then value, "name=value" joined by '&';
 *     - canonical headers: for each name of SignedHeaders (lowercase, sorted), "name:value\n",
 *       the value trimmed with inner whitespace runs collapsed, repeated headers joined by ',';
 *     - hashed payload: the x-amz-content-sha256 value as sent (a hex hash, "UNSIGNED-PAYLOAD"
 *       or "STREAMING-UNSIGNED-PAYLOAD-TRAILER"), or when that header is absent
 *       the SHA-256 of the body the server computed (of the empty string without a body).
 *   string to sign = "AWS4-HMAC-SHA256" \n x-amz-date \n scope \n hex(SHA-256(canonical))
 *   signing key = HMAC("AWS4"+secret, date) -> region -> service -> "aws4_request"
 *   signature = hex(HMAC(signing key, string to sign)), compared in constant time.
 *
 * Compatibility: libcurl before 8.x (Debian 12 ships 7.88) signs the query string exactly as
 * it appears in the URL instead of in canonical form. When the canonical form does not verify
 * and the raw query differs from it, the raw query is tried as well. Both forms bind every
 * byte the client sent, so this accepts no request whose query an attacker changed.
 *
 * Cost: a request's verification is one SHA-256 of its canonical request (built on the stack
 * unless unusually large) and one HMAC; the signing key (four more HMACs) is derived once a
 * day per secret/region/service and kept in a small table (signing_key()). SHA-256 is fetched
 * from the OpenSSL provider once and HMAC is computed over it directly: OpenSSL 3's one-shot
 * HMAC() and EVP_sha256() look the algorithm up on every call.
 *
 * No I/O. Globals: the fetched SHA-256 (pthread_once) and the signing-key table (its own
 * mutex): safe from any thread. Every input is from the network: sizes are
 * bounded by struct proto_sigv4's fields and PROTO_SIGV4_MAX_* below; nothing asserts on input.
 */
#include "tessera/proto.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tessera/common.h"

#define SIGV4_ALGO "AWS4-HMAC-SHA256"
#define SIGV4_MAX_QUERY_PARAMS 128
#define SIGV4_MAX_SIGNED_HEADERS 64
#define SIGV4_CANON_MAX (64u << 10)
#define SIGV4_CANON_STACK (8u << 10) /* tried first; SIGV4_CANON_MAX from the heap if needed */
/* aws-chunked body, chunks unsigned, trailing checksum: signed like UNSIGNED-PAYLOAD (the
 * value itself is the canonical payload hash); the server decodes the chunks. The signed
 * chunk modes (STREAMING-AWS4-HMAC-SHA256-PAYLOAD...) are refused as malformed. */
#define SIGV4_STREAMING_UNSIGNED "STREAMING-UNSIGNED-PAYLOAD-TRAILER"

static const char empty_sha256[] =
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/* ---------------------------------------------------------------- a bounded string builder */

struct sbuf {
	char *buf;
	size_t size;
	size_t len;
	bool overflow;
};

static void sb_putn(struct sbuf *sb, const char *s, size_t n)
{
	if (sb->overflow || sb->size - sb->len <= n) {
		sb->overflow = true;
		return;
	}
	memcpy(sb->buf + sb->len, s, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
}

static void sb_puts(struct sbuf *sb, const char *s)
{
	sb_putn(sb, s, strlen(s));
}

static void sb_putc(struct sbuf *sb, char c)
{
	sb_putn(sb, &c, 1);
}

/* ---------------------------------------------------------------- helpers */

static bool is_hex64(const char *s)
{
	size_t i;

	for (i = 0; i < 64; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
			return false;
	}
	return s[64] == '\0';
}

static const char *header_find(const struct proto_request *req, const char *name)
{
	for (size_t i = 0; i < req->n_headers; i++)
		if (req->headers[i].name && strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value ? req->headers[i].value : "";
	return NULL;
}

/* Copies [s, s+n) into dst (size bytes) or fails. */
static int copy_field(char *dst, size_t size, const char *s, size_t n)
{
	if (n == 0 || n >= size || memchr(s, '\0', n))
		return -EINVAL;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

static bool all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

/* Parses "YYYYMMDDTHHMMSSZ" into seconds since the epoch. */
static int amz_date_parse(const char *s, int64_t *ret)
{
	struct tm tm = { 0 };

	if (strlen(s) != 16 || !all_digits(s, 8) || s[8] != 'T' || !all_digits(s + 9, 6) ||
	    s[15] != 'Z')
		return -EINVAL;
	tm.tm_year = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0') -
		     1900;
	tm.tm_mon = (s[4] - '0') * 10 + (s[5] - '0') - 1;
	tm.tm_mday = (s[6] - '0') * 10 + (s[7] - '0');
	tm.tm_hour = (s[9] - '0') * 10 + (s[10] - '0');
	tm.tm_min = (s[11] - '0') * 10 + (s[12] - '0');
	tm.tm_sec = (s[13] - '0') * 10 + (s[14] - '0');
	if (tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60)
		return -EINVAL;
	*ret = (int64_t)timegm(&tm);
	return 0;
}

/* ---------------------------------------------------------------- parsing */

/* "AKID/20130524/us-east-1/s3/aws4_request" */
static int parse_credential(const char *v, size_t n, struct proto_sigv4 *s)
{
	const char *parts[5];
	size_t lens[5];
	size_t np = 0;
	const char *p = v, *end = v + n;
	int r;

	while (np < 5) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		const char *e = slash ? slash : end;
		parts[np] = p;
		lens[np] = (size_t)(e - p);
		np++;
		if (!slash)
			break;
		p = slash + 1;
	}
	if (np != 5 || p + lens[4] != end)
		return -EINVAL;
	if ((r = copy_field(s->access_key, sizeof(s->access_key), parts[0], lens[0])) < 0 ||
	    (r = copy_field(s->date, sizeof(s->date), parts[1], lens[1])) < 0 ||
	    (r = copy_field(s->region, sizeof(s->region), parts[2], lens[2])) < 0 ||
	    (r = copy_field(s->service, sizeof(s->service), parts[3], lens[3])) < 0)
		return r;
	if (lens[1] != 8 || !all_digits(s->date, 8))
		return -EINVAL;
	if (lens[4] != strlen("aws4_request") || memcmp(parts[4], "aws4_request", lens[4]) != 0)
		return -EINVAL;
	return 0;
}

/* "host;range;x-amz-date": lowercase token characters, strictly ascending, host included. */
static int parse_signed_headers(const char *v, size_t n, struct proto_sigv4 *s)
{
	const char *prev = NULL;
	size_t prev_len = 0, count = 0;
	bool have_host = false;
	int r;

	if ((r = copy_field(s->signed_headers, sizeof(s->signed_headers), v, n)) < 0)
		return r;
	for (const char *p = s->signed_headers; *p;) {
		size_t len = strcspn(p, ";");
		if (len == 0 || ++count > SIGV4_MAX_SIGNED_HEADERS)
			return -EINVAL;
		for (size_t i = 0; i < len; i++) {
			char c = p[i];
			if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
			      c == '_' || c == '.'))
				return -EINVAL;
		}
		if (prev) {
			int cmp = strncmp(prev, p, TESSERA_MIN(prev_len, len));
			if (cmp > 0 || (cmp == 0 && prev_len >= len))
				return -EINVAL;
		}
		if (len == 4 && memcmp(p, "host", 4) == 0)
			have_host = true;
		prev = p;
		prev_len = len;
		p += len;
		if (*p == ';') {
			p++;
			if (!*p)
				return -EINVAL;
		}
	}
	return have_host ? 0 : -EINVAL;
}

int proto_sigv4_parse(const struct proto_request *req, struct proto_sigv4 *ret)
{
	struct proto_sigv4 s;
	const char *auth, *p, *v;
	bool have_cred = false, have_sh = false, have_sig = false;
	int r;

	memset(&s, 0, sizeof(s));
	auth = header_find(req, "authorization");
	if (!auth || !*auth)
		return -EACCES;
	if (strncmp(auth, SIGV4_ALGO, strlen(SIGV4_ALGO)) != 0 ||
	    (auth[strlen(SIGV4_ALGO)] != ' ' && auth[strlen(SIGV4_ALGO)] != '\t'))
		return -EINVAL;
	p = auth + strlen(SIGV4_ALGO);
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *eq = strchr(p, '=');
		if (!eq)
			return -EINVAL;
		size_t name_len = (size_t)(eq - p);
		const char *val = eq + 1;
		size_t val_len = strcspn(val, ",");
		const char *next = val + val_len;
		while (val_len > 0 && (val[val_len - 1] == ' ' || val[val_len - 1] == '\t'))
			val_len--;
		if (name_len == 10 && memcmp(p, "Credential", 10) == 0 && !have_cred) {
			if ((r = parse_credential(val, val_len, &s)) < 0)
				return r;
			have_cred = true;
		} else if (name_len == 13 && memcmp(p, "SignedHeaders", 13) == 0 && !have_sh) {
			if ((r = parse_signed_headers(val, val_len, &s)) < 0)
				return r;
			have_sh = true;
		} else if (name_len == 9 && memcmp(p, "Signature", 9) == 0 && !have_sig) {
			if (val_len != 64 || (r = copy_field(s.signature, sizeof(s.signature), val,
							     val_len)) < 0 ||
			    !is_hex64(s.signature))
				return -EINVAL;
			for (int i = 0; i < 64; i++)
				if (s.signature[i] >= 'A' && s.signature[i] <= 'F')
					s.signature[i] = (char)(s.signature[i] - 'A' + 'a');
			have_sig = true;
		} else {
			return -EINVAL;
		}
		p = next;
		if (*p == ',')
			p++;
	}
	if (!have_cred || !have_sh || !have_sig)
		return -EINVAL;

	v = header_find(req, "x-amz-date");
	if (!v || strlen(v) != 16)
		return -EINVAL;
	memcpy(s.amz_date, v, 17);
	int64_t t;
	if (amz_date_parse(s.amz_date, &t) < 0 || memcmp(s.amz_date, s.date, 8) != 0)
		return -EINVAL;

	v = header_find(req, "x-amz-content-sha256");
	if (v) {
		if (strcmp(v, PROTO_SIGV4_UNSIGNED) != 0 && strcmp(v, SIGV4_STREAMING_UNSIGNED) != 0 &&
		    !(strlen(v) == 64 && is_hex64(v)))
			return -EINVAL; /* includes the unsupported signed STREAMING-* modes */
		memcpy(s.payload_hash, v, strlen(v) + 1);
	}
	*ret = s;
	return 0;
}

/* ---------------------------------------------------------------- canonical request */

static bool unreserved(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_' || c == '.' || c == '~';
}

/* Percent-encodes n bytes of s with the RFC 3986 unreserved set into out (3n+1 bytes). */
static size_t uri_encode(char *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (unreserved(c)) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return o;
}

struct qparam {
	const char *name;
	const char *value;
};

static int qparam_cmp(const void *a, const void *b)
{
	const struct qparam *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : strcmp(x->value, y->value);
}

/* Appends the canonical query string of raw (may be NULL). */
static int canonical_query(struct sbuf *sb, const char *raw)
{
	struct qparam params[SIGV4_MAX_QUERY_PARAMS];
	size_t n = 0, len;
	char *scratch = NULL, *dec = NULL, *w;
	int r = 0;

	if (!raw || !*raw)
		return 0;
	len = strlen(raw);
	if (len > SIGV4_CANON_MAX)
		return -EINVAL;
	/* Each encoded name or value is at most 3x its raw length, plus NULs. */
	scratch = malloc(3 * len + 2 * SIGV4_MAX_QUERY_PARAMS + 2);
	dec = malloc(len + 1);
	if (!scratch || !dec) {
		r = -ENOMEM;
		goto out;
	}
	w = scratch;
	for (const char *p = raw; *p;) {
		size_t seg = strcspn(p, "&");
		if (seg > 0) {
			const char *eq = memchr(p, '=', seg);
			size_t nlen = eq ? (size_t)(eq - p) : seg;
			const char *val = eq ? eq + 1 : p + seg;
			size_t vlen = eq ? seg - nlen - 1 : 0;
			int d;

			if (n == SIGV4_MAX_QUERY_PARAMS) {
				r = -EINVAL;
				goto out;
			}
			d = proto_uri_decode(dec, len + 1, p, nlen);
			if (d < 0) {
				r = -EINVAL;
				goto out;
			}
			params[n].name = w;
			w += uri_encode(w, dec, (size_t)d) + 1;
			d = proto_uri_decode(dec, len + 1, val, vlen);
			if (d < 0) {
				r = -EINVAL;
				goto out;
			}
			params[n].value = w;
			w += uri_encode(w, dec, (size_t)d) + 1;
			n++;
		}
		p += seg;
		if (*p == '&')
			p++;
	}
	qsort(params, n, sizeof(params[0]), qparam_cmp);
	for (size_t i = 0; i < n; i++) {
		if (i)
			sb_putc(sb, '&');
		sb_puts(sb, params[i].name);
		sb_putc(sb, '=');
		sb_puts(sb, params[i].value);
	}
out:
	free(scratch);
	free(dec);
	return r;
}

/* Appends v trimmed, with runs of spaces and tabs collapsed to one space. */
static void put_trimall(struct sbuf *sb, const char *v)
{
	bool pending_space = false, started = false;

	for (; *v; v++) {
		if (*v == ' ' || *v == '\t') {
			pending_space = started;
			continue;
		}
		if (pending_space)
			sb_putc(sb, ' ');
		pending_space = false;
		started = true;
		sb_putc(sb, *v);
	}
}

static int canonical_headers(struct sbuf *sb, const struct proto_request *req,
			     const char *signed_headers)
{
	char name[128];

	for (const char *p = signed_headers; *p;) {
		size_t len = strcspn(p, ";");
		bool found = false;

		if (len == 0 || len >= sizeof(name))
			return -EINVAL;
		memcpy(name, p, len);
		name[len] = '\0';
		sb_puts(sb, name);
		sb_putc(sb, ':');
		for (size_t i = 0; i < req->n_headers; i++) {
			if (!req->headers[i].name || strcasecmp(req->headers[i].name, name) != 0)
				continue;
			if (found)
				sb_putc(sb, ',');
			put_trimall(sb, req->headers[i].value ? req->headers[i].value : "");
			found = true;
		}
		if (!found)
			return -EINVAL; /* a signed header the request does not carry */
		sb_putc(sb, '\n');
		p += len;
		if (*p == ';')
			p++;
	}
	return 0;
}

static int canonical_request(const struct proto_request *req, const struct proto_sigv4 *sig,
			     bool raw_query, char *out, size_t size)
{
	struct sbuf sb = { .buf = out, .size = size };
	const char *path = req->path && *req->path ? req->path : "/";
	int r;

	if (size == 0 || !req->method || !*req->method)
		return size == 0 ? -ENOBUFS : -EINVAL;
	out[0] = '\0';
	sb_puts(&sb, req->method);
	sb_putc(&sb, '\n');
	sb_puts(&sb, path);
	sb_putc(&sb, '\n');
	if (raw_query) {
		if (req->query)
			sb_puts(&sb, req->query);
	} else if ((r = canonical_query(&sb, req->query)) < 0) {
		return r;
	}
	sb_putc(&sb, '\n');
	if ((r = canonical_headers(&sb, req, sig->signed_headers)) < 0)
		return r;
	sb_putc(&sb, '\n');
	sb_puts(&sb, sig->signed_headers);
	sb_putc(&sb, '\n');
	sb_puts(&sb, sig->payload_hash[0] ? sig->payload_hash : empty_sha256);
	if (sb.overflow)
		return -ENOBUFS;
	return (int)sb.len;
}

int proto_sigv4_canonical_request(const struct proto_request *req, const struct proto_sigv4 *sig,
				  char *out, size_t size)
{
	return canonical_request(req, sig, false, out, size);
}

/* ---------------------------------------------------------------- verification */

/* SHA-256, fetched from the provider once: OpenSSL 3 looks EVP_sha256() and HMAC()'s
 * algorithm up again on every call, which cost more than the hashing of a short request. */
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_fetched;

static void sha256_fetch(void)
{
	sha256_fetched = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256_md(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256_fetched ? sha256_fetched : EVP_sha256();
}

static int digest_parts(EVP_MD_CTX *ctx, const void *a, size_t alen, const void *b, size_t blen,
			uint8_t out[32])
{
	unsigned int len = 32;

	if (!EVP_DigestInit_ex(ctx, sha256_md(), NULL) || !EVP_DigestUpdate(ctx, a, alen) ||
	    (blen && !EVP_DigestUpdate(ctx, b, blen)) || !EVP_DigestFinal_ex(ctx, out, &len) ||
	    len != 32)
		return -EIO;
	return 0;
}

/* HMAC-SHA256 (RFC 2104) with a caller's digest context. */
static int hmac_sha256_ctx(EVP_MD_CTX *ctx, const void *key, size_t key_len, const void *msg,
			   size_t msg_len, uint8_t out[32])
{
	uint8_t pad[64], inner[32];
	int r;

	if (key_len > sizeof(pad)) { /* a key longer than the block is hashed first */
		if ((r = digest_parts(ctx, key, key_len, NULL, 0, inner)) < 0)
			return r;
		key = inner;
		key_len = sizeof(inner);
	}
	memset(pad, 0x36, sizeof(pad));
	for (size_t i = 0; i < key_len; i++)
		pad[i] ^= ((const uint8_t *)key)[i];
	r = digest_parts(ctx, pad, sizeof(pad), msg, msg_len, inner);
	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] ^= 0x36 ^ 0x5c;
	if (r == 0)
		r = digest_parts(ctx, pad, sizeof(pad), inner, sizeof(inner), out);
	OPENSSL_cleanse(pad, sizeof(pad));
	OPENSSL_cleanse(inner, sizeof(inner));
	return r;
}

static int sha256_hex(EVP_MD_CTX *ctx, const void *msg, size_t len, char out[65])
{
	uint8_t md[32];
	int r = digest_parts(ctx, msg, len, NULL, 0, md);

	if (r == 0)
		thex_encode(md, 32, out);
	return r;
}

/* Signing keys are derived once a day per (secret, region, service): four HMACs that would
 * otherwise be the largest part of a small request's cost. A few recent keys are kept in a
 * process-wide table (SIGV4_KEY_CACHE entries, replaced round-robin) under a mutex held only
 * to copy 32 bytes. Entries are keyed by the secret itself, so a changed or different secret
 * never reuses a key; the table is wiped by nothing but replacement (keys are as secret as
 * the configuration they derive from). */
#define SIGV4_KEY_CACHE 8
struct sigv4_key_entry {
	bool used;
	char secret[257];
	char date[9];
	char region[64];
	char service[32];
	uint8_t key[32];
};
static pthread_mutex_t key_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sigv4_key_entry key_cache[SIGV4_KEY_CACHE];
static unsigned key_cache_next;

static bool key_entry_matches(const struct sigv4_key_entry *e, const char *secret,
			      const struct proto_sigv4 *s)
{
	return e->used && strcmp(e->date, s->date) == 0 && strcmp(e->region, s->region) == 0 &&
	       strcmp(e->service, s->service) == 0 && strcmp(e->secret, secret) == 0;
}

static int derive_signing_key(EVP_MD_CTX *ctx, const char *secret, const struct proto_sigv4 *s,
			      uint8_t key[32])
{
	char k0[4 + 256];
	size_t slen = strlen(secret);
	int r;

	if (slen > sizeof(k0) - 4)
		return -EINVAL;
	memcpy(k0, "AWS4", 4);
	memcpy(k0 + 4, secret, slen);
	r = hmac_sha256_ctx(ctx, k0, 4 + slen, s->date, strlen(s->date), key);
	if (r == 0)
		r = hmac_sha256_ctx(ctx, key, 32, s->region, strlen(s->region), key);
	if (r == 0)
		r = hmac_sha256_ctx(ctx, key, 32, s->service, strlen(s->service), key);
	if (r == 0)
		r = hmac_sha256_ctx(ctx, key, 32, "aws4_request", strlen("aws4_request"), key);
	OPENSSL_cleanse(k0, sizeof(k0));
	return r;
}

static int signing_key(EVP_MD_CTX *ctx, const char *secret, const struct proto_sigv4 *s,
		       uint8_t key[32])
{
	struct sigv4_key_entry *e;
	int r;

	if (strlen(secret) >= sizeof(key_cache[0].secret))
		return -EINVAL;
	pthread_mutex_lock(&key_cache_lock);
	for (unsigned i = 0; i < SIGV4_KEY_CACHE; i++) {
		if (key_entry_matches(&key_cache[i], secret, s)) {
			memcpy(key, key_cache[i].key, 32);
			pthread_mutex_unlock(&key_cache_lock);
			return 0;
		}
	}
	pthread_mutex_unlock(&key_cache_lock);
	if ((r = derive_signing_key(ctx, secret, s, key)) < 0)
		return r;
	pthread_mutex_lock(&key_cache_lock);
	e = &key_cache[key_cache_next++ % SIGV4_KEY_CACHE];
	OPENSSL_cleanse(e, sizeof(*e));
	e->used = true;
	strcpy(e->secret, secret);
	strcpy(e->date, s->date);
	strcpy(e->region, s->region);
	strcpy(e->service, s->service);
	memcpy(e->key, key, 32);
	pthread_mutex_unlock(&key_cache_lock);
	return 0;
}

/* 0 when the signature over the canonical request in canon matches s->signature. */
static int check_signature(EVP_MD_CTX *ctx, const uint8_t key[32], const struct proto_sigv4 *s,
			   const char *canon, size_t canon_len)
{
	char canon_hash[65], sts[256], sig_hex[65];
	uint8_t mac[32];
	int n, r;

	if ((r = sha256_hex(ctx, canon, canon_len, canon_hash)) < 0)
		return r;
	n = snprintf(sts, sizeof(sts), SIGV4_ALGO "\n%s\n%s/%s/%s/aws4_request\n%s", s->amz_date,
		     s->date, s->region, s->service, canon_hash);
	if (n < 0 || (size_t)n >= sizeof(sts))
		return -EINVAL;
	if ((r = hmac_sha256_ctx(ctx, key, 32, sts, (size_t)n, mac)) < 0)
		return r;
	thex_encode(mac, 32, sig_hex);
	return CRYPTO_memcmp(sig_hex, s->signature, 64) == 0 ? 0 : -EBADMSG;
}

/* The canonical request into *canon: first the caller's stack buffer (enough for ordinary
 * requests), else a heap buffer of SIGV4_CANON_MAX that *heap owns. Returns the length. */
static int build_canonical(const struct proto_request *req, const struct proto_sigv4 *s,
			   bool raw_query, char **canon, char **heap)
{
	int n = canonical_request(req, s, raw_query, *canon, SIGV4_CANON_STACK);

	if (n != -ENOBUFS)
		return n;
	if (!*heap && !(*heap = malloc(SIGV4_CANON_MAX)))
		return -ENOMEM;
	*canon = *heap;
	n = canonical_request(req, s, raw_query, *canon, SIGV4_CANON_MAX);
	return n == -ENOBUFS ? -EINVAL : n;
}

int proto_sigv4_verify(const struct proto_request *req, int64_t now_s,
		       proto_secret_lookup_fn lookup, void *lookup_ctx,
		       const char *body_sha256_hex)
{
	struct proto_sigv4 s;
	uint8_t key[32];
	const char *secret;
	char stack_canon[SIGV4_CANON_STACK];
	char *canon = stack_canon, *heap = NULL;
	EVP_MD_CTX *ctx = NULL;
	int64_t t;
	int r, n;

	if ((r = proto_sigv4_parse(req, &s)) < 0)
		return r;
	if (strcmp(s.service, "s3") != 0)
		return -EINVAL;
	secret = lookup(lookup_ctx, s.access_key);
	if (!secret)
		return -EACCES;
	if (amz_date_parse(s.amz_date, &t) < 0)
		return -EINVAL;
	if (t > now_s + PROTO_SIGV4_MAX_SKEW_S || t < now_s - PROTO_SIGV4_MAX_SKEW_S)
		return -ETIME;
	if (body_sha256_hex && !(strlen(body_sha256_hex) == 64 && is_hex64(body_sha256_hex)))
		return -EINVAL;
	if (!s.payload_hash[0])
		memcpy(s.payload_hash, body_sha256_hex ? body_sha256_hex : empty_sha256, 65);

	ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	if ((r = signing_key(ctx, secret, &s, key)) < 0)
		goto out;
	if ((n = build_canonical(req, &s, false, &canon, &heap)) < 0) {
		r = n;
		goto out;
	}
	r = check_signature(ctx, key, &s, canon, (size_t)n);
	if (r == -EBADMSG && req->query && *req->query) {
		/* libcurl < 8 signs the query as sent; see the top of this file. */
		char *nl = strchr(strchr(canon, '\n') + 1, '\n') + 1;
		size_t qlen = strcspn(nl, "\n");
		if (qlen != strlen(req->query) || memcmp(nl, req->query, qlen) != 0) {
			if ((n = build_canonical(req, &s, true, &canon, &heap)) < 0) {
				r = n;
				goto out;
			}
			r = check_signature(ctx, key, &s, canon, (size_t)n);
		}
	}
	if (r < 0)
		goto out;
	if (strcmp(s.payload_hash, PROTO_SIGV4_UNSIGNED) != 0 &&
	    strcmp(s.payload_hash, SIGV4_STREAMING_UNSIGNED) != 0 && body_sha256_hex &&
	    strcasecmp(s.payload_hash, body_sha256_hex) != 0)
		r = -EILSEQ;
out:
	OPENSSL_cleanse(key, sizeof(key));
	EVP_MD_CTX_free(ctx);
	free(heap);
	return r;
}
