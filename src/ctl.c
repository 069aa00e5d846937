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

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr,
	    "usage: ade-ctl [-c file] [--json] command [args]\n"
	    "commands:\n"
	    "  db init                      create what is missing of the schema\n"
	    "  db check                     list missing tables and columns\n"
	    "  config check FILE            check a configuration file\n"
	    "  config keys                  list every configuration key\n"
	    "  enqueue --workspace NAME --configuration NAME\n"
	    "          --config-package DIR --input FILE\n"
	    "          [--option KEY=VALUE]... [--sheet NAME]...\n"
	    "          [--max-attempts N] [--engine-spec SPEC]\n"
	    "  runs list [--status S] [--limit N]\n"
	    "  runs show ID | requeue ID | cancel ID\n"
	    "  runs bundle ID -o FILE.tar.gz|FILE.zip\n"
	    "  envs list | rebuild ID\n"
	    "  gc --dry-run | --now         list or collect garbage now\n"
	    "  status                       the supervisor's workers\n"
	    "  drain | reload | scale N     act through the supervisor\n");
	exit(CTL_USAGE);
}

static struct conf *
load_conf(void)
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
		exit(CTL_FAIL);
	}
	buf_free(&errs);
	/* Files ade-ctl writes must belong to the service user. */
	if (priv_drop(c, 0) == -1)
		exit(CTL_FAIL);
	return c;
}

static struct store *
open_store(const struct conf *c)
{
	struct store *st;
	struct buf err;

	buf_init(&err);
	if ((st = store_open(c, &err)) == NULL) {
		fprintf(stderr, "ade-ctl: %s\n", buf_str(&err));
		exit(CTL_FAIL);
	}
	buf_free(&err);
	return st;
}

