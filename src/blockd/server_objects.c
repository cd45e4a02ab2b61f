/*
 * blockd/server_objects: reading and deleting objects, bucket requests and listings.
 *
 * GET and HEAD run on the event-loop thread: small bodies (up to BD_SMALL_GET) are copied into
 * the response, larger ones go out with sendfile; a Range (proto_http_range()) gives 206 or
 * 416. DELETE runs on a job thread (it waits for a directory fsync). ListObjectsV2 pages are
 * built from bd_store_list() with every key XML-escaped.
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

/* Appends s XML-escaped. */
static void tstr_xml(struct tstr *d, const char *s)
{
	size_t n = strlen(s) * 6 + 1;
	char *tmp = malloc(n);

	if (!tmp || proto_xml_escape(tmp, n, s) < 0)
		d->failed = true;
	else
		tstr_puts(d, tmp);
	free(tmp);
}

static void http_date(int64_t t, char out[40])
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(out, 40, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void iso_date(int64_t t, char out[40])
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	strftime(out, 40, "%Y-%m-%dT%H:%M:%S.000Z", &tm);
}

enum MHD_Result bd_serve_object(struct bd_req *r, struct MHD_Connection *c)
{
	struct bd_object o;
	struct MHD_Response *resp;
	char buf[128], date[40];
	uint64_t off = 0, len;
	unsigned status = MHD_HTTP_OK;
	int rr;

	rr = bd_store_get(&r->b->store, r->bucket, r->key, &o);
	if (rr < 0) {
		if (rr != -ENOENT && rr != -PROTO_ENOBUCKET)
			bd_detail(r, "cannot open '%s/%s': %s", r->bucket, r->key, strerror(-rr));
		return bd_reply_error(r, c, rr, NULL);
	}
	len = o.size;
	rr = proto_http_range(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE),
			 o.size, &off, &len);
	if (rr < 0) {
		close(o.fd);
		snprintf(buf, sizeof(buf), "bytes */%llu", (unsigned long long)o.size);
		return bd_reply_error_hdr(r, c, -ERANGE, NULL, MHD_HTTP_HEADER_CONTENT_RANGE, buf);
	}
	if (len == 0) {
		close(o.fd);
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	} else if (len <= BD_SMALL_GET && !bd_method_is(r, "HEAD")) {
		/* Small: copied, so that libmicrohttpd sends headers and body in one call and one
		 * segment instead of a send and a sendfile. */
		char *body = malloc((size_t)len);
		ssize_t got = body ? pread(o.fd, body, (size_t)len, (off_t)off) : -1;
		int err = got < 0 ? errno : EIO;
		close(o.fd);
		if (got != (ssize_t)len) {
			free(body);
			bd_detail(r, "cannot read '%s/%s': %s", r->bucket, r->key,
				   strerror(body ? err : ENOMEM));
			return bd_reply_error(r, c, body ? -err : -ENOMEM, NULL);
		}
		resp = MHD_create_response_from_buffer((size_t)len, body, MHD_RESPMEM_MUST_FREE);
		if (!resp)
			free(body);
		r->bytes_out = len;
	} else {
		/* Zero-copy: libmicrohttpd sends the file with sendfile(2). A large range is
		 * wanted at once: ask the kernel to read it ahead in one go rather than in
		 * 128 KiB readahead steps (smaller ones are within the default readahead). */
		if (len > BD_FADVISE_MIN)
			(void)posix_fadvise(o.fd, (off_t)off, (off_t)len, POSIX_FADV_WILLNEED);
		resp = MHD_create_response_from_fd_at_offset64(len, o.fd, off);
		if (!bd_method_is(r, "HEAD"))
			r->bytes_out = len;
		if (!resp)
			close(o.fd);
	}
	if (!resp)
		return MHD_NO;
	if (rr == 1) {
		status = MHD_HTTP_PARTIAL_CONTENT;
		snprintf(buf, sizeof(buf), "bytes %llu-%llu/%llu", (unsigned long long)off,
			 (unsigned long long)(off + len - 1), (unsigned long long)o.size);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_RANGE, buf);
	}
	snprintf(buf, sizeof(buf), "\"%s\"", o.etag);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, buf);
	http_date(o.mtime_s, date);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_LAST_MODIFIED, date);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCEPT_RANGES, "bytes");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
	return bd_queue(r, c, status, resp);
}

static int delete_job(struct bd_req *r)
{
	return bd_store_delete(&r->b->store, r->bucket, r->key);
}

static enum MHD_Result delete_reply(struct bd_req *r, struct MHD_Connection *c)
{
	int rr = r->job_result;

	if (rr < 0) {
		bd_detail(r, "cannot delete '%s/%s': %s", r->bucket, r->key, strerror(-rr));
		return bd_reply_error(r, c, rr, NULL);
	}
	return bd_reply_empty(r, c, MHD_HTTP_NO_CONTENT);
}

enum MHD_Result bd_delete_object(struct bd_req *r, struct MHD_Connection *c)
{
	return bd_run_job(r, c, delete_job, delete_reply);
}

