/*
 * control/proto: the control protocol's lines, as a pure codec (no sockets, no threads).
 * The grammar is in control.h; every line type has its encoder and control_msg_decode()
 * reads every line the daemon sends, control_request_decode() every line a client sends.
 */
#include "control_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

/* ---------------------------------------------------------------- encoding */

void control_put_str(struct tstr *l, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	if (!s) {
		tstr_puts(l, " -");
		return;
	}
	tstr_puts(l, " +");
	for (const unsigned char *c = (const unsigned char *)s; *c && !l->failed; c++) {
		if (*c <= 0x20 || *c == 0x7f || *c == '%') {
			char e[3] = { '%', hex[*c >> 4], hex[*c & 15] };
			tstr_append(l, e, 3);
		} else {
			tstr_append(l, c, 1);
		}
	}
}

int control_line_end(struct tstr *l)
{
	tstr_puts(l, "\n");
	return l->failed ? -ENOSPC : (int)l->len;
}

static void line_init(struct tstr *l, char *out, size_t size)
{
	tstr_init_fixed(l, out, size);
}

int control_request_encode(const struct scrub_options *opt, char *out, size_t size)
{
	struct tstr l;

	line_init(&l, out, size);
	tstr_printf(&l, "scrub %d", CONTROL_VERSION);
#define X(name, field, max) tstr_printf(&l, " " #name "=%" PRIu64, (uint64_t)opt->field);
	CONTROL_SCRUB_OPTIONS(X)
#undef X
	return control_line_end(&l);
}

int control_backup_encode(const char *dest, char *out, size_t size)
{
	struct tstr l;

	if (!dest || dest[0] != '/')
		return -EINVAL;
	line_init(&l, out, size);
	tstr_printf(&l, "backup %d", CONTROL_VERSION);
	control_put_str(&l, dest);
	return control_line_end(&l);
}

int control_hello_encode(const struct control_info *info, char *out, size_t size)
{
	struct tstr l;

	line_init(&l, out, size);
	tstr_printf(&l, "hello %d %s %u %u %u", CONTROL_VERSION, info->fs_uuid, info->k, info->m,
		    info->n_servers);
	return control_line_end(&l);
}

int control_error_encode(int err, const char *msg, char *out, size_t size)
{
	struct tstr l;

	if (err >= 0 || err < -4095 || !msg)
		return -EINVAL;
	line_init(&l, out, size);
	tstr_printf(&l, "error %d", -err);
	control_put_str(&l, msg);
	return control_line_end(&l);
}

int control_end_encode(int result, char *out, size_t size)
{
	struct tstr l;

	if (result > 0 || result < -4095)
		return -EINVAL;
	line_init(&l, out, size);
	tstr_printf(&l, "end %d", result);
	return control_line_end(&l);
}

int control_event_encode(const struct scrub_event *ev, char *out, size_t size)
{
	struct tstr l;

	line_init(&l, out, size);
	tstr_printf(&l, "event %d %d %" PRIu64 " %" PRIu64 " %d %d %" PRIu64 " %" PRIu64,
		    (int)ev->kind, ev->fixed, ev->ino, ev->stripe, ev->index, ev->server, ev->off,
		    ev->len);
	control_put_str(&l, ev->path);
	control_put_str(&l, ev->key);
	control_put_str(&l, ev->msg ? ev->msg : "");
	return control_line_end(&l);
}

int control_progress_encode(const char *phase, uint64_t done, uint64_t total, uint64_t bytes,
			    char *out, size_t size)
{
	struct tstr l;

	line_init(&l, out, size);
	tstr_puts(&l, "progress");
	control_put_str(&l, phase);
	tstr_printf(&l, " %" PRIu64 " %" PRIu64 " %" PRIu64, done, total, bytes);
	return control_line_end(&l);
}

int control_stats_encode(const struct scrub_stats *st, char *out, size_t size)
{
	struct tstr l;

	line_init(&l, out, size);
	tstr_puts(&l, "stats");
#define X(f) tstr_printf(&l, " " #f "=%" PRIu64, st->f);
	SCRUB_STATS_FIELDS(X)
#undef X
	return control_line_end(&l);
}

/* ---------------------------------------------------------------- decoding */

int control_tokenize(char *line, char **tok)
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

int control_tok_u64(const char *t, uint64_t *ret)
{
	const char *e;

	return tparse_u64(t, &e, ret) < 0 || *e ? -EPROTO : 0;
}

int control_tok_i64(const char *t, int64_t *ret)
{
	const char *e;

	return tparse_i64(t, &e, ret) < 0 || *e ? -EPROTO : 0;
}

