/*
 * blockd/server: the HTTP front end of the block server (libmicrohttpd).
 *
 * Turns path-style S3 requests into store calls: PUT/GET/HEAD/DELETE /{bucket}/{key},
 * GET /{bucket}?list-type=2, PUT/HEAD /{bucket}, plus the unauthenticated GET /-/status (JSON)
 * and GET /metrics (Prometheus text). It does not know how objects are laid out on disk
 * (store.c) nor how signatures are computed (proto/sigv4.c).
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
#include "blockd_int.h"

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

#include <microhttpd.h>
#include <isa-l/crc.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tessera/common.h"

#define BD_URI_MAX 8192
#define BD_MAX_HEADERS 96
#define BD_ERR_XML_MAX 4096
#define BD_LIST_MAX_KEYS 1000
#define BD_DISCARD_SLACK (1u << 20)
#define BD_THREAD_STACK (1u << 20)
#define BD_FADVISE_MIN (128u << 10)
#define BD_SMALL_GET (16u << 10) /* GET bodies up to this size are copied, not sendfile'd */
/* libmicrohttpd's per-connection memory pool (headers, then the read buffer that body data
 * arrives in): the default 32 KiB pool reads a 1 MiB body in ~70 pieces of 14 KiB, each a
 * recv, a handler call and a write(2); 64 KiB takes about 32 (larger pools
 * cost every request more: libmicrohttpd clears the pool between requests). It also
 * bounds the request headers (invariant 3). */
#define BD_CONN_MEMORY (64u << 10)
#define BD_CONN_MEMORY_STEP (16u << 10)

/* Connections beyond cfg.max_connections that libmicrohttpd still accepts, so that they can
 * be told "503 SlowDown" instead of being dropped silently. */
#define BD_CONN_SLACK 16

/* Threads that run the steps waiting for the disk (see the header comment). Group commit
 * (store.c) shares a directory fsync between the commits in progress together, so there are
 * enough of them for the concurrency a cluster sends one server. */
#define BD_JOB_THREADS 64
#define BD_MAX_THREADS 64 /* event-loop threads, cfg.threads */

/* Metrics dimensions: methods, statuses, latency buckets (seconds, upper bounds). */
static const char *const bd_methods[] = { "GET", "HEAD", "PUT", "DELETE", "POST", "other" };
#define BD_N_METHODS 6
static const unsigned bd_statuses[] = { 200, 204, 206, 400, 403, 404, 405, 409, 411, 413,
					416, 431, 500, 501, 503, 507, 0 /* not answered */ };
#define BD_N_STATUSES 18 /* the list plus "other" */
static const double bd_lat_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					0.1,    0.25,  0.5,    1,     2.5,  5,     10 };
#define BD_N_LAT 14

struct blockd {
	struct blockd_config cfg;
	struct bd_store store;
	struct MHD_Daemon *mhd;
	uint16_t port;
	uint64_t start_ns;
	atomic_uint_fast64_t requests;
	uint64_t request_id_base;              /* random, drawn at start */
	atomic_uint_fast64_t request_seq;      /* request ids are base + seq */
	atomic_uint_fast64_t errors;
	atomic_uint_fast64_t connections;      /* TCP connections accepted since start */
	atomic_int_fast64_t connections_open;  /* currently open */
	atomic_uint_fast64_t slowdowns;        /* requests refused with SlowDown */
	atomic_uint_fast64_t bytes_in;         /* request bodies */
	atomic_uint_fast64_t bytes_out;        /* response bodies */
	atomic_uint_fast64_t by_status[BD_N_METHODS][BD_N_STATUSES];
	atomic_uint_fast64_t latency[BD_N_LAT + 1]; /* per bucket, the last is +Inf */
	atomic_uint_fast64_t latency_sum_us;

	/* Job queue (run_job()): FIFO of requests whose connection is suspended. */
	pthread_mutex_t job_lock;
	pthread_cond_t job_cond;
	struct bd_req *job_head, *job_tail;
	bool job_stopping;                     /* set by blockd_free(): drain, then exit */
	bool job_lock_init;
	unsigned n_job_threads;
	pthread_t job_threads[BD_JOB_THREADS];
};

enum bd_cksum { BD_CK_NONE, BD_CK_CRC32, BD_CK_CRC32C, BD_CK_SHA256 };

/* Decoder of the aws-chunked body encoding, unsigned variant:
 *     hex-size[;ext]\r\n data \r\n ... 0\r\n [trailer-name:value\r\n]* \r\n
 * Lines are bounded by BD_CHUNK_LINE_MAX, trailers by BD_CHUNK_MAX_TRAILERS. */
#define BD_CHUNK_LINE_MAX 256
#define BD_CHUNK_MAX_TRAILERS 8
enum bd_chunk_state { BD_CK_SIZE, BD_CK_DATA, BD_CK_DATA_END, BD_CK_TRAILER, BD_CK_END };
struct bd_chunked {
	enum bd_chunk_state state;
	uint64_t left;                  /* data bytes left in the current chunk */
	char line[BD_CHUNK_LINE_MAX];
	size_t line_len;
	unsigned trailers;
};

/* NEW: headers arrived (first handler call). WAIT: a request without a body, answered on the
 * second call: libmicrohttpd closes the connection after a response queued on the first
 * call, which would defeat keep-alive. BODY: receiving a PUT body. JOB: the connection is
 * suspended while a job thread runs r->job; the handler call after the resume answers with
 * r->job_reply. DONE: answered. */
enum bd_phase { BD_NEW, BD_WAIT, BD_BODY, BD_JOB, BD_DONE };

struct bd_req;
typedef int (*bd_job_fn)(struct bd_req *r);
typedef enum MHD_Result (*bd_reply_fn)(struct bd_req *r, struct MHD_Connection *c);

/* One request; used by its connection's event-loop thread, or by one job thread while the
 * connection is suspended. */
