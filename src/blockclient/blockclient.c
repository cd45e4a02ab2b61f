/*
 * blockclient: S3 requests to the block servers over libcurl.
 *
 * One event loop per client: a thread (loop_main) owns the one curl multi handle, and with it
 * the one connection cache (HTTP/1.1 keep-alive) and DNS cache, and every easy handle. The
 * threads that call blockclient_run()/blockclient_run_quorum()/blockclient_list() do not touch
 * libcurl: run_batch() decides which ops are sent (health), puts a struct bc_batch that lives
 * on the caller's stack on the submission queue, wakes the loop (curl_multi_wakeup) and waits
 * on the batch's own condition variable until the loop completes it. The loop takes the queued
 * batches, sets an easy handle up for each op and adds it to the multi handle, drives all
 * transfers of all batches with curl_multi_perform/curl_multi_poll, records each finished
 * transfer in its op, and completes a batch when its last transfer has finished or, for a
 * quorum batch, when grace_ms have passed since `need` ops succeeded: the transfers still
 * running are then abandoned (removed from the multi handle, result -ETIMEDOUT, server marked
 * down) before the batch completes.
 *
 * Easy handles are reused through a free list (bounded by BC_FREE_MAX), so their TLS session
 * caches stay warm. Connections are bounded: BC_HOST_CONNS per server and BC_TOTAL_CONNS in
 * all (also the size of the idle cache), so parallel batches share a steady set of keep-alive
 * connections instead of opening and closing their own; transfers beyond the bound wait in
 * libcurl for a free connection.
 *
 * blockclient_list() runs one ListObjectsV2 GET through the same machinery; proto's
 * proto_s3_list_parse() reads the answer (size-limited here, every field bounded there).
 *
 * Threads and locks: bc->lock protects the submission queue, bc->stop, every batch's `done`
 * and the health table; it is never held during I/O and no other lock is taken under it. The
 * multi handle, the easy handles, the free list, the active list and every field of a batch
 * marked "loop" belong to the loop thread alone (curl_multi_wakeup is the one libcurl call
 * made from other threads, as libcurl allows).
 *
 * Invariants:
 *  L1. The loop writes to an op (results, GET bytes) and reads a PUT's head/body only while
 *      the op's batch is not done; it sets `done` (under bc->lock, then signals) after the
 *      last transfer of the batch left the multi handle, and never touches the batch or its
 *      ops afterwards. The caller returns only once it saw `done`, so its buffers are never
 *      used after it returned, abandoned transfers included.
 *  L2. Every batch the loop takes completes: each transfer ends through libcurl's own
 *      timeouts (CURLOPT_TIMEOUT_MS) or through abandonment; a libcurl failure of the multi
 *      handle itself fails every transfer in flight with -EIO.
 *  L3. Health follows answers, and only the prober turns a suspect server down: a transport
 *      failure makes an up server suspect, the prober's failed probe makes it down, any
 *      answer makes it up; failures of other requests sent while it is not up (forced, or
 *      started before) change nothing (mark_locked).
 *
 * Health (the prober): a server that is not up is probed with a signed HEAD (any HTTP answer,
 * a 404 or a 403 included, proves it is reachable) at once when it turns suspect, then every
 * BC_PROBE_INTERVAL_NS with +-25 % jitter, by a thread of its own (probe_main) that sleeps
 * while every server is up. So a server that answers again is back in use within about a
 * second and a half, and ordinary requests never wait for a dead one. Changes of state are
 * logged: down and back up at warning level, suspect at info.
 *
 * Only this file sees CURLcode; results are errno values.
 */
#include "tessera/blockclient.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "tessera/common.h"
#include "tessera/proto.h"

#define BC_BATCH_MAX 64 /* ops of a quorum batch */
#define BC_PROBE_INTERVAL_NS 1000000000ull /* a server not up is probed this often */
#define BC_PROBE_TIMEOUT_MS 2000
#define BC_PROBE_KEY "tessera-probe"       /* need not exist: a 404 is an answer */
#define BC_HOST_CONNS 16    /* connections per server */
#define BC_TOTAL_CONNS 512  /* connections in all, and idle connections kept */
#define BC_FREE_MAX 256     /* idle easy handles kept for reuse */
#define BC_POLL_MAX_MS 1000 /* longest wait in curl_multi_poll */
#define BC_ERR_DOC_MAX 1024 /* bytes of an error document kept, for its <Code> */
/* A request a server answers with SlowDown is sent again, up to BC_SLOWDOWN_RETRIES times,
 * after BC_SLOWDOWN_BASE_NS << try, plus up to as much again of jitter. */
