/*
 * blockd/server_status: GET /-/status (JSON, what tessera status and the tests read) and
 * GET /metrics (Prometheus text), and the per-request counters behind them. Counters are
 * atomics of struct blockd, updated by bd_record_stats() when a request completes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <isa-l/crc.h>

#include "server_int.h"

/* Metrics dimensions: methods, statuses, latency buckets (seconds, upper bounds). */
static const char *const bd_methods[] = { "GET", "HEAD", "PUT", "DELETE", "POST", "other" };
#define BD_N_METHODS 6
static const unsigned bd_statuses[] = { 200, 204, 206, 400, 403, 404, 405, 409, 411, 413,
					416, 431, 500, 501, 503, 507, 0 /* not answered */ };
#define BD_N_STATUSES 18 /* the list plus "other" */
static const double bd_lat_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					0.1,    0.25,  0.5,    1,     2.5,  5,     10 };
#define BD_N_LAT 14

struct dir_usage {
	uint64_t capacity, used, free;
};

static void dir_usage(const struct bd_dir *d, struct dir_usage *u)
{
	struct statvfs sv;

	memset(u, 0, sizeof(*u));
	if (statvfs(d->root, &sv) < 0)
		return;
	u->capacity = (uint64_t)sv.f_blocks * sv.f_frsize;
	u->free = (uint64_t)sv.f_bavail * sv.f_frsize;
	u->used = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize;
}

enum MHD_Result bd_reply_status(struct bd_req *r, struct MHD_Connection *c)
{
	struct blockd *b = r->b;
	struct tstr d;

	tstr_init(&d, 1u << 20);
	uint64_t stored = 0;

	tstr_printf(&d, "{\"version\":\"%s\",\"uptime_s\":%llu,\"dirs\":[", TESSERA_VERSION,
		    (unsigned long long)((tclock_monotonic_ns() - b->start_ns) / 1000000000ull));
	for (unsigned i = 0; i < b->store.n_dirs; i++) {
		struct dir_usage u;
		dir_usage(&b->store.dirs[i], &u);
		tstr_printf(&d, "%s{\"path\":", i ? "," : "");
		tstr_json_str(&d, b->store.dirs[i].root);
		tstr_printf(&d, ",\"capacity\":%llu,\"used\":%llu,\"free\":%llu,\"objects\":%lld,"
				"\"bytes_stored\":%lld}",
			    (unsigned long long)u.capacity, (unsigned long long)u.used,
			    (unsigned long long)u.free, (long long)b->store.dirs[i].n_objects,
			    (long long)b->store.dirs[i].n_bytes);
		stored += (uint64_t)b->store.dirs[i].n_bytes;
	}
	tstr_printf(&d, "],\"objects\":%lld,\"bytes_stored\":%llu,\"requests\":%llu,"
			"\"errors\":%llu,\"slowdowns\":%llu,\"connections\":%llu,"
			"\"connections_open\":%lld,\"bytes_in\":%llu,\"bytes_out\":%llu,"
			"\"dir_fsyncs\":%llu,\"dir_syncs_wanted\":%llu,"
			"\"max_connections\":%u,\"max_object_size\":%llu}\n",
		    (long long)b->store.objects, (unsigned long long)stored,
		    (unsigned long long)b->requests, (unsigned long long)b->errors,
		    (unsigned long long)b->slowdowns, (unsigned long long)b->connections,
		    (long long)b->connections_open, (unsigned long long)b->bytes_in,
		    (unsigned long long)b->bytes_out, (unsigned long long)b->store.dir_fsyncs,
		    (unsigned long long)b->store.dir_syncs_wanted, b->cfg.max_connections,
		    (unsigned long long)b->cfg.max_object_size);
	return bd_reply_text(r, c, &d, "application/json");
}

enum MHD_Result bd_reply_metrics(struct bd_req *r, struct MHD_Connection *c)
{
	struct blockd *b = r->b;
	struct tstr d;

	tstr_init(&d, 1u << 20);
	static const char *const gauges[] = { "capacity_bytes", "used_bytes", "free_bytes",
					      "objects", "stored_bytes" };
	uint64_t cum = 0;

