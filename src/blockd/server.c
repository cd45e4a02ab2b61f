/*
 * blockd/server: the HTTP front end of the block server (libmicrohttpd).
 *
 * Turns path-style S3 requests into store calls: PUT/GET/HEAD/DELETE /{bucket}/{key},
 * GET /{bucket}?list-type=2, PUT/HEAD /{bucket}, plus the unauthenticated GET /-/status (JSON)
 * and GET /metrics (Prometheus text). It does not know how objects are laid out on disk
 * (store.c) nor how signatures are computed (proto/sigv4.c); the parsers of what the network
 * sends (Range, query, aws-chunked) are proto's (proto/http.c). This file holds the dispatch,
 * the responses, authentication, the job threads and the lifecycle; server_int.h names the
 * files of the rest.
 *
 * Threads: libmicrohttpd runs a pool of cfg.threads event-loop threads (MHD_USE_EPOLL with
 * MHD_OPTION_THREAD_POOL_SIZE; default one per online CPU), each serving its share of the
 * connections (at most cfg.max_connections + BD_CONN_SLACK in all, each idle-limited by
 * cfg.connection_timeout_s); HTTP/1.1 keep-alive keeps a connection on its thread. Request
 * handling that only reads (GET, HEAD, list, status) and receiving a PUT body run on the
 * event-loop thread. The steps that wait for the disk (a PUT's commit: fdatasync, rename,
 * directory fsync; DELETE) would stall every connection of that thread, so they run on
 * BD_JOB_THREADS job threads instead: the handler suspends its connection
 * (MHD_suspend_connection), queues the request (run_job()), and the job thread resumes the
 * connection when the step is done; libmicrohttpd then calls the handler again, which
 * answers. Job threads never touch a request after resuming its connection. (Creating a
 * bucket, rare, is answered on the first handler call of its PUT and so runs inline.)
 * A request's state (struct bd_req) is created by the URI log callback and freed by the
 * completion callback; between the two it is used by its connection's event-loop thread,
 * or, while the connection is suspended, by the one job thread that runs its step. Shared
 * state is the store (own locks), the job queue (job_lock) and the atomic counters of
 * struct blockd. Stopping: the job threads finish every queued step (resuming its
 * connection) before libmicrohttpd stops, which refuses to stop with a connection still
 * suspended; a step queued after that runs on the event-loop thread itself.
 *
 * Invariants:
 *  1. No request reads or changes an object before its signature verified. The one deferred
 *     case is a PUT without x-amz-content-sha256 whose signature covers the body hash: its
 *     body goes to a temp file (invisible, invariant 1 of store.c) and is verified before
 *     bd_put_commit(); a failure removes the temp file.
 *  2. A 200 for a PUT is sent only after bd_put_commit() returned 0 (durable, store.c 2).
 *  3. Every buffer filled from the network is bounded: the request target (BD_URI_MAX),
 *     headers (libmicrohttpd's per-connection memory pool, BD_MAX_HEADERS), the body
 *     (cfg.max_object_size, checked from Content-Length up front and again while streaming).
 *  4. Every error reaches the client as an S3 XML document built from the one errno table
 *     (proto_s3_error_by_errno()), and the program's log through cfg.on_request.
 *  5. Every digest the client claims (x-amz-content-sha256, Content-MD5, x-amz-checksum-crc32,
 *     -crc32c, -sha256 in a header or an aws-chunked trailer) is checked before
 *     bd_put_commit(); a mismatch removes the temp file (check_digests()).
 *  6. Connections are bounded: libmicrohttpd accepts max_connections + BD_CONN_SLACK (split
 *     between the event-loop threads), and requests on the connections beyond
 *     max_connections get 503 SlowDown and a close. Accepted connections are counted
 *     (/-/status "connections"): the keep-alive proof. A stalled client (no byte for
 *     connection_timeout_s) is cut off by libmicrohttpd; a suspended connection is not timed
 *     out while its step runs (the step is ours, not the client's).
 *  7. Keep-alive: libmicrohttpd 0.9.75 closes the connection after a response queued on the
 *     first handler call of a request; requests without a body are answered on the second
 *     call (BD_WAIT) or later (after a job).
 *
 * Cost notes (doc/blockd.md, "Performance"): GET bodies up to BD_SMALL_GET are copied into
 * the response (headers and body in one send), larger ones go out with sendfile; a PUT
 * carrying "x-tessera-etag: no-md5" and no Content-MD5 skips the MD5 (the ETag is then a
 * unique non-MD5 tag); request ids are a random base plus a counter.
 *
 * Bodies in the aws-chunked encoding (x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-
 * TRAILER, what the AWS SDKs send for streams) are decoded while streaming (chunked_feed());
 * the signed-chunk variants are refused.
 *
 * Compatibility with libcurl's CURLOPT_AWS_SIGV4 (7.88, Debian 12): curl sends no
 * x-amz-content-sha256 of its own. With CURLOPT_POSTFIELDS it signs the body's SHA-256; with
 * CURLOPT_UPLOAD and a read callback it signs the empty-body hash, so the body is in effect
 * an unsigned payload, as with "UNSIGNED-PAYLOAD". Both verify here (the second at header
 * time, the first after the body). A client that sets "x-amz-content-sha256: <hex>" itself
 * gets it signed by curl and checked against the body here.
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

void bd_detail(struct bd_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bd_detail(struct bd_req *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
}

bool bd_method_is(const struct bd_req *r, const char *m)
{
	return strcmp(r->method, m) == 0;
}

static const char *lookup_secret(void *ctx, const char *access_key)
{
	const struct blockd *b = ctx;

	for (unsigned i = 0; i < b->cfg.n_keys; i++)
		if (strcmp(b->cfg.keys[i].access_key, access_key) == 0)
			return b->cfg.keys[i].secret_key;
	return NULL;
}

enum MHD_Result bd_queue(struct bd_req *r, struct MHD_Connection *c, unsigned status,
			     struct MHD_Response *resp)
{
	enum MHD_Result ret;

	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "x-amz-request-id", r->request_id);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_SERVER, "tessera-blockd/" TESSERA_VERSION);
	r->status = status;
	r->phase = BD_DONE;
	ret = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

enum MHD_Result bd_reply_error_hdr(struct bd_req *r, struct MHD_Connection *c, int err,
				       const char *message, const char *hname, const char *hval)
{
	const struct proto_s3_error *e = proto_s3_error_by_errno(err);
	char xml[BD_ERR_XML_MAX];
	struct MHD_Response *resp;
	int n;

	n = proto_s3_error_xml(xml, sizeof(xml), e->code, message ? message : e->message,
			       r->path ? r->path : "/", r->request_id);
	if (n < 0)
		n = proto_s3_error_xml(xml, sizeof(xml), e->code, e->message, NULL, r->request_id);
	if (n < 0)
		return MHD_NO;
	r->s3_code = e->code;
	if (!r->detail[0] && message)
		bd_detail(r, "%s", message);
	r->bytes_out = (uint64_t)n;
	resp = MHD_create_response_from_buffer((size_t)n, xml, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/xml");
	MHD_add_response_header(resp, PROTO_ERROR_CODE_HEADER, e->code);
	if (hname)
		MHD_add_response_header(resp, hname, hval);
	return bd_queue(r, c, e->status, resp);
}

enum MHD_Result bd_reply_error(struct bd_req *r, struct MHD_Connection *c, int err,
				   const char *message)
{
	return bd_reply_error_hdr(r, c, err, message, NULL, NULL);
}

enum MHD_Result bd_reply_empty(struct bd_req *r, struct MHD_Connection *c, unsigned status)
{
	return bd_queue(r, c, status,
		     MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

enum MHD_Result bd_reply_text(struct bd_req *r, struct MHD_Connection *c, struct tstr *d,
				  const char *content_type)
{
	struct MHD_Response *resp;

	if (d->failed) {
		free(d->buf);
		bd_detail(r, "response too large or out of memory");
		return bd_reply_error(r, c, -ENOMEM, NULL);
	}
	r->bytes_out = d->len;
	resp = MHD_create_response_from_buffer(d->len, d->buf ? d->buf : (void *)"",
					       d->buf ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(d->buf);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	return bd_queue(r, c, MHD_HTTP_OK, resp);
}

struct hdr_collect {
	struct proto_header h[BD_MAX_HEADERS];
	size_t n;
	bool overflow;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
				      const char *value)
{
	struct hdr_collect *hc = cls;

	(void)kind;
	if (hc->n == BD_MAX_HEADERS) {
		hc->overflow = true;
		return MHD_NO;
	}
	hc->h[hc->n].name = key;
	hc->h[hc->n].value = value ? value : "";
	hc->n++;
	return MHD_YES;
}

/* Verifies the request's signature; body_sha256_hex as for proto_sigv4_verify().
 * Returns 0 or the negative errno of the S3 error to send. */
