/*
 * control/server: the daemon's side of the control socket (protocol and threads: control.h).
 *
 * The listener thread accepts connections (poll on the socket and on a wake-up pipe that
 * control_stop() writes). A connection from another user is closed; while a scrub runs, a
 * second one gets "error EBUSY". Otherwise a runner thread reads the request, runs scrub_run()
 * on the host's metadata and block store with opt.meta_lock = the host's inode lock and
 * opt.in_use = the host's callback, and a sender thread writes the queued lines to the socket.
 * The server knows the daemon only through struct control_host.
 *
 * Locks: ctl->lock protects ctl->job (the running scrub, or NULL) and job->s (so that
 * control_stop() can cancel it); job->qlock protects the output queue. The scrub's callbacks
 * only append to the queue (never block on the socket: they may run under the inode lock).
 * Lock order: inode lock (held by the scrub engine around some callbacks), then job->qlock.
 */
#include "control_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tessera/blockstore.h"
#include "tessera/meta.h"

#define CONTROL_REQUEST_TIMEOUT_S 10
#define CONTROL_PEEK_MS 1000 /* how long the listener waits for a first line (health) */
#define CONTROL_SEND_TIMEOUT_S 60

struct job {
	struct control *ctl;
	int fd;
	struct scrub *s;            /* under ctl->lock */
	atomic_bool dead;           /* the client went away */
	pthread_mutex_t qlock;      /* the queue */
	pthread_cond_t qcond;
	char *q;
	size_t qlen, qcap;
	bool finished;              /* no more lines will be queued */
	uint64_t dropped;
	uint64_t progress_at_ns;
};

struct control {
	struct control_host host;
	const char *meta_dir;
	char ckpt_path[PATH_MAX];
	int dirfd;                  /* O_PATH of meta_dir: unlinkat of the socket */
	int lfd;
	int wake[2];
	pthread_t listener;
	bool listening;
	pthread_mutex_t lock;       /* job, job_thread, job_done */
	pthread_cond_t done_cond;   /* job_done became true */
	struct job *job;
	pthread_t job_thread;
	bool job_joinable;          /* job_thread must be joined */
	bool job_done;
};

/* Appends one line to the queue; progress lines (droppable) only while the queue is small,
 * other lines up to CONTROL_QUEUE_MAX, always the last ones (force). */
static void queue_line(struct job *j, const char *line, size_t len, bool droppable, bool force)
{
	pthread_mutex_lock(&j->qlock);
	if (atomic_load(&j->dead) || (droppable && j->qlen > CONTROL_QUEUE_MAX / 4) ||
	    (!force && j->qlen + len > CONTROL_QUEUE_MAX)) {
		if (!droppable)
			j->dropped++;
		goto out;
	}
	if (j->qlen + len > j->qcap) {
		size_t cap = TESSERA_MAX(j->qcap * 2, j->qlen + len + 4096);
		char *q = realloc(j->q, cap);
		if (!q) {
			j->dropped++;
			goto out;
		}
		j->q = q;
		j->qcap = cap;
	}
	memcpy(j->q + j->qlen, line, len);
	j->qlen += len;
	pthread_cond_signal(&j->qcond);
out:
	pthread_mutex_unlock(&j->qlock);
}

static void job_event(void *ctx, const struct scrub_event *ev)
{
	struct job *j = ctx;
	char line[CONTROL_LINE_MAX];
	int n = control_event_encode(ev, line, sizeof(line));

	if (n > 0)
		queue_line(j, line, (size_t)n, false, false);
}

static void job_progress(void *ctx, const char *phase, uint64_t done, uint64_t total,
			 uint64_t bytes)
{
	struct job *j = ctx;
	char line[256];
	int n = control_progress_encode(phase, done, total, bytes, line, sizeof(line));

	if (n > 0)
		queue_line(j, line, (size_t)n, true, false);
}

/* Cancels the scrub; gone: the client cannot be written to any more (else it half-closed the
 * connection to ask for the cancel, and still reads the end of the report). */
