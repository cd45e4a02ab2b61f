/*
 * blockd: the block server as a library (src/blockd/main.c is a thin main over it).
 *
 * Serves a path-style S3 subset over HTTP/1.1 with libmicrohttpd: PUT, GET (Range), HEAD,
 * DELETE of /{bucket}/{key}, plus GET /-/status. Every request except /-/status must carry
 * a valid AWS SigV4 signature. Objects are files under DATA/objects/{bucket}/{key}; a PUT is
 * durable before it is answered (temp file, fsync, rename, fsync of the directory).
 * Also GET /{bucket}?list-type=2 (ListObjectsV2: prefix, start-after, continuation-token,
 * max-keys; no delimiter) and GET /metrics (Prometheus text, unauthenticated like status).
 *
 * Threads: blockd_start() runs libmicrohttpd with a pool of event-loop threads (threads,
 * default one per CPU) serving at most max_connections connections, plus job threads for
 * the steps that wait for the disk (a PUT's commit, DELETE) and a deleter thread for
 * replaced objects; the on_request callback is called from the event-loop threads
 * concurrently.
 * The library logs at debug level, except blockd_start(), which logs once at error level why
 * it could not start; the program decides what to print about requests (on_request).
 */
#ifndef TESSERA_BLOCKD_H
#define TESSERA_BLOCKD_H

#include <stddef.h>
#include <stdint.h>

#define BLOCKD_MAX_DIRS 16
#define BLOCKD_MAX_KEYS 16
#define BLOCKD_DEFAULT_MAX_OBJECT (64u << 20)

/* What happened to one request, for the program's log. All strings borrowed for the call. */
struct blockd_request_info {
	const char *method;     /* "PUT" */
	const char *uri;        /* the request target as received (path and query) */
	unsigned status;        /* HTTP status sent; 0 when the client went away first */
	const char *s3_code;    /* S3 error code, NULL on success */
	const char *detail;     /* server-side detail of a failure ("write: No space left..."), or NULL */
	const char *request_id; /* as sent in x-amz-request-id */
	uint64_t bytes_in;      /* request body bytes received */
	uint64_t duration_ns;
};

/* Called once per finished request, from the connection's thread. */
typedef void (*blockd_request_fn)(void *ctx, const struct blockd_request_info *info);

struct blockd_key {
	char access_key[128];
	char secret_key[128];
};

struct blockd_config {
	char listen_addr[64];          /* "127.0.0.1" or "::1" */
	uint16_t listen_port;          /* 0 = ephemeral */
	char port_file[4096];          /* "" = none; the bound port is written there */
	unsigned n_dirs;
	char data_dirs[BLOCKD_MAX_DIRS][4096];
	unsigned n_keys;
	struct blockd_key keys[BLOCKD_MAX_KEYS];
	char region[32];               /* expected credential-scope region, "" = any */
	uint64_t max_object_size;      /* bytes */
	unsigned max_connections;
	unsigned connection_timeout_s; /* idle/slow client limit */
	unsigned body_timeout_s;       /* a PUT body must arrive within this (from its headers) */
	unsigned threads;              /* event-loop threads; 0 = one per online CPU (at most 64) */
	blockd_request_fn on_request;  /* optional */
	void *on_request_ctx;
};

struct blockd;

/* Fills cfg with the defaults. */
void blockd_config_defaults(struct blockd_config *cfg);

/* Adds (or, for a known access key, replaces) a credential. Keys are 1..127 printable
 * non-space ASCII characters, access keys without '/'. Returns 0, -EINVAL (bad key), -ENOSPC (BLOCKD_MAX_KEYS). */
int blockd_config_add_key(struct blockd_config *cfg, const char *access_key,
			  const char *secret_key);

/* Reads a credentials file: lines "ACCESS_KEY SECRET_KEY", '#' comments, blank lines.
 * Returns the number of keys added, or -errno (-EINVAL: a malformed line, its number in
 * *ret_line when ret_line is not NULL). */
int blockd_load_credentials(struct blockd_config *cfg, const char *path, unsigned *ret_line);

/* Creates the data directories' layout, removes temp files left by a crash, binds the
 * socket, starts serving and then writes the port file (atomically). Returns 0 and *ret
 * (stop with blockd_free()) or -errno: -ENOKEY (no credentials), -EINVAL (bad config or
 * listen address), -EADDRINUSE ..., or the error of a data directory. */
int blockd_start(const struct blockd_config *cfg, struct blockd **ret);
/* The port actually bound. */
uint16_t blockd_port(const struct blockd *b);
/* Stops serving (in-flight requests finish) and frees. Accepts NULL. */
void blockd_free(struct blockd *b);

#endif