static int
cmd_db(int argc, char **argv)
{
	struct conf *c;
	struct store *st;
	struct buf missing, optional;
	int rc;

	if (argc != 2)
		usage();
	c = load_conf();
	st = open_store(c);
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
 * Copies a configuration package.  Symbolic links, build leftovers and
 * version control directories are left out.
 */
static int
copy_tree(const char *src, const char *dst)
{
	static const char *const skip[] = {
		".git", "__pycache__", ".venv", "venv", "build", "dist",
		"node_modules", ".DS_Store",
	};
	char s[PATH_MAX], d[PATH_MAX];
	struct dirent *de;
	struct stat st;
	size_t i, n;
	DIR *dir;
	int rc = 0;

	if (mkdir(dst, 0750) == -1 && errno != EEXIST)
		return -1;
	if ((dir = opendir(src)) == NULL)
		return -1;
	while ((de = readdir(dir)) != NULL && rc == 0) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		for (i = 0; i < NELEM(skip); i++)
			if (strcmp(de->d_name, skip[i]) == 0)
				break;
		n = strlen(de->d_name);
		if (i < NELEM(skip) || (n > 9 && strcmp(de->d_name + n - 9,
		    ".egg-info") == 0) || (n > 4 && strcmp(de->d_name + n - 4,
		    ".pyc") == 0))
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

/* Puts a fresh copy of the package in place of the old one. */
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

static int
cmd_enqueue(int argc, char **argv)
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
	const char *ws = "default", *cfg = "default", *pkg = NULL;
	const char *input = NULL, *spec = NULL;
	char ws_id[64], cfg_id[64], doc_id[40], run_id[40], stored[64];
	char cfgdir[PATH_MAX], docpath[PATH_MAX], digest[DEPS_DIGEST_LEN];
	char sha[65], *opts_text = NULL, *sheets_text = NULL, *base;
	json_t *opts = json_object(), *sheets = json_array();
	struct enqueue_req req;
	struct store *st;
	struct conf *c;
	long long size;
	long max_attempts = -1;
	int ch;

	optind = 0;
	while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (ch) {
		case 'w': ws = optarg; break;
		case 'C': cfg = optarg; break;
		case 'p': pkg = optarg; break;
		case 'i': input = optarg; break;
		case 'e': spec = optarg; break;
		case 's':
			json_array_append_new(sheets, json_string(optarg));
			break;
		case 'o':
			if (add_option(opts, optarg) == -1) {
				fprintf(stderr, "ade-ctl: --option wants "
				    "KEY=VALUE, not \"%s\"\n", optarg);
				return CTL_USAGE;
			}
			break;
		case 'm':
			max_attempts = strtol(optarg, NULL, 10);
			if (max_attempts < 1 || max_attempts > 1000) {
				fprintf(stderr, "ade-ctl: --max-attempts must "
				    "be 1 to 1000\n");
				return CTL_USAGE;
			}
			break;
		default:
			usage();
		}
	}
	if (pkg == NULL || input == NULL || optind != argc) {
		fprintf(stderr, "ade-ctl: enqueue needs --config-package and "
		    "--input\n");
		return CTL_USAGE;
	}
	c = load_conf();
	st = open_store(c);
	if (store_register(st, ws, cfg, ws_id, cfg_id) == -1) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	if (path_config_dir(cfgdir, sizeof(cfgdir), c->data_dir, ws_id,
	    cfg_id) == -1 || install_package(pkg, cfgdir) == -1) {
		fprintf(stderr, "ade-ctl: cannot copy %s to %s: %s\n", pkg,
		    cfgdir, strerror(errno));
		return CTL_FAIL;
	}
	if (deps_digest(cfgdir, digest, sizeof(digest)) == -1) {
		fprintf(stderr, "ade-ctl: deps digest of %s: %s\n", cfgdir,
		    strerror(errno));
		return CTL_FAIL;
	}
	util_uuid(doc_id);
	util_uuid(run_id);
	snprintf(stored, sizeof(stored), "uploads/%s", doc_id);
	if (path_document(docpath, sizeof(docpath), c->data_dir, ws_id,
	    stored) == -1)
		return CTL_FAIL;
	base = xstrdup(docpath);
	*strrchr(base, '/') = '\0';
	if (mkdir_p(base, 0750) == -1 || copy_file(input, docpath) == -1 ||
	    sha256_file(docpath, sha, &size) == -1) {
		fprintf(stderr, "ade-ctl: cannot store %s: %s\n", input,
		    strerror(errno));
		return CTL_FAIL;
	}
	free(base);
	if (json_object_size(opts) > 0)
		opts_text = json_dumps(opts, JSON_COMPACT);
	if (json_array_size(sheets) > 0)
		sheets_text = json_dumps(sheets, JSON_COMPACT);
	base = strrchr(input, '/') ? strrchr(input, '/') + 1 : (char *)input;
	memset(&req, 0, sizeof(req));
	req.workspace_id = ws_id;
	req.configuration_id = cfg_id;
	req.content_digest = digest;
	req.document_id = doc_id;
	req.original_filename = base;
	req.stored_uri = stored;
	req.document_sha256 = sha;
	req.document_size = size;
	req.content_type = NULL;
	req.run_id = run_id;
	req.engine_spec = spec != NULL ? spec : c->engine_spec;
	req.deps_digest = digest;
	req.run_options = opts_text;
	req.input_sheet_names = sheets_text;
	req.max_attempts = max_attempts > 0 ? max_attempts :
	    (long)c->max_attempts_default;
	if (store_enqueue(st, &req) == -1) {
		fprintf(stderr, "ade-ctl: %s\n", store_error(st));
		return CTL_FAIL;
	}
	if (json_out)
		printf("{\"run_id\":\"%s\",\"workspace_id\":\"%s\","
		    "\"configuration_id\":\"%s\",\"document_id\":\"%s\","
		    "\"deps_digest\":\"%s\"}\n", run_id, ws_id, cfg_id, doc_id,
		    digest);
	else
		printf("%s\n", run_id);
	free(opts_text);
	free(sheets_text);
	json_decref(opts);
	json_decref(sheets);
	store_close(st);
	conf_free(c);
	return CTL_OK;
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
		putchar((unsigned char)*s < 0x20 ? '?' : *s);
	if (*s != '\0')
		fputs("...", stdout);
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
	rc = arch_write_bundle(out, p, names, n, summary, err, sizeof(err));
	free(summary);
	json_decref(shown);
	if (rc == -1) {
		fprintf(stderr, "ade-ctl: bundle: %s\n", err);
		return CTL_FAIL;
	}
	printf("%s\n", out);
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
		{ NULL, 0, NULL, 0 }
	};
	const char *status = NULL, *sub, *bundle_out = NULL;
	struct store *st;
	struct conf *c;
	json_t *rows, *r, *v;
	const char *k;
	long limit = 50;
	size_t i;
	int ch;

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
	while ((ch = getopt_long(argc, argv, "o:", lo, NULL)) != -1) {
		switch (ch) {
		case 'o': bundle_out = optarg; break;
		case 's': status = optarg; break;
		case 'l': limit = strtol(optarg, NULL, 10); break;
		case 'j': json_out = 1; break;
		default: usage();
		}
	}
	c = load_conf();
	st = open_store(c);
	if (strcmp(sub, "list") == 0 && optind == argc) {
		if ((rows = store_list_runs(st, status, limit)) == NULL) {
			fprintf(stderr, "ade-ctl: %s\n", store_error(st));
			return CTL_FAIL;
		}
		if (json_out) {
			json_dumpf(rows, stdout, JSON_INDENT(2));
			putchar('\n');
		} else {
			printf("%-36s  %-9s  %-7s  %-4s  %-24s  %-24s  %s\n",
			    "ID", "STATUS", "ATTEMPT", "EXIT", "STARTED",
			    "COMPLETED", "ERROR");
			json_array_foreach(rows, i, r) {
				printf("%-36s  %-9s  %3s/%-3s  %-4s  %-24s  "
				    "%-24s  ", sval(r, "id"),
				    sval(r, "status"),
				    sval(r, "attempt_count"),
				    sval(r, "max_attempts"),
				    sval(r, "exit_code"),
				    sval(r, "started_at"),
				    sval(r, "completed_at"));
				print_clean(sval(r, "error_message"), 60);
				putchar('\n');
			}
		}
		json_decref(rows);
	} else if (strcmp(sub, "show") == 0 && optind + 1 == argc) {
		if ((rows = store_show_run(st, argv[optind])) == NULL) {
			fprintf(stderr, "ade-ctl: %s\n", store_error(st));
			return CTL_FAIL;
		}
		if (json_is_null(json_object_get(rows, "run"))) {
			fprintf(stderr, "ade-ctl: no run %s\n", argv[optind]);
			return CTL_NOTFOUND;
		}
		json_object_set_new(rows, "events", last_events(c,
		    json_object_get(rows, "run"), 20));
		if (json_out) {
			json_dumpf(rows, stdout, JSON_INDENT(2));
			putchar('\n');
		} else {
			r = json_object_get(rows, "run");
			json_object_foreach(r, k, v) {
				if (strcmp(k, "run_options") == 0 ||
				    json_is_null(v))
					continue;
				printf("%-22s ", k);
				print_clean(sval(r, k), 2000);
				putchar('\n');
			}
			r = json_object_get(rows, "metrics");
			if (json_is_object(r)) {
				printf("metrics:\n");
				json_object_foreach(r, k, v)
					if (!json_is_null(v))
						printf("  %-26s %s\n", k,
						    sval(r, k));
			} else
				printf("metrics:               none\n");
			printf("fields:                %zu\n",
			    json_array_size(json_object_get(rows, "fields")));
			json_array_foreach(json_object_get(rows, "fields"), i,
			    r) {
				printf("  %-24s detected=%s score=%s\n",
				    sval(r, "field"), sval(r, "detected"),
				    sval(r, "best_mapping_score"));
			}
			printf("table columns:         %zu\n",
			    json_array_size(json_object_get(rows,
			    "table_columns")));
			printf("last events:\n");
			json_array_foreach(json_object_get(rows, "events"), i,
			    r) {
				/* UTC, to the millisecond: "Z" or "+00:00" */
				printf("  %.23s%s %-7s %-28s ",
				    sval(r, "timestamp"),
				    strlen(sval(r, "timestamp")) > 23 ? "Z" : "",
				    sval(r, "level"), sval(r, "event"));
				print_clean(sval(r, "message"), 80);
				putchar('\n');
			}
		}
		json_decref(rows);
	} else if (strcmp(sub, "bundle") == 0 && optind + 1 == argc &&
	    bundle_out != NULL) {
		int rc = bundle_run(c, st, argv[optind], bundle_out);

		if (rc != CTL_OK)
			return rc;
	} else if ((strcmp(sub, "requeue") == 0 || strcmp(sub, "cancel") == 0)
	    && optind + 1 == argc) {
		int n = strcmp(sub, "requeue") == 0 ?
		    store_run_requeue(st, argv[optind]) :
		    store_run_cancel(st, argv[optind]);

		if (n < 0) {
			fprintf(stderr, "ade-ctl: %s\n", store_error(st));
			return CTL_FAIL;
		}
		if (n == 0) {
			fprintf(stderr, "ade-ctl: run %s is not %s\n",
			    argv[optind], strcmp(sub, "requeue") == 0 ?
			    "finished (or does not exist)" :
			    "queued or running (or does not exist)");
			return CTL_NOTFOUND;
		}
		printf("%s %s\n", argv[optind], strcmp(sub, "requeue") == 0 ?
		    "queued" : "cancelled");
	} else
		usage();
	store_close(st);
	conf_free(c);
	return CTL_OK;
}