static void job_cancel(struct job *j, bool gone)
{
	struct control *ctl = j->ctl;

	if (gone)
		atomic_store(&j->dead, true);
	pthread_mutex_lock(&ctl->lock);
	if (j->s)
		scrub_cancel(j->s);
	pthread_mutex_unlock(&ctl->lock);
}

static void *sender_main(void *arg)
{
	struct job *j = arg;
	bool cancelled = false;

	for (;;) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += CONTROL_POLL_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_mutex_lock(&j->qlock);
		while (j->qlen == 0 && !j->finished)
			if (pthread_cond_timedwait(&j->qcond, &j->qlock, &until) != 0)
				break;
		char *buf = j->q;
		size_t len = j->qlen;
		bool fin = j->finished;
		j->q = NULL;
		j->qlen = j->qcap = 0;
		pthread_mutex_unlock(&j->qlock);
		if (len && !atomic_load(&j->dead) && control_send_all(j->fd, buf, len) < 0)
			job_cancel(j, true);
		free(buf);
		if (fin && len == 0)
			break;
		struct pollfd p = { .fd = j->fd, .events = POLLRDHUP };
		if (!fin && !cancelled && !atomic_load(&j->dead) && poll(&p, 1, 0) > 0 &&
		    (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
			/* the client went away, or shut its side down to ask for a cancel */
			job_cancel(j, (p.revents & (POLLHUP | POLLERR)) != 0);
			cancelled = true;
		}
	}
	return NULL;
}