int bd_authenticate(struct bd_req *r, struct MHD_Connection *c, const char *body_sha256_hex)
{
	struct hdr_collect hc;
	struct proto_request req;
	int v;

	hc.n = 0;
	hc.overflow = false;
	MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, &hc);
	if (hc.overflow) {
		bd_detail(r, "more than %d headers", BD_MAX_HEADERS);
		return -EINVAL;
	}
	req.method = r->method;
	req.path = r->path;
	req.query = r->query;
	req.headers = hc.h;
	req.n_headers = hc.n;
	if (r->b->cfg.region[0]) {
		struct proto_sigv4 sig;
		if (proto_sigv4_parse(&req, &sig) == 0 && strcmp(sig.region, r->b->cfg.region)) {
			bd_detail(r, "credential scope region '%s' is not '%s'", sig.region,
				   r->b->cfg.region);
			return -PROTO_EAUTHMALFORMED;
		}
	}
	v = proto_sigv4_verify(&req, r->now_s, lookup_secret, r->b, body_sha256_hex);
	switch (v) {
	case 0:
		return 0;
	case -EACCES:
		bd_detail(r, "missing authorization or unknown access key");
		return v;
	case -EINVAL:
		bd_detail(r, "malformed authorization");
		return -PROTO_EAUTHMALFORMED;
	case -ETIME:
		bd_detail(r, "request time too skewed");
		return v;
	case -EBADMSG:
		bd_detail(r, "signature does not match");
		return v;
	case -EILSEQ:
		bd_detail(r, "body does not match x-amz-content-sha256");
		return v;
	default:
		bd_detail(r, "signature verification failed: %s", strerror(-v));
		return v;
	}
}

