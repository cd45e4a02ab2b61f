/*
 * restore: `tessera meta restore` (restore.c), the metadata rebuilt from the servers' journal.
 */
#ifndef TESSERA_TOOLS_RESTORE_H
#define TESSERA_TOOLS_RESTORE_H

struct cli_style;

/* argv[0] is "restore"; its options and NEW_META_DIR follow. Returns the exit status. */
int restore_main(const struct cli_style *st, int argc, char **argv);

#endif