/* Reads the request line (at most CONTROL_LINE_MAX bytes, CONTROL_REQUEST_TIMEOUT_S). */
static int read_request(int fd, char *buf, size_t size)
{
	size_t len = 0;

	while (len + 1 < size) {
		ssize_t n = recv(fd, buf + len, size - 1 - len, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		char *nl = memchr(buf + len, '\n', (size_t)n);
		len += (size_t)n;
		if (nl) {
			*nl = '\0';
			return 0;
		}
	}
	return -EPROTO;
}

static void reply_error(int fd, int err, const char *msg)
{
	char line[512];
	int n = control_error_encode(err, msg, line, sizeof(line));

	if (n > 0)
		(void)control_send_all(fd, line, (size_t)n);
}

/* "backup 1 DEST": a metadata backup (meta_backup()) into DEST, an absolute path; the answer
 * is "end RESULT". It holds the job slot, so it never runs beside a scrub. */
static void run_backup(struct job *j, struct meta *meta, char *line)
{
	char reply[64];
	const char *dest;
	int r, n;

	if (control_backup_decode(line, &dest) < 0) {
		reply_error(j->fd, -EINVAL, "bad request");
		return;
	}
	r = meta_backup(meta, dest);
	if (r == 0)
		tlog_info("metadata backed up to '%s'", dest);
	else
		tlog_warn("metadata backup to '%s' failed: %s", dest, strerror(-r));
	n = control_end_encode(r, reply, sizeof(reply));
	if (n > 0)
		(void)control_send_all(j->fd, reply, (size_t)n);
}

static void *runner_main(void *arg)
{
	struct job *j = arg;
	struct control *ctl = j->ctl;
	struct meta *meta = ctl->host.meta;
	const struct meta_superblock *sb = meta_superblock(meta);
	struct scrub_options opt;
	struct scrub_stats st;
	struct scrub *s = NULL;
	pthread_t sender;
	bool sending = false;
	char line[CONTROL_LINE_MAX];
	int r, n;

	memset(&st, 0, sizeof(st));
	r = read_request(j->fd, line, sizeof(line));
	if (r == 0 && strncmp(line, "backup ", 7) == 0) {
		run_backup(j, meta, line);
		goto out;
	}
	if (r == 0)
		r = control_request_decode(line, &opt);
	if (r < 0) {
		reply_error(j->fd, r == -EPROTO ? -EPROTO : -EINVAL, "bad request");
		goto out;
	}
	opt.checkpoint = ctl->ckpt_path;
	opt.meta_lock = ctl->host.inode_lock;
	opt.in_use = ctl->host.in_use;
	opt.in_use_ctx = ctl->host.ctx;
	opt.on_event = job_event;
	opt.on_progress = job_progress;
	opt.ctx = j;
	r = scrub_new(meta, ctl->host.bs, &opt, &s);
	if (r < 0) {
		reply_error(j->fd, r, "cannot start the scrub");
		goto out;
	}
	struct control_info info = { .k = sb->k, .m = sb->m, .n_servers = sb->n_servers };
	tuuid_format(sb->fs_uuid, info.fs_uuid);
	n = control_hello_encode(&info, line, sizeof(line));
	if (n > 0)
		queue_line(j, line, (size_t)n, false, true);
	if (pthread_create(&sender, NULL, sender_main, j) != 0) {
		reply_error(j->fd, -EAGAIN, "cannot start a thread");
		goto out;
	}
	sending = true;
	pthread_mutex_lock(&ctl->lock);
	j->s = s;
	bool dead = atomic_load(&j->dead);
	pthread_mutex_unlock(&ctl->lock);
	if (dead)
		scrub_cancel(s);
	tlog_info("scrub started from the control socket%s%s%s", opt.dry_run ? ", dry run" : "",
		  opt.deep ? ", deep" : "", opt.gc ? ", gc" : "");
	r = scrub_run(s, &st);
	tlog_info("scrub %s%s%s: %" PRIu64 " stripes, %" PRIu64 " fragments rebuilt, %" PRIu64
		  " errors fixed, %" PRIu64 " left", r == 0 ? "done" : r == -ECANCELED ?
		  "cancelled" : "failed", r < 0 && r != -ECANCELED ? ": " : "",
		  r < 0 && r != -ECANCELED ? strerror(-r) : "", st.stripes, st.frags_rebuilt,
		  st.errors_fixed, st.errors_left);
	pthread_mutex_lock(&j->qlock);
	uint64_t dropped = j->dropped;
	pthread_mutex_unlock(&j->qlock);
	if (dropped) {
		char msg[128];
		snprintf(msg, sizeof(msg), "%" PRIu64 " findings were not sent (the client did not "
			 "keep up); see the counters", dropped);
		n = control_event_encode(&(struct scrub_event){ .kind = SCRUB_EV_WARNING,
								.index = -1, .server = -1,
								.msg = msg }, line, sizeof(line));
		if (n > 0)
			queue_line(j, line, (size_t)n, false, true);
		st.warnings++;
	}
	n = control_stats_encode(&st, line, sizeof(line));
	if (n > 0)
		queue_line(j, line, (size_t)n, false, true);
	n = control_end_encode(r, line, sizeof(line));
	if (n > 0)
		queue_line(j, line, (size_t)n, false, true);
out:
	pthread_mutex_lock(&j->qlock);
	j->finished = true;
	pthread_cond_signal(&j->qcond);
	pthread_mutex_unlock(&j->qlock);
	if (sending)
		pthread_join(sender, NULL);
	pthread_mutex_lock(&ctl->lock);
	j->s = NULL;
	ctl->job_done = true;
	pthread_cond_broadcast(&ctl->done_cond);
	pthread_mutex_unlock(&ctl->lock);
	scrub_free(s);
	return NULL;
}

static void job_free(struct job *j)
{
	if (!j)
		return;
	if (j->fd >= 0)
		close(j->fd);
	pthread_mutex_destroy(&j->qlock);
	pthread_cond_destroy(&j->qcond);
	free(j->q);
	free(j);
}

/* With ctl->lock held: joins a finished scrub. */
static void reap_job_locked(struct control *ctl)
{
	if (ctl->job_joinable && ctl->job_done) {
		pthread_join(ctl->job_thread, NULL);
		job_free(ctl->job);
		ctl->job = NULL;
		ctl->job_joinable = false;
	}
}

/* A health request is answered here, on the listener thread, at once and also beside a
 * running scrub: it only reads the block store's health table. Returns false (nothing read)
 * when the connection's first line is not one. */
static bool answer_health(struct control *ctl, int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char peek[8], line[CONTROL_LINE_MAX];
	ssize_t got;
	int n;

	if (poll(&p, 1, CONTROL_PEEK_MS) <= 0)
		return false;
	got = recv(fd, peek, sizeof(peek), MSG_PEEK);
	if (got < 7 || memcmp(peek, "health ", 7) != 0)
		return false;
	if (read_request(fd, line, sizeof(line)) < 0 || strcmp(line, "health 1") != 0) {
		reply_error(fd, -EINVAL, "bad request");
		return true;
	}
	const struct meta_superblock *sb = meta_superblock(ctl->host.meta);
	for (uint32_t i = 0; i < sb->n_servers; i++) {
		struct blockclient_health_info h;
		if (blockstore_health(ctl->host.bs, sb->servers[i].id, &h) < 0)
			continue; /* retired: not in the daemon's store */
		struct control_server_health sh = { .id = sb->servers[i].id, .state = h.state,
						    .since_s = h.since_s, .last_err = h.last_err };
		n = control_server_encode(&sh, line, sizeof(line));
		if (n < 0 || control_send_all(fd, line, (size_t)n) < 0)
			return true;
	}
	n = control_end_encode(0, line, sizeof(line));
	if (n > 0)
		(void)control_send_all(fd, line, (size_t)n);
	return true;
}

static void handle_client(struct control *ctl, int fd)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct timeval rt = { .tv_sec = CONTROL_REQUEST_TIMEOUT_S };
	struct timeval st = { .tv_sec = CONTROL_SEND_TIMEOUT_S };
	struct job *j;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0 ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		reply_error(fd, -EACCES, "permission denied");
		close(fd);
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof(rt));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &st, sizeof(st));
	if (answer_health(ctl, fd)) {
		close(fd);
		return;
	}
	pthread_mutex_lock(&ctl->lock);
	reap_job_locked(ctl);
	if (ctl->job) {
		/* one that is finishing (its client has its report already) is waited for */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 2;
		while (!ctl->job_done &&
		       pthread_cond_timedwait(&ctl->done_cond, &ctl->lock, &until) == 0)
			;
		reap_job_locked(ctl);
	}
	if (ctl->job) {
		pthread_mutex_unlock(&ctl->lock);
		reply_error(fd, -EBUSY, "a scrub is already running");
		close(fd);
		return;
	}
	j = calloc(1, sizeof(*j));
	if (!j) {
		pthread_mutex_unlock(&ctl->lock);
		close(fd);
		return;
	}
	j->ctl = ctl;
	j->fd = fd;
	atomic_init(&j->dead, false);
	pthread_mutex_init(&j->qlock, NULL);
	pthread_cond_init(&j->qcond, NULL);
	ctl->job = j;
	ctl->job_done = false;
	if (pthread_create(&ctl->job_thread, NULL, runner_main, j) != 0) {
		ctl->job = NULL;
		pthread_mutex_unlock(&ctl->lock);
		reply_error(fd, -EAGAIN, "cannot start a thread");
		job_free(j);
		return;
	}
	ctl->job_joinable = true;
	pthread_mutex_unlock(&ctl->lock);
}

