/* cli: error reports shared by the command-line tools (see cli.h). */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>

static void report(const struct cli_style *st, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: %s", st->prog, st->prefix);
	vfprintf(stderr, fmt, ap);
}

int cli_usage_error(const struct cli_style *st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report(st, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s --help'%s.\n", st->prog, st->more);
	return st->usage_code;
}

int cli_fail(const struct cli_style *st, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report(st, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return st->fail_code;
}
