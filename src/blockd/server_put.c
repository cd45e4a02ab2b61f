/*
 * blockd/server_put: receiving an object.
 *
 * bd_begin_put() checks the headers on the first handler call (sizes against the limit,
 * x-amz-content-sha256, Content-MD5, x-amz-checksum-*, x-amz-trailer) and opens the temp
 * file; bd_put_body() streams the body into it, through proto's aws-chunked decoder when the
 * body is in that encoding, keeping running digests; bd_finish_put() checks every digest the
 * client claimed (server.c invariant 5) and the deferred signature (invariant 1), then
 * commits on a job thread (invariant 2). A failure while streaming is answered after the
 * body (drained up to a bound); a body that does not arrive within cfg.body_timeout_s is cut
 * off with RequestTimeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <isa-l/crc.h>

#include "server_int.h"

static const struct {
	const char *header;
	enum bd_cksum algo;
} bd_cksum_headers[] = {
	{ "x-amz-checksum-crc32", BD_CK_CRC32 },
	{ "x-amz-checksum-crc32c", BD_CK_CRC32C },
	{ "x-amz-checksum-sha256", BD_CK_SHA256 },
};

static enum bd_cksum cksum_algo(const char *name)
{
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(bd_cksum_headers); i++)
		if (strcasecmp(name, bd_cksum_headers[i].header) == 0)
			return bd_cksum_headers[i].algo;
	return BD_CK_NONE;
}

/* Base64 of n bytes (n <= 32) into out (at least 48 bytes). */
static void base64_of(const uint8_t *in, size_t n, char out[48])
{
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Base64 of the binary digest whose lowercase hex is given (n bytes). */
static void base64_of_hex(const char *hex, size_t n, char out[48])
{
	uint8_t bin[32];

	for (size_t i = 0; i < n && i < sizeof(bin); i++)
		bin[i] = (uint8_t)(thex_digit(hex[2 * i]) << 4 | thex_digit(hex[2 * i + 1]));
	base64_of(bin, n, out);
}

/* Compares the body's digests with what the client claimed (Content-MD5, a flexible
 * checksum). Returns 0, -PROTO_EINVALDIGEST (not base64 of the right size) or -PROTO_EBADDIGEST. */
static int check_digests(struct bd_req *r)
{
	char mine[48];

	if (r->content_md5[0]) {
		if (strlen(r->content_md5) != 24 || r->content_md5[22] != '=' ||
		    r->content_md5[23] != '=') {
			bd_detail(r, "malformed Content-MD5 '%s'", r->content_md5);
			return -PROTO_EINVALDIGEST;
		}
		if (!r->put.md5_hex[0])
			return -EIO; /* cannot happen: a Content-MD5 always asks for the MD5 */
		base64_of_hex(r->put.md5_hex, 16, mine);
		if (strcmp(mine, r->content_md5) != 0) {
			bd_detail(r, "Content-MD5 '%s' does not match the body's '%s'",
				   r->content_md5, mine);
			return -PROTO_EBADDIGEST;
		}
	}
	if (r->ck_algo == BD_CK_NONE)
		return 0;
	if (!r->ck_value[0]) {
		bd_detail(r, "the checksum announced in x-amz-trailer did not arrive");
		return -PROTO_EBADDIGEST;
	}
	if (r->ck_algo == BD_CK_SHA256) {
		base64_of_hex(r->put.sha256_hex, 32, mine);
	} else {
		uint8_t be[4];
		be_put32(be, r->ck_crc);
		base64_of(be, 4, mine);
	}
	if (strcmp(mine, r->ck_value) != 0) {
		bd_detail(r, "checksum '%s' does not match the body's '%s'", r->ck_value, mine);
		return -PROTO_EBADDIGEST;
	}
	return 0;
}

enum MHD_Result bd_begin_put(struct bd_req *r, struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *sha = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-content-sha256");
	const char *md5 = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-MD5");
	const char *trailer = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-trailer");
	uint64_t len = 0;
	int rr;

	r->decoded_len = UINT64_MAX;
	if (sha && strcmp(sha, BD_STREAMING_UNSIGNED_TRAILER) == 0) {
		/* aws-chunked: the length that counts is the decoded one. */
		const char *dl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							     "x-amz-decoded-content-length");
		r->aws_chunked = true;
		if (!dl)
			return bd_reply_error(r, c, -PROTO_ENOLENGTH, "An aws-chunked upload needs "
								"x-amz-decoded-content-length.");
		rr = tparse_uint(dl, 0, UINT64_MAX, &r->decoded_len);
		if (rr == -EINVAL)
			return bd_reply_error(r, c, -EINVAL, "Invalid x-amz-decoded-content-length.");
		if (rr == -ERANGE || r->decoded_len > r->b->cfg.max_object_size) {
			bd_detail(r, "decoded content-length %s exceeds the limit of %llu bytes",
				   dl, (unsigned long long)r->b->cfg.max_object_size);
			return bd_reply_error(r, c, -EFBIG, NULL);
		}
	} else if (sha && strncmp(sha, "STREAMING-", 10) == 0) {
		return bd_reply_error(r, c, -PROTO_ENOTIMPL, "Only the unsigned aws-chunked encoding "
						       "(STREAMING-UNSIGNED-PAYLOAD-TRAILER) is "
						       "implemented.");
	} else if (cl) {
		rr = tparse_uint(cl, 0, UINT64_MAX, &len);
		if (rr == -EINVAL)
			return bd_reply_error(r, c, -EINVAL, "Invalid Content-Length.");
		if (rr == -ERANGE || len > r->b->cfg.max_object_size) {
			bd_detail(r, "content-length %s exceeds the limit of %llu bytes", cl,
				   (unsigned long long)r->b->cfg.max_object_size);
			return bd_reply_error(r, c, -EFBIG, NULL);
		}
	}
	if (sha && strcmp(sha, PROTO_SIGV4_UNSIGNED) != 0 && strlen(sha) == 64) {
		r->check_sha = true;
		memcpy(r->claimed_sha, sha, 65);
	}
	if (md5) {
		if (strlen(md5) >= sizeof(r->content_md5))
			return bd_reply_error(r, c, -PROTO_EINVALDIGEST, NULL);
		strcpy(r->content_md5, md5);
		if (!r->content_md5[0])
			return bd_reply_error(r, c, -PROTO_EINVALDIGEST, NULL);
	}
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(bd_cksum_headers); i++) {
		const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							    bd_cksum_headers[i].header);
		if (!v)
			continue;
		if (r->ck_algo != BD_CK_NONE || !*v || strlen(v) >= sizeof(r->ck_value))
			return bd_reply_error(r, c, -PROTO_EINVALDIGEST, "Invalid or repeated "
								   "x-amz-checksum header.");
		r->ck_algo = bd_cksum_headers[i].algo;
		strcpy(r->ck_value, v);
	}
	if (trailer) {
		if (!r->aws_chunked)
			return bd_reply_error(r, c, -EINVAL, "x-amz-trailer needs an aws-chunked body.");
		if (r->ck_algo != BD_CK_NONE && cksum_algo(trailer) != BD_CK_NONE)
			return bd_reply_error(r, c, -PROTO_EINVALDIGEST, "A checksum both in a header "
								   "and in the trailer.");
		if (r->ck_algo == BD_CK_NONE)
			r->ck_algo = cksum_algo(trailer); /* others are not verified (doc/blockd.md) */
	}
	/* The ETag is the MD5 (S3), unless the client says it needs no MD5 and sent none to
	 * check: then it is any unique tag, which saves hashing every byte (doc/blockd.md). */
	const char *etag_mode = MHD_lookup_connection_value(c, MHD_HEADER_KIND, BD_ETAG_HEADER);
	bool want_md5 = r->content_md5[0] || !etag_mode || strcmp(etag_mode, "no-md5") != 0;
	rr = bd_put_begin(&r->b->store, r->bucket, r->key,
			  r->aws_chunked ? r->decoded_len : (cl ? len : 0), want_md5,
			  r->check_sha || r->verify_deferred || r->ck_algo == BD_CK_SHA256, &r->put);
	if (rr < 0) {
		bd_detail(r, "cannot create a temp file for '%s/%s': %s", r->bucket, r->key,
			   strerror(-rr));
		return bd_reply_error(r, c, rr, NULL);
	}
	r->put_open = true;
	r->phase = BD_BODY;
	return MHD_YES;
}