static int
cmd_envs(int argc, char **argv)
{
	struct store *st;
	struct conf *c;
	json_t *rows, *r;
	size_t i;
	int n;

	if (argc < 2)
		usage();
	c = load_conf();
	st = open_store(c);
	if (strcmp(argv[1], "list") == 0 && argc == 2) {
		if ((rows = store_list_environments(st)) == NULL) {
			fprintf(stderr, "ade-ctl: %s\n", store_error(st));
			return CTL_FAIL;
		}
		if (json_out) {
			json_dumpf(rows, stdout, JSON_INDENT(2));
			putchar('\n');
		} else {
			printf("%-36s  %-8s  %-24s  %-14s  %s\n", "ID", "STATUS",
			    "LAST USED", "PYTHON", "DEPS / ERROR");
			json_array_foreach(rows, i, r) {
				printf("%-36s  %-8s  %-24s  %-14s  ",
				    sval(r, "id"), sval(r, "status"),
				    sval(r, "last_used_at"),
				    sval(r, "python_version"));
				print_clean(strcmp(sval(r, "status"), "failed")
				    == 0 ? sval(r, "error_message") :
				    sval(r, "deps_digest"), 80);
				putchar('\n');
			}
		}
		json_decref(rows);
	} else if (strcmp(argv[1], "rebuild") == 0 && argc == 3) {
		if ((n = store_environment_rebuild(st, argv[2])) < 0) {
			fprintf(stderr, "ade-ctl: %s\n", store_error(st));
			return CTL_FAIL;
		}
		if (n == 0) {
			fprintf(stderr, "ade-ctl: environment %s is being "
			    "built or does not exist\n", argv[2]);
			return CTL_NOTFOUND;
		}
		printf("%s queued for a rebuild\n", argv[2]);
	} else
		usage();
	store_close(st);
	conf_free(c);
	return CTL_OK;
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
	c = load_conf();
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
	printf("supervisor pid %s, %s, %s workers wanted, maintenance %s\n",
	    sval(j, "pid"), sval(j, "state"), sval(j, "workers"),
	    json_integer_value(json_object_get(j, "maintenance_pid")) ?
	    "running" : "idle");
	printf("%-4s  %-7s  %-9s  %-6s  %-4s  %s\n", "SLOT", "PID", "STATE",
	    "JOBS", "KIND", "CLAIM / LAST ERROR");
	json_array_foreach(json_object_get(j, "slots"), i, s) {
		printf("%-4s  %-7s  %-9s  %-6s  %-4s  ", sval(s, "slot"),
		    sval(s, "pid"), sval(s, "state"), sval(s, "jobs_done"),
		    json_object_get(s, "claim_kind") ? (strcmp(sval(s,
		    "claim_kind"), "run") == 0 ? "run" : "env") : "-");
		print_clean(json_object_get(s, "claim_id") ? sval(s,
		    "claim_id") : sval(s, "last_error"), 60);
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
	st = open_store(c);
	report = gc_collect(c, st, dry);
	if (json_out)
		json_dumpf(report, stdout, JSON_INDENT(2));
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

int
main(int argc, char *argv[])
{
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;

	signal(SIGPIPE, SIG_IGN);
	log_init(LOG_DEST_STDERR, NULL, "ade-ctl");
	log_setrole("ade-ctl");
	while ((ch = getopt_long(argc, argv, "+c:j", lo, NULL)) != -1) {
		switch (ch) {
		case 'c': conf_path = optarg; break;
		case 'j': json_out = 1; break;
		default: usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (strcmp(argv[0], "db") == 0)
		return cmd_db(argc, argv);
	if (strcmp(argv[0], "config") == 0)
		return cmd_config(argc, argv);
	if (strcmp(argv[0], "enqueue") == 0)
		return cmd_enqueue(argc, argv);
	if (strcmp(argv[0], "runs") == 0)
		return cmd_runs(argc, argv);
	if (strcmp(argv[0], "gc") == 0)
		return cmd_gc(argc, argv);
	if (strcmp(argv[0], "envs") == 0)
		return cmd_envs(argc, argv);
	if (strcmp(argv[0], "status") == 0 || strcmp(argv[0], "drain") == 0 ||
	    strcmp(argv[0], "reload") == 0 || strcmp(argv[0], "scale") == 0)
		return cmd_supervisor(argc, argv);
	usage();
}
