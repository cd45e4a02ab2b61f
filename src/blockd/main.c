/*
 * tessera-blockd: the block server program, a thin main over the blockd library.
 *
 * Parses the command line, collects credentials (--credentials FILE and/or the environment
 * variables TESSERA_ACCESS_KEY + TESSERA_SECRET_KEY), starts the server and waits for SIGTERM
 * or SIGINT, then stops cleanly and exits 0. Exit 2 on a usage error, 1 when the server
 * cannot start. Logging decisions live here: one line per failed request (info for client
 * errors, warning for server errors), and with TESSERA_DEBUG=1 one line per request.
 *
 * Threads: the main thread only waits for signals (blocked everywhere, taken with
 * sigwait()); requests run on the library's event-loop and job threads, which call
 * log_request().
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/blockd.h"
#include "tessera/common.h"

static const char usage_text[] =
	"usage: tessera-blockd --data DIR [--data DIR...] [options]\n"
	"\n"
	"Serves objects (tesserafs fragments) over a path-style S3 subset with SigV4 auth.\n"
	"\n"
	"  -d, --data DIR              data directory (repeat for several disks)\n"
	"  -l, --listen ADDR:PORT      address to bind (default 127.0.0.1:9000; [::1]:PORT for\n"
	"                              IPv6; port 0 picks a free port)\n"
	"  -p, --port-file FILE        write the bound port to FILE once listening\n"
	"  -c, --credentials FILE      lines \"ACCESS_KEY SECRET_KEY\" ('#' comments)\n"
	"  -r, --region REGION         accept only this credential-scope region (default any)\n"
	"  -s, --max-object-size SIZE  largest object accepted (default 64M)\n"
	"  -m, --max-connections N     concurrent connections (default 512)\n"
	"  -t, --connection-timeout S  idle connection timeout in seconds (default 60)\n"
	"  -B, --body-timeout S        a PUT body must arrive within S seconds (default 120)\n"
	"  -T, --threads N             event-loop threads (default one per CPU, at most 64)\n"
	"  -h, --help                  show this help\n"
	"  -V, --version               show the version\n"
	"\n"
	"Credentials may also come from TESSERA_ACCESS_KEY and TESSERA_SECRET_KEY.\n"
	"TESSERA_DEBUG=1 logs every request.\n";

static void log_request(void *ctx, const struct blockd_request_info *i)
{
	double ms = (double)i->duration_ns / 1e6;
	const char *sep = i->detail ? ": " : "";
	const char *detail = i->detail ? i->detail : "";

	(void)ctx;
	if (i->status >= 500)
		tlog_warn("%s '%s' failed: %u %s%s%s [%s]", i->method, i->uri, i->status,
			  i->s3_code ? i->s3_code : "", sep, detail, i->request_id);
	else if (i->status == 0)
		tlog_info("%s '%s' not answered%s%s [%s]", i->method, i->uri, sep, detail,
			  i->request_id);
	else if (i->status >= 400)
		tlog_info("%s '%s' refused: %u %s%s%s [%s]", i->method, i->uri, i->status,
			  i->s3_code ? i->s3_code : "", sep, detail, i->request_id);
	else
		tlog_debug("%s '%s' %u, %llu bytes in, %.1f ms [%s]", i->method, i->uri, i->status,
			   (unsigned long long)i->bytes_in, ms, i->request_id);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tessera-blockd: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'tessera-blockd --help' for more information.\n");
	return 2;
}

/* "127.0.0.1:9000", "[::1]:0", "::1:9000" (last colon separates the port). */
static int parse_listen(const char *s, struct blockd_config *cfg)
{
	const char *colon = strrchr(s, ':');
	const char *host = s;
	size_t hlen;
	uint64_t port;

	if (!colon)
		return -EINVAL;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		host++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(cfg->listen_addr))
		return -EINVAL;
	if (tparse_uint(colon + 1, 0, 65535, &port) < 0)
		return -EINVAL;
	memcpy(cfg->listen_addr, host, hlen);
	cfg->listen_addr[hlen] = '\0';
	cfg->listen_port = (uint16_t)port;
	return 0;
}