static void *listener_main(void *arg)
{
	struct control *ctl = arg;

	for (;;) {
		struct pollfd p[2] = { { .fd = ctl->lfd, .events = POLLIN },
				       { .fd = ctl->wake[0], .events = POLLIN } };
		int n = poll(p, 2, 1000);
		if (n < 0 && errno != EINTR)
			break;
		if (p[1].revents)
			break;
		pthread_mutex_lock(&ctl->lock);
		reap_job_locked(ctl);
		pthread_mutex_unlock(&ctl->lock);
		if (n <= 0 || !(p[0].revents & POLLIN))
			continue;
		int fd = accept4(ctl->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0)
			handle_client(ctl, fd);
	}
	return NULL;
}

int control_start(const struct control_host *host, const char *meta_dir, struct control **ret)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	struct sockaddr_un addr;
	int r, tmpfd = -1;

	if (!ctl)
		return -ENOMEM;
	ctl->host = *host;
	ctl->meta_dir = meta_dir;
	ctl->lfd = ctl->wake[0] = ctl->wake[1] = -1;
	pthread_mutex_init(&ctl->lock, NULL);
	pthread_cond_init(&ctl->done_cond, NULL);
	if (snprintf(ctl->ckpt_path, sizeof(ctl->ckpt_path), "%s/%s", meta_dir,
		     SCRUB_CHECKPOINT_NAME) >= (int)sizeof(ctl->ckpt_path)) {
		r = -ENAMETOOLONG;
		goto fail;
	}
	ctl->dirfd = open(meta_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (ctl->dirfd < 0) {
		r = -errno;
		goto fail;
	}
	r = control_socket_addr(meta_dir, &addr, &tmpfd);
	if (r < 0)
		goto fail;
	if (pipe2(ctl->wake, O_CLOEXEC) < 0) {
		r = -errno;
		goto fail;
	}
	ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl->lfd < 0) {
		r = -errno;
		goto fail;
	}
	/* A stale socket of a daemon that died: this process holds the metadata now. */
	(void)unlinkat(ctl->dirfd, CONTROL_SOCKET_NAME, 0);
	/* 0600 from the start: the umask is process-wide, but no other thread of ours creates
	 * files that must be readable by others. */
	mode_t old = umask(0177);
	r = bind(ctl->lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ? -errno : 0;
	umask(old);
	if (r < 0)
		goto fail;
	if (listen(ctl->lfd, 4) < 0) {
		r = -errno;
		goto fail;
	}
	if (pthread_create(&ctl->listener, NULL, listener_main, ctl) != 0) {
		r = -EAGAIN;
		goto fail;
	}
	ctl->listening = true;
	if (tmpfd >= 0)
		close(tmpfd);
	*ret = ctl;
	return 0;
fail:
	if (tmpfd >= 0)
		close(tmpfd);
	if (ctl->lfd >= 0) {
		close(ctl->lfd);
		ctl->lfd = -1;
		(void)unlinkat(ctl->dirfd, CONTROL_SOCKET_NAME, 0);
	}
	control_stop(ctl);
	return r;
}

