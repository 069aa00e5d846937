/*
 * ade-ctl: the operator's command.  It reads the same configuration as
 * ade-superd and talks to the database directly.
 *
 * Exit status: 0 success, 1 failure, 2 usage error, 3 not found.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "arch.h"
#include "conf.h"
#include "digest.h"
#include "gc.h"
#include "log.h"
#include "paths.h"
#include "priv.h"
#include "store.h"
#include "util.h"

#ifndef ADE_SYSCONFDIR
#define ADE_SYSCONFDIR "/etc"
#endif

#define CTL_OK		0
#define CTL_FAIL	1
#define CTL_USAGE	2
#define CTL_NOTFOUND	3

static int	 json_out;
static const char *conf_path;
static char	 acting_as[64];	/* the service user ade-ctl became */

static void	usage_to(FILE *);

/* A JSON answer on stdout, indented, with a final newline. */
static void
print_json(json_t *v)
{
	json_dumpf(v, stdout, JSON_INDENT(2));
	putchar('\n');
}

static void __attribute__((noreturn))
usage(void)
{
	usage_to(stderr);
	exit(CTL_USAGE);
}

/*
 * Reads the configuration; errors in it end the command, unless lenient:
 * a command for a running daemon still reaches it (the daemon keeps
 * the configuration it runs on), warning of them.
 */
static struct conf *
load_conf_as(int lenient)
{
	struct conf *c = conf_new();
	struct buf errs;
	const char *path = conf_path;

	if (path == NULL && (path = getenv("ADE_CONFIG")) == NULL &&
	    access(ADE_SYSCONFDIR "/ade/worker.conf", F_OK) == 0)
		path = ADE_SYSCONFDIR "/ade/worker.conf";
	buf_init(&errs);
	if (conf_load(c, path, &errs) == -1) {
		fputs(buf_str(&errs), stderr);
		if (!lenient)
			exit(CTL_FAIL);
		fprintf(stderr, "ade-ctl: warning: the configuration has "
		    "errors; asking the running daemon anyway\n");
	}
	buf_free(&errs);
	/* Files ade-ctl writes must belong to the service user. */
	if (geteuid() == 0 && c->user[0] != '\0' &&
	    strcmp(c->user, "root") != 0)
		snprintf(acting_as, sizeof(acting_as), "%s", c->user);
	if (priv_drop(c, 0) == -1)
		exit(CTL_FAIL);
	return c;
}

static struct conf *
load_conf(void)
{
	return load_conf_as(0);
}

/* How an ade-ctl command opens the database. */
enum open_mode {
	OPEN_CREATE,		/* db init: whatever is missing is made */
	OPEN_EXISTING,		/* db check: nothing is made */
	OPEN_READY		/* the rest: nothing is made, the tables are there */
};

/* The database the configuration names, for messages. */
static void
db_where(const struct conf *c, char *out, size_t len)
{
	if (strcmp(c->db_backend, "sqlite") == 0)
		snprintf(out, len, "%s", c->sqlite_file);
	else if (c->db_url_override[0] != '\0' || c->db_dsn[0] != '\0')
		snprintf(out, len, "the %s database of the configured URL",
		    c->db_backend);
	else
		snprintf(out, len, "%s database %s on %s", c->db_backend,
		    c->db_name, c->db_host[0] != '\0' ? c->db_host :
		    "localhost");
}

static struct store *
open_store(const struct conf *c, enum open_mode mode)
{
	struct store *st;
	struct buf err, missing, optional;
	char where[PATH_MAX + 64];
	int rc;

	buf_init(&err);
	st = mode == OPEN_CREATE ? store_open(c, &err) :
	    store_open_existing(c, &err);
	if (st == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", buf_str(&err));
		exit(CTL_FAIL);
	}
	buf_free(&err);
	if (mode != OPEN_READY)
		return st;
	/* "no such table" would not say which database, nor what to do. */
	buf_init(&missing);
	buf_init(&optional);
	rc = store_check_schema(st, &missing, &optional);
	if (rc > 0) {
		db_where(c, where, sizeof(where));
		fprintf(stderr, "ade-ctl: %s lacks %s; \"ade-ctl db init\" "
		    "creates missing tables\n", where, buf_str(&missing));
		exit(CTL_FAIL);
	}
	buf_free(&missing);
	buf_free(&optional);
	return st;
}

/* The tables and columns the daemon needs; no database is opened. */
static int
db_schema(int argc, char **argv)
{
	json_t *schema = store_schema(), *t, *v;
	const char *table;
	size_t i;

	if (argc == 3 && strcmp(argv[2], "--json") == 0) {
		print_json(schema);
		return CTL_OK;
	}
	if (argc != 2)
		usage();
	json_object_foreach(schema, table, t) {
		printf("%s:", table);
		json_array_foreach(json_object_get(t, "required"), i, v)
			printf("%s %s", i > 0 ? "," : "", json_string_value(v));
		json_array_foreach(json_object_get(t, "optional"), i, v)
			printf("%s %s (optional)", ",", json_string_value(v));
		printf("\n");
	}
	json_decref(schema);
	return CTL_OK;
}

static int
cmd_db(int argc, char **argv)
{
	struct conf *c;
	struct store *st;
	struct buf missing, optional;
	int rc;

	if (argc >= 2 && strcmp(argv[1], "schema") == 0)
		return db_schema(argc, argv);
	if (argc != 2)
		usage();
	c = load_conf();
	st = open_store(c, strcmp(argv[1], "init") == 0 ? OPEN_CREATE :
	    OPEN_EXISTING);
	if (strcmp(argv[1], "init") == 0) {
		if (store_init_schema(st) == -1) {
			fprintf(stderr, "ade-ctl: %s\n", store_error(st));
			return CTL_FAIL;
		}
		printf("schema ready (%s)\n", store_backend(st));
		rc = CTL_OK;
	} else if (strcmp(argv[1], "check") == 0) {
		buf_init(&missing);
		buf_init(&optional);
		rc = store_check_schema(st, &missing, &optional);
		if (rc < 0)
			fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		else if (rc > 0)
			printf("missing: %s\n", buf_str(&missing));
		if (rc >= 0 && optional.len > 0)
			printf("missing (optional; results are stored without "
			    "it): %s\n", buf_str(&optional));
		if (rc > 0)
			printf("\"ade-ctl db init\" creates missing tables; "
			    "missing columns come with the ADE migrations\n");
		else if (rc == 0)
			printf("schema OK\n");
		rc = rc == 0 ? CTL_OK : CTL_FAIL;
		buf_free(&missing);
		buf_free(&optional);
	} else
		usage();
	store_close(st);
	conf_free(c);
	return rc;
}

