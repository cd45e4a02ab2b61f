/*
 * bcclient: a small command-line client over tesserafs's block client, for the end-to-end
 * tests (interoperability with S3 servers we did not write) and a load generator for the
 * blockd benchmark.
 *
 *   bcclient put    URL BUCKET KEY [FILE]         body from FILE (default stdin)
 *   bcclient get    URL BUCKET KEY [FILE [OFF LEN]]  body to FILE (default stdout)
 *   bcclient head   URL BUCKET KEY                prints the object size
 *   bcclient delete URL BUCKET KEY
 *   bcclient bench  URL PATH_PREFIX get|put SIZE CONCURRENCY SECONDS [sign]
 *
 * put/get/head/delete go through include/tessera/blockclient.h exactly as the filesystem
 * does (one batch of one op). Credentials from TESSERA_ACCESS_KEY / TESSERA_SECRET_KEY,
 * region from TESSERA_REGION (default us-east-1). Exit status: 0 success, 3 no such key
 * (404), 1 any other failure (the errno and HTTP status are printed), 2 usage.
 *
 * bench drives CONCURRENCY keep-alive connections with libcurl multi for SECONDS seconds:
 * GET fetches URL/PATH_PREFIX (one object, SIZE bytes expected); PUT writes SIZE bytes to
 * URL/PATH_PREFIX-<connection>. With "sign" every request is SigV4-signed with the headers
 * blockclient sends (x-amz-content-sha256: UNSIGNED-PAYLOAD; PUTs also x-tessera-etag:
 * no-md5), without it requests are plain (nginx). The signature is computed here, with the
 * signing key derived once a day as AWS SDKs do, not by libcurl: CURLOPT_AWS_SIGV4 (7.88)
 * costs ~50 us of CPU per request, more than the server's whole GET, and the load generator
 * shares the machine's cores with the server it measures. Prints "requests N", "errors N",
 * "rate R req/s", "throughput T MiB/s", "p50 X ms", "p99 Y ms". Single-threaded; no locks.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <time.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "tessera/blockclient.h"
#include "tessera/common.h"

#define BCC_MAX_OBJECT (256u << 20)
#define BCC_MAX_CONC 256

static int usage(void)
{
	fprintf(stderr, "usage: bcclient put|get|head|delete URL BUCKET KEY [FILE [OFF LEN]]\n"
			"       bcclient bench URL PATH_PREFIX get|put SIZE CONCURRENCY SECONDS "
			"[sign]\n");
	return 2;
}

static int read_input(const char *path, char **ret, size_t *ret_len)
{
	FILE *f = path ? fopen(path, "rb") : stdin;
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	int r = 0;

	if (!f || !buf) {
		r = -errno;
		goto out;
	}
	for (;;) {
		if (len == cap) {
			if (cap >= BCC_MAX_OBJECT) {
				r = -EFBIG;
				goto out;
			}
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				r = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
		size_t n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0) {
			if (ferror(f))
				r = -EIO;
			break;
		}
	}
out:
	if (f && f != stdin)
		fclose(f);
	if (r < 0) {
		free(buf);
		return r;
	}
	*ret = buf;
	*ret_len = len;
	return 0;
}

static int cmd_object(int argc, char **argv)
{
	const char *verb = argv[1], *url = argv[2];
	const char *file = argc > 5 ? argv[5] : NULL;
	struct blockclient_config cfg = { .connect_timeout_ms = 2000, .request_timeout_ms = 30000 };
	struct blockclient_op op = { .server = 1, .key = argv[4] };
	struct blockclient *bc = NULL;
	const char *ak = getenv("TESSERA_ACCESS_KEY"), *sk = getenv("TESSERA_SECRET_KEY");
	const char *region = getenv("TESSERA_REGION");
	uint16_t id = 1;
	char *body = NULL;
	size_t body_len = 0;
	int r, rc = 1;

	if (!ak || !sk || strlen(ak) >= sizeof(cfg.access_key) ||
	    strlen(sk) >= sizeof(cfg.secret_key) || strlen(argv[3]) >= sizeof(cfg.bucket)) {
		fprintf(stderr, "bcclient: set TESSERA_ACCESS_KEY and TESSERA_SECRET_KEY\n");
		return 2;
	}
	strcpy(cfg.access_key, ak);
	strcpy(cfg.secret_key, sk);
	strcpy(cfg.bucket, argv[3]);
	snprintf(cfg.region, sizeof(cfg.region), "%s", region && *region ? region : "us-east-1");

	if (strcmp(verb, "put") == 0) {
		op.method = BC_PUT;
		if ((r = read_input(file, &body, &body_len)) < 0) {
			fprintf(stderr, "bcclient: cannot read '%s': %s\n", file ? file : "-",
				strerror(-r));
			goto out;
		}
		op.body = body;
		op.body_len = body_len;
	} else if (strcmp(verb, "get") == 0) {
		op.method = BC_GET;
		if (argc > 7) {
			op.range_off = strtoull(argv[6], NULL, 10);
			op.range_len = strtoull(argv[7], NULL, 10);
		}
		op.buf_size = BCC_MAX_OBJECT;
		body = malloc(op.buf_size);
		if (!body)
			goto out;
		op.buf = body;
	} else if (strcmp(verb, "head") == 0) {
		op.method = BC_HEAD;
	} else if (strcmp(verb, "delete") == 0) {
		op.method = BC_DELETE;
	} else {
		rc = usage();
		goto out;
	}
	if ((r = blockclient_new(&cfg, &id, &url, 1, &bc)) < 0) {
		fprintf(stderr, "bcclient: blockclient_new: %s\n", strerror(-r));
		goto out;
	}
	blockclient_run(bc, &op, 1, true);
	if (op.result < 0) {
		fprintf(stderr, "bcclient: %s %s/%s/%s: %s (HTTP %ld)\n", verb, url, argv[3],
			argv[4], strerror(-op.result), op.http_status);
		rc = op.result == -ENOENT ? 3 : 1;
		goto out;
	}
	if (op.method == BC_GET) {
		FILE *f = file && strcmp(file, "-") != 0 ? fopen(file, "wb") : stdout;
		if (!f || fwrite(body, 1, op.result_len, f) != op.result_len ||
		    (f != stdout ? fclose(f) : fflush(f)) != 0) {
			fprintf(stderr, "bcclient: cannot write '%s'\n", file ? file : "-");
			goto out;
		}
	} else if (op.method == BC_HEAD) {
		printf("%zu\n", op.result_len);
	}
	rc = 0;
out:
	blockclient_free(bc);
	free(body);
	return rc;
}

/* ---------------------------------------------------------------- bench */