#define BC_SLOWDOWN_RETRIES 3
#define BC_SLOWDOWN_BASE_NS 50000000ull

struct bc_server {
	uint16_t id;    /* immutable */
	char *url;      /* immutable */
	/* bc->lock */
	enum blockclient_health state;
	uint64_t since_ns;      /* monotonic time of the last change of state */
	int64_t since_s;        /* the same, wall clock */
	int last_err;           /* the failure that made it suspect or down */
	uint64_t probe_at_ns;   /* not up: when the prober sends the next probe */
};

struct bc_batch;

/* One transfer: an easy handle and the state of the op it carries. Loop thread only. */
struct bc_xfer {
	struct bc_xfer *next, *prev; /* the free list (next only), or its batch's in-flight list */
	struct bc_batch *batch;
	struct blockclient_op *op;
	CURL *easy;
	struct curl_slist *headers;
	char url[1024];
	char range[64];
	bool overflow;
	size_t sent; /* PUT: bytes of head + body handed to curl */
	/* An error answer: its S3 code (PROTO_ERROR_CODE_HEADER, else the document's <Code>). */
	char err_code[PROTO_S3_CODE_MAX];
	char err_doc[BC_ERR_DOC_MAX];
	size_t err_doc_len;
	/* SlowDown: the transfer is out of the multi handle (still in its batch) until retry_ns. */
	unsigned tries;
	bool waiting;
	uint64_t retry_ns;
};

/* A caller's batch; lives on the caller's stack until `done`. */
struct bc_batch {
	/* set before it is queued, then read-only */
	struct blockclient_op *ops; /* ops to send have result -EINPROGRESS */
	size_t n;
	unsigned need;     /* 0: wait for every op */
	uint64_t grace_ns;
	pthread_cond_t cond;
	/* bc->lock */
	struct bc_batch *next; /* submission queue */
	bool done;
	bool probe;            /* the prober's: a failure makes a suspect server down */
	/* loop */
	struct bc_batch *active_next, *active_prev;
	struct bc_xfer *inflight;
	size_t pending;       /* transfers in the multi handle */
	unsigned ok;          /* ops that succeeded */
	uint64_t deadline_ns; /* quorum reached: abandon the rest then; 0 = not yet */
};

