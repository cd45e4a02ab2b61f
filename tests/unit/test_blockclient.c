/*
 * Unit tests for the block client (src/blockclient/blockclient.c), against real tessera-blockd
 * processes that the fixture starts on 127.0.0.1 (port 0, port file) with temporary data
 * directories; the binary is $TESSERA_BUILD/tessera-blockd, else the one beside this test's
 * build directory.
 *  - no server: bad arguments; new + free while idle, repeatedly; a refused server is marked
 *    down, later ops get -EHOSTDOWN unless forced, forced failures do not stretch the back-off
 *    (blockclient.c L3), it is up again after 1 s; unknown server ids give -EINVAL;
 *  - one server: PUT with a head segment, GET split into head and body, ranged GET, HEAD,
 *    -EMSGSIZE for a small buffer (server stays up), -ENOENT/404, DELETE, a raw-path status
 *    GET, a batch of 100 ops to one server (beyond its connection limit), listings in pages;
 *    keys have no '/': concurrent DELETEs of the last objects of a blockd directory race
 *    with its pruning of the emptied directory (a 404 for an object that existed);
 *  - three servers, 8 threads issuing batches at once: every byte comes back, and the servers'
 *    accepted-connection counters ("connections" in /-/status) show that the batches share
 *    keep-alive connections: a first round opens at most one per thread, a second as many
 *    more opens (almost) none;
 *  - run_quorum with one server SIGSTOPped: returns once the grace after the quorum has passed,
 *    the hung op -ETIMEDOUT and its server down; the caller's buffers are freed at once (ASan
 *    would see the loop touch them: blockclient.c L1); a forced op with a short timeout_ms
 *    times out; after SIGCONT and the back-off, the server is used and up again; n > 64 is
 *    -EINVAL.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tessera/blockclient.h"
#include "tessera/blockstore.h"
#include "tessera/common.h"
#include "tessera/proto.h"

#include "unit.h"

#define N_SRV 3
#define ACCESS "bctestaccess"
#define SECRET "bctestsecret0123456789"

static char work_dir[128];
static char blockd_path[PATH_MAX];
static pid_t srv_pid[N_SRV];
static char srv_url[N_SRV][64];
static bool have_servers;

static void msleep(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static bool find_blockd(void)
{
	const char *b = getenv("TESSERA_BUILD");
	char self[PATH_MAX];

	if (b && *b) {
		snprintf(blockd_path, sizeof(blockd_path), "%s/tessera-blockd", b);
		if (access(blockd_path, X_OK) == 0)
			return true;
	}
	ssize_t l = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (l <= 0)
		return false;
	self[l] = '\0';
	char *slash = strrchr(self, '/'); /* BUILD/tests/test_blockclient */
	if (!slash)
		return false;
	*slash = '\0';
	int n = snprintf(blockd_path, sizeof(blockd_path), "%.*s/../tessera-blockd",
			 (int)(sizeof(blockd_path) - 32), self);
	return n > 0 && access(blockd_path, X_OK) == 0;
}

