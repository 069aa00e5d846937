/*
 * worker.conf: INI sections with "key = value" lines, "#" or ";" comment
 * lines.  Everything about a key lives in the table below.  The whole
 * file is read and every error is reported as "file:line: message" before
 * the caller gives up; the environment is applied after the file and
 * wins over it.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <grp.h>
#include <pwd.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "sandbox.h"
#include "util.h"

#ifndef ADE_LOCALSTATEDIR
#define ADE_LOCALSTATEDIR "/var"
#endif
#ifndef ADE_PYTHON
#define ADE_PYTHON "/usr/bin/python3"
#endif

#define O(f)	offsetof(struct conf, f)
#define R	CONF_RELOAD

static const struct conf_key keys[] = {
	{ "database", "backend", CONF_ENUM, O(db_backend), "sqlite", 0,
	    "ADE_DATABASE_BACKEND", 0, 0, "sqlite|pgsql|mssql",
	    "Database backend: sqlite (embedded), pgsql or mssql." },
	{ "database", "sqlite_path", CONF_STR, O(db_sqlite_path), "", 0,
	    "ADE_SQLITE_PATH", 0, 0, NULL,
	    "SQLite database file; empty means data_dir/db/ade.sqlite." },
	{ "database", "host", CONF_STR, O(db_host), "localhost", 0,
	    "ADE_SQL_HOST", 0, 0, NULL, "Database server host name." },
	{ "database", "port", CONF_INT, O(db_port), "1433", 0,
	    "ADE_SQL_PORT", 1, 65535, NULL, "Database server TCP port." },
	{ "database", "database", CONF_STR, O(db_name), "ade", 0,
	    "ADE_SQL_DATABASE", 0, 0, NULL, "Database name." },
	{ "database", "user", CONF_STR, O(db_user), "", 0,
	    "ADE_SQL_USER", 0, 0, NULL, "Login name." },
	{ "database", "password", CONF_STR, O(db_password), "", CONF_SECRET,
	    "ADE_SQL_PASSWORD", 0, 0, NULL,
	    "Login password; a file holding it must not be readable by "
	    "others." },
	{ "database", "password_file", CONF_STR, O(db_password_file), "", 0,
	    "ADE_SQL_PASSWORD_FILE", 0, 0, NULL,
	    "File whose first line is the password (mode 0600 or 0640)." },
	{ "database", "encrypt", CONF_ENUM, O(db_encrypt), "optional", 0,
	    "ADE_SQL_ENCRYPT", 0, 0, "optional|mandatory|strict|yes|no",
	    "TLS policy for SQL Server logins, for compatibility: FreeTDS "
	    "takes TLS from freetds.conf only, and ade-superd warns at start "
	    "when this asks for more than optional." },
	{ "database", "trust_server_certificate", CONF_BOOL,
	    O(db_trust_server_cert), "yes", 0,
	    "ADE_SQL_TRUST_SERVER_CERTIFICATE", 0, 0, NULL,
	    "Accept a SQL Server certificate that cannot be verified; "
	    "for compatibility, like encrypt (set \"ca file\" in "
	    "freetds.conf to verify)." },
	{ "database", "auth_mode", CONF_ENUM, O(db_auth_mode), "sql_password",
	    0, "ADE_DATABASE_AUTH_MODE", 0, 0, "sql_password|managed_identity",
	    "Login method; managed_identity is refused (FreeTDS cannot log "
	    "in with an Entra ID token)." },
	{ "database", "mi_client_id", CONF_STR, O(db_mi_client_id), "",
	    CONF_COMPAT, "ADE_DATABASE_MI_CLIENT_ID", 0, 0, NULL,
	    "Managed identity client id; accepted, unused." },
	{ "database", "url_override", CONF_STR, O(db_url_override), "",
	    0, "ADE_DATABASE_URL_OVERRIDE", 0, 0, NULL,
	    "A mssql+pyodbc:// URL naming user, password, host, port and "
	    "database at once." },
	{ "database", "tds_version", CONF_STR, O(db_tds_version), "7.4", 0,
	    "ADE_SQL_TDS_VERSION", 0, 0, NULL, "TDS protocol version." },
	{ "database", "login_timeout", CONF_SECONDS, O(db_login_timeout),
	    "15", 0, "ADE_SQL_LOGIN_TIMEOUT", 1, 3600, NULL,
	    "Seconds to wait for a connection and login." },
	{ "database", "query_timeout", CONF_SECONDS, O(db_query_timeout),
	    "60", 0, "ADE_SQL_QUERY_TIMEOUT", 1, 86400, NULL,
	    "Seconds to wait for one statement." },
	{ "database", "app_name", CONF_STR, O(db_app_name), "ade-superd", 0,
	    "ADE_SQL_APP_NAME", 0, 0, NULL,
	    "Application name the server shows for our sessions." },
	{ "database", "dsn", CONF_STR, O(db_dsn), "", CONF_SECRET,
	    "ADE_DATABASE_URL", 0, 0, NULL,
	    "PostgreSQL connection string (key=value or postgresql:// URI); "
	    "when set, host, port, database, user and password are not "
	    "used." },
	{ "database", "echo", CONF_BOOL, O(db_echo), "no", R,
	    "ADE_DATABASE_ECHO", 0, 0, NULL,
	    "Log every statement's text (never its values) at debug level." },
	{ "database", "pool_size", CONF_INT, O(db_pool_size), "5",
	    CONF_COMPAT, "ADE_DATABASE_POOL_SIZE", 0, 1000, NULL,
	    "Accepted, unused: each worker holds exactly one connection." },
	{ "database", "max_overflow", CONF_INT, O(db_max_overflow), "10",
	    CONF_COMPAT, "ADE_DATABASE_MAX_OVERFLOW", 0, 1000, NULL,
	    "Accepted, unused: each worker holds exactly one connection." },
	{ "database", "pool_timeout", CONF_SECONDS, O(db_pool_timeout), "30",
	    CONF_COMPAT, "ADE_DATABASE_POOL_TIMEOUT", 0, 86400, NULL,
	    "Accepted, unused: each worker holds exactly one connection." },
	{ "database", "pool_recycle", CONF_SECONDS, O(db_pool_recycle),
	    "1800", CONF_COMPAT, "ADE_DATABASE_POOL_RECYCLE", 0, 864000, NULL,
	    "Accepted, unused: each worker holds exactly one connection." },

	{ "worker", "id", CONF_STR, O(worker_id), "", 0,
	    "ADE_WORKER_ID", 0, 0, NULL,
	    "Name written into claimed_by; empty means the host name." },
	{ "worker", "data_dir", CONF_STR, O(data_dir),
	    ADE_LOCALSTATEDIR "/lib/ade", 0, "ADE_DATA_DIR", 0, 0, NULL,
	    "Root of configuration packages, documents, runs and venvs." },
	{ "worker", "venvs_dir", CONF_STR, O(venvs_dir), "", 0,
	    "ADE_VENVS_DIR", 0, 0, NULL,
	    "Where the environments live; empty means data_dir/venvs.  It may "
	    "be local to each host while data_dir is shared." },
	{ "worker", "poll_interval", CONF_SECONDS, O(poll_interval), "0.5", R,
	    "ADE_WORKER_POLL_INTERVAL", 0, 3600, NULL,
	    "First idle sleep in seconds; it grows while idle.  Of a host's "
	    "idle workers, one looks for work; the others sleep until it "
	    "finds some." },
	{ "worker", "poll_interval_max", CONF_SECONDS, O(poll_interval_max),
	    "2", R, "ADE_WORKER_POLL_INTERVAL_MAX", 0, 3600, NULL,
	    "Longest idle sleep in seconds." },
	{ "worker", "cleanup_interval", CONF_SECONDS, O(cleanup_interval),
	    "30", R, "ADE_WORKER_CLEANUP_INTERVAL", 1, 86400, NULL,
	    "Seconds between sweeps of expired leases." },
	{ "worker", "log_level", CONF_ENUM, O(log_level), "info", R,
	    "ADE_WORKER_LOG_LEVEL", 0, 0, "debug|info|notice|warning|error",
	    "Log level; also the engine's default --log-level." },
	{ "worker", "lease_seconds", CONF_SECONDS, O(lease_seconds), "900", R,
	    "ADE_WORKER_LEASE_SECONDS", 1, 864000, NULL,
	    "Lease length; heartbeats renew it every third of it." },
	{ "worker", "backoff_base_seconds", CONF_SECONDS, O(backoff_base), "5",
	    R, "ADE_WORKER_BACKOFF_BASE_SECONDS", 0, 86400, NULL,
	    "Retry delay after the first failed attempt; doubles each time." },
	{ "worker", "backoff_max_seconds", CONF_SECONDS, O(backoff_max), "300",
	    R, "ADE_WORKER_BACKOFF_MAX_SECONDS", 0, 864000, NULL,
	    "Longest retry delay." },
	{ "worker", "max_attempts_default", CONF_INT, O(max_attempts_default),
	    "3", R, "ADE_WORKER_MAX_ATTEMPTS_DEFAULT", 1, 1000, NULL,
	    "Attempts given to runs that ade-ctl enqueue creates." },
	{ "worker", "engine_spec", CONF_STR, O(engine_spec),
	    "ade-engine @ git+https://github.com/clac-ca/ade-engine@main", R,
	    "ADE_ENGINE_PACKAGE_PATH", 0, 0, NULL,
	    "Engine requirement for runs whose engine_spec is empty, and the "
	    "default of ade-ctl enqueue; a local path installs editable." },
	{ "worker", "env_build_timeout", CONF_SECONDS, O(env_build_timeout),
	    "600", R, "ADE_WORKER_ENV_BUILD_TIMEOUT_SECONDS", 1, 86400, NULL,
	    "Deadline in seconds for a whole environment build." },
	{ "worker", "run_timeout", CONF_SECONDS, O(run_timeout), "0", R,
	    "ADE_WORKER_RUN_TIMEOUT_SECONDS", 0, 864000, NULL,
	    "Engine time limit in seconds (exit code 124); 0 means none." },
	{ "worker", "python", CONF_STR, O(python), ADE_PYTHON, R,
	    "ADE_WORKER_PYTHON", 0, 0, NULL,
	    "Interpreter that creates the virtualenvs." },
	{ "worker", "venv_args", CONF_STR, O(venv_args), "", R,
	    "ADE_WORKER_VENV_ARGS", 0, 0, NULL,
	    "Extra words for \"python -m venv\", e.g. --system-site-packages." },
	{ "worker", "pip_args", CONF_STR, O(pip_args), "", R,
	    "ADE_WORKER_PIP_ARGS", 0, 0, NULL,
	    "Extra words for \"pip install\", e.g. --no-index "
	    "--no-build-isolation." },
	{ "worker", "engine_command", CONF_STR, O(engine_command), "", R,
	    "ADE_WORKER_ENGINE_COMMAND", 0, 0, NULL,
	    "Engine invocation prefix; {python} stands for the venv's "
	    "interpreter; empty means \"{python} -m ade_engine\"." },
	{ "worker", "engine_sandbox", CONF_ENUM, O(engine_sandbox), "auto", R,
	    "ADE_WORKER_ENGINE_SANDBOX", 0, 0, "auto|required|off",
	    "Confine engines and build steps with Landlock: auto where the "
	    "kernel has it, required refuses to start without it, off never." },
	{ "worker", "engine_user", CONF_STR, O(engine_user), "", 0,
	    "ADE_WORKER_ENGINE_USER", 0, 0, NULL,
	    "Started as root, run engines and build steps as this user (and "
	    "its login group), which must differ from the service user; "
	    "empty means as the service user." },
	{ "worker", "max_event_line", CONF_SIZE, O(max_event_line), "4M", R,
	    "ADE_WORKER_MAX_EVENT_LINE", 4096, 1LL << 30, NULL,
	    "Longest engine output line kept whole; longer ones are cut." },
	{ "worker", "max_log_size", CONF_SIZE, O(max_log_size), "64M", R,
	    "ADE_WORKER_MAX_LOG_SIZE", 65536, 1LL << 40, NULL,
	    "Bytes of event log records written for engine output per "
	    "attempt (the records as written, context included); output "
	    "beyond it is counted, not written." },
	{ "worker", "max_completion_size", CONF_SIZE,
	    O(max_completion_size), "16M", R,
	    "ADE_WORKER_MAX_COMPLETION_SIZE", 4096, 1LL << 32, NULL,
	    "Longest engine.run.completed line read (it may be longer than "
	    "max_event_line); reading one takes about ten times its size in "
	    "memory.  A longer one fails the run, saying so." },
	{ "worker", "max_result_rows", CONF_INT, O(max_result_rows),
	    "20000", R, "ADE_WORKER_MAX_RESULT_ROWS", 0, 100000000, NULL,
	    "Rows of run_fields and run_table_columns stored per run; the "
	    "rest are left out with a run.results.capped warning.  0 means "
	    "no limit." },

	{ "worker", "notify", CONF_BOOL, O(notify), "yes", 0,
	    "ADE_WORKER_NOTIFY", 0, 0, NULL,
	    "Idle, wait to be told of new work: PostgreSQL's notifications, "
	    "SQLite's files changing (inotify), or on SQL Server a wait on "
	    "the server that looks at the queue every 100 ms; no means "
	    "poll every poll_interval." },
	{ "worker", "listen_timeout", CONF_SECONDS, O(listen_timeout), "60",
	    R, "ADE_WORKER_LISTEN_TIMEOUT_SECONDS", 1, 86400, NULL,
	    "Longest idle wait for news of work before looking anyway." },
	{ "worker", "notify_jitter_ms", CONF_INT, O(notify_jitter_ms), "0",
	    R, "ADE_WORKER_NOTIFY_JITTER_MS", 0, 10000, NULL,
	    "PostgreSQL: random delay up to this many milliseconds after a "
	    "notification.  Only one idle worker per host listens, so this "
	    "only spreads many hosts' claims." },
	{ "worker", "max_jobs_per_child", CONF_INT, O(max_jobs_per_child),
	    "0", R, "ADE_WORKER_MAX_JOBS_PER_CHILD", 0, 1000000000, NULL,
	    "Replace a worker after about this many jobs (a tenth of it as "
	    "jitter); 0 means never." },
	{ "worker", "max_rss", CONF_SIZE, O(max_rss), "0", R,
	    "ADE_WORKER_MAX_RSS", 0, 1LL << 40, NULL,
	    "Replace a worker whose resident memory exceeds this between "
	    "jobs; 0 means no limit." },
	{ "gc", "enable", CONF_BOOL, O(gc_enable), "yes", R,
	    "ADE_WORKER_ENABLE_GC", 0, 0, NULL,
	    "Collect cold environments and old run directories." },
	{ "gc", "interval", CONF_SECONDS, O(gc_interval), "3600", R,
	    "ADE_WORKER_GC_INTERVAL_SECONDS", 0, 864000, NULL,
	    "Seconds between collections; 0 disables them." },
	{ "gc", "env_ttl_days", CONF_INT, O(gc_env_ttl_days), "30", R,
	    "ADE_WORKER_ENV_TTL_DAYS", -1, 100000, NULL,
	    "Days an unused environment is kept; 0 or less keeps them." },
	{ "gc", "run_artifact_ttl_days", CONF_INT,
	    O(gc_run_artifact_ttl_days), "30", R,
	    "ADE_WORKER_RUN_ARTIFACT_TTL_DAYS", -1, 100000, NULL,
	    "Days a finished run's directory is kept; 0 or less keeps them." },

	{ "supervisor", "workers", CONF_WORKERS, O(workers), "auto", R,
	    "ADE_WORKER_CONCURRENCY", 1, 256, NULL,
	    "Worker processes; auto means max(1, min(4, CPUs / 2))." },
	{ "supervisor", "user", CONF_STR, O(user), "", 0,
	    "ADE_SUPERD_USER", 0, 0, NULL,
	    "Started as root, ade-superd switches to this user before it "
	    "starts any worker; it refuses to run workers as root." },
	{ "supervisor", "group", CONF_STR, O(group), "", 0,
	    "ADE_SUPERD_GROUP", 0, 0, NULL,
	    "Group to switch to; empty means the user's login group." },
	{ "supervisor", "pidfile", CONF_STR, O(pidfile), "", 0,
	    "ADE_SUPERD_PIDFILE", 0, 0, NULL,
	    "File that holds the supervisor's process id once it is ready; "
	    "empty means none." },
	{ "supervisor", "control_socket", CONF_STR, O(control_socket), "", 0,
	    "ADE_SUPERD_CONTROL_SOCKET", 0, 0, NULL,
	    "UNIX socket for ade-ctl status, drain, reload and scale; empty "
	    "means data_dir/run/control.sock." },
	{ "supervisor", "control_socket_mode", CONF_STR,
	    O(control_socket_mode), "0660", 0, "ADE_SUPERD_CONTROL_SOCKET_MODE",
	    0, 0, NULL, "Permissions of the control socket, in octal." },
	{ "supervisor", "drain_timeout", CONF_SECONDS, O(drain_timeout), "300",
	    R, "ADE_SUPERD_DRAIN_TIMEOUT", 0, 86400, NULL,
	    "Seconds a graceful stop waits for running jobs before it stops "
	    "their engines and puts their runs back in the queue." },
	{ "supervisor", "log_file", CONF_STR, O(log_file), "", 0,
	    "ADE_SUPERD_LOG_FILE", 0, 0, NULL,
	    "Log to this file instead of syslog; SIGUSR1 reopens it." },
	{ "supervisor", "stable_seconds", CONF_SECONDS, O(stable_seconds),
	    "60", R, "ADE_SUPERD_STABLE_SECONDS", 1, 86400, NULL,
	    "A worker that lived this long is stable: its restart delay "
	    "goes back to one second." },
	{ "supervisor", "stats_period", CONF_SECONDS, O(stats_period), "60",
	    R, "ADE_SUPERD_STATS_PERIOD", 0, 86400, NULL,
	    "Seconds between the log's stats lines (runs finished and "
	    "failed, average wait and duration, queue depth); 0 means "
	    "none." },

	{ "http", "listen", CONF_STR, O(http_listen), "", 0,
	    "ADE_HTTP_LISTEN", 0, 0, NULL,
	    "HOST:PORT (or [ADDRESS]:PORT) of the HTTP endpoint: /health, "
	    "/ready and /metrics; empty means none." },
	{ "http", "actions", CONF_BOOL, O(http_actions), "no", 0,
	    "ADE_HTTP_ACTIONS", 0, 0, NULL,
	    "Offer cancel, requeue and rebuild on the dashboard, for whoever "
	    "gives the token of token_file." },
	{ "http", "token_file", CONF_STR, O(http_token_file), "", 0,
	    "ADE_HTTP_TOKEN_FILE", 0, 0, NULL,
	    "File whose first line is the token the dashboard's actions "
	    "ask for; readable by the service user alone." },
};

#undef O
#undef R

const struct conf_key *
conf_keys(size_t *n)
{
	*n = NELEM(keys);
	return keys;
}

static void
conf_error(struct buf *errs, const char *where, int line, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

static void
conf_error(struct buf *errs, const char *where, int line, const char *fmt,
    ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		buf_printf(errs, "%s:%d: %s\n", where, line, msg);
	else
		buf_printf(errs, "%s: %s\n", where, msg);
}

static int
parse_bool(const char *v, int *out)
{
	static const char *const yes[] = { "1", "yes", "true", "on", "y" };
	static const char *const no[] = { "0", "no", "false", "off", "n" };
	size_t i;

	for (i = 0; i < NELEM(yes); i++)
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
	for (i = 0; i < NELEM(no); i++)
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	return -1;
}

static int
parse_ll(const char *v, long long *out)
{
	char *end;

	errno = 0;
	*out = strtoll(v, &end, 10);
	return errno != 0 || end == v || *end != '\0' ? -1 : 0;
}

/*
 * Stores one value into the structure after checking it against the
 * key's type and range.  Returns NULL or a message that says what is
 * wrong with the value.
 */
