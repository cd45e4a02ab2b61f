/*
 * blockd/server: the HTTP front end of the block server (libmicrohttpd).
 *
 * Turns path-style S3 requests into store calls: PUT/GET/HEAD/DELETE /{bucket}/{key},
 * GET /{bucket}?list-type=2, PUT/HEAD /{bucket}, plus the unauthenticated GET /-/status (JSON)
 * and GET /metrics (Prometheus text). It does not know how objects are laid out on disk
 * (store.c) nor how signatures are computed (proto/sigv4.c).
 *
 * Threads: libmicrohttpd runs one thread per connection (MHD_USE_THREAD_PER_CONNECTION,
 * at most cfg.max_connections, each idle-limited by cfg.connection_timeout_s); HTTP/1.1
 * keep-alive reuses the thread. A request's state (struct bd_req) belongs to its connection
 * thread: created by the URI log callback, freed by the completion callback. Shared state is
 * the store (own locks) and the atomic counters of struct blockd.
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
 *     (errors.c), and the program's log through cfg.on_request.
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
#include <openssl/crypto.h>

#include "tessera/common.h"

#define BD_URI_MAX 8192
#define BD_MAX_HEADERS 96
#define BD_ERR_XML_MAX 4096
#define BD_LIST_MAX_KEYS 1000
#define BD_DISCARD_SLACK (1u << 20)
#define BD_THREAD_STACK (1u << 20)

struct blockd {
	struct blockd_config cfg;
	struct bd_store store;
	struct MHD_Daemon *mhd;
	uint16_t port;
	uint64_t start_ns;
	atomic_uint_fast64_t requests;
	atomic_uint_fast64_t errors;
};

/* NEW: headers arrived (first handler call). WAIT: a request without a body, answered on the
 * second call: libmicrohttpd closes the connection after a response queued on the first
 * call, which would defeat keep-alive. BODY: receiving a PUT body. DONE: answered. */
enum bd_phase { BD_NEW, BD_WAIT, BD_BODY, BD_DONE };

/* One request; owned by its connection's thread. */
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
	uint64_t bytes_in;

	char bucket[64];
	char key[PROTO_KEY_MAX + 1];

	struct bd_put put;
	bool put_open;
	int err;              /* failure while streaming, answered after the body */
	bool verify_deferred; /* the signature covers the body hash: verify at the end */
	bool check_sha;       /* the client sent a hex x-amz-content-sha256 */
	char claimed_sha[65];
	uint64_t discarded;
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
	const struct bd_error *e = bd_error_lookup(err);
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
	resp = MHD_create_response_from_buffer((size_t)n, xml, MHD_RESPMEM_MUST_COPY);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/xml");
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

	dstr_printf(&d, "{\"version\":\"%s\",\"uptime_s\":%llu,\"dirs\":[", TESSERA_VERSION,
		    (unsigned long long)((tclock_monotonic_ns() - b->start_ns) / 1000000000ull));
	for (unsigned i = 0; i < b->store.n_dirs; i++) {
		struct dir_usage u;
		dir_usage(&b->store.dirs[i], &u);
		dstr_printf(&d, "%s{\"path\":", i ? "," : "");
		dstr_quoted(&d, b->store.dirs[i].root);
		dstr_printf(&d, ",\"capacity\":%llu,\"used\":%llu,\"free\":%llu}",
			    (unsigned long long)u.capacity, (unsigned long long)u.used,
			    (unsigned long long)u.free);
	}
	dstr_printf(&d, "],\"objects\":%lld,\"requests\":%llu,\"errors\":%llu}\n",
		    (long long)b->store.objects, (unsigned long long)b->requests,
		    (unsigned long long)b->errors);
	return reply_text(r, c, &d, "application/json");
}

static enum MHD_Result reply_metrics(struct bd_req *r, struct MHD_Connection *c)
{
	struct blockd *b = r->b;
	struct dstr d = { .max = 1u << 20 };
	static const char *const names[] = { "capacity", "used", "free" };

