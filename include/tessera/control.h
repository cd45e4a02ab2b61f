/*
 * control: the control socket of a mounted tesserafs, and its client.
 *
 * Three parts: the protocol's pure line codec (control_proto.c), the daemon's server
 * (control_server.c: it gets a struct control_host of handles and callbacks, never the
 * filesystem's internals) and the client the tools call (control_client.c).
 *
 * The daemon listens on META_DIR/control.sock (a unix stream socket, mode 0600, removed at
 * exit; only its own user and root may connect: SO_PEERCRED). A client finds it from the
 * mount point: tesserafs mounts with fsname=META_DIR, which /proc/self/mountinfo shows as the
 * mount's source. The requests are a scrub, a metadata backup and the servers' health. For a scrub the daemon
 * runs the scrub engine (scrub.h) itself, on its own metadata, block client and inode lock,
 * so that one process writes RocksDB (the scrubber never opens it while mounted: RocksDB's
 * LOCK forbids it anyway) and every stripe-map change is a compare-and-set under the inode
 * lock. One request at a time.
 * The checkpoint is META_DIR/scrub.checkpoint, as for an unmounted run.
 *
 * Protocol, version 1: text lines of at most CONTROL_LINE_MAX bytes; strings are "-" (none) or
 * "+" and the bytes with '%', controls, space and DEL as %XX.
 *   client: scrub 1 NAME=VALUE ...  (CONTROL_SCRUB_OPTIONS, each at most once, any order)
 *   daemon: hello 1 FS_UUID K M N_SERVERS        (or: error ERRNO MESSAGE, and it closes)
 *           event KIND FIXED INO STRIPE INDEX SERVER OFF LEN PATH KEY MSG   (any number)
 *           progress PHASE DONE TOTAL BYTES                                 (any number)
 *           stats NAME=VALUE ...   (every SCRUB_STATS_FIELDS counter)
 *           end RESULT             (scrub_run()'s result: 0 or -errno)
 *   client: backup 1 DEST            (DEST an absolute path: meta_backup() into it)
 *   daemon: end RESULT               (0 or -errno), or error ERRNO MESSAGE
 *   client: health 1                 (the daemon's view of every server of the list)
 *   daemon: server ID STATE SINCE ERRNO   (one per server: STATE 0 up, 1 suspect, 2 down;
 *                                     SINCE wall-clock seconds; ERRNO the failure or 0)
 *           end 0
 * A health request is answered at once, also while a scrub runs.
 * The client shutting down its side of the connection (or closing it) cancels the scrub
 * (scrub_cancel(): the checkpoint stays, the next run resumes); after a shutdown the report
 * (stats, end -ECANCELED) still comes. A request while a scrub runs waits up to 2 s for it to
 * finish, then gets "error EBUSY". Events are queued in memory (at most CONTROL_QUEUE_MAX bytes, then
 * dropped and counted as a warning) so that a slow client never blocks the scrub, nor the
 * filesystem when an event is reported under the inode lock.
 *
 * Threads (daemon): one listener thread; per scrub one runner thread (scrub_run) and one
 * sender thread (writes the queue to the socket, notices a client that went away).
 * Client functions: one connection per thread, blocking I/O.
 */
#ifndef TESSERA_CONTROL_H
#define TESSERA_CONTROL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <pthread.h>

#include "tessera/blockclient.h"
#include "tessera/scrub.h"

struct blockstore;
struct meta;

#define CONTROL_SOCKET_NAME "control.sock"
#define CONTROL_LINE_MAX 16384
#define CONTROL_QUEUE_MAX (4u << 20)
#define CONTROL_VERSION 1

/* The options of a scrub request: X(name on the wire, field of struct scrub_options, largest
 * value accepted). */
#define CONTROL_SCRUB_OPTIONS(X)                 \
	X(dry_run, dry_run, 1)                   \
	X(deep, deep, 1)                         \
	X(gc, gc, 1)                             \
	X(gc_grace, gc_grace_s, UINT64_MAX)      \
	X(gc_grace_set, gc_grace_set, 1)         \
	X(no_namespace, skip_namespace, 1)       \
	X(jobs, jobs, SCRUB_MAX_JOBS)            \
	X(rate_limit, rate_limit, UINT64_MAX)    \
	X(window, window, UINT64_MAX)            \
	X(no_resume, no_resume, 1)

/* ---- daemon side ---- */

/* What the server needs of the daemon, borrowed until control_stop(). */
struct control_host {
	struct meta *meta;             /* the daemon's open metadata */
	struct blockstore *bs;         /* its block store */
	pthread_mutex_t *inode_lock;   /* the lock of every metadata read-check-write */
	/* Whether an unlinked inode is still in use (open, or known to the kernel): the
	 * scrubber leaves those alone. */
	bool (*in_use)(void *ctx, uint64_t ino);
	void *ctx;
};

struct control;

/* Binds META_DIR/control.sock (a stale one is replaced: the caller holds the metadata, so no
 * other daemon serves this directory) and starts the listener. host is copied; what it points
 * to and meta_dir are borrowed and must outlive the struct control. Returns 0 and *ret (stop
 * with control_stop()), -errno (socket, bind, thread). */
int control_start(const struct control_host *host, const char *meta_dir, struct control **ret);
/* Stops listening, cancels a running scrub and waits for it (what it repaired is committed),
 * removes the socket, frees. Accepts NULL. */
void control_stop(struct control *c);

/* ---- client side ---- */