static pid_t start_blockd(unsigned i, char *url, size_t url_size)
{
	char data[160], port_file[160], log[160];

	snprintf(data, sizeof(data), "%s/srv%u", work_dir, i);
	snprintf(port_file, sizeof(port_file), "%s/srv%u.port", work_dir, i);
	snprintf(log, sizeof(log), "%s/srv%u.log", work_dir, i);
	if (mkdir(data, 0755) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* The server does not outlive a test runner that dies without its teardown. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		FILE *f = freopen(log, "w", stderr);
		(void)f;
		dup2(2, 1);
		setenv("TESSERA_ACCESS_KEY", ACCESS, 1);
		setenv("TESSERA_SECRET_KEY", SECRET, 1);
		execl(blockd_path, "tessera-blockd", "--data", data, "--listen", "127.0.0.1:0",
		      "--port-file", port_file, (char *)NULL);
		_exit(127);
	}
	for (int t = 0; t < 200; t++) { /* 10 s */
		char *buf = NULL;
		size_t len = 0;
		if (tfile_read_all(port_file, 32, &buf, &len) == 0 && len > 0) {
			unsigned port = (unsigned)strtoul(buf, NULL, 10);
			free(buf);
			if (port > 0) {
				snprintf(url, url_size, "http://127.0.0.1:%u", port);
				return pid;
			}
		}
		free(buf);
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		msleep(50);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* Unchecked fixture: runs once, in the runner process, around the server test cases. */
static void servers_setup(void)
{
	unit_tmpdir(work_dir, sizeof(work_dir), "servers");
	if (!find_blockd()) {
		fprintf(stderr, "test_blockclient: tessera-blockd not found\n");
		return;
	}
	for (unsigned i = 0; i < N_SRV; i++) {
		srv_pid[i] = start_blockd(i, srv_url[i], sizeof(srv_url[i]));
		if (srv_pid[i] <= 0) {
			fprintf(stderr, "test_blockclient: server %u did not start\n", i);
			return;
		}
	}
	have_servers = true;
}

static void servers_teardown(void)
{
	for (unsigned i = 0; i < N_SRV; i++) {
		if (srv_pid[i] <= 0)
			continue;
		kill(srv_pid[i], SIGCONT); /* a test that failed may have left it stopped */
		kill(srv_pid[i], SIGTERM);
		int t;
		for (t = 0; t < 200 && waitpid(srv_pid[i], NULL, WNOHANG) != srv_pid[i]; t++)
			msleep(50);
		if (t == 200) {
			kill(srv_pid[i], SIGKILL);
			waitpid(srv_pid[i], NULL, 0);
		}
		srv_pid[i] = 0;
	}
	if (work_dir[0])
		unit_rmtree(work_dir);
}

static void cfg_init(struct blockclient_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->bucket, sizeof(cfg->bucket), "bctest");
	snprintf(cfg->access_key, sizeof(cfg->access_key), ACCESS);
	snprintf(cfg->secret_key, sizeof(cfg->secret_key), SECRET);
}

static struct blockclient *client_servers(void)
{
	struct blockclient_config cfg;
	uint16_t ids[N_SRV];
	const char *urls[N_SRV];
	struct blockclient *bc = NULL;

	ck_assert_msg(have_servers, "no tessera-blockd servers (see the messages above)");
	cfg_init(&cfg);
	for (unsigned i = 0; i < N_SRV; i++) {
		ids[i] = (uint16_t)(10 + i);
		urls[i] = srv_url[i];
	}
	ck_assert_int_eq(blockclient_new(&cfg, ids, urls, N_SRV, &bc), 0);
	return bc;
}

/* Bytes derived from (tag, offset): a buffer verifies without a reference copy. */
static void fill(uint8_t *p, size_t len, uint32_t tag)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)((i * 131u) ^ (tag * 2654435761u) ^ (i >> 9));
}

static bool check_fill(const uint8_t *p, size_t len, uint32_t tag)
{
	for (size_t i = 0; i < len; i++)
		if (p[i] != (uint8_t)((i * 131u) ^ (tag * 2654435761u) ^ (i >> 9)))
			return false;
	return true;
}

/* The "connections" counter of server i's /-/status. */
static uint64_t server_connections(struct blockclient *bc, unsigned i)
{
	char buf[4096];
	struct blockclient_op op = { .method = BC_GET, .server = (uint16_t)(10 + i),
				     .key = "-/status", .raw_path = true, .buf = buf,
				     .buf_size = sizeof(buf) - 1 };

	ck_assert_int_eq(blockclient_run(bc, &op, 1, true), 1);
	buf[op.result_len] = '\0';
	const char *p = strstr(buf, "\"connections\":");
	ck_assert_ptr_nonnull(p);
	return strtoull(p + 14, NULL, 10);
}

/* ---------------------------------------------------------------- no server */

START_TEST(test_new_invalid)
{
	struct blockclient_config cfg;
	uint16_t id = 1;
	const char *url = "http://127.0.0.1:1";
	struct blockclient *bc = NULL;

	cfg_init(&cfg);
	ck_assert_int_eq(blockclient_new(&cfg, &id, &url, 0, &bc), -EINVAL);
	ck_assert_int_eq(blockclient_new(NULL, &id, &url, 1, &bc), -EINVAL);
	cfg.bucket[0] = '\0';
	ck_assert_int_eq(blockclient_new(&cfg, &id, &url, 1, &bc), -EINVAL);
	ck_assert_ptr_null(bc);
	blockclient_free(NULL);
}
END_TEST

START_TEST(test_free_idle)
{
	struct blockclient_config cfg;
	uint16_t id = 1;
	const char *url = "http://127.0.0.1:1/";

	cfg_init(&cfg);
	for (unsigned i = 0; i < 50; i++) {
		struct blockclient *bc = NULL;
		ck_assert_int_eq(blockclient_new(&cfg, &id, &url, 1, &bc), 0);
		if (i % 10 == 9)
			msleep(20); /* the loop is asleep in curl_multi_poll */
		blockclient_free(bc);
	}
}
END_TEST

