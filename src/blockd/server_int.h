/*
 * blockd/server internals: the request state and the helpers shared by the front end's files.
 *
 *   server.c          request dispatch, responses, authentication, job threads, lifecycle
 *   server_objects.c  GET, HEAD and DELETE of objects; bucket requests and listings
 *   server_put.c      PUT: headers, the body (plain or aws-chunked), digests, the commit
 *   server_status.c   GET /-/status, GET /metrics and the counters behind them
 *
 * The threading rules and invariants are in server.c's header comment.
 */
#ifndef TESSERA_BLOCKD_SERVER_INT_H
#define TESSERA_BLOCKD_SERVER_INT_H

#include <microhttpd.h>

#include "blockd_int.h"
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

/* Metrics dimensions (server_status.c): methods, statuses, latency buckets. */
#define BD_N_METHODS 6
#define BD_N_STATUSES 18 /* the statuses counted plus "other" */
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
	struct proto_chunked ck;
	uint64_t decoded_len; /* x-amz-decoded-content-length, UINT64_MAX when absent */

	/* A step run on a job thread (run_job()). */
	struct MHD_Connection *conn; /* suspended, resumed by the job thread */
	bd_job_fn job;
	bd_reply_fn job_reply;
	int job_result;
	struct bd_req *job_next;      /* in the job queue, under job_lock */
};

/* ---- server.c */

void bd_detail(struct bd_req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool bd_method_is(const struct bd_req *r, const char *m);
/* Queues resp (consumed) with status; the request is answered (BD_DONE). */
enum MHD_Result bd_queue(struct bd_req *r, struct MHD_Connection *c, unsigned status,
			 struct MHD_Response *resp);
/* An S3 error document for err (proto_s3_error_by_errno()), message or the table's, with one
 * extra header when hname is not NULL. */
enum MHD_Result bd_reply_error_hdr(struct bd_req *r, struct MHD_Connection *c, int err,
				   const char *message, const char *hname, const char *hval);
enum MHD_Result bd_reply_error(struct bd_req *r, struct MHD_Connection *c, int err,
			       const char *message);
enum MHD_Result bd_reply_empty(struct bd_req *r, struct MHD_Connection *c, unsigned status);
/* A 200 with d's text (taken over: freed here), or 503 when d failed. */
enum MHD_Result bd_reply_text(struct bd_req *r, struct MHD_Connection *c, struct tstr *d,
			      const char *content_type);
/* Verifies the request's signature; body_sha256_hex as for proto_sigv4_verify().
 * Returns 0 or the negative errno of the S3 error to send. */
int bd_authenticate(struct bd_req *r, struct MHD_Connection *c, const char *body_sha256_hex);
/* Runs job(r) on a job thread with c suspended; the handler call after the resume answers
 * with reply(r, c). Must be called from the handler, on the call that would answer. */
enum MHD_Result bd_run_job(struct bd_req *r, struct MHD_Connection *c, bd_job_fn job,
			   bd_reply_fn reply);

/* ---- server_objects.c */

enum MHD_Result bd_serve_object(struct bd_req *r, struct MHD_Connection *c); /* GET, HEAD */
enum MHD_Result bd_delete_object(struct bd_req *r, struct MHD_Connection *c);
enum MHD_Result bd_bucket_request(struct bd_req *r, struct MHD_Connection *c);

/* ---- server_put.c */

/* First handler call of a PUT of an object: checks the headers, opens the temp file. */
enum MHD_Result bd_begin_put(struct bd_req *r, struct MHD_Connection *c);
/* Body bytes as they arrive. Returns false to cut the connection (a body past
 * cfg.body_timeout_s, or one that keeps coming after an error). */
bool bd_put_body(struct bd_req *r, const char *data, size_t n);
/* The body ended: checks it, then commits it on a job thread. */
enum MHD_Result bd_finish_put(struct bd_req *r, struct MHD_Connection *c);

/* ---- server_status.c */

enum MHD_Result bd_reply_status(struct bd_req *r, struct MHD_Connection *c);
enum MHD_Result bd_reply_metrics(struct bd_req *r, struct MHD_Connection *c);
/* Adds a finished request to the counters of /metrics. */
void bd_record_stats(struct blockd *b, const struct bd_req *r);

#endif
