/*
 * Tests worker.conf handling: the defaults of conf_new, parsing of a
 * file with sections, quotes and comments, "FILE:LINE: message" errors
 * (all of them, with the right line numbers), environment overrides
 * (reference section 7), size suffixes, the password and password_file
 * permission checks, and the checks made on the configuration as a
 * whole.
 */
#include "unit.h"

#include <strings.h>

#include "conf.h"

#define EPS	1e-9

#define ENGINE_SPEC_DEFAULT \
	"ade-engine @ git+https://github.com/clac-ca/ade-engine@main"

struct fixture {
	char		 dir[PATH_MAX];
	char		 path[PATH_MAX];	/* dir/worker.conf */
	struct conf	*c;
	struct buf	 errs;
};

/* Removes every ADE_* variable, whatever the case of its name. */
static void
clear_ade_env(void)
{
	extern char **environ;
	char name[256];
	int again = 1;

	while (again) {
		char **e;

		again = 0;
		for (e = environ; e != NULL && *e != NULL; e++) {
			size_t n = strcspn(*e, "=");

			if (strncasecmp(*e, "ADE_", 4) != 0 ||
			    n >= sizeof(name))
				continue;
			memcpy(name, *e, n);
			name[n] = '\0';
			unsetenv(name);
			again = 1;	/* environ changed: start over */
			break;
		}
	}
}

