/*
 * Helpers shared by every module.  Allocation failures are fatal: a
 * worker that cannot allocate a few bytes cannot do anything useful, and
 * the supervisor will start a new one.
 */
#include <sys/random.h>
#include <sys/stat.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "log.h"
#include "util.h"

void *
xmalloc(size_t n)
{
	void *p;

	if ((p = malloc(n == 0 ? 1 : n)) == NULL)
		fatal("malloc");
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p;

	if ((p = calloc(n == 0 ? 1 : n, size == 0 ? 1 : size)) == NULL)
		fatal("calloc");
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	if ((p = realloc(p, n == 0 ? 1 : n)) == NULL)
		fatal("realloc");
	return p;
}

char *
xstrdup(const char *s)
{
	char *p;

	if ((p = strdup(s)) == NULL)
		fatal("strdup");
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;

	va_start(ap, fmt);
	if (vasprintf(&p, fmt, ap) == -1)
		fatal("vasprintf");
	va_end(ap);
	return p;
}

void
buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void
buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data != NULL)
		b->data[0] = '\0';
}

static void
buf_grow(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	if (b->cap == 0)
		b->cap = 256;
	while (b->cap < need)
		b->cap *= 2;
	b->data = xrealloc(b->data, b->cap);
}

void
buf_add(struct buf *b, const void *p, size_t n)
{
	buf_grow(b, n);
	if (n > 0)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void
buf_addstr(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_grow(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

const char *
buf_str(struct buf *b)
{
	if (b->data == NULL)
		buf_grow(b, 0);
	b->data[b->len] = '\0';
	return b->data;
}

double
now_mono(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds since 1970, to the nanosecond the clock gives. */
double
now_wall(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Formats the current UTC time as 2026-01-02T03:04:05.678+00:00. */
void
iso8601_now(char *out, size_t len)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ld+00:00",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

/* Randomness comes from the kernel. */
int
random_bytes(void *p, size_t n)
{
	size_t got = 0;
	ssize_t r;

	while (got < n) {
		r = getrandom((char *)p + got, n - got, 0);
		if (r == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)r;
	}
	return 0;
}

uint32_t
random_u32(void)
{
	uint32_t v = 0;

	if (random_bytes(&v, sizeof(v)) == -1)
		fatal("getrandom");
	return v;
}

/* Fills out with len-1 random hex digits and a NUL. */
/* The value of a hexadecimal digit, or -1. */
int
hex_digit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

void
random_hex(char *out, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char b[64];
	size_t i, n = (len - 1 + 1) / 2;

	if (n > sizeof(b))
		n = sizeof(b);
	if (random_bytes(b, n) == -1)
		fatal("getrandom");
	for (i = 0; i + 1 < len && i / 2 < n; i++)
		out[i] = hex[(i % 2 == 0) ? b[i / 2] >> 4 : b[i / 2] & 0xf];
	out[i] = '\0';
}

/* A uniformly distributed value in [0, max). */
double
jitter(double max)
{
	if (max <= 0)
		return 0;
	return max * ((double)random_u32() / 4294967296.0);
}

/* Whether p is a directory (or a link to one). */
int
is_dir(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/*
 * Makes p, which mkdir found without a parent, after its missing parents
 * (p is a copy it may cut): it climbs only as far as a directory is
 * missing, where a walk down from the root would ask for each one that
 * is there.
 */
static int
mkdir_parents(char *p, mode_t mode)
{
	char *s;
	int rc;

	s = p + strlen(p);
	while (s > p && s[-1] == '/')
		s--;
	while (s > p && s[-1] != '/')
		s--;
	/* No parent left to make: the root or the working directory. */
	if (s <= p + 1) {
		errno = ENOENT;
		return -1;
	}
	s[-1] = '\0';
	rc = mkdir(p, mode) == 0 || errno == EEXIST ? 0 :
	    errno == ENOENT ? mkdir_parents(p, mode) : -1;
	s[-1] = '/';
	if (rc == -1)
		return -1;
	return mkdir(p, mode) == 0 || errno == EEXIST ? 0 : -1;
}

int
mkdir_p(const char *path, mode_t mode)
{
	char *p;
	int rc, saved;

	/* Mostly only the last is missing: one call, not one a component. */
	if (mkdir(path, mode) == 0 || errno == EEXIST)
		return 0;
	if (errno != ENOENT)
		return -1;
	p = xstrdup(path);
	rc = mkdir_parents(p, mode);
	saved = errno;
	free(p);
	errno = saved;
	return rc;
}

/*
 * Removes a tree without following symbolic links: a link planted inside
 * a run or environment directory must never lead the removal elsewhere.
 * A missing path is success.
 */
static int
rm_rf_at(int at, const char *name)
{
	struct stat st;
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) == -1)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlinkat(at, name, 0) == -1 && errno != ENOENT ?
		    -1 : 0;
	fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
	    O_CLOEXEC);
	if (fd == -1)
		return -1;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (rm_rf_at(dirfd(d), de->d_name) == -1)
			rc = -1;
	}
	closedir(d);
	if (unlinkat(at, name, AT_REMOVEDIR) == -1 && errno != ENOENT)
		rc = -1;
	return rc;
}

int
rm_rf(const char *path)
{
	return rm_rf_at(AT_FDCWD, path);
}

/*
 * Copies a regular file.  The source is opened without following a final
 * symbolic link and without waiting (O_NONBLOCK has no effect on regular
 * files, and anything else is refused); the destination is created fresh.
 */
int
copy_file(const char *src, const char *dst)
{
	char b[65536];
	struct stat st;
	ssize_t n, w, off;
	int in, out, rc = -1;

	/* A FIFO put where the file was must not block the caller. */
	if ((in = open(src, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK)) ==
	    -1)
		return -1;
	if (fstat(in, &st) == -1 || !S_ISREG(st.st_mode)) {
		close(in);
		errno = EINVAL;
		return -1;
	}
	out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
	    0640);
	if (out == -1) {
		close(in);
		return -1;
	}
	for (;;) {
		n = read(in, b, sizeof(b));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n == 0 ? 0 : -1;
			break;
		}
		for (off = 0; off < n; off += w) {
			w = write(out, b + off, (size_t)(n - off));
			if (w == -1 && errno == EINTR) {
				w = 0;
				continue;
			}
			if (w == -1)
				goto done;
		}
	}
done:
	if (close(out) == -1)
		rc = -1;
	close(in);
	return rc;
}