START_TEST(test_refused_backoff)
{
	struct blockclient_config cfg;
	uint16_t ids[2] = { 7, 8 };
	const char *urls[2] = { "http://127.0.0.1:1", "http://127.0.0.1:1" };
	struct blockclient *bc = NULL;
	uint8_t buf[16];

	cfg_init(&cfg);
	ck_assert_int_eq(blockclient_new(&cfg, ids, urls, 2, &bc), 0);
	ck_assert(blockclient_server_up(bc, 7));
	ck_assert(!blockclient_server_up(bc, 99));

	struct blockclient_op op = { .method = BC_GET, .server = 7, .key = "a", .buf = buf,
				     .buf_size = sizeof(buf) };
	uint64_t t0 = tclock_monotonic_ns();
	ck_assert_int_eq(blockclient_run(bc, &op, 1, false), 0);
	ck_assert_int_eq(op.result, -ECONNREFUSED);
	ck_assert_int_eq(op.http_status, 0);
	ck_assert(!blockclient_server_up(bc, 7));
	ck_assert(blockclient_server_up(bc, 8));

	/* In back-off: not tried unless forced; an unknown id is -EINVAL. */
	struct blockclient_op ops[3] = {
		{ .method = BC_HEAD, .server = 7, .key = "a" },
		{ .method = BC_DELETE, .server = 99, .key = "a" },
		{ .method = BC_HEAD, .server = 8, .key = "a" },
	};
	ck_assert_int_eq(blockclient_run(bc, ops, 3, false), 0);
	ck_assert_int_eq(ops[0].result, -EHOSTDOWN);
	ck_assert_int_eq(ops[1].result, -EINVAL);
	ck_assert_int_eq(ops[2].result, -ECONNREFUSED);
	for (unsigned i = 0; i < 5; i++) {
		ck_assert_int_eq(blockclient_run(bc, &op, 1, true), 0);
		ck_assert_int_eq(op.result, -ECONNREFUSED);
	}
	ck_assert_uint_lt(tclock_monotonic_ns() - t0, 900000000ull);
	/* The prober's probe failed too: down, for the reason the probe saw. */
	struct blockclient_health_info h;
	msleep(300);
	ck_assert_int_eq(blockclient_health(bc, 7, &h), 0);
	ck_assert_int_eq(h.state, BLOCKCLIENT_DOWN);
	ck_assert_int_eq(h.last_err, -ECONNREFUSED);
	ck_assert_int_eq(blockclient_health(bc, 8, &h), 0);
	ck_assert_int_eq(h.state, BLOCKCLIENT_DOWN);
	ck_assert_int_eq(blockclient_health(bc, 99, &h), -EINVAL);
	msleep(1500); /* probed again and again: still down, never up by itself */
	ck_assert(!blockclient_server_up(bc, 7));
	blockclient_mark(bc, 7, true);
	ck_assert(blockclient_server_up(bc, 7));
	blockclient_mark(bc, 7, false);
	ck_assert(!blockclient_server_up(bc, 7));
	blockclient_free(bc);
}
END_TEST

/* ---------------------------------------------------------------- one server */