struct bench_conn {
	CURL *e;
	struct curl_slist *hdrs;
	char url[1024];
	const char *path;      /* inside url: "/bucket/key" */
	uint64_t start_ns;
	uint64_t got;
};

struct bench {
	bool put, sign;
	size_t size;
	char *body;
	uint64_t *lat_us;
	size_t n_lat, cap_lat;
	uint64_t errors, bytes;
	/* SigV4 */
	const char *access_key, *secret_key;
	char host[256];        /* host[:port] of the URL, as libcurl sends it */
	char key_date[9];      /* the date signing_key was derived for */
	uint8_t signing_key[32];
	EVP_MD *sha256;
	EVP_MD_CTX *md;
};

static int bench_digest(struct bench *bn, const void *a, size_t alen, const void *b, size_t blen,
			uint8_t out[32])
{
	unsigned int len = 32;

	return EVP_DigestInit_ex(bn->md, bn->sha256, NULL) && EVP_DigestUpdate(bn->md, a, alen) &&
			       (!blen || EVP_DigestUpdate(bn->md, b, blen)) &&
			       EVP_DigestFinal_ex(bn->md, out, &len) ?
		       0 :
		       -EIO;
}

static int bench_hmac(struct bench *bn, const void *key, size_t key_len, const char *msg,
		      uint8_t out[32])
{
	uint8_t pad[64], inner[32];

	if (key_len > sizeof(pad))
		return -EINVAL;
	memset(pad, 0x36, sizeof(pad));
	for (size_t i = 0; i < key_len; i++)
		pad[i] ^= ((const uint8_t *)key)[i];
	if (bench_digest(bn, pad, sizeof(pad), msg, strlen(msg), inner) < 0)
		return -EIO;
	for (size_t i = 0; i < sizeof(pad); i++)
		pad[i] ^= 0x36 ^ 0x5c;
	return bench_digest(bn, pad, sizeof(pad), inner, sizeof(inner), out);
}

