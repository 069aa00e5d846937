/*
 * Shared preamble of the cmocka unit tests: the headers cmocka needs
 * before its own, and small helpers for temporary directories, files
 * and the fixtures under TEST_DATA.
 */
#ifndef ADE_UNIT_H
#define ADE_UNIT_H

#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"

#ifndef TEST_DATA
#error "TEST_DATA must name the tests/data directory"
#endif

/*
 * Creates a fresh private directory under $TMPDIR (or /tmp) and writes
 * its path into out; fails the running test when that is impossible.
 */
static inline void
unit_tmpdir(char *out, size_t len)
{
	const char *t = getenv("TMPDIR");
	int n;

	if (t == NULL || t[0] != '/')
		t = "/tmp";
	n = snprintf(out, len, "%s/ade-unit-XXXXXX", t);
	assert_true(n > 0 && (size_t)n < len);
	assert_non_null(mkdtemp(out));
}

/*
 * Writes len bytes to path (created or truncated) and then sets exactly
 * the given mode, whatever the umask is.
 */
static inline void
unit_write(const char *path, const void *data, size_t len, mode_t mode)
{
	const char *p = data;
	ssize_t w;
	size_t off = 0;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1)
		fail_msg("cannot create %s: %s", path, strerror(errno));
	while (off < len) {
		w = write(fd, p + off, len - off);
		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			fail_msg("cannot write %s: %s", path, strerror(errno));
		off += (size_t)w;
	}
	assert_int_equal(close(fd), 0);
	assert_int_equal(chmod(path, mode), 0);
}

/* Writes a NUL-terminated string to dir/name with the given mode. */
static inline void
unit_write_in(const char *dir, const char *name, const char *text,
    mode_t mode)
{
	char path[PATH_MAX];

	assert_true((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) <
	    sizeof(path));
	unit_write(path, text, strlen(text), mode);
}

/* Reads TEST_DATA/name into b (which the caller initialised). */
static inline void
unit_read_fixture(const char *name, struct buf *b)
{
	char path[PATH_MAX];

	assert_true((size_t)snprintf(path, sizeof(path), "%s/%s", TEST_DATA,
	    name) < sizeof(path));
	if (read_file(path, b, 16 << 20) == -1)
		fail_msg("cannot read fixture %s: %s", path, strerror(errno));
}

/* Counts the lines (newline-terminated) of a NUL-terminated string. */
static inline size_t
unit_count_lines(const char *s)
{
	size_t n = 0;

	for (; *s != '\0'; s++)
		if (*s == '\n')
			n++;
	return n;
}

#endif