START_TEST(test_roundtrip)
{
	struct blockclient *bc = client_servers();
	const size_t len = 300000, hlen = 64;
	uint8_t *body = malloc(len), *got = malloc(len), head[64], ghead[64], small[1000];

	ck_assert_ptr_nonnull(body);
	ck_assert_ptr_nonnull(got);
	fill(body, len, 1);
	fill(head, hlen, 2);
	struct blockclient_op put = { .method = BC_PUT, .server = 10, .key = "rt-obj",
				      .head = head, .head_len = hlen, .body = body,
				      .body_len = len };
	ck_assert_int_eq(blockclient_run(bc, &put, 1, false), 1);
	ck_assert_int_eq(put.http_status, 200);

	struct blockclient_op get = { .method = BC_GET, .server = 10, .key = "rt-obj",
				      .head = ghead, .head_len = hlen, .buf = got,
				      .buf_size = len };
	ck_assert_int_eq(blockclient_run(bc, &get, 1, false), 1);
	ck_assert_uint_eq(get.result_len, hlen + len);
	ck_assert(memcmp(ghead, head, hlen) == 0);
	ck_assert(check_fill(got, len, 1));

	/* Range: bytes [hlen + 1000, hlen + 1000 + 5000) are body[1000..6000). */
	memset(got, 0, len);
	get = (struct blockclient_op){ .method = BC_GET, .server = 10, .key = "rt-obj",
				       .buf = got, .buf_size = len, .range_off = hlen + 1000,
				       .range_len = 5000 };
	ck_assert_int_eq(blockclient_run(bc, &get, 1, false), 1);
	ck_assert_uint_eq(get.result_len, 5000);
	ck_assert(memcmp(got, body + 1000, 5000) == 0);

	struct blockclient_op head_op = { .method = BC_HEAD, .server = 10, .key = "rt-obj" };
	ck_assert_int_eq(blockclient_run(bc, &head_op, 1, false), 1);
	ck_assert_uint_eq(head_op.result_len, hlen + len);

	/* Too small a buffer: -EMSGSIZE, the server is not marked down. */
	get = (struct blockclient_op){ .method = BC_GET, .server = 10, .key = "rt-obj",
				       .buf = small, .buf_size = sizeof(small) };
	ck_assert_int_eq(blockclient_run(bc, &get, 1, false), 0);
	ck_assert_int_eq(get.result, -EMSGSIZE);
	ck_assert(blockclient_server_up(bc, 10));

	get = (struct blockclient_op){ .method = BC_GET, .server = 10, .key = "rt-none",
				       .buf = small, .buf_size = sizeof(small) };
	ck_assert_int_eq(blockclient_run(bc, &get, 1, false), 0);
	ck_assert_int_eq(get.result, -ENOENT);
	ck_assert_int_eq(get.http_status, 404);
	ck_assert(blockclient_server_up(bc, 10));

	struct blockclient_op del = { .method = BC_DELETE, .server = 10, .key = "rt-obj" };
	ck_assert_int_eq(blockclient_run(bc, &del, 1, false), 1);
	head_op.result_len = 77;
	ck_assert_int_eq(blockclient_run(bc, &head_op, 1, false), 0);
	ck_assert_int_eq(head_op.result, -ENOENT);
	ck_assert_uint_eq(head_op.result_len, 0);

	/* 100 ops in one batch to one server: beyond the per-server connection limit. */
	struct blockclient_op ops[100];
	char keys[100][32];
	for (unsigned i = 0; i < 100; i++) {
		snprintf(keys[i], sizeof(keys[i]), "many-%03u", i);
		ops[i] = (struct blockclient_op){ .method = BC_PUT, .server = 10, .key = keys[i],
						  .body = body + i, .body_len = 1000 + i };
	}
	ck_assert_int_eq(blockclient_run(bc, ops, 100, false), 100);
	ck_assert_int_eq(blockclient_run_quorum(bc, ops, 100, false, 1, 0), -EINVAL);

	/* Listing in pages of 40: 40, 40, 20, in key order. */
	struct blockclient_object *objs = calloc(40, sizeof(*objs));
	char token[BLOCKCLIENT_LIST_KEY_MAX + 1] = "";
	unsigned seen = 0, pages = 0;
	ck_assert_ptr_nonnull(objs);
	do {
		char prev[sizeof(token)];
		size_t n = 0;
		snprintf(prev, sizeof(prev), "%s", token);
		ck_assert_int_eq(blockclient_list(bc, 10, "many-", prev, objs, 40, &n, token,
						  sizeof(token)),
				 0);
		for (size_t i = 0; i < n; i++) {
			ck_assert_str_eq(objs[i].key, keys[seen]);
			ck_assert_uint_eq(objs[i].size, 1000 + seen);
			seen++;
		}
		pages++;
	} while (token[0] && pages < 10);
	ck_assert_uint_eq(seen, 100);
	ck_assert_uint_eq(pages, 3);
	size_t n = 0;
	ck_assert_int_eq(blockclient_list(bc, 10, "many-", NULL, objs, 0, &n, token,
					  sizeof(token)),
			 -EINVAL);
	ck_assert_int_eq(blockclient_list(bc, 10, "many-", NULL, objs, 40, &n, token, 4),
			 -ENAMETOOLONG);
	for (unsigned i = 0; i < 100; i++)
		ops[i] = (struct blockclient_op){ .method = BC_DELETE, .server = 10, .key = keys[i] };
	ck_assert_int_eq(blockclient_run(bc, ops, 100, false), 100);

	free(objs);
	free(body);
	free(got);
	blockclient_free(bc);
}
END_TEST

/* ---------------------------------------------------------------- many threads */

#define MT_THREADS 8
#define MT_BATCHES 25
#define MT_LEN (64 * 1024 + 17)

struct mt_arg {
	struct blockclient *bc;
	unsigned thread, round;
	unsigned failures;
};

static void *mt_main(void *p)
{
	struct mt_arg *a = p;
	uint8_t *put[N_SRV], *got[N_SRV];
	char keys[N_SRV][64];
	struct blockclient_op ops[N_SRV];

	for (unsigned s = 0; s < N_SRV; s++) {
		put[s] = malloc(MT_LEN);
		got[s] = malloc(MT_LEN);
		if (!put[s] || !got[s])
			abort();
	}
	for (unsigned b = 0; b < MT_BATCHES; b++) {
		for (unsigned s = 0; s < N_SRV; s++) {
			uint32_t tag = (a->round * 1000u + a->thread) * 100u + b * 3u + s;
			fill(put[s], MT_LEN, tag);
			snprintf(keys[s], sizeof(keys[s]), "mt-%u-%u-%u-%u", a->round, a->thread, b,
				 s);
			ops[s] = (struct blockclient_op){ .method = BC_PUT,
							  .server = (uint16_t)(10 + s),
							  .key = keys[s], .body = put[s],
							  .body_len = MT_LEN };
		}
		if (b % 2)
			a->failures += N_SRV - (unsigned)blockclient_run_quorum(a->bc, ops, N_SRV,
										false, N_SRV, 100);
		else
			a->failures += N_SRV - (unsigned)blockclient_run(a->bc, ops, N_SRV, false);
		for (unsigned s = 0; s < N_SRV; s++) {
			memset(got[s], 0, MT_LEN);
			ops[s] = (struct blockclient_op){ .method = BC_GET,
							  .server = (uint16_t)(10 + s),
							  .key = keys[s], .buf = got[s],
							  .buf_size = MT_LEN };
		}
		a->failures += N_SRV - (unsigned)blockclient_run(a->bc, ops, N_SRV, false);
		for (unsigned s = 0; s < N_SRV; s++) {
			uint32_t tag = (a->round * 1000u + a->thread) * 100u + b * 3u + s;
			if (ops[s].result_len != MT_LEN || !check_fill(got[s], MT_LEN, tag))
				a->failures++;
			ops[s] = (struct blockclient_op){ .method = BC_DELETE,
							  .server = (uint16_t)(10 + s),
							  .key = keys[s] };
		}
		a->failures += N_SRV - (unsigned)blockclient_run(a->bc, ops, N_SRV, false);
	}
	for (unsigned s = 0; s < N_SRV; s++) {
		free(put[s]);
		free(got[s]);
	}
	return NULL;
}

