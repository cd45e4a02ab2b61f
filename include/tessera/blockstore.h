/*
 * blockstore: the block servers as the layers above see them, behind a table of functions.
 *
 * data, stripe and scrub never call the libcurl client directly: they run batches of
 * struct blockclient_op through a struct blockstore. Two implementations exist:
 *
 *   - blockstore_client_new(): the real one, over blockclient.h (HTTP, SigV4, health);
 *   - memstore_new(): an in-memory store for tests. It keeps every object in memory, one
 *     bucket per server, and injects faults per server and per request: a server down
 *     (refused), slow (a delay; hedged and quorum requests see it as slow), hung (requests
 *     time out), full (PUT gets ENOSPC), refusing the key (403), failing after N more
 *     requests; objects lost or corrupted at rest; a byte flipped in transit on the next GETs;
 *     and a callback that sees every request and may fail it. In the spirit of SQLite's
 *     test_vfs.c: every fault below the data path can be produced in process, repeatably.
 *
 * The op semantics are those of blockclient.h (results, head/body split, ranges, -EHOSTDOWN for
 * a server in back-off unless force, quorum batches that abandon slow servers), and both
 * implementations keep them: tests on the memstore prove what the code does on the network.
 *
 * Thread-safety: every function may be called from any thread; blockstore_free() once no
 * other call runs.
 */
#ifndef TESSERA_BLOCKSTORE_H
#define TESSERA_BLOCKSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tessera/blockclient.h"

struct blockstore;

struct blockstore_ops {
	int (*run)(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force);
	int (*run_quorum)(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force,
			  unsigned need, unsigned grace_ms);
	int (*list)(struct blockstore *bs, uint16_t server, const char *prefix, const char *token,
		    struct blockclient_object *objs, size_t max, size_t *ret_n, char *next_token,
		    size_t token_size);
	bool (*server_up)(struct blockstore *bs, uint16_t id);
	int (*health)(struct blockstore *bs, uint16_t id, struct blockclient_health_info *ret);
	void (*mark)(struct blockstore *bs, uint16_t id, bool up);
	void (*free)(struct blockstore *bs);
};

/* Implementations embed this as their first member. */
struct blockstore {
	const struct blockstore_ops *ops;
};

/* The operations, with the meaning of blockclient_run(), blockclient_run_quorum(),
 * blockclient_list(), blockclient_server_up() and blockclient_mark(). */
int blockstore_run(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force);
int blockstore_run_quorum(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force,
			  unsigned need, unsigned grace_ms);
int blockstore_list(struct blockstore *bs, uint16_t server, const char *prefix, const char *token,
		    struct blockclient_object *objs, size_t max, size_t *ret_n, char *next_token,
		    size_t token_size);
bool blockstore_server_up(struct blockstore *bs, uint16_t id);
/* A server's state, as blockclient_health(): 0 or -EINVAL. */
int blockstore_health(struct blockstore *bs, uint16_t id, struct blockclient_health_info *ret);
/* Whether a write should try server id: it is up, suspect (no probe has decided yet), or down
 * with connections refused (a try costs nothing). Not when it is down with timeouts: a try
 * would hold the write for the hedge. */
bool blockstore_worth_trying(struct blockstore *bs, uint16_t id);
void blockstore_mark(struct blockstore *bs, uint16_t id, bool up);
/* Accepts NULL. */
void blockstore_free(struct blockstore *bs);

/* Sends each server ids[i] (also one marked down) a signed HEAD of key, an object that need not
 * exist (proto_access_key()), and sets refusal[i]: 0 when it takes the request (200 or 404) or
 * does not answer (that proves nothing), -EACCES when it refuses the access key, -ETIME when it
 * refuses the request's time (the two clocks differ by more than 15 minutes). Returns how many
 * refuse, or -ENOMEM. */
int blockstore_check_access(struct blockstore *bs, const uint16_t *ids, size_t n, const char *key,
			    int *refusal);
/* What a refusal of blockstore_check_access() means, for messages: "refuses the filesystem's
 * access key", or the clock one. */