static int
setup(void **state)
{
	struct fixture *f = xcalloc(1, sizeof(*f));

	clear_ade_env();
	unit_tmpdir(f->dir, sizeof(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/worker.conf", f->dir);
	buf_init(&f->errs);
	f->c = conf_new();
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	clear_ade_env();
	conf_free(f->c);
	buf_free(&f->errs);
	rm_rf(f->dir);
	free(f);
	return 0;
}

/* Writes text as the configuration file with mode and loads it. */
static int
load_text(struct fixture *f, const char *text, mode_t mode)
{
	unit_write(f->path, text, strlen(text), mode);
	return conf_load(f->c, f->path, &f->errs);
}

/*
 * Fails unless the errors reported are exactly the given lines, each
 * prefixed by "<path>:"; a failure names the caller's line.
 */
static void
assert_errs_at(struct fixture *f, const char *const *lines,
    const char *file, int line)
{
	struct buf b;

	buf_init(&b);
	for (; *lines != NULL; lines++)
		buf_printf(&b, "%s:%s\n", f->path, *lines);
	if (strcmp(buf_str(&b), buf_str(&f->errs)) != 0) {
		print_error("errors reported:\n%s\nerrors expected:\n%s\n",
		    buf_str(&f->errs), buf_str(&b));
		buf_free(&b);
		_fail(file, line);
	}
	buf_free(&b);
}

#define assert_errs(f, lines) \
	assert_errs_at(f, lines, __FILE__, __LINE__)

/* The line number conf records for a key. */
static int
line_of(const struct conf *c, const char *section, const char *name)
{
	const struct conf_key *k;
	size_t n, i;

	k = conf_keys(&n);
	for (i = 0; i < n; i++)
		if (strcmp(k[i].section, section) == 0 &&
		    strcmp(k[i].name, name) == 0)
			return c->lines[i];
	fail_msg("no key [%s] %s", section, name);
	return 0;
}

static void
test_defaults(void **state)
{
	struct fixture *f = *state;
	struct conf *c = f->c;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	long want_workers = cpus < 1 ? 2 : cpus / 2;

	if (want_workers < 1)
		want_workers = 1;
	if (want_workers > 4)
		want_workers = 4;
	assert_int_equal(conf_workers_auto(), want_workers);

	assert_float_equal(c->lease_seconds, 900, EPS);
	assert_float_equal(c->backoff_base, 5, EPS);
	assert_float_equal(c->backoff_max, 300, EPS);
	assert_float_equal(c->poll_interval, 0.5, EPS);
	assert_float_equal(c->poll_interval_max, 2, EPS);
	assert_float_equal(c->cleanup_interval, 30, EPS);
	assert_float_equal(c->env_build_timeout, 600, EPS);
	assert_float_equal(c->run_timeout, 0, EPS);
	assert_float_equal(c->gc_interval, 3600, EPS);
	assert_string_equal(c->db_backend, "sqlite");
	assert_string_equal(c->db_encrypt, "optional");
	assert_string_equal(c->db_auth_mode, "sql_password");
	assert_string_equal(c->db_name, "ade");
	assert_string_equal(c->log_level, "info");
	assert_string_equal(c->engine_spec, ENGINE_SPEC_DEFAULT);
	assert_int_equal(c->db_port, 1433);
	assert_int_equal(c->db_trust_server_cert, 1);
	assert_int_equal(c->db_echo, 0);
	assert_int_equal(c->gc_enable, 1);
	assert_int_equal(c->gc_env_ttl_days, 30);
	assert_int_equal(c->gc_run_artifact_ttl_days, 30);
	assert_int_equal(c->max_attempts_default, 3);
	assert_int_equal(c->max_event_line, 4LL << 20);
	assert_int_equal(c->max_log_size, 64LL << 20);
	assert_int_equal(c->workers, conf_workers_auto());
	assert_string_equal(c->db_password, "");
	assert_null(c->password);
	assert_true(c->data_dir[0] == '/');
	assert_int_equal(line_of(c, "worker", "lease_seconds"), 0);
}

/* Loading no file applies the defaults and derives sqlite_file. */
static void
test_load_without_file(void **state)
{
	struct fixture *f = *state;
	char want[PATH_MAX];

	assert_int_equal(conf_load(f->c, NULL, &f->errs), 0);
	assert_string_equal(buf_str(&f->errs), "");
	snprintf(want, sizeof(want), "%s/db/ade.sqlite", f->c->data_dir);
	assert_string_equal(f->c->sqlite_file, want);
	assert_null(f->c->password);
}

static void
test_good_file(void **state)
{
	struct fixture *f = *state;
	struct conf *c = f->c;
	static const char text[] =
	    "# worker.conf for the tests\n"
	    "; another comment style\n"
	    "\n"
	    "[database]\n"
	    "backend = SQLite\n"
	    "  host =   db.example.org  \n"
	    "port=1444\n"
	    "database = \"ade prod\"\n"
	    "user = \"\"\n"
	    "trust_server_certificate = No\n"
	    "echo = on\n"
	    "\n"
	    "[ worker ]\n"
	    "\t# indented comment\n"
	    "id = \"worker one\"\n"
	    "data_dir = /srv/ade\n"
	    "lease_seconds = 60\n"
	    "poll_interval = 0.25\n"
	    "poll_interval_max = 1.5\n"
	    "log_level = WARNING\n"
	    "engine_spec = \"ade-engine==1.2\"\n"
	    "pip_args = --no-index --find-links=/w\n"
	    "\n"
	    "[gc]\n"
	    "enable = false\n"
	    "env_ttl_days = -1\n"
	    "\n"
	    "[supervisor]\n"
	    "workers = 3\n";

	assert_int_equal(load_text(f, text, 0640), 0);
	assert_string_equal(buf_str(&f->errs), "");
	assert_string_equal(c->db_backend, "sqlite");
	assert_string_equal(c->db_host, "db.example.org");
	assert_int_equal(c->db_port, 1444);
	assert_string_equal(c->db_name, "ade prod");
	assert_string_equal(c->db_user, "");
	assert_int_equal(c->db_trust_server_cert, 0);
	assert_int_equal(c->db_echo, 1);
	assert_string_equal(c->worker_id, "worker one");
	assert_string_equal(c->data_dir, "/srv/ade");
	assert_float_equal(c->lease_seconds, 60, EPS);
	assert_float_equal(c->poll_interval, 0.25, EPS);
	assert_float_equal(c->poll_interval_max, 1.5, EPS);
	assert_string_equal(c->log_level, "warning");
	assert_string_equal(c->engine_spec, "ade-engine==1.2");
	assert_string_equal(c->pip_args, "--no-index --find-links=/w");
	assert_int_equal(c->gc_enable, 0);
	assert_int_equal(c->gc_env_ttl_days, -1);
	assert_int_equal(c->workers, 3);
	/* Untouched keys keep their defaults. */
	assert_float_equal(c->backoff_base, 5, EPS);
	assert_int_equal(c->gc_run_artifact_ttl_days, 30);
	assert_string_equal(c->sqlite_file, "/srv/ade/db/ade.sqlite");
	/* Where each value came from. */
	assert_int_equal(line_of(c, "database", "backend"), 5);
	assert_int_equal(line_of(c, "database", "port"), 7);
	assert_int_equal(line_of(c, "worker", "lease_seconds"), 17);
	assert_int_equal(line_of(c, "supervisor", "workers"), 29);
	assert_int_equal(line_of(c, "worker", "backoff_base_seconds"), 0);
}

/* A lone quote or quotes that do not enclose the value are kept. */
static void
test_quotes(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "[worker]\n"
	    "id = \"\n"
	    "venv_args = \"--a\" \"--b\"\n"
	    "pip_args = \"  spaced  \"\n"
	    "engine_command = say \"hi\"\n";

	assert_int_equal(load_text(f, text, 0600), 0);
	assert_string_equal(f->c->worker_id, "\"");
	assert_string_equal(f->c->venv_args, "--a\" \"--b");
	assert_string_equal(f->c->pip_args, "  spaced  ");
	assert_string_equal(f->c->engine_command, "say \"hi\"");
}

/* Every error of a file is reported, each with its own line number. */
static void
test_all_errors_reported(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "stray = 1\n"					/* 1 */
	    "[worker]\n"					/* 2 */
	    "lease_seconds = 60\n"				/* 3 */
	    "bogus_key = 1\n"					/* 4 */
	    "this line has no equals sign\n"			/* 5 */
	    "max_attempts_default = abc\n"			/* 6 */
	    "max_attempts_default = 0\n"			/* 7 */
	    "lease_seconds = 120\n"				/* 8 */
	    "log_level = loud\n"				/* 9 */
	    "max_event_line = 12X\n"				/* 10 */
	    "poll_interval = -1\n"				/* 11 */
	    "poll_interval_max = fast\n"			/* 12 */
	    "[gc]\n"						/* 13 */
	    "enable = perhaps\n"				/* 14 */
	    "[nosuch]\n"					/* 15 */
	    "whatever = 1\n"					/* 16 */
	    "[database]\n"					/* 17 */
	    "port = 70000\n"					/* 18 */
	    "port = 1e3\n"					/* 19 */
	    "[worker\n"						/* 20 */
	    "lease_seconds = 5\n"				/* 21 */
	    "[supervisor]\n"					/* 22 */
	    "workers = 0\n"					/* 23 */
	    "workers = many\n";					/* 24 */
	static const char *const want[] = {
		"1: key \"stray\" outside of any section",
		"4: unknown key \"bogus_key\" in [worker]",
		"5: expected \"key = value\"",
		"6: max_attempts_default: expected a whole number, not "
		    "\"abc\"",
		"7: max_attempts_default: 0 is out of range (1 to 1000)",
		"8: lease_seconds: already set on line 3",
		"9: log_level: expected one of "
		    "debug|info|notice|warning|error, not \"loud\"",
		"10: max_event_line: expected a size such as 65536, 512K or "
		    "4M, not \"12X\"",
		"11: poll_interval: -1 is out of range (0 to 3600)",
		"12: poll_interval_max: expected a number of seconds, not "
		    "\"fast\"",
		"14: enable: expected yes or no, not \"perhaps\"",
		"15: unknown section [nosuch]",
		"18: port: 70000 is out of range (1 to 65535)",
		"19: port: expected a whole number, not \"1e3\"",
		"20: section header is missing \"]\"",
		"23: workers: 0 is out of range (1 to 256)",
		"24: workers: expected a whole number, not \"many\"",
		NULL
	};

	assert_int_equal(load_text(f, text, 0640), -1);
	assert_errs(f, want);
	/* The good line still took effect; the rejected ones did not. */
	assert_float_equal(f->c->lease_seconds, 60, EPS);
	assert_int_equal(f->c->max_attempts_default, 3);
	assert_int_equal(f->c->db_port, 1433);
}

/*
 * Keys below an unknown section are not reported again: the section
 * header already was.  This holds for the first section of a file too.
 */
static void
test_unknown_first_section(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "[bogus]\n"
	    "x = 1\n"
	    "[worker]\n"
	    "lease_seconds = 60\n";
	static const char *const want[] = {
		"1: unknown section [bogus]",
		NULL
	};

	assert_int_equal(load_text(f, text, 0640), -1);
	assert_errs(f, want);
	assert_float_equal(f->c->lease_seconds, 60, EPS);
}

static void
test_missing_file(void **state)
{
	struct fixture *f = *state;
	char want[PATH_MAX + 64];

	assert_int_equal(conf_load(f->c, f->path, &f->errs), -1);
	snprintf(want, sizeof(want), "%s: %s\n", f->path, strerror(ENOENT));
	assert_string_equal(buf_str(&f->errs), want);
}

static void
test_env_overrides(void **state)
{
	struct fixture *f = *state;
	struct conf *c = f->c;
	static const char text[] =
	    "[worker]\n"
	    "lease_seconds = 120\n"
	    "poll_interval = 0.25\n"
	    "data_dir = /srv/file\n"
	    "[supervisor]\n"
	    "workers = 2\n";

	assert_int_equal(setenv("ADE_WORKER_LEASE_SECONDS", "60", 1), 0);
	/* Names are matched without regard to case. */
	assert_int_equal(setenv("ade_worker_backoff_base_seconds", "7", 1), 0);
	assert_int_equal(setenv("Ade_Sql_Host", "sql.example", 1), 0);
	/* Empty and blank values are ignored. */
	assert_int_equal(setenv("ADE_WORKER_POLL_INTERVAL", "", 1), 0);
	assert_int_equal(setenv("ADE_WORKER_CLEANUP_INTERVAL", "   ", 1), 0);
	/* Values are trimmed. */
	assert_int_equal(setenv("ADE_DATA_DIR", " /srv/env ", 1), 0);
	assert_int_equal(setenv("ADE_WORKER_CONCURRENCY", "5", 1), 0);
	assert_int_equal(setenv("ADE_WORKER_ENABLE_GC", "off", 1), 0);
	assert_int_equal(setenv("ADE_WORKER_LOG_LEVEL", "DEBUG", 1), 0);

	assert_int_equal(load_text(f, text, 0640), 0);
	assert_string_equal(buf_str(&f->errs), "");
	assert_float_equal(c->lease_seconds, 60, EPS);
	assert_float_equal(c->backoff_base, 7, EPS);
	assert_string_equal(c->db_host, "sql.example");
	assert_float_equal(c->poll_interval, 0.25, EPS);
	assert_float_equal(c->cleanup_interval, 30, EPS);
	assert_string_equal(c->data_dir, "/srv/env");
	assert_string_equal(c->sqlite_file, "/srv/env/db/ade.sqlite");
	assert_int_equal(c->workers, 5);
	assert_int_equal(c->gc_enable, 0);
	assert_string_equal(c->log_level, "debug");
	assert_int_equal(line_of(c, "worker", "lease_seconds"), -1);
	assert_int_equal(line_of(c, "worker", "poll_interval"), 3);
	assert_int_equal(line_of(c, "worker", "cleanup_interval"), 0);
}

/* A bad environment value is reported as "environment: NAME: ...". */
static void
test_env_bad_values(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(setenv("ADE_WORKER_LEASE_SECONDS", "soon", 1), 0);
	assert_int_equal(setenv("ADE_SQL_PORT", "0", 1), 0);
	assert_int_equal(setenv("ADE_WORKER_MAX_EVENT_LINE", "lots", 1), 0);
	assert_int_equal(load_text(f, "[worker]\nlease_seconds = 120\n",
	    0640), -1);
	assert_string_equal(buf_str(&f->errs),
	    "environment: ADE_SQL_PORT: port: 0 is out of range "
	    "(1 to 65535)\n"
	    "environment: ADE_WORKER_LEASE_SECONDS: lease_seconds: "
	    "expected a number of seconds, not \"soon\"\n"
	    "environment: ADE_WORKER_MAX_EVENT_LINE: max_event_line: "
	    "expected a size such as 65536, 512K or 4M, not \"lots\"\n");
	/* The file's value stays when the environment's is refused. */
	assert_float_equal(f->c->lease_seconds, 120, EPS);
	assert_int_equal(f->c->db_port, 1433);
}

static void
test_sizes(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "[worker]\n"
	    "max_event_line = 512K\n"
	    "max_log_size = 1G\n";

	assert_int_equal(load_text(f, text, 0640), 0);
	assert_int_equal(f->c->max_event_line, 512LL << 10);
	assert_int_equal(f->c->max_log_size, 1LL << 30);

	conf_free(f->c);
	f->c = conf_new();
	assert_int_equal(load_text(f, "[worker]\nmax_event_line = 4m\n"
	    "max_log_size = 65536\n", 0640), 0);
	assert_int_equal(f->c->max_event_line, 4LL << 20);
	assert_int_equal(f->c->max_log_size, 65536);

	conf_free(f->c);
	f->c = conf_new();
	assert_int_equal(setenv("ADE_WORKER_MAX_LOG_SIZE", "3M", 1), 0);
	assert_int_equal(load_text(f, "[worker]\nmax_event_line = 8192\n",
	    0640), 0);
	assert_int_equal(f->c->max_event_line, 8192);
	assert_int_equal(f->c->max_log_size, 3LL << 20);
}

static void
test_size_errors(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "[worker]\n"
	    "max_event_line = 1k\n"
	    "max_event_line = 2G\n"
	    "max_event_line = -1K\n"
	    "max_event_line = K\n"
	    "max_event_line = 1.5M\n"
	    "max_event_line = 4 MB\n";
	static const char *const want[] = {
		"2: max_event_line: 1k is out of range (4096 to 1073741824)",
		"3: max_event_line: 2G is out of range (4096 to 1073741824)",
		"4: max_event_line: expected a size such as 65536, 512K or "
		    "4M, not \"-1K\"",
		"5: max_event_line: expected a size such as 65536, 512K or "
		    "4M, not \"K\"",
		"6: max_event_line: expected a size such as 65536, 512K or "
		    "4M, not \"1.5M\"",
		"7: max_event_line: expected a size such as 65536, 512K or "
		    "4M, not \"4 MB\"",
		NULL
	};

	assert_int_equal(load_text(f, text, 0640), -1);
	assert_errs(f, want);
	assert_int_equal(f->c->max_event_line, 4LL << 20);
}

/* A file holding a password must not be readable by others. */
static void
test_password_world_readable(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "[database]\n"
	    "user = sa\n"
	    "password = s3cret\n";
	char want[PATH_MAX + 256];

	assert_int_equal(load_text(f, text, 0644), -1);
	snprintf(want, sizeof(want), "%s:3: password: the file holds a "
	    "password and is readable by others; run chmod o-rw on it or use "
	    "password_file\n", f->path);
	assert_string_equal(buf_str(&f->errs), want);
	/* The message never shows the password itself. */
	assert_null(strstr(buf_str(&f->errs), "s3cret"));
}

static void
test_password_mode_0640(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "[database]\n"
	    "user = sa\n"
	    "password = s3cret\n";

	assert_int_equal(load_text(f, text, 0640), 0);
	assert_string_equal(buf_str(&f->errs), "");
	assert_non_null(f->c->password);
	assert_string_equal(f->c->password, "s3cret");
}

/* An empty password does not make a readable file a problem. */
static void
test_empty_password_readable_file(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load_text(f, "[database]\npassword =\n", 0644), 0);
	assert_string_equal(buf_str(&f->errs), "");
	assert_null(f->c->password);
}

static void
test_password_file_readable_by_others(void **state)
{
	struct fixture *f = *state;
	char pw[PATH_MAX], text[PATH_MAX + 64], want[2 * PATH_MAX];

	snprintf(pw, sizeof(pw), "%s/password", f->dir);
	unit_write(pw, "hunter2\n", 8, 0604);
	snprintf(text, sizeof(text), "[database]\nuser = sa\n"
	    "password_file = %s\n", pw);
	assert_int_equal(load_text(f, text, 0644), -1);
	snprintf(want, sizeof(want), "%s:3: password_file: file is readable "
	    "by others; run chmod o-rw on it\n", f->path);
	assert_string_equal(buf_str(&f->errs), want);
	assert_null(f->c->password);
}

static void
test_password_file_0600(void **state)
{
	struct fixture *f = *state;
	char pw[PATH_MAX], text[PATH_MAX + 64];
	static const char secret[] = "hunter2\r\nsecond line\n";

	snprintf(pw, sizeof(pw), "%s/password", f->dir);
	unit_write(pw, secret, strlen(secret), 0600);
	/* password_file wins over password. */
	snprintf(text, sizeof(text), "[database]\npassword = other\n"
	    "password_file = %s\n", pw);
	assert_int_equal(load_text(f, text, 0640), 0);
	assert_string_equal(buf_str(&f->errs), "");
	assert_non_null(f->c->password);
	assert_string_equal(f->c->password, "hunter2");
}

static void
test_password_file_missing(void **state)
{
	struct fixture *f = *state;
	char want[PATH_MAX + 128];

	assert_int_equal(setenv("ADE_SQL_PASSWORD_FILE", "/nonexistent/pw",
	    1), 0);
	assert_int_equal(load_text(f, "[worker]\n", 0640), -1);
	snprintf(want, sizeof(want), "environment: password_file: %s\n",
	    strerror(ENOENT));
	assert_string_equal(buf_str(&f->errs), want);
}

static void
test_managed_identity_refused(void **state)
{
	struct fixture *f = *state;
	char prefix[PATH_MAX + 32];
	const char *e;

	assert_int_equal(load_text(f, "[database]\n"
	    "auth_mode = managed_identity\n", 0640), -1);
	e = buf_str(&f->errs);
	snprintf(prefix, sizeof(prefix), "%s:2: auth_mode: ", f->path);
	assert_int_equal(strncmp(e, prefix, strlen(prefix)), 0);
	assert_non_null(strstr(e, "FreeTDS"));
	assert_int_equal(unit_count_lines(e), 1);

	/* The same from the environment. */
	conf_free(f->c);
	f->c = conf_new();
	buf_reset(&f->errs);
	assert_int_equal(setenv("ADE_DATABASE_AUTH_MODE", "Managed_Identity",
	    1), 0);
	assert_int_equal(conf_load(f->c, NULL, &f->errs), -1);
	e = buf_str(&f->errs);
	assert_int_equal(strncmp(e, "environment: auth_mode: ", 24), 0);
	assert_non_null(strstr(e, "FreeTDS"));
}

static void
test_backoff_max_below_base(void **state)
{
	struct fixture *f = *state;
	static const char *const want[] = {
		"3: backoff_max_seconds: must not be smaller than "
		    "backoff_base_seconds",
		NULL
	};

	assert_int_equal(load_text(f, "[worker]\n"
	    "backoff_base_seconds = 60\n"
	    "backoff_max_seconds = 30\n", 0640), -1);
	assert_errs(f, want);

	/* Equal values are fine. */
	conf_free(f->c);
	f->c = conf_new();
	buf_reset(&f->errs);
	assert_int_equal(load_text(f, "[worker]\n"
	    "backoff_base_seconds = 30\n"
	    "backoff_max_seconds = 30\n", 0640), 0);
	assert_string_equal(buf_str(&f->errs), "");
}

static void
test_other_whole_checks(void **state)
{
	struct fixture *f = *state;
	static const char text[] =
	    "[database]\n"
	    "url_override = postgresql://u:p@h/db\n"
	    "[worker]\n"
	    "data_dir = var/lib/ade\n"
	    "poll_interval = 3\n"
	    "poll_interval_max = 2\n"
	    "python = \"\"\n"
	    "engine_spec = \"\"\n";
	static const char *const want[] = {
		"2: url_override: only mssql+pyodbc:// URLs are accepted",
		"6: poll_interval_max: must not be smaller than poll_interval",
		"4: data_dir: must be an absolute path",
		"7: python: must name an interpreter",
		"8: engine_spec: must not be empty",
		NULL
	};

	assert_int_equal(load_text(f, text, 0640), -1);
	assert_errs(f, want);
}

static void
test_relative_data_dir_from_env(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(setenv("ADE_DATA_DIR", "data", 1), 0);
	assert_int_equal(conf_load(f->c, NULL, &f->errs), -1);
	assert_string_equal(buf_str(&f->errs),
	    "environment: data_dir: must be an absolute path\n");
}

static void
test_sqlite_file(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load_text(f, "[worker]\ndata_dir = /srv/ade/\n",
	    0640), 0);
	assert_non_null(f->c->sqlite_file);
	assert_true(strcmp(f->c->sqlite_file, "/srv/ade/db/ade.sqlite") == 0 ||
	    strcmp(f->c->sqlite_file, "/srv/ade//db/ade.sqlite") == 0);

	conf_free(f->c);
	f->c = conf_new();
	assert_int_equal(load_text(f, "[worker]\ndata_dir = /srv/ade\n",
	    0640), 0);
	assert_string_equal(f->c->sqlite_file, "/srv/ade/db/ade.sqlite");

	conf_free(f->c);
	f->c = conf_new();
	assert_int_equal(load_text(f, "[database]\n"
	    "sqlite_path = /var/tmp/x.db\n"
	    "[worker]\ndata_dir = /srv/ade\n", 0640), 0);
	assert_string_equal(f->c->sqlite_file, "/var/tmp/x.db");
}

