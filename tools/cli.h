/*
 * cli: the error reports that the command-line tools (tessera-mkfs, tessera-scrub, tessera)
 * share. Each tool describes its own wording once in a struct cli_style (program name, a
 * prefix such as "error: ", what follows "Try 'PROG --help'", its exit codes) and calls
 * these through its usage_error()/fail() macros. Messages go to stderr; no state.
 */
#ifndef TESSERA_TOOLS_CLI_H
#define TESSERA_TOOLS_CLI_H

struct cli_style {
	const char *prog;   /* "tessera-mkfs" */
	const char *prefix; /* after "PROG: ", e.g. "error: " or "" */
	const char *more;   /* after "Try 'PROG --help'", e.g. " for more information" or "" */
	int usage_code;     /* returned by cli_usage_error() */
	int fail_code;      /* returned by cli_fail() */
};

/* "PROG: PREFIX<message>" and "Try 'PROG --help'MORE." on stderr; returns st->usage_code. */
int cli_usage_error(const struct cli_style *st, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* "PROG: PREFIX<message>" on stderr; returns st->fail_code. */
int cli_fail(const struct cli_style *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
