/*
 * proto: the wire formats shared by the filesystem, the scrubber and the block server.
 *
 *  - the fragment header that makes every stored object self-describing;
 *  - object keys (naming fragments, validating keys received from the network);
 *  - AWS Signature Version 4 verification (the server side; clients sign with libcurl);
 *  - S3 error documents.
 *
 * Pure functions: no I/O, no globals, safe from any thread.
 */
#ifndef TESSERA_PROTO_H
#define TESSERA_PROTO_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- fragment header
 *
 * Layout (PROTO_FRAG_HDR_SIZE bytes, all integers big-endian):
 *   0  magic "TSRF"            4
 *   4  format version (1)      2
 *   6  header size (80)        2
 *   8  filesystem uuid        16
 *  24  inode                   8
 *  32  stripe index            8
 *  40  stripe version          8
 *  48  fragment index          1   (0..k-1 data, k..k+m-1 parity)
 *  49  k                       1
 *  50  m                       1
 *  51  matrix type             1   (PROTO_MATRIX_CAUCHY)
 *  52  flags                   4   (PROTO_FRAG_F_*)
 *  56  payload length          4
 *  60  payload crc32c          4
 *  64  stripe data length      8   (bytes of file data the stripe holds)
 *  72  reserved, zero          4
 *  76  header crc32c           4   (crc32c of bytes 0..75)
 * The payload follows the header immediately.
 */
#define PROTO_FRAG_HDR_SIZE 80
#define PROTO_FRAG_MAGIC "TSRF"
#define PROTO_FRAG_VERSION 1
#define PROTO_MATRIX_CAUCHY 1
#define PROTO_FRAG_F_COMPRESSED 0x1u
#define PROTO_FRAG_F_ENCRYPTED 0x2u
#define PROTO_FRAG_F_KNOWN (PROTO_FRAG_F_COMPRESSED | PROTO_FRAG_F_ENCRYPTED)
#define PROTO_MAX_K 32
#define PROTO_MAX_M 16
#define PROTO_MAX_PAYLOAD (64u << 20)

struct proto_frag_hdr {
	uint8_t fs_uuid[16];
	uint64_t ino;
	uint64_t stripe;
	uint64_t version;
	uint8_t index;
	uint8_t k;
	uint8_t m;
	uint8_t matrix;
	uint32_t flags;
	uint32_t payload_len;
	uint32_t payload_crc;
	uint64_t stripe_len;
};

/* Serialises h into out (exactly PROTO_FRAG_HDR_SIZE bytes), computing the header crc. */
void proto_frag_hdr_encode(const struct proto_frag_hdr *h, uint8_t out[PROTO_FRAG_HDR_SIZE]);

/* Parses and validates a header: magic, version, header size, header crc, k/m/index ranges,
 * matrix type, unknown flags, payload length limit. Returns 0 and fills *ret, or -EBADMSG
 * (corrupt or not ours), -EPROTONOSUPPORT (a newer format version). Does not check the
 * payload crc: see proto_frag_verify(). */
int proto_frag_hdr_decode(const uint8_t *buf, size_t len, struct proto_frag_hdr *ret);

/* Checks a whole object (header + payload): header valid, object length equals header size
 * plus payload length, payload crc32c matches, and (when expect_uuid is not NULL) the
 * filesystem uuid matches. Returns 0 and fills *ret (may be NULL), or -EBADMSG,
 * -EPROTONOSUPPORT, -EXDEV (another filesystem's object). */
int proto_frag_verify(const uint8_t *obj, size_t len, const uint8_t *expect_uuid,
		      struct proto_frag_hdr *ret);

/* ---------------------------------------------------------------- object keys */

#define PROTO_KEY_MAX 512

/* The object key of one fragment: "<uuid>/<ino 16 hex>/<stripe 16 hex>.<version 16 hex>.<index>"
 * e.g. "0f1e.../0000000000000002/0000000000000000.0000000000000001.3". Written into out
 * (size bytes, NUL-terminated). Returns the length, or -ENAMETOOLONG. */
int proto_frag_key(char *out, size_t size, const uint8_t fs_uuid[16], uint64_t ino,
		   uint64_t stripe, uint64_t version, unsigned index);

/* The key "<uuid>/access-check", an object that never exists: a signed HEAD of it answers 404
 * when the server takes the key it was signed with, 403 when it refuses it. Returns the
 * length, or -ENAMETOOLONG. */
int proto_access_key(char *out, size_t size, const uint8_t fs_uuid[16]);

/* Parses a fragment key back. Returns 0 or -EINVAL. */
int proto_frag_key_parse(const char *key, uint8_t fs_uuid[16], uint64_t *ino, uint64_t *stripe,
			 uint64_t *version, unsigned *index);

/* Validates an object key received from a client: 1..PROTO_KEY_MAX bytes of
 * [A-Za-z0-9._-/], no leading or trailing '/', no empty, "." or ".." component, no NUL or
 * control characters. Returns 0 or -EINVAL. */