struct blockclient {
	struct blockclient_config cfg;
	char sigv4[96];
	char userpwd[260];
	size_t n;
	struct bc_server *servers;
	pthread_mutex_t lock;
	/* bc->lock */
	struct bc_batch *queue, *queue_tail;
	bool stop;
	/* loop */
	CURLM *multi;
	pthread_t thread;
	bool thread_started;
	struct bc_xfer *free_xfers;
	unsigned n_free;
	struct bc_batch *active;
	unsigned n_waiting;   /* transfers waiting to be retried (SlowDown) */
	uint64_t rng;         /* jitter of the retries */
	/* the prober: bc->lock */
	pthread_t probe_thread;
	bool probe_started, probe_stop;
	pthread_cond_t probe_cond; /* CLOCK_MONOTONIC */
	struct blockclient_op *probe_ops; /* one per server, the prober's */
	uint64_t probe_rng;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_global(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void *loop_main(void *arg);
static int probe_start(struct blockclient *bc);
static void set_state_locked(struct bc_server *s, enum blockclient_health st, uint64_t now);

/* The client's threads take no signals: they go to the threads that wait for them (FUSE's). */
static int thread_start_unsignalled(pthread_t *t, void *(*fn)(void *), void *arg)
{
	sigset_t all, old;
	int r;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(t, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -r;
}

static int loop_start(struct blockclient *bc)
{
	int r;

	bc->multi = curl_multi_init();
	if (!bc->multi)
		return -ENOMEM;
	bc->rng = tclock_monotonic_ns() ^ (uint64_t)(uintptr_t)bc; /* clients do not retry in step */
	long total = (long)TESSERA_MIN(bc->n * BC_HOST_CONNS, (size_t)BC_TOTAL_CONNS);
	curl_multi_setopt(bc->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)BC_HOST_CONNS);
	curl_multi_setopt(bc->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, total);
	curl_multi_setopt(bc->multi, CURLMOPT_MAXCONNECTS, total);
	r = thread_start_unsignalled(&bc->thread, loop_main, bc);
	if (r < 0)
		return r;
	bc->thread_started = true;
	return 0;
}

int blockclient_new(const struct blockclient_config *cfg, const uint16_t *ids,
		    const char *const *urls, size_t n, struct blockclient **ret)
{
	struct blockclient *bc;
	int r = -ENOMEM;

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
	for (size_t i = 0; i < n; i++)
		set_state_locked(&bc->servers[i], BLOCKCLIENT_UP, tclock_monotonic_ns());
	r = loop_start(bc);
	if (r == 0)
		r = probe_start(bc);
	if (r < 0)
		goto fail;
	*ret = bc;
	return 0;
fail:
	blockclient_free(bc);
	return r;
}

static void xfer_free(struct bc_xfer *x)
{
	if (!x)
		return;
	if (x->easy)
		curl_easy_cleanup(x->easy);
	curl_slist_free_all(x->headers);
	free(x);
}

void blockclient_free(struct blockclient *bc)
{
	if (!bc)
		return;
	if (bc->probe_started) { /* first: it runs batches on the loop */
		pthread_mutex_lock(&bc->lock);
		bc->probe_stop = true;
		pthread_cond_signal(&bc->probe_cond);
		pthread_mutex_unlock(&bc->lock);
		pthread_join(bc->probe_thread, NULL);
		pthread_cond_destroy(&bc->probe_cond);
	}
	if (bc->thread_started) {
		pthread_mutex_lock(&bc->lock);
		bc->stop = true;
		pthread_mutex_unlock(&bc->lock);
		curl_multi_wakeup(bc->multi);
		pthread_join(bc->thread, NULL);
	}
	/* No batch is in flight (the caller's promise), so every easy handle is free. */
	while (bc->free_xfers) {
		struct bc_xfer *x = bc->free_xfers;
		bc->free_xfers = x->next;
		xfer_free(x);
	}
	if (bc->multi)
		curl_multi_cleanup(bc->multi);
	for (size_t i = 0; i < bc->n; i++)
		free(bc->servers[i].url);
	free(bc->servers);
	free(bc->probe_ops);
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
	up = s && s->state == BLOCKCLIENT_UP;
	pthread_mutex_unlock(&bc->lock);
	return up;
}

const char *blockclient_health_name(enum blockclient_health h)
{
	return h == BLOCKCLIENT_UP ? "up" : h == BLOCKCLIENT_SUSPECT ? "suspect" : "down";
}

int blockclient_health(struct blockclient *bc, uint16_t id, struct blockclient_health_info *ret)
{
	int r = -EINVAL;

	pthread_mutex_lock(&bc->lock);
	struct bc_server *s = find_server(bc, id);
	if (s) {
		ret->state = s->state;
		ret->since_s = s->since_s;
		ret->last_err = s->last_err;
		r = 0;
	}
	pthread_mutex_unlock(&bc->lock);
	return r;
}

/* 1 s +-25 %, so that clients started together do not probe in step. bc->lock held. */
static uint64_t probe_delay_locked(struct blockclient *bc)
{
	bc->probe_rng = bc->probe_rng * 6364136223846793005ull + 1442695040888963407ull;
	return BC_PROBE_INTERVAL_NS * 3 / 4 + (bc->probe_rng >> 33) % (BC_PROBE_INTERVAL_NS / 2);
}

static void set_state_locked(struct bc_server *s, enum blockclient_health st, uint64_t now)
{
	s->state = st;
	s->since_ns = now;
	s->since_s = (int64_t)time(NULL);
}

/* One request's verdict on a server (L3). err: the failure, for the log. */
static void mark_locked(struct blockclient *bc, struct bc_server *s, bool up, int err, bool probe)
{
	uint64_t now = tclock_monotonic_ns();

	if (up) {
		if (s->state == BLOCKCLIENT_DOWN)
			tlog_warn("server %u (%s) answers again: back in use after %.1f s down",
				  s->id, s->url, (double)(now - s->since_ns) / 1e9);
		else if (s->state == BLOCKCLIENT_SUSPECT)
			tlog_info("server %u (%s) answers: no longer suspect", s->id, s->url);
		if (s->state != BLOCKCLIENT_UP)
			set_state_locked(s, BLOCKCLIENT_UP, now);
		return;
	}
	if (s->state == BLOCKCLIENT_UP) {
		tlog_info("server %u (%s) is suspect: %s", s->id, s->url, strerror(-err));
		set_state_locked(s, BLOCKCLIENT_SUSPECT, now);
		s->last_err = err;
		s->probe_at_ns = now; /* probe it at once */
		pthread_cond_signal(&bc->probe_cond);
		return;
	}
	if (!probe)
		return; /* sent while it was not up: says nothing new */
	s->last_err = err;
	s->probe_at_ns = now + probe_delay_locked(bc);
	if (s->state == BLOCKCLIENT_SUSPECT) {
		tlog_warn("server %u (%s) is down: %s", s->id, s->url, strerror(-err));
		set_state_locked(s, BLOCKCLIENT_DOWN, now);
	}
}

static void mark_server(struct blockclient *bc, uint16_t id, bool up, int err, bool probe)
{
	pthread_mutex_lock(&bc->lock);
	struct bc_server *s = find_server(bc, id);
	if (s)
		mark_locked(bc, s, up, err, probe);
	pthread_mutex_unlock(&bc->lock);
}

void blockclient_mark(struct blockclient *bc, uint16_t id, bool up)
{
	mark_server(bc, id, up, -EIO, false);
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct bc_xfer *x = userdata;
	struct blockclient_op *op = x->op;
	size_t len = size * nmemb;

	/* Only the body of a successful GET is data; of an error document, the start is kept
	 * for its code. */
	long status = 0;
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
	if (status < 200 || status >= 300) {
		size_t keep = TESSERA_MIN(len, sizeof(x->err_doc) - x->err_doc_len);
		memcpy(x->err_doc + x->err_doc_len, ptr, keep);
		x->err_doc_len += keep;
		return len;
	}
	if (op->method != BC_GET)
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

/* Response headers: only the error code of blockd's error answers is wanted. */
static size_t on_header(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	static const char name[] = PROTO_ERROR_CODE_HEADER ":";
	struct bc_xfer *x = userdata;
	size_t len = size * nmemb, n = sizeof(name) - 1;

	if (len > n && strncasecmp(ptr, name, n) == 0) {
		const char *v = ptr + n, *end = ptr + len;
		while (v < end && (*v == ' ' || *v == '\t'))
			v++;
		size_t vlen = 0;
		while (v + vlen < end && v[vlen] != '\r' && v[vlen] != '\n' && v[vlen] != ' ')
			vlen++;
		if (vlen < sizeof(x->err_code)) {
			memcpy(x->err_code, v, vlen);
			x->err_code[vlen] = '\0';
		}
	}
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

/* The result of an answer: by its S3 error code where it has one (proto's table). */
static int map_status(struct bc_xfer *x, long status)
{
	if (status >= 200 && status < 300)
		return 0;
	if (!x->err_code[0])
		(void)proto_s3_error_code(x->err_doc, x->err_doc_len, x->err_code,
					  sizeof(x->err_code));
	return proto_s3_client_errno((unsigned)status, x->err_code);
}

/* Points a free easy handle at x->op. */
static int setup_easy(struct blockclient *bc, struct bc_xfer *x, const char *base)
{
	struct blockclient_op *op = x->op;
	CURL *e = x->easy;

	int len = op->raw_path ? snprintf(x->url, sizeof(x->url), "%s/%s", base, op->key)
			       : snprintf(x->url, sizeof(x->url), "%s/%s/%s", base, bc->cfg.bucket,
					  op->key);
	if (len < 0 || len >= (int)sizeof(x->url))
		return -ENAMETOOLONG;
	curl_easy_reset(e);
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
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
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
		if (x->headers)
			x->headers = curl_slist_append(x->headers,
						       "Content-Type: application/octet-stream");
		/* Fragments are never checked against ETags: blockd may skip the MD5 (doc/blockd.md). */
		if (x->headers)
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

/* A free transfer (from the free list, else a new one), or NULL. */
static struct bc_xfer *xfer_get(struct blockclient *bc)
{
	struct bc_xfer *x = bc->free_xfers;

	if (x) {
		bc->free_xfers = x->next;
		bc->n_free--;
	} else {
		x = calloc(1, sizeof(*x));
		if (!x)
			return NULL;
		x->easy = curl_easy_init();
		if (!x->easy) {
			free(x);
			return NULL;
		}
	}
	x->next = x->prev = NULL;
	x->overflow = false;
	x->sent = 0;
	x->err_code[0] = '\0';
	x->err_doc_len = 0;
	x->tries = 0;
	x->waiting = false;
	return x;
}

/* Back to the free list; x is not in the multi handle. */
static void xfer_put(struct blockclient *bc, struct bc_xfer *x)
{
	curl_slist_free_all(x->headers);
	x->headers = NULL;
	x->op = NULL;
	x->batch = NULL;
	if (bc->n_free >= BC_FREE_MAX) {
		xfer_free(x);
		return;
	}
	x->next = bc->free_xfers;
	bc->free_xfers = x;
	bc->n_free++;
}

static const char *method_name(enum blockclient_method m)
{
	return m == BC_PUT ? "put" : m == BC_GET ? "get" : m == BC_HEAD ? "head" : "delete";
}

/* Records the result of a finished transfer in its op and in the health table. */
static void record_result(struct blockclient *bc, struct bc_xfer *x, CURLcode rc)
{
	struct blockclient_op *op = x->op;

	if (rc == CURLE_OK) {
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &op->http_status);
		op->result = map_status(x, op->http_status);
		if (op->method == BC_HEAD && op->result == 0) {
			curl_off_t cl = -1;
			curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
			op->result_len = cl > 0 ? (size_t)cl : 0;
		}
	} else {
		op->result = x->overflow ? -EMSGSIZE : map_curl(rc);
	}
	bool transport_failure = rc != CURLE_OK && !x->overflow;
	tlog_debug("%s %s on server %u: %d (http %ld, curl %d)", method_name(op->method), op->key,
		   op->server, op->result, op->http_status, (int)rc);
	mark_server(bc, op->server, !transport_failure, op->result, x->batch->probe);
}

/* Marks the batch done and wakes its caller; b must not be used afterwards (L1). */
static void batch_complete(struct blockclient *bc, struct bc_batch *b)
{
	if (b->active_prev)
		b->active_prev->active_next = b->active_next;
	else
		bc->active = b->active_next;
	if (b->active_next)
		b->active_next->active_prev = b->active_prev;
	pthread_mutex_lock(&bc->lock);
	b->done = true;
	pthread_cond_signal(&b->cond);
	pthread_mutex_unlock(&bc->lock);
}

/* Takes x out of the multi handle and its batch; completes the batch after its last. */
static void xfer_retire(struct blockclient *bc, struct bc_xfer *x)
{
	struct bc_batch *b = x->batch;

	if (x->waiting) {
		x->waiting = false;
		bc->n_waiting--;
	}
	curl_multi_remove_handle(bc->multi, x->easy); /* CURLM_OK also when deferred */
	if (x->prev)
		x->prev->next = x->next;
	else
		b->inflight = x->next;
	if (x->next)
		x->next->prev = x->prev;
	if (x->op->result == 0)
		b->ok++;
	b->pending--;
	xfer_put(bc, x);
	if (b->pending == 0)
		batch_complete(bc, b);
	else if (b->need && b->ok >= b->need && !b->deadline_ns)
		b->deadline_ns = tclock_monotonic_ns() + b->grace_ns;
}

/* Adds the transfers of a newly queued batch to the multi handle. */
static void batch_start(struct blockclient *bc, struct bc_batch *b)
{
	b->active_prev = NULL;
	b->active_next = bc->active;
	if (bc->active)
		bc->active->active_prev = b;
	bc->active = b;
	for (size_t i = 0; i < b->n; i++) {
		struct blockclient_op *op = &b->ops[i];
		if (op->result != -EINPROGRESS)
			continue; /* decided by the caller */
		struct bc_server *s = find_server(bc, op->server); /* id and url are immutable */
		struct bc_xfer *x = xfer_get(bc);
		if (!x) {
			op->result = -ENOMEM;
			continue;
		}
		x->op = op;
		x->batch = b;
		int r = setup_easy(bc, x, s->url);
		if (r == 0 && curl_multi_add_handle(bc->multi, x->easy) != CURLM_OK)
			r = -EIO;
		if (r < 0) {
			op->result = r;
			xfer_put(bc, x);
			continue;
		}
		x->next = b->inflight;
		if (b->inflight)
			b->inflight->prev = x;
		b->inflight = x;
		b->pending++;
	}
	if (b->pending == 0)
		batch_complete(bc, b);
}

/* Gives up on the transfers of b still in flight: result, or -ETIMEDOUT after a quorum with
 * their servers marked down. Completes b. */
static void batch_abandon(struct blockclient *bc, struct bc_batch *b, int result)
{
	/* Counted, not `while (b->inflight)`: the last xfer_retire() completes b. */
	for (size_t left = b->pending; left > 0; left--) {
		struct bc_xfer *x = b->inflight;
		x->op->result = result;
		if (result == -ETIMEDOUT) {
			tlog_debug("%s %s to server %u abandoned after the quorum",
				   method_name(x->op->method), x->op->key, x->op->server);
			mark_server(bc, x->op->server, false, result, b->probe);
		}
		xfer_retire(bc, x); /* the last one completes b */
	}
}

/* A transfer answered SlowDown: out of the multi handle, to be sent again after a back-off
 * (loop_retry()). Returns false when it has had its retries. */
static bool xfer_defer(struct blockclient *bc, struct bc_xfer *x)
{
	if (x->op->result != -EAGAIN || x->tries >= BC_SLOWDOWN_RETRIES)
		return false;
	uint64_t base = BC_SLOWDOWN_BASE_NS << x->tries++;
	bc->rng = bc->rng * 6364136223846793005ull + 1442695040888963407ull;
	x->retry_ns = tclock_monotonic_ns() + base + (bc->rng >> 33) % base;
	x->waiting = true;
	bc->n_waiting++;
	curl_multi_remove_handle(bc->multi, x->easy);
	tlog_debug("%s %s on server %u: SlowDown, retry %u in %llu ms", method_name(x->op->method),
		   x->op->key, x->op->server, x->tries,
		   (unsigned long long)((x->retry_ns - tclock_monotonic_ns()) / 1000000));
	return true;
}

/* Sends again the deferred transfers that are due. Returns the ns until the next one. */
static uint64_t loop_retry(struct blockclient *bc)
{
	uint64_t now = tclock_monotonic_ns(), wait = UINT64_MAX;

	if (bc->n_waiting == 0)
		return wait;
	for (struct bc_batch *b = bc->active, *bnext; b; b = bnext) {
		bnext = b->active_next;
		for (struct bc_xfer *x = b->inflight, *next; x; x = next) {
			next = x->next;
			if (!x->waiting)
				continue;
			if (now < x->retry_ns) {
				wait = TESSERA_MIN(wait, x->retry_ns - now);
				continue;
			}
			x->waiting = false;
			bc->n_waiting--;
			x->sent = 0;
			x->overflow = false;
			x->err_code[0] = '\0';
			x->err_doc_len = 0;
			x->op->result_len = 0;
			x->op->http_status = 0;
			x->op->result = -EINPROGRESS;
			if (curl_multi_add_handle(bc->multi, x->easy) != CURLM_OK) {
				x->op->result = -EIO;
				bool last = b->pending == 1;
				xfer_retire(bc, x);
				if (last)
					break; /* b completed */
			}
		}
	}
	return wait;
}

/* Records every finished transfer. */
static void loop_reap(struct blockclient *bc)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(bc->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		CURLcode rc = msg->data.result; /* msg is gone once the handle is removed */
		struct bc_xfer *x = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&x);
		if (!x)
			continue;
		record_result(bc, x, rc);
		if (!xfer_defer(bc, x))
			xfer_retire(bc, x);
	}
}

/* Abandons what quorum batches no longer wait for. Returns the poll timeout (ms) until the
 * next quorum deadline, at most BC_POLL_MAX_MS. */
static int loop_expire(struct blockclient *bc)
{
	uint64_t now = tclock_monotonic_ns(), wait = (uint64_t)BC_POLL_MAX_MS * 1000000;
	struct bc_batch *b = bc->active, *next;

	for (; b; b = next) {
		next = b->active_next; /* b may complete */
		if (!b->deadline_ns)
			continue;
		if (now >= b->deadline_ns)
			batch_abandon(bc, b, -ETIMEDOUT);
		else
			wait = TESSERA_MIN(wait, b->deadline_ns - now);
	}
	wait = TESSERA_MIN(wait, loop_retry(bc));
	return (int)((wait + 999999) / 1000000);
}

static void *loop_main(void *arg)
{
	struct blockclient *bc = arg;

	pthread_setname_np(pthread_self(), "tessera-bcloop"); /* for top -H and perf */
	for (;;) {
		pthread_mutex_lock(&bc->lock);
		struct bc_batch *q = bc->queue, *next;
		bool stop = bc->stop;
		bc->queue = bc->queue_tail = NULL;
		pthread_mutex_unlock(&bc->lock);
		if (stop)
			break; /* no caller is left (blockclient_free's contract) */
		for (; q; q = next) {
			next = q->next; /* q may complete at once */
			batch_start(bc, q);
		}
		int running = 0;
		CURLMcode mc = curl_multi_perform(bc->multi, &running);
		loop_reap(bc);
		if (mc != CURLM_OK) {
			/* The multi handle itself failed: nothing in flight can finish (L2). */
			tlog_debug("curl_multi_perform: %s", curl_multi_strerror(mc));
			while (bc->active)
				batch_abandon(bc, bc->active, -EIO);
		}
		int timeout = loop_expire(bc);
		mc = curl_multi_poll(bc->multi, NULL, 0, timeout, NULL);
		if (mc != CURLM_OK) {
			tlog_debug("curl_multi_poll: %s", curl_multi_strerror(mc));
			struct timespec ts = { 0, 10000000 }; /* no busy loop */
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

/* ---------------------------------------------------------------- batches (callers) */

static int run_batch(struct blockclient *bc, struct blockclient_op *ops, size_t n, bool force,
		     unsigned need, unsigned grace_ms, bool probe)
{
	struct bc_batch b;
	size_t nsend = 0;
	int ok = 0;

	pthread_mutex_lock(&bc->lock);
	for (size_t i = 0; i < n; i++) {
		struct blockclient_op *op = &ops[i];
		struct bc_server *s = find_server(bc, op->server);
		op->http_status = 0;
		op->result_len = 0;
		if (!s) {
			op->result = -EINVAL;
		} else if (!force && s->state != BLOCKCLIENT_UP) {
			op->result = -EHOSTDOWN;
		} else {
			op->result = -EINPROGRESS; /* for the loop: send it */
			nsend++;
		}
	}
	pthread_mutex_unlock(&bc->lock);

	if (nsend) {
		memset(&b, 0, sizeof(b));
		b.ops = ops;
		b.n = n;
		b.need = need;
		b.probe = probe;
		b.grace_ns = (uint64_t)grace_ms * 1000000;
		pthread_cond_init(&b.cond, NULL);
		pthread_mutex_lock(&bc->lock);
		if (bc->queue_tail)
			bc->queue_tail->next = &b;
		else
			bc->queue = &b;
		bc->queue_tail = &b;
		pthread_mutex_unlock(&bc->lock);
		curl_multi_wakeup(bc->multi);
		pthread_mutex_lock(&bc->lock);
		while (!b.done)
			pthread_cond_wait(&b.cond, &bc->lock);
		pthread_mutex_unlock(&bc->lock);
		pthread_cond_destroy(&b.cond);
	}
	for (size_t i = 0; i < n; i++)
		if (ops[i].result == 0)
			ok++;
	return ok;
}

/* The prober (L3): probes the servers that are not up when they are due, sleeps until the
 * next one is (or until one turns suspect) otherwise. */
static void *probe_main(void *arg)
{
	struct blockclient *bc = arg;
	struct blockclient_op *ops = bc->probe_ops;

	pthread_setname_np(pthread_self(), "tessera-bcprobe");
	pthread_mutex_lock(&bc->lock);
	while (!bc->probe_stop) {
		uint64_t now = tclock_monotonic_ns(), next = UINT64_MAX;
		size_t due = 0;
		for (size_t i = 0; i < bc->n; i++) {
			struct bc_server *s = &bc->servers[i];
			if (s->state == BLOCKCLIENT_UP)
				continue;
			if (s->probe_at_ns <= now)
				ops[due++] = (struct blockclient_op){
					.method = BC_HEAD, .server = s->id, .key = BC_PROBE_KEY,
					.timeout_ms = TESSERA_MIN(BC_PROBE_TIMEOUT_MS,
								  bc->cfg.request_timeout_ms) };
			else
				next = TESSERA_MIN(next, s->probe_at_ns);
		}
		if (due) {
			pthread_mutex_unlock(&bc->lock);
			run_batch(bc, ops, due, true, 0, 0, true);
			pthread_mutex_lock(&bc->lock);
			continue; /* the verdicts set the next probe times */
		}
		if (next == UINT64_MAX)
			pthread_cond_wait(&bc->probe_cond, &bc->lock);
		else
			tcond_wait_until(&bc->probe_cond, &bc->lock, next);
	}
	pthread_mutex_unlock(&bc->lock);
	return NULL;
}

static int probe_start(struct blockclient *bc)
{
	int r;

	bc->probe_ops = calloc(bc->n, sizeof(*bc->probe_ops));
	if (!bc->probe_ops)
		return -ENOMEM;
	tcond_init_monotonic(&bc->probe_cond);
	bc->probe_rng = tclock_monotonic_ns() ^ ((uint64_t)(uintptr_t)bc << 1);
	r = thread_start_unsignalled(&bc->probe_thread, probe_main, bc);
	if (r < 0) {
		pthread_cond_destroy(&bc->probe_cond);
		return r;
	}
	bc->probe_started = true;
	return 0;
}

int blockclient_run(struct blockclient *bc, struct blockclient_op *ops, size_t n, bool force)
{
	return run_batch(bc, ops, n, force, 0, 0, false);
}

int blockclient_run_quorum(struct blockclient *bc, struct blockclient_op *ops, size_t n,
			   bool force, unsigned need, unsigned grace_ms)
{
	if (n > BC_BATCH_MAX)
		return -EINVAL;
	return run_batch(bc, ops, n, force, need, grace_ms, false);
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

/* Collects the entries of one listing page into the caller's array. */
struct list_ctx {
	struct blockclient_object *objs;
	size_t max, n;
};

static int list_entry(void *ctx, const char *key, uint64_t size, int64_t mtime_s)
{
	struct list_ctx *l = ctx;

	if (l->n >= l->max || strlen(key) >= sizeof(l->objs[0].key))
		return -EBADMSG;
	struct blockclient_object *o = &l->objs[l->n++];
	strcpy(o->key, key);
	o->size = size;
	o->mtime_s = mtime_s;
	return 0;
}

int blockclient_list(struct blockclient *bc, uint16_t server, const char *prefix,
		     const char *token, struct blockclient_object *objs, size_t max,
		     size_t *ret_n, char *next_token, size_t token_size)
{
	char eprefix[3 * BLOCKCLIENT_LIST_KEY_MAX + 1], etoken[3 * BLOCKCLIENT_LIST_KEY_MAX + 1];
	char *query = NULL, *body = NULL;
	size_t qsize;
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
	struct list_ctx l = { .objs = objs, .max = max };
	r = proto_s3_list_parse(body, op.result_len, list_entry, &l, next_token, token_size);
	if (r == 0)
		*ret_n = l.n;
out:
	free(query);
	free(body);
	return r;
}