	dstr_printf(&d,
		    "# HELP tessera_blockd_requests_total Requests received.\n"
		    "# TYPE tessera_blockd_requests_total counter\n"
		    "tessera_blockd_requests_total %llu\n"
		    "# HELP tessera_blockd_errors_total Requests answered with an error or aborted.\n"
		    "# TYPE tessera_blockd_errors_total counter\n"
		    "tessera_blockd_errors_total %llu\n"
		    "# HELP tessera_blockd_objects Objects stored.\n"
		    "# TYPE tessera_blockd_objects gauge\n"
		    "tessera_blockd_objects %lld\n"
		    "# HELP tessera_blockd_uptime_seconds Seconds since start.\n"
		    "# TYPE tessera_blockd_uptime_seconds gauge\n"
		    "tessera_blockd_uptime_seconds %llu\n",
		    (unsigned long long)b->requests, (unsigned long long)b->errors,
		    (long long)b->store.objects,
		    (unsigned long long)((tclock_monotonic_ns() - b->start_ns) / 1000000000ull));
	for (int k = 0; k < 3; k++) {
		dstr_printf(&d, "# HELP tessera_blockd_dir_%s_bytes Data directory %s bytes.\n"
				"# TYPE tessera_blockd_dir_%s_bytes gauge\n",
			    names[k], names[k], names[k]);
		for (unsigned i = 0; i < b->store.n_dirs; i++) {
			struct dir_usage u;
			uint64_t v;
			dir_usage(&b->store.dirs[i], &u);
			v = k == 0 ? u.capacity : k == 1 ? u.used : u.free;
			dstr_printf(&d, "tessera_blockd_dir_%s_bytes{path=", names[k]);
			dstr_quoted(&d, b->store.dirs[i].root);
			dstr_printf(&d, "} %llu\n", (unsigned long long)v);
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
			return -BD_EAUTHMALFORMED;
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
		return -BD_EAUTHMALFORMED;
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
		if (rr != -ENOENT && rr != -BD_ENOBUCKET)
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
	} else {
		resp = MHD_create_response_from_fd_at_offset64(len, o.fd, off);
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

static enum MHD_Result delete_object(struct bd_req *r, struct MHD_Connection *c)
{
	int rr = bd_store_delete(&r->b->store, r->bucket, r->key);

	if (rr < 0) {
		set_detail(r, "cannot delete '%s/%s': %s", r->bucket, r->key, strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	return reply_empty(r, c, MHD_HTTP_NO_CONTENT);
}

static enum MHD_Result begin_put(struct bd_req *r, struct MHD_Connection *c)
{
	const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
						     MHD_HTTP_HEADER_CONTENT_LENGTH);
	const char *sha = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "x-amz-content-sha256");
	uint64_t len;
	int rr;

	if (cl) {
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
	rr = bd_put_begin(&r->b->store, r->bucket, r->key, r->check_sha || r->verify_deferred,
			  &r->put);
	if (rr < 0) {
		set_detail(r, "cannot create a temp file for '%s/%s': %s", r->bucket, r->key,
			   strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	r->put_open = true;
	r->phase = BD_BODY;
	return MHD_YES;
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
	if (r->put.size + n > r->b->cfg.max_object_size) {
		set_detail(r, "body exceeds the limit of %llu bytes",
			   (unsigned long long)r->b->cfg.max_object_size);
		r->err = -EFBIG;
	} else if ((rr = bd_put_write(&r->put, data, n)) < 0) {
		set_detail(r, "cannot write '%s': %s", r->put.tmp_path, strerror(-rr));
		r->err = rr;
	}
	if (r->err) {
		bd_put_abort(&r->put);
		r->put_open = false;
	}
	return true;
}

static enum MHD_Result finish_put(struct bd_req *r, struct MHD_Connection *c)
{
	char etag[40];
	struct MHD_Response *resp;
	int rr;

	if (r->err)
		return reply_error(r, c, r->err, NULL);
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
	r->put_open = false;
	rr = bd_put_commit(&r->put, r->bucket, r->key);
	if (rr < 0) {
		set_detail(r, "cannot store '%s/%s' in '%s': %s", r->bucket, r->key,
			   r->b->store.dirs[r->put.dir].root, strerror(-rr));
		return reply_error(r, c, rr, NULL);
	}
	snprintf(etag, sizeof(etag), "\"%s\"", r->put.md5_hex);
	resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
	return queue(r, c, MHD_HTTP_OK, resp);
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
		return reply_error(r, c, -BD_ENOTIMPL, "Only ListObjectsV2 (list-type=2) is "
						       "implemented.");
	if (query_get(r->query, "prefix", prefix, sizeof(prefix)) < 0 ||
	    query_get(r->query, "continuation-token", token, sizeof(token)) < 0 ||
	    query_get(r->query, "start-after", after, sizeof(after)) < 0 ||
	    query_get(r->query, "max-keys", maxk, sizeof(maxk)) < 0 ||
	    query_get(r->query, "delimiter", delim, sizeof(delim)) < 0)
		return reply_error(r, c, -EINVAL, "Invalid list parameter.");
	if (delim[0])
		return reply_error(r, c, -BD_ENOTIMPL, "Delimiters are not implemented.");
	if (maxk[0]) {
		if (parse_u64(maxk, &mk) < 0)
			return reply_error(r, c, -EINVAL, "Invalid max-keys.");
		max_keys = (unsigned)TESSERA_MIN(mk, (uint64_t)BD_LIST_MAX_KEYS);
	}
	rr = bd_store_list(&r->b->store, r->bucket, prefix,
			   strcmp(token, after) > 0 ? token : after, max_keys, &e, &n, &truncated);
	if (rr < 0) {
		if (rr != -BD_ENOBUCKET)
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
		return reply_error(r, c, -BD_ENOTIMPL, NULL);
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
		return reply_error(r, c, -BD_ENOTIMPL, "Listing buckets is not implemented.");
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
		return delete_object(r, c);
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
	uint8_t rnd[8];
	size_t len;

	(void)c;
	if (!r)
		return NULL;
	r->b = b;
	r->put.fd = -1;
	r->start_ns = tclock_monotonic_ns();
	if (trandom_bytes(rnd, sizeof(rnd)) < 0)
		memcpy(rnd, &r->start_ns, sizeof(rnd));
	thex_encode(rnd, sizeof(rnd), r->request_id);
	for (int i = 0; i < 16; i++)
		if (r->request_id[i] >= 'a')
			r->request_id[i] = (char)(r->request_id[i] - 'a' + 'A');
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
	b->mhd = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
					  MHD_USE_POLL | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0),
				  0, NULL, NULL, bd_handler, b,
				  MHD_OPTION_EXTERNAL_LOGGER, bd_mhd_log, b,
				  MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned int)b->cfg.max_connections,
				  MHD_OPTION_CONNECTION_TIMEOUT,
				  (unsigned int)b->cfg.connection_timeout_s,
				  MHD_OPTION_URI_LOG_CALLBACK, bd_uri_log, b,
				  MHD_OPTION_NOTIFY_COMPLETED, bd_completed, b,
				  MHD_OPTION_THREAD_STACK_SIZE, (size_t)BD_THREAD_STACK,
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
	if (b->mhd)
		MHD_stop_daemon(b->mhd);
	bd_store_close(&b->store);
	OPENSSL_cleanse(b->cfg.keys, sizeof(b->cfg.keys));
	free(b);
}