static void
test_workers_auto(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(load_text(f, "[supervisor]\nworkers = AUTO\n",
	    0640), 0);
	assert_int_equal(f->c->workers, conf_workers_auto());
	assert_int_equal(line_of(f->c, "supervisor", "workers"), 2);
}

/* Every key has an environment variable and a documentation line. */
static void
test_key_table(void **state)
{
	const struct conf_key *k;
	size_t n, i, j;

	(void)state;
	k = conf_keys(&n);
	assert_true(n >= 40);
	for (i = 0; i < n; i++) {
		assert_non_null(k[i].env);
		assert_int_equal(strncmp(k[i].env, "ADE_", 4), 0);
		assert_non_null(k[i].doc);
		assert_true(k[i].doc[0] != '\0');
		for (j = i + 1; j < n; j++)
			if (strcasecmp(k[i].env, k[j].env) == 0)
				fail_msg("%s used twice", k[i].env);
	}
}

#define T(f)	cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_defaults),
		T(test_load_without_file),
		T(test_good_file),
		T(test_quotes),
		T(test_all_errors_reported),
		T(test_unknown_first_section),
		T(test_missing_file),
		T(test_env_overrides),
		T(test_env_bad_values),
		T(test_sizes),
		T(test_size_errors),
		T(test_password_world_readable),
		T(test_password_mode_0640),
		T(test_empty_password_readable_file),
		T(test_password_file_readable_by_others),
		T(test_password_file_0600),
		T(test_password_file_missing),
		T(test_managed_identity_refused),
		T(test_backoff_max_below_base),
		T(test_other_whole_checks),
		T(test_relative_data_dir_from_env),
		T(test_sqlite_file),
		T(test_workers_auto),
		T(test_key_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