static const char *
conf_set(struct conf *c, const struct conf_key *k, const char *v,
    char *msg, size_t msglen)
{
	void *p = (char *)c + k->offset;
	long long ll = 0, mult = 1;
	double d;
	char *end, tmp[64];
	const char *s;
	size_t n;
	int b;

	switch (k->type) {
	case CONF_ENUM:
		for (s = k->choices; ; s += n + 1) {
			n = strcspn(s, "|");
			if (strlen(v) == n && strncasecmp(s, v, n) == 0)
				break;
			if (s[n] == '\0') {
				snprintf(msg, msglen, "%s: expected one of %s, "
				    "not \"%s\"", k->name, k->choices, v);
				return msg;
			}
		}
		free(*(char **)p);
		*(char **)p = xstrdup(v);
		for (end = *(char **)p; *end != '\0'; end++)
			*end = (char)tolower((unsigned char)*end);
		return NULL;
	case CONF_STR:
		free(*(char **)p);
		*(char **)p = xstrdup(v);
		return NULL;
	case CONF_BOOL:
		if (parse_bool(v, &b) == -1) {
			snprintf(msg, msglen, "%s: expected yes or no, not "
			    "\"%s\"", k->name, v);
			return msg;
		}
		*(int *)p = b;
		return NULL;
	case CONF_WORKERS:
		if (strcasecmp(v, "auto") == 0) {
			*(long long *)p = conf_workers_auto();
			return NULL;
		}
		/* FALLTHROUGH */
	case CONF_INT:
		if (parse_ll(v, &ll) == -1) {
			snprintf(msg, msglen, "%s: expected a whole number, "
			    "not \"%s\"", k->name, v);
			return msg;
		}
		break;
	case CONF_SIZE:
		n = strlen(v);
		if (n > 0 && n < sizeof(tmp)) {
			memcpy(tmp, v, n + 1);
			switch (toupper((unsigned char)tmp[n - 1])) {
			case 'K': mult = 1LL << 10; break;
			case 'M': mult = 1LL << 20; break;
			case 'G': mult = 1LL << 30; break;
			}
			if (mult != 1)
				tmp[n - 1] = '\0';
		}
		if (n == 0 || n >= sizeof(tmp) || parse_ll(tmp, &ll) == -1 ||
		    ll < 0 || ll > LLONG_MAX / mult) {
			snprintf(msg, msglen, "%s: expected a size such as "
			    "65536, 512K or 4M, not \"%s\"", k->name, v);
			return msg;
		}
		ll *= mult;
		break;
	case CONF_SECONDS:
		errno = 0;
		d = strtod(v, &end);
		if (errno != 0 || end == v || *end != '\0' || d != d) {
			snprintf(msg, msglen, "%s: expected a number of "
			    "seconds, not \"%s\"", k->name, v);
			return msg;
		}
		if (d < (double)k->min || d > (double)k->max) {
			snprintf(msg, msglen, "%s: %s is out of range "
			    "(%lld to %lld)", k->name, v, k->min, k->max);
			return msg;
		}
		*(double *)p = d;
		return NULL;
	}
	if (ll < k->min || ll > k->max) {
		snprintf(msg, msglen, "%s: %s is out of range (%lld to %lld)",
		    k->name, v, k->min, k->max);
		return msg;
	}
	*(long long *)p = ll;
	return NULL;
}