	tstr_printf(&d, "# HELP tessera_blockd_requests_total Requests by method and HTTP status "
			"(status 0: not answered).\n"
			"# TYPE tessera_blockd_requests_total counter\n");
	for (unsigned m = 0; m < BD_N_METHODS; m++) {
		for (unsigned st = 0; st < BD_N_STATUSES; st++) {
			uint64_t v = b->by_status[m][st];
			char code[16] = "other";
			if (!v)
				continue;
			if (st < BD_N_STATUSES - 1)
				snprintf(code, sizeof(code), "%u", bd_statuses[st]);
			tstr_printf(&d, "tessera_blockd_requests_total{method=\"%s\",status=\"%s\"} "
					"%llu\n", bd_methods[m], code, (unsigned long long)v);
		}
	}
	tstr_printf(&d,
		    "# HELP tessera_blockd_errors_total Requests answered with an error or aborted.\n"
		    "# TYPE tessera_blockd_errors_total counter\n"
		    "tessera_blockd_errors_total %llu\n"
		    "# HELP tessera_blockd_slowdowns_total Requests refused with SlowDown.\n"
		    "# TYPE tessera_blockd_slowdowns_total counter\n"
		    "tessera_blockd_slowdowns_total %llu\n"
		    "# HELP tessera_blockd_connections_total TCP connections accepted.\n"
		    "# TYPE tessera_blockd_connections_total counter\n"
		    "tessera_blockd_connections_total %llu\n"
		    "# HELP tessera_blockd_connections_open TCP connections open.\n"
		    "# TYPE tessera_blockd_connections_open gauge\n"
		    "tessera_blockd_connections_open %lld\n"
		    "# HELP tessera_blockd_received_bytes_total Request body bytes received.\n"
		    "# TYPE tessera_blockd_received_bytes_total counter\n"
		    "tessera_blockd_received_bytes_total %llu\n"
		    "# HELP tessera_blockd_sent_bytes_total Response body bytes sent.\n"
		    "# TYPE tessera_blockd_sent_bytes_total counter\n"
		    "tessera_blockd_sent_bytes_total %llu\n"
		    "# HELP tessera_blockd_dir_fsyncs_total fsync(2) calls on directories.\n"
		    "# TYPE tessera_blockd_dir_fsyncs_total counter\n"
		    "tessera_blockd_dir_fsyncs_total %llu\n"
		    "# HELP tessera_blockd_dir_sync_requests_total Directory changes (renames, "
		    "unlinks) that waited for a directory fsync; group commit shares one fsync "
		    "between several.\n"
		    "# TYPE tessera_blockd_dir_sync_requests_total counter\n"
		    "tessera_blockd_dir_sync_requests_total %llu\n"
		    "# HELP tessera_blockd_objects Objects stored.\n"
		    "# TYPE tessera_blockd_objects gauge\n"
		    "tessera_blockd_objects %lld\n"
		    "# HELP tessera_blockd_uptime_seconds Seconds since start.\n"
		    "# TYPE tessera_blockd_uptime_seconds gauge\n"
		    "tessera_blockd_uptime_seconds %llu\n"
		    "# HELP tessera_blockd_request_duration_seconds From the request line to the "
		    "end of the response.\n"
		    "# TYPE tessera_blockd_request_duration_seconds histogram\n",
		    (unsigned long long)b->errors, (unsigned long long)b->slowdowns,
		    (unsigned long long)b->connections, (long long)b->connections_open,
		    (unsigned long long)b->bytes_in, (unsigned long long)b->bytes_out,
		    (unsigned long long)b->store.dir_fsyncs,
		    (unsigned long long)b->store.dir_syncs_wanted, (long long)b->store.objects,
		    (unsigned long long)((tclock_monotonic_ns() - b->start_ns) / 1000000000ull));
	for (unsigned i = 0; i <= BD_N_LAT; i++) {
		char le[32] = "+Inf";
		cum += b->latency[i];
		if (i < BD_N_LAT)
			snprintf(le, sizeof(le), "%g", bd_lat_bounds[i]);
		tstr_printf(&d, "tessera_blockd_request_duration_seconds_bucket{le=\"%s\"} %llu\n",
			    le, (unsigned long long)cum);
	}
	tstr_printf(&d, "tessera_blockd_request_duration_seconds_sum %.6f\n"
			"tessera_blockd_request_duration_seconds_count %llu\n",
		    (double)b->latency_sum_us / 1e6, (unsigned long long)cum);
	for (unsigned k = 0; k < TESSERA_ARRAY_SIZE(gauges); k++) {
		tstr_printf(&d, "# HELP tessera_blockd_dir_%s Per data directory: %s.\n"
				"# TYPE tessera_blockd_dir_%s gauge\n", gauges[k], gauges[k], gauges[k]);
		for (unsigned i = 0; i < b->store.n_dirs; i++) {
			struct dir_usage u;
			int64_t v;
			dir_usage(&b->store.dirs[i], &u);
			switch (k) {
			case 0: v = (int64_t)u.capacity; break;
			case 1: v = (int64_t)u.used; break;
			case 2: v = (int64_t)u.free; break;
			case 3: v = b->store.dirs[i].n_objects; break;
			default: v = b->store.dirs[i].n_bytes; break;
			}
			tstr_printf(&d, "tessera_blockd_dir_%s{path=", gauges[k]);
			tstr_json_str(&d, b->store.dirs[i].root);
			tstr_printf(&d, "} %lld\n", (long long)v);
		}
	}
	return bd_reply_text(r, c, &d, "text/plain; version=0.0.4");
}

void bd_record_stats(struct blockd *b, const struct bd_req *r)
{
	uint64_t us = (tclock_monotonic_ns() - r->start_ns) / 1000;
	unsigned m = 0, st = 0, l = 0;

	while (m < BD_N_METHODS - 1 && strcmp(bd_methods[m], r->method) != 0)
		m++;
	while (st < BD_N_STATUSES - 1 && bd_statuses[st] != r->status)
		st++;
	while (l < BD_N_LAT && (double)us / 1e6 > bd_lat_bounds[l])
		l++;
	b->by_status[m][st]++;
	b->latency[l]++;
	b->latency_sum_us += us;
	b->bytes_in += r->bytes_in;
	if (r->status != 0)
		b->bytes_out += r->bytes_out;
}
