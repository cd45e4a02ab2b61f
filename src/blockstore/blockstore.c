/*
 * blockstore: the dispatch through the table, the requests built on batches (access check,
 * status), and the adapter over the libcurl client.
 */
#include "tessera/blockstore.h"

#include <errno.h>
#include <stdlib.h>

#include "tessera/common.h"

int blockstore_run(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force)
{
	return bs->ops->run(bs, ops, n, force);
}

int blockstore_run_quorum(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force,
			  unsigned need, unsigned grace_ms)
{
	return bs->ops->run_quorum(bs, ops, n, force, need, grace_ms);
}

int blockstore_list(struct blockstore *bs, uint16_t server, const char *prefix, const char *token,
		    struct blockclient_object *objs, size_t max, size_t *ret_n, char *next_token,
		    size_t token_size)
{
	return bs->ops->list(bs, server, prefix, token, objs, max, ret_n, next_token, token_size);
}

bool blockstore_server_up(struct blockstore *bs, uint16_t id)
{
	return bs->ops->server_up(bs, id);
}

int blockstore_health(struct blockstore *bs, uint16_t id, struct blockclient_health_info *ret)
{
	return bs->ops->health(bs, id, ret);
}

bool blockstore_worth_trying(struct blockstore *bs, uint16_t id)
{
	struct blockclient_health_info h;

	if (blockstore_health(bs, id, &h) < 0)
		return false;
	return h.state != BLOCKCLIENT_DOWN || h.last_err == -ECONNREFUSED;
}

void blockstore_mark(struct blockstore *bs, uint16_t id, bool up)
{
	bs->ops->mark(bs, id, up);
}

void blockstore_free(struct blockstore *bs)
{
	if (bs)
		bs->ops->free(bs);
}

int blockstore_check_access(struct blockstore *bs, const uint16_t *ids, size_t n, const char *key,
			    int *refusal)
{
	struct blockclient_op *ops = calloc(n ? n : 1, sizeof(*ops));
	int count = 0;

	if (!ops)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		ops[i] = (struct blockclient_op){ .method = BC_HEAD, .server = ids[i], .key = key };
	blockstore_run(bs, ops, n, true);
	for (size_t i = 0; i < n; i++) {
		int r = ops[i].result;
		refusal[i] = r == -EACCES || r == -ETIME ? r : 0;
		count += refusal[i] != 0;
	}
	free(ops);
	return count;
}

const char *blockstore_refusal_str(int refusal)
{
	if (refusal == -ETIME)
		return "refuses the requests' time: its clock and this machine's differ by more "
		       "than 15 minutes";
	return "refuses the filesystem's access key";
}

#define STATUS_DOC_MAX 16384

int blockstore_status(struct blockstore *bs, const uint16_t *ids, size_t n, bool force,
		      struct blockstore_status *ret)
{
	struct blockclient_op *ops = calloc(n ? n : 1, sizeof(*ops));
	char *bufs = calloc(n ? n : 1, STATUS_DOC_MAX + 1);
	int answered = 0;

	if (!ops || !bufs) {
		free(ops);
		free(bufs);
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		ops[i] = (struct blockclient_op){ .method = BC_GET, .server = ids[i],
						  .key = "-/status", .raw_path = true,
						  .buf = bufs + i * (STATUS_DOC_MAX + 1),
						  .buf_size = STATUS_DOC_MAX };
	blockstore_run(bs, ops, n, force);
	for (size_t i = 0; i < n; i++) {
		ret[i] = (struct blockstore_status){ .result = ops[i].result };
		if (ops[i].result != 0)
			continue;
		char *doc = bufs + i * (STATUS_DOC_MAX + 1);
		doc[ops[i].result_len] = '\0';
		/* Per-directory figures add up to the server's. */
		ret[i].capacity = tjson_sum(doc, "capacity");
		ret[i].free = tjson_sum(doc, "free");
		answered++;
	}
	free(bufs);
	free(ops);
	return answered;
}

/* ---------------------------------------------------------------- the libcurl client */

struct client_store {
	struct blockstore bs;
	struct blockclient *bc;
};

static struct blockclient *client_of(struct blockstore *bs)
{
	return ((struct client_store *)bs)->bc;
}

static int client_run(struct blockstore *bs, struct blockclient_op *ops, size_t n, bool force)
{
	return blockclient_run(client_of(bs), ops, n, force);
}

static int client_run_quorum(struct blockstore *bs, struct blockclient_op *ops, size_t n,
			     bool force, unsigned need, unsigned grace_ms)
{
	return blockclient_run_quorum(client_of(bs), ops, n, force, need, grace_ms);
}

static int client_list(struct blockstore *bs, uint16_t server, const char *prefix,
		       const char *token, struct blockclient_object *objs, size_t max,
		       size_t *ret_n, char *next_token, size_t token_size)
{
	return blockclient_list(client_of(bs), server, prefix, token, objs, max, ret_n,
				next_token, token_size);
}

static bool client_server_up(struct blockstore *bs, uint16_t id)
{
	return blockclient_server_up(client_of(bs), id);
}

static int client_health(struct blockstore *bs, uint16_t id, struct blockclient_health_info *ret)
{
	return blockclient_health(client_of(bs), id, ret);
}

static void client_mark(struct blockstore *bs, uint16_t id, bool up)
{
	blockclient_mark(client_of(bs), id, up);
}

static void client_free(struct blockstore *bs)
{
	blockclient_free(client_of(bs));
	free(bs);
}

static const struct blockstore_ops client_ops = {
	.run = client_run,
	.run_quorum = client_run_quorum,
	.list = client_list,
	.server_up = client_server_up,
	.health = client_health,
	.mark = client_mark,
	.free = client_free,
};

int blockstore_client_new(const struct blockclient_config *cfg, const uint16_t *ids,
			  const char *const *urls, size_t n, struct blockstore **ret)
{
	struct client_store *cs = calloc(1, sizeof(*cs));
	int r;

	if (!cs)
		return -ENOMEM;
	r = blockclient_new(cfg, ids, urls, n, &cs->bc);
	if (r < 0) {
		free(cs);
		return r;
	}
	cs->bs.ops = &client_ops;
	*ret = &cs->bs;
	return 0;
}
