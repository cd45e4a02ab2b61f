/*
 * scrub/checkpoint: where an interrupted run stopped, so that the next one resumes there.
 *
 * The file (opt.checkpoint, normally META_DIR/scrub.checkpoint) is small text, replaced
 * atomically (tfile_write_atomic) after every round of the stripes phase:
 *
 *     tessera-scrub checkpoint 1
 *     fs 3f2a...-...          the filesystem uuid
 *     created 1732700000      when the interrupted run started (Unix seconds)
 *     options deep=0 gc=1 namespace=1
 *     position 1234 56        the last (inode, stripe) done; or "position done": every
 *                             stripe was done and only gc was left
 *     stats stripes=... fragments=... ...   the stripe counters so far
 *
 * A checkpoint is used only by a run of the same filesystem with the same deep, gc and
 * namespace options; any other is reported and ignored (and replaced by the run's own).
 * Namespace and gc counters are not carried: the resumed run does those phases again.
 * No state of its own; called from scrub_run()'s thread.
 */
#include "scrub_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/common.h"

#define CKPT_MAGIC "tessera-scrub checkpoint 1"

/* The counters a checkpoint carries. */
#define CKPT_FIELDS(X) \
	X(stripes) X(fragments) X(bytes_checked) X(frags_missing) X(frags_unreachable) \
	X(frags_corrupt) X(frags_rebuilt) X(frags_moved) X(bytes_rebuilt) X(stripes_damaged) \
	X(stripes_repaired) X(stripes_lost) X(stripes_failed) X(stripes_changed) \
	X(errors_fixed) X(errors_left) X(verify_ns) X(repair_ns)

int scrub_checkpoint_encode(const struct scrub_checkpoint *c, char *out, size_t size)
{
	char uuid[37];
	size_t len = 0;
	int n;

	tuuid_format(c->fs_uuid, uuid);
#define APPEND(...)                                                                    \
	do {                                                                           \
		n = snprintf(out + len, size > len ? size - len : 0, __VA_ARGS__);     \
		if (n < 0 || len + (size_t)n >= size)                                  \
			return -ENOSPC;                                                \
		len += (size_t)n;                                                      \
	} while (0)
	if (size == 0)
		return -ENOSPC;
	APPEND("%s\nfs %s\ncreated %" PRIu64 "\noptions deep=%d gc=%d namespace=%d\n", CKPT_MAGIC,
	       uuid, c->created_s, c->deep, c->gc, !c->skip_namespace);
	if (c->stripes_done)
		APPEND("position done\n");
	else
		APPEND("position %" PRIu64 " %" PRIu64 "\n", c->ino, c->stripe);
	APPEND("stats");
#define X(f) APPEND(" " #f "=%" PRIu64, c->st.f);
	CKPT_FIELDS(X)
#undef X
	APPEND("\n");
#undef APPEND
	return (int)len;
}

static int parse_flag(const char *line, const char *name, bool *ret)
{
	const char *p = strstr(line, name);
	size_t l = strlen(name);

	if (!p || (p[l] != '0' && p[l] != '1'))
		return -EBADMSG;
	*ret = p[l] == '1';
	return 0;
}