/* Runs job(r) on a job thread with c suspended; the handler call after the resume answers
 * with reply(r, c) (phase BD_JOB). When the job threads are stopping (or never started),
 * runs both here. Must be called from the handler, on the call that would answer. */
enum MHD_Result bd_run_job(struct bd_req *r, struct MHD_Connection *c, bd_job_fn job,
			       bd_reply_fn reply)
{
	struct blockd *b = r->b;

	r->job = job;
	r->job_reply = reply;
	r->conn = c;
	r->job_next = NULL;
	pthread_mutex_lock(&b->job_lock);
	if (b->job_stopping || b->n_job_threads == 0) {
		pthread_mutex_unlock(&b->job_lock);
		r->job_result = job(r);
		return reply(r, c);
	}
	/* Suspended before it is queued, so that the resume cannot come first. */
	r->phase = BD_JOB;
	MHD_suspend_connection(c);
	if (b->job_tail)
		b->job_tail->job_next = r;
	else
		b->job_head = r;
	b->job_tail = r;
	pthread_cond_signal(&b->job_cond);
	pthread_mutex_unlock(&b->job_lock);
	return MHD_YES;
}

static void *job_thread(void *arg)
{
	struct blockd *b = arg;
	struct bd_req *r;

	pthread_mutex_lock(&b->job_lock);
	for (;;) {
		while (!b->job_head && !b->job_stopping)
			pthread_cond_wait(&b->job_cond, &b->job_lock);
		if (!(r = b->job_head))
			break; /* stopping, and nothing left to run */
		b->job_head = r->job_next;
		if (!b->job_head)
			b->job_tail = NULL;
		pthread_mutex_unlock(&b->job_lock);
		r->job_result = r->job(r);
		MHD_resume_connection(r->conn); /* r belongs to the connection again */
		pthread_mutex_lock(&b->job_lock);
	}
	pthread_mutex_unlock(&b->job_lock);
	return NULL;
}