int proto_key_validate(const char *key, size_t len);

/* Validates a bucket name (3..63 of [a-z0-9.-], starting and ending alphanumeric). */
int proto_bucket_validate(const char *bucket);

/* ---------------------------------------------------------------- SigV4 (server side) */

#define PROTO_SIGV4_MAX_SKEW_S (15 * 60)
#define PROTO_SIGV4_UNSIGNED "UNSIGNED-PAYLOAD"

/* One HTTP header as received; names are compared case-insensitively. Borrowed strings. */
struct proto_header {
	const char *name;
	const char *value;
};

/* A request as the server saw it. All strings borrowed. */
struct proto_request {
	const char *method;        /* "PUT" */
	const char *path;          /* raw (still percent-encoded) path, e.g. "/bucket/a%20b" */
	const char *query;         /* raw query string without '?', or NULL/"" */
	const struct proto_header *headers;
	size_t n_headers;
};

/* Looks up the secret for an access key id. Returns the secret (borrowed) or NULL. */
typedef const char *(*proto_secret_lookup_fn)(void *ctx, const char *access_key);

/* The parsed Authorization header and the values the signature depends on. */
struct proto_sigv4 {
	char access_key[128];
	char date[9];          /* YYYYMMDD from the credential scope */
	char region[64];
	char service[32];
	char signed_headers[1024];
	char signature[65];    /* lowercase hex */
	char amz_date[17];     /* x-amz-date: YYYYMMDDTHHMMSSZ */
	char payload_hash[65]; /* x-amz-content-sha256 value, or "UNSIGNED-PAYLOAD" */
};

/* Parses the Authorization header ("AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
 * Signature=...") and the x-amz-date / x-amz-content-sha256 headers of req.
 * Returns 0, or -EACCES when there is no Authorization header, -EINVAL when it is malformed. */
int proto_sigv4_parse(const struct proto_request *req, struct proto_sigv4 *ret);

/* Verifies req against its signature.
 *   now_s: the server's clock (seconds since the epoch), for the skew check.
 *   body_sha256_hex: lowercase hex SHA-256 of the body when the server computed one, or NULL.
 *     When the client sent a hex x-amz-content-sha256 and body_sha256_hex is not NULL, they
 *     must match. When the client sent no x-amz-content-sha256, body_sha256_hex is used in the
 *     canonical request (NULL then means the empty body).
 * Returns 0 when valid, else:
 *   -EACCES      no or unknown access key (S3 "AccessDenied" / "InvalidAccessKeyId")
 *   -EINVAL      malformed authorization (S3 "AuthorizationHeaderMalformed")
 *   -ETIME       date outside the skew limit (S3 "RequestTimeTooSkewed")
 *   -EBADMSG     signature mismatch (S3 "SignatureDoesNotMatch")
 *   -EILSEQ      payload hash mismatch (S3 "XAmzContentSHA256Mismatch") */
int proto_sigv4_verify(const struct proto_request *req, int64_t now_s,
		       proto_secret_lookup_fn lookup, void *lookup_ctx,
		       const char *body_sha256_hex);

/* The canonical request of SigV4 (exposed for tests): writes at most size bytes into out.
 * Returns the length, or -ENOBUFS / -EINVAL. */
int proto_sigv4_canonical_request(const struct proto_request *req, const struct proto_sigv4 *sig,
				  char *out, size_t size);

/* ---------------------------------------------------------------- S3 errors */

/* One S3 error (s3err.c): the errno the server names it by, what it answers, and the errno a
 * client reports when it reads the code back. */
struct proto_s3_error {
	int err;              /* positive errno (server side) */
	unsigned status;      /* HTTP status */
	const char *code;     /* S3 error code */
	const char *message;  /* default client-facing message */
	int client_err;       /* positive errno a client reports for the code */
};

/* Errnos for S3 conditions errno has no name for. */
#define PROTO_ENOBUCKET ENXIO          /* NoSuchBucket */
#define PROTO_EAUTHMALFORMED EPROTO    /* AuthorizationHeaderMalformed */
#define PROTO_ENOTIMPL ENOSYS          /* NotImplemented */
#define PROTO_EINCOMPLETE EMSGSIZE     /* IncompleteBody */
#define PROTO_EBADDIGEST EBADE         /* BadDigest: Content-MD5 or x-amz-checksum-* mismatch */
#define PROTO_EINVALDIGEST EBADR       /* InvalidDigest: a digest header that is not valid */
#define PROTO_ENOLENGTH ENODATA        /* MissingContentLength */

/* Response header that carries the S3 error code of every error answer of blockd (a HEAD
 * answer has no body to carry it). */
#define PROTO_ERROR_CODE_HEADER "x-tessera-error-code"
/* Longest error code kept by a client (with NUL). */
#define PROTO_S3_CODE_MAX 64

