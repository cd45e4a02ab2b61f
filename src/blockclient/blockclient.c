/*
 * blockclient: S3 requests to the block servers over libcurl.
 *
 * A batch (blockclient_run) takes a context from a pool: a curl multi handle plus reusable
 * easy handles. Connections stay in the multi handle's cache between batches (HTTP/1.1
 * keep-alive), so a stripe write after the first costs no TCP handshake. The pool grows to the
 * number of threads that run batches at once and is bounded by BC_POOL_MAX; beyond that a
 * context is created and destroyed per batch.
 *
 * blockclient_list() runs one ListObjectsV2 GET through the same machinery and parses the
 * S3 XML with a small scanner (no XML library): the document is size-limited and every field
 * copied out of it is bounded.
 *
 * Locks: bc->lock protects the pool and the health table; it is never held during I/O.
 * Only this file sees CURLcode; results are errno values.
 */
#include "tessera/blockclient.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "tessera/common.h"

#define BC_POOL_MAX 64
#define BC_BATCH_MAX 64
#define BC_BACKOFF_MIN_NS 1000000000ull
#define BC_BACKOFF_MAX_NS 30000000000ull

struct bc_server {
	uint16_t id;
	char *url;
	uint64_t down_until_ns; /* 0 = up */
	uint64_t backoff_ns;
};

struct bc_ctx {
	struct bc_ctx *next;
	CURLM *multi;
	CURL *easy[BC_BATCH_MAX];
};

struct blockclient {
	struct blockclient_config cfg;
	char sigv4[96];
	char userpwd[260];
	size_t n;
	struct bc_server *servers;
	pthread_mutex_t lock;
	struct bc_ctx *pool;
	unsigned pool_len;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_global(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

int blockclient_new(const struct blockclient_config *cfg, const uint16_t *ids,
		    const char *const *urls, size_t n, struct blockclient **ret)
{
	struct blockclient *bc;

	if (!cfg || n == 0 || n > BLOCKCLIENT_MAX_SERVERS || !*cfg->bucket)
		return -EINVAL;
	pthread_once(&curl_once, curl_global);
	bc = calloc(1, sizeof(*bc));
	if (!bc)
		return -ENOMEM;
	bc->cfg = *cfg;
	if (!bc->cfg.connect_timeout_ms)
		bc->cfg.connect_timeout_ms = 2000;
	if (!bc->cfg.request_timeout_ms)
		bc->cfg.request_timeout_ms = 10000;
	snprintf(bc->sigv4, sizeof(bc->sigv4), "aws:amz:%s:s3",
		 *cfg->region ? cfg->region : "us-east-1");
	snprintf(bc->userpwd, sizeof(bc->userpwd), "%s:%s", cfg->access_key, cfg->secret_key);
	pthread_mutex_init(&bc->lock, NULL);
	bc->servers = calloc(n, sizeof(*bc->servers));
	if (!bc->servers)
		goto fail;
	bc->n = n;
	for (size_t i = 0; i < n; i++) {
		bc->servers[i].id = ids[i];
		bc->servers[i].url = strdup(urls[i]);
		if (!bc->servers[i].url)
			goto fail;
		/* Strip a trailing slash so that URL building is uniform. */
		size_t l = strlen(bc->servers[i].url);
		if (l > 0 && bc->servers[i].url[l - 1] == '/')
			bc->servers[i].url[l - 1] = '\0';
	}
	*ret = bc;
	return 0;
fail:
	blockclient_free(bc);
	return -ENOMEM;
}

static void ctx_free(struct bc_ctx *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < BC_BATCH_MAX; i++)
		if (c->easy[i])
			curl_easy_cleanup(c->easy[i]);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	free(c);
}

void blockclient_free(struct blockclient *bc)
{
	if (!bc)
		return;
	while (bc->pool) {
		struct bc_ctx *c = bc->pool;
		bc->pool = c->next;
		ctx_free(c);
	}
	for (size_t i = 0; i < bc->n; i++)
		free(bc->servers[i].url);
	free(bc->servers);
	pthread_mutex_destroy(&bc->lock);
	/* Credentials do not linger in freed memory. */
	memset(bc->userpwd, 0, sizeof(bc->userpwd));
	memset(bc->cfg.secret_key, 0, sizeof(bc->cfg.secret_key));
	free(bc);
}

static struct bc_server *find_server(struct blockclient *bc, uint16_t id)
{
	for (size_t i = 0; i < bc->n; i++)
		if (bc->servers[i].id == id)
			return &bc->servers[i];
	return NULL;
}

bool blockclient_server_up(struct blockclient *bc, uint16_t id)
{
	bool up;

	pthread_mutex_lock(&bc->lock);
	struct bc_server *s = find_server(bc, id);
	up = s && (s->down_until_ns == 0 || tclock_monotonic_ns() >= s->down_until_ns);
	pthread_mutex_unlock(&bc->lock);
	return up;
}

static void mark_locked(struct bc_server *s, bool up)
{
	if (up) {
		if (s->down_until_ns)
			tlog_debug("server %u is up again", s->id);
		s->down_until_ns = 0;
		s->backoff_ns = 0;
		return;
	}
	uint64_t now = tclock_monotonic_ns();
	if (s->down_until_ns > now)
		return; /* already backing off: failures of requests sent meanwhile (forced, or
			   started before) say nothing new, and must not stretch the back-off */
	s->backoff_ns = s->backoff_ns ? TESSERA_MIN(s->backoff_ns * 2, BC_BACKOFF_MAX_NS)
				      : BC_BACKOFF_MIN_NS;
	s->down_until_ns = now + s->backoff_ns;
	tlog_debug("server %u marked down for %llu ms", s->id,
		   (unsigned long long)(s->backoff_ns / 1000000));
}

void blockclient_mark(struct blockclient *bc, uint16_t id, bool up)
{
	pthread_mutex_lock(&bc->lock);
	struct bc_server *s = find_server(bc, id);
	if (s)
		mark_locked(s, up);
	pthread_mutex_unlock(&bc->lock);
}

static struct bc_ctx *ctx_get(struct blockclient *bc)
{
	struct bc_ctx *c;

