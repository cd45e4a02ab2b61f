/*
 * blockstore/memstore: block servers in memory, with faults, for tests.
 *
 * Each server keeps its objects in an array sorted by key (binary search; a listing is a range
 * of it). One mutex guards the whole store; the hook and the delays run without it.
 *
 * Time: the requests of one batch are served as if they ran in parallel. Each gets a latency
 * (0, its server's delay, or its timeout when the server hangs or is slower than the timeout);
 * they are applied in latency order, and the batch returns after the longest latency that was
 * not abandoned. A quorum batch abandons, like the real client, every request still running
 * grace_ms after `need` of them succeeded: result -ETIMEDOUT, its server marked down, nothing
 * stored. So a slow or hung server costs a test the time it would cost on the network, no more.
 *
 * Health, as in blockclient.h: a transport failure (refused, timeout, abandoned) marks the
 * server down for the back-off (1 s unless memstore_set_backoff_ms()); a failure while already
 * down does not extend it; requests to a server in back-off fail at once with -EHOSTDOWN unless
 * force; a success marks it up.
 */
#include "tessera/blockstore.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tessera/common.h"
#include "tessera/proto.h"

#define MEMSTORE_DEFAULT_CAPACITY (1ull << 40)
#define MEMSTORE_DEFAULT_TIMEOUT_MS 1000
#define MEMSTORE_DEFAULT_BACKOFF_MS 1000

struct mobj {
	char *key;
	uint8_t *data;
	size_t len;
	int64_t mtime_s;
};

struct mserver {
	uint16_t id;
	uint64_t capacity;
	uint64_t used;
	bool bucket;              /* created by the first PUT, as on blockd */
	struct mobj *objs;        /* sorted by key */
	size_t n, cap;
	struct memstore_faults f;
	uint64_t down_until_ns;   /* the client's view: in back-off until then */
	int64_t since_s;          /* when the view last changed */
	int last_err;             /* the failure that started the back-off */
	uint64_t flips;           /* in-transit flips done, for the byte position */
};

struct memstore {
	struct blockstore bs;     /* first: memstore_store() */
	pthread_mutex_t lock;
	struct mserver *servers;
	size_t n_servers;
	memstore_hook_fn hook;
	void *hook_ctx;
	unsigned timeout_ms;
	unsigned backoff_ms;
	uint64_t requests[4];
};

static const struct blockstore_ops memstore_ops;

static struct memstore *ms_of(struct blockstore *bs)
{
	return (struct memstore *)bs;
}

static struct mserver *find_server(struct memstore *ms, uint16_t id)
{
	for (size_t i = 0; i < ms->n_servers; i++)
		if (ms->servers[i].id == id)
			return &ms->servers[i];
	return NULL;
}

/* Index of key in s->objs, or -(insertion point) - 1. */
static long find_obj(const struct mserver *s, const char *key)
{
	size_t lo = 0, hi = s->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(s->objs[mid].key, key);
		if (c == 0)
			return (long)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -(long)lo - 1;
}

static void obj_remove(struct mserver *s, size_t i)
{
	s->used -= s->objs[i].len;
	free(s->objs[i].key);
	free(s->objs[i].data);
	memmove(&s->objs[i], &s->objs[i + 1], (s->n - i - 1) * sizeof(s->objs[0]));
	s->n--;
}

/* Stores (replaces) an object; takes ownership of data. -ENOSPC past the capacity. */
static int obj_put(struct mserver *s, const char *key, uint8_t *data, size_t len)
{
	long i = find_obj(s, key);
	uint64_t old = i >= 0 ? s->objs[i].len : 0;

	if (s->used - old + len > s->capacity)
		return -ENOSPC;
	if (i >= 0) {
		free(s->objs[i].data);
		s->objs[i].data = data;
		s->objs[i].len = len;
		s->objs[i].mtime_s = (int64_t)(tclock_realtime_ns() / 1000000000u);
		s->used = s->used - old + len;
		return 0;
	}
	size_t at = (size_t)(-i - 1);
	struct mobj *grown = tgrow(s->objs, &s->cap, s->n + 1, sizeof(s->objs[0]), 64);
	if (!grown)
		return -ENOMEM;
	s->objs = grown;
	char *k = strdup(key);
	if (!k)
		return -ENOMEM;
	memmove(&s->objs[at + 1], &s->objs[at], (s->n - at) * sizeof(s->objs[0]));
	s->objs[at] = (struct mobj){ .key = k, .data = data, .len = len,
				     .mtime_s = (int64_t)(tclock_realtime_ns() / 1000000000u) };
	s->n++;
	s->used += len;
	s->bucket = true;
	return 0;
}