static int jobs_start(struct blockd *b)
{
	pthread_attr_t attr;
	int r = 0;

	pthread_mutex_init(&b->job_lock, NULL);
	pthread_cond_init(&b->job_cond, NULL);
	b->job_lock_init = true;
	if ((r = pthread_attr_init(&attr)) != 0)
		return -r;
	pthread_attr_setstacksize(&attr, BD_THREAD_STACK);
	while (b->n_job_threads < BD_JOB_THREADS) {
		r = pthread_create(&b->job_threads[b->n_job_threads], &attr, job_thread, b);
		if (r != 0)
			break;
		b->n_job_threads++;
	}
	pthread_attr_destroy(&attr);
	return r ? -r : 0;
}

/* Lets the job threads finish what is queued (each resumes its connection), then joins
 * them; later steps run on the event-loop threads (bd_run_job()). */
static void jobs_stop(struct blockd *b)
{
	if (!b->job_lock_init)
		return;
	pthread_mutex_lock(&b->job_lock);
	b->job_stopping = true;
	pthread_cond_broadcast(&b->job_cond);
	pthread_mutex_unlock(&b->job_lock);
	for (unsigned i = 0; i < b->n_job_threads; i++)
		pthread_join(b->job_threads[i], NULL);
	b->n_job_threads = 0;
}

/* Splits the decoded path "/bucket/key" into r->bucket and r->key. */
static int parse_target(struct bd_req *r)
{
	char dec[BD_URI_MAX + 1];
	const char *slash;
	int n;

	n = proto_uri_decode(dec, sizeof(dec), r->path, strlen(r->path));
	if (n < 0 || dec[0] != '/') {
		bd_detail(r, "invalid request path");
		return -EINVAL;
	}
	slash = strchr(dec + 1, '/');
	size_t blen = slash ? (size_t)(slash - dec - 1) : (size_t)n - 1;
	if (blen >= sizeof(r->bucket)) {
		bd_detail(r, "invalid bucket name");
		return -EINVAL;
	}
	memcpy(r->bucket, dec + 1, blen);
	r->bucket[blen] = '\0';
	if (!slash)
		return 0;
	size_t klen = (size_t)n - blen - 2;
	if (klen > PROTO_KEY_MAX) {
		bd_detail(r, "key of %zu bytes", klen);
		return -ENAMETOOLONG;
	}
	memcpy(r->key, slash + 1, klen);
	r->key[klen] = '\0';
	if (klen > 0 && proto_key_validate(r->key, klen) < 0) {
		bd_detail(r, "invalid object key");
		return -EINVAL;
	}
	return 0;
}