	pthread_mutex_lock(&bc->lock);
	c = bc->pool;
	if (c) {
		bc->pool = c->next;
		bc->pool_len--;
	}
	pthread_mutex_unlock(&bc->lock);
	if (c)
		return c;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->multi = curl_multi_init();
	if (!c->multi) {
		free(c);
		return NULL;
	}
	/* Several connections per server: the requests of one batch go to distinct servers,
	 * but a pooled context serves many batches. */
	curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 4L);
	return c;
}

static void ctx_put(struct blockclient *bc, struct bc_ctx *c)
{
	pthread_mutex_lock(&bc->lock);
	if (bc->pool_len < BC_POOL_MAX) {
		c->next = bc->pool;
		bc->pool = c;
		bc->pool_len++;
		c = NULL;
	}
	pthread_mutex_unlock(&bc->lock);
	ctx_free(c);
}

struct bc_xfer {
	struct blockclient_op *op;
	CURL *easy;
	struct curl_slist *headers;
	char url[1024];
	char range[64];
	bool overflow;
	size_t sent; /* PUT: bytes of head + body handed to curl */
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct bc_xfer *x = userdata;
	struct blockclient_op *op = x->op;
	size_t len = size * nmemb;

	if (op->method != BC_GET)
		return len; /* error documents and the like are discarded */
	/* Only the body of a successful answer is data. */
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300)
		return len;
	const char *p = ptr;
	size_t left = len;
	if (op->result_len < op->head_len) {
		size_t n = TESSERA_MIN(left, op->head_len - op->result_len);
		memcpy((char *)op->head + op->result_len, p, n);
		op->result_len += n;
		p += n;
		left -= n;
	}
	if (left == 0)
		return len;
	size_t at = op->result_len - op->head_len;
	if (at + left > op->buf_size) {
		x->overflow = true;
		return 0; /* makes curl abort the transfer */
	}
	memcpy((char *)op->buf + at, p, left);
	op->result_len += left;
	return len;
}

/* PUT body: the head segment, then the body, without copying them first. */
static size_t on_upload(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct bc_xfer *x = userdata;
	struct blockclient_op *op = x->op;
	size_t room = size * nmemb, done = 0;

	while (done < room) {
		const char *src;
		size_t avail;
		if (x->sent < op->head_len) {
			src = (const char *)op->head + x->sent;
			avail = op->head_len - x->sent;
		} else if (x->sent < op->head_len + op->body_len) {
			src = (const char *)op->body + (x->sent - op->head_len);
			avail = op->head_len + op->body_len - x->sent;
		} else {
			break;
		}
		size_t n = TESSERA_MIN(avail, room - done);
		memcpy(ptr + done, src, n);
		done += n;
		x->sent += n;
	}
	return done;
}

static int map_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		return -ECONNREFUSED;
	case CURLE_WRITE_ERROR:
		return -EMSGSIZE;
	default:
		return -EIO;
	}
}