int memstore_new(const uint16_t *ids, size_t n, uint64_t capacity, struct memstore **ret)
{
	struct memstore *ms;

	if (n == 0 || !ids)
		return -EINVAL;
	ms = calloc(1, sizeof(*ms));
	if (!ms)
		return -ENOMEM;
	ms->servers = calloc(n, sizeof(*ms->servers));
	if (!ms->servers) {
		free(ms);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		ms->servers[i].id = ids[i];
		ms->servers[i].capacity = capacity ? capacity : MEMSTORE_DEFAULT_CAPACITY;
	}
	ms->n_servers = n;
	ms->timeout_ms = MEMSTORE_DEFAULT_TIMEOUT_MS;
	ms->backoff_ms = MEMSTORE_DEFAULT_BACKOFF_MS;
	pthread_mutex_init(&ms->lock, NULL);
	ms->bs.ops = &memstore_ops;
	*ret = ms;
	return 0;
}

struct blockstore *memstore_store(struct memstore *ms)
{
	return &ms->bs;
}

void memstore_set_timeout_ms(struct memstore *ms, unsigned ms_timeout)
{
	pthread_mutex_lock(&ms->lock);
	ms->timeout_ms = ms_timeout ? ms_timeout : MEMSTORE_DEFAULT_TIMEOUT_MS;
	pthread_mutex_unlock(&ms->lock);
}

void memstore_set_backoff_ms(struct memstore *ms, unsigned backoff_ms)
{
	pthread_mutex_lock(&ms->lock);
	ms->backoff_ms = backoff_ms;
	pthread_mutex_unlock(&ms->lock);
}

int memstore_set_faults(struct memstore *ms, uint16_t id, const struct memstore_faults *f)
{
	int r = -EINVAL;

	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, id);
	if (s) {
		s->f = f ? *f : (struct memstore_faults){ 0 };
		r = 0;
	}
	pthread_mutex_unlock(&ms->lock);
	return r;
}

void memstore_set_hook(struct memstore *ms, memstore_hook_fn fn, void *ctx)
{
	pthread_mutex_lock(&ms->lock);
	ms->hook = fn;
	ms->hook_ctx = ctx;
	pthread_mutex_unlock(&ms->lock);
}

/* ---------------------------------------------------------------- serving */