static void mt_round(struct blockclient *bc, unsigned round)
{
	pthread_t th[MT_THREADS];
	struct mt_arg args[MT_THREADS];

	for (unsigned t = 0; t < MT_THREADS; t++) {
		args[t] = (struct mt_arg){ .bc = bc, .thread = t, .round = round };
		ck_assert_int_eq(pthread_create(&th[t], NULL, mt_main, &args[t]), 0);
	}
	for (unsigned t = 0; t < MT_THREADS; t++) {
		pthread_join(th[t], NULL);
		ck_assert_msg(args[t].failures == 0, "round %u thread %u: %u failures", round, t,
			      args[t].failures);
	}
}

/* blockstore_check_access(): the right key is taken (404 for the probe key), a wrong secret
 * is refused (-EACCES), an address nobody listens at proves nothing. */
START_TEST(test_check_access)
{
	struct blockclient_config cfg;
	uint16_t ids[N_SRV + 1];
	const char *urls[N_SRV + 1];
	int refused[N_SRV + 1];
	struct blockstore *good = NULL, *bad = NULL;

	ck_assert_msg(have_servers, "no tessera-blockd servers (see the messages above)");
	for (unsigned i = 0; i < N_SRV; i++) {
		ids[i] = (uint16_t)(10 + i);
		urls[i] = srv_url[i];
	}
	cfg_init(&cfg);
	ck_assert_int_eq(blockstore_client_new(&cfg, ids, urls, N_SRV, &good), 0);
	memset(refused, 1, sizeof(refused));
	ck_assert_int_eq(blockstore_check_access(good, ids, N_SRV, "uuid/access-check", refused),
			 0);
	for (unsigned i = 0; i < N_SRV; i++)
		ck_assert_int_eq(refused[i], 0);

	snprintf(cfg.secret_key, sizeof(cfg.secret_key), "not-the-secret");
	cfg.connect_timeout_ms = 500;
	ids[N_SRV] = 99;
	urls[N_SRV] = "http://127.0.0.1:9"; /* discard port: nobody listens */
	ck_assert_int_eq(blockstore_client_new(&cfg, ids, urls, N_SRV + 1, &bad), 0);
	ck_assert_int_eq(blockstore_check_access(bad, ids, N_SRV + 1, "uuid/access-check",
						 refused),
			 (int)N_SRV);
	for (unsigned i = 0; i < N_SRV; i++)
		ck_assert_int_eq(refused[i], -EACCES);
	ck_assert_int_eq(refused[N_SRV], 0);
	blockstore_free(bad);
	blockstore_free(good);
}
END_TEST

/* ---- a server of canned answers: what the client makes of S3 error codes ---- */

/* One answer: a status line, and an error code in an S3 document (body) or only in blockd's
 * header (header). */
struct answer {
	const char *status; /* "503 Slow Down" */
	const char *code;   /* NULL: none */
	bool in_header;     /* the code in PROTO_ERROR_CODE_HEADER, no document */
};

/* Answers every request with the next of answers[] (the last one repeats), after reading the
 * request head and its Content-Length body. */
struct canned {
	int fd;
	uint16_t port;
	const struct answer *answers;
	unsigned n_answers;
	atomic_uint served;
	pthread_t thread;
};