static enum MHD_Result begin_request(struct bd_req *r, struct MHD_Connection *c,
				     const char *method)
{
	bool is_get = false;
	int rr;

	r->phase = BD_DONE;
	r->now_s = (int64_t)time(NULL);
	if (strlen(method) >= sizeof(r->method))
		return bd_reply_error(r, c, -EOPNOTSUPP, NULL);
	strcpy(r->method, method);
	if (r->uri_too_long) {
		bd_detail(r, "request target longer than %d bytes", BD_URI_MAX);
		return bd_reply_error(r, c, -ENAMETOOLONG, "The request URI is too long.");
	}
	r->path = strdup(r->uri);
	if (!r->path)
		return MHD_NO;
	char *q = strchr(r->path, '?');
	r->query = "";
	if (q) {
		*q = '\0';
		r->query = q + 1;
	}
	is_get = bd_method_is(r, "GET") || bd_method_is(r, "HEAD");
	if (is_get && strcmp(r->path, "/-/status") == 0)
		return bd_reply_status(r, c);
	if (is_get && strcmp(r->path, "/metrics") == 0)
		return bd_reply_metrics(r, c);

	/* Over the connection limit (the slack libmicrohttpd still accepts): tell the client to
	 * back off, and close so that the slot frees. */
	if (r->b->connections_open > (int64_t)r->b->cfg.max_connections) {
		r->b->slowdowns++;
		bd_detail(r, "%lld connections open, limit %u", (long long)r->b->connections_open,
			   r->b->cfg.max_connections);
		return bd_reply_error_hdr(r, c, -EAGAIN, NULL, MHD_HTTP_HEADER_CONNECTION, "close");
	}

	/* Authenticate before looking at anything else (invariant 1). */
	rr = bd_authenticate(r, c, NULL);
	if (rr == -EBADMSG && bd_method_is(r, "PUT") &&
	    !MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-content-sha256")) {
		r->verify_deferred = true; /* signed over the body hash: check after the body */
		r->detail[0] = '\0';
	} else if (rr < 0) {
		return bd_reply_error(r, c, rr, NULL);
	}

	if ((rr = parse_target(r)) < 0)
		return bd_reply_error(r, c, rr, rr == -EINVAL ? "Invalid bucket or object key." : NULL);
	if (!r->bucket[0])
		return bd_reply_error(r, c, -PROTO_ENOTIMPL, "Listing buckets is not implemented.");
	if (proto_bucket_validate(r->bucket) < 0) {
		bd_detail(r, "invalid bucket name");
		return bd_reply_error(r, c, -EINVAL, "Invalid bucket name.");
	}
	if (!r->key[0])
		return bd_bucket_request(r, c);
	if (r->verify_deferred && !bd_method_is(r, "PUT"))
		return bd_reply_error(r, c, -EBADMSG, NULL);
	if (is_get)
		return bd_serve_object(r, c);
	if (bd_method_is(r, "DELETE"))
		return bd_delete_object(r, c);
	if (bd_method_is(r, "PUT"))
		return bd_begin_put(r, c);
	return bd_reply_error(r, c, -EOPNOTSUPP, NULL);
}

static enum MHD_Result bd_handler(void *cls, struct MHD_Connection *c, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct bd_req *r = *con_cls;

	(void)cls;
	(void)url;
	(void)version;
	if (!r)
		return MHD_NO;
	switch (r->phase) {
	case BD_NEW:
		if (strcmp(method, "PUT") == 0)
			return begin_request(r, c, method); /* refuse early, before any body */
		r->phase = BD_WAIT;
		return MHD_YES;
	case BD_WAIT:
		if (*upload_data_size > 0) {
			/* A body on GET/HEAD/DELETE means nothing here: drain a little, then cut. */
			r->bytes_in += *upload_data_size;
			*upload_data_size = 0;
			return r->bytes_in <= BD_DISCARD_SLACK ? MHD_YES : MHD_NO;
		}
		return begin_request(r, c, method);
	case BD_BODY:
		if (*upload_data_size > 0) {
			bool ok = bd_put_body(r, upload_data, *upload_data_size);
			*upload_data_size = 0;
			return ok ? MHD_YES : MHD_NO;
		}
		return bd_finish_put(r, c);
	case BD_JOB:
		/* The call after the resume: the job ran. */
		return r->job_reply(r, c);
	case BD_DONE:
		break;
	}
	*upload_data_size = 0;
	return MHD_YES;
}

/* Called by libmicrohttpd with the raw request target, before it decodes anything: the
 * signature covers the path and query exactly as sent. Allocates the request state. */
static void *bd_uri_log(void *cls, const char *uri, struct MHD_Connection *c)
{
	struct blockd *b = cls;
	struct bd_req *r = calloc(1, sizeof(*r));
	size_t len;

	(void)c;
	if (!r)
		return NULL;
	r->b = b;
	r->put.fd = -1;
	r->start_ns = tclock_monotonic_ns();
	/* Unique per process run: a random base drawn at start plus a counter. */
	snprintf(r->request_id, sizeof(r->request_id), "%016llX",
		 (unsigned long long)(b->request_id_base + atomic_fetch_add(&b->request_seq, 1)));
	len = strlen(uri);
	r->uri_too_long = len > BD_URI_MAX;
	r->uri = strndup(uri, TESSERA_MIN(len, (size_t)BD_URI_MAX));
	if (!r->uri) {
		free(r);
		return NULL;
	}
	b->requests++;
	return r;
}