static void sleep_ms(uint64_t ms)
{
	struct timespec ts = { .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static bool transport_error(int r)
{
	return r == -ECONNREFUSED || r == -ETIMEDOUT;
}

/* After a request to s finished with result r. Lock held. */
static void record_health(struct memstore *ms, struct mserver *s, int r)
{
	uint64_t now = tclock_monotonic_ns();

	if (!transport_error(r)) {
		if (s->down_until_ns)
			s->since_s = (int64_t)time(NULL);
		s->down_until_ns = 0;
		return;
	}
	if (s->down_until_ns && now < s->down_until_ns)
		return; /* already down: not extended */
	s->since_s = (int64_t)time(NULL);
	s->last_err = r;
	s->down_until_ns = now + (uint64_t)ms->backoff_ms * 1000000u;
	if (!s->down_until_ns)
		s->down_until_ns = 1;
}

static size_t status_doc(const struct mserver *s, char *buf, size_t size)
{
	uint64_t fr = s->capacity > s->used ? s->capacity - s->used : 0;
	int n = snprintf(buf, size,
			 "{\"version\":\"memstore\",\"capacity\":%llu,\"used\":%llu,\"free\":%llu,"
			 "\"objects\":%zu}",
			 (unsigned long long)s->capacity, (unsigned long long)s->used,
			 (unsigned long long)fr, s->n);
	return n < 0 ? 0 : (size_t)n >= size ? size - 1 : (size_t)n;
}

/* Copies src (len bytes) to the op's head and buf. -EMSGSIZE when it does not fit. */
static int deliver(struct blockclient_op *op, const uint8_t *src, size_t len)
{
	size_t h = TESSERA_MIN(len, op->head_len);

	if (h)
		memcpy(op->head, src, h);
	if (len - h > op->buf_size) {
		op->result_len = h;
		return -EMSGSIZE;
	}
	if (len > h)
		memcpy(op->buf, src + h, len - h);
	op->result_len = len;
	return 0;
}

/* Flips one byte of what a GET delivered (in the payload when there is one). */
static void flip_delivered(struct blockclient_op *op, struct mserver *s)
{
	size_t len = op->result_len, pos;

	if (len == 0)
		return;
	if (len > PROTO_FRAG_HDR_SIZE)
		pos = PROTO_FRAG_HDR_SIZE + (size_t)(s->flips * 131) % (len - PROTO_FRAG_HDR_SIZE);
	else
		pos = len / 2;
	s->flips++;
	uint8_t *p = pos < op->head_len ? (uint8_t *)op->head + pos
					 : (uint8_t *)op->buf + (pos - op->head_len);
	*p ^= 0x40;
}

/* Serves one request on the store. Lock held. */
static int serve(struct memstore *ms, struct mserver *s, struct blockclient_op *op)
{
	long i;

	switch (op->method) {
	case BC_PUT: {
		if (s->f.full)
			return op->http_status = 507, -ENOSPC;
		uint8_t *data = malloc(op->head_len + op->body_len + 1);
		if (!data)
			return -ENOMEM;
		if (op->head_len)
			memcpy(data, op->head, op->head_len);
		if (op->body_len)
			memcpy(data + op->head_len, op->body, op->body_len);
		int r = obj_put(s, op->key, data, op->head_len + op->body_len);
		if (r < 0) {
			free(data);
			return op->http_status = 507, r;
		}
		op->http_status = 200;
		return 0;
	}
	case BC_GET: {
		if (op->raw_path) {
			char doc[512];
			if (strcmp(op->key, "-/status") != 0)
				return op->http_status = 404, -ENOENT;
			size_t n = status_doc(s, doc, sizeof(doc));
			op->http_status = 200;
			return deliver(op, (const uint8_t *)doc, n);
		}
		i = find_obj(s, op->key);
		if (i < 0)
			return op->http_status = 404, -ENOENT;
		const struct mobj *o = &s->objs[i];
		uint64_t off = 0, len = o->len;
		if (op->range_len) {
			if (op->range_off >= o->len)
				return op->http_status = 416, -ERANGE;
			off = op->range_off;
			len = TESSERA_MIN(op->range_len, o->len - off);
		}
		int r = deliver(op, o->data + off, (size_t)len);
		op->http_status = op->range_len ? 206 : 200;
		if (r == 0 && s->f.flip_gets) {
			s->f.flip_gets--;
			flip_delivered(op, s);
		}
		return r;
	}
	case BC_HEAD:
		if (op->raw_path)
			return op->http_status = 404, -ENOENT;
		i = find_obj(s, op->key);
		if (i < 0)
			return op->http_status = 404, -ENOENT;
		op->result_len = s->objs[i].len;
		op->http_status = 200;
		return 0;
	case BC_DELETE:
		i = find_obj(s, op->key);
		if (i >= 0)
			obj_remove(s, (size_t)i);
		op->http_status = 204;
		return 0; /* absent is fine: S3 answers 204 */
	}
	return -EINVAL;
}

struct pending {
	size_t op;
	uint64_t latency_ms;
	int fault;   /* a result decided before serving (hook, down, timeout), or 1 = serve */
};

static int cmp_pending(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;

	if (x->latency_ms != y->latency_ms)
		return x->latency_ms < y->latency_ms ? -1 : 1;
	return x->op < y->op ? -1 : x->op > y->op;
}

static int run_batch(struct memstore *ms, struct blockclient_op *ops, size_t n, bool force,
		     unsigned need, unsigned grace_ms)
{
	struct pending *p = calloc(n ? n : 1, sizeof(*p));
	memstore_hook_fn hook;
	void *hook_ctx;
	size_t np = 0;
	int ok = 0;

	if (!p) {
		for (size_t i = 0; i < n; i++)
			ops[i].result = -ENOMEM;
		return 0;
	}
	pthread_mutex_lock(&ms->lock);
	hook = ms->hook;
	hook_ctx = ms->hook_ctx;
	uint64_t now = tclock_monotonic_ns();
	for (size_t i = 0; i < n; i++) {
		struct blockclient_op *op = &ops[i];
		struct mserver *s = find_server(ms, op->server);
		op->http_status = 0;
		op->result_len = 0;
		if (!s) {
			op->result = -EINVAL;
			continue;
		}
		if (!force && s->down_until_ns && now < s->down_until_ns) {
			op->result = -EHOSTDOWN;
			continue;
		}
		unsigned timeout = op->timeout_ms ? op->timeout_ms : ms->timeout_ms;
		p[np] = (struct pending){ .op = i, .fault = 1 };
		if (s->f.down) {
			p[np].fault = -ECONNREFUSED;
		} else if (s->f.hung) {
			p[np].fault = -ETIMEDOUT;
			p[np].latency_ms = timeout;
		} else if (s->f.delay_ms > timeout) {
			p[np].fault = -ETIMEDOUT;
			p[np].latency_ms = timeout;
		} else {
			p[np].latency_ms = s->f.delay_ms;
		}
		np++;
	}
	pthread_mutex_unlock(&ms->lock);

	/* The hook sees each request that reaches a server, without the lock. */
	for (size_t j = 0; hook && j < np; j++) {
		if (p[j].fault != 1)
			continue;
		int r = hook(hook_ctx, &ops[p[j].op]);
		if (r != 0)
			p[j].fault = r;
	}
	qsort(p, np, sizeof(*p), cmp_pending);

	uint64_t quorum_at = UINT64_MAX, end_ms = 0;
	pthread_mutex_lock(&ms->lock);
	for (size_t j = 0; j < np; j++) {
		struct blockclient_op *op = &ops[p[j].op];
		struct mserver *s = find_server(ms, op->server);
		if (need && quorum_at != UINT64_MAX && p[j].latency_ms > quorum_at + grace_ms) {
			/* abandoned once the quorum had its grace */
			op->result = -ETIMEDOUT;
			record_health(ms, s, op->result);
			end_ms = TESSERA_MAX(end_ms, quorum_at + grace_ms);
			continue;
		}
		end_ms = TESSERA_MAX(end_ms, p[j].latency_ms);
		ms->requests[op->method]++;
		if (p[j].fault != 1) {
			op->result = p[j].fault;
		} else if (s->f.refuse_key) {
			op->http_status = 403;
			op->result = -EACCES;
		} else {
			op->result = serve(ms, s, op);
		}
		if (p[j].fault == 1 && s->f.fail_after > 0 && --s->f.fail_after == 0)
			s->f.down = true;
		record_health(ms, s, op->result);
		if (op->result == 0 && ++ok == (int)need && need)
			quorum_at = p[j].latency_ms;
	}
	pthread_mutex_unlock(&ms->lock);
	if (end_ms)
		sleep_ms(end_ms);
	free(p);
	ok = 0;
	for (size_t i = 0; i < n; i++)
		ok += ops[i].result == 0;
	return ok;
}

static int ms_run(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force)
{
	return run_batch(ms_of(bs), ops, n, force, 0, 0);
}

static int ms_run_quorum(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force,
			 unsigned need, unsigned grace_ms)
{
	if (n > 64)
		return -EINVAL;
	return run_batch(ms_of(bs), ops, n, force, need, grace_ms);
}

static int ms_list(struct blockstore *bs, uint16_t server, const char *prefix, const char *token,
		   struct blockclient_object *objs, size_t max, size_t *ret_n, char *next_token,
		   size_t token_size)
{
	struct memstore *ms = ms_of(bs);
	size_t plen = prefix ? strlen(prefix) : 0, got = 0;
	int r = 0;

	if (max == 0 || max > BLOCKCLIENT_LIST_MAX_KEYS || token_size == 0)
		return -EINVAL;
	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, server);
	if (!s) {
		r = -EINVAL;
		goto out;
	}
	ms->requests[BC_GET]++;
	if (s->f.down || s->f.hung) {
		r = s->f.down ? -ECONNREFUSED : -ETIMEDOUT;
		record_health(ms, s, r);
		goto out;
	}
	if (s->f.refuse_key) {
		r = -EACCES;
		goto out;
	}
	if (!s->bucket) {
		r = -ENOENT;
		goto out;
	}
	long i = token && *token ? find_obj(s, token) : -1;
	size_t at = token && *token ? (i >= 0 ? (size_t)i + 1 : (size_t)(-i - 1)) : 0;
	next_token[0] = '\0';
	for (; at < s->n; at++) {
		const struct mobj *o = &s->objs[at];
		if (plen && strncmp(o->key, prefix, plen) != 0) {
			if (strcmp(o->key, prefix) > 0)
				break; /* sorted: no more keys with the prefix */
			continue;
		}
		if (got == max) {
			const char *last = objs[got - 1].key;
			if (strlen(last) >= token_size) {
				r = -ENAMETOOLONG;
				goto out;
			}
			snprintf(next_token, token_size, "%s", last);
			break;
		}
		if (strlen(o->key) > BLOCKCLIENT_LIST_KEY_MAX) {
			r = -EBADMSG;
			goto out;
		}
		snprintf(objs[got].key, sizeof(objs[got].key), "%s", o->key);
		objs[got].size = o->len;
		objs[got].mtime_s = o->mtime_s;
		got++;
	}
	record_health(ms, s, 0);
	*ret_n = got;
out:
	pthread_mutex_unlock(&ms->lock);
	return r;
}

static bool ms_server_up(struct blockstore *bs, uint16_t id)
{
	struct memstore *ms = ms_of(bs);
	bool up = false;

	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, id);
	if (s)
		up = !s->down_until_ns || tclock_monotonic_ns() >= s->down_until_ns;
	pthread_mutex_unlock(&ms->lock);
	return up;
}

