/*
 * control/client: what the tools call to reach a mounted daemon (tessera-scrub MOUNTPOINT,
 * tessera meta backup MOUNTPOINT). One connection per thread, blocking I/O with polls so that
 * a stop request is seen within CONTROL_POLL_MS.
 */
#include "control_int.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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

	r = control_socket_addr(meta_dir, &addr, &dirfd);
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
	r = control_send_all(c->fd, req, (size_t)r);
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
	struct control_msg m;
	size_t used;
	int r = control_backup_encode(dest, req, sizeof(req));

	if (r < 0)
		return r;
	r = control_send_all(c->fd, req, (size_t)r);
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

int control_health(struct control_conn *c, struct control_server_health *out, size_t max,
		   size_t *ret_n)
{
	char req[32], *line;
	struct control_msg m;
	size_t used, n = 0;
	int r = control_health_encode(req, sizeof(req));

	if (r < 0)
		return r;
	r = control_send_all(c->fd, req, (size_t)r);
	while (r >= 0) {
		int waited = 0;
		do
			r = read_line(c, CONTROL_POLL_MS, &line, &used);
		while (r == -EAGAIN && (waited += CONTROL_POLL_MS) < 10000);
		if (r < 0)
			break;
		r = control_msg_decode(line, &m);
		if (r == 0 && m.kind == CONTROL_MSG_SERVER) {
			if (n < max)
				out[n++] = m.server;
		} else if (r == 0 && m.kind == CONTROL_MSG_END) {
			consume(c, used);
			*ret_n = n;
			return 0;
		} else if (r == 0) {
			r = m.kind == CONTROL_MSG_ERROR ? m.result : -EPROTO;
		}
		consume(c, used);
	}
	return r == -EAGAIN ? -ETIMEDOUT : r;
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