static enum MHD_Result list_objects(struct bd_req *r, struct MHD_Connection *c)
{
	char lt[8], prefix[PROTO_KEY_MAX + 1] = "", token[PROTO_KEY_MAX + 1] = "";
	char after[PROTO_KEY_MAX + 1] = "", maxk[16] = "", delim[8] = "", date[40];
	struct bd_list_entry *e = NULL;
	struct tstr d;

	tstr_init(&d, 16u << 20);
	unsigned n = 0, max_keys = BD_LIST_MAX_KEYS;
	bool truncated = false;
	uint64_t mk;
	int rr;

	if (proto_query_get(r->query, "list-type", lt, sizeof(lt)) != 1 || strcmp(lt, "2") != 0)
		return bd_reply_error(r, c, -PROTO_ENOTIMPL, "Only ListObjectsV2 (list-type=2) is "
						       "implemented.");
	if (proto_query_get(r->query, "prefix", prefix, sizeof(prefix)) < 0 ||
	    proto_query_get(r->query, "continuation-token", token, sizeof(token)) < 0 ||
	    proto_query_get(r->query, "start-after", after, sizeof(after)) < 0 ||
	    proto_query_get(r->query, "max-keys", maxk, sizeof(maxk)) < 0 ||
	    proto_query_get(r->query, "delimiter", delim, sizeof(delim)) < 0)
		return bd_reply_error(r, c, -EINVAL, "Invalid list parameter.");
	if (delim[0])
		return bd_reply_error(r, c, -PROTO_ENOTIMPL, "Delimiters are not implemented.");
	if (maxk[0]) {
		if (tparse_uint(maxk, 0, UINT64_MAX, &mk) < 0)
			return bd_reply_error(r, c, -EINVAL, "Invalid max-keys.");
		max_keys = (unsigned)TESSERA_MIN(mk, (uint64_t)BD_LIST_MAX_KEYS);
	}
	rr = bd_store_list(&r->b->store, r->bucket, prefix,
			   strcmp(token, after) > 0 ? token : after, max_keys, &e, &n, &truncated);
	if (rr < 0) {
		if (rr != -PROTO_ENOBUCKET)
			bd_detail(r, "cannot list '%s': %s", r->bucket, strerror(-rr));
		return bd_reply_error(r, c, rr, NULL);
	}
	tstr_printf(&d, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult "
			"xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>%s</Name><Prefix>",
		    r->bucket);
	tstr_xml(&d, prefix);
	tstr_printf(&d, "</Prefix><KeyCount>%u</KeyCount><MaxKeys>%u</MaxKeys>"
			"<IsTruncated>%s</IsTruncated>",
		    n, max_keys, truncated ? "true" : "false");
	if (token[0]) {
		tstr_printf(&d, "<ContinuationToken>");
		tstr_xml(&d, token);
		tstr_printf(&d, "</ContinuationToken>");
	}
	if (after[0]) {
		tstr_printf(&d, "<StartAfter>");
		tstr_xml(&d, after);
		tstr_printf(&d, "</StartAfter>");
	}
	for (unsigned i = 0; i < n; i++) {
		iso_date(e[i].mtime_s, date);
		tstr_printf(&d, "<Contents><Key>");
		tstr_xml(&d, e[i].key);
		tstr_printf(&d, "</Key><LastModified>%s</LastModified><Size>%llu</Size>"
				"<StorageClass>STANDARD</StorageClass></Contents>",
			    date, (unsigned long long)e[i].size);
	}
	if (truncated && n > 0) {
		tstr_printf(&d, "<NextContinuationToken>");
		tstr_xml(&d, e[n - 1].key);
		tstr_printf(&d, "</NextContinuationToken>");
	}
	tstr_printf(&d, "</ListBucketResult>\n");
	bd_list_free(e, n);
	return bd_reply_text(r, c, &d, "application/xml");
}

enum MHD_Result bd_bucket_request(struct bd_req *r, struct MHD_Connection *c)
{
	int rr;

	if (bd_method_is(r, "PUT")) {
		if (r->verify_deferred)
			return bd_reply_error(r, c, -EBADMSG, NULL);
		/* On the first handler call (begin_request() for PUT), before any body, so
		 * inline: a rare request, one mkdir and fsync per data directory. */
		rr = bd_store_bucket_create(&r->b->store, r->bucket);
		if (rr < 0) {
			bd_detail(r, "cannot create bucket '%s': %s", r->bucket, strerror(-rr));
			return bd_reply_error(r, c, rr, NULL);
		}
		return bd_reply_empty(r, c, MHD_HTTP_OK);
	}
	if (bd_method_is(r, "HEAD")) {
		rr = bd_store_bucket_exists(&r->b->store, r->bucket);
		return rr < 0 ? bd_reply_error(r, c, rr, NULL) : bd_reply_empty(r, c, MHD_HTTP_OK);
	}
	if (bd_method_is(r, "GET"))
		return list_objects(r, c);
	if (bd_method_is(r, "DELETE") || bd_method_is(r, "POST"))
		return bd_reply_error(r, c, -PROTO_ENOTIMPL, NULL);
	return bd_reply_error(r, c, -EOPNOTSUPP, NULL);
}