const char *blockstore_refusal_str(int refusal);

/* One server's GET /-/status. */
struct blockstore_status {
	int result;        /* 0, or the request's error (the server did not answer, ...) */
	uint64_t capacity; /* bytes of its data directories (0 when result != 0) */
	uint64_t free;     /* bytes free for fragments */
};
/* Asks each server ids[i] (force: also those marked down) for its status. Returns how many
 * answered, or -ENOMEM. */
int blockstore_status(struct blockstore *bs, const uint16_t *ids, size_t n, bool force,
		      struct blockstore_status *ret);

/* ---- the libcurl client ---- */

/* blockclient_new() wrapped in a blockstore; the arguments as there. */
int blockstore_client_new(const struct blockclient_config *cfg, const uint16_t *ids,
			  const char *const *urls, size_t n, struct blockstore **ret);

/* ---- the in-memory store for tests ---- */

struct memstore;

/* A store with servers ids[0..n-1], each empty, up, with `capacity` bytes (0 = 1 TiB).
 * Objects go to the bucket of their server; /-/status answers as blockd does (capacity, free,
 * objects). Returns 0 and *ret (its blockstore: memstore_store(); free with
 * blockstore_free()), -EINVAL, -ENOMEM. */
int memstore_new(const uint16_t *ids, size_t n, uint64_t capacity, struct memstore **ret);
struct blockstore *memstore_store(struct memstore *ms);
/* The timeout of a request that gives none (default 1000 ms), and the back-off of a server
 * after a transport failure (default 1000 ms; 0: the next request probes it). */
void memstore_set_timeout_ms(struct memstore *ms, unsigned timeout_ms);
void memstore_set_backoff_ms(struct memstore *ms, unsigned backoff_ms);

/* Faults of one server. A field left zero is no fault. */
struct memstore_faults {
	bool down;             /* every request: -ECONNREFUSED (the server marked down) */
	bool hung;             /* every request waits its timeout, then -ETIMEDOUT */
	unsigned delay_ms;     /* every request takes this long (a request whose timeout is
	                          shorter waits the timeout and gets -ETIMEDOUT) */
	bool full;             /* PUT: -ENOSPC (507) */
	bool refuse_key;       /* every request: -EACCES (403) */
	long fail_after;       /* > 0: after this many more requests the server goes down */
	unsigned flip_gets;    /* the next N successful GETs of a fragment get one byte flipped
	                          in transit (the stored object stays intact) */
};
/* Sets (replaces) a server's faults. Unknown id: -EINVAL. */
int memstore_set_faults(struct memstore *ms, uint16_t id, const struct memstore_faults *f);

/* Called for every request before it is served (with no lock held); a non-zero return fails
 * it with that result (e.g. -EIO) without touching the store. NULL removes it. */
typedef int (*memstore_hook_fn)(void *ctx, const struct blockclient_op *op);
void memstore_set_hook(struct memstore *ms, memstore_hook_fn fn, void *ctx);

/* Objects at rest. get copies at most size bytes and sets *ret_len to the object's length. */
int memstore_get(struct memstore *ms, uint16_t id, const char *key, void *buf, size_t size,
		 size_t *ret_len);
int memstore_put(struct memstore *ms, uint16_t id, const char *key, const void *buf,
		 size_t len);
int memstore_delete(struct memstore *ms, uint16_t id, const char *key);
/* Flips the byte at offset of a stored object. -ENOENT, -ERANGE. */
int memstore_corrupt(struct memstore *ms, uint16_t id, const char *key, size_t offset);
/* Removes every object of a server (a wiped disk). */
int memstore_wipe(struct memstore *ms, uint16_t id);
/* Objects on a server whose key starts with prefix; -EINVAL for an unknown id. */
long memstore_count(struct memstore *ms, uint16_t id, const char *prefix);
/* Requests served so far (all servers, every method), for tests that count round trips. */
uint64_t memstore_requests(struct memstore *ms, enum blockclient_method method);

#endif