int
conf_workers_auto(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		n = 4;
	n /= 2;
	return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

struct conf *
conf_new(void)
{
	struct conf *c = xcalloc(1, sizeof(*c));
	char msg[256];
	size_t i;

	c->lines = xcalloc(NELEM(keys), sizeof(int));
	for (i = 0; i < NELEM(keys); i++)
		if (conf_set(c, &keys[i], keys[i].def, msg, sizeof(msg)))
			abort();	/* a default that fails its own check */
	return c;
}

void
conf_free(struct conf *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < NELEM(keys); i++)
		if (keys[i].type == CONF_STR || keys[i].type == CONF_ENUM)
			free(*(char **)((char *)c + keys[i].offset));
	if (c->password != NULL)
		explicit_bzero(c->password, strlen(c->password));
	free(c->password);
	free(c->sqlite_file);
	free(c->venvs_root);
	free(c->socket_path);
	free(c->lines);
	free(c->path);
	free(c);
}

static char *
trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static const struct conf_key *
conf_find(const char *section, const char *name)
{
	size_t i;

	for (i = 0; i < NELEM(keys); i++)
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

static int
section_known(const char *s)
{
	size_t i;

	for (i = 0; i < NELEM(keys); i++)
		if (strcmp(keys[i].section, s) == 0)
			return 1;
	return 0;
}

/* Reads the file; appends one line per error to errs. */
static void
conf_parse_file(struct conf *c, const char *path, FILE *f, struct buf *errs)
{
	char *line = NULL, *s, *eq, *name, *val, msg[512];
	char section[64] = "";
	const struct conf_key *k;
	size_t cap = 0, n;
	ssize_t len;
	int lineno = 0, section_ok = 0, bad_section = 0;

	while ((len = getline(&line, &cap, f)) != -1) {
		lineno++;
		if (memchr(line, '\0', (size_t)len) != NULL) {
			conf_error(errs, path, lineno, "NUL byte in line");
			continue;
		}
		s = trim(line);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			n = strlen(s);
			if (s[n - 1] != ']') {
				conf_error(errs, path, lineno,
				    "section header is missing \"]\"");
				section_ok = 0;
				bad_section = 1;
				continue;
			}
			s[n - 1] = '\0';
			s = trim(s + 1);
			if (!section_known(s) || strlen(s) >= sizeof(section)) {
				conf_error(errs, path, lineno,
				    "unknown section [%s]", s);
				section_ok = 0;
				bad_section = 1;
				continue;
			}
			strcpy(section, s);
			section_ok = 1;
			bad_section = 0;
			continue;
		}
		if ((eq = strchr(s, '=')) == NULL) {
			conf_error(errs, path, lineno,
			    "expected \"key = value\"");
			continue;
		}
		*eq = '\0';
		name = trim(s);
		val = trim(eq + 1);
		n = strlen(val);
		if (n >= 2 && val[0] == '"' && val[n - 1] == '"') {
			val[n - 1] = '\0';
			val++;
		}
		if (!section_ok && bad_section)
			continue;	/* reported at the section header */
		if (section[0] == '\0') {
			conf_error(errs, path, lineno,
			    "key \"%s\" outside of any section", name);
			continue;
		}
		if (!section_ok)
			continue;
		if ((k = conf_find(section, name)) == NULL) {
			conf_error(errs, path, lineno,
			    "unknown key \"%s\" in [%s]", name, section);
			continue;
		}
		if (c->lines[k - keys] > 0) {
			conf_error(errs, path, lineno, "%s: already set on "
			    "line %d", name, c->lines[k - keys]);
			continue;
		}
		if (conf_set(c, k, val, msg, sizeof(msg)) != NULL) {
			conf_error(errs, path, lineno, "%s", msg);
			continue;
		}
		c->lines[k - keys] = lineno;
	}
	free(line);
}