static int map_status(long status)
{
	if (status >= 200 && status < 300)
		return 0;
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

static int setup_easy(struct blockclient *bc, CURL *e, struct bc_xfer *x, const char *base)
{
	struct blockclient_op *op = x->op;

	int len = op->raw_path ? snprintf(x->url, sizeof(x->url), "%s/%s", base, op->key)
			       : snprintf(x->url, sizeof(x->url), "%s/%s/%s", base, bc->cfg.bucket,
					  op->key);
	if (len < 0 || len >= (int)sizeof(x->url))
		return -ENAMETOOLONG;
	curl_easy_reset(e);
	x->easy = e;
	curl_easy_setopt(e, CURLOPT_URL, x->url);
	/* Large receive buffer: a 1 MiB fragment in a few reads, not sixty-four. */
	curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L * 1024);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_AWS_SIGV4, bc->sigv4);
	curl_easy_setopt(e, CURLOPT_USERPWD, bc->userpwd);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)bc->cfg.connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS,
			 (long)(op->timeout_ms ? op->timeout_ms : bc->cfg.request_timeout_ms));
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	x->headers = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
	switch (op->method) {
	case BC_PUT:
		curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(e, CURLOPT_READFUNCTION, on_upload);
		curl_easy_setopt(e, CURLOPT_READDATA, x);
		curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE,
				 (curl_off_t)(op->head_len + op->body_len));
		curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE, 256L * 1024);
		/* No "Expect:" override: curl 7.88 would list the removed header as signed. The
		 * payload is not hashed (UNSIGNED-PAYLOAD): every fragment carries its own crc32c,
		 * checked on every read, and hashing 1.5x the written bytes costs CPU. */
		x->headers = curl_slist_append(x->headers, "Content-Type: application/octet-stream");
		/* Fragments are never checked against ETags: blockd may skip the MD5 (doc/blockd.md). */
		x->headers = curl_slist_append(x->headers, "x-tessera-etag: no-md5");
		break;
	case BC_GET:
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
		if (op->range_len) {
			snprintf(x->range, sizeof(x->range), "%llu-%llu",
				 (unsigned long long)op->range_off,
				 (unsigned long long)(op->range_off + op->range_len - 1));
			curl_easy_setopt(e, CURLOPT_RANGE, x->range);
		}
		break;
	case BC_HEAD:
		curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
		break;
	case BC_DELETE:
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
		break;
	}
	if (!x->headers)
		return -ENOMEM;
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);
	return 0;
}

/* Records the result of a finished transfer. Returns its result. */
static int finish_op(struct blockclient *bc, CURL *easy, CURLcode rc)
{
	struct bc_xfer *x = NULL;

	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
	if (!x)
		return -EIO;
	struct blockclient_op *op = x->op;
	if (rc == CURLE_OK) {
		curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &op->http_status);
		op->result = map_status(op->http_status);
		if (op->method == BC_HEAD && op->result == 0) {
			curl_off_t cl = -1;
			curl_easy_getinfo(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
			op->result_len = cl > 0 ? (size_t)cl : 0;
		}
	} else {
		op->result = x->overflow ? -EMSGSIZE : map_curl(rc);
	}
	bool transport_failure = rc != CURLE_OK && !x->overflow;
	tlog_debug("%s %s on server %u: %d (http %ld, curl %d)",
		   op->method == BC_PUT ? "put" : op->method == BC_GET ? "get" :
		   op->method == BC_HEAD ? "head" : "delete",
		   op->key, op->server, op->result, op->http_status, (int)rc);
	blockclient_mark(bc, op->server, !transport_failure);
	return op->result;
}