static int parse_stats(const char *p, struct scrub_stats *st)
{
	while (*p == ' ') {
		const char *name = p + 1, *eq = strchr(name, '=');
		uint64_t v;
		if (!eq || tparse_u64(eq + 1, &p, &v) < 0)
			return -EBADMSG;
		size_t nl = (size_t)(eq - name);
#define X(f)                                                        \
		if (nl == sizeof(#f) - 1 && memcmp(name, #f, nl) == 0) \
			st->f = v;
		CKPT_FIELDS(X)
#undef X
	}
	return *p == '\0' ? 0 : -EBADMSG;
}

int scrub_checkpoint_decode(const char *text, struct scrub_checkpoint *ret)
{
	struct scrub_checkpoint c;
	char line[SCRUB_CHECKPOINT_MAX];
	unsigned seen = 0;
	bool ns = true;

	memset(&c, 0, sizeof(c));
	for (unsigned lineno = 0; *text; lineno++) {
		const char *nl = strchr(text, '\n');
		size_t len = nl ? (size_t)(nl - text) : strlen(text);
		const char *p;
		if (len >= sizeof(line))
			return -EBADMSG;
		memcpy(line, text, len);
		line[len] = '\0';
		text += len + (nl ? 1 : 0);
		if (lineno == 0) {
			if (strcmp(line, CKPT_MAGIC) != 0)
				return -EBADMSG;
			continue;
		}
		if (strncmp(line, "fs ", 3) == 0) {
			if (tuuid_parse(line + 3, c.fs_uuid) < 0)
				return -EBADMSG;
			seen |= 1;
		} else if (strncmp(line, "created ", 8) == 0) {
			if (tparse_u64(line + 8, &p, &c.created_s) < 0 || *p)
				return -EBADMSG;
			seen |= 2;
		} else if (strncmp(line, "options ", 8) == 0) {
			if (parse_flag(line, "deep=", &c.deep) < 0 ||
			    parse_flag(line, "gc=", &c.gc) < 0 ||
			    parse_flag(line, "namespace=", &ns) < 0)
				return -EBADMSG;
			c.skip_namespace = !ns;
			seen |= 4;
		} else if (strcmp(line, "position done") == 0) {
			c.stripes_done = true;
			seen |= 8;
		} else if (strncmp(line, "position ", 9) == 0) {
			if (tparse_u64(line + 9, &p, &c.ino) < 0 || *p != ' ' ||
			    tparse_u64(p + 1, &p, &c.stripe) < 0 || *p)
				return -EBADMSG;
			seen |= 8;
		} else if (strncmp(line, "stats", 5) == 0) {
			if (parse_stats(line + 5, &c.st) < 0)
				return -EBADMSG;
			seen |= 16;
		} else if (line[0]) {
			return -EBADMSG;
		}
	}
	if (seen != 31)
		return -EBADMSG;
	*ret = c;
	return 0;
}

void scrub_checkpoint_stats(const struct scrub_stats *st, struct scrub_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
#define X(f) ret->f = st->f;
	CKPT_FIELDS(X)
#undef X
	/* errors_* also count namespace problems, which the resumed run finds again */
	ret->errors_fixed = st->errors_fixed - st->ns_fixed;
	ret->errors_left = st->errors_left - (st->ns_errors - st->ns_fixed);
}

void scrub_checkpoint_resume(struct scrub_stats *st, const struct scrub_stats *carried)
{
#define X(f) st->f += carried->f;
	CKPT_FIELDS(X)
#undef X
}

int scrub_checkpoint_load(struct scrub *s, struct scrub_checkpoint *ret)
{
	struct scrub_checkpoint c;
	char *buf = NULL;
	int r = tfile_read_all(s->opt.checkpoint, SCRUB_CHECKPOINT_MAX, &buf, NULL);

	if (r == -ENOENT)
		return -ENOENT;
	if (r < 0) {
		scrub_warn(s, "cannot read the checkpoint '%s': %s; starting over",
			   s->opt.checkpoint, strerror(-r));
		return -ENOENT;
	}
	r = scrub_checkpoint_decode(buf, &c);
	free(buf);
	if (r < 0) {
		scrub_warn(s, "the checkpoint '%s' is damaged; starting over", s->opt.checkpoint);
		return -ENOENT;
	}
	if (memcmp(c.fs_uuid, s->sb->fs_uuid, 16) != 0 || c.deep != s->opt.deep ||
	    c.gc != s->opt.gc || c.skip_namespace != s->opt.skip_namespace) {
		scrub_event(s, &(struct scrub_event){
			.kind = SCRUB_EV_NOTICE, .index = -1, .server = -1,
			.msg = "a checkpoint of a run with other options is ignored; starting over" });
		return -ENOENT;
	}
	*ret = c;
	return 0;
}

int scrub_checkpoint_save(struct scrub *s, const struct scrub_checkpoint *c)
{
	char buf[SCRUB_CHECKPOINT_MAX];
	int len = scrub_checkpoint_encode(c, buf, sizeof(buf));

	if (len < 0)
		return len;
	return tfile_write_atomic(s->opt.checkpoint, buf, (size_t)len, 0600);
}

void scrub_checkpoint_remove(struct scrub *s)
{
	if (unlink(s->opt.checkpoint) < 0 && errno != ENOENT)
		scrub_warn(s, "cannot remove the checkpoint '%s': %s", s->opt.checkpoint,
			   strerror(errno));
}