/* A count or a number of seconds, 1 to max (tparse_uint()). */
static int parse_uint(const char *s, unsigned max, unsigned *ret)
{
	uint64_t v;
	int r = tparse_uint(s, 1, max, &v);

	if (r == 0)
		*ret = (unsigned)v;
	return r;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "data", required_argument, NULL, 'd' },
		{ "listen", required_argument, NULL, 'l' },
		{ "port-file", required_argument, NULL, 'p' },
		{ "credentials", required_argument, NULL, 'c' },
		{ "region", required_argument, NULL, 'r' },
		{ "max-object-size", required_argument, NULL, 's' },
		{ "max-connections", required_argument, NULL, 'm' },
		{ "connection-timeout", required_argument, NULL, 't' },
		{ "body-timeout", required_argument, NULL, 'B' },
		{ "threads", required_argument, NULL, 'T' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	static struct blockd_config cfg;
	const char *env_ak, *env_sk;
	struct blockd *b = NULL;
	sigset_t sigs;
	unsigned line = 0;
	int c, r, sig;

	tlog_set_ident("tessera-blockd");
	blockd_config_defaults(&cfg);
	strcpy(cfg.listen_addr, "127.0.0.1");
	cfg.listen_port = 9000;
	cfg.on_request = log_request;

	while ((c = getopt_long(argc, argv, "d:l:p:c:r:s:m:t:B:T:hV", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			if (cfg.n_dirs >= BLOCKD_MAX_DIRS)
				return usage_error("too many data directories (at most 16): '%s'",
						   optarg);
			if (!*optarg || strlen(optarg) >= sizeof(cfg.data_dirs[0]))
				return usage_error("invalid data directory '%s'", optarg);
			strcpy(cfg.data_dirs[cfg.n_dirs++], optarg);
			break;
		case 'l':
			if (parse_listen(optarg, &cfg) < 0)
				return usage_error("invalid listen address '%s' (want ADDR:PORT)",
						   optarg);
			break;
		case 'p':
			if (strlen(optarg) >= sizeof(cfg.port_file))
				return usage_error("port file name too long: '%s'", optarg);
			strcpy(cfg.port_file, optarg);
			break;
		case 'c':
			r = blockd_load_credentials(&cfg, optarg, &line);
			if (r == -EINVAL) {
				fprintf(stderr, "tessera-blockd: error: malformed credentials file "
						"'%s' at line %u (want \"ACCESS_KEY SECRET_KEY\")\n",
					optarg, line);
				return 2;
			}
			if (r < 0) {
				fprintf(stderr, "tessera-blockd: error: cannot read credentials "
						"file '%s': %s\n", optarg, strerror(-r));
				return 2;
			}
			break;
		case 'r':
			if (!*optarg || strlen(optarg) >= sizeof(cfg.region))
				return usage_error("invalid region '%s'", optarg);
			strcpy(cfg.region, optarg);
			break;
		case 's':
			if (tparse_size(optarg, &cfg.max_object_size) < 0 ||
			    cfg.max_object_size == 0)
				return usage_error("invalid size '%s' for --max-object-size", optarg);
			break;
		case 'm':
			if (parse_uint(optarg, 100000, &cfg.max_connections) < 0)
				return usage_error("invalid number '%s' for --max-connections",
						   optarg);
			break;
		case 't':
			if (parse_uint(optarg, 86400, &cfg.connection_timeout_s) < 0)
				return usage_error("invalid number of seconds '%s' for "
						   "--connection-timeout", optarg);
			break;
		case 'B':
			if (parse_uint(optarg, 86400, &cfg.body_timeout_s) < 0)
				return usage_error("invalid number of seconds '%s' for "
						   "--body-timeout", optarg);
			break;
		case 'T':
			if (parse_uint(optarg, 64, &cfg.threads) < 0)
				return usage_error("invalid number '%s' for --threads (1 to 64)",
						   optarg);
			break;
		case 'h':
			fputs(usage_text, stdout);
			return 0;
		case 'V':
			printf("tessera-blockd %s\n", TESSERA_VERSION);
			return 0;
		default:
			fprintf(stderr, "Try 'tessera-blockd --help' for more information.\n");
			return 2;
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument '%s'", argv[optind]);
	if (cfg.n_dirs == 0)
		return usage_error("%s", "no data directory given (--data DIR)");

	env_ak = getenv("TESSERA_ACCESS_KEY");
	env_sk = getenv("TESSERA_SECRET_KEY");
	if ((env_ak && *env_ak) != (env_sk && *env_sk))
		return usage_error("%s", "TESSERA_ACCESS_KEY and TESSERA_SECRET_KEY must be set "
					 "together");
	if (env_ak && *env_ak && blockd_config_add_key(&cfg, env_ak, env_sk) < 0)
		return usage_error("%s", "invalid TESSERA_ACCESS_KEY or TESSERA_SECRET_KEY");
	if (cfg.n_keys == 0)
		return usage_error("%s", "no credentials: refusing to start without a key (use "
					 "--credentials FILE or TESSERA_ACCESS_KEY and "
					 "TESSERA_SECRET_KEY)");

	/* Block the stop signals in every thread; the main thread takes them with sigwait(). */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	r = blockd_start(&cfg, &b);
	if (r < 0)
		return 1; /* blockd_start() said why */
	tlog_info("listening on %s%s%s:%u, %u data director%s, %u key%s",
		  strchr(cfg.listen_addr, ':') ? "[" : "", cfg.listen_addr,
		  strchr(cfg.listen_addr, ':') ? "]" : "", (unsigned)blockd_port(b), cfg.n_dirs,
		  cfg.n_dirs == 1 ? "y" : "ies", cfg.n_keys, cfg.n_keys == 1 ? "" : "s");
	memset(cfg.keys, 0, sizeof(cfg.keys));

	for (;;) {
		if (sigwait(&sigs, &sig) == 0 && (sig == SIGTERM || sig == SIGINT))
			break;
	}
	tlog_info("stopping on signal %d", sig);
	blockd_free(b);
	return 0;
}
