/*
 * blockd/config: defaults and credentials for the block server.
 *
 * Pure configuration handling before blockd_start(); no threads, no state beyond the
 * struct blockd_config the caller owns. The credentials file is read with a size limit.
 */
#include "tessera/blockd.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <stdlib.h>

#include "tessera/common.h"

#define BLOCKD_CREDENTIALS_MAX (64u << 10)

void blockd_config_defaults(struct blockd_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	strcpy(cfg->listen_addr, "127.0.0.1");
	cfg->listen_port = 0;
	cfg->max_object_size = BLOCKD_DEFAULT_MAX_OBJECT;
	cfg->max_connections = 512;
	cfg->connection_timeout_s = 60;
	cfg->body_timeout_s = 120;
}

static bool key_ok(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n >= sizeof(((struct blockd_key *)0)->access_key))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)k[i] <= ' ' || (unsigned char)k[i] >= 0x7f)
			return false;
	return true;
}

int blockd_config_add_key(struct blockd_config *cfg, const char *access_key,
			  const char *secret_key)
{
	struct blockd_key *k = NULL;

	if (!key_ok(access_key) || !key_ok(secret_key) || strchr(access_key, '/'))
		return -EINVAL;
	for (unsigned i = 0; i < cfg->n_keys; i++)
		if (strcmp(cfg->keys[i].access_key, access_key) == 0)
			k = &cfg->keys[i];
	if (!k) {
		if (cfg->n_keys >= BLOCKD_MAX_KEYS)
			return -ENOSPC;
		k = &cfg->keys[cfg->n_keys++];
	}
	strcpy(k->access_key, access_key);
	strcpy(k->secret_key, secret_key);
	return 0;
}

int blockd_load_credentials(struct blockd_config *cfg, const char *path, unsigned *ret_line)
{
	char *buf = NULL, *next;
	size_t len = 0;
	unsigned line = 0;
	int r, added = 0;

	r = tfile_read_all(path, BLOCKD_CREDENTIALS_MAX, &buf, &len);
	if (r < 0)
		return r;
	for (char *l = buf; l; l = next) {
		char *ak, *sk, *rest, *f;

		line++;
		next = strchr(l, '\n');
		if (next)
			*next++ = '\0';
		if ((f = strchr(l, '#')) != NULL)
			*f = '\0';
		ak = strtok_r(l, " \t\r", &rest);
		if (!ak)
			continue;
		sk = strtok_r(NULL, " \t\r", &rest);
		if (!sk || strtok_r(NULL, " \t\r", &rest)) {
			r = -EINVAL;
			goto out;
		}
		if ((r = blockd_config_add_key(cfg, ak, sk)) < 0)
			goto out;
		added++;
	}
	r = added;
out:
	if (r < 0 && ret_line)
		*ret_line = line;
	memset(buf, 0, len); /* secrets */
	free(buf);
	return r;
}