struct bd_req {
	struct blockd *b;
	char *uri;            /* the request target as received, at most BD_URI_MAX bytes */
	char *path;           /* raw path (copy of uri up to '?') */
	const char *query;    /* raw query inside path's buffer, or "" */
	bool uri_too_long;
	char method[16];
	enum bd_phase phase;
	int64_t now_s;        /* the server clock when the headers arrived */
	uint64_t start_ns;
	char request_id[17];

	unsigned status;      /* sent, for the log */
	const char *s3_code;
	char detail[320];
	uint64_t bytes_in;    /* body bytes as received (aws-chunked framing included) */
	uint64_t bytes_out;   /* response body bytes queued */

	char bucket[64];
	char key[PROTO_KEY_MAX + 1];

	struct bd_put put;
	bool put_open;
	int err;              /* failure while streaming, answered after the body */
	bool verify_deferred; /* the signature covers the body hash: verify at the end */
	bool check_sha;       /* the client sent a hex x-amz-content-sha256 */
	char claimed_sha[65];
	uint64_t discarded;

	/* Content-MD5 (RFC 1864) as sent, checked against the body's MD5 (BadDigest). */
	char content_md5[40];
	/* A flexible checksum (x-amz-checksum-ALGO in a header, or in the aws-chunked trailer
	 * that x-amz-trailer announces), checked against the body (BadDigest). */
	enum bd_cksum ck_algo;
	char ck_value[96];    /* base64 as sent; "" until the trailer brought it */
	uint32_t ck_crc;      /* running CRC32 / CRC32C of the payload */
	/* aws-chunked body (x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER). */
	bool aws_chunked;
	struct bd_chunked ck;
	uint64_t decoded_len; /* x-amz-decoded-content-length, UINT64_MAX when absent */

	/* A step run on a job thread (run_job()). */
	struct MHD_Connection *conn; /* suspended, resumed by the job thread */
	bd_job_fn job;
	bd_reply_fn job_reply;
	int job_result;
	struct bd_req *job_next;      /* in the job queue, under job_lock */
};

/* ---------------------------------------------------------------- a bounded growable string */

struct dstr {
	char *buf;
	size_t len, cap, max;
	bool failed;
};