struct control_info {
	char fs_uuid[37];
	unsigned k, m, n_servers;
};

struct control_conn;

/* Whether path is the mount point of a tesserafs mount (type fuse.tesserafs, from
 * /proc/self/mountinfo; the mount on top wins); its source, which tesserafs sets to its
 * metadata directory (fsname=), goes to src (size bytes). */
bool control_mount_source(const char *path, char *src, size_t size);

/* Connects to META_DIR/control.sock. Returns 0 and *ret (close with control_close()),
 * -ENOENT (no socket: not mounted, or a daemon without one), -ECONNREFUSED (a stale socket),
 * -EACCES, -errno. */
int control_connect(const char *meta_dir, struct control_conn **ret);
/* Asks the daemon for a metadata backup into dest (absolute path, see meta_backup()) and
 * waits for it. Returns 0 and *ret_result (meta_backup()'s result), -EBUSY (a scrub is
 * running), -EINVAL (dest not absolute), -EPROTO, -ECONNRESET, -errno. */
int control_backup(struct control_conn *c, const char *dest, int *ret_result);

/* One server as the daemon sees it (blockstore_health()). */
struct control_server_health {
	uint16_t id;
	enum blockclient_health state;
	int64_t since_s;
	int last_err;
};
/* Asks the daemon for the health of every server of its list: at most max go to out, their
 * number to *ret_n. Returns 0, -EPROTO, -ECONNRESET, -errno. */
int control_health(struct control_conn *c, struct control_server_health *out, size_t max,
		   size_t *ret_n);

/* Sends the scrub request (opt's flags and numbers; its callbacks stay here) and reads the
 * daemon's answer. Returns 0 and *ret_info, -EBUSY (a scrub is running), the daemon's other
 * -errno, -EPROTO (not the protocol), -ECONNRESET (the daemon closed), -errno. */
int control_scrub_start(struct control_conn *c, const struct scrub_options *opt,
			struct control_info *ret_info);
/* Reads the scrub's events and progress, calling opt->on_event and opt->on_progress on this
 * thread, until the end. *stop (may be NULL; a signal handler may set it) is polled every
 * 200 ms: when set, the connection is half-closed, which makes the daemon cancel the scrub
 * (what was repaired is committed, the checkpoint stays); its report still arrives, with
 * *ret_result -ECANCELED. Returns 0 with *ret_stats and *ret_result (scrub_run()'s result in
 * the daemon), -EPROTO, -ECONNRESET, -ECANCELED (no report within 30 s of the stop), -errno. */
int control_scrub_wait(struct control_conn *c, const struct scrub_options *opt,
		       const volatile sig_atomic_t *stop, struct scrub_stats *ret_stats,
		       int *ret_result);
void control_close(struct control_conn *c);

/* ---- the protocol's lines (exposed for tests) ----
 * Encoders write one line with its '\n' and a NUL; they return its length, or -ENOSPC when
 * size is too small (nothing usable written). */
int control_request_encode(const struct scrub_options *opt, char *out, size_t size);
/* "backup 1 DEST"; -EINVAL when dest is not an absolute path. */
int control_backup_encode(const char *dest, char *out, size_t size);
/* Parses a backup request (without '\n'), decoding DEST in place. Returns 0 and *ret_dest
 * (pointing into line), -EPROTO (not a backup request), -EINVAL (a bad one). */
int control_backup_decode(char *line, const char **ret_dest);
/* "health 1" */
int control_health_encode(char *out, size_t size);
/* "server ID STATE SINCE ERRNO" */
int control_server_encode(const struct control_server_health *h, char *out, size_t size);
int control_hello_encode(const struct control_info *info, char *out, size_t size);
/* err: a negative errno (-4095..-1); -EINVAL otherwise. */
int control_error_encode(int err, const char *msg, char *out, size_t size);
/* result: 0 or a negative errno. */
int control_end_encode(int result, char *out, size_t size);
/* Parses a request line (without '\n') into *ret: only the flags and numbers are set, the
 * rest zeroed. Returns 0, -EPROTO (not a scrub request of this version), -EINVAL (a bad or
 * unknown option). */
int control_request_decode(const char *line, struct scrub_options *ret);
int control_event_encode(const struct scrub_event *ev, char *out, size_t size);
int control_progress_encode(const char *phase, uint64_t done, uint64_t total, uint64_t bytes,
			    char *out, size_t size);
int control_stats_encode(const struct scrub_stats *st, char *out, size_t size);

enum control_msg_kind {
	CONTROL_MSG_HELLO,
	CONTROL_MSG_ERROR,
	CONTROL_MSG_EVENT,
	CONTROL_MSG_PROGRESS,
	CONTROL_MSG_STATS,
	CONTROL_MSG_END,
	CONTROL_MSG_SERVER,
};

struct control_msg {
	enum control_msg_kind kind;
	struct control_info info;     /* HELLO */
	int result;                   /* END: scrub_run()'s result; ERROR: the -errno */
	const char *msg;              /* ERROR: the message */
	struct scrub_event ev;        /* EVENT */
	const char *phase;            /* PROGRESS */
	uint64_t done, total, bytes;  /* PROGRESS */
	struct scrub_stats st;        /* STATS */
	struct control_server_health server; /* SERVER */
};
/* Parses one daemon line (without '\n'), decoding its strings in place: the pointers in *ret
 * point into line. Returns 0, -EPROTO. */
int control_msg_decode(char *line, struct control_msg *ret);

#endif
