/*
 * control: the control socket of a mounted tesserafs (protocol and threads: control.h), and
 * its client (used by tessera-scrub).
 *
 * Daemon side. The listener thread accepts connections (poll on the socket and on a wake-up
 * pipe that control_stop() writes). A connection from another user is closed; while a scrub
 * runs, a second one gets "error EBUSY". Otherwise a runner thread reads the request, runs
 * scrub_run() on the daemon's metadata with opt.meta_lock = the inode lock and opt.in_use =
 * fs_inode_in_use(), and a sender thread writes the queued lines to the socket.
 *
 * Locks: ctl->lock protects ctl->job (the running scrub, or NULL) and job->s (so that
 * control_stop() can cancel it); job->qlock protects the output queue. The scrub's callbacks
 * only append to the queue (never block on the socket: they may run under the inode lock).
 * Lock order: inode lock (held by the scrub engine around some callbacks), then job->qlock.
 *
 * Socket paths longer than sun_path (108 bytes) are reached through /proc/self/fd/N/ of an
 * O_PATH descriptor of the metadata directory, on both sides.
 */
#include "tessera/control.h"

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

#include "tessera/common.h"
#include "tessera/fs.h"
#include "tessera/meta.h"

#define CONTROL_REQUEST_TIMEOUT_S 10
#define CONTROL_SEND_TIMEOUT_S 60
#define CONTROL_POLL_MS 200

/* ---------------------------------------------------------------- line encoding */

struct line {
	char *p;
	size_t len, size;
	bool full;
};