static const char *toe_name(enum MHD_RequestTerminationCode toe)
{
	switch (toe) {
	case MHD_REQUEST_TERMINATED_COMPLETED_OK: return "completed";
	case MHD_REQUEST_TERMINATED_WITH_ERROR: return "error";
	case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED: return "timeout";
	case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN: return "shutdown";
	case MHD_REQUEST_TERMINATED_READ_ERROR: return "read error";
	case MHD_REQUEST_TERMINATED_CLIENT_ABORT: return "client abort";
	}
	return "unknown";
}

/* Counts connections: the proof that keep-alive works is /-/status "connections". */
static void bd_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode toe)
{
	struct blockd *b = cls;

	(void)c;
	(void)socket_context;
	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		b->connections++;
		b->connections_open++;
	} else {
		b->connections_open--;
	}
}

static void bd_completed(void *cls, struct MHD_Connection *c, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct blockd *b = cls;
	struct bd_req *r = *con_cls;
	struct blockd_request_info info;

	(void)c;
	if (!r)
		return;
	if (r->put_open) {
		/* A body that did not arrive complete never becomes visible (invariant 1). */
		bd_put_abort(&r->put);
		r->put_open = false;
	}
	if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK) {
		size_t used = strlen(r->detail);
		if (r->phase == BD_BODY)
			r->status = 0;
		snprintf(r->detail + used, sizeof(r->detail) - used, "%sconnection ended: %s",
			 used ? "; " : "", toe_name(toe));
	}
	if (r->status == 0 || r->status >= 400)
		b->errors++;
	bd_record_stats(b, r);
	if (b->cfg.on_request) {
		info.method = r->method[0] ? r->method : "-";
		info.uri = r->uri;
		info.status = r->status;
		info.s3_code = r->s3_code;
		info.detail = r->detail[0] ? r->detail : NULL;
		info.request_id = r->request_id;
		info.bytes_in = r->bytes_in;
		info.duration_ns = tclock_monotonic_ns() - r->start_ns;
		b->cfg.on_request(b->cfg.on_request_ctx, &info);
	}
	free(r->path);
	free(r->uri);
	free(r);
	*con_cls = NULL;
}

static void bd_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[512];

	(void)cls;
	vsnprintf(line, sizeof(line), fmt, ap);
	line[strcspn(line, "\n")] = '\0';
	tlog_debug("microhttpd: %s", line);
}

/* ---------------------------------------------------------------- lifecycle */

static int listen_socket(const struct blockd_config *cfg, int *ret_fd, uint16_t *ret_port,
			 bool *ret_v6)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, r;

	memset(&ss, 0, sizeof(ss));
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, cfg->listen_addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(cfg->listen_port);
		sl = sizeof(*sin);
	} else if (inet_pton(AF_INET6, cfg->listen_addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(cfg->listen_port);
		sl = sizeof(*sin6);
	} else {
		return -EINVAL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 256) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	sl = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	*ret_port = ntohs(ss.ss_family == AF_INET ? sin->sin_port : sin6->sin6_port);
	*ret_v6 = ss.ss_family == AF_INET6;
	*ret_fd = fd;
	return 0;
}

/* blockd is an outer layer (STYLE.md): a failure to start is logged here, once, with the
 * context only this function has (which directory, which address). */
