/*
 * Paths under data_dir (the layout of the original worker):
 *
 *   workspaces/<ws>/config_packages/<cfg>/        configuration package
 *   workspaces/<ws>/documents/<stored_uri>        uploaded documents
 *   workspaces/<ws>/runs/<run>/{input,output,logs}/
 *   venvs/<ws>/<cfg>/deps-<digest>/<env>/.venv    environments
 *
 * Every id and name that comes from the database is hostile until shown
 * otherwise.  Joins are lexical: a relative part may not be absolute and
 * may not contain "..", so the result cannot leave the base; path_within
 * adds the check through symbolic links for files that already exist.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "paths.h"
#include "util.h"

/*
 * Joins base and a relative path.  Empty components and "." are dropped;
 * "..", an absolute rel, a backslash, a control character or an empty
 * result are refused.  Returns 0, or -1 with errno set.
 */
int
path_join(char *out, size_t len, const char *base, const char *rel)
{
	size_t n, used, parts = 0;
	const char *p, *s;

	/*
	 * Callers append short suffixes ("/.venv/bin/python") to what this
	 * returns; keeping room for them means those never get cut off.
	 */
	if (len > 512)
		len -= 128;
	if (rel == NULL || rel[0] == '/' || base[0] == '\0') {
		errno = EINVAL;
		return -1;
	}
	used = strlen(base);
	while (used > 0 && base[used - 1] == '/')
		used--;
	if (used + 1 >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(out, base, used);
	out[used] = '\0';
	for (p = rel; *p != '\0'; p = s) {
		while (*p == '/')
			p++;
		if (*p == '\0')
			break;
		n = strcspn(p, "/");
		s = p + n;
		if (n == 1 && p[0] == '.')
			continue;
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			errno = EINVAL;
			return -1;
		}
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f ||
			    p[i] == '\\') {
				errno = EINVAL;
				return -1;
			}
		if (used + 1 + n >= len) {
			errno = ENAMETOOLONG;
			return -1;
		}
		out[used++] = '/';
		memcpy(out + used, p, n);
		used += n;
		out[used] = '\0';
		parts++;
	}
	if (parts == 0) {
		errno = EINVAL;
		return -1;
	}
	return 0;
}

/*
 * One path segment from an id: a UUID in any letter case becomes its
 * canonical lower-case form; anything else must be a plain file name.
 */
int
path_segment(char *out, size_t len, const char *id)
{
	uuid_t u;

	if (len < 37) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (strlen(id) == 36 && uuid_parse(id, u) == 0) {
		uuid_unparse_lower(u, out);
		return 0;
	}
	if (!path_filename_ok(id) || strlen(id) >= len) {
		errno = EINVAL;
		return -1;
	}
	strcpy(out, id);
	return 0;
}

/* A single file name: no separator, not "." or "..", no control bytes. */
int
path_filename_ok(const char *s)
{
	const unsigned char *p;

	if (s == NULL || s[0] == '\0' || strcmp(s, ".") == 0 ||
	    strcmp(s, "..") == 0 || strlen(s) > 255)
		return 0;
	for (p = (const unsigned char *)s; *p != '\0'; p++)
		if (*p == '/' || *p == '\\' || *p < 0x20 || *p == 0x7f)
			return 0;
	return 1;
}

/*
 * "deps-<digest>": the digest without its "sha256:" style prefix, every
 * character other than a letter, a digit, "-" or "_" replaced by "_",
 * leading and trailing "_" trimmed; "deps-unknown" when nothing is left.
 */
void
path_deps_segment(char *out, size_t len, const char *digest)
{
	const char *colon = strchr(digest, ':');
	const char *s = colon != NULL ? colon + 1 : digest;
	size_t n = 0, start, end;
	char tmp[256];

	for (; *s != '\0' && n + 1 < sizeof(tmp); s++)
		tmp[n++] = isalnum((unsigned char)*s) || *s == '-' ||
		    *s == '_' ? *s : '_';
	tmp[n] = '\0';
	for (start = 0; tmp[start] == '_'; start++)
		;
	for (end = n; end > start && tmp[end - 1] == '_'; end--)
		;
	tmp[end] = '\0';
	if (end == start)
		snprintf(out, len, "deps-unknown");
	else
		snprintf(out, len, "deps-%s", tmp + start);
}

/*
 * The place of an existing path with every symbolic link resolved, as
 * realpath(3) gives it, but read from a descriptor of the path: one open
 * and one readlink, where realpath reads every component as a link.
 * realpath stays the way when /proc cannot tell.  0, or -1 with errno.
 */
int
path_real(const char *path, char real[PATH_MAX])
{
	char proc[40];
	ssize_t n;
	int fd, saved;

	if ((fd = open(path, O_PATH | O_CLOEXEC)) == -1)
		return -1;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, real, PATH_MAX - 1);
	saved = errno;
	close(fd);
	if (n > 0 && n < PATH_MAX - 1 && real[0] == '/') {
		real[n] = '\0';
		return 0;
	}
	errno = saved;
	return realpath(path, real) != NULL ? 0 : -1;
}