/* The memstore's model of health is the back-off alone: down while in it, else up. */
static int ms_health(struct blockstore *bs, uint16_t id, struct blockclient_health_info *ret)
{
	struct memstore *ms = ms_of(bs);
	int r = -EINVAL;

	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, id);
	if (s) {
		bool down = s->down_until_ns && tclock_monotonic_ns() < s->down_until_ns;
		ret->state = down ? BLOCKCLIENT_DOWN : BLOCKCLIENT_UP;
		ret->since_s = s->since_s;
		ret->last_err = s->last_err;
		r = 0;
	}
	pthread_mutex_unlock(&ms->lock);
	return r;
}

static void ms_mark(struct blockstore *bs, uint16_t id, bool up)
{
	struct memstore *ms = ms_of(bs);

	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, id);
	if (s)
		record_health(ms, s, up ? 0 : -ECONNREFUSED);
	pthread_mutex_unlock(&ms->lock);
}

static void ms_free(struct blockstore *bs)
{
	struct memstore *ms = ms_of(bs);

	for (size_t i = 0; i < ms->n_servers; i++) {
		struct mserver *s = &ms->servers[i];
		for (size_t j = 0; j < s->n; j++) {
			free(s->objs[j].key);
			free(s->objs[j].data);
		}
		free(s->objs);
	}
	free(ms->servers);
	pthread_mutex_destroy(&ms->lock);
	free(ms);
}