int blockd_start(const struct blockd_config *cfg, struct blockd **ret)
{
	struct blockd *b;
	const char *bad_dir = NULL;
	bool v6 = false;
	unsigned threads;
	int fd = -1, r;

	if (cfg->n_keys == 0) {
		tlog_error("no credentials configured");
		return -ENOKEY;
	}
	if (cfg->n_dirs == 0 || cfg->n_dirs > BLOCKD_MAX_DIRS || cfg->max_object_size == 0)
		return -EINVAL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->cfg = *cfg;
	if (b->cfg.max_connections == 0)
		b->cfg.max_connections = 512;
	if (b->cfg.connection_timeout_s == 0)
		b->cfg.connection_timeout_s = 60;
	if (b->cfg.body_timeout_s == 0)
		b->cfg.body_timeout_s = 120;
	b->start_ns = tclock_monotonic_ns();
	if (trandom_bytes(&b->request_id_base, sizeof(b->request_id_base)) < 0)
		b->request_id_base = b->start_ns;

	r = bd_store_open(&b->store, b->cfg.data_dirs, b->cfg.n_dirs, &bad_dir);
	if (r < 0) {
		tlog_error("cannot prepare data directory '%s': %s", bad_dir ? bad_dir : "?",
			   strerror(-r));
		OPENSSL_cleanse(b->cfg.keys, sizeof(b->cfg.keys));
		free(b);
		return r;
	}
	r = listen_socket(&b->cfg, &fd, &b->port, &v6);
	if (r < 0) {
		tlog_error("cannot listen on '%s' port %u: %s", b->cfg.listen_addr,
			   b->cfg.listen_port, strerror(-r));
		goto fail;
	}
	threads = b->cfg.threads;
	if (threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		threads = n > 0 ? (unsigned)n : 1;
	}
	threads = TESSERA_MIN(threads, (unsigned)BD_MAX_THREADS);
	if ((r = jobs_start(b)) < 0) {
		tlog_error("cannot start the job threads: %s", strerror(-r));
		close(fd);
		goto fail;
	}
	b->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
					  MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG |
					  (v6 ? MHD_USE_IPv6 : 0),
				  0, NULL, NULL, bd_handler, b,
				  MHD_OPTION_EXTERNAL_LOGGER, bd_mhd_log, b,
				  MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
				  MHD_OPTION_THREAD_POOL_SIZE, threads,
				  MHD_OPTION_CONNECTION_LIMIT,
				  (unsigned int)(b->cfg.max_connections + BD_CONN_SLACK),
				  MHD_OPTION_NOTIFY_CONNECTION, bd_connection, b,
				  MHD_OPTION_CONNECTION_TIMEOUT,
				  (unsigned int)b->cfg.connection_timeout_s,
				  MHD_OPTION_URI_LOG_CALLBACK, bd_uri_log, b,
				  MHD_OPTION_NOTIFY_COMPLETED, bd_completed, b,
				  MHD_OPTION_THREAD_STACK_SIZE, (size_t)BD_THREAD_STACK,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)BD_CONN_MEMORY,
				  MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)BD_CONN_MEMORY_STEP,
				  MHD_OPTION_END);
	if (!b->mhd) {
		r = errno ? -errno : -EIO;
		tlog_error("cannot start the HTTP server: %s", strerror(-r));
		close(fd);
		goto fail;
	}
	if (b->cfg.port_file[0]) {
		char buf[16];
		int n = snprintf(buf, sizeof(buf), "%u\n", (unsigned)b->port);
		r = tfile_write_atomic(b->cfg.port_file, buf, (size_t)n, 0644);
		if (r < 0) {
			tlog_error("cannot write port file '%s': %s", b->cfg.port_file,
				   strerror(-r));
			goto fail;
		}
	}
	*ret = b;
	return 0;
fail:
	blockd_free(b);
	return r;
}

uint16_t blockd_port(const struct blockd *b)
{
	return b->port;
}

void blockd_free(struct blockd *b)
{
	if (!b)
		return;
	/* First the job threads: libmicrohttpd does not stop with a connection suspended. */
	jobs_stop(b);
	if (b->mhd)
		MHD_stop_daemon(b->mhd);
	if (b->job_lock_init) {
		pthread_mutex_destroy(&b->job_lock);
		pthread_cond_destroy(&b->job_cond);
	}
	bd_store_close(&b->store);
	OPENSSL_cleanse(b->cfg.keys, sizeof(b->cfg.keys));
	free(b);
}
