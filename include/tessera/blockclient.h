/*
 * blockclient: every HTTP request to the block servers.
 *
 * Requests are S3 path-style (PUT/GET/HEAD/DELETE /{bucket}/{key}) signed with SigV4 by
 * libcurl. blockclient_run() issues a batch of requests in parallel on one curl multi handle
 * and returns when all have finished; multi handles (and with them the keep-alive connection
 * caches) are pooled, so consecutive batches reuse connections.
 *
 * Health: a transport failure (refused, reset, timeout) marks the server down with an
 * exponential back-off (1 s doubling to 30 s); when the back-off expires the next request
 * to it is the probe. HTTP errors do not mark a server down.
 *
 * Thread-safety: all functions may be called from any thread concurrently; the pool and the
 * health table have their own mutex. Only this module sees CURLcode.
 */
#ifndef TESSERA_BLOCKCLIENT_H
#define TESSERA_BLOCKCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
	const void *body;          /* PUT: body, borrowed */
	size_t body_len;
	void *buf;                 /* GET: destination, borrowed */
	size_t buf_size;           /* GET: capacity; a longer object fails with -EMSGSIZE */
	uint64_t range_off;        /* GET: first byte (with range_len) */
	uint64_t range_len;        /* GET: 0 = whole object */
	/* results */
	int result;                /* 0, -ENOENT (404), -ENOSPC (507), -EACCES (403),
	                              -EHOSTDOWN (server marked down, not tried),
	                              -ETIMEDOUT, -ECONNREFUSED, -EMSGSIZE, -EIO */
	long http_status;          /* 0 when no response */
	size_t result_len;         /* GET: bytes received; HEAD: Content-Length */
};

struct blockclient;

/* urls[i] is the base URL of server ids[i] (e.g. "http://127.0.0.1:9000"); both borrowed,
 * copied. Returns 0 and *ret (free with blockclient_free()), -EINVAL, -ENOMEM. */
int blockclient_new(const struct blockclient_config *cfg, const uint16_t *ids,
		    const char *const *urls, size_t n, struct blockclient **ret);
void blockclient_free(struct blockclient *bc);

/* Runs the ops in parallel and waits for all of them. Ops to servers that are marked down
 * and still in back-off fail at once with -EHOSTDOWN unless force is true.
 * Returns the number of ops that succeeded (result == 0). */
int blockclient_run(struct blockclient *bc, struct blockclient_op *ops, size_t n, bool force);

/* Whether a server is currently considered up (not in back-off). Unknown id: false. */
bool blockclient_server_up(struct blockclient *bc, uint16_t id);

/* Marks a server down (e.g. after a failure seen elsewhere) or up. */
void blockclient_mark(struct blockclient *bc, uint16_t id, bool up);

#endif
