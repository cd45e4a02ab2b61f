/*
 * meta/credentials: where the block servers' access key comes from. The superblock names it
 * (sb->credentials): a file next to the metadata ("file:NAME", or an absolute path) holding
 * "ACCESS_KEY SECRET_KEY", or the environment ("env"). tesserafs and tessera-scrub both read
 * it here, so that they agree on the format.
 *
 * No state, no locks; the file's bytes are wiped from memory before they are freed.
 */
#include "tessera/meta.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/common.h"

#define CREDENTIALS_FILE_MAX 4096

int meta_load_credentials(const char *meta_dir, const struct meta_superblock *sb,
			  char *access_key, size_t access_key_size, char *secret_key,
			  size_t secret_key_size)
{
	const char *ak = NULL, *sk = NULL;
	char path[PATH_MAX], *buf = NULL;
	size_t buf_len = 0;
	int r = 0;

	if (strncmp(sb->credentials, "file:", 5) == 0) {
		const char *f = sb->credentials + 5;
		int n = f[0] == '/' ? snprintf(path, sizeof(path), "%s", f)
				    : snprintf(path, sizeof(path), "%s/%s", meta_dir, f);
		if (n < 0 || (size_t)n >= sizeof(path))
			return -ENAMETOOLONG;
		r = tfile_read_all(path, CREDENTIALS_FILE_MAX, &buf, &buf_len);
		if (r < 0)
			return r;
		char *save = NULL;
		ak = strtok_r(buf, " \t\r\n", &save);
		sk = ak ? strtok_r(NULL, " \t\r\n", &save) : NULL;
	} else if (strcmp(sb->credentials, "env") == 0) {
		ak = getenv("TESSERA_ACCESS_KEY");
		sk = getenv("TESSERA_SECRET_KEY");
	}
	if (!ak || !sk || !*ak || !*sk || strlen(ak) >= access_key_size ||
	    strlen(sk) >= secret_key_size) {
		r = -EINVAL;
		goto out;
	}
	memcpy(access_key, ak, strlen(ak) + 1);
	memcpy(secret_key, sk, strlen(sk) + 1);
out:
	if (buf) {
		memset(buf, 0, buf_len); /* strtok_r cut it: strlen would stop early */
		free(buf);
	}
	return r;
}
