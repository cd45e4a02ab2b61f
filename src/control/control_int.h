/* control: private declarations shared by control_proto.c, control_server.c and
 * control_client.c. */
#ifndef TESSERA_CONTROL_INT_H
#define TESSERA_CONTROL_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/un.h>

#include "tessera/common.h"
#include "tessera/control.h"

#define CONTROL_TOKENS_MAX 64
#define CONTROL_POLL_MS 200

/* Appends " -" for NULL, else " +" and s with '%', controls, space and DEL as %XX. */
void control_put_str(struct tstr *l, const char *s);
/* Appends the '\n'. Returns the line's length, or -ENOSPC when it did not fit. */
int control_line_end(struct tstr *l);

/* Splits line at single spaces (strings never contain one: they are escaped) into tok[]
 * (CONTROL_TOKENS_MAX entries). Returns the number of tokens, or -EPROTO (an empty token, too
 * many). */
int control_tokenize(char *line, char **tok);
/* A whole token as a number: 0 or -EPROTO. */
int control_tok_u64(const char *t, uint64_t *ret);
int control_tok_i64(const char *t, int64_t *ret);
/* "-": NULL; "+bytes": decoded in place (never longer than the token). 0 or -EPROTO. */
int control_tok_str(char *t, const char **ret);

/* Fills addr with META_DIR/control.sock; when that is too long for sun_path, opens the
 * directory (O_PATH, *ret_dirfd, to be closed by the caller; else -1) and uses
 * /proc/self/fd/N/. Returns 0 or -errno. */
int control_socket_addr(const char *meta_dir, struct sockaddr_un *addr, int *ret_dirfd);
/* Writes all of buf (no SIGPIPE). Returns 0 or -errno (-EPIPE when the peer is gone). */
int control_send_all(int fd, const char *buf, size_t len);

#endif