static int run_batch(struct blockclient *bc, struct blockclient_op *ops, size_t n, bool force,
		     unsigned need, unsigned grace_ms)
{
	struct bc_xfer xs[BC_BATCH_MAX];
	bool added[BC_BATCH_MAX] = { false };
	struct bc_ctx *c = NULL;
	int ok = 0, running = 0;

	if (n > BC_BATCH_MAX) {
		/* Larger batches run in slices; each slice is parallel. */
		for (size_t i = 0; i < n; i += BC_BATCH_MAX)
			ok += run_batch(bc, ops + i, TESSERA_MIN(n - i, (size_t)BC_BATCH_MAX), force,
					0, 0);
		return ok;
	}
	memset(xs, 0, sizeof(xs));
	for (size_t i = 0; i < n; i++) {
		ops[i].result = -EINPROGRESS;
		ops[i].http_status = 0;
		ops[i].result_len = 0;
	}
	c = ctx_get(bc);
	if (!c) {
		for (size_t i = 0; i < n; i++)
			ops[i].result = -ENOMEM;
		return 0;
	}

	for (size_t i = 0; i < n; i++) {
		struct blockclient_op *op = &ops[i];
		const char *base = NULL;
		bool up = false;

		pthread_mutex_lock(&bc->lock);
		struct bc_server *s = find_server(bc, op->server);
		if (s) {
			base = s->url;
			up = s->down_until_ns == 0 || tclock_monotonic_ns() >= s->down_until_ns;
		}
		pthread_mutex_unlock(&bc->lock);
		if (!s) {
			op->result = -EINVAL;
			continue;
		}
		if (!up && !force) {
			op->result = -EHOSTDOWN;
			continue;
		}
		if (!c->easy[i] && !(c->easy[i] = curl_easy_init())) {
			op->result = -ENOMEM;
			continue;
		}
		xs[i].op = op;
		int r = setup_easy(bc, c->easy[i], &xs[i], base);
		if (r < 0) {
			op->result = r;
			continue;
		}
		if (curl_multi_add_handle(c->multi, c->easy[i]) != CURLM_OK) {
			op->result = -EIO;
			continue;
		}
		added[i] = true;
	}

	uint64_t quorum_at = 0; /* when `need` ops had succeeded */
	int done_ok = 0;
	do {
		CURLMcode mc = curl_multi_perform(c->multi, &running);
		if (mc != CURLM_OK)
			break;
		CURLMsg *msg;
		int left;
		while ((msg = curl_multi_info_read(c->multi, &left))) {
			if (msg->msg != CURLMSG_DONE)
				continue;
			if (finish_op(bc, msg->easy_handle, msg->data.result) == 0)
				done_ok++;
		}
		if (running && need && done_ok >= (int)need) {
			/* Enough: give the others grace_ms to finish, then stop waiting. */
			uint64_t now = tclock_monotonic_ns();
			if (!quorum_at)
				quorum_at = now;
			else if (now - quorum_at >= (uint64_t)grace_ms * 1000000)
				break;
		}
		if (running)
			mc = curl_multi_poll(c->multi, NULL, 0, quorum_at ? 50 : 1000, NULL);
		if (mc != CURLM_OK)
			break;
	} while (running);

	/* Requests still running were abandoned: their servers are too slow to wait for. */
	for (size_t i = 0; i < n; i++) {
		if (!added[i] || ops[i].result != -EINPROGRESS)
			continue;
		ops[i].result = -ETIMEDOUT;
		tlog_debug("request %s to server %u abandoned after the quorum", ops[i].key,
			   ops[i].server);
		blockclient_mark(bc, ops[i].server, false);
	}

	for (size_t i = 0; i < n; i++) {
		if (added[i])
			curl_multi_remove_handle(c->multi, c->easy[i]);
		curl_slist_free_all(xs[i].headers);
		if (ops[i].result == 0)
			ok++;
	}
	ctx_put(bc, c);
	return ok;
}

int blockclient_run(struct blockclient *bc, struct blockclient_op *ops, size_t n, bool force)
{
	return run_batch(bc, ops, n, force, 0, 0);
}

int blockclient_run_quorum(struct blockclient *bc, struct blockclient_op *ops, size_t n,
			   bool force, unsigned need, unsigned grace_ms)
{
	if (n > BC_BATCH_MAX)
		return -EINVAL;
	return run_batch(bc, ops, n, force, need, grace_ms);
}

/* ---------------------------------------------------------------- listing */