static void dstr_printf(struct dstr *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dstr_printf(struct dstr *d, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (d->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(d->buf ? d->buf + d->len : NULL, d->buf ? d->cap - d->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			d->failed = true;
			return;
		}
		if (d->buf && d->len + (size_t)n < d->cap) {
			d->len += (size_t)n;
			return;
		}
		size_t ncap = d->cap ? d->cap * 2 : 4096;
		while (ncap < d->len + (size_t)n + 1)
			ncap *= 2;
		if (ncap > d->max) {
			d->failed = true;
			return;
		}
		char *nb = realloc(d->buf, ncap);
		if (!nb) {
			d->failed = true;
			return;
		}
		d->buf = nb;
		d->cap = ncap;
	}
}

static void dstr_xml(struct dstr *d, const char *s)
{
	size_t n = strlen(s) * 6 + 1;
	char *tmp = malloc(n);

	if (!tmp || proto_xml_escape(tmp, n, s) < 0)
		d->failed = true;
	else
		dstr_printf(d, "%s", tmp);
	free(tmp);
}

/* JSON string or Prometheus label value body (same escapes for what paths contain). */
static void dstr_quoted(struct dstr *d, const char *s)
{
	dstr_printf(d, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			dstr_printf(d, "\\%c", c);
		else if (c == '\n')
			dstr_printf(d, "\\n");
		else if (c < 0x20)
			dstr_printf(d, "\\u%04x", c);
		else
			dstr_printf(d, "%c", c);
	}
	dstr_printf(d, "\"");
}

/* ---------------------------------------------------------------- small helpers */

static void set_detail(struct bd_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_detail(struct bd_req *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
	va_end(ap);
}

static bool method_is(const struct bd_req *r, const char *m)
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

/* Strict unsigned decimal. */
static int parse_u64(const char *s, uint64_t *ret)
{
	uint64_t v = 0;

	if (!s || !*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*ret = v;
	return 0;
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

/* Finds name in a raw query string and percent-decodes its value into out.
 * Returns 1 (found), 0 (absent) or -EINVAL. */
static int query_get(const char *query, const char *name, char *out, size_t size)
{
	char dname[64];

	for (const char *p = query; p && *p;) {
		size_t seg = strcspn(p, "&");
		const char *eq = memchr(p, '=', seg);
		size_t nlen = eq ? (size_t)(eq - p) : seg;
		int n = proto_uri_decode(dname, sizeof(dname), p, nlen);

		if (n >= 0 && strcmp(dname, name) == 0) {
			const char *v = eq ? eq + 1 : p + seg;
			size_t vlen = eq ? seg - nlen - 1 : 0;
			return proto_uri_decode(out, size, v, vlen) < 0 ? -EINVAL : 1;
		}
		p += seg;
		if (*p == '&')
			p++;
	}
	return 0;
}

/* Range: returns 1 and the slice, 0 to serve the whole object (no or unusable header), or
 * -ERANGE when unsatisfiable. Multiple ranges are not supported and served whole, as S3 does. */
static int parse_range(const char *h, uint64_t size, uint64_t *off, uint64_t *len)
{
	char a[24], b[24];
	const char *dash;
	uint64_t x, y;

	if (!h)
		return 0;
	while (*h == ' ')
		h++;
	if (strncasecmp(h, "bytes=", 6) != 0 || strchr(h, ','))
		return 0;
	h += 6;
	dash = strchr(h, '-');
	if (!dash || (size_t)(dash - h) >= sizeof(a) || strlen(dash + 1) >= sizeof(b))
		return 0;
	memcpy(a, h, (size_t)(dash - h));
	a[dash - h] = '\0';
	strcpy(b, dash + 1);
	for (char *e = b + strlen(b); e > b && (e[-1] == ' ' || e[-1] == '\t');)
		*--e = '\0';
	if (!a[0]) { /* suffix: the last y bytes */
		if (parse_u64(b, &y) < 0)
			return 0;
		if (y == 0 || size == 0)
			return -ERANGE;
		*len = TESSERA_MIN(y, size);
		*off = size - *len;
		return 1;
	}
	int ra = parse_u64(a, &x);
	if (ra == -EINVAL)
		return 0;
	if (ra == -ERANGE || x >= size)
		return -ERANGE;
	if (!b[0]) {
		*off = x;
		*len = size - x;
		return 1;
	}
	int rb = parse_u64(b, &y);
	if (rb == -EINVAL || (rb == 0 && y < x))
		return 0;
	if (rb == -ERANGE || y >= size)
		y = size - 1;
	*off = x;
	*len = y - x + 1;
	return 1;
}

/* ---------------------------------------------------------------- responses */

static enum MHD_Result queue(struct bd_req *r, struct MHD_Connection *c, unsigned status,
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

static enum MHD_Result reply_error_hdr(struct bd_req *r, struct MHD_Connection *c, int err,
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
		set_detail(r, "%s", message);
	r->bytes_out = (uint64_t)n;
	resp = MHD_create_response_from_buffer((size_t)n, xml, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/xml");
	MHD_add_response_header(resp, PROTO_ERROR_CODE_HEADER, e->code);
	if (hname)
		MHD_add_response_header(resp, hname, hval);
	return queue(r, c, e->status, resp);
}

static enum MHD_Result reply_error(struct bd_req *r, struct MHD_Connection *c, int err,
				   const char *message)
{
	return reply_error_hdr(r, c, err, message, NULL, NULL);
}

static enum MHD_Result reply_empty(struct bd_req *r, struct MHD_Connection *c, unsigned status)
{
	return queue(r, c, status,
		     MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT));
}

static enum MHD_Result reply_text(struct bd_req *r, struct MHD_Connection *c, struct dstr *d,
				  const char *content_type)
{
	struct MHD_Response *resp;

	if (d->failed) {
		free(d->buf);
		set_detail(r, "response too large or out of memory");
		return reply_error(r, c, -ENOMEM, NULL);
	}
	r->bytes_out = d->len;
	resp = MHD_create_response_from_buffer(d->len, d->buf ? d->buf : (void *)"",
					       d->buf ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		free(d->buf);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
	return queue(r, c, MHD_HTTP_OK, resp);
}

/* ---------------------------------------------------------------- status and metrics */

struct dir_usage {
	uint64_t capacity, used, free;
};

static void dir_usage(const struct bd_dir *d, struct dir_usage *u)
{
	struct statvfs sv;

	memset(u, 0, sizeof(*u));
	if (statvfs(d->root, &sv) < 0)
		return;
	u->capacity = (uint64_t)sv.f_blocks * sv.f_frsize;
	u->free = (uint64_t)sv.f_bavail * sv.f_frsize;
	u->used = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
}

static enum MHD_Result reply_status(struct bd_req *r, struct MHD_Connection *c)
{
	struct blockd *b = r->b;
	struct dstr d = { .max = 1u << 20 };
	uint64_t stored = 0;

	dstr_printf(&d, "{\"version\":\"%s\",\"uptime_s\":%llu,\"dirs\":[", TESSERA_VERSION,
		    (unsigned long long)((tclock_monotonic_ns() - b->start_ns) / 1000000000ull));
	for (unsigned i = 0; i < b->store.n_dirs; i++) {
		struct dir_usage u;
		dir_usage(&b->store.dirs[i], &u);
		dstr_printf(&d, "%s{\"path\":", i ? "," : "");
		dstr_quoted(&d, b->store.dirs[i].root);
		dstr_printf(&d, ",\"capacity\":%llu,\"used\":%llu,\"free\":%llu,\"objects\":%lld,"
				"\"bytes_stored\":%lld}",
			    (unsigned long long)u.capacity, (unsigned long long)u.used,
			    (unsigned long long)u.free, (long long)b->store.dirs[i].n_objects,
			    (long long)b->store.dirs[i].n_bytes);
		stored += (uint64_t)b->store.dirs[i].n_bytes;
	}
	dstr_printf(&d, "],\"objects\":%lld,\"bytes_stored\":%llu,\"requests\":%llu,"
			"\"errors\":%llu,\"slowdowns\":%llu,\"connections\":%llu,"
			"\"connections_open\":%lld,\"bytes_in\":%llu,\"bytes_out\":%llu,"
			"\"dir_fsyncs\":%llu,\"dir_syncs_wanted\":%llu,"
			"\"max_connections\":%u,\"max_object_size\":%llu}\n",
		    (long long)b->store.objects, (unsigned long long)stored,
		    (unsigned long long)b->requests, (unsigned long long)b->errors,
		    (unsigned long long)b->slowdowns, (unsigned long long)b->connections,
		    (long long)b->connections_open, (unsigned long long)b->bytes_in,
		    (unsigned long long)b->bytes_out, (unsigned long long)b->store.dir_fsyncs,
		    (unsigned long long)b->store.dir_syncs_wanted, b->cfg.max_connections,
		    (unsigned long long)b->cfg.max_object_size);
	return reply_text(r, c, &d, "application/json");
}

static enum MHD_Result reply_metrics(struct bd_req *r, struct MHD_Connection *c)
{
	struct blockd *b = r->b;
	struct dstr d = { .max = 1u << 20 };
	static const char *const gauges[] = { "capacity_bytes", "used_bytes", "free_bytes",
					      "objects", "stored_bytes" };
	uint64_t cum = 0;

	dstr_printf(&d, "# HELP tessera_blockd_requests_total Requests by method and HTTP status "
			"(status 0: not answered).\n"
			"# TYPE tessera_blockd_requests_total counter\n");
	for (unsigned m = 0; m < BD_N_METHODS; m++) {
		for (unsigned st = 0; st < BD_N_STATUSES; st++) {
			uint64_t v = b->by_status[m][st];
			char code[16] = "other";
			if (!v)
				continue;
			if (st < BD_N_STATUSES - 1)
				snprintf(code, sizeof(code), "%u", bd_statuses[st]);
			dstr_printf(&d, "tessera_blockd_requests_total{method=\"%s\",status=\"%s\"} "
					"%llu\n", bd_methods[m], code, (unsigned long long)v);
		}
	}
	dstr_printf(&d,
		    "# HELP tessera_blockd_errors_total Requests answered with an error or aborted.\n"
		    "# TYPE tessera_blockd_errors_total counter\n"
		    "tessera_blockd_errors_total %llu\n"
		    "# HELP tessera_blockd_slowdowns_total Requests refused with SlowDown.\n"
		    "# TYPE tessera_blockd_slowdowns_total counter\n"
		    "tessera_blockd_slowdowns_total %llu\n"
		    "# HELP tessera_blockd_connections_total TCP connections accepted.\n"
		    "# TYPE tessera_blockd_connections_total counter\n"
		    "tessera_blockd_connections_total %llu\n"
		    "# HELP tessera_blockd_connections_open TCP connections open.\n"
		    "# TYPE tessera_blockd_connections_open gauge\n"
		    "tessera_blockd_connections_open %lld\n"
		    "# HELP tessera_blockd_received_bytes_total Request body bytes received.\n"
		    "# TYPE tessera_blockd_received_bytes_total counter\n"
		    "tessera_blockd_received_bytes_total %llu\n"
		    "# HELP tessera_blockd_sent_bytes_total Response body bytes sent.\n"
		    "# TYPE tessera_blockd_sent_bytes_total counter\n"
		    "tessera_blockd_sent_bytes_total %llu\n"
		    "# HELP tessera_blockd_dir_fsyncs_total fsync(2) calls on directories.\n"
		    "# TYPE tessera_blockd_dir_fsyncs_total counter\n"
		    "tessera_blockd_dir_fsyncs_total %llu\n"
		    "# HELP tessera_blockd_dir_sync_requests_total Directory changes (renames, "
		    "unlinks) that waited for a directory fsync; group commit shares one fsync "
		    "between several.\n"
		    "# TYPE tessera_blockd_dir_sync_requests_total counter\n"
		    "tessera_blockd_dir_sync_requests_total %llu\n"
		    "# HELP tessera_blockd_objects Objects stored.\n"
		    "# TYPE tessera_blockd_objects gauge\n"
		    "tessera_blockd_objects %lld\n"
		    "# HELP tessera_blockd_uptime_seconds Seconds since start.\n"
		    "# TYPE tessera_blockd_uptime_seconds gauge\n"
		    "tessera_blockd_uptime_seconds %llu\n"
		    "# HELP tessera_blockd_request_duration_seconds From the request line to the "
		    "end of the response.\n"
		    "# TYPE tessera_blockd_request_duration_seconds histogram\n",
		    (unsigned long long)b->errors, (unsigned long long)b->slowdowns,
		    (unsigned long long)b->connections, (long long)b->connections_open,
		    (unsigned long long)b->bytes_in, (unsigned long long)b->bytes_out,
		    (unsigned long long)b->store.dir_fsyncs,
		    (unsigned long long)b->store.dir_syncs_wanted, (long long)b->store.objects,
		    (unsigned long long)((tclock_monotonic_ns() - b->start_ns) / 1000000000ull));
	for (unsigned i = 0; i <= BD_N_LAT; i++) {
		char le[32] = "+Inf";
		cum += b->latency[i];
		if (i < BD_N_LAT)
			snprintf(le, sizeof(le), "%g", bd_lat_bounds[i]);
		dstr_printf(&d, "tessera_blockd_request_duration_seconds_bucket{le=\"%s\"} %llu\n",
			    le, (unsigned long long)cum);
	}
	dstr_printf(&d, "tessera_blockd_request_duration_seconds_sum %.6f\n"
			"tessera_blockd_request_duration_seconds_count %llu\n",
		    (double)b->latency_sum_us / 1e6, (unsigned long long)cum);
	for (unsigned k = 0; k < TESSERA_ARRAY_SIZE(gauges); k++) {
		dstr_printf(&d, "# HELP tessera_blockd_dir_%s Per data directory: %s.\n"
				"# TYPE tessera_blockd_dir_%s gauge\n", gauges[k], gauges[k], gauges[k]);
		for (unsigned i = 0; i < b->store.n_dirs; i++) {
			struct dir_usage u;
			int64_t v;
			dir_usage(&b->store.dirs[i], &u);
			switch (k) {
			case 0: v = (int64_t)u.capacity; break;
			case 1: v = (int64_t)u.used; break;
			case 2: v = (int64_t)u.free; break;
			case 3: v = b->store.dirs[i].n_objects; break;
			default: v = b->store.dirs[i].n_bytes; break;
			}
			dstr_printf(&d, "tessera_blockd_dir_%s{path=", gauges[k]);
			dstr_quoted(&d, b->store.dirs[i].root);
			dstr_printf(&d, "} %lld\n", (long long)v);
		}
	}
	return reply_text(r, c, &d, "text/plain; version=0.0.4");
}

/* ---------------------------------------------------------------- authentication */

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
static int authenticate(struct bd_req *r, struct MHD_Connection *c, const char *body_sha256_hex)
{
	struct hdr_collect hc;
	struct proto_request req;
	int v;

	hc.n = 0;
	hc.overflow = false;
	MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, &hc);
	if (hc.overflow) {
		set_detail(r, "more than %d headers", BD_MAX_HEADERS);
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
			set_detail(r, "credential scope region '%s' is not '%s'", sig.region,
				   r->b->cfg.region);
			return -PROTO_EAUTHMALFORMED;
		}
	}
	v = proto_sigv4_verify(&req, r->now_s, lookup_secret, r->b, body_sha256_hex);
	switch (v) {
	case 0:
		return 0;
	case -EACCES:
		set_detail(r, "missing authorization or unknown access key");
		return v;
	case -EINVAL:
		set_detail(r, "malformed authorization");
		return -PROTO_EAUTHMALFORMED;
	case -ETIME:
		set_detail(r, "request time too skewed");
		return v;
	case -EBADMSG:
		set_detail(r, "signature does not match");
		return v;
	case -EILSEQ:
		set_detail(r, "body does not match x-amz-content-sha256");
		return v;
	default:
		set_detail(r, "signature verification failed: %s", strerror(-v));
		return v;
	}
}

/* ---------------------------------------------------------------- jobs */

/* Runs job(r) on a job thread with c suspended; the handler call after the resume answers
 * with reply(r, c) (phase BD_JOB). When the job threads are stopping (or never started),
 * runs both here. Must be called from the handler, on the call that would answer. */
static enum MHD_Result run_job(struct bd_req *r, struct MHD_Connection *c, bd_job_fn job,
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
 * them; later steps run on the event-loop threads (run_job()). */
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

/* ---------------------------------------------------------------- objects */

static enum MHD_Result serve_object(struct bd_req *r, struct MHD_Connection *c)
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
			set_detail(r, "cannot open '%s/%s': %s", r->bucket, r->key, strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	len = o.size;
	rr = parse_range(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_RANGE),
			 o.size, &off, &len);
	if (rr < 0) {
		close(o.fd);
		snprintf(buf, sizeof(buf), "bytes */%llu", (unsigned long long)o.size);
		return reply_error_hdr(r, c, -ERANGE, NULL, MHD_HTTP_HEADER_CONTENT_RANGE, buf);
	}
	if (len == 0) {
		close(o.fd);
		resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	} else if (len <= BD_SMALL_GET && !method_is(r, "HEAD")) {
		/* Small: copied, so that libmicrohttpd sends headers and body in one call and one
		 * segment instead of a send and a sendfile. */
		char *body = malloc((size_t)len);
		ssize_t got = body ? pread(o.fd, body, (size_t)len, (off_t)off) : -1;
		int err = got < 0 ? errno : EIO;
		close(o.fd);
		if (got != (ssize_t)len) {
			free(body);
			set_detail(r, "cannot read '%s/%s': %s", r->bucket, r->key,
				   strerror(body ? err : ENOMEM));
			return reply_error(r, c, body ? -err : -ENOMEM, NULL);
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
		if (!method_is(r, "HEAD"))
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
	return queue(r, c, status, resp);
}

static int delete_job(struct bd_req *r)
{
	return bd_store_delete(&r->b->store, r->bucket, r->key);
}

static enum MHD_Result delete_reply(struct bd_req *r, struct MHD_Connection *c)
{
	int rr = r->job_result;

	if (rr < 0) {
		set_detail(r, "cannot delete '%s/%s': %s", r->bucket, r->key, strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	return reply_empty(r, c, MHD_HTTP_NO_CONTENT);
}

/* ---------------------------------------------------------------- PUT: digests */

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

static int hex_nibble(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
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
		bin[i] = (uint8_t)(hex_nibble(hex[2 * i]) << 4 | hex_nibble(hex[2 * i + 1]));
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
			set_detail(r, "malformed Content-MD5 '%s'", r->content_md5);
			return -PROTO_EINVALDIGEST;
		}
		if (!r->put.md5_hex[0])
			return -EIO; /* cannot happen: a Content-MD5 always asks for the MD5 */
		base64_of_hex(r->put.md5_hex, 16, mine);
		if (strcmp(mine, r->content_md5) != 0) {
			set_detail(r, "Content-MD5 '%s' does not match the body's '%s'",
				   r->content_md5, mine);
			return -PROTO_EBADDIGEST;
		}
	}
	if (r->ck_algo == BD_CK_NONE)
		return 0;
	if (!r->ck_value[0]) {
		set_detail(r, "the checksum announced in x-amz-trailer did not arrive");
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
		set_detail(r, "checksum '%s' does not match the body's '%s'", r->ck_value, mine);
		return -PROTO_EBADDIGEST;
	}
	return 0;
}

/* ---------------------------------------------------------------- PUT: the body */

static enum MHD_Result begin_put(struct bd_req *r, struct MHD_Connection *c)
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
			return reply_error(r, c, -PROTO_ENOLENGTH, "An aws-chunked upload needs "
								"x-amz-decoded-content-length.");
		rr = parse_u64(dl, &r->decoded_len);
		if (rr == -EINVAL)
			return reply_error(r, c, -EINVAL, "Invalid x-amz-decoded-content-length.");
		if (rr == -ERANGE || r->decoded_len > r->b->cfg.max_object_size) {
			set_detail(r, "decoded content-length %s exceeds the limit of %llu bytes",
				   dl, (unsigned long long)r->b->cfg.max_object_size);
			return reply_error(r, c, -EFBIG, NULL);
		}
	} else if (sha && strncmp(sha, "STREAMING-", 10) == 0) {
		return reply_error(r, c, -PROTO_ENOTIMPL, "Only the unsigned aws-chunked encoding "
						       "(STREAMING-UNSIGNED-PAYLOAD-TRAILER) is "
						       "implemented.");
	} else if (cl) {
		rr = parse_u64(cl, &len);
		if (rr == -EINVAL)
			return reply_error(r, c, -EINVAL, "Invalid Content-Length.");
		if (rr == -ERANGE || len > r->b->cfg.max_object_size) {
			set_detail(r, "content-length %s exceeds the limit of %llu bytes", cl,
				   (unsigned long long)r->b->cfg.max_object_size);
			return reply_error(r, c, -EFBIG, NULL);
		}
	}
	if (sha && strcmp(sha, PROTO_SIGV4_UNSIGNED) != 0 && strlen(sha) == 64) {
		r->check_sha = true;
		memcpy(r->claimed_sha, sha, 65);
	}
	if (md5) {
		if (strlen(md5) >= sizeof(r->content_md5))
			return reply_error(r, c, -PROTO_EINVALDIGEST, NULL);
		strcpy(r->content_md5, md5);
		if (!r->content_md5[0])
			return reply_error(r, c, -PROTO_EINVALDIGEST, NULL);
	}
	for (size_t i = 0; i < TESSERA_ARRAY_SIZE(bd_cksum_headers); i++) {
		const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
							    bd_cksum_headers[i].header);
		if (!v)
			continue;
		if (r->ck_algo != BD_CK_NONE || !*v || strlen(v) >= sizeof(r->ck_value))
			return reply_error(r, c, -PROTO_EINVALDIGEST, "Invalid or repeated "
								   "x-amz-checksum header.");
		r->ck_algo = bd_cksum_headers[i].algo;
		strcpy(r->ck_value, v);
	}
	if (trailer) {
		if (!r->aws_chunked)
			return reply_error(r, c, -EINVAL, "x-amz-trailer needs an aws-chunked body.");
		if (r->ck_algo != BD_CK_NONE && cksum_algo(trailer) != BD_CK_NONE)
			return reply_error(r, c, -PROTO_EINVALDIGEST, "A checksum both in a header "
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
		set_detail(r, "cannot create a temp file for '%s/%s': %s", r->bucket, r->key,
			   strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	r->put_open = true;
	r->phase = BD_BODY;
	return MHD_YES;
}

/* Payload bytes (after any aws-chunked decoding): size limit, temp file, running CRC. */
static int put_payload(struct bd_req *r, const char *data, size_t n)
{
	int rr;

	if (n == 0)
		return 0;
	if (r->put.size + n > r->b->cfg.max_object_size ||
	    (r->decoded_len != UINT64_MAX && r->put.size + n > r->decoded_len)) {
		set_detail(r, "body exceeds the %s of %llu bytes",
			   r->put.size + n > r->b->cfg.max_object_size ? "limit" :
									  "decoded content-length",
			   (unsigned long long)TESSERA_MIN(r->b->cfg.max_object_size,
							   r->decoded_len));
		return r->put.size + n > r->b->cfg.max_object_size ? -EFBIG : -PROTO_EINCOMPLETE;
	}
	if ((rr = bd_put_write(&r->put, data, n)) < 0) {
		set_detail(r, "cannot write '%s': %s", r->put.tmp_path, strerror(-rr));
		return rr;
	}
	if (r->ck_algo == BD_CK_CRC32)
		r->ck_crc = crc32_gzip_refl(r->ck_crc, (const unsigned char *)data, n);
	else if (r->ck_algo == BD_CK_CRC32C)
		r->ck_crc = tcrc32c(r->ck_crc, data, n);
	return 0;
}

/* One complete line of the chunk framing (without CRLF). */
static int chunk_line(struct bd_req *r, char *line)
{
	struct bd_chunked *k = &r->ck;
	uint64_t size = 0;
	char *colon;
	int d;

	switch (k->state) {
	case BD_CK_SIZE:
		line[strcspn(line, ";")] = '\0'; /* chunk extensions carry nothing we use */
		if (!line[0] || strlen(line) > 15)
			return -EINVAL;
		for (char *p = line; *p; p++) {
			if ((d = hex_nibble(*p)) < 0)
				return -EINVAL;
			size = size << 4 | (uint64_t)d;
		}
		k->left = size;
		k->state = size ? BD_CK_DATA : BD_CK_TRAILER;
		return 0;
	case BD_CK_DATA_END:
		if (line[0])
			return -EINVAL;
		k->state = BD_CK_SIZE;
		return 0;
	case BD_CK_TRAILER:
		if (!line[0]) {
			k->state = BD_CK_END;
			return 0;
		}
		if (++k->trailers > BD_CHUNK_MAX_TRAILERS || !(colon = strchr(line, ':')))
			return -EINVAL;
		*colon = '\0';
		if (r->ck_algo != BD_CK_NONE && cksum_algo(line) == r->ck_algo) {
			const char *v = colon + 1;
			while (*v == ' ')
				v++;
			if (strlen(v) >= sizeof(r->ck_value))
				return -PROTO_EINVALDIGEST;
			strcpy(r->ck_value, v);
			r->ck_value[strcspn(r->ck_value, " \t")] = '\0';
		}
		return 0;
	default:
		return -EINVAL;
	}
}

/* Feeds raw aws-chunked bytes; payload goes to put_payload(). Returns 0 or -errno. */
static int chunked_feed(struct bd_req *r, const char *data, size_t n)
{
	struct bd_chunked *k = &r->ck;
	int rr;

	while (n > 0) {
		if (k->state == BD_CK_END) {
			set_detail(r, "bytes after the end of the aws-chunked body");
			return -EINVAL;
		}
		if (k->state == BD_CK_DATA) {
			size_t take = (size_t)TESSERA_MIN((uint64_t)n, k->left);
			if ((rr = put_payload(r, data, take)) < 0)
				return rr;
			data += take;
			n -= take;
			k->left -= take;
			if (k->left == 0)
				k->state = BD_CK_DATA_END;
			continue;
		}
		char ch = *data++;
		n--;
		if (ch == '\n') {
			if (k->line_len == 0 || k->line[k->line_len - 1] != '\r') {
				set_detail(r, "malformed aws-chunked framing (bare LF)");
				return -EINVAL;
			}
			k->line[k->line_len - 1] = '\0';
			k->line_len = 0;
			if ((rr = chunk_line(r, k->line)) < 0) {
				if (!r->detail[0])
					set_detail(r, "malformed aws-chunked framing");
				return rr;
			}
			continue;
		}
		if (k->line_len + 1 >= sizeof(k->line)) {
			set_detail(r, "aws-chunked line longer than %d bytes", BD_CHUNK_LINE_MAX);
			return -EINVAL;
		}
		k->line[k->line_len++] = ch;
	}
	return 0;
}

static bool put_body(struct bd_req *r, const char *data, size_t n)
{
	int rr;

	r->bytes_in += n;
	if (r->err) {
		/* Drain what the client sends so that the error can be answered; a client that
		 * keeps sending (chunked, no Content-Length) is cut off. */
		r->discarded += n;
		return r->discarded <= r->b->cfg.max_object_size + BD_DISCARD_SLACK;
	}
	rr = r->aws_chunked ? chunked_feed(r, data, n) : put_payload(r, data, n);
	if (rr < 0) {
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
		set_detail(r, "cannot store '%s/%s' in '%s': %s", r->bucket, r->key,
			   r->b->store.dirs[r->put.dir].root, strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	snprintf(etag, sizeof(etag), "\"%s\"", r->put.etag);
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	if (r->ck_algo != BD_CK_NONE)
		MHD_add_response_header(resp, bd_cksum_headers[r->ck_algo - 1].header,
					r->ck_value);
	return queue(r, c, MHD_HTTP_OK, resp);
}

/* The body arrived: checks it, then commits it on a job thread (answered by commit_reply()). */
static enum MHD_Result finish_put(struct bd_req *r, struct MHD_Connection *c)
{
	int rr;

	if (r->err)
		return reply_error(r, c, r->err, NULL);
	if (r->aws_chunked && (r->ck.state != BD_CK_END || r->put.size != r->decoded_len)) {
		set_detail(r, "aws-chunked body ended after %llu of %llu bytes",
			   (unsigned long long)r->put.size, (unsigned long long)r->decoded_len);
		rr = -PROTO_EINCOMPLETE;
		goto fail;
	}
	rr = bd_put_finish(&r->put);
	if (rr < 0) {
		set_detail(r, "digest failed");
		goto fail;
	}
	if (r->verify_deferred && (rr = authenticate(r, c, r->put.sha256_hex)) < 0)
		goto fail;
	if (r->check_sha && strcasecmp(r->claimed_sha, r->put.sha256_hex) != 0) {
		set_detail(r, "body does not match x-amz-content-sha256");
		rr = -EILSEQ;
		goto fail;
	}
	if ((rr = check_digests(r)) < 0)
		goto fail;
	r->put_open = false; /* bd_put_commit() removes the temp file when it fails */
	return run_job(r, c, commit_job, commit_reply);
fail:
	bd_put_abort(&r->put);
	r->put_open = false;
	return reply_error(r, c, rr, NULL);
}

/* ---------------------------------------------------------------- buckets */

static enum MHD_Result list_objects(struct bd_req *r, struct MHD_Connection *c)
{
	char lt[8], prefix[PROTO_KEY_MAX + 1] = "", token[PROTO_KEY_MAX + 1] = "";
	char after[PROTO_KEY_MAX + 1] = "", maxk[16] = "", delim[8] = "", date[40];
	struct bd_list_entry *e = NULL;
	struct dstr d = { .max = 16u << 20 };
	unsigned n = 0, max_keys = BD_LIST_MAX_KEYS;
	bool truncated = false;
	uint64_t mk;
	int rr;

	if (query_get(r->query, "list-type", lt, sizeof(lt)) != 1 || strcmp(lt, "2") != 0)
		return reply_error(r, c, -PROTO_ENOTIMPL, "Only ListObjectsV2 (list-type=2) is "
						       "implemented.");
	if (query_get(r->query, "prefix", prefix, sizeof(prefix)) < 0 ||
	    query_get(r->query, "continuation-token", token, sizeof(token)) < 0 ||
	    query_get(r->query, "start-after", after, sizeof(after)) < 0 ||
	    query_get(r->query, "max-keys", maxk, sizeof(maxk)) < 0 ||
	    query_get(r->query, "delimiter", delim, sizeof(delim)) < 0)
		return reply_error(r, c, -EINVAL, "Invalid list parameter.");
	if (delim[0])
		return reply_error(r, c, -PROTO_ENOTIMPL, "Delimiters are not implemented.");
	if (maxk[0]) {
		if (parse_u64(maxk, &mk) < 0)
			return reply_error(r, c, -EINVAL, "Invalid max-keys.");
		max_keys = (unsigned)TESSERA_MIN(mk, (uint64_t)BD_LIST_MAX_KEYS);
	}
	rr = bd_store_list(&r->b->store, r->bucket, prefix,
			   strcmp(token, after) > 0 ? token : after, max_keys, &e, &n, &truncated);
	if (rr < 0) {
		if (rr != -PROTO_ENOBUCKET)
			set_detail(r, "cannot list '%s': %s", r->bucket, strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	dstr_printf(&d, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult "
			"xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>%s</Name><Prefix>",
		    r->bucket);
	dstr_xml(&d, prefix);
	dstr_printf(&d, "</Prefix><KeyCount>%u</KeyCount><MaxKeys>%u</MaxKeys>"
			"<IsTruncated>%s</IsTruncated>",
		    n, max_keys, truncated ? "true" : "false");
	if (token[0]) {
		dstr_printf(&d, "<ContinuationToken>");
		dstr_xml(&d, token);
		dstr_printf(&d, "</ContinuationToken>");
	}
	if (after[0]) {
		dstr_printf(&d, "<StartAfter>");
		dstr_xml(&d, after);
		dstr_printf(&d, "</StartAfter>");
	}
	for (unsigned i = 0; i < n; i++) {
		iso_date(e[i].mtime_s, date);
		dstr_printf(&d, "<Contents><Key>");
		dstr_xml(&d, e[i].key);
		dstr_printf(&d, "</Key><LastModified>%s</LastModified><Size>%llu</Size>"
				"<StorageClass>STANDARD</StorageClass></Contents>",
			    date, (unsigned long long)e[i].size);
	}
	if (truncated && n > 0) {
		dstr_printf(&d, "<NextContinuationToken>");
		dstr_xml(&d, e[n - 1].key);
		dstr_printf(&d, "</NextContinuationToken>");
	}
	dstr_printf(&d, "</ListBucketResult>\n");
	bd_list_free(e, n);
	return reply_text(r, c, &d, "application/xml");
}

static enum MHD_Result bucket_request(struct bd_req *r, struct MHD_Connection *c)
{
	int rr;

	if (method_is(r, "PUT")) {
		if (r->verify_deferred)
			return reply_error(r, c, -EBADMSG, NULL);
		/* On the first handler call (begin_request() for PUT), before any body, so
		 * inline: a rare request, one mkdir and fsync per data directory. */
		rr = bd_store_bucket_create(&r->b->store, r->bucket);
		if (rr < 0) {
			set_detail(r, "cannot create bucket '%s': %s", r->bucket, strerror(-rr));
			return reply_error(r, c, rr, NULL);
		}
		return reply_empty(r, c, MHD_HTTP_OK);
	}
	if (method_is(r, "HEAD")) {
		rr = bd_store_bucket_exists(&r->b->store, r->bucket);
		return rr < 0 ? reply_error(r, c, rr, NULL) : reply_empty(r, c, MHD_HTTP_OK);
	}
	if (method_is(r, "GET"))
		return list_objects(r, c);
	if (method_is(r, "DELETE") || method_is(r, "POST"))
		return reply_error(r, c, -PROTO_ENOTIMPL, NULL);
	return reply_error(r, c, -EOPNOTSUPP, NULL);
}

/* ---------------------------------------------------------------- dispatch */

/* Splits the decoded path "/bucket/key" into r->bucket and r->key. */
static int parse_target(struct bd_req *r)
{
	char dec[BD_URI_MAX + 1];
	const char *slash;
	int n;

	n = proto_uri_decode(dec, sizeof(dec), r->path, strlen(r->path));
	if (n < 0 || dec[0] != '/') {
		set_detail(r, "invalid request path");
		return -EINVAL;
	}
	slash = strchr(dec + 1, '/');
	size_t blen = slash ? (size_t)(slash - dec - 1) : (size_t)n - 1;
	if (blen >= sizeof(r->bucket)) {
		set_detail(r, "invalid bucket name");
		return -EINVAL;
	}
	memcpy(r->bucket, dec + 1, blen);
	r->bucket[blen] = '\0';
	if (!slash)
		return 0;
	size_t klen = (size_t)n - blen - 2;
	if (klen > PROTO_KEY_MAX) {
		set_detail(r, "key of %zu bytes", klen);
		return -ENAMETOOLONG;
	}
	memcpy(r->key, slash + 1, klen);
	r->key[klen] = '\0';
	if (klen > 0 && proto_key_validate(r->key, klen) < 0) {
		set_detail(r, "invalid object key");
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
		return reply_error(r, c, -EOPNOTSUPP, NULL);
	strcpy(r->method, method);
	if (r->uri_too_long) {
		set_detail(r, "request target longer than %d bytes", BD_URI_MAX);
		return reply_error(r, c, -ENAMETOOLONG, "The request URI is too long.");
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
	is_get = method_is(r, "GET") || method_is(r, "HEAD");
	if (is_get && strcmp(r->path, "/-/status") == 0)
		return reply_status(r, c);
	if (is_get && strcmp(r->path, "/metrics") == 0)
		return reply_metrics(r, c);

	/* Over the connection limit (the slack libmicrohttpd still accepts): tell the client to
	 * back off, and close so that the slot frees. */
	if (r->b->connections_open > (int64_t)r->b->cfg.max_connections) {
		r->b->slowdowns++;
		set_detail(r, "%lld connections open, limit %u", (long long)r->b->connections_open,
			   r->b->cfg.max_connections);
		return reply_error_hdr(r, c, -EAGAIN, NULL, MHD_HTTP_HEADER_CONNECTION, "close");
	}

	/* Authenticate before looking at anything else (invariant 1). */
	rr = authenticate(r, c, NULL);
	if (rr == -EBADMSG && method_is(r, "PUT") &&
	    !MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-content-sha256")) {
		r->verify_deferred = true; /* signed over the body hash: check after the body */
		r->detail[0] = '\0';
	} else if (rr < 0) {
		return reply_error(r, c, rr, NULL);
	}

	if ((rr = parse_target(r)) < 0)
		return reply_error(r, c, rr, rr == -EINVAL ? "Invalid bucket or object key." : NULL);
	if (!r->bucket[0])
		return reply_error(r, c, -PROTO_ENOTIMPL, "Listing buckets is not implemented.");
	if (proto_bucket_validate(r->bucket) < 0) {
		set_detail(r, "invalid bucket name");
		return reply_error(r, c, -EINVAL, "Invalid bucket name.");
	}
	if (!r->key[0])
		return bucket_request(r, c);
	if (r->verify_deferred && !method_is(r, "PUT"))
		return reply_error(r, c, -EBADMSG, NULL);
	if (is_get)
		return serve_object(r, c);
	if (method_is(r, "DELETE"))
		return run_job(r, c, delete_job, delete_reply);
	if (method_is(r, "PUT"))
		return begin_put(r, c);
	return reply_error(r, c, -EOPNOTSUPP, NULL);
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
			bool ok = put_body(r, upload_data, *upload_data_size);
			*upload_data_size = 0;
			return ok ? MHD_YES : MHD_NO;
		}
		return finish_put(r, c);
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

static void record_stats(struct blockd *b, const struct bd_req *r)
{
	uint64_t us = (tclock_monotonic_ns() - r->start_ns) / 1000;
	unsigned m = 0, st = 0, l = 0;

	while (m < BD_N_METHODS - 1 && strcmp(bd_methods[m], r->method) != 0)
		m++;
	while (st < BD_N_STATUSES - 1 && bd_statuses[st] != r->status)
		st++;
	while (l < BD_N_LAT && (double)us / 1e6 > bd_lat_bounds[l])
		l++;
	b->by_status[m][st]++;
	b->latency[l]++;
	b->latency_sum_us += us;
	b->bytes_in += r->bytes_in;
	if (r->status != 0)
		b->bytes_out += r->bytes_out;
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
	record_stats(b, r);
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
