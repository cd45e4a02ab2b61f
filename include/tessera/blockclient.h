/*
 * blockclient: every HTTP request to the block servers.
 *
 * Requests are S3 path-style (PUT/GET/HEAD/DELETE /{bucket}/{key}) signed with SigV4 by
 * libcurl. Each client runs one event-loop thread that owns one libcurl multi handle, and with
 * it one cache of keep-alive connections (at most 16 per server, 512 in all): every batch of
 * every calling thread runs on that loop, so consecutive and concurrent batches reuse the same
 * connections. blockclient_run() hands a batch to the loop and returns when all its requests
 * have finished.
 *
 * Health: up, suspect or down (blockclient_health()). A transport failure (refused, reset,
 * timeout) makes an up server suspect; a thread of the client then probes it at once and
 * every second (+-25 %) while it is not up: a failed probe makes it down, any HTTP answer
 * (an error status included) up again, so a server that answers is back in use within about
 * 1.5 s. Requests to a server that is not up fail at once with -EHOSTDOWN unless forced;
 * their failures change nothing. HTTP errors never make a server suspect.
 *
 * Thread-safety: all functions except blockclient_free() may be called from any thread
 * concurrently; blockclient_free() is called once no other call is running. Buffers passed
 * in ops are used only until the call that took them returns. Only this module sees CURLcode.
 */
#ifndef TESSERA_BLOCKCLIENT_H
#define TESSERA_BLOCKCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/proto.h"

#define BLOCKCLIENT_MAX_SERVERS 256

struct blockclient_config {
	char bucket[64];
	char region[32];
	char access_key[128];
	char secret_key[128];
	unsigned connect_timeout_ms; /* default 2000 */
	unsigned request_timeout_ms; /* whole request, default 10000 */
};

enum blockclient_method { BC_PUT, BC_GET, BC_HEAD, BC_DELETE };

/* One request of a batch. The caller fills the inputs; blockclient_run() fills the results. */
struct blockclient_op {
	enum blockclient_method method;
	uint16_t server;           /* server id */
	const char *key;           /* object key, borrowed */
	bool raw_path;             /* key is a path under the server root ("-/status"),
	                              not an object of the bucket */
	void *head;                /* optional first segment (a fragment header), borrowed:
	                              PUT: sent before body; GET: receives the first head_len
	                              bytes, the rest goes to buf */
	size_t head_len;
	const void *body;          /* PUT: body (after head), borrowed */
	size_t body_len;
	void *buf;                 /* GET: destination, borrowed */
	size_t buf_size;           /* GET: capacity; a longer object fails with -EMSGSIZE */
	uint64_t range_off;        /* GET: first byte (with range_len) */
	uint64_t range_len;        /* GET: 0 = whole object */
	unsigned timeout_ms;       /* whole request; 0 = the configured request timeout */
	/* results */
	int result;                /* 0, -ENOENT (404), -ENOSPC (507), -EACCES (403),
	                              -EHOSTDOWN (server marked down, not tried),
	                              -ETIMEDOUT, -ECONNREFUSED, -EMSGSIZE, -EIO */
	long http_status;          /* 0 when no response */
	size_t result_len;         /* GET: bytes received (head included); HEAD: Content-Length */
};

struct blockclient;

/* urls[i] is the base URL of server ids[i] (e.g. "http://127.0.0.1:9000"); both borrowed,
 * copied. Starts the client's event-loop thread. Returns 0 and *ret (free with
 * blockclient_free(), which stops the thread), -EINVAL, -ENOMEM, -EAGAIN (no thread). */
int blockclient_new(const struct blockclient_config *cfg, const uint16_t *ids,
		    const char *const *urls, size_t n, struct blockclient **ret);
void blockclient_free(struct blockclient *bc);

/* Runs the ops in parallel (any number; requests to one server beyond its connection limit
 * wait for a free connection) and waits for all of them. Ops to servers that are marked down
 * and still in back-off fail at once with -EHOSTDOWN unless force is true; ops to an unknown
 * server id fail with -EINVAL. Returns the number of ops that succeeded (result == 0). */
int blockclient_run(struct blockclient *bc, struct blockclient_op *ops, size_t n, bool force);

/* Like blockclient_run(), for at most 64 ops, but once `need` of them have succeeded it waits
 * at most grace_ms more for the others, then abandons them (result -ETIMEDOUT, their servers
 * marked down, their requests cancelled before this returns: their buffers are free to reuse):
 * a hung server does not hold up a write that already has its quorum.
 * Returns the number of ops that succeeded, or -EINVAL (n > 64). */
int blockclient_run_quorum(struct blockclient *bc, struct blockclient_op *ops, size_t n,
			   bool force, unsigned need, unsigned grace_ms);


/* Whether a server is currently considered up. Unknown id: false. */
bool blockclient_server_up(struct blockclient *bc, uint16_t id);

enum blockclient_health {
	BLOCKCLIENT_UP,      /* requests are sent */
	BLOCKCLIENT_SUSPECT, /* a request failed; the probe that decides is under way */
	BLOCKCLIENT_DOWN,    /* the probes fail; probed every second */
};
struct blockclient_health_info {
	enum blockclient_health state;
	int64_t since_s;     /* wall-clock time of the last change of state */
	int last_err;        /* the failure that made it suspect or down (negative errno) */
};
/* A server's state. Returns 0, or -EINVAL for an unknown id. */
int blockclient_health(struct blockclient *bc, uint16_t id, struct blockclient_health_info *ret);
/* "up", "suspect", "down". */
const char *blockclient_health_name(enum blockclient_health h);

/* Marks a server up, or suspect (a failure seen elsewhere; the prober decides). */
void blockclient_mark(struct blockclient *bc, uint16_t id, bool up);

/* ---- listing (ListObjectsV2) ---- */

#define BLOCKCLIENT_LIST_KEY_MAX PROTO_LIST_KEY_MAX /* longest key accepted from a listing */
#define BLOCKCLIENT_LIST_MAX_KEYS 1000  /* entries per page (S3's limit) */
#define BLOCKCLIENT_LIST_BODY_MAX (4u << 20) /* largest listing document accepted */

struct blockclient_object {
	char key[BLOCKCLIENT_LIST_KEY_MAX + 1]; /* XML-unescaped */
	uint64_t size;
	int64_t mtime_s;                        /* LastModified, seconds since the epoch */
};

/* Lists one page of the objects of the bucket on server `server` whose keys start with prefix
 * ("" = all), in key order, after the continuation token `token` ("" or NULL = from the
 * start). At most `max` (<= BLOCKCLIENT_LIST_MAX_KEYS) entries go to objs[]; *ret_n gets
 * their number and next_token (token_size bytes, NUL-terminated) the token of the next page,
 * or "" when this was the last. The request goes to the server even when it is marked down
 * (a listing is an explicit probe). Returns 0, or -ENOENT (no such bucket), -EACCES,
 * -EBADMSG (a document that does not parse, an entry too long), -EMSGSIZE (a document over
 * BLOCKCLIENT_LIST_BODY_MAX), -ENAMETOOLONG (token_size too small), -EINVAL, -ENOMEM,
 * -ECONNREFUSED, -ETIMEDOUT, -EIO. Thread-safe like blockclient_run(). */
int blockclient_list(struct blockclient *bc, uint16_t server, const char *prefix,
		     const char *token, struct blockclient_object *objs, size_t max,
		     size_t *ret_n, char *next_token, size_t token_size);

#endif
