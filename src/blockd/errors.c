/*
 * blockd/errors: the one place where an errno becomes an HTTP status and an S3 error code.
 *
 * Every failure inside blockd travels as a negative errno (store, proto, MHD glue); the front
 * end turns it into a response through bd_error_lookup() only. A few S3 conditions that
 * errno has no name for use the BD_E* aliases of blockd_int.h. Read-only table: thread-safe.
 */
#include "blockd_int.h"

#include <errno.h>

#include "tessera/common.h"

static const struct bd_error errors[] = {
	{ ENOENT, 404, "NoSuchKey", "The specified key does not exist." },
	{ BD_ENOBUCKET, 404, "NoSuchBucket", "The specified bucket does not exist." },
	{ EACCES, 403, "AccessDenied", "Access Denied." },
	{ EBADMSG, 403, "SignatureDoesNotMatch",
	  "The request signature we calculated does not match the signature you provided." },
	{ ETIME, 403, "RequestTimeTooSkewed",
	  "The difference between the request time and the server's time is too large." },
	{ BD_EAUTHMALFORMED, 400, "AuthorizationHeaderMalformed",
	  "The authorization header is malformed." },
	{ EILSEQ, 400, "XAmzContentSHA256Mismatch",
	  "The provided 'x-amz-content-sha256' header does not match what was computed." },
	{ EINVAL, 400, "InvalidArgument", "Invalid argument." },
	{ ENAMETOOLONG, 400, "KeyTooLongError", "Your key is too long." },
	{ EFBIG, 400, "EntityTooLarge",
	  "Your proposed upload exceeds the maximum allowed object size." },
	{ BD_EINCOMPLETE, 400, "IncompleteBody",
	  "You did not provide the number of bytes specified by the Content-Length HTTP header." },
	{ BD_EBADDIGEST, 400, "BadDigest",
	  "The Content-MD5 or checksum you specified did not match what we received." },
	{ BD_EINVALDIGEST, 400, "InvalidDigest",
	  "The Content-MD5 or checksum you specified is not valid." },
	{ BD_ENOLENGTH, 411, "MissingContentLength",
	  "You must provide the Content-Length HTTP header." },
	{ ERANGE, 416, "InvalidRange", "The requested range is not satisfiable." },
	{ EOPNOTSUPP, 405, "MethodNotAllowed",
	  "The specified method is not allowed against this resource." },
	{ BD_ENOTIMPL, 501, "NotImplemented",
	  "A header or operation you provided implies functionality that is not implemented." },
	{ ENOTDIR, 409, "OperationAborted",
	  "The key conflicts with an existing key that is a prefix of it, or the reverse." },
	{ EISDIR, 409, "OperationAborted",
	  "The key conflicts with an existing key that is a prefix of it, or the reverse." },
	{ EEXIST, 409, "OperationAborted",
	  "The key conflicts with an existing key that is a prefix of it, or the reverse." },
	{ ENOSPC, 507, "InsufficientStorage",
	  "The block server has no space left to store this object; reads still work." },
	{ EDQUOT, 507, "InsufficientStorage",
	  "The block server's disk quota is exhausted; reads still work." },
	{ EROFS, 503, "ServiceUnavailable",
	  "The block server's data directory is read-only; reads still work." },
	{ EMFILE, 503, "SlowDown", "Please reduce your request rate." },
	{ ENFILE, 503, "SlowDown", "Please reduce your request rate." },
	{ ENOMEM, 503, "SlowDown", "Please reduce your request rate." },
	{ EAGAIN, 503, "SlowDown", "Please reduce your request rate." },
};

static const struct bd_error internal = { EIO, 500, "InternalError",
					   "We encountered an internal error. Please try again." };

const struct bd_error *bd_error_lookup(int err)
{
	if (err < 0)
		err = -err;
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(errors); i++)
		if (errors[i].err == err)
			return &errors[i];
	return &internal;
}