/* Appends x-amz-date, x-amz-content-sha256 and Authorization for method and bc->path. */
static struct curl_slist *bench_sign(struct bench *bn, struct bench_conn *bc, const char *method,
				     struct curl_slist *h)
{
	static const char scope_tail[] = "us-east-1/s3/aws4_request";
	char amz_date[17], canon[2048], sts[512], line[512], hex[65];
	uint8_t md[32];
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
	if (memcmp(bn->key_date, amz_date, 8) != 0) {
		char k0[300];
		snprintf(k0, sizeof(k0), "AWS4%s", bn->secret_key);
		memcpy(bn->key_date, amz_date, 8);
		bn->key_date[8] = '\0';
		if (bench_hmac(bn, k0, strlen(k0), bn->key_date, bn->signing_key) < 0 ||
		    bench_hmac(bn, bn->signing_key, 32, "us-east-1", bn->signing_key) < 0 ||
		    bench_hmac(bn, bn->signing_key, 32, "s3", bn->signing_key) < 0 ||
		    bench_hmac(bn, bn->signing_key, 32, "aws4_request", bn->signing_key) < 0)
			return NULL;
	}
	snprintf(canon, sizeof(canon),
		 "%s\n%s\n\nhost:%s\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:%s\n\n"
		 "host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD",
		 method, bc->path, bn->host, amz_date);
	if (bench_digest(bn, canon, strlen(canon), NULL, 0, md) < 0)
		return NULL;
	thex_encode(md, 32, hex);
	snprintf(sts, sizeof(sts), "AWS4-HMAC-SHA256\n%s\n%s/%s\n%s", amz_date, bn->key_date,
		 scope_tail, hex);
	if (bench_hmac(bn, bn->signing_key, 32, sts, md) < 0)
		return NULL;
	thex_encode(md, 32, hex);
	snprintf(line, sizeof(line), "x-amz-date: %s", amz_date);
	h = curl_slist_append(h, line);
	h = h ? curl_slist_append(h, "x-amz-content-sha256: UNSIGNED-PAYLOAD") : NULL;
	snprintf(line, sizeof(line),
		 "Authorization: AWS4-HMAC-SHA256 Credential=%s/%s/%s,SignedHeaders=host;"
		 "x-amz-content-sha256;x-amz-date,Signature=%s",
		 bn->access_key, bn->key_date, scope_tail, hex);
	return h ? curl_slist_append(h, line) : NULL;
}

static size_t bench_sink(char *p, size_t sz, size_t n, void *ctx)
{
	struct bench_conn *bc = ctx;

	(void)p;
	bc->got += sz * n;
	return sz * n;
}