/* Payload bytes (after any aws-chunked decoding): size limit, temp file, running CRC. The
 * payload callback of proto_chunked_feed(). */
static int put_payload(void *ctx, const char *data, size_t n)
{
	struct bd_req *r = ctx;
	int rr;

	if (n == 0)
		return 0;
	if (r->put.size + n > r->b->cfg.max_object_size ||
	    (r->decoded_len != UINT64_MAX && r->put.size + n > r->decoded_len)) {
		bd_detail(r, "body exceeds the %s of %llu bytes",
			  r->put.size + n > r->b->cfg.max_object_size ? "limit" :
									 "decoded content-length",
			  (unsigned long long)TESSERA_MIN(r->b->cfg.max_object_size,
							  r->decoded_len));
		return r->put.size + n > r->b->cfg.max_object_size ? -EFBIG : -PROTO_EINCOMPLETE;
	}
	if ((rr = bd_put_write(&r->put, data, n)) < 0) {
		bd_detail(r, "cannot write '%s': %s", r->put.tmp_path, strerror(-rr));
		return rr;
	}
	if (r->ck_algo == BD_CK_CRC32)
		r->ck_crc = crc32_gzip_refl(r->ck_crc, (const unsigned char *)data, n);
	else if (r->ck_algo == BD_CK_CRC32C)
		r->ck_crc = tcrc32c(r->ck_crc, data, n);
	return 0;
}