static const struct blockstore_ops memstore_ops = {
	.run = ms_run,
	.run_quorum = ms_run_quorum,
	.list = ms_list,
	.server_up = ms_server_up,
	.health = ms_health,
	.mark = ms_mark,
	.free = ms_free,
};

/* ---------------------------------------------------------------- objects at rest */

/* With the lock held: the object key of server id, or NULL with *ret_err (-EINVAL for an
 * unknown server, -ENOENT). */
static struct mobj *lookup(struct memstore *ms, uint16_t id, const char *key,
			   struct mserver **ret_s, int *ret_err)
{
	struct mserver *s = find_server(ms, id);
	long i = s ? find_obj(s, key) : -1;

	*ret_s = s;
	*ret_err = !s ? -EINVAL : -ENOENT;
	return i >= 0 ? &s->objs[i] : NULL;
}

int memstore_get(struct memstore *ms, uint16_t id, const char *key, void *buf, size_t size,
		 size_t *ret_len)
{
	struct mserver *s;
	int r;

	pthread_mutex_lock(&ms->lock);
	struct mobj *o = lookup(ms, id, key, &s, &r);
	if (o) {
		memcpy(buf, o->data, TESSERA_MIN(size, o->len));
		*ret_len = o->len;
		r = 0;
	}
	pthread_mutex_unlock(&ms->lock);
	return r;
}