static void bench_setup(struct bench *bn, struct bench_conn *bc)
{
	CURL *e = bc->e;

	curl_easy_reset(e);
	curl_easy_setopt(e, CURLOPT_URL, bc->url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 30000L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, bench_sink);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, bc);
	curl_easy_setopt(e, CURLOPT_PRIVATE, bc);
	/* Bodies of at most 1 MiB get no "Expect: 100-continue" from libcurl anyway. */
	curl_slist_free_all(bc->hdrs);
	bc->hdrs = curl_slist_append(NULL, "Expect:");
	if (bn->sign && bc->hdrs) {
		if (bn->put)
			bc->hdrs = curl_slist_append(bc->hdrs, "x-tessera-etag: no-md5");
		if (bc->hdrs)
			bc->hdrs = bench_sign(bn, bc, bn->put ? "PUT" : "GET", bc->hdrs);
	}
	if (bn->put) {
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, bn->body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bn->size);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, bc->hdrs);
	bc->got = 0;
	bc->start_ns = tclock_monotonic_ns();
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int cmd_bench(int argc, char **argv)
{
	struct bench bn = { 0 };
	struct bench_conn conns[BCC_MAX_CONC] = { 0 };
	const char *base = argv[2], *prefix = argv[3];
	unsigned conc = (unsigned)atoi(argv[6]);
	double seconds = atof(argv[7]);
	const char *ak = getenv("TESSERA_ACCESS_KEY"), *sk = getenv("TESSERA_SECRET_KEY");
	CURLM *m = curl_multi_init();
	uint64_t t0, deadline, elapsed;
	int running = 0, rc = 1;

	bn.put = strcmp(argv[4], "put") == 0;
	bn.size = (size_t)strtoull(argv[5], NULL, 10);
	bn.sign = argc > 8 && strcmp(argv[8], "sign") == 0;
	if (!m || conc == 0 || conc > BCC_MAX_CONC || seconds <= 0 || bn.size > BCC_MAX_OBJECT ||
	    (!bn.put && strcmp(argv[4], "get") != 0))
		return usage();
	if (bn.sign) {
		const char *h = strstr(base, "://");
		size_t hl;
		h = h ? h + 3 : base;
		hl = strcspn(h, "/");
		if (!ak || !sk || strlen(sk) > 200 || hl >= sizeof(bn.host)) {
			fprintf(stderr, "bench: set TESSERA_ACCESS_KEY and TESSERA_SECRET_KEY\n");
			return 2;
		}
		memcpy(bn.host, h, hl);
		bn.host[hl] = '\0';
		bn.access_key = ak;
		bn.secret_key = sk;
		bn.sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
		bn.md = EVP_MD_CTX_new();
		if (!bn.sha256 || !bn.md)
			goto out;
	}
	bn.body = malloc(bn.size ? bn.size : 1);
	bn.cap_lat = 1 << 16;
	bn.lat_us = malloc(bn.cap_lat * sizeof(*bn.lat_us));
	if (!bn.body || !bn.lat_us)
		goto out;
	for (size_t i = 0; i < bn.size; i++)
		bn.body[i] = (char)(i * 31 + 7);
	curl_multi_setopt(m, CURLMOPT_MAX_HOST_CONNECTIONS, (long)conc);
	t0 = tclock_monotonic_ns();
	deadline = t0 + (uint64_t)(seconds * 1e9);
	for (unsigned i = 0; i < conc; i++) {
		struct bench_conn *bc = &conns[i];
		bc->e = curl_easy_init();
		if (bn.put)
			snprintf(bc->url, sizeof(bc->url), "%s/%s-%u", base, prefix, i);
		else
			snprintf(bc->url, sizeof(bc->url), "%s/%s", base, prefix);
		bc->path = strstr(bc->url, "://");
		bc->path = bc->path ? bc->path + 3 : bc->url;
		bc->path += strcspn(bc->path, "/");
		bench_setup(&bn, bc);
		curl_multi_add_handle(m, bc->e);
	}
	do {
		CURLMsg *msg;
		int left;

		curl_multi_perform(m, &running);
		while ((msg = curl_multi_info_read(m, &left)) != NULL) {
			struct bench_conn *bc;
			long status = 0;
			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&bc);
			curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
			curl_multi_remove_handle(m, bc->e);
			if (msg->data.result != CURLE_OK || status < 200 || status >= 300 ||
			    (!bn.put && bc->got != bn.size)) {
				if (bn.errors++ < 3)
					fprintf(stderr, "bench: %s: %s, HTTP %ld, %llu bytes\n", bc->url,
						curl_easy_strerror(msg->data.result), status,
						(unsigned long long)bc->got);
			} else {
				if (bn.n_lat == bn.cap_lat) {
					uint64_t *nl = realloc(bn.lat_us, 2 * bn.cap_lat * sizeof(*nl));
					if (!nl)
						goto out;
					bn.lat_us = nl;
					bn.cap_lat *= 2;
				}
				bn.lat_us[bn.n_lat++] = (tclock_monotonic_ns() - bc->start_ns) / 1000;
				bn.bytes += bn.size;
			}
			if (tclock_monotonic_ns() < deadline) {
				bench_setup(&bn, bc);
				curl_multi_add_handle(m, bc->e);
				running++;
			}
		}
		if (running)
			curl_multi_poll(m, NULL, 0, 100, NULL);
	} while (running);
	elapsed = tclock_monotonic_ns() - t0;
	qsort(bn.lat_us, bn.n_lat, sizeof(*bn.lat_us), u64_cmp);
	printf("requests %zu\nerrors %llu\n", bn.n_lat, (unsigned long long)bn.errors);
	printf("rate %.1f req/s\n", (double)bn.n_lat / ((double)elapsed / 1e9));
	printf("throughput %.1f MiB/s\n", (double)bn.bytes / (1 << 20) / ((double)elapsed / 1e9));
	printf("p50 %.3f ms\n", bn.n_lat ? (double)bn.lat_us[bn.n_lat / 2] / 1000 : 0);
	printf("p99 %.3f ms\n", bn.n_lat ? (double)bn.lat_us[bn.n_lat * 99 / 100] / 1000 : 0);
	rc = bn.errors || bn.n_lat == 0;
out:
	for (unsigned i = 0; i < conc && i < BCC_MAX_CONC; i++) {
		if (!conns[i].e)
			break;
		curl_easy_cleanup(conns[i].e);
		curl_slist_free_all(conns[i].hdrs);
	}
	curl_multi_cleanup(m);
	free(bn.body);
	free(bn.lat_us);
	EVP_MD_CTX_free(bn.md);
	EVP_MD_free(bn.sha256);
	return rc;
}

int main(int argc, char **argv)
{
	int rc;

	if (argc < 2)
		return usage();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (strcmp(argv[1], "bench") == 0)
		rc = argc >= 8 ? cmd_bench(argc, argv) : usage();
	else
		rc = argc >= 5 ? cmd_object(argc, argv) : usage();
	curl_global_cleanup();
	return rc;
}