/* Environment variable names are matched without regard to case. */
static const char *
getenv_ci(const char *name)
{
	extern char **environ;
	size_t n = strlen(name);
	char **e;

	for (e = environ; *e != NULL; e++)
		if (strncasecmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

static void
conf_apply_env(struct conf *c, struct buf *errs)
{
	char msg[512], *v;
	const char *ev;
	size_t i;

	for (i = 0; i < NELEM(keys); i++) {
		if (keys[i].env == NULL ||
		    (ev = getenv_ci(keys[i].env)) == NULL)
			continue;
		v = xstrdup(ev);
		if (*trim(v) != '\0') {
			if (conf_set(c, &keys[i], trim(v), msg,
			    sizeof(msg)) != NULL)
				conf_error(errs, "environment", 0, "%s: %s",
				    keys[i].env, msg);
			else
				c->lines[i] = -1;
		}
		free(v);
	}
}

static int
key_line(const struct conf *c, const char *name)
{
	size_t i;

	for (i = 0; i < NELEM(keys); i++)
		if (strcmp(keys[i].name, name) == 0)
			return c->lines[i];
	return 0;
}

/*
 * Reports a problem with a key's final value where the value came from:
 * its file line, the environment, or the default.
 */
static void
conf_error_at(const struct conf *c, struct buf *errs, int line,
    const char *name, const char *msg)
{
	if (line > 0)
		conf_error(errs, c->path, line, "%s: %s", name, msg);
	else if (line < 0)
		conf_error(errs, "environment", 0, "%s: %s", name, msg);
	else
		conf_error(errs, c->path ? c->path : "configuration", 0,
		    "%s: %s", name, msg);
}

static void
conf_key_error(const struct conf *c, struct buf *errs, const char *name,
    const char *msg)
{
	conf_error_at(c, errs, key_line(c, name), name, msg);
}

/* The same for a key of one section, where a name is in several. */
static void
conf_section_key_error(const struct conf *c, struct buf *errs,
    const char *section, const char *name, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	size_t i;
	int line = 0;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	for (i = 0; i < NELEM(keys); i++)
		if (strcmp(keys[i].section, section) == 0 &&
		    strcmp(keys[i].name, name) == 0)
			line = c->lines[i];
	conf_error_at(c, errs, line, name, msg);
}

/*
 * The engine user must be a user of its own: not root, and neither the
 * service user nor its group, or engines would reach the daemon's files
 * after all.  Switching to it needs root at start.
 */
static void
check_engine_user(const struct conf *c, const struct passwd *svc,
    struct buf *errs)
{
	const struct passwd *pw;
	const struct group *gr;
	uid_t svc_uid = svc != NULL ? svc->pw_uid : geteuid();
	gid_t svc_gid = svc != NULL ? svc->pw_gid : getegid();

	if (geteuid() != 0) {
		conf_section_key_error(c, errs, "worker", "engine_user",
		    "needs ade-superd to start as root, to run engines as %s",
		    c->engine_user);
		return;
	}
	if (c->group[0] != '\0' && (gr = getgrnam(c->group)) != NULL)
		svc_gid = gr->gr_gid;
	if ((pw = getpwnam(c->engine_user)) == NULL)
		conf_section_key_error(c, errs, "worker", "engine_user",
		    "no user %s on this host", c->engine_user);
	else if (pw->pw_uid == 0 || pw->pw_gid == 0)
		conf_section_key_error(c, errs, "worker", "engine_user",
		    "%s is root or in group root; engines never run as root",
		    c->engine_user);
	else if (pw->pw_uid == svc_uid || pw->pw_gid == svc_gid)
		conf_section_key_error(c, errs, "worker", "engine_user",
		    "%s shares the service user or its group; engines would "
		    "reach the daemon's files", c->engine_user);
}

/*
 * What a start needs of this host beyond a valid file: a service user
 * that exists and is not root (required when started as root), the data
 * directory and the SQLite database's directory.  "ade-superd -n" and
 * a real start both call this, so that they agree.  Returns 0, or -1
 * with the errors in errs.
 */
int
conf_check_host(const struct conf *c, struct buf *errs)
{
	const struct passwd *pw = NULL;
	struct stat st;
	size_t before = errs->len;
	char *dir, *slash;
	int data_dir_ok = 0;

	if (c->user[0] != '\0') {
		if ((pw = getpwnam(c->user)) == NULL)
			conf_section_key_error(c, errs, "supervisor", "user",
			    "no user %s on this host", c->user);
		else if (pw->pw_uid == 0)
			conf_section_key_error(c, errs, "supervisor", "user",
			    "%s is root; workers never run as root", c->user);
	} else if (geteuid() == 0)
		conf_section_key_error(c, errs, "supervisor", "user",
		    "must name the user to run as when started as root; "
		    "workers never run as root");
	if (c->group[0] != '\0' && getgrnam(c->group) == NULL)
		conf_section_key_error(c, errs, "supervisor", "group",
		    "no group %s on this host", c->group);
	if (c->engine_user[0] != '\0')
		check_engine_user(c, pw, errs);
	if (c->data_dir[0] == '/') {
		if (stat(c->data_dir, &st) == -1)
			conf_section_key_error(c, errs, "worker", "data_dir",
			    "%s: %s", c->data_dir, strerror(errno));
		else if (!S_ISDIR(st.st_mode))
			conf_section_key_error(c, errs, "worker", "data_dir",
			    "%s is not a directory", c->data_dir);
		else
			data_dir_ok = 1;
	}
	/*
	 * An SQLite database whose directory is missing cannot hold the
	 * tables either; "ade-ctl db init" creates both.  (Not worth saying
	 * when the data directory, its default home, is already wrong.)
	 */
	if (data_dir_ok && strcmp(c->db_backend, "sqlite") == 0 &&
	    c->sqlite_file != NULL && c->sqlite_file[0] == '/') {
		dir = xstrdup(c->sqlite_file);
		if ((slash = strrchr(dir, '/')) == dir)
			dir[1] = '\0';
		else
			*slash = '\0';
		if (stat(dir, &st) == -1)
			conf_section_key_error(c, errs, "database",
			    "sqlite_path", "%s: %s (ade-ctl db init creates "
			    "it)", dir, strerror(errno));
		else if (!S_ISDIR(st.st_mode))
			conf_section_key_error(c, errs, "database",
			    "sqlite_path", "%s is not a directory", dir);
		free(dir);
	}
	return errs->len > before ? -1 : 0;
}

/*
 * Reads the password file.  Like the configuration file, it is refused
 * when others can read it.
 */
static void
conf_read_password(struct conf *c, struct buf *errs)
{
	struct buf b;
	struct stat st;
	size_t n;

	if (stat(c->db_password_file, &st) == -1) {
		conf_key_error(c, errs, "password_file", strerror(errno));
		return;
	}
	if (st.st_mode & (S_IROTH | S_IWOTH)) {
		conf_key_error(c, errs, "password_file", "file is readable "
		    "by others; run chmod o-rw on it");
		return;
	}
	buf_init(&b);
	if (read_file(c->db_password_file, &b, 4096) == -1) {
		conf_key_error(c, errs, "password_file", strerror(errno));
		buf_free(&b);
		return;
	}
	n = strcspn(buf_str(&b), "\r\n");
	b.data[n] = '\0';
	free(c->password);
	c->password = xstrdup(b.data);
	explicit_bzero(b.data, b.len);
	buf_free(&b);
}

static void
conf_validate(struct conf *c, struct buf *errs, const struct stat *st)
{
	if (c->lines[conf_find("database", "password") - keys] > 0 &&
	    c->db_password[0] != '\0' && st != NULL &&
	    (st->st_mode & (S_IROTH | S_IWOTH)))
		conf_key_error(c, errs, "password", "the file holds a "
		    "password and is readable by others; run chmod o-rw on "
		    "it or use password_file");
	if (c->db_password_file[0] != '\0')
		conf_read_password(c, errs);
	else if (c->db_password[0] != '\0')
		c->password = xstrdup(c->db_password);
	if (strcmp(c->db_auth_mode, "managed_identity") == 0)
		conf_key_error(c, errs, "auth_mode", "managed_identity is not "
		    "supported: FreeTDS cannot log in with an Entra ID token; "
		    "use auth_mode = sql_password with a SQL login (or a "
		    "contained database user) and its password");
	if (c->db_url_override[0] != '\0' &&
	    strncmp(c->db_url_override, "mssql+pyodbc://", 15) != 0)
		conf_key_error(c, errs, "url_override", "only mssql+pyodbc:// "
		    "URLs are accepted");
	if (c->backoff_max < c->backoff_base)
		conf_key_error(c, errs, "backoff_max_seconds",
		    "must not be smaller than backoff_base_seconds");
	if (c->poll_interval_max < c->poll_interval)
		conf_key_error(c, errs, "poll_interval_max",
		    "must not be smaller than poll_interval");
	if (c->data_dir[0] != '/')
		conf_key_error(c, errs, "data_dir", "must be an absolute path");
	if (c->venvs_dir[0] != '\0' && c->venvs_dir[0] != '/')
		conf_key_error(c, errs, "venvs_dir", "must be an absolute path");
	if (c->python[0] == '\0')
		conf_key_error(c, errs, "python", "must name an interpreter");
	if (c->engine_spec[0] == '\0')
		conf_key_error(c, errs, "engine_spec", "must not be empty");
	{
		char why[160];

		if (sandbox_check(c, why, sizeof(why)) == -1)
			conf_key_error(c, errs, "engine_sandbox", why);
	}
	{
		char *end;
		unsigned long m = strtoul(c->control_socket_mode, &end, 8);

		if (*c->control_socket_mode == '\0' || *end != '\0' ||
		    m > 0777)
			conf_key_error(c, errs, "control_socket_mode",
			    "expected an octal mode such as 0660");
		c->socket_mode = (unsigned)m;
	}
	free(c->socket_path);
	if (c->control_socket[0] != '\0')
		c->socket_path = xstrdup(c->control_socket);
	else
		c->socket_path = xasprintf("%s/run/control.sock", c->data_dir);
	if (strlen(c->socket_path) >= 100)
		conf_key_error(c, errs, "control_socket", "path too long for "
		    "a UNIX socket (at most 99 bytes)");
	free(c->venvs_root);
	c->venvs_root = c->venvs_dir[0] != '\0' ? xstrdup(c->venvs_dir) :
	    xasprintf("%s/venvs", c->data_dir);
	free(c->sqlite_file);
	if (c->db_sqlite_path[0] != '\0')
		c->sqlite_file = xstrdup(c->db_sqlite_path);
	else
		c->sqlite_file = xasprintf("%s/db/ade.sqlite", c->data_dir);
}

/*
 * Loads path (NULL: defaults and environment only), then the environment,
 * then checks the result as a whole.  Returns 0, or -1 with one line per
 * problem in errs.
 */
int
conf_load(struct conf *c, const char *path, struct buf *errs)
{
	struct stat st;
	size_t before = errs->len;
	FILE *f = NULL;

	if (path != NULL) {
		free(c->path);
		c->path = xstrdup(path);
		if ((f = fopen(path, "re")) == NULL) {
			conf_error(errs, path, 0, "%s", strerror(errno));
			return -1;
		}
		if (fstat(fileno(f), &st) == -1) {
			conf_error(errs, path, 0, "%s", strerror(errno));
			fclose(f);
			return -1;
		}
		conf_parse_file(c, path, f, errs);
		fclose(f);
	}
	conf_apply_env(c, errs);
	conf_validate(c, errs, path != NULL ? &st : NULL);
	return errs->len == before ? 0 : -1;
}

/*
 * For a reload: every key that SIGHUP cannot change keeps its old value
 * in the new configuration, and its name is added to changed when the
 * file asked for another value.
 */
void
conf_keep_static(struct conf *nc, const struct conf *oc, struct buf *changed)
{
	size_t i;

	for (i = 0; i < NELEM(keys); i++) {
		void *np = (char *)nc + keys[i].offset;
		const void *op = (const char *)oc + keys[i].offset;
		int same;

		if (keys[i].flags & CONF_RELOAD)
			continue;
		switch (keys[i].type) {
		case CONF_STR:
		case CONF_ENUM:
			same = strcmp(*(char **)np, *(char *const *)op) == 0;
			if (!same) {
				free(*(char **)np);
				*(char **)np = xstrdup(*(char *const *)op);
			}
			break;
		case CONF_BOOL:
			same = *(int *)np == *(const int *)op;
			*(int *)np = *(const int *)op;
			break;
		case CONF_SECONDS:
			same = *(double *)np == *(const double *)op;
			*(double *)np = *(const double *)op;
			break;
		default:
			same = *(long long *)np == *(const long long *)op;
			*(long long *)np = *(const long long *)op;
		}
		if (!same)
			buf_printf(changed, "%s%s", changed->len ? ", " : "",
			    keys[i].name);
	}
	free(nc->password);
	nc->password = oc->password != NULL ? xstrdup(oc->password) : NULL;
	free(nc->sqlite_file);
	nc->sqlite_file = xstrdup(oc->sqlite_file);
	free(nc->venvs_root);
	nc->venvs_root = xstrdup(oc->venvs_root);
	free(nc->socket_path);
	nc->socket_path = xstrdup(oc->socket_path);
	nc->socket_mode = oc->socket_mode;
}

/* Prints the effective configuration, secrets masked. */
void
conf_dump(FILE *out, const struct conf *c)
{
	const char *section = "";
	const void *p;
	size_t i;

	for (i = 0; i < NELEM(keys); i++) {
		p = (const char *)c + keys[i].offset;
		if (strcmp(section, keys[i].section) != 0) {
			section = keys[i].section;
			fprintf(out, "%s[%s]\n", i ? "\n" : "", section);
		}
		fprintf(out, "%s = ", keys[i].name);
		if (keys[i].flags & CONF_SECRET)
			fprintf(out, "%s\n", (*(char *const *)p)[0] ? "********"
			    : "");
		else
			switch (keys[i].type) {
			case CONF_STR:
			case CONF_ENUM:
				fprintf(out, "%s\n", *(char *const *)p);
				break;
			case CONF_BOOL:
				fprintf(out, "%s\n", *(const int *)p ? "yes" :
				    "no");
				break;
			case CONF_SECONDS:
				fprintf(out, "%g\n", *(const double *)p);
				break;
			default:
				fprintf(out, "%lld\n", *(const long long *)p);
			}
	}
}
