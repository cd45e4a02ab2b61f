/*
 * proto/s3err: the one table of S3 errors, read by both ends of the block protocol.
 *
 * The server (blockd) names every failure by a negative errno and turns it into an HTTP
 * status, an S3 error code and a message through proto_s3_error_by_errno(); a few S3
 * conditions that errno has no name for use the PROTO_E* aliases of proto.h. The client
 * (blockclient) reads the code back, from the PROTO_ERROR_CODE_HEADER header that blockd
 * adds to every error answer (HEAD answers have no body) or from the <Code> of the error
 * document that any S3 store sends, and reports the errno of the code's client_err column
 * through proto_s3_client_errno(): several server errnos share one code, and what a client
 * must tell apart is different (a refused signature and an unknown key both mean "this
 * server refuses our credentials"; a clock that is off is something else, and SlowDown is
 * worth retrying). Read-only tables: thread-safe.
 */
#include "tessera/proto.h"

#include <errno.h>
#include <string.h>

#define ABORTED_MSG "The key conflicts with an existing key that is a prefix of it, or the reverse."
#define SLOWDOWN_MSG "Please reduce your request rate."

static const struct proto_s3_error errors[] = {
	{ ENOENT, 404, "NoSuchKey", "The specified key does not exist.", ENOENT },
	{ PROTO_ENOBUCKET, 404, "NoSuchBucket", "The specified bucket does not exist.", ENOENT },
	{ EACCES, 403, "AccessDenied", "Access Denied.", EACCES },
	{ EBADMSG, 403, "SignatureDoesNotMatch",
	  "The request signature we calculated does not match the signature you provided.",
	  EACCES },
	{ ETIME, 403, "RequestTimeTooSkewed",
	  "The difference between the request time and the server's time is too large.", ETIME },
	{ PROTO_EAUTHMALFORMED, 400, "AuthorizationHeaderMalformed",
	  "The authorization header is malformed.", EACCES },
	{ EILSEQ, 400, "XAmzContentSHA256Mismatch",
	  "The provided 'x-amz-content-sha256' header does not match what was computed.", EIO },
	{ EINVAL, 400, "InvalidArgument", "Invalid argument.", EIO },
	{ ENAMETOOLONG, 400, "KeyTooLongError", "Your key is too long.", ENAMETOOLONG },
	{ EFBIG, 400, "EntityTooLarge",
	  "Your proposed upload exceeds the maximum allowed object size.", EFBIG },
	{ PROTO_EINCOMPLETE, 400, "IncompleteBody",
	  "You did not provide the number of bytes specified by the Content-Length HTTP header.",
	  EIO },
	{ ETIMEDOUT, 400, "RequestTimeout",
	  "Your socket connection to the server was not read from or written to within the "
	  "timeout period.", ETIMEDOUT },
	{ PROTO_EBADDIGEST, 400, "BadDigest",
	  "The Content-MD5 or checksum you specified did not match what we received.", EIO },
	{ PROTO_EINVALDIGEST, 400, "InvalidDigest",
	  "The Content-MD5 or checksum you specified is not valid.", EIO },
	{ PROTO_ENOLENGTH, 411, "MissingContentLength",
	  "You must provide the Content-Length HTTP header.", EIO },
	{ ERANGE, 416, "InvalidRange", "The requested range is not satisfiable.", ERANGE },
	{ EOPNOTSUPP, 405, "MethodNotAllowed",
	  "The specified method is not allowed against this resource.", EIO },
	{ PROTO_ENOTIMPL, 501, "NotImplemented",
	  "A header or operation you provided implies functionality that is not implemented.",
	  EIO },
	{ ENOTDIR, 409, "OperationAborted", ABORTED_MSG, EIO },
	{ EISDIR, 409, "OperationAborted", ABORTED_MSG, EIO },
	{ EEXIST, 409, "OperationAborted", ABORTED_MSG, EIO },
	{ ENOSPC, 507, "InsufficientStorage",
	  "The block server has no space left to store this object; reads still work.", ENOSPC },
	{ EDQUOT, 507, "InsufficientStorage",
	  "The block server's disk quota is exhausted; reads still work.", ENOSPC },
	{ EROFS, 503, "ServiceUnavailable",
	  "The block server's data directory is read-only; reads still work.", EIO },
	{ EAGAIN, 503, "SlowDown", SLOWDOWN_MSG, EAGAIN },
	{ EMFILE, 503, "SlowDown", SLOWDOWN_MSG, EAGAIN },
	{ ENFILE, 503, "SlowDown", SLOWDOWN_MSG, EAGAIN },
	{ ENOMEM, 503, "SlowDown", SLOWDOWN_MSG, EAGAIN },
};

static const struct proto_s3_error internal = {
	EIO, 500, "InternalError", "We encountered an internal error. Please try again.", EIO
};

/* Codes other S3 stores send that blockd never does, with the errno a client reports. */
static const struct {
	const char *code;
	int client_err;
} foreign[] = {
	{ "InvalidAccessKeyId", EACCES },
	{ "ExpiredToken", EACCES },
	{ "InvalidToken", EACCES },
	{ "AllAccessDisabled", EACCES },
	{ "QuotaExceeded", ENOSPC },
	{ "RequestTimeTooSkewed", ETIME },
};

const struct proto_s3_error *proto_s3_error_by_errno(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
		if (errors[i].err == err)
			return &errors[i];
	return &internal;
}

int proto_s3_client_errno(unsigned status, const char *code)
{
	if (status >= 200 && status < 300)
		return 0;
	if (code && *code) {
		for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
			if (strcmp(errors[i].code, code) == 0)
				return -errors[i].client_err;
		for (size_t i = 0; i < sizeof(foreign) / sizeof(foreign[0]); i++)
			if (strcmp(foreign[i].code, code) == 0)
				return -foreign[i].client_err;
		if (strcmp(code, internal.code) == 0)
			return -EIO;
	}
	/* No code (a HEAD answer from another store, a proxy's page): the status alone. */
	switch (status) {
	case 404:
		return -ENOENT;
	case 403:
		return -EACCES;
	case 507:
		return -ENOSPC;
	case 416:
		return -ERANGE;
	default:
		return -EIO;
	}
}

int proto_s3_error_code(const char *doc, size_t len, char *out, size_t size)
{
	static const char open[] = "<Code>", close[] = "</Code>";
	const char *a, *b;

	if (size == 0)
		return -ENOBUFS;
	out[0] = '\0';
	if (!doc || !(a = memmem(doc, len, open, sizeof(open) - 1)))
		return -ENOENT;
	a += sizeof(open) - 1;
	b = memmem(a, len - (size_t)(a - doc), close, sizeof(close) - 1);
	if (!b)
		return -EBADMSG;
	size_t n = (size_t)(b - a);
	if (n == 0 || n >= size)
		return -EBADMSG;
	for (size_t i = 0; i < n; i++) {
		char c = a[i];
		/* S3 codes are ASCII letters and digits; anything else is not a code. */
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			return -EBADMSG;
	}
	memcpy(out, a, n);
	out[n] = '\0';
	return (int)n;
}