int memstore_put(struct memstore *ms, uint16_t id, const char *key, const void *buf,
		 size_t len)
{
	uint8_t *data = malloc(len + 1);
	int r = -EINVAL;

	if (!data)
		return -ENOMEM;
	memcpy(data, buf, len);
	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, id);
	if (s)
		r = obj_put(s, key, data, len);
	pthread_mutex_unlock(&ms->lock);
	if (r < 0)
		free(data);
	return r;
}

int memstore_delete(struct memstore *ms, uint16_t id, const char *key)
{
	struct mserver *s;
	int r;

	pthread_mutex_lock(&ms->lock);
	struct mobj *o = lookup(ms, id, key, &s, &r);
	if (o) {
		obj_remove(s, (size_t)(o - s->objs));
		r = 0;
	}
	pthread_mutex_unlock(&ms->lock);
	return r;
}

int memstore_corrupt(struct memstore *ms, uint16_t id, const char *key, size_t offset)
{
	struct mserver *s;
	int r;

	pthread_mutex_lock(&ms->lock);
	struct mobj *o = lookup(ms, id, key, &s, &r);
	if (o) {
		r = offset < o->len ? 0 : -ERANGE;
		if (r == 0)
			o->data[offset] ^= 0x01;
	}
	pthread_mutex_unlock(&ms->lock);
	return r;
}

int memstore_wipe(struct memstore *ms, uint16_t id)
{
	int r = -EINVAL;

	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, id);
	if (s) {
		while (s->n)
			obj_remove(s, s->n - 1);
		s->bucket = false;
		r = 0;
	}
	pthread_mutex_unlock(&ms->lock);
	return r;
}

long memstore_count(struct memstore *ms, uint16_t id, const char *prefix)
{
	size_t plen = prefix ? strlen(prefix) : 0;
	long n = -EINVAL;

	pthread_mutex_lock(&ms->lock);
	struct mserver *s = find_server(ms, id);
	if (s) {
		n = 0;
		for (size_t i = 0; i < s->n; i++)
			n += !plen || strncmp(s->objs[i].key, prefix, plen) == 0;
	}
	pthread_mutex_unlock(&ms->lock);
	return n;
}

uint64_t memstore_requests(struct memstore *ms, enum blockclient_method method)
{
	uint64_t n;

	pthread_mutex_lock(&ms->lock);
	n = (unsigned)method < 4 ? ms->requests[method] : 0;
	pthread_mutex_unlock(&ms->lock);
	return n;
}
