/*
 * Unit tests for the S3 string helpers of proto: object key and bucket validation (the
 * guard that keeps blockd inside its data directories: no key may name ".", "..", an
 * absolute path, an empty component or carry NUL/control bytes), XML escaping and S3 error
 * documents, and URI percent-decoding.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tessera/proto.h"

#include "unit.h"

static int kv(const char *s)
{
	return proto_key_validate(s, strlen(s));
}

START_TEST(test_key_accepted)
{
	static const char *const good[] = {
		"a",
		"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0000000000000002/0000000000000000.0000000000000001.3",
		"a/b/c",
		"A-Z_a.z-09",
		"...",       /* only "." and ".." are special */
		"a/.../b",
		".hidden",
		"a/.b/..c",
		"x..",
	};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(kv(good[i]) == 0, "rejected '%s'", good[i]);

	char k[PROTO_KEY_MAX + 2];
	memset(k, 'k', sizeof(k));
	ck_assert_int_eq(proto_key_validate(k, PROTO_KEY_MAX), 0);
	ck_assert_int_eq(proto_key_validate(k, PROTO_KEY_MAX + 1), -EINVAL);
	/* The length given is what counts: a longer buffer is fine. */
	ck_assert_int_eq(proto_key_validate("abc/def", 3), 0);
}
END_TEST