/* Reads a whole file of at most max bytes. */
int
read_file(const char *path, struct buf *b, size_t max)
{
	char chunk[8192];
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	for (;;) {
		n = read(fd, chunk, sizeof(chunk));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (b->len + (size_t)n > max) {
			close(fd);
			errno = EFBIG;
			return -1;
		}
		buf_add(b, chunk, (size_t)n);
	}
	close(fd);
	return n == -1 ? -1 : 0;
}

/*
 * Appends s to out with every invalid UTF-8 sequence and every NUL byte
 * replaced by U+FFFD, so that text from an engine can always be stored in
 * a JSON string.  Returns the number of replacements.
 */
size_t
utf8_repair(const char *s, size_t len, struct buf *out)
{
	static const char repl[] = "\xef\xbf\xbd";
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, bad = 0, n, k;
	uint32_t cp;

	while (i < len) {
		unsigned char c = p[i];

		if (c >= 0x01 && c < 0x80) {
			buf_add(out, &p[i], 1);
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			cp = c & 0x07;
		} else
			n = 0;
		if (n != 0 && i + n <= len) {
			for (k = 1; k < n; k++) {
				if ((p[i + k] & 0xc0) != 0x80)
					break;
				cp = (cp << 6) | (p[i + k] & 0x3f);
			}
			if (k == n && !(n == 3 && cp < 0x800) &&
			    !(n == 4 && (cp < 0x10000 || cp > 0x10ffff)) &&
			    !(cp >= 0xd800 && cp <= 0xdfff)) {
				buf_add(out, &p[i], n);
				i += n;
				continue;
			}
		}
		buf_add(out, repl, 3);
		bad++;
		i++;
	}
	return bad;
}

/*
 * Writes the canonical lower-case form of a UUID given in any letter case
 * to out; -1 when the text is not a UUID.
 */
int
util_uuid_canon(const char *in, char *out)
{
	uuid_t u;

	if (in == NULL || strlen(in) != 36 || uuid_parse(in, u) != 0)
		return -1;
	uuid_unparse_lower(u, out);
	return 0;
}

/* A new random (version 4) UUID in its canonical lower-case form. */
void
util_uuid(char *out)
{
	uuid_t u;

	uuid_generate_random(u);
	uuid_unparse_lower(u, out);
}

/*
 * A workspace slug: lower-case letters and digits, other runs of
 * characters folded into one "-", none at either end.
 */
void
util_slug(const char *name, char *out, size_t len)
{
	size_t n = 0;
	int dash = 0;

	for (; *name != '\0' && n + 1 < len; name++) {
		unsigned char ch = (unsigned char)*name;

		if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) {
			out[n++] = (char)ch;
			dash = 0;
		} else if (ch >= 'A' && ch <= 'Z') {
			out[n++] = (char)(ch - 'A' + 'a');
			dash = 0;
		} else if (!dash && n > 0) {
			out[n++] = '-';
			dash = 1;
		}
	}
	while (n > 0 && out[n - 1] == '-')
		n--;
	out[n] = '\0';
	if (n == 0)
		snprintf(out, len, "workspace");
}

/*
 * Splits a setting such as "--no-index --no-build-isolation" into words at
 * blanks.  There is no quoting: settings that hold command lines are
 * documented as blank-separated words.
 */
char **
argv_split(const char *s)
{
	char **v, *copy, *tok, *save;
	size_t n = 0;

	v = xcalloc(strlen(s) / 2 + 2, sizeof(*v));
	copy = xstrdup(s);
	for (tok = strtok_r(copy, " \t", &save); tok != NULL;
	    tok = strtok_r(NULL, " \t", &save))
		v[n++] = xstrdup(tok);
	v[n] = NULL;
	free(copy);
	return v;
}

void
argv_free(char **v)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; v[i] != NULL; i++)
		free(v[i]);
	free(v);
}

size_t
argv_len(char *const *v)
{
	size_t n = 0;

	while (v != NULL && v[n] != NULL)
		n++;
	return n;
}