/*
 * Whether an existing path, once every symbolic link is resolved, still
 * lies inside base.
 */
int
path_within(const char *base, const char *path)
{
	char rb[PATH_MAX], rp[PATH_MAX];
	size_t n;

	if (path_real(base, rb) == -1 || path_real(path, rp) == -1)
		return 0;
	n = strlen(rb);
	if (n == 1)
		return 1;
	return strncmp(rb, rp, n) == 0 && (rp[n] == '/' || rp[n] == '\0');
}

static int
join_segments(char *out, size_t len, const char *base, const char *const *ids,
    const char *const *words, size_t n)
{
	char seg[256], rel[1024];
	size_t i, used = 0;
	int w;

	rel[0] = '\0';
	for (i = 0; i < n; i++) {
		if (words[i] != NULL)
			w = snprintf(rel + used, sizeof(rel) - used, "%s%s",
			    used ? "/" : "", words[i]);
		else {
			if (path_segment(seg, sizeof(seg), ids[i]) == -1)
				return -1;
			w = snprintf(rel + used, sizeof(rel) - used, "%s%s",
			    used ? "/" : "", seg);
		}
		if (w < 0 || (size_t)w >= sizeof(rel) - used) {
			errno = ENAMETOOLONG;
			return -1;
		}
		used += (size_t)w;
	}
	return path_join(out, len, base, rel);
}

int
path_config_dir(char *out, size_t len, const char *data, const char *ws,
    const char *cfg)
{
	const char *ids[] = { NULL, ws, NULL, cfg };
	const char *words[] = { "workspaces", NULL, "config_packages", NULL };

	return join_segments(out, len, data, ids, words, 4);
}

/*
 * The stored file of a document.  stored_uri is relative to the
 * workspace's documents directory and may carry a "file:" prefix; an
 * absolute path, a "file://host/" form and any ".." are refused.
 */
int
path_document(char *out, size_t len, const char *data, const char *ws,
    const char *stored_uri)
{
	const char *ids[] = { NULL, ws, NULL };
	const char *words[] = { "workspaces", NULL, "documents" };
	char base[PATH_MAX];
	const char *rel = stored_uri;

	if (strncmp(rel, "file:", 5) == 0) {
		rel += 5;
		if (strncmp(rel, "//", 2) == 0) {
			errno = EINVAL;
			return -1;
		}
	}
	if (join_segments(base, sizeof(base), data, ids, words, 3) == -1)
		return -1;
	return path_join(out, len, base, rel);
}

int
path_run_dir(char *out, size_t len, const char *data, const char *ws,
    const char *run)
{
	const char *ids[] = { NULL, ws, NULL, run };
	const char *words[] = { "workspaces", NULL, "runs", NULL };

	return join_segments(out, len, data, ids, words, 4);
}

int
path_env_parent(char *out, size_t len, const char *venvs, const char *ws,
    const char *cfg, const char *digest)
{
	const char *ids[] = { ws, cfg, NULL };
	const char *words[] = { NULL, NULL, NULL };
	char deps[160];

	path_deps_segment(deps, sizeof(deps), digest);
	words[2] = deps;
	return join_segments(out, len, venvs, ids, words, 3);
}

int
path_env_root(char *out, size_t len, const char *venvs, const char *ws,
    const char *cfg, const char *digest, const char *env)
{
	char parent[PATH_MAX];
	const char *ids[] = { env };
	const char *words[] = { NULL };

	if (path_env_parent(parent, sizeof(parent), venvs, ws, cfg,
	    digest) == -1)
		return -1;
	return join_segments(out, len, parent, ids, words, 1);
}

/*
 * Generations.  Each build of an environment makes a new directory in the
 * environment's root, <root>/<generation>/.venv, and the row records that
 * interpreter: a rebuild never replaces a venv that engines run from, and
 * every host can tell from the row whether its own copy is the current
 * one.  Builds from before generations have their venv in <root>/.venv
 * (generation "").
 */
int
path_is_gen(const char *s)
{
	size_t i;

	if (strncmp(s, "g-", 2) != 0 || strlen(s) != 2 + GEN_HEX)
		return 0;
	for (i = 2; s[i] != '\0'; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

void
path_new_gen(char *out, size_t len)
{
	char hex[GEN_HEX + 1];

	random_hex(hex, sizeof(hex));
	snprintf(out, len, "g-%s", hex);
}

/* The generation of a recorded interpreter (.../<gen>/.venv/bin/python). */
void
path_gen_of(const char *python, char *gen, size_t len)
{
	static const char tail[] = "/.venv/bin/python";
	size_t n = strlen(python), t = sizeof(tail) - 1;
	const char *end, *start;
	char cand[GEN_SIZE];

	gen[0] = '\0';
	if (n <= t || strcmp(python + n - t, tail) != 0)
		return;
	end = python + n - t;
	for (start = end; start > python && start[-1] != '/'; start--)
		;
	if ((size_t)(end - start) >= sizeof(cand))
		return;
	memcpy(cand, start, (size_t)(end - start));
	cand[end - start] = '\0';
	if (path_is_gen(cand))
		snprintf(gen, len, "%s", cand);
}