/* Percent-encodes s for a query value (RFC 3986 unreserved characters stay). */
static int query_encode(char *out, size_t size, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			     (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' ||
			     *p == '~';
		if (o + (plain ? 1 : 3) >= size)
			return -ENAMETOOLONG;
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = '\0';
	return (int)o;
}

/* Finds the text of the first <tag>...</tag> in [p, end), XML-unescaped into out.
 * Returns the text length, -ENOENT when absent, -EBADMSG when malformed or too long
 * (or size is 0). *ret_next (may be NULL) is set past the closing tag. */
static int xml_text(const char *p, const char *end, const char *tag, char *out, size_t size,
		    const char **ret_next)
{
	char open[48], close[48];
	size_t o = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	const char *a = memmem(p, (size_t)(end - p), open, strlen(open));
	if (!a)
		return -ENOENT;
	a += strlen(open);
	const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
	if (!b || size == 0)
		return -EBADMSG;
	while (a < b) {
		char c = *a++;
		if (c == '&') {
			static const struct { const char *name; char c; } ents[] = {
				{ "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' },
				{ "quot;", '"' }, { "apos;", '\'' },
			};
			size_t i;
			for (i = 0; i < TESSERA_ARRAY_SIZE(ents); i++) {
				size_t l = strlen(ents[i].name);
				if ((size_t)(b - a) >= l && memcmp(a, ents[i].name, l) == 0) {
					c = ents[i].c;
					a += l;
					break;
				}
			}
			if (i == TESSERA_ARRAY_SIZE(ents))
				return -EBADMSG;
		}
		if (o + 1 >= size)
			return -EBADMSG;
		out[o++] = c;
	}
	out[o] = '\0';
	if (ret_next)
		*ret_next = b + strlen(close);
	return (int)o;
}

/* "2026-11-27T08:33:12.000Z" to seconds since the epoch. */
static int parse_iso_date(const char *s, int64_t *ret)
{
	struct tm tm = { 0 };
	const char *e = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);

	if (!e)
		return -EBADMSG;
	*ret = (int64_t)timegm(&tm);
	return 0;
}

int blockclient_list(struct blockclient *bc, uint16_t server, const char *prefix,
		     const char *token, struct blockclient_object *objs, size_t max,
		     size_t *ret_n, char *next_token, size_t token_size)
{
	char eprefix[3 * BLOCKCLIENT_LIST_KEY_MAX + 1], etoken[3 * BLOCKCLIENT_LIST_KEY_MAX + 1];
	char *query = NULL, *body = NULL, num[32];
	size_t n = 0, qsize;
	int r;

	if (!objs || max == 0 || max > BLOCKCLIENT_LIST_MAX_KEYS || !next_token || token_size == 0)
		return -EINVAL;
	r = query_encode(eprefix, sizeof(eprefix), prefix ? prefix : "");
	if (r < 0)
		return -EINVAL;
	r = query_encode(etoken, sizeof(etoken), token ? token : "");
	if (r < 0)
		return -EINVAL;
	qsize = strlen(bc->cfg.bucket) + strlen(eprefix) + strlen(etoken) + 128;
	query = malloc(qsize);
	body = malloc(BLOCKCLIENT_LIST_BODY_MAX + 1);
	if (!query || !body) {
		r = -ENOMEM;
		goto out;
	}
	/* Parameters in canonical (sorted) order: libcurl 7.88 signs the query as given. */
	snprintf(query, qsize, "%s?%s%s%slist-type=2&max-keys=%zu&prefix=%s", bc->cfg.bucket,
		 *etoken ? "continuation-token=" : "", etoken, *etoken ? "&" : "", max, eprefix);
	struct blockclient_op op = { .method = BC_GET, .server = server, .key = query,
				     .raw_path = true, .buf = body,
				     .buf_size = BLOCKCLIENT_LIST_BODY_MAX };
	blockclient_run(bc, &op, 1, true);
	if (op.result < 0) {
		r = op.result;
		goto out;
	}
	body[op.result_len] = '\0';
	const char *p = body, *end = body + op.result_len;
	if (!memmem(p, op.result_len, "<ListBucketResult", 17)) {
		r = -EBADMSG;
		goto out;
	}
	for (;;) {
		const char *c0 = memmem(p, (size_t)(end - p), "<Contents>", 10);
		if (!c0)
			break;
		const char *c1 = memmem(c0, (size_t)(end - c0), "</Contents>", 11);
		if (!c1 || n >= max) {
			r = -EBADMSG;
			goto out;
		}
		struct blockclient_object *o = &objs[n];
		if (xml_text(c0, c1, "Key", o->key, sizeof(o->key), NULL) <= 0 ||
		    xml_text(c0, c1, "Size", num, sizeof(num), NULL) <= 0) {
			r = -EBADMSG;
			goto out;
		}
		char *e;
		errno = 0;
		o->size = strtoull(num, &e, 10);
		if (*e || errno) {
			r = -EBADMSG;
			goto out;
		}
		char date[64];
		if (xml_text(c0, c1, "LastModified", date, sizeof(date), NULL) <= 0 ||
		    parse_iso_date(date, &o->mtime_s) < 0) {
			r = -EBADMSG;
			goto out;
		}
		n++;
		p = c1 + 11;
	}
	char trunc[16] = "";
	next_token[0] = '\0';
	if (xml_text(body, end, "IsTruncated", trunc, sizeof(trunc), NULL) > 0 &&
	    strcmp(trunc, "true") == 0) {
		r = xml_text(body, end, "NextContinuationToken", next_token, token_size, NULL);
		if (r == -EBADMSG && token_size <= BLOCKCLIENT_LIST_KEY_MAX) {
			r = -ENAMETOOLONG;
			goto out;
		}
		if (r <= 0) {
			next_token[0] = '\0';
			r = -EBADMSG;
			goto out;
		}
	}
	r = 0;
	*ret_n = n;
out:
	free(query);
	free(body);
	return r;
}