static bool canned_request(int c)
{
	char buf[8192];
	size_t len = 0;
	char *end = NULL;

	while (!end) {
		if (len + 1 >= sizeof(buf))
			return false;
		ssize_t n = read(c, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			return false;
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	size_t body = 0, have = len - (size_t)(end + 4 - buf);
	char *cl = strcasestr(buf, "\r\ncontent-length:");
	if (cl && cl < end)
		body = strtoul(cl + 17, NULL, 10);
	while (have < body) {
		ssize_t n = read(c, buf, TESSERA_MIN(sizeof(buf), body - have));
		if (n <= 0)
			return false;
		have += (size_t)n;
	}
	return true;
}

static void *canned_main(void *arg)
{
	struct canned *cs = arg;
	int c;

	while ((c = accept(cs->fd, NULL, NULL)) >= 0) {
		while (canned_request(c)) {
			unsigned i = atomic_fetch_add(&cs->served, 1);
			const struct answer *a = &cs->answers[TESSERA_MIN(i, cs->n_answers - 1)];
			char doc[256] = "", resp[1024];
			if (a->code && !a->in_header)
				snprintf(doc, sizeof(doc), "<?xml version=\"1.0\"?><Error><Code>%s"
					 "</Code><Message>m</Message></Error>", a->code);
			int n = snprintf(resp, sizeof(resp),
					 "HTTP/1.1 %s\r\nContent-Length: %zu\r\nETag: \"x\"\r\n"
					 "%s%s%s\r\n%s", a->status, strlen(doc),
					 a->in_header ? PROTO_ERROR_CODE_HEADER ": " : "",
					 a->in_header ? a->code : "", a->in_header ? "\r\n" : "",
					 doc);
			if (write(c, resp, (size_t)n) != n)
				break;
		}
		close(c);
	}
	return NULL;
}

/* A port of its own that refuses connections (bound, not listening) until canned_listen(). */
static void canned_bind(struct canned *cs, const struct answer *answers, unsigned n)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);

	memset(cs, 0, sizeof(*cs));
	cs->answers = answers;
	cs->n_answers = n;
	cs->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(cs->fd, 0);
	ck_assert_int_eq(bind(cs->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(cs->fd, (struct sockaddr *)&sa, &sl), 0);
	cs->port = ntohs(sa.sin_port);
}

static void canned_listen(struct canned *cs)
{
	ck_assert_int_eq(listen(cs->fd, 16), 0);
	ck_assert_int_eq(pthread_create(&cs->thread, NULL, canned_main, cs), 0);
}

static void canned_start(struct canned *cs, const struct answer *answers, unsigned n)
{
	canned_bind(cs, answers, n);
	canned_listen(cs);
}

static void canned_stop(struct canned *cs)
{
	shutdown(cs->fd, SHUT_RDWR); /* ends accept() */
	pthread_join(cs->thread, NULL);
	close(cs->fd);
}

static struct blockclient *canned_client(const struct canned *cs)
{
	struct blockclient_config cfg;
	struct blockclient *bc = NULL;
	char url[64];
	const char *urls[1] = { url };
	uint16_t id = 1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%u", cs->port);
	cfg_init(&cfg);
	cfg.request_timeout_ms = 5000;
	ck_assert_int_eq(blockclient_new(&cfg, &id, urls, 1, &bc), 0);
	return bc;
}

#define SLOWDOWN { "503 Slow Down", "SlowDown", false }

/* A request answered SlowDown is sent again after a back-off (blockclient.c), up to three
 * times; the fourth SlowDown is the op's result, -EAGAIN. */
START_TEST(test_slowdown_retried)
{
	static const struct answer twice[] = { SLOWDOWN, SLOWDOWN, { "200 OK", NULL, false } };
	static const struct answer always[] = { SLOWDOWN };
	struct canned cs;
	uint8_t body[100] = { 0 };

	canned_start(&cs, twice, 3);
	struct blockclient *bc = canned_client(&cs);
	struct blockclient_op put = { .method = BC_PUT, .server = 1, .key = "k", .body = body,
				      .body_len = sizeof(body) };
	uint64_t t0 = tclock_monotonic_ns();
	ck_assert_int_eq(blockclient_run(bc, &put, 1, false), 1);
	ck_assert_int_eq(put.result, 0);
	ck_assert_uint_eq(atomic_load(&cs.served), 3);
	ck_assert_uint_ge(tclock_monotonic_ns() - t0, 150000000ull); /* 50 + 100 ms of back-off */
	blockclient_free(bc);
	canned_stop(&cs);

	canned_start(&cs, always, 1);
	bc = canned_client(&cs);
	ck_assert_int_eq(blockclient_run(bc, &put, 1, false), 0);
	ck_assert_int_eq(put.result, -EAGAIN);
	ck_assert_uint_eq(atomic_load(&cs.served), 4);
	ck_assert(blockclient_server_up(bc, 1)); /* it answered: not a transport failure */
	blockclient_free(bc);
	canned_stop(&cs);
}
END_TEST

/* A server that refuses connections is down once the prober's probe failed too; once it
 * answers (a 404 is an answer), it is back in use within about 1.5 s, with no request of
 * ours sent to it meanwhile (blockclient.c L3). */
START_TEST(test_down_and_back)
{
	static const struct answer missing[] = { { "404 Not Found", "NoSuchKey", false } };
	struct blockclient_health_info h;
	struct canned cs;
	uint8_t buf[8];

	canned_bind(&cs, missing, 1);
	struct blockclient *bc = canned_client(&cs);
	struct blockclient_op get = { .method = BC_GET, .server = 1, .key = "k", .buf = buf,
				      .buf_size = sizeof(buf) };
	blockclient_run(bc, &get, 1, false);
	ck_assert_int_eq(get.result, -ECONNREFUSED);
	msleep(300);
	ck_assert_int_eq(blockclient_health(bc, 1, &h), 0);
	ck_assert_int_eq(h.state, BLOCKCLIENT_DOWN);
	ck_assert_str_eq(blockclient_health_name(h.state), "down");

	canned_listen(&cs);
	uint64_t t0 = tclock_monotonic_ns();
	while (!blockclient_server_up(bc, 1) && tclock_monotonic_ns() - t0 < 5000000000ull)
		msleep(20);
	uint64_t back_ms = (tclock_monotonic_ns() - t0) / 1000000;
	ck_assert_msg(back_ms < 1600, "up again after %llu ms", (unsigned long long)back_ms);
	ck_assert_int_eq(blockclient_health(bc, 1, &h), 0);
	ck_assert_int_eq(h.state, BLOCKCLIENT_UP);
	ck_assert_uint_ge(atomic_load(&cs.served), 1); /* the probe */
	blockclient_run(bc, &get, 1, false);
	ck_assert_int_eq(get.result, -ENOENT);
	blockclient_free(bc);
	canned_stop(&cs);
}
END_TEST

/* The S3 code, not the status alone, decides the result: a clock refusal is -ETIME (also for a
 * HEAD, whose code only blockd's header carries), InsufficientStorage -ENOSPC, a 403 without
 * a code -EACCES. */
START_TEST(test_error_codes)
{
	static const struct answer answers[] = {
		{ "403 Forbidden", "RequestTimeTooSkewed", false },
		{ "403 Forbidden", "RequestTimeTooSkewed", true },
		{ "507 Insufficient Storage", "InsufficientStorage", false },
		{ "403 Forbidden", NULL, false },
		{ "403 Forbidden", "SignatureDoesNotMatch", false },
	};
	struct canned cs;
	uint8_t body[10] = { 0 };

	canned_start(&cs, answers, TESSERA_ARRAY_SIZE(answers));
	struct blockclient *bc = canned_client(&cs);
	struct blockclient_op get = { .method = BC_GET, .server = 1, .key = "k", .buf = body,
				      .buf_size = sizeof(body) };
	struct blockclient_op head = { .method = BC_HEAD, .server = 1, .key = "k" };
	struct blockclient_op put = { .method = BC_PUT, .server = 1, .key = "k", .body = body,
				      .body_len = sizeof(body) };
	blockclient_run(bc, &get, 1, true);
	ck_assert_int_eq(get.result, -ETIME);
	ck_assert_int_eq(get.result_len, 0); /* the error document is not data */
	blockclient_run(bc, &head, 1, true);
	ck_assert_int_eq(head.result, -ETIME);
	blockclient_run(bc, &put, 1, true);
	ck_assert_int_eq(put.result, -ENOSPC);
	blockclient_run(bc, &head, 1, true);
	ck_assert_int_eq(head.result, -EACCES);
	blockclient_run(bc, &put, 1, true);
	ck_assert_int_eq(put.result, -EACCES);
	blockclient_free(bc);
	canned_stop(&cs);
}
END_TEST
END_TEST

START_TEST(test_many_threads)
{
	struct blockclient *bc = client_servers();
	uint64_t c0[N_SRV], c1[N_SRV], c2[N_SRV];

	for (unsigned s = 0; s < N_SRV; s++)
		c0[s] = server_connections(bc, s);
	mt_round(bc, 1);
	for (unsigned s = 0; s < N_SRV; s++)
		c1[s] = server_connections(bc, s);
	mt_round(bc, 2);
	for (unsigned s = 0; s < N_SRV; s++)
		c2[s] = server_connections(bc, s);
	for (unsigned s = 0; s < N_SRV; s++) {
		printf("server %u: %" PRIu64 " connections for %u batches, then %" PRIu64
		       " more for as many\n",
		       s, c1[s] - c0[s], MT_THREADS * MT_BATCHES * 3, c2[s] - c1[s]);
		/* At most one per thread at once (and the status request's, which reuses one). */
		ck_assert_uint_le(c1[s] - c0[s], MT_THREADS + 1);
		ck_assert_uint_le(c2[s] - c1[s], 2);
	}
	blockclient_free(bc);
}
END_TEST

/* ---------------------------------------------------------------- a hung server */

START_TEST(test_quorum_hung)
{
	struct blockclient *bc = client_servers();
	struct blockclient_op ops[N_SRV];
	char keys[N_SRV][32];
	uint8_t *bufs[N_SRV];
	const size_t len = 200000;

	/* Connections to every server first: the hung one's is then a kept-alive one. */
	for (unsigned s = 0; s < N_SRV; s++)
		server_connections(bc, s);
	ck_assert_int_eq(kill(srv_pid[2], SIGSTOP), 0);
	for (unsigned s = 0; s < N_SRV; s++) {
		bufs[s] = malloc(len);
		ck_assert_ptr_nonnull(bufs[s]);
		fill(bufs[s], len, 40 + s);
		snprintf(keys[s], sizeof(keys[s]), "q-%u", s);
		ops[s] = (struct blockclient_op){ .method = BC_PUT, .server = (uint16_t)(10 + s),
						  .key = keys[s], .body = bufs[s], .body_len = len };
	}
	uint64_t t0 = tclock_monotonic_ns();
	int ok = blockclient_run_quorum(bc, ops, N_SRV, false, 2, 200);
	uint64_t el = tclock_monotonic_ns() - t0;
	/* The buffers go at once: the abandoned transfer must not read them any more (L1). */
	for (unsigned s = 0; s < N_SRV; s++)
		free(bufs[s]);
	ck_assert_int_eq(ok, 2);
	ck_assert_int_eq(ops[0].result, 0);
	ck_assert_int_eq(ops[1].result, 0);
	ck_assert_int_eq(ops[2].result, -ETIMEDOUT);
	ck_assert_uint_ge(el, 200000000ull);
	ck_assert_uint_lt(el, 5000000000ull);
	ck_assert(!blockclient_server_up(bc, 12));
	ck_assert(blockclient_server_up(bc, 10));

	/* Down: not tried; forced with a short timeout: -ETIMEDOUT. */
	uint8_t small[64];
	struct blockclient_op get = { .method = BC_GET, .server = 12, .key = "q-2",
				      .buf = small, .buf_size = sizeof(small) };
	ck_assert_int_eq(blockclient_run(bc, &get, 1, false), 0);
	ck_assert_int_eq(get.result, -EHOSTDOWN);
	get.timeout_ms = 300;
	t0 = tclock_monotonic_ns();
	ck_assert_int_eq(blockclient_run(bc, &get, 1, true), 0);
	el = tclock_monotonic_ns() - t0;
	ck_assert_int_eq(get.result, -ETIMEDOUT);
	ck_assert_uint_lt(el, 3000000000ull);

	/* Other servers keep working meanwhile, from several threads' worth of batches. */
	for (unsigned i = 0; i < 10; i++) {
		struct blockclient_op h[2] = { { .method = BC_HEAD, .server = 10, .key = "q-0" },
					       { .method = BC_HEAD, .server = 11, .key = "q-1" } };
		ck_assert_int_eq(blockclient_run(bc, h, 2, false), 2);
		ck_assert_uint_eq(h[0].result_len, len);
	}

	ck_assert_int_eq(kill(srv_pid[2], SIGCONT), 0);
	t0 = tclock_monotonic_ns(); /* the prober finds it answering again */
	while (!blockclient_server_up(bc, 12) && tclock_monotonic_ns() - t0 < 5000000000ull)
		msleep(20);
	ck_assert(blockclient_server_up(bc, 12));
	uint8_t *body = malloc(len);
	ck_assert_ptr_nonnull(body);
	fill(body, len, 42);
	struct blockclient_op put = { .method = BC_PUT, .server = 12, .key = "q-2", .body = body,
				      .body_len = len };
	ck_assert_int_eq(blockclient_run(bc, &put, 1, false), 1);
	ck_assert(blockclient_server_up(bc, 12));
	free(body);
	for (unsigned s = 0; s < N_SRV; s++)
		ops[s] = (struct blockclient_op){ .method = BC_DELETE, .server = (uint16_t)(10 + s),
						  .key = keys[s] };
	ck_assert_int_eq(blockclient_run(bc, ops, N_SRV, false), N_SRV);
	blockclient_free(bc);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("blockclient");
	TCase *tc = tcase_create("no_server");

	/* Never through a proxy from the environment: the servers are on 127.0.0.1. */
	setenv("no_proxy", "127.0.0.1,localhost", 1);
	setenv("NO_PROXY", "127.0.0.1,localhost", 1);

	tcase_add_test(tc, test_new_invalid);
	tcase_add_test(tc, test_free_idle);
	tcase_add_test(tc, test_refused_backoff);
	suite_add_tcase(s, tc);

	tc = tcase_create("servers");
	tcase_add_unchecked_fixture(tc, servers_setup, servers_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_roundtrip);
	tcase_add_test(tc, test_check_access);
	tcase_add_test(tc, test_slowdown_retried);
	tcase_add_test(tc, test_error_codes);
	tcase_add_test(tc, test_down_and_back);
	tcase_add_test(tc, test_many_threads);
	tcase_add_test(tc, test_quorum_hung);
	suite_add_tcase(s, tc);
	return s;
}