static void line_printf(struct line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line_printf(struct line *l, const char *fmt, ...)
{
	va_list ap;

	if (l->full)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(l->p + l->len, l->size - l->len, fmt, ap);
	va_end(ap);
	if (n < 0 || l->len + (size_t)n >= l->size)
		l->full = true;
	else
		l->len += (size_t)n;
}

static void line_str(struct line *l, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	if (!s) {
		line_printf(l, " -");
		return;
	}
	line_printf(l, " +");
	for (const unsigned char *c = (const unsigned char *)s; *c && !l->full; c++) {
		if (*c <= 0x20 || *c == 0x7f || *c == '%') {
			if (l->len + 3 >= l->size) {
				l->full = true;
				return;
			}
			l->p[l->len++] = '%';
			l->p[l->len++] = hex[*c >> 4];
			l->p[l->len++] = hex[*c & 15];
			l->p[l->len] = '\0';
		} else {
			line_printf(l, "%c", *c);
		}
	}
}

static int line_end(struct line *l)
{
	line_printf(l, "\n");
	return l->full ? -ENOSPC : (int)l->len;
}

int control_request_encode(const struct scrub_options *opt, char *out, size_t size)
{
	struct line l = { .p = out, .size = size, .full = size == 0 };

	line_printf(&l, "scrub %d dry_run=%d deep=%d gc=%d gc_grace=%" PRIu64 " gc_grace_set=%d "
		    "no_namespace=%d jobs=%u rate_limit=%" PRIu64 " window=%" PRIu64
		    " no_resume=%d", CONTROL_VERSION, opt->dry_run, opt->deep, opt->gc,
		    opt->gc_grace_s, opt->gc_grace_set, opt->skip_namespace, opt->jobs,
		    opt->rate_limit, opt->window, opt->no_resume);
	return line_end(&l);
}

static int parse_i64(const char *s, const char **end, int64_t *ret)
{
	uint64_t v;
	bool neg = *s == '-';
	int r = tparse_u64(s + neg, end, &v);

	if (r < 0 || v > (uint64_t)INT64_MAX)
		return -EINVAL;
	*ret = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

int control_request_decode(const char *line, struct scrub_options *ret)
{
	struct scrub_options o;
	const char *p = line;
	uint64_t v;

	memset(&o, 0, sizeof(o));
	if (strncmp(p, "scrub ", 6) != 0 || tparse_u64(p + 6, &p, &v) < 0 || v != CONTROL_VERSION)
		return -EPROTO;
	while (*p == ' ') {
		const char *name = p + 1, *eq = strchr(name, '=');
		if (!eq || tparse_u64(eq + 1, &p, &v) < 0 || (*p && *p != ' '))
			return -EINVAL;
		size_t nl = (size_t)(eq - name);
#define IS(s) (nl == sizeof(s) - 1 && memcmp(name, s, nl) == 0)
		if (IS("dry_run") && v <= 1)
			o.dry_run = v;
		else if (IS("deep") && v <= 1)
			o.deep = v;
		else if (IS("gc") && v <= 1)
			o.gc = v;
		else if (IS("gc_grace"))
			o.gc_grace_s = v;
		else if (IS("gc_grace_set") && v <= 1)
			o.gc_grace_set = v;
		else if (IS("no_namespace") && v <= 1)
			o.skip_namespace = v;
		else if (IS("jobs") && v <= SCRUB_MAX_JOBS)
			o.jobs = (unsigned)v;
		else if (IS("rate_limit"))
			o.rate_limit = v;
		else if (IS("window"))
			o.window = v;
		else if (IS("no_resume") && v <= 1)
			o.no_resume = v;
		else
			return -EINVAL;
#undef IS
	}
	if (*p)
		return -EINVAL;
	*ret = o;
	return 0;
}

int control_event_encode(const struct scrub_event *ev, char *out, size_t size)
{
	struct line l = { .p = out, .size = size, .full = size == 0 };

	line_printf(&l, "event %d %d %" PRIu64 " %" PRIu64 " %d %d %" PRIu64 " %" PRIu64,
		    (int)ev->kind, ev->fixed, ev->ino, ev->stripe, ev->index, ev->server, ev->off,
		    ev->len);
	line_str(&l, ev->path);
	line_str(&l, ev->key);
	line_str(&l, ev->msg ? ev->msg : "");
	return line_end(&l);
}

int control_progress_encode(const char *phase, uint64_t done, uint64_t total, uint64_t bytes,
			    char *out, size_t size)
{
	struct line l = { .p = out, .size = size, .full = size == 0 };

	line_printf(&l, "progress");
	line_str(&l, phase);
	line_printf(&l, " %" PRIu64 " %" PRIu64 " %" PRIu64, done, total, bytes);
	return line_end(&l);
}

int control_stats_encode(const struct scrub_stats *st, char *out, size_t size)
{
	struct line l = { .p = out, .size = size, .full = size == 0 };

	line_printf(&l, "stats");
#define X(f) line_printf(&l, " " #f "=%" PRIu64, st->f);
	SCRUB_STATS_FIELDS(X)
#undef X
	return line_end(&l);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

#define CONTROL_TOKENS_MAX 64

/* Splits line at single spaces (strings never contain one: they are escaped). Returns the
 * number of tokens, or -EPROTO (an empty token, too many). */
static int tokenize(char *line, char **tok)
{
	int n = 0;

	for (char *p = line;;) {
		char *sp = strchr(p, ' ');
		if (n == CONTROL_TOKENS_MAX || (sp ? sp == p : *p == '\0'))
			return -EPROTO;
		tok[n++] = p;
		if (!sp)
			return n;
		*sp = '\0';
		p = sp + 1;
	}
}

static int tok_u64(const char *t, uint64_t *ret)
{
	const char *e;

	return tparse_u64(t, &e, ret) < 0 || *e ? -EPROTO : 0;
}

static int tok_i64(const char *t, int64_t *ret)
{
	const char *e;

	return parse_i64(t, &e, ret) < 0 || *e ? -EPROTO : 0;
}

/* "-": NULL; "+bytes": decoded in place (the result is never longer than the token). */
static int tok_str(char *t, const char **ret)
{
	char *w;

	if (strcmp(t, "-") == 0) {
		*ret = NULL;
		return 0;
	}
	if (*t != '+')
		return -EPROTO;
	*ret = w = t;
	for (char *p = t + 1; *p;) {
		if (*p == '%') {
			int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
			if (lo < 0 || (hi == 0 && lo == 0))
				return -EPROTO;
			*w++ = (char)(hi << 4 | lo);
			p += 3;
		} else {
			*w++ = *p++;
		}
	}
	*w = '\0';
	return 0;
}

int control_msg_decode(char *line, struct control_msg *ret)
{
	struct control_msg m;
	char *t[CONTROL_TOKENS_MAX];
	uint64_t u[4];
	int64_t i[3];
	int n = tokenize(line, t);

	if (n < 0)
		return n;
	memset(&m, 0, sizeof(m));
	if (strcmp(t[0], "hello") == 0) {
		if (n != 6 || tok_u64(t[1], &u[0]) < 0 || u[0] != CONTROL_VERSION ||
		    strlen(t[2]) != 36 || tok_u64(t[3], &u[1]) < 0 || tok_u64(t[4], &u[2]) < 0 ||
		    tok_u64(t[5], &u[3]) < 0 || u[1] > 64 || u[2] > 64 || u[3] > 4096)
			return -EPROTO;
		m.kind = CONTROL_MSG_HELLO;
		memcpy(m.info.fs_uuid, t[2], 37);
		m.info.k = (unsigned)u[1];
		m.info.m = (unsigned)u[2];
		m.info.n_servers = (unsigned)u[3];
	} else if (strcmp(t[0], "error") == 0) {
		if (n != 3 || tok_i64(t[1], &i[0]) < 0 || i[0] <= 0 || i[0] > 4095 ||
		    tok_str(t[2], &m.msg) < 0 || !m.msg)
			return -EPROTO;
		m.kind = CONTROL_MSG_ERROR;
		m.result = -(int)i[0];
	} else if (strcmp(t[0], "event") == 0) {
		if (n != 12 || tok_i64(t[1], &i[0]) < 0 || tok_u64(t[2], &u[0]) < 0 ||
		    tok_u64(t[3], &m.ev.ino) < 0 || tok_u64(t[4], &m.ev.stripe) < 0 ||
		    tok_i64(t[5], &i[1]) < 0 || tok_i64(t[6], &i[2]) < 0 ||
		    tok_u64(t[7], &m.ev.off) < 0 || tok_u64(t[8], &m.ev.len) < 0 ||
		    tok_str(t[9], &m.ev.path) < 0 || tok_str(t[10], &m.ev.key) < 0 ||
		    tok_str(t[11], &m.ev.msg) < 0 || !m.ev.msg)
			return -EPROTO;
		if (i[0] < SCRUB_EV_FRAG_MISSING || i[0] > SCRUB_EV_NOTICE || u[0] > 1 ||
		    i[1] < -1 || i[1] > 63 || i[2] < -1 || i[2] > 65535)
			return -EPROTO;
		m.kind = CONTROL_MSG_EVENT;
		m.ev.kind = (enum scrub_event_kind)i[0];
		m.ev.fixed = u[0];
		m.ev.index = (int)i[1];
		m.ev.server = (int)i[2];
	} else if (strcmp(t[0], "progress") == 0) {
		if (n != 5 || tok_str(t[1], &m.phase) < 0 || !m.phase ||
		    tok_u64(t[2], &m.done) < 0 || tok_u64(t[3], &m.total) < 0 ||
		    tok_u64(t[4], &m.bytes) < 0)
			return -EPROTO;
		m.kind = CONTROL_MSG_PROGRESS;
	} else if (strcmp(t[0], "stats") == 0) {
		for (int k = 1; k < n; k++) {
			char *eq = strchr(t[k], '=');
			if (!eq || tok_u64(eq + 1, &u[0]) < 0)
				return -EPROTO;
			size_t nl = (size_t)(eq - t[k]);
#define X(f)                                                        \
			if (nl == sizeof(#f) - 1 && memcmp(t[k], #f, nl) == 0) \
				m.st.f = u[0];
			SCRUB_STATS_FIELDS(X)
#undef X
		}
		m.kind = CONTROL_MSG_STATS;
	} else if (strcmp(t[0], "end") == 0) {
		if (n != 2 || tok_i64(t[1], &i[0]) < 0 || i[0] > 0 || i[0] < -4095)
			return -EPROTO;
		m.kind = CONTROL_MSG_END;
		m.result = (int)i[0];
	} else {
		return -EPROTO;
	}
	*ret = m;
	return 0;
}

/* ---------------------------------------------------------------- socket paths */

/* Fills addr with META_DIR/control.sock; when that is too long for sun_path, opens the
 * directory (O_PATH, *ret_dirfd, to be closed by the caller) and uses /proc/self/fd/N/. */
static int socket_addr(const char *meta_dir, struct sockaddr_un *addr, int *ret_dirfd)
{
	int n, dirfd = -1;

	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	n = snprintf(addr->sun_path, sizeof(addr->sun_path), "%s/%s", meta_dir,
		     CONTROL_SOCKET_NAME);
	if (n > 0 && (size_t)n < sizeof(addr->sun_path)) {
		*ret_dirfd = -1;
		return 0;
	}
	dirfd = open(meta_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	snprintf(addr->sun_path, sizeof(addr->sun_path), "/proc/self/fd/%d/%s", dirfd,
		 CONTROL_SOCKET_NAME);
	*ret_dirfd = dirfd;
	return 0;
}

/* ---------------------------------------------------------------- daemon side */

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
	struct fs *fs;
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

static bool job_in_use(void *ctx, uint64_t ino)
{
	struct control *ctl = ctx;

	return fs_inode_in_use(ctl->fs, ino);
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

static int send_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EPIPE;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
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
		if (len && !atomic_load(&j->dead) && send_all(j->fd, buf, len) < 0)
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
	struct line l = { .p = line, .size = sizeof(line) };

	line_printf(&l, "error %d", -err);
	line_str(&l, msg);
	if (line_end(&l) > 0)
		(void)send_all(fd, line, l.len);
}

/* "backup 1 DEST": a metadata backup (meta_backup()) into DEST, an absolute path; the answer
 * is "end RESULT". It holds the job slot, so it never runs beside a scrub. */
static void run_backup(struct job *j, struct meta *meta, char *line)
{
	char *t[CONTROL_TOKENS_MAX], reply[64];
	const char *dest = NULL;
	uint64_t v;
	int r, n = tokenize(line, t);

	if (n != 3 || tok_u64(t[1], &v) < 0 || v != CONTROL_VERSION || tok_str(t[2], &dest) < 0 ||
	    !dest || dest[0] != '/') {
		reply_error(j->fd, -EINVAL, "bad request");
		return;
	}
	r = meta_backup(meta, dest);
	if (r == 0)
		tlog_info("metadata backed up to '%s'", dest);
	else
		tlog_warn("metadata backup to '%s' failed: %s", dest, strerror(-r));
	n = snprintf(reply, sizeof(reply), "end %d\n", r);
	(void)send_all(j->fd, reply, (size_t)n);
}

static void *runner_main(void *arg)
{
	struct job *j = arg;
	struct control *ctl = j->ctl;
	struct meta *meta = fs_meta(ctl->fs);
	const struct meta_superblock *sb = meta_superblock(meta);
	struct scrub_options opt;
	struct scrub_stats st;
	struct scrub *s = NULL;
	pthread_t sender;
	bool sending = false;
	char line[CONTROL_LINE_MAX], uuid[37];
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
	opt.meta_lock = fs_inode_lock(ctl->fs);
	opt.in_use = job_in_use;
	opt.in_use_ctx = ctl;
	opt.on_event = job_event;
	opt.on_progress = job_progress;
	opt.ctx = j;
	r = scrub_new(meta, fs_blockclient(ctl->fs), &opt, &s);
	if (r < 0) {
		reply_error(j->fd, r, "cannot start the scrub");
		goto out;
	}
	tuuid_format(sb->fs_uuid, uuid);
	n = snprintf(line, sizeof(line), "hello %d %s %u %u %u\n", CONTROL_VERSION, uuid, sb->k,
		     sb->m, sb->n_servers);
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
	n = snprintf(line, sizeof(line), "end %d\n", r);
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

int control_start(struct fs *fs, const char *meta_dir, struct control **ret)
{
	struct control *ctl = calloc(1, sizeof(*ctl));
	struct sockaddr_un addr;
	int r, tmpfd = -1;

	if (!ctl)
		return -ENOMEM;
	ctl->fs = fs;
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
	r = socket_addr(meta_dir, &addr, &tmpfd);
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

/* ---------------------------------------------------------------- client side */

struct control_conn {
	int fd;
	char *buf;        /* CONTROL_LINE_MAX + 1 bytes */
	size_t len;       /* bytes in buf */
};

/* ---------------------------------------------------------------- finding a mount */

bool control_mount_source(const char *path, char *src, size_t size)
{
	char fstype[128], source[PATH_MAX];

	if (tmount_at(path, fstype, sizeof(fstype), source, sizeof(source)) < 0 ||
	    strcmp(fstype, "fuse.tesserafs") != 0)
		return false;
	snprintf(src, size, "%s", source);
	return true;
}

int control_connect(const char *meta_dir, struct control_conn **ret)
{
	struct sockaddr_un addr;
	struct control_conn *c;
	int r, dirfd = -1, fd;

	r = socket_addr(meta_dir, &addr, &dirfd);
	if (r < 0)
		return r;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		goto out;
	}
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		r = -errno;
		close(fd);
		goto out;
	}
	c = calloc(1, sizeof(*c));
	if (c)
		c->buf = malloc(CONTROL_LINE_MAX + 1);
	if (!c || !c->buf) {
		if (c)
			free(c);
		close(fd);
		r = -ENOMEM;
		goto out;
	}
	c->fd = fd;
	*ret = c;
	r = 0;
out:
	if (dirfd >= 0)
		close(dirfd);
	return r;
}

void control_close(struct control_conn *c)
{
	if (!c)
		return;
	close(c->fd);
	free(c->buf);
	free(c);
}

/* Reads the next line into *ret_line (NUL-terminated, in c->buf, valid until the next call).
 * Waits at most timeout_ms (-1: forever); returns 0, -EAGAIN (timeout), -ECONNRESET, -EPROTO
 * (a line too long), -errno. */
static int read_line(struct control_conn *c, int timeout_ms, char **ret_line, size_t *consumed)
{
	for (;;) {
		char *nl = memchr(c->buf, '\n', c->len);
		if (nl) {
			*nl = '\0';
			*ret_line = c->buf;
			*consumed = (size_t)(nl - c->buf) + 1;
			return 0;
		}
		if (c->len >= CONTROL_LINE_MAX)
			return -EPROTO;
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		int n = poll(&p, 1, timeout_ms);
		if (n < 0 && errno == EINTR)
			return -EAGAIN;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EAGAIN;
		ssize_t got = recv(c->fd, c->buf + c->len, CONTROL_LINE_MAX - c->len, 0);
		if (got < 0 && errno == EINTR)
			return -EAGAIN;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -ECONNRESET;
		c->len += (size_t)got;
	}
}

static void consume(struct control_conn *c, size_t n)
{
	memmove(c->buf, c->buf + n, c->len - n);
	c->len -= n;
}

int control_scrub_start(struct control_conn *c, const struct scrub_options *opt,
			struct control_info *ret_info)
{
	char req[512], *line;
	struct control_msg m;
	size_t used;
	int r = control_request_encode(opt, req, sizeof(req));

	if (r < 0)
		return r;
	r = send_all(c->fd, req, (size_t)r);
	if (r < 0)
		return r;
	uint64_t deadline = tclock_monotonic_ns() + 30000000000ull;
	do
		r = read_line(c, CONTROL_POLL_MS, &line, &used);
	while (r == -EAGAIN && tclock_monotonic_ns() < deadline);
	if (r == -EAGAIN)
		return -ETIMEDOUT;
	if (r < 0)
		return r;
	r = control_msg_decode(line, &m);
	if (r == 0 && m.kind == CONTROL_MSG_ERROR)
		r = m.result;
	else if (r == 0 && m.kind != CONTROL_MSG_HELLO)
		r = -EPROTO;
	if (r == 0)
		*ret_info = m.info;
	consume(c, used);
	return r;
}

int control_backup(struct control_conn *c, const char *dest, int *ret_result)
{
	char req[CONTROL_LINE_MAX], *line;
	struct line l = { .p = req, .size = sizeof(req) };
	struct control_msg m;
	size_t used;
	int r;

	if (!dest || dest[0] != '/')
		return -EINVAL;
	line_printf(&l, "backup %d", CONTROL_VERSION);
	line_str(&l, dest);
	r = line_end(&l);
	if (r < 0)
		return r;
	r = send_all(c->fd, req, l.len);
	if (r < 0)
		return r;
	/* a checkpoint of a large database takes a while: no deadline but the daemon's */
	do
		r = read_line(c, CONTROL_POLL_MS, &line, &used);
	while (r == -EAGAIN);
	if (r < 0)
		return r;
	r = control_msg_decode(line, &m);
	if (r == 0 && m.kind == CONTROL_MSG_ERROR)
		r = m.result;
	else if (r == 0 && m.kind != CONTROL_MSG_END)
		r = -EPROTO;
	if (r == 0)
		*ret_result = m.result;
	consume(c, used);
	return r;
}

int control_scrub_wait(struct control_conn *c, const struct scrub_options *opt,
		       const volatile sig_atomic_t *stop, struct scrub_stats *ret_stats,
		       int *ret_result)
{
	struct scrub_stats st;
	bool have_stats = false;
	char *line;
	size_t used;
	int r;

	uint64_t stop_deadline = 0;

	memset(&st, 0, sizeof(st));
	for (;;) {
		if (stop && *stop && !stop_deadline) {
			/* ask the daemon to cancel; it still sends what was done */
			shutdown(c->fd, SHUT_WR);
			stop_deadline = tclock_monotonic_ns() + 30000000000ull;
		}
		if (stop_deadline && tclock_monotonic_ns() > stop_deadline)
			return -ECANCELED;
		r = read_line(c, CONTROL_POLL_MS, &line, &used);
		if (r == -EAGAIN)
			continue;
		if (r < 0)
			return r;
		struct control_msg m;
		r = control_msg_decode(line, &m);
		if (r < 0)
			return r;
		switch (m.kind) {
		case CONTROL_MSG_EVENT:
			if (opt->on_event)
				opt->on_event(opt->ctx, &m.ev);
			break;
		case CONTROL_MSG_PROGRESS:
			if (opt->on_progress)
				opt->on_progress(opt->ctx, m.phase, m.done, m.total, m.bytes);
			break;
		case CONTROL_MSG_STATS:
			st = m.st;
			have_stats = true;
			break;
		case CONTROL_MSG_END:
			if (!have_stats)
				return -EPROTO;
			*ret_stats = st;
			*ret_result = m.result;
			return 0;
		default:
			return -EPROTO;
		}
		consume(c, used);
	}
}