START_TEST(test_key_rejected)
{
	static const char *const bad[] = {
		"",
		".",
		"..",
		"../x",
		"a/..",
		"a/../b",
		"a/./b",
		"./a",
		"a/.",
		"//",
		"a//b",
		"/a",
		"a/",
		"/",
		"a b",
		" a",
		"a\tb",
		"a\nb",
		"a\rb",
		"a\x01",
		"a\x7f",
		"a\\b",
		"..\\x",
		"a%2fb",
		"a?b",
		"a#b",
		"a:b",
		"a*b",
		"\xc3\xa9",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(kv(bad[i]) == -EINVAL, "accepted '%s'", bad[i]);

	/* An embedded NUL inside the given length. */
	ck_assert_int_eq(proto_key_validate("ab\0cd", 5), -EINVAL);
	ck_assert_int_eq(proto_key_validate("ab", 0), -EINVAL);
	ck_assert_int_eq(proto_key_validate(NULL, 3), -EINVAL);

	char k[513];
	memset(k, 'a', sizeof(k));
	ck_assert_int_eq(proto_key_validate(k, 513), -EINVAL);
}
END_TEST

START_TEST(test_bucket)
{
	static const char *const good[] = { "abc", "tessera", "my-bucket.01", "0ab",
					    "a23456789012345678901234567890123456789012345678901234567890123" };
	static const char *const bad[] = {
		"", "ab", "ABC", "-abc", "abc-", ".abc", "abc.", "a..b", "a_b", "a b", "a/b",
		"-", "a23456789012345678901234567890123456789012345678901234567890123x", "ab\x01",
	};

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		ck_assert_msg(proto_bucket_validate(good[i]) == 0, "rejected '%s'", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(proto_bucket_validate(bad[i]) == -EINVAL, "accepted '%s'", bad[i]);
	ck_assert_int_eq(proto_bucket_validate(NULL), -EINVAL);
}
END_TEST

START_TEST(test_xml_escape)
{
	char out[64];

	ck_assert_int_eq(proto_xml_escape(out, sizeof(out), "plain"), 5);
	ck_assert_str_eq(out, "plain");
	ck_assert_int_eq(proto_xml_escape(out, sizeof(out), "a<b>&\"c'"), 28);
	ck_assert_str_eq(out, "a&lt;b&gt;&amp;&quot;c&apos;");
	ck_assert_int_eq(proto_xml_escape(out, sizeof(out), "x\x01y\tz"), 5);
	ck_assert_str_eq(out, "x?y\tz");
	ck_assert_int_eq(proto_xml_escape(out, sizeof(out), ""), 0);
	ck_assert_str_eq(out, "");
	/* Exactly fitting and one byte short. */
	ck_assert_int_eq(proto_xml_escape(out, 6, "&"), 5);
	ck_assert_int_eq(proto_xml_escape(out, 5, "&"), -ENOBUFS);
	ck_assert_int_eq(proto_xml_escape(out, 3, "abc"), -ENOBUFS);
	ck_assert_int_eq(proto_xml_escape(out, 0, ""), -ENOBUFS);
}
END_TEST

START_TEST(test_error_xml)
{
	char out[512];
	int n;

	n = proto_s3_error_xml(out, sizeof(out), "NoSuchKey", "The key <x> does not exist",
			       "/b/a&b", "0123abcd");
	ck_assert_int_eq(n, (int)strlen(out));
	ck_assert_str_eq(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error>"
			      "<Code>NoSuchKey</Code>"
			      "<Message>The key &lt;x&gt; does not exist</Message>"
			      "<Resource>/b/a&amp;b</Resource>"
			      "<RequestId>0123abcd</RequestId></Error>\n");
	n = proto_s3_error_xml(out, sizeof(out), "InternalError", "boom", NULL, NULL);
	ck_assert_int_gt(n, 0);
	ck_assert_ptr_null(strstr(out, "Resource"));
	ck_assert_ptr_nonnull(strstr(out, "<Code>InternalError</Code><Message>boom</Message>"));
	/* Every size too small fails cleanly, the exact size works. */
	n = proto_s3_error_xml(out, sizeof(out), "AccessDenied", "no", "/r", "id");
	ck_assert_int_gt(n, 0);
	for (int sz = 0; sz <= n; sz++)
		ck_assert_int_eq(proto_s3_error_xml(out, (size_t)sz, "AccessDenied", "no", "/r",
						    "id"), -ENOBUFS);
	ck_assert_int_eq(proto_s3_error_xml(out, (size_t)n + 1, "AccessDenied", "no", "/r", "id"),
			 n);
}
END_TEST

START_TEST(test_uri_decode)
{
	char out[64];

	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "/b/a%20b", 8), 6);
	ck_assert_str_eq(out, "/b/a b");
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "%2e%2E%2f", 9), 3);
	ck_assert_str_eq(out, "../");
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "a+b", 3), 3);
	ck_assert_str_eq(out, "a+b"); /* '+' is not a space in paths */
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "", 0), 0);
	ck_assert_str_eq(out, "");
	/* The length bounds the input. */
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "abc%41", 3), 3);
	ck_assert_str_eq(out, "abc");

	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "%", 1), -EINVAL);
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "%4", 2), -EINVAL);
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "%41%4", 5), -EINVAL);
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "%4g", 3), -EINVAL);
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "%zz", 3), -EINVAL);
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "a%00b", 5), -EINVAL);
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "%41", 2), -EINVAL);
	ck_assert_int_eq(proto_uri_decode(out, sizeof(out), "a\0b", 3), -EINVAL);

	ck_assert_int_eq(proto_uri_decode(out, 4, "abcd", 4), -ENOBUFS);
	ck_assert_int_eq(proto_uri_decode(out, 5, "abcd", 4), 4);
	ck_assert_int_eq(proto_uri_decode(out, 2, "%41%42", 6), -ENOBUFS);
	ck_assert_int_eq(proto_uri_decode(out, 0, "", 0), -ENOBUFS);

	/* A decoded traversal attempt never validates as a key. */
	int n = proto_uri_decode(out, sizeof(out), "a/%2E%2E/x", 10);
	ck_assert_int_eq(n, 6);
	ck_assert_int_eq(proto_key_validate(out, (size_t)n), -EINVAL);
}
END_TEST

Suite *unit_suite(void)
{
	Suite *s = suite_create("keys");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_key_accepted);
	tcase_add_test(tc, test_key_rejected);
	tcase_add_test(tc, test_bucket);
	tcase_add_test(tc, test_xml_escape);
	tcase_add_test(tc, test_error_xml);
	tcase_add_test(tc, test_uri_decode);
	suite_add_tcase(s, tc);
	return s;
}