/* The entry for a (positive or negative) errno; unknown errnos give 500 InternalError. */
const struct proto_s3_error *proto_s3_error_by_errno(int err);

/* The negative errno a client reports for an answer: 0 for 2xx; else from the S3 code when
 * it is known (-EACCES for refused credentials, -ETIME for RequestTimeTooSkewed, -EAGAIN for
 * SlowDown, -ENOSPC, -ENOENT, -ERANGE, -ETIMEDOUT, ...), else from the status alone (404
 * -ENOENT, 403 -EACCES, 507 -ENOSPC, 416 -ERANGE, others -EIO). code may be NULL or "". */
int proto_s3_client_errno(unsigned status, const char *code);

/* Copies the <Code> of an S3 error document (len bytes, not NUL-terminated) into out.
 * Returns its length, -ENOENT when there is none, -EBADMSG when it is not a plain code or
 * does not fit. */
int proto_s3_error_code(const char *doc, size_t len, char *out, size_t size);

/* Writes an S3 error document (<Error><Code>..</Code><Message>..</Message><Resource>..
 * </Resource><RequestId>..</RequestId></Error>) into out, XML-escaped. Returns length or
 * -ENOBUFS. */
int proto_s3_error_xml(char *out, size_t size, const char *code, const char *message,
		       const char *resource, const char *request_id);

/* ---------------------------------------------------------------- HTTP request parsing (http.c) */

/* A Range header against an object of size bytes: returns 1 with the slice in *off and *len, 0 to
 * serve the whole object (no header, or one that is not a single bytes= range, as S3 does),
 * or -ERANGE when unsatisfiable. h may be NULL. */
int proto_http_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len);

/* Finds name in a raw query string and percent-decodes its value into out (size bytes).
 * Returns 1 (found), 0 (absent) or -EINVAL (bad escape, too long). */
int proto_query_get(const char *query, const char *name, char *out, size_t size);

/* Decoder of the aws-chunked body encoding, unsigned variant:
 *     hex-size[;ext]\r\n data \r\n ... 0\r\n [trailer-name:value\r\n]* \r\n
 * Lines are bounded by PROTO_CHUNK_LINE_MAX, trailers by PROTO_CHUNK_MAX_TRAILERS. Zero the
 * struct to start. */
#define PROTO_CHUNK_LINE_MAX 256
#define PROTO_CHUNK_MAX_TRAILERS 8
enum proto_chunk_state { PROTO_CK_SIZE, PROTO_CK_DATA, PROTO_CK_DATA_END, PROTO_CK_TRAILER,
			 PROTO_CK_END };
struct proto_chunked {
	enum proto_chunk_state state;
	uint64_t left;          /* data bytes left in the current chunk */
	char line[PROTO_CHUNK_LINE_MAX];
	size_t line_len;
	unsigned trailers;
	const char *error;      /* after -EINVAL: what was malformed (static text) */
};
/* Decoded payload bytes (n may be 0); a negative return stops the decoder with it. */
typedef int (*proto_chunk_payload_fn)(void *ctx, const char *data, size_t n);
/* One trailer line: name as sent, value without leading blanks (both NUL-terminated, valid
 * for the call); a negative return stops the decoder with it. */
typedef int (*proto_chunk_trailer_fn)(void *ctx, const char *name, const char *value);
/* Feeds n raw body bytes. Returns 0, -EINVAL (malformed: k->error says how; also bytes after
 * the end), or what a callback returned. trailer may be NULL. */
int proto_chunked_feed(struct proto_chunked *k, const char *data, size_t n,
		       proto_chunk_payload_fn payload, proto_chunk_trailer_fn trailer, void *ctx);

/* ---------------------------------------------------------------- ListObjectsV2 answers (s3list.c) */

#define PROTO_LIST_KEY_MAX 1024 /* longest key accepted from a listing */

/* One <Contents> entry: key XML-unescaped. A negative return stops the parse with it. */
typedef int (*proto_list_entry_fn)(void *ctx, const char *key, uint64_t size, int64_t mtime_s);
/* Parses a ListBucketResult document of len bytes (not NUL-terminated): entry() for each
 * <Contents> in order, then next_token (token_size bytes) gets NextContinuationToken when
 * IsTruncated is true, else "". Returns 0, -EBADMSG (not a listing, a field missing, malformed
 * or too long), -ENAMETOOLONG (the token does not fit token_size), or entry()'s error. */
int proto_s3_list_parse(const char *doc, size_t len, proto_list_entry_fn entry, void *ctx,
			char *next_token, size_t token_size);

/* Escapes s for XML text into out. Returns length or -ENOBUFS. */
int proto_xml_escape(char *out, size_t size, const char *s);

/* Percent-decodes a URI path in place semantics into out (size bytes). Returns length or
 * -EINVAL (bad escape, decoded NUL) / -ENOBUFS. */
int proto_uri_decode(char *out, size_t size, const char *in, size_t len);

#endif