/*
 * Prints the key table, one key a line: section, name, default, whether
 * HUP reloads it, environment variable.  Tab-separated for scripts.
 */
static int
print_keys(void)
{
	static const char *const types[] = {
		"string", "choice", "integer", "seconds", "boolean", "size",
		"workers"
	};
	const struct conf_key *k;
	size_t i, n;

	k = conf_keys(&n);
	for (i = 0; i < n; i++)
		printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\n", k[i].section,
		    k[i].name, types[k[i].type], k[i].def,
		    k[i].flags & CONF_RELOAD ? "reload" : "restart",
		    k[i].env ? k[i].env : "-", k[i].doc);
	return CTL_OK;
}

static int
cmd_config(int argc, char **argv)
{
	struct conf *c;
	struct buf errs;
	int rc;

	if (argc == 2 && strcmp(argv[1], "keys") == 0)
		return print_keys();
	if (argc != 3 || strcmp(argv[1], "check") != 0)
		usage();
	c = conf_new();
	buf_init(&errs);
	rc = conf_load(c, argv[2], &errs);
	fputs(buf_str(&errs), stderr);
	if (rc == 0)
		printf("%s: configuration OK\n", argv[2]);
	buf_free(&errs);
	conf_free(c);
	return rc == 0 ? CTL_OK : CTL_FAIL;
}

/*
 * Whether a package's entry is left out of its copy: version control,
 * build leftovers (also what an editable install writes into the copy).
 */
static int
package_skips(const char *name)
{
	static const char *const skip[] = {
		".", "..", ".git", "__pycache__", ".venv", "venv", "build",
		"dist", "node_modules", ".DS_Store",
	};
	size_t i, n = strlen(name);

	for (i = 0; i < NELEM(skip); i++)
		if (strcmp(name, skip[i]) == 0)
			return 1;
	return (n > 9 && strcmp(name + n - 9, ".egg-info") == 0) ||
	    (n > 4 && strcmp(name + n - 4, ".pyc") == 0);
}

/*
 * Copies a configuration package.  Symbolic links, build leftovers and
 * version control directories are left out.
 */