void control_stop(struct control *ctl)
{
	if (!ctl)
		return;
	if (ctl->listening) {
		char b = 1;
		if (write(ctl->wake[1], &b, 1) < 0)
			tlog_debug("control: wake-up write failed: %s", strerror(errno));
		pthread_join(ctl->listener, NULL);
	}
	pthread_mutex_lock(&ctl->lock);
	if (ctl->job) {
		atomic_store(&ctl->job->dead, true);
		if (ctl->job->s)
			scrub_cancel(ctl->job->s);
		shutdown(ctl->job->fd, SHUT_RDWR); /* a runner still reading the request */
	}
	bool join = ctl->job_joinable;
	pthread_mutex_unlock(&ctl->lock);
	if (join) {
		pthread_join(ctl->job_thread, NULL);
		/* a cancel that raced with the runner setting j->s */
		job_free(ctl->job);
	}
	if (ctl->lfd >= 0) {
		close(ctl->lfd);
		(void)unlinkat(ctl->dirfd, CONTROL_SOCKET_NAME, 0);
	}
	if (ctl->dirfd >= 0)
		close(ctl->dirfd);
	if (ctl->wake[0] >= 0)
		close(ctl->wake[0]);
	if (ctl->wake[1] >= 0)
		close(ctl->wake[1]);
	pthread_mutex_destroy(&ctl->lock);
	pthread_cond_destroy(&ctl->done_cond);
	free(ctl);
}