int control_tok_str(char *t, const char **ret)
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
			int hi = thex_digit(p[1]), lo = hi < 0 ? -1 : thex_digit(p[2]);
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
		bool known = false;
#define X(oname, field, max)                                                               \
		if (!known && nl == sizeof(#oname) - 1 && memcmp(name, #oname, nl) == 0) {  \
			if (v > (uint64_t)(max))                                           \
				return -EINVAL;                                            \
			o.field = v;                                                       \
			known = true;                                                      \
		}
		CONTROL_SCRUB_OPTIONS(X)
#undef X
		if (!known)
			return -EINVAL;
	}
	if (*p)
		return -EINVAL;
	*ret = o;
	return 0;
}

int control_backup_decode(char *line, const char **ret_dest)
{
	char *t[CONTROL_TOKENS_MAX];
	const char *dest = NULL;
	uint64_t v;
	int n = control_tokenize(line, t);

	if (n < 1 || strcmp(t[0], "backup") != 0)
		return -EPROTO;
	if (n != 3 || control_tok_u64(t[1], &v) < 0 || v != CONTROL_VERSION ||
	    control_tok_str(t[2], &dest) < 0 || !dest || dest[0] != '/')
		return -EINVAL;
	*ret_dest = dest;
	return 0;
}

int control_msg_decode(char *line, struct control_msg *ret)
{
	struct control_msg m;
	char *t[CONTROL_TOKENS_MAX];
	uint64_t u[4];
	int64_t i[3];
	int n = control_tokenize(line, t);

	if (n < 0)
		return n;
	memset(&m, 0, sizeof(m));
	if (strcmp(t[0], "hello") == 0) {
		if (n != 6 || control_tok_u64(t[1], &u[0]) < 0 || u[0] != CONTROL_VERSION ||
		    strlen(t[2]) != 36 || control_tok_u64(t[3], &u[1]) < 0 ||
		    control_tok_u64(t[4], &u[2]) < 0 || control_tok_u64(t[5], &u[3]) < 0 ||
		    u[1] > 64 || u[2] > 64 || u[3] > 4096)
			return -EPROTO;
		m.kind = CONTROL_MSG_HELLO;
		memcpy(m.info.fs_uuid, t[2], 37);
		m.info.k = (unsigned)u[1];
		m.info.m = (unsigned)u[2];
		m.info.n_servers = (unsigned)u[3];
	} else if (strcmp(t[0], "error") == 0) {
		if (n != 3 || control_tok_i64(t[1], &i[0]) < 0 || i[0] <= 0 || i[0] > 4095 ||
		    control_tok_str(t[2], &m.msg) < 0 || !m.msg)
			return -EPROTO;
		m.kind = CONTROL_MSG_ERROR;
		m.result = -(int)i[0];
	} else if (strcmp(t[0], "event") == 0) {
		if (n != 12 || control_tok_i64(t[1], &i[0]) < 0 || control_tok_u64(t[2], &u[0]) < 0 ||
		    control_tok_u64(t[3], &m.ev.ino) < 0 || control_tok_u64(t[4], &m.ev.stripe) < 0 ||
		    control_tok_i64(t[5], &i[1]) < 0 || control_tok_i64(t[6], &i[2]) < 0 ||
		    control_tok_u64(t[7], &m.ev.off) < 0 || control_tok_u64(t[8], &m.ev.len) < 0 ||
		    control_tok_str(t[9], &m.ev.path) < 0 || control_tok_str(t[10], &m.ev.key) < 0 ||
		    control_tok_str(t[11], &m.ev.msg) < 0 || !m.ev.msg)
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
		if (n != 5 || control_tok_str(t[1], &m.phase) < 0 || !m.phase ||
		    control_tok_u64(t[2], &m.done) < 0 || control_tok_u64(t[3], &m.total) < 0 ||
		    control_tok_u64(t[4], &m.bytes) < 0)
			return -EPROTO;
		m.kind = CONTROL_MSG_PROGRESS;
	} else if (strcmp(t[0], "stats") == 0) {
		for (int k = 1; k < n; k++) {
			char *eq = strchr(t[k], '=');
			if (!eq || control_tok_u64(eq + 1, &u[0]) < 0)
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
		if (n != 2 || control_tok_i64(t[1], &i[0]) < 0 || i[0] > 0 || i[0] < -4095)
			return -EPROTO;
		m.kind = CONTROL_MSG_END;
		m.result = (int)i[0];
	} else {
		return -EPROTO;
	}
	*ret = m;
	return 0;
}

/* ---------------------------------------------------------------- sockets */

int control_socket_addr(const char *meta_dir, struct sockaddr_un *addr, int *ret_dirfd)
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

int control_send_all(int fd, const char *buf, size_t len)
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