static int
copy_tree(const char *src, const char *dst)
{
	char s[PATH_MAX], d[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *dir;
	int rc = 0;

	if (mkdir(dst, 0750) == -1 && errno != EEXIST)
		return -1;
	if ((dir = opendir(src)) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL && rc == 0) {
		if (package_skips(de->d_name))
			continue;
		snprintf(s, sizeof(s), "%s/%s", src, de->d_name);
		snprintf(d, sizeof(d), "%s/%s", dst, de->d_name);
		if (lstat(s, &st) == -1)
			rc = -1;
		else if (S_ISDIR(st.st_mode))
			rc = copy_tree(s, d);
		else if (S_ISREG(st.st_mode))
			rc = copy_file(s, d);
	}
	closedir(dir);
	return rc;
}

/* Reads up to len bytes, fewer only at the end of the file. */
static ssize_t
read_full(int fd, char *b, size_t len)
{
	size_t got = 0;
	ssize_t n;

	while (got < len) {
		n = read(fd, b + got, len - got);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* Whether two regular files hold the same bytes. */
static int
same_file(const char *a, const char *b)
{
	char ba[65536], bb[65536];
	ssize_t na, nb;
	int fa, fb, same = 0;

	if ((fa = open(a, O_RDONLY | O_CLOEXEC)) == -1)
		return 0;
	if ((fb = open(b, O_RDONLY | O_CLOEXEC)) == -1) {
		close(fa);
		return 0;
	}
	for (;;) {
		na = read_full(fa, ba, sizeof(ba));
		nb = read_full(fb, bb, sizeof(bb));
		if (na < 0 || na != nb || memcmp(ba, bb, (size_t)na) != 0)
			break;
		if (na == 0) {
			same = 1;
			break;
		}
	}
	close(fa);
	close(fb);
	return same;
}

/*
 * Whether the copy at dst is what copy_tree(src, dst) would make: the
 * same directories and files with the same bytes, whatever else the
 * entries that a copy leaves out hold.
 */
static int
same_tree(const char *src, const char *dst)
{
	char s[PATH_MAX], d[PATH_MAX];
	struct stat ss, ds;
	struct dirent *de;
	DIR *dir;
	int same = 1, pass;

	/* The entries of src, then the entries of dst that src lacks. */
	for (pass = 0; pass < 2 && same; pass++) {
		if ((dir = opendir(pass == 0 ? src : dst)) == NULL)
			return 0;
		while (same && (de = readdir(dir)) != NULL) {
			if (package_skips(de->d_name))
				continue;
			snprintf(s, sizeof(s), "%s/%s", src, de->d_name);
			snprintf(d, sizeof(d), "%s/%s", dst, de->d_name);
			if (lstat(s, &ss) == -1 || (!S_ISDIR(ss.st_mode) &&
			    !S_ISREG(ss.st_mode))) {
				/* Not copied; in dst, it should not be. */
				same = lstat(d, &ds) == -1 && errno == ENOENT;
				continue;
			}
			if (lstat(d, &ds) == -1 || (ss.st_mode & S_IFMT) !=
			    (ds.st_mode & S_IFMT))
				same = 0;
			else if (pass == 0 && S_ISDIR(ss.st_mode))
				same = same_tree(s, d);
			else if (pass == 0)
				same = ss.st_size == ds.st_size &&
				    same_file(s, d);
		}
		closedir(dir);
	}
	return same;
}

/*
 * Puts a fresh copy of the package in place of the old one, unless the
 * old one is the same: an environment may be building from it (an
 * editable install works in the package's directory), and engines use
 * it, so it is only replaced when it changed.
 */
static int
install_package(const char *src, const char *dst)
{
	char tmp[PATH_MAX], old[PATH_MAX], rnd[9], *parent;

	random_hex(rnd, sizeof(rnd));
	snprintf(tmp, sizeof(tmp), "%s.new-%s", dst, rnd);
	snprintf(old, sizeof(old), "%s.old-%s", dst, rnd);
	parent = xstrdup(dst);
	*strrchr(parent, '/') = '\0';
	if (mkdir_p(parent, 0750) == -1) {
		free(parent);
		return -1;
	}
	free(parent);
	if (same_tree(src, dst))
		return 0;
	if (copy_tree(src, tmp) == -1) {
		rm_rf(tmp);
		return -1;
	}
	if (rename(dst, old) == -1 && errno != ENOENT) {
		rm_rf(tmp);
		return -1;
	}
	if (rename(tmp, dst) == -1)
		return -1;
	rm_rf(old);
	return 0;
}

/* "--option key=value": the value is JSON when it parses, else text. */
static int
add_option(json_t *opts, const char *kv)
{
	const char *eq = strchr(kv, '=');
	json_t *v;
	char *key;

	if (eq == NULL || eq == kv)
		return -1;
	key = xstrdup(kv);
	key[eq - kv] = '\0';
	v = json_loads(eq + 1, JSON_DECODE_ANY, NULL);
	if (v == NULL)
		v = json_string(eq + 1);
	if (v == NULL) {
		free(key);
		return -1;
	}
	json_object_set_new(opts, key, v);
	free(key);
	return 0;
}

/* What ade-ctl enqueue was asked for. */
struct enqueue_args {
	const char	*ws;
	const char	*cfg;
	const char	*pkg;
	const char	*input;
	const char	*spec;
	long		 max_attempts;	/* -1: the configuration's default */
	json_t		*opts;		/* --option KEY=VALUE, as an object */
	json_t		*sheets;	/* --sheet NAME, in order */
};

/* Reads enqueue's options into a; returns CTL_OK or CTL_USAGE. */
static int
enqueue_args(int argc, char **argv, struct enqueue_args *a)
{
	static const struct option lo[] = {
		{ "workspace", required_argument, NULL, 'w' },
		{ "configuration", required_argument, NULL, 'C' },
		{ "config-package", required_argument, NULL, 'p' },
		{ "input", required_argument, NULL, 'i' },
		{ "option", required_argument, NULL, 'o' },
		{ "sheet", required_argument, NULL, 's' },
		{ "max-attempts", required_argument, NULL, 'm' },
		{ "engine-spec", required_argument, NULL, 'e' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'w': a->ws = optarg; break;
		case 'C': a->cfg = optarg; break;
		case 'p': a->pkg = optarg; break;
		case 'i': a->input = optarg; break;
		case 'e': a->spec = optarg; break;
		case 's':
			json_array_append_new(a->sheets, json_string(optarg));
			break;
		case 'o':
			if (add_option(a->opts, optarg) == -1) {
				fprintf(stderr, "ade-ctl: --option wants "
				    "KEY=VALUE, not \"%s\"\n", optarg);
				return CTL_USAGE;
			}
			break;
		case 'm':
			a->max_attempts = strtol(optarg, NULL, 10);
			if (a->max_attempts < 1 || a->max_attempts > 1000) {
				fprintf(stderr, "ade-ctl: --max-attempts must "
				    "be 1 to 1000\n");
				return CTL_USAGE;
			}
			break;
		default:
			usage();
		}
	}
	if (a->pkg == NULL || a->input == NULL || optind != argc) {
		fprintf(stderr, "ade-ctl: enqueue needs --config-package and "
		    "--input\n");
		return CTL_USAGE;
	}
	return CTL_OK;
}

/*
 * Copies the input file into the workspace's uploads as a new document;
 * gives its id, stored_uri, SHA-256 and size.  Returns 0 or -1.
 */
static int
copy_input(const struct conf *c, const char *ws_id, const char *input,
    char doc_id[40], char stored[64], char sha[65], long long *size)
{
	char docpath[PATH_MAX], *dir;
	int rc;

	util_uuid(doc_id);
	snprintf(stored, 64, "uploads/%s", doc_id);
	if (path_document(docpath, sizeof(docpath), c->data_dir, ws_id,
	    stored) == -1)
		return -1;
	dir = xstrdup(docpath);
	*strrchr(dir, '/') = '\0';
	rc = mkdir_p(dir, 0750) == -1 || copy_file(input, docpath) == -1 ||
	    sha256_file(docpath, sha, size) == -1 ? -1 : 0;
	if (rc == -1)
		fprintf(stderr, "ade-ctl: cannot store %s: %s\n", input,
		    strerror(errno));
	free(dir);
	return rc;
}

static int
cmd_enqueue(int argc, char **argv)
{
	struct enqueue_args a = { "default", "default", NULL, NULL, NULL, -1,
	    json_object(), json_array() };
	char ws_id[64], cfg_id[64], doc_id[40], run_id[40], stored[64];
	char cfgdir[PATH_MAX], digest[DEPS_DIGEST_LEN], sha[65];
	char *opts_text = NULL, *sheets_text = NULL;
	struct enqueue_req req;
	struct store *st;
	struct conf *c;
	long long size;
	int rc;

	if ((rc = enqueue_args(argc, argv, &a)) != CTL_OK)
		goto out;
	c = load_conf();
	st = open_store(c, OPEN_READY);
	rc = CTL_FAIL;
	if (store_register(st, a.ws, a.cfg, ws_id, cfg_id) == -1) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		goto close;
	}
	if (path_config_dir(cfgdir, sizeof(cfgdir), c->data_dir, ws_id,
	    cfg_id) == -1 || install_package(a.pkg, cfgdir) == -1) {
		fprintf(stderr, "ade-ctl: cannot copy %s to %s: %s\n", a.pkg,
		    cfgdir, strerror(errno));
		goto close;
	}
	if (deps_digest(cfgdir, digest, sizeof(digest)) == -1) {
		fprintf(stderr, "ade-ctl: deps digest of %s: %s\n", cfgdir,
		    strerror(errno));
		goto close;
	}
	if (copy_input(c, ws_id, a.input, doc_id, stored, sha, &size) == -1)
		goto close;
	util_uuid(run_id);
	if (json_object_size(a.opts) > 0)
		opts_text = json_dumps(a.opts, JSON_COMPACT);
	if (json_array_size(a.sheets) > 0)
		sheets_text = json_dumps(a.sheets, JSON_COMPACT);
	memset(&req, 0, sizeof(req));
	req.workspace_id = ws_id;
	req.configuration_id = cfg_id;
	req.content_digest = digest;
	req.document_id = doc_id;
	req.original_filename = strrchr(a.input, '/') != NULL ?
	    strrchr(a.input, '/') + 1 : a.input;
	req.stored_uri = stored;
	req.document_sha256 = sha;
	req.document_size = size;
	req.content_type = NULL;
	req.run_id = run_id;
	req.engine_spec = a.spec != NULL ? a.spec : c->engine_spec;
	req.deps_digest = digest;
	req.run_options = opts_text;
	req.input_sheet_names = sheets_text;
	req.max_attempts = a.max_attempts > 0 ? a.max_attempts :
	    (long)c->max_attempts_default;
	if (store_enqueue(st, &req) == -1) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		goto close;
	}
	if (json_out)
		printf("{\"run_id\":\"%s\",\"workspace_id\":\"%s\","
		    "\"configuration_id\":\"%s\",\"document_id\":\"%s\","
		    "\"deps_digest\":\"%s\"}\n", run_id, ws_id, cfg_id, doc_id,
		    digest);
	else
		printf("%s\n", run_id);
	rc = CTL_OK;
close:
	free(opts_text);
	free(sheets_text);
	store_close(st);
	conf_free(c);
out:
	json_decref(a.opts);
	json_decref(a.sheets);
	return rc;
}

static const char *
sval(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	static char num[4][32];
	static int slot;

	if (json_is_string(v))
		return json_string_value(v);
	if (json_is_integer(v)) {
		slot = (slot + 1) % 4;
		snprintf(num[slot], sizeof(num[slot]), "%lld",
		    (long long)json_integer_value(v));
		return num[slot];
	}
	if (json_is_boolean(v))
		return json_is_true(v) ? "true" : "false";
	if (json_is_real(v)) {
		slot = (slot + 1) % 4;
		snprintf(num[slot], sizeof(num[slot]), "%g",
		    json_real_value(v));
		return num[slot];
	}
	return "-";
}

/*
 * The last n records of a run's event log (the log may be large: only
 * its end is read).
 */
static json_t *
last_events(const struct conf *c, json_t *run, size_t n)
{
	char dir[PATH_MAX], path[PATH_MAX + 32], chunk[65536];
	json_t *all = json_array(), *rec, *out;
	const char *ws = json_string_value(json_object_get(run, "workspace_id"));
	const char *id = json_string_value(json_object_get(run, "id"));
	char *line, *save;
	ssize_t len;
	off_t size;
	size_t i;
	int fd;

	if (ws == NULL || id == NULL || path_run_dir(dir, sizeof(dir),
	    c->data_dir, ws, id) == -1)
		return all;
	snprintf(path, sizeof(path), "%s/logs/events.ndjson", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return all;
	size = lseek(fd, 0, SEEK_END);
	lseek(fd, size > (off_t)sizeof(chunk) - 1 ? size -
	    (off_t)sizeof(chunk) + 1 : 0, SEEK_SET);
	len = read(fd, chunk, sizeof(chunk) - 1);
	close(fd);
	if (len <= 0)
		return all;
	chunk[len] = '\0';
	for (line = strtok_r(chunk, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save))
		if ((rec = json_loads(line, 0, NULL)) != NULL)
			json_array_append_new(all, rec);
	if (json_array_size(all) <= n)
		return all;
	out = json_array();
	for (i = json_array_size(all) - n; i < json_array_size(all); i++)
		json_array_append(out, json_array_get(all, i));
	json_decref(all);
	return out;
}

/* Prints text from the database with control characters made visible. */
static void
print_clean(const char *s, size_t max)
{
	size_t n = 0;

	for (; *s != '\0' && n < max; s++, n++)
		putchar((unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s);
	if (*s != '\0')
		fputs("...", stdout);
}

/* A column of a table: clean text, cut to width, padded (bytes). */
static void
print_cell(const char *s, size_t width)
{
	size_t n = 0;

	for (; *s != '\0' && n < width; s++, n++)
		putchar((unsigned char)*s < 0x20 ? '?' : *s);
	for (; n < width + 2; n++)
		putchar(' ');
}

/*
 * One record of an event log: with --json as written, else as a line of
 * time (UTC, to the millisecond), level, event and message.  A line that
 * is not a JSON object is shown cleaned, as it came.
 */
static void
print_record(const char *line, size_t len)
{
	json_t *rec;
	char when[24], name[128];

	if (json_out) {
		fwrite(line, 1, len, stdout);
		putchar('\n');
		return;
	}
	rec = json_loadb(line, len, 0, NULL);
	if (!json_is_object(rec)) {
		char *copy = strndup(line, len);

		if (copy != NULL)
			print_clean(copy, 2000);
		free(copy);
		putchar('\n');
		json_decref(rec);
		return;
	}
	/* UTC, to the millisecond: "Z" or "+00:00" */
	snprintf(when, sizeof(when), "%s", sval(rec, "timestamp"));
	print_clean(when, sizeof(when) - 1);
	printf("%s ", strlen(sval(rec, "timestamp")) > 23 ? "Z" : "");
	print_cell(sval(rec, "level"), 5);
	/* Names are short; a long one is shown whole, not cut. */
	snprintf(name, sizeof(name), "%s", sval(rec, "event"));
	print_cell(name, strlen(name) > 26 ? strlen(name) : 26);
	print_clean(sval(rec, "message"), 2000);
	putchar('\n');
	json_decref(rec);
}

/* Seconds a follower waits for the last event once the job is over. */
#define FOLLOW_GRACE	10.0

/*
 * Prints the event log of the job whose directory is dir (its
 * logs/events.ndjson) and, with follow, what is appended to it until
 * over(arg) says the job is finished (asked at most once a second, and
 * at once after an event named in last) and the file is read to its end.
 * A file replaced under the same path (the next build's log) is read
 * from its start.  Until the file exists, following waits for it.
 */
static int
follow_log(const char *dir, int follow, int (*over)(void *), void *arg,
    const char *const *last)
{
	char path[PATH_MAX + 32], chunk[65536], *nl;
	struct buf pending;
	struct stat st, now;
	double check_at = 0, grace_end = 0;
	ssize_t n;
	size_t i, off;
	int fd = -1, finishing = 0, seen_last = 0, rc = CTL_OK;

	snprintf(path, sizeof(path), "%s/logs/events.ndjson", dir);
	buf_init(&pending);
	for (;;) {
		if (fd == -1) {
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd == -1 && (errno != ENOENT || !follow)) {
				fprintf(stderr, "ade-ctl: %s: %s\n", path,
				    strerror(errno));
				rc = errno == ENOENT ? CTL_NOTFOUND : CTL_FAIL;
				break;
			}
			if (fd == -1) {
				if (over(arg)) {
					fprintf(stderr, "ade-ctl: finished "
					    "without a log at %s\n", path);
					rc = CTL_NOTFOUND;
					break;
				}
				usleep(200000);
				continue;
			}
			if (fstat(fd, &st) == -1)
				memset(&st, 0, sizeof(st));
			buf_reset(&pending);
		}
		if ((n = read(fd, chunk, sizeof(chunk))) > 0) {
			buf_add(&pending, chunk, (size_t)n);
			off = 0;
			while ((nl = memchr(pending.data + off, '\n',
			    pending.len - off)) != NULL) {
				size_t len = (size_t)(nl - pending.data) - off;

				print_record(pending.data + off, len);
				for (i = 0; last != NULL && last[i] != NULL;
				    i++)
					if (len > 0 && memmem(pending.data + off,
					    len, last[i], strlen(last[i])) !=
					    NULL)
						check_at = 0, seen_last = 1;
				off += len + 1;
			}
			memmove(pending.data, pending.data + off,
			    pending.len - off);
			pending.len -= off;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		fflush(stdout);
		if (!follow || finishing)
			break;
		/* The next build writes a new file under the same path. */
		if (stat(path, &now) == 0 && (now.st_ino != st.st_ino ||
		    now.st_dev != st.st_dev)) {
			close(fd);
			fd = -1;
			seen_last = 0;
			continue;
		}
		/*
		 * Once the job is over, once more to the end and stop; the
		 * worker writes the last event soon after the database
		 * says so (a cancel, at its next heartbeat).
		 */
		if (grace_end > 0 && (seen_last || now_mono() >= grace_end)) {
			finishing = 1;
			continue;
		}
		if (grace_end == 0 && now_mono() >= check_at) {
			if (over(arg))
				grace_end = now_mono() + FOLLOW_GRACE;
			check_at = now_mono() + 1;
			continue;
		}
		usleep(200000);
	}
	if (fd != -1)
		close(fd);
	buf_free(&pending);
	return rc;
}

/* A run a follower waits for: over once it is finished. */
struct followed {
	struct store	*st;
	const char	*id;
};

static int
run_over(void *arg)
{
	struct followed *f = arg;
	json_t *r = store_show_run(f->st, f->id);
	const char *status;
	int over;

	if (r == NULL)
		return 0;	/* the database may be back soon */
	status = json_string_value(json_object_get(json_object_get(r, "run"),
	    "status"));
	over = status == NULL || (strcmp(status, "queued") != 0 &&
	    strcmp(status, "running") != 0);
	json_decref(r);
	return over;
}

/* The environment's row, or NULL (with the reason said) when none. */
static json_t *
find_environment(struct store *st, const char *id)
{
	json_t *rows, *r, *found = NULL;
	size_t i;

	if ((rows = store_list_environments(st)) == NULL)
		return NULL;
	json_array_foreach(rows, i, r)
		if (strcmp(sval(r, "id"), id) == 0)
			found = json_incref(r);
	json_decref(rows);
	return found;
}

static int
env_over(void *arg)
{
	struct followed *f = arg;
	json_t *r = find_environment(f->st, f->id);
	int over;

	if (r == NULL)
		return 0;
	over = strcmp(sval(r, "status"), "queued") != 0 &&
	    strcmp(sval(r, "status"), "building") != 0;
	json_decref(r);
	return over;
}

static int
run_status_ok(const char *s)
{
	size_t i;

	for (i = 0; i < RUN_STATUSES; i++)
		if (strcmp(s, run_statuses[i]) == 0)
			return 1;
	return 0;
}

/* Adds the full paths of a run's directory and output to its row. */
static void
add_run_paths(const struct conf *c, json_t *run)
{
	char dir[PATH_MAX], out[PATH_MAX * 2];
	const char *ws = json_string_value(json_object_get(run,
	    "workspace_id"));
	const char *id = json_string_value(json_object_get(run, "id"));
	const char *output = json_string_value(json_object_get(run,
	    "output_path"));

	if (ws == NULL || id == NULL || path_run_dir(dir, sizeof(dir),
	    c->data_dir, ws, id) == -1)
		return;
	json_object_set_new(run, "run_directory", json_string(dir));
	if (output != NULL && output[0] != '\0') {
		snprintf(out, sizeof(out), "%s/%s", dir, output);
		json_object_set_new(run, "output_file", json_string(out));
	}
}

/*
 * Writes a run's input, output and logs and a JSON summary of its row,
 * metrics and results into one archive, for an incident report.
 */
static int
bundle_run(const struct conf *c, struct store *st, const char *id,
    const char *out)
{
	static const char *const parts[] = { "input", "output", "logs" };
	char dir[PATH_MAX], paths[3][PATH_MAX + 16], err[512], *summary;
	char top[64];
	const char *p[3], *names[3];
	json_t *shown, *run;
	size_t i, n = 0;
	struct stat sb;
	int rc;

	if ((shown = store_show_run(st, id)) == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	run = json_object_get(shown, "run");
	if (json_is_null(run)) {
		fprintf(stderr, "ade-ctl: no run %s\n", id);
		json_decref(shown);
		return CTL_NOTFOUND;
	}
	if (path_run_dir(dir, sizeof(dir), c->data_dir, json_string_value(
	    json_object_get(run, "workspace_id")), json_string_value(
	    json_object_get(run, "id"))) == -1) {
		fprintf(stderr, "ade-ctl: run %s: ids do not make a safe path\n",
		    id);
		json_decref(shown);
		return CTL_FAIL;
	}
	for (i = 0; i < NELEM(parts); i++) {
		snprintf(paths[i], sizeof(paths[i]), "%s/%s", dir, parts[i]);
		if (lstat(paths[i], &sb) == 0 && S_ISDIR(sb.st_mode)) {
			p[n] = paths[i];
			names[n++] = parts[i];
		}
	}
	summary = json_dumps(shown, JSON_INDENT(2));
	snprintf(top, sizeof(top), "run-%s", json_string_value(
	    json_object_get(run, "id")));
	rc = arch_write_bundle_in(out, top, p, names, n, summary, err,
	    sizeof(err));
	free(summary);
	json_decref(shown);
	if (rc == -1) {
		/* Started as root, ade-ctl writes as the service user. */
		if (acting_as[0] != '\0')
			fprintf(stderr, "ade-ctl: bundle: %s (writing as the "
			    "service user %s)\n", err, acting_as);
		else
			fprintf(stderr, "ade-ctl: bundle: %s\n", err);
		return CTL_FAIL;
	}
	printf("%s\n", out);
	return CTL_OK;
}

/* ade-ctl runs list: a table, or the rows as JSON. */
static int
runs_list(struct store *st, const char *status, long limit)
{
	json_t *rows, *r;
	size_t i;

	if ((rows = store_list_runs(st, status, limit)) == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	if (json_out) {
		print_json(rows);
		json_decref(rows);
		return CTL_OK;
	}
	printf("%-36s  %-9s  %-7s  %-4s  %-24s  %-24s  %-16s  %-20s  %-24s  "
	    "%s\n", "ID", "STATUS", "ATTEMPT", "EXIT", "STARTED", "COMPLETED",
	    "WORKSPACE", "CONFIGURATION", "DOCUMENT", "ERROR");
	json_array_foreach(rows, i, r) {
		/*
		 * A run queued again (a retry) has not started yet: its row
		 * still holds the last attempt's.
		 */
		int again = strcmp(sval(r, "status"), "queued") == 0;

		printf("%-36s  %-9s  %3s/%-3s  %-4s  %-24s  %-24s  ",
		    sval(r, "id"), sval(r, "status"), sval(r, "attempt_count"),
		    sval(r, "max_attempts"),
		    again ? "-" : sval(r, "exit_code"),
		    again ? "-" : sval(r, "started_at"),
		    sval(r, "completed_at"));
		print_cell(sval(r, "workspace_slug"), 16);
		print_cell(sval(r, "configuration_name"), 20);
		print_cell(sval(r, "document_name"), 24);
		if (again && json_is_string(json_object_get(r,
		    "error_message")))
			fputs("last attempt: ", stdout);
		print_clean(sval(r, "error_message"), 60);
		putchar('\n');
	}
	json_decref(rows);
	return CTL_OK;
}

/* The text form of runs show: the row, metrics, fields, last events. */
static void
print_run(json_t *shown)
{
	json_t *r, *v;
	const char *k;
	size_t i;

	r = json_object_get(shown, "run");
	json_object_foreach(r, k, v) {
		if (strcmp(k, "run_options") == 0 || json_is_null(v))
			continue;
		printf("%-22s ", k);
		print_clean(sval(r, k), 2000);
		putchar('\n');
	}
	r = json_object_get(shown, "metrics");
	if (json_is_object(r)) {
		printf("metrics:\n");
		json_object_foreach(r, k, v)
			if (!json_is_null(v))
				printf("  %-26s %s\n", k, sval(r, k));
	} else
		printf("metrics:               none\n");
	printf("fields:                %zu\n",
	    json_array_size(json_object_get(shown, "fields")));
	json_array_foreach(json_object_get(shown, "fields"), i, r)
		printf("  %-24s detected=%s score=%s\n", sval(r, "field"),
		    sval(r, "detected"), sval(r, "best_mapping_score"));
	printf("table columns:         %zu\n",
	    json_array_size(json_object_get(shown, "table_columns")));
	printf("last events:\n");
	json_array_foreach(json_object_get(shown, "events"), i, r) {
		/* UTC, to the millisecond: "Z" or "+00:00" */
		printf("  %.23s%s %-7s %-28s ", sval(r, "timestamp"),
		    strlen(sval(r, "timestamp")) > 23 ? "Z" : "",
		    sval(r, "level"), sval(r, "event"));
		print_clean(sval(r, "message"), 80);
		putchar('\n');
	}
}

/* ade-ctl runs show ID */
static int
runs_show(struct conf *c, struct store *st, const char *id)
{
	json_t *shown;

	if ((shown = store_show_run(st, id)) == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	if (json_is_null(json_object_get(shown, "run"))) {
		fprintf(stderr, "ade-ctl: no run %s\n", id);
		json_decref(shown);
		return CTL_NOTFOUND;
	}
	json_object_set_new(shown, "events", last_events(c,
	    json_object_get(shown, "run"), 20));
	add_run_paths(c, json_object_get(shown, "run"));
	if (json_out) {
		print_json(shown);
	} else
		print_run(shown);
	json_decref(shown);
	return CTL_OK;
}

/* ade-ctl runs tail [-f] ID */
static int
runs_tail(struct conf *c, struct store *st, const char *id, int follow)
{
	static const char *const last[] = {
		"\"run.complete\"", "\"run.cancelled\"", NULL
	};
	struct followed f = { st, id };
	char dir[PATH_MAX];
	json_t *shown, *r;
	int found;

	if ((shown = store_show_run(st, id)) == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	r = json_object_get(shown, "run");
	found = !json_is_null(r) && path_run_dir(dir, sizeof(dir),
	    c->data_dir, sval(r, "workspace_id"), sval(r, "id")) == 0;
	json_decref(shown);
	if (!found) {
		fprintf(stderr, "ade-ctl: no run %s\n", id);
		return CTL_NOTFOUND;
	}
	return follow_log(dir, follow, run_over, &f, last);
}

/* ade-ctl runs requeue ID | cancel ID */
static int
runs_act(struct store *st, const char *sub, const char *id)
{
	int requeue = strcmp(sub, "requeue") == 0;
	int n = requeue ? store_run_requeue(st, id) : store_run_cancel(st, id);

	if (n < 0) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	if (n == 0) {
		fprintf(stderr, "ade-ctl: run %s is not %s\n", id, requeue ?
		    "finished (or does not exist)" :
		    "queued or running (or does not exist)");
		return CTL_NOTFOUND;
	}
	printf("%s %s\n", id, requeue ? "queued" : "cancelled");
	return CTL_OK;
}

static int
cmd_runs(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "status", required_argument, NULL, 's' },
		{ "limit", required_argument, NULL, 'l' },
		{ "json", no_argument, NULL, 'j' },
		{ "output", required_argument, NULL, 'o' },
		{ "follow", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 }
	};
	const char *status = NULL, *sub, *bundle_out = NULL, *id;
	struct store *st;
	struct conf *c;
	long limit = 50;
	int ch, follow = 0, one, rc;

	if (argc < 2)
		usage();
	sub = argv[1];
	/*
	 * Options may follow the run id: parse the words after the
	 * subcommand afresh (optind 0 resets getopt, which main left in
	 * stop-at-the-first-word mode).
	 */
	argc--;
	argv++;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "o:f", lo, NULL)) != -1) {
		switch (ch) {
		case 'o': bundle_out = optarg; break;
		case 'f': follow = 1; break;
		case 's': status = optarg; break;
		case 'l': limit = strtol(optarg, NULL, 10); break;
		case 'j': json_out = 1; break;
		default: usage();
		}
	}
	if (status != NULL && !run_status_ok(status)) {
		fprintf(stderr, "ade-ctl: no run status %s (queued, running, "
		    "succeeded, failed or cancelled)\n", status);
		return CTL_USAGE;
	}
	one = optind + 1 == argc;	/* one run named */
	id = one ? argv[optind] : NULL;
	c = load_conf();
	st = open_store(c, OPEN_READY);
	if (strcmp(sub, "list") == 0 && optind == argc)
		rc = runs_list(st, status, limit);
	else if (strcmp(sub, "show") == 0 && one)
		rc = runs_show(c, st, id);
	else if (strcmp(sub, "tail") == 0 && one)
		rc = runs_tail(c, st, id, follow);
	else if (strcmp(sub, "bundle") == 0 && one && bundle_out != NULL)
		rc = bundle_run(c, st, id, bundle_out);
	else if ((strcmp(sub, "requeue") == 0 || strcmp(sub, "cancel") == 0)
	    && one)
		rc = runs_act(st, sub, id);
	else
		usage();
	store_close(st);
	conf_free(c);
	return rc;
}

/*
 * The hosts that run workers on this database, from the row each one's
 * maintenance pass renews: up, or gone when it stopped renewing it.
 */
static int
cmd_hosts(int argc, char **argv)
{
	struct store *st;
	struct conf *c;
	json_t *rows, *r, *info, *out;
	char seen[32];
	time_t t;
	size_t i;

	if (argc != 1)
		usage();
	c = load_conf();
	st = open_store(c, OPEN_READY);
	if ((rows = store_list_hosts(st)) == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	out = json_array();
	json_array_foreach(rows, i, r) {
		info = json_loads(sval(r, "holder"), 0, NULL);
		if (!json_is_object(info)) {
			json_decref(info);
			info = json_object();
		}
		json_object_set(info, "name", json_object_get(r, "name"));
		json_object_set(info, "state", json_object_get(r, "state"));
		json_object_set(info, "expires_at", json_object_get(r,
		    "expires_at"));
		json_array_append_new(out, info);
	}
	json_decref(rows);
	if (json_out) {
		print_json(out);
	} else {
		printf("%-24s  %-5s  %-7s  %-8s  %-8s  %s\n", "HOST", "STATE",
		    "WORKERS", "VERSION", "PID", "LAST SEEN");
		json_array_foreach(out, i, r) {
			t = (time_t)json_integer_value(json_object_get(r,
			    "seen"));
			strftime(seen, sizeof(seen), "%Y-%m-%dT%H:%M:%SZ",
			    gmtime(&t));
			print_cell(sval(r, "id"), 24);
			print_cell(sval(r, "state"), 5);
			print_cell(sval(r, "workers"), 7);
			print_cell(sval(r, "version"), 8);
			print_cell(sval(r, "pid"), 8);
			printf("%s\n", t > 0 ? seen : "-");
		}
	}
	json_decref(out);
	store_close(st);
	conf_free(c);
	return CTL_OK;
}

/* ade-ctl envs log [-f] ID */
static int
envs_log(struct conf *c, struct store *st, const char *id, int follow)
{
	static const char *const last[] = {
		"\"environment.complete\"", "\"environment.failed\"", NULL
	};
	struct followed f = { st, id };
	char root[PATH_MAX];
	json_t *r;
	int n;

	if ((r = find_environment(st, id)) == NULL) {
		fprintf(stderr, "ade-ctl: no environment %s\n", id);
		return CTL_NOTFOUND;
	}
	n = path_env_root(root, sizeof(root), c->venvs_root,
	    sval(r, "workspace_id"), sval(r, "configuration_id"),
	    sval(r, "deps_digest"), sval(r, "id"));
	json_decref(r);
	if (n == -1) {
		fprintf(stderr, "ade-ctl: environment %s: ids do not make a "
		    "safe path\n", id);
		return CTL_FAIL;
	}
	return follow_log(root, follow, env_over, &f, last);
}

/* ade-ctl envs list: a table, or the rows as JSON. */
static int
envs_list(struct store *st)
{
	json_t *rows, *r;
	size_t i;

	if ((rows = store_list_environments(st)) == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	if (json_out) {
		print_json(rows);
		json_decref(rows);
		return CTL_OK;
	}
	printf("%-36s  %-8s  %-24s  %-14s  %s\n", "ID", "STATUS",
	    "LAST USED", "PYTHON", "DEPS / ERROR");
	json_array_foreach(rows, i, r) {
		printf("%-36s  %-8s  %-24s  %-14s  ", sval(r, "id"),
		    sval(r, "status"), sval(r, "last_used_at"),
		    sval(r, "python_version"));
		print_clean(strcmp(sval(r, "status"), "failed") == 0 ?
		    sval(r, "error_message") : sval(r, "deps_digest"), 80);
		putchar('\n');
	}
	json_decref(rows);
	return CTL_OK;
}

/* ade-ctl envs rebuild ID */
static int
envs_rebuild(struct store *st, const char *id)
{
	int n;

	if ((n = store_environment_rebuild(st, id)) < 0) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	if (n == 0) {
		fprintf(stderr, "ade-ctl: environment %s is being built or "
		    "does not exist\n", id);
		return CTL_NOTFOUND;
	}
	printf("%s queued for a rebuild\n", id);
	return CTL_OK;
}

static int
cmd_envs(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "follow", no_argument, NULL, 'f' },
		{ NULL, 0, NULL, 0 }
	};
	struct store *st;
	struct conf *c;
	const char *sub, *id;
	int ch, follow = 0, rc;

	if (argc < 2)
		usage();
	sub = argv[1];
	/* Options may follow the id, as with runs. */
	argc--;
	argv++;
	optind = 0;
	while ((ch = getopt_long(argc, argv, "f", lo, NULL)) != -1) {
		switch (ch) {
		case 'f': follow = 1; break;
		case 'j': json_out = 1; break;
		default: usage();
		}
	}
	id = optind < argc ? argv[optind] : NULL;
	if (argc - optind > 1 || (follow && strcmp(sub, "log") != 0))
		usage();
	c = load_conf();
	st = open_store(c, OPEN_READY);
	if (strcmp(sub, "log") == 0 && id != NULL)
		rc = envs_log(c, st, id, follow);
	else if (strcmp(sub, "list") == 0 && id == NULL)
		rc = envs_list(st);
	else if (strcmp(sub, "rebuild") == 0 && id != NULL)
		rc = envs_rebuild(st, id);
	else
		usage();
	store_close(st);
	conf_free(c);
	return rc;
}

/* Sends one request on the control socket and returns the answer. */
static char *
control(const struct conf *c, const char *req)
{
	struct sockaddr_un sa;
	struct timeval tv = { 30, 0 };
	struct buf b;
	char chunk[4096], *ans;
	ssize_t n;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", c->socket_path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		fprintf(stderr, "ade-ctl: cannot reach ade-superd at %s: %s\n",
		    c->socket_path, strerror(errno));
		exit(CTL_FAIL);
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* One write: the answer may close the connection before a second. */
	snprintf(chunk, sizeof(chunk), "%s\n", req);
	if (write(fd, chunk, strlen(chunk)) == -1) {
		fprintf(stderr, "ade-ctl: write: %s\n", strerror(errno));
		exit(CTL_FAIL);
	}
	buf_init(&b);
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		buf_add(&b, chunk, (size_t)n);
	close(fd);
	ans = xstrdup(buf_str(&b));
	buf_free(&b);
	return ans;
}

static int
cmd_supervisor(int argc, char **argv)
{
	struct conf *c;
	char *ans, req[64];
	json_t *j, *s;
	size_t i;

	if (strcmp(argv[0], "scale") == 0) {
		if (argc != 2)
			usage();
		snprintf(req, sizeof(req), "scale %s", argv[1]);
	} else if (argc != 1)
		usage();
	else
		snprintf(req, sizeof(req), "%s", argv[0]);
	c = load_conf_as(1);
	ans = control(c, req);
	conf_free(c);
	if (strcmp(argv[0], "status") != 0) {
		fputs(ans, stdout);
		i = strncmp(ans, "ok", 2) == 0;
		free(ans);
		return i ? CTL_OK : CTL_FAIL;
	}
	if (json_out) {
		fputs(ans, stdout);
		free(ans);
		return CTL_OK;
	}
	if ((j = json_loads(ans, 0, NULL)) == NULL) {
		fprintf(stderr, "ade-ctl: unexpected answer: %s", ans);
		free(ans);
		return CTL_FAIL;
	}
	printf("supervisor pid %s, %s, %s worker%s wanted, maintenance %s\n",
	    sval(j, "pid"), sval(j, "state"), sval(j, "workers"),
	    PLURAL(json_integer_value(json_object_get(j, "workers"))),
	    json_integer_value(json_object_get(j, "maintenance_pid")) ?
	    "running" : "idle");
	printf("%-4s  %-7s  %-9s  %-6s  %-4s  %s\n", "SLOT", "PID", "STATE",
	    "JOBS", "KIND", "CLAIM / LAST ERROR");
	json_array_foreach(json_object_get(j, "slots"), i, s) {
		printf("%-4s  %-7s  %-9s  %-6s  %-4s  ", sval(s, "slot"),
		    sval(s, "pid"), json_is_true(json_object_get(s,
		    "looking")) ? "looking" : sval(s, "state"),
		    sval(s, "jobs_done"),
		    json_object_get(s, "claim_kind") ? (strcmp(sval(s,
		    "claim_kind"), "run") == 0 ? "run" : "env") : "-");
		print_clean(json_object_get(s, "claim_id") ? sval(s,
		    "claim_id") : sval(s, "last_error"), 60);
		/* Where a long job is: "(config, 42 s)". */
		if (json_object_get(s, "claim_id") &&
		    json_object_get(s, "step"))
			printf(" (%s, %s s)", sval(s, "step"),
			    sval(s, "step_seconds"));
		putchar('\n');
	}
	json_decref(j);
	free(ans);
	return CTL_OK;
}

/*
 * Garbage collection from the command line: --dry-run lists what would
 * go, --now removes it.  Both work without a running supervisor.
 */
static int
cmd_gc(int argc, char **argv)
{
	struct store *st;
	struct conf *c;
	json_t *report, *r;
	size_t i;
	int dry;

	if (argc != 2 || (strcmp(argv[1], "--dry-run") != 0 &&
	    strcmp(argv[1], "--now") != 0))
		usage();
	dry = strcmp(argv[1], "--dry-run") == 0;
	c = load_conf();
	st = open_store(c, OPEN_READY);
	report = gc_collect(c, st, dry);
	json_object_set_new(report, "local_venvs", json_integer(
	    gc_local_venvs(c, st, dry, json_object_get(report, "removed"))));
	if (json_out)
		print_json(report);
	else {
		json_array_foreach(json_object_get(report, "removed"), i, r)
			printf("%s %s %s\n", dry ? "would remove" : "removed",
			    sval(r, "kind"), sval(r, "path"));
		printf("%zu %s\n", json_array_size(json_object_get(report,
		    "removed")), dry ? "to remove" : "removed");
	}
	if (json_out)
		putchar('\n');
	json_decref(report);
	store_close(st);
	conf_free(c);
	return CTL_OK;
}

/* "status --hosts": every host on the database, not this host's workers. */
static int
cmd_status(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--hosts") == 0)
		return cmd_hosts(1, argv);
	return cmd_supervisor(argc, argv);
}

/*
 * The commands: what runs each, and its lines of the usage text, which
 * --help prints in this order.
 */
static const struct command {
	const char	*name;
	int		(*run)(int, char **);
	const char	*usage;
} commands[] = {
	{ "db", cmd_db,
	    "  db init                      create what is missing of the schema\n"
	    "  db check                     list missing tables and columns\n"
	    "  db schema [--json]           the tables and columns it needs\n" },
	{ "config", cmd_config,
	    "  config check FILE            check a configuration file\n"
	    "  config keys                  list every configuration key\n" },
	{ "enqueue", cmd_enqueue,
	    "  enqueue --workspace NAME --configuration NAME\n"
	    "          --config-package DIR --input FILE\n"
	    "          [--option KEY=VALUE]... [--sheet NAME]...\n"
	    "          [--max-attempts N] [--engine-spec SPEC]\n" },
	{ "runs", cmd_runs,
	    "  runs list [--status S] [--limit N]\n"
	    "  runs show ID | requeue ID | cancel ID\n"
	    "  runs tail [-f] ID            a run's events, as they come\n"
	    "  runs bundle ID -o FILE.tar.gz|FILE.zip\n" },
	{ "envs", cmd_envs,
	    "  envs list | rebuild ID\n"
	    "  envs log [-f] ID             a build's log, as it comes\n" },
	{ "gc", cmd_gc,
	    "  gc --dry-run | --now         list or collect garbage now\n" },
	{ "hosts", cmd_hosts,
	    "  hosts                        every host on the database\n" },
	{ "status", cmd_status,
	    "  status                       the supervisor's workers\n"
	    "  status --hosts               every host on the database (as hosts)\n" },
	{ "drain", cmd_supervisor,
	    "  drain | reload | scale N     act through the supervisor\n" },
	{ "reload", cmd_supervisor, NULL },
	{ "scale", cmd_supervisor, NULL },
};

static void
usage_to(FILE *f)
{
	size_t i;

	fprintf(f,
	    "usage: ade-ctl [-c file] [--json] command [args]\n"
	    "       ade-ctl --help | --version\n"
	    "commands:\n");
	for (i = 0; i < NELEM(commands); i++)
		if (commands[i].usage != NULL)
			fputs(commands[i].usage, f);
}

int
main(int argc, char *argv[])
{
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch, i;

	signal(SIGPIPE, SIG_IGN);
	log_init(LOG_DEST_STDERR, NULL, "ade-ctl");
	log_setrole("ade-ctl");
	while ((ch = getopt_long(argc, argv, "+c:jhV", lo, NULL)) != -1) {
		switch (ch) {
		case 'c': conf_path = optarg; break;
		case 'j': json_out = 1; break;
		case 'h':
			usage_to(stdout);
			return CTL_OK;
		case 'V':
			printf("ade-ctl %s\n", ADE_VERSION);
			return CTL_OK;
		default: usage();
		}
	}
	/* "ade-ctl runs --help" asks for the usage too, not for a run. */
	for (i = optind; i < argc; i++)
		if (strcmp(argv[i], "--help") == 0) {
			usage_to(stdout);
			return CTL_OK;
		}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	for (i = 0; i < (int)NELEM(commands); i++)
		if (strcmp(argv[0], commands[i].name) == 0)
			return commands[i].run(argc, argv);
	usage();
}