/* An aws-chunked trailer: the value of the announced checksum is kept, the rest ignored. */
static int put_trailer(void *ctx, const char *name, const char *value)
{
	struct bd_req *r = ctx;

	if (r->ck_algo == BD_CK_NONE || cksum_algo(name) != r->ck_algo)
		return 0;
	if (strlen(value) >= sizeof(r->ck_value))
		return -PROTO_EINVALDIGEST;
	strcpy(r->ck_value, value);
	r->ck_value[strcspn(r->ck_value, " \t")] = '\0';
	return 0;
}

bool bd_put_body(struct bd_req *r, const char *data, size_t n)
{
	int rr;

	r->bytes_in += n;
	if (!r->err && tclock_monotonic_ns() - r->start_ns >
			       (uint64_t)r->b->cfg.body_timeout_s * 1000000000ull) {
		/* A client that trickles its body would hold the connection (and a temp file)
		 * as long as it likes: cut it off. libmicrohttpd sends no answer before the
		 * body has ended, so the connection is closed; the log says RequestTimeout. */
		const struct proto_s3_error *e = proto_s3_error_by_errno(ETIMEDOUT);
		bd_detail(r, "the body did not arrive within %u s (%llu bytes received)",
			  r->b->cfg.body_timeout_s, (unsigned long long)r->bytes_in);
		bd_put_abort(&r->put);
		r->put_open = false;
		r->status = e->status;
		r->s3_code = e->code;
		r->phase = BD_DONE;
		return false;
	}
	if (r->err) {
		/* Drain what the client sends so that the error can be answered; a client that
		 * keeps sending (chunked, no Content-Length) is cut off. */
		r->discarded += n;
		return r->discarded <= r->b->cfg.max_object_size + BD_DISCARD_SLACK;
	}
	rr = r->aws_chunked ? proto_chunked_feed(&r->ck, data, n, put_payload, put_trailer, r)
			    : put_payload(r, data, n);
	if (rr < 0) {
		if (!r->detail[0] && r->ck.error)
			bd_detail(r, "%s", r->ck.error);
		r->err = rr;
		bd_put_abort(&r->put);
		r->put_open = false;
	}
	return true;
}

static int commit_job(struct bd_req *r)
{
	return bd_put_commit(&r->put, r->bucket, r->key);
}

static enum MHD_Result commit_reply(struct bd_req *r, struct MHD_Connection *c)
{
	char etag[BD_ETAG_MAX + 2];
	struct MHD_Response *resp;
	int rr = r->job_result;

	if (rr < 0) {
		bd_detail(r, "cannot store '%s/%s' in '%s': %s", r->bucket, r->key,
			   r->b->store.dirs[r->put.dir].root, strerror(-rr));
		return bd_reply_error(r, c, rr, NULL);
	}
	snprintf(etag, sizeof(etag), "\"%s\"", r->put.etag);
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	if (r->ck_algo != BD_CK_NONE)
		MHD_add_response_header(resp, bd_cksum_headers[r->ck_algo - 1].header,
					r->ck_value);
	return bd_queue(r, c, MHD_HTTP_OK, resp);
}

/* The body arrived: checks it, then commits it on a job thread (answered by commit_reply()). */
enum MHD_Result bd_finish_put(struct bd_req *r, struct MHD_Connection *c)
{
	int rr;

	if (r->err)
		return bd_reply_error(r, c, r->err, NULL);
	if (r->aws_chunked && (r->ck.state != PROTO_CK_END || r->put.size != r->decoded_len)) {
		bd_detail(r, "aws-chunked body ended after %llu of %llu bytes",
			   (unsigned long long)r->put.size, (unsigned long long)r->decoded_len);
		rr = -PROTO_EINCOMPLETE;
		goto fail;
	}
	rr = bd_put_finish(&r->put);
	if (rr < 0) {
		bd_detail(r, "digest failed");
		goto fail;
	}
	if (r->verify_deferred && (rr = bd_authenticate(r, c, r->put.sha256_hex)) < 0)
		goto fail;
	if (r->check_sha && strcasecmp(r->claimed_sha, r->put.sha256_hex) != 0) {
		bd_detail(r, "body does not match x-amz-content-sha256");
		rr = -EILSEQ;
		goto fail;
	}
	if ((rr = check_digests(r)) < 0)
		goto fail;
	r->put_open = false; /* bd_put_commit() removes the temp file when it fails */
	return bd_run_job(r, c, commit_job, commit_reply);
fail:
	bd_put_abort(&r->put);
	r->put_open = false;
	return bd_reply_error(r, c, rr, NULL);
}
