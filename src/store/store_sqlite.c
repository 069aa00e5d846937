/*
 * The SQLite backend: the embedded default for a single host, demos and
 * tests.  The database runs in WAL mode so readers never wait for the
 * writer; every write that must be atomic runs in BEGIN IMMEDIATE, which
 * takes the write lock up front, so two workers can never claim the same
 * row.  Timestamps are ISO 8601 UTC text with milliseconds, which sorts
 * in time order, and they come from SQLite's own clock expressions.
 */
#include <sys/inotify.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "conf.h"
#include "log.h"
#include "results.h"
#include "store_impl.h"
#include "util.h"

#define TS		"'%Y-%m-%dT%H:%M:%fZ'"
#define NOW		"strftime(" TS ", 'now')"
#define NOW_PLUS(p)	"strftime(" TS ", 'now', " p ")"
/* A number of seconds (a REAL parameter) as a time modifier. */
#define SECONDS(p)	"printf('%+.3f seconds', " p ")"
/* The retry delay after failed attempt n, as an SQLite time modifier. */
#define BACKOFF_MOD(n)	"'+' || MIN(?2, ?1 * (1 << MIN(MAX(" n ", 0), 30)))" \
			" || ' seconds'"
/* A run whose claim ended without a result (store_impl.h). */
#define LOST_RUN	GIVE_UP_OR_RETRY(NOW, "strftime(" TS ", 'now', "	\
			    BACKOFF_MOD("attempt_count - 1") ")")

#define STMT_CACHE	48

struct sq {
	struct store	 base;
	sqlite3		*db;
	int		 echo;
	int		 may_give_up;	/* nothing held: a stop ends waits */
	int		 busy_ms;	/* waited for the current lock */
	char		*path;		/* of the database file */
	int		 watch_fd;	/* inotify, for sq_wait; -1: none yet */
	int		 watch_failed;
	struct {
		const char	*sql;
		sqlite3_stmt	*stmt;
	}		 cache[STMT_CACHE];
};

static const struct store_ops sqlite_ops;

/* How long a statement waits for another connection's lock. */
#define BUSY_MS	30000
#define QUIT_BUSY_MS	3000

static const char schema_sql[] =
"CREATE TABLE IF NOT EXISTS workspaces ("
"  id TEXT PRIMARY KEY,"
"  name VARCHAR(255) NOT NULL,"
"  slug VARCHAR(100) NOT NULL UNIQUE,"
"  settings TEXT NOT NULL DEFAULT '{}',"
"  created_at TEXT NOT NULL DEFAULT (" NOW "),"
"  updated_at TEXT NOT NULL DEFAULT (" NOW "));"
"CREATE TABLE IF NOT EXISTS configurations ("
"  id TEXT PRIMARY KEY,"
"  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
"  display_name VARCHAR(255) NOT NULL,"
"  status VARCHAR(20) NOT NULL DEFAULT 'draft'"
"    CHECK (status IN ('draft', 'active', 'archived')),"
"  content_digest VARCHAR(80),"
"  last_used_at TEXT,"
"  activated_at TEXT,"
"  created_at TEXT NOT NULL DEFAULT (" NOW "),"
"  updated_at TEXT NOT NULL DEFAULT (" NOW "));"
"CREATE INDEX IF NOT EXISTS ix_configurations_workspace_status"
"  ON configurations (workspace_id, status);"
"CREATE UNIQUE INDEX IF NOT EXISTS ux_configurations_active_per_workspace"
"  ON configurations (workspace_id) WHERE status = 'active';"
"CREATE TABLE IF NOT EXISTS documents ("
"  id TEXT PRIMARY KEY,"
"  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
"  original_filename VARCHAR(255) NOT NULL,"
"  content_type VARCHAR(255),"
"  byte_size INTEGER NOT NULL,"
"  version INTEGER NOT NULL DEFAULT 1,"
"  sha256 VARCHAR(64) NOT NULL,"
"  stored_uri VARCHAR(512) NOT NULL,"
"  attributes TEXT NOT NULL DEFAULT '{}',"
"  uploaded_by_user_id TEXT,"
"  assignee_user_id TEXT,"
"  source VARCHAR(50) NOT NULL DEFAULT 'manual_upload'"
"    CHECK (source IN ('manual_upload')),"
"  expires_at TEXT NOT NULL,"
"  last_run_id TEXT,"
"  comment_count INTEGER NOT NULL DEFAULT 0,"
"  deleted_at TEXT,"
"  deleted_by_user_id TEXT,"
"  created_at TEXT NOT NULL DEFAULT (" NOW "),"
"  updated_at TEXT NOT NULL DEFAULT (" NOW "));"
"CREATE TABLE IF NOT EXISTS document_events ("
"  cursor INTEGER PRIMARY KEY AUTOINCREMENT,"
"  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
"  document_id TEXT NOT NULL REFERENCES documents(id),"
"  event_type VARCHAR(40) NOT NULL"
"    CHECK (event_type IN ('document.changed', 'document.deleted')),"
"  document_version INTEGER NOT NULL,"
"  occurred_at TEXT NOT NULL DEFAULT (" NOW "));"
"CREATE INDEX IF NOT EXISTS ix_document_events_workspace_cursor"
"  ON document_events (workspace_id, cursor);"
"CREATE INDEX IF NOT EXISTS ix_document_events_workspace_document"
"  ON document_events (workspace_id, document_id);"
"CREATE INDEX IF NOT EXISTS ix_document_events_workspace_occurred"
"  ON document_events (workspace_id, occurred_at);"
"CREATE TABLE IF NOT EXISTS runs ("
"  id TEXT PRIMARY KEY,"
"  configuration_id TEXT NOT NULL REFERENCES configurations(id),"
"  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
"  input_document_id TEXT NOT NULL REFERENCES documents(id),"
"  input_sheet_names TEXT,"
"  output_path VARCHAR(512),"
"  engine_spec VARCHAR(255) NOT NULL"
"    DEFAULT 'ade-engine @ git+https://github.com/clac-ca/ade-engine@main',"
"  deps_digest VARCHAR(128) NOT NULL DEFAULT 'sha256:"
    "2e1cfa82b035c26cbbbdae632cea070514eb8b773f616aaeaf668e2f0be8f10d',"
"  status VARCHAR(20) NOT NULL DEFAULT 'queued'"
"    CHECK (status IN ('queued', 'running', 'succeeded', 'failed',"
"                      'cancelled')),"
"  exit_code INTEGER,"
"  submitted_by_user_id TEXT,"
"  created_at TEXT NOT NULL DEFAULT (" NOW "),"
"  started_at TEXT,"
"  completed_at TEXT,"
"  error_message TEXT,"
"  available_at TEXT NOT NULL DEFAULT (" NOW "),"
"  run_options TEXT,"
"  attempt_count INTEGER NOT NULL DEFAULT 0,"
"  max_attempts INTEGER NOT NULL DEFAULT 3,"
"  claimed_by VARCHAR(255),"
"  claim_expires_at TEXT);"
"CREATE INDEX IF NOT EXISTS ix_runs_configuration ON runs (configuration_id);"
"CREATE INDEX IF NOT EXISTS ix_runs_workspace ON runs (workspace_id);"
"CREATE INDEX IF NOT EXISTS ix_runs_status ON runs (status);"
"CREATE INDEX IF NOT EXISTS ix_runs_input_document"
"  ON runs (input_document_id);"
"CREATE INDEX IF NOT EXISTS ix_runs_workspace_input_finished"
"  ON runs (workspace_id, input_document_id, completed_at, started_at);"
"CREATE INDEX IF NOT EXISTS ix_runs_workspace_created"
"  ON runs (workspace_id, created_at);"
"CREATE INDEX IF NOT EXISTS ix_runs_claim"
"  ON runs (status, available_at, created_at);"
"CREATE INDEX IF NOT EXISTS ix_runs_claim_expires"
"  ON runs (status, claim_expires_at);"
"CREATE INDEX IF NOT EXISTS ix_runs_status_completed"
"  ON runs (status, completed_at);"
"CREATE UNIQUE INDEX IF NOT EXISTS uq_runs_active_job"
"  ON runs (workspace_id, input_document_id, configuration_id)"
"  WHERE status IN ('queued', 'running');"
"CREATE TABLE IF NOT EXISTS environments ("
"  id TEXT PRIMARY KEY,"
"  workspace_id TEXT NOT NULL REFERENCES workspaces(id),"
"  configuration_id TEXT NOT NULL REFERENCES configurations(id),"
"  engine_spec VARCHAR(255) NOT NULL,"
"  deps_digest VARCHAR(128) NOT NULL,"
"  status VARCHAR(20) NOT NULL DEFAULT 'queued'"
"    CHECK (status IN ('queued', 'building', 'ready', 'failed')),"
"  error_message TEXT,"
"  claimed_by VARCHAR(255),"
"  claim_expires_at TEXT,"
"  created_at TEXT NOT NULL,"
"  updated_at TEXT NOT NULL,"
"  last_used_at TEXT,"
"  python_version VARCHAR(50),"
"  python_interpreter VARCHAR(512),"
"  engine_version VARCHAR(50));"
"CREATE UNIQUE INDEX IF NOT EXISTS ux_environments_key"
"  ON environments (workspace_id, configuration_id, engine_spec,"
"                   deps_digest);"
"CREATE INDEX IF NOT EXISTS ix_environments_workspace"
"  ON environments (workspace_id);"
"CREATE INDEX IF NOT EXISTS ix_environments_configuration"
"  ON environments (configuration_id);"
"CREATE INDEX IF NOT EXISTS ix_environments_claim"
"  ON environments (status, created_at);"
"CREATE INDEX IF NOT EXISTS ix_environments_claim_expires"
"  ON environments (status, claim_expires_at);"
"CREATE INDEX IF NOT EXISTS ix_environments_status_last_used"
"  ON environments (status, last_used_at);"
"CREATE INDEX IF NOT EXISTS ix_environments_status_updated"
"  ON environments (status, updated_at);"
"CREATE TABLE IF NOT EXISTS run_metrics ("
"  run_id TEXT PRIMARY KEY REFERENCES runs(id),"
"  evaluation_outcome VARCHAR(20),"
"  evaluation_findings_total INTEGER,"
"  evaluation_findings_info INTEGER,"
"  evaluation_findings_warning INTEGER,"
"  evaluation_findings_error INTEGER,"
"  validation_issues_total INTEGER,"
"  validation_issues_info INTEGER,"
"  validation_issues_warning INTEGER,"
"  validation_issues_error INTEGER,"
"  validation_max_severity VARCHAR(10),"
"  workbook_count INTEGER,"
"  sheet_count INTEGER,"
"  table_count INTEGER,"
"  row_count_total INTEGER,"
"  row_count_empty INTEGER,"
"  column_count_total INTEGER,"
"  column_count_empty INTEGER,"
"  column_count_mapped INTEGER,"
"  column_count_unmapped INTEGER,"
"  field_count_expected INTEGER,"
"  field_count_detected INTEGER,"
"  field_count_not_detected INTEGER,"
"  cell_count_total INTEGER,"
"  cell_count_non_empty INTEGER);"
"CREATE TABLE IF NOT EXISTS run_fields ("
"  run_id TEXT NOT NULL REFERENCES runs(id),"
"  field VARCHAR(128) NOT NULL,"
"  label VARCHAR(255),"
"  detected BOOLEAN NOT NULL,"
"  best_mapping_score FLOAT,"
"  valid_cells INTEGER NOT NULL DEFAULT 0,"
"  occurrences_tables INTEGER NOT NULL,"
"  occurrences_columns INTEGER NOT NULL,"
"  PRIMARY KEY (run_id, field));"
"CREATE INDEX IF NOT EXISTS ix_run_fields_run ON run_fields (run_id);"
"CREATE INDEX IF NOT EXISTS ix_run_fields_field ON run_fields (field);"
"CREATE TABLE IF NOT EXISTS run_table_columns ("
"  run_id TEXT NOT NULL REFERENCES runs(id),"
"  workbook_index INTEGER NOT NULL,"
"  workbook_name VARCHAR(255) NOT NULL,"
"  sheet_index INTEGER NOT NULL,"
"  sheet_name VARCHAR(255) NOT NULL,"
"  table_index INTEGER NOT NULL,"
"  column_index INTEGER NOT NULL,"
"  header_raw TEXT,"
"  header_normalized TEXT,"
"  non_empty_cells INTEGER NOT NULL,"
"  valid_cells INTEGER NOT NULL DEFAULT 0,"
"  mapping_status VARCHAR(32) NOT NULL,"
"  mapped_field VARCHAR(128),"
"  mapping_score FLOAT,"
"  mapping_method VARCHAR(32),"
"  unmapped_reason VARCHAR(64),"
"  PRIMARY KEY (run_id, workbook_index, sheet_index, table_index,"
"               column_index));"
"CREATE INDEX IF NOT EXISTS ix_run_table_columns_run"
"  ON run_table_columns (run_id);"
"CREATE INDEX IF NOT EXISTS ix_run_table_columns_run_sheet"
"  ON run_table_columns (run_id, sheet_name);"
"CREATE INDEX IF NOT EXISTS ix_run_table_columns_run_mapped_field"
"  ON run_table_columns (run_id, mapped_field);"
"CREATE TABLE IF NOT EXISTS worker_leases ("
"  name VARCHAR(64) PRIMARY KEY,"
"  holder VARCHAR(255) NOT NULL,"
"  expires_at TEXT NOT NULL);";

static int
sq_fail(struct sq *s, const char *what)
{
	int code = sqlite3_errcode(s->db) & 0xff;

	snprintf(s->base.err, sizeof(s->base.err), "sqlite: %s: %s", what,
	    sqlite3_errmsg(s->db));
	s->base.fail = code == SQLITE_CONSTRAINT ? STORE_FAIL_CONSTRAINT :
	    code == SQLITE_BUSY || code == SQLITE_LOCKED ? STORE_FAIL_RETRY :
	    STORE_FAIL_OTHER;
	return -1;
}

/* Prepared statements are kept for the life of the connection. */
static sqlite3_stmt *
sq_prepare(struct sq *s, const char *sql)
{
	sqlite3_stmt *st;
	size_t i;

	for (i = 0; i < STMT_CACHE && s->cache[i].sql != NULL; i++)
		if (s->cache[i].sql == sql) {
			sqlite3_reset(s->cache[i].stmt);
			sqlite3_clear_bindings(s->cache[i].stmt);
			return s->cache[i].stmt;
		}
	if (sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
	    NULL) != SQLITE_OK) {
		sq_fail(s, "prepare");
		return NULL;
	}
	if (i < STMT_CACHE) {
		s->cache[i].sql = sql;
		s->cache[i].stmt = st;
	}
	return st;
}

static void
sq_done(struct sq *s, sqlite3_stmt *st)
{
	size_t i;

	for (i = 0; i < STMT_CACHE && s->cache[i].sql != NULL; i++)
		if (s->cache[i].stmt == st) {
			sqlite3_reset(st);
			return;
		}
	sqlite3_finalize(st);
}

/* Binds a JSON scalar: a string, a number, a boolean (0 or 1) or null. */
static int
bind_json(sqlite3_stmt *st, int i, json_t *v)
{
	if (json_is_string(v))
		return sqlite3_bind_text(st, i, json_string_value(v), -1,
		    SQLITE_TRANSIENT);
	if (json_is_integer(v))
		return sqlite3_bind_int64(st, i, json_integer_value(v));
	if (json_is_real(v))
		return sqlite3_bind_double(st, i, json_real_value(v));
	if (json_is_boolean(v))
		return sqlite3_bind_int(st, i, json_is_true(v));
	return sqlite3_bind_null(st, i);
}

/*
 * Prepares sql and binds the arguments described by fmt: s a string
 * (NULL binds NULL), i a long long, d a double, v a JSON scalar.
 */
static sqlite3_stmt *
sq_queryv(struct sq *s, const char *sql, const char *fmt, va_list ap)
{
	sqlite3_stmt *st;
	const char *str;
	int i, rc = SQLITE_OK;

	if (s->echo)
		log_debug("sql: %s", sql);
	if ((st = sq_prepare(s, sql)) == NULL)
		return NULL;
	for (i = 1; fmt[i - 1] != '\0' && rc == SQLITE_OK; i++) {
		switch (fmt[i - 1]) {
		case 's':
			str = va_arg(ap, const char *);
			rc = str == NULL ? sqlite3_bind_null(st, i) :
			    sqlite3_bind_text(st, i, str, -1, SQLITE_TRANSIENT);
			break;
		case 'i':
			rc = sqlite3_bind_int64(st, i, va_arg(ap, long long));
			break;
		case 'd':
			rc = sqlite3_bind_double(st, i, va_arg(ap, double));
			break;
		case 'v':
			rc = bind_json(st, i, va_arg(ap, json_t *));
			break;
		}
	}
	if (rc != SQLITE_OK) {
		sq_fail(s, "bind");
		sq_done(s, st);
		return NULL;
	}
	return st;
}

static sqlite3_stmt *
sq_query(struct sq *s, const char *sql, const char *fmt, ...)
{
	sqlite3_stmt *st;
	va_list ap;

	va_start(ap, fmt);
	st = sq_queryv(s, sql, fmt, ap);
	va_end(ap);
	return st;
}

/* Runs a statement that returns no rows; returns the rows changed. */
static int
sq_exec_stmt(struct sq *s, sqlite3_stmt *st)
{
	int rc;

	if (st == NULL)
		return -1;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		;
	sq_done(s, st);
	if (rc != SQLITE_DONE)
		return sq_fail(s, "step");
	return sqlite3_changes(s->db);
}

static int
sq_plain(struct sq *s, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		snprintf(s->base.err, sizeof(s->base.err), "sqlite: %s",
		    msg != NULL ? msg : sqlite3_errmsg(s->db));
		sqlite3_free(msg);
		return -1;
	}
	return 0;
}

static int
sq_begin(struct sq *s)
{
	return sq_plain(s, "BEGIN IMMEDIATE");
}

static int
sq_commit(struct sq *s)
{
	if (sq_plain(s, "COMMIT") == -1) {
		sq_plain(s, "ROLLBACK");
		return -1;
	}
	return 0;
}

static int
sq_rollback(struct sq *s, int rc)
{
	char keep[sizeof(s->base.err)];

	memcpy(keep, s->base.err, sizeof(keep));
	if (sqlite3_get_autocommit(s->db) == 0)
		sq_plain(s, "ROLLBACK");
	memcpy(s->base.err, keep, sizeof(keep));
	return rc;
}

static void
col_copy(sqlite3_stmt *st, int i, char *out, size_t len)
{
	const unsigned char *t = sqlite3_column_text(st, i);

	snprintf(out, len, "%s", t != NULL ? (const char *)t : "");
}

/* A lease or delay as an SQLite time modifier: "+900.000 seconds". */
static void
seconds_mod(char *out, size_t len, double secs)
{
	snprintf(out, len, "%+.3f seconds", secs);
}

/* The current row as a JSON object keyed by column name. */
static json_t *
row_json(sqlite3_stmt *st)
{
	json_t *o = json_object(), *v;
	int i, n = sqlite3_column_count(st);

	for (i = 0; i < n; i++) {
		switch (sqlite3_column_type(st, i)) {
		case SQLITE_INTEGER:
			v = json_integer(sqlite3_column_int64(st, i));
			break;
		case SQLITE_FLOAT:
			v = json_real(sqlite3_column_double(st, i));
			break;
		case SQLITE_NULL:
			v = json_null();
			break;
		default: {
			struct buf b;

			buf_init(&b);
			utf8_repair((const char *)sqlite3_column_text(st, i),
			    (size_t)sqlite3_column_bytes(st, i), &b);
			v = json_string(buf_str(&b));
			buf_free(&b);
		}
		}
		json_object_set_new(o, sqlite3_column_name(st, i), v);
	}
	return o;
}

static json_t *
rows_json(struct sq *s, sqlite3_stmt *st)
{
	json_t *a = json_array();
	int rc;

	if (st == NULL) {
		json_decref(a);
		return NULL;
	}
	while ((rc = sqlite3_step(st)) == SQLITE_ROW)
		json_array_append_new(a, row_json(st));
	sq_done(s, st);
	if (rc != SQLITE_DONE) {
		sq_fail(s, "step");
		json_decref(a);
		return NULL;
	}
	return a;
}

/* A claim's answer: 1 with its row, 0 without one, -1 on error. */
static int
first_row(struct sq *s, sqlite3_stmt *q, json_t **row)
{
	json_t *a = rows_json(s, q);

	if (a == NULL)
		return -1;
	if (json_array_size(a) > 0)
		*row = json_incref(json_array_get(a, 0));
	json_decref(a);
	return *row != NULL;
}

/*
 * Whether an SQLite error can only be mended by someone changing files or
 * settings: not a database, read-only, no permission, cannot be opened
 * for a reason other than running out of descriptors or memory.
 */
static int
sq_permanent(sqlite3 *db, int rc)
{
	int e = db != NULL ? sqlite3_system_errno(db) : 0;

	switch (rc & 0xff) {
	case SQLITE_NOTADB:
	case SQLITE_CORRUPT:
	case SQLITE_READONLY:
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return 1;
	case SQLITE_CANTOPEN:
		return e != EMFILE && e != ENFILE && e != ENOMEM;
	}
	return 0;
}

/*
 * Fails the open: the message, and whether it is a configuration error
 * that a restart cannot mend.
 */
static struct store *
sq_open_fail(struct sq *s, struct buf *err, int permanent, const char *msg)
{
	buf_addstr(err, msg);
	if (permanent)
		store_open_permanent();
	if (s != NULL) {
		sqlite3_close(s->db);
		free(s);
	}
	return NULL;
}

/*
 * Waits for another connection's lock as sqlite3_busy_timeout would, for
 * up to BUSY_MS.  While the worker only looks for work, a stop (TERM or
 * QUIT) ends the wait at once: it must not wait half a minute behind a
 * lock.  With a claim in hand the wait goes on, since what follows
 * records a result or releases the claim, but after a QUIT for no longer
 * than QUIT_BUSY_MS, well within the supervisor's grace before it kills.
 */
static int
sq_busy(void *arg, int count)
{
	static const int steps[] = { 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50 };
	struct sq *s = arg;
	int ms;

	if (count == 0)
		s->busy_ms = 0;
	if ((store_stopping() && (s->may_give_up || s->base.may_stop)) ||
	    s->busy_ms >= BUSY_MS ||
	    (store_quitting() && s->busy_ms >= QUIT_BUSY_MS))
		return 0;
	ms = (size_t)count < NELEM(steps) ? steps[count] : 100;
	sqlite3_sleep(ms);
	s->busy_ms += ms;
	return 1;
}

struct store *
store_sqlite_open(const struct conf *c, struct buf *err, int create)
{
	struct sq *s;
	char *dir, msg[1024];
	int rc;

	if (!create && access(c->sqlite_file, F_OK) == -1) {
		rc = errno;
		snprintf(msg, sizeof(msg), "sqlite: no database at %s (%s); "
		    "\"ade-ctl db init\" creates it", c->sqlite_file,
		    strerror(rc));
		return sq_open_fail(NULL, err, 1, msg);
	}
	dir = xstrdup(c->sqlite_file);
	{
		char *d = xstrdup(dirname(dir));

		free(dir);
		dir = d;
	}
	if (create && mkdir_p(dir, 0750) == -1) {
		rc = errno;
		free(dir);
		snprintf(msg, sizeof(msg), "sqlite: cannot create the "
		    "directory of %s: %s", c->sqlite_file, strerror(rc));
		return sq_open_fail(NULL, err, rc == EACCES || rc == EROFS ||
		    rc == ENOTDIR || rc == EEXIST || rc == EPERM, msg);
	}
	/* WAL mode creates the -wal and -shm files next to the database. */
	if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) == -1) {
		snprintf(msg, sizeof(msg), "sqlite: the directory %s must be "
		    "writable (the database's -wal and -shm files are made "
		    "there): %s", dir, strerror(errno));
		free(dir);
		return sq_open_fail(NULL, err, 1, msg);
	}
	free(dir);
	s = xcalloc(1, sizeof(*s));
	s->base.ops = &sqlite_ops;
	s->echo = c->db_echo;
	s->path = xstrdup(c->sqlite_file);
	s->watch_fd = -1;
	if ((rc = sqlite3_open_v2(c->sqlite_file, &s->db,
	    SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) |
	    SQLITE_OPEN_NOMUTEX,
	    NULL)) != SQLITE_OK) {
		snprintf(msg, sizeof(msg), "sqlite: cannot open %s: %s",
		    c->sqlite_file, s->db ? sqlite3_errmsg(s->db) :
		    "out of memory");
		return sq_open_fail(s, err, sq_permanent(s->db, rc), msg);
	}
	sqlite3_busy_handler(s->db, sq_busy, s);
	s->base.max_params = (size_t)sqlite3_limit(s->db,
	    SQLITE_LIMIT_VARIABLE_NUMBER, -1);
	if (sq_plain(s, "PRAGMA journal_mode = WAL;"
	    "PRAGMA synchronous = NORMAL;"
	    "PRAGMA foreign_keys = ON;") == -1) {
		snprintf(msg, sizeof(msg), "%s (%s)", s->base.err,
		    c->sqlite_file);
		return sq_open_fail(s, err, sq_permanent(s->db,
		    sqlite3_extended_errcode(s->db)), msg);
	}
	/* A file the worker may not write is opened read-only, silently. */
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		snprintf(msg, sizeof(msg), "sqlite: %s is read-only for this "
		    "user; the worker must be able to write it",
		    c->sqlite_file);
		return sq_open_fail(s, err, 1, msg);
	}
	return &s->base;
}

static void
sq_close(struct store *st)
{
	struct sq *s = (struct sq *)st;
	size_t i;

	for (i = 0; i < STMT_CACHE && s->cache[i].sql != NULL; i++)
		sqlite3_finalize(s->cache[i].stmt);
	sqlite3_close(s->db);
	if (s->watch_fd != -1)
		close(s->watch_fd);
	free(s->path);
	free(s);
}

/*
 * Watches the database's directory, where every commit writes the -wal
 * file (the database itself in another journal mode).  0, or -1 when no
 * watch can be had.
 */
static int
sq_watch(struct sq *s)
{
	char *copy;

	if (s->watch_fd != -1)
		return 0;
	if (s->watch_failed)
		return -1;
	copy = xstrdup(s->path);
	if ((s->watch_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK)) == -1 ||
	    inotify_add_watch(s->watch_fd, dirname(copy), IN_MODIFY |
	    IN_CREATE | IN_MOVED_TO) == -1) {
		log_warn("sqlite: cannot watch the directory of %s; idle "
		    "workers poll instead", s->path);
		if (s->watch_fd != -1)
			close(s->watch_fd);
		s->watch_fd = -1;
		s->watch_failed = 1;
	}
	free(copy);
	return s->watch_fd == -1 ? -1 : 0;
}

/* Whether the events read name the database or its journal. */
static int
sq_watched_changed(struct sq *s)
{
	char events[4096] __attribute__((aligned(__alignof__(struct
	    inotify_event))));
	const struct inotify_event *ev;
	const char *base = strrchr(s->path, '/');
	size_t blen;
	ssize_t n;
	char *p;
	int changed = 0;

	base = base != NULL ? base + 1 : s->path;
	blen = strlen(base);
	while ((n = read(s->watch_fd, events, sizeof(events))) > 0)
		for (p = events; p < events + n; p += sizeof(*ev) + ev->len) {
			ev = (const struct inotify_event *)p;
			/* The -shm file changes through a mapping: unseen. */
			if (ev->len > 0 && strncmp(ev->name, base, blen) == 0 &&
			    (ev->name[blen] == '\0' ||
			    strcmp(ev->name + blen, "-wal") == 0 ||
			    strcmp(ev->name + blen, "-journal") == 0))
				changed = 1;
		}
	return changed;
}

/*
 * The idle wait: SQLite notifies nobody, but another connection's commit
 * changes the files that inotify watches.  Returns 1 when they changed
 * (perhaps new work), 0 at the timeout or when asked to stop.  A commit
 * made since the last wait ends this one at once, so none is missed.
 */
static int
sq_wait(struct store *st, double timeout)
{
	struct sq *s = (struct sq *)st;
	struct pollfd pfd[2];
	double end = now_mono() + timeout, left;

	/* A commit before the watch began would go unseen: look again. */
	if (s->watch_fd == -1)
		return sq_watch(s) == 0 ? 1 : (store_pause(st, timeout), 0);
	while ((left = end - now_mono()) > 0) {
		pfd[0].fd = s->watch_fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = st->wake_fd;
		pfd[1].events = POLLIN;
		pfd[0].revents = pfd[1].revents = 0;
		if (poll(pfd, 2, (int)(left * 1000) + 1) <= 0 ||
		    pfd[1].revents != 0)
			return 0;	/* timeout, a signal or a stop */
		if (sq_watched_changed(s))
			return 1;
	}
	return 0;
}

static int
sq_init_schema(struct store *st)
{
	struct sq *s = (struct sq *)st;

	if (sq_begin(s) == -1 || sq_plain(s, schema_sql) == -1)
		return sq_rollback(s, -1);
	return sq_commit(s);
}

static int
sq_table_columns(struct store *st, const char *table, struct buf *out)
{
	static const char sql[] = "SELECT name FROM pragma_table_info(?1)";
	struct sq *s = (struct sq *)st;
	sqlite3_stmt *q;
	int rc, n = 0;

	if ((q = sq_query(s, sql, "s", table)) == NULL)
		return -1;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW)
		buf_printf(out, "%s%s", n++ > 0 ? " " : "",
		    (const char *)sqlite3_column_text(q, 0));
	if (rc != SQLITE_DONE)
		n = sq_fail(s, "schema check");
	sq_done(s, q);
	return n < 0 ? -1 : n > 0;
}

static int
claim_environment(struct store *st, const char *token, double lease,
    json_t **row)
{
	static const char sql[] =
	    "UPDATE environments SET status = 'building', claimed_by = ?1,"
	    "  claim_expires_at = " NOW_PLUS("?2") ", error_message = NULL,"
	    "  updated_at = " NOW
	    " WHERE id = (SELECT id FROM environments WHERE status = 'queued'"
	    "  ORDER BY created_at LIMIT 1) AND status = 'queued'"
	    " RETURNING " CLAIMED_ENVIRONMENT;
	struct sq *s = (struct sq *)st;
	char mod[64];
	int got;

	seconds_mod(mod, sizeof(mod), lease);
	if (sq_begin(s) == -1)
		return -1;
	if ((got = first_row(s, sq_query(s, sql, "ss", token, mod), row)) ==
	    -1)
		return sq_rollback(s, -1);
	return sq_commit(s) == -1 ? -1 : got;
}

/*
 * Claims the oldest due run whose environment is ready, in the
 * transaction the caller began.  The outer WHERE repeats the state
 * check, so the statement is safe on its own; the transaction adds the
 * lookup of the environment id.  1 with the row, 0, or -1 (the caller
 * rolls back).
 */
static int
claim_run_in(struct sq *s, const char *token, double lease, json_t **row)
{
	static const char sql[] =
	    "UPDATE runs SET status = 'running', claimed_by = ?1,"
	    "  claim_expires_at = " NOW_PLUS("?2") ","
	    "  started_at = COALESCE(started_at, " NOW "),"
	    "  attempt_count = attempt_count + 1, error_message = NULL,"
	    "  exit_code = NULL, completed_at = NULL"
	    " WHERE id = (SELECT r.id FROM runs r JOIN environments e ON "
	    ENV_KEY("e", "r")
	    "  WHERE r.status = 'queued' AND r.available_at <= " NOW
	    "  AND r.attempt_count < r.max_attempts AND e.status = 'ready'"
	    "  ORDER BY r.available_at, r.created_at LIMIT 1)"
	    " AND status = 'queued' AND attempt_count < max_attempts"
	    " RETURNING id, workspace_id, configuration_id, input_document_id,"
	    "  engine_spec, deps_digest, started_at, attempt_count,"
	    "  max_attempts, run_options, input_sheet_names,"
	    "  (julianday('now') - julianday(available_at)) * 86400000.0"
	    "  AS waited_ms";
	static const char env[] =
	    "SELECT e.id AS env_id, e.python_interpreter AS env_python"
	    " FROM runs r JOIN environments e ON " ENV_KEY("e", "r")
	    " WHERE r.id = ?1";
	json_t *e = NULL;
	char mod[64];
	int got;

	seconds_mod(mod, sizeof(mod), lease);
	if ((got = first_row(s, sq_query(s, sql, "ss", token, mod), row)) ==
	    -1)
		return -1;
	if (got && first_row(s, sq_query(s, env, "v",
	    json_object_get(*row, "id")), &e) != 1) {
		if (e == NULL)
			sq_fail(s, "claim run: environment");
		json_decref(e);
		json_decref(*row);
		*row = NULL;
		return -1;
	}
	if (got)
		json_object_update(*row, e);
	json_decref(e);
	return got;
}

static int
claim_run(struct store *st, const char *token, double lease,
    json_t **row)
{
	struct sq *s = (struct sq *)st;
	int got;

	if (sq_begin(s) == -1)
		return -1;
	if ((got = claim_run_in(s, token, lease, row)) == -1)
		return sq_rollback(s, -1);
	if (sq_commit(s) == -1) {
		json_decref(*row);
		*row = NULL;
		return -1;
	}
	return got;
}

/*
 * Runs one statement of a transaction with its values (store_impl.h);
 * a statement put together for this one call is not kept prepared.
 * Returns the rows changed, or -1.
 */
static int
sq_stmt(struct sq *s, const struct store_stmt *t)
{
	sqlite3_stmt *q;
	size_t i;
	int rc = SQLITE_OK;

	if (s->echo)
		log_debug("sql: %s", t->sql);
	if (t->owned) {
		if (sqlite3_prepare_v2(s->db, t->sql, -1, &q, NULL) !=
		    SQLITE_OK)
			return sq_fail(s, "prepare");
	} else if ((q = sq_prepare(s, t->sql)) == NULL)
		return -1;
	for (i = 0; i < json_array_size(t->values) && rc == SQLITE_OK; i++)
		rc = bind_json(q, (int)i + 1, json_array_get(t->values, i));
	if (rc != SQLITE_OK) {
		sq_fail(s, "bind");
		sq_done(s, q);
		return -1;
	}
	return sq_exec_stmt(s, q);
}

/*
 * The statements in one transaction, the first one guarding the others
 * (store_impl.h).
 */
static int
sq_guarded(struct store *st, const char *what, const struct store_stmt *t,
    size_t n, long *last)
{
	struct sq *s = (struct sq *)st;
	size_t i;
	int rc;

	(void)what;
	if (sq_begin(s) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		if ((rc = sq_stmt(s, &t[i])) == -1 || (i == 0 && rc == 0))
			return sq_rollback(s, rc);
		if (i == n - 1 && last != NULL)
			*last = rc;
	}
	return sq_commit(s) == -1 ? -1 : 1;
}

/*
 * A success and the claim of the next run as one transaction
 * (store_impl.h, guarded_claim): one commit where there were two.
 */
static int
sq_guarded_claim(struct store *st, const char *what,
    const struct store_stmt *t, size_t n, const char *token, double lease,
    json_t **row, int *looked)
{
	struct sq *s = (struct sq *)st;
	size_t i;
	int rc;

	(void)what;
	*row = NULL;
	*looked = 0;
	if (sq_begin(s) == -1)
		return -1;
	for (i = 0; i < n; i++)
		if ((rc = sq_stmt(s, &t[i])) == -1 || (i == 0 && rc == 0))
			return sq_rollback(s, rc);
	/* Unlike a claim alone, it holds a success: no stop cuts it. */
	rc = claim_run_in(s, token, lease, row);
	if (rc == -1 || sq_commit(s) == -1) {
		if (rc == -1)
			sq_rollback(s, -1);
		json_decref(*row);
		*row = NULL;
		return -1;
	}
	*looked = 1;
	return 1;
}

#define GC_ENV_COND							\
	" e.status IN ('ready', 'failed')"				\
	" AND COALESCE(e.last_used_at, e.updated_at) <"			\
	"  strftime(" TS ", 'now', printf('-%d days', ?1))"		\
	" AND (e.claim_expires_at IS NULL OR e.claim_expires_at <= " NOW ")" \
	" AND NOT EXISTS (SELECT 1 FROM configurations c"		\
	"  WHERE c.id = e.configuration_id AND c.status = 'active')"	\
	" AND NOT EXISTS (SELECT 1 FROM runs r WHERE " ENV_KEY("e", "r") \
	"  AND r.status IN ('queued', 'running'))"

static int
lookup_one(struct sq *s, sqlite3_stmt *q, char *out)
{
	int rc;

	if (q == NULL)
		return -1;
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		col_copy(q, 0, out, 64);
	sq_done(s, q);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return sq_fail(s, "lookup");
	return rc == SQLITE_ROW;
}

/*
 * Finds or creates the workspace (by slug) and the configuration (by
 * display name within it).  The first configuration of a workspace is
 * made its active one.
 */
static int
sq_register(struct store *st, const char *ws, const char *cfg, char *ws_id,
    char *cfg_id)
{
	static const char find_ws[] =
	    "SELECT id FROM workspaces WHERE slug = ?1 OR id = lower(?2)";
	static const char add_ws[] =
	    "INSERT INTO workspaces (id, name, slug) VALUES (?1, ?2, ?3)";
	static const char find_cfg[] =
	    "SELECT id FROM configurations WHERE workspace_id = ?1 AND"
	    " (display_name = ?2 OR id = lower(?2))";
	static const char add_cfg[] =
	    "INSERT INTO configurations (id, workspace_id, display_name,"
	    "  status, activated_at) SELECT ?1, ?2, ?3,"
	    "  CASE WHEN EXISTS (SELECT 1 FROM configurations WHERE"
	    "   workspace_id = ?2 AND status = 'active') THEN 'draft'"
	    "   ELSE 'active' END, " NOW;
	struct sq *s = (struct sq *)st;
	char slug[101];
	int rc;

	util_slug(ws, slug, sizeof(slug));
	if (sq_begin(s) == -1)
		return -1;
	rc = lookup_one(s, sq_query(s, find_ws, "ss", slug, ws), ws_id);
	if (rc == 0) {
		util_uuid(ws_id);
		rc = sq_exec_stmt(s, sq_query(s, add_ws, "sss", ws_id, ws,
		    slug));
	}
	if (rc == -1)
		return sq_rollback(s, -1);
	rc = lookup_one(s, sq_query(s, find_cfg, "ss", ws_id, cfg), cfg_id);
	if (rc == 0) {
		util_uuid(cfg_id);
		rc = sq_exec_stmt(s, sq_query(s, add_cfg, "sss", cfg_id, ws_id,
		    cfg));
	}
	if (rc == -1)
		return sq_rollback(s, -1);
	return sq_commit(s);
}

static int
sq_claim_environment(struct store *st, const char *token, double lease,
    json_t **out)
{
	struct sq *s = (struct sq *)st;
	int rc;

	s->may_give_up = 1;
	rc = claim_environment(st, token, lease, out);
	s->may_give_up = 0;
	return rc;
}

static int
sq_claim_run(struct store *st, const char *token, double lease,
    json_t **out)
{
	struct sq *s = (struct sq *)st;
	int rc;

	s->may_give_up = 1;
	rc = claim_run(st, token, lease, out);
	s->may_give_up = 0;
	return rc;
}

/* The statements store.c runs itself (store_impl.h). */
/* (id, token, output path): a run's success, guarded by its claim */
#define SUCCEEDED							\
	"UPDATE runs SET status = 'succeeded', completed_at = " NOW ","	\
	"  claimed_by = NULL, claim_expires_at = NULL, exit_code = 0,"	\
	"  output_path = ?3, error_message = NULL"			\
	" WHERE id = ?1 AND status = 'running' AND claimed_by = ?2"

static const struct store_sql sqlite_sql = {
	.list_hosts =
	    "SELECT name, holder, expires_at, CASE WHEN expires_at < " NOW
	    "  THEN 'gone' ELSE 'up' END AS state"
	    " FROM worker_leases WHERE name LIKE 'host:%' ORDER BY name",
	.list_runs =
	    "SELECT id, status, attempt_count, max_attempts, exit_code,"
	    "  created_at, started_at, completed_at, available_at,"
	    "  claimed_by, error_message," NAMES_OF_RUN " FROM runs"
	    " WHERE ?1 IS NULL OR status = ?1"
	    " ORDER BY created_at DESC, id LIMIT ?2",
	.list_environments =
	    "SELECT id, workspace_id, configuration_id, deps_digest, status,"
	    "  error_message, claimed_by, created_at, updated_at,"
	    "  last_used_at, python_version, engine_version,"
	    "  python_interpreter"
	    " FROM environments ORDER BY created_at",
	.show_run =
	    "SELECT *," NAMES_OF_RUN " FROM runs WHERE id = ?1",
	.show_metrics =
	    "SELECT * FROM run_metrics WHERE run_id = ?1",
	/* every column the table has: valid_cells came later */
	.show_fields =
	    "SELECT * FROM run_fields WHERE run_id = ?1 ORDER BY field",
	.show_columns =
	    "SELECT * FROM run_table_columns WHERE run_id = ?1"
	    " ORDER BY workbook_index, sheet_index, table_index, column_index",
	.heartbeat_run =
	    "UPDATE runs SET claim_expires_at = " NOW_PLUS(SECONDS("?3"))
	    " WHERE id = ?1 AND status = 'running' AND claimed_by = ?2",
	.heartbeat_environment =
	    "UPDATE environments SET"
	    "  claim_expires_at = " NOW_PLUS(SECONDS("?3"))
	    " WHERE id = ?1 AND status = 'building' AND claimed_by = ?2",
	.environment_touch =
	    "UPDATE environments SET last_used_at = " NOW ","
	    "  updated_at = " NOW " WHERE id = ?1",
	.environment_requeue =
	    "UPDATE environments SET status = 'queued', error_message = ?2,"
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  updated_at = " NOW
	    " WHERE id = ?1 AND status = 'ready'",
	.run_requeue =
	    "UPDATE runs SET status = 'queued', attempt_count = 0,"
	    "  available_at = " NOW ", started_at = NULL, completed_at = NULL,"
	    "  exit_code = NULL,"
	    "  error_message = NULL, output_path = NULL, claimed_by = NULL,"
	    "  claim_expires_at = NULL"
	    " WHERE id = ?1 AND status IN ('succeeded', 'failed',"
	    "  'cancelled')",
	.run_cancel =
	    "UPDATE runs SET status = 'cancelled', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'Run cancelled by an operator'"
	    " WHERE id = ?1 AND status IN ('queued', 'running')",
	.environment_rebuild =
	    "UPDATE environments SET status = 'queued', error_message = NULL,"
	    "  claimed_by = NULL, claim_expires_at = NULL, updated_at = " NOW
	    " WHERE id = ?1 AND status IN ('ready', 'failed', 'queued')",
	.run_abandon =
	    "UPDATE runs SET" LOST_RUN ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = ?4, exit_code = NULL, output_path = NULL"
	    " WHERE id = ?3 AND status = 'running' AND claimed_by = ?5",
	.environment_abandon =
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = ?3,"
	    "  updated_at = " NOW
	    " WHERE id = ?1 AND status = 'building' AND claimed_by = ?2",
	.run_claimed_with =
	    "SELECT id FROM runs WHERE claimed_by = ?1 AND status = 'running'",
	.environment_claimed_with =
	    "SELECT id FROM environments WHERE claimed_by = ?1"
	    " AND status = 'building'",
	.run_finished_before =
	    "SELECT status IN ('succeeded', 'failed', 'cancelled') AND"
	    " completed_at < strftime(" TS ", 'now', printf('-%d days', ?2))"
	    " AS v FROM runs WHERE id = ?1",
	.pending =
	    "SELECT (SELECT count(*) FROM runs WHERE (status = 'queued'"
	    "  AND attempt_count < max_attempts) OR status = 'running') +"
	    " (SELECT count(*) FROM environments"
	    "  WHERE status IN ('queued', 'building')) AS n",
	.queue_stats = QUEUE_STATS(
	    "((julianday('now') - julianday(available_at)) * 86400000.0)"),
	.next_due =
	    "SELECT (julianday(min(available_at)) - julianday('now'))"
	    " * 86400000.0 AS ms FROM runs WHERE status = 'queued'"
	    " AND attempt_count < max_attempts",
	.host_beat =
	    "INSERT INTO worker_leases (name, holder, expires_at)"
	    " VALUES (?1, ?2, " NOW_PLUS(SECONDS("?3")) ")"
	    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
	    "  expires_at = excluded.expires_at",
	.environment_ready =
	    "UPDATE environments SET status = 'ready', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = NULL,"
	    "  updated_at = " NOW ", python_interpreter = ?3,"
	    "  python_version = ?4, engine_version = ?5"
	    " WHERE id = ?1 AND status = 'building' AND claimed_by = ?2",
	.document =
	    "SELECT stored_uri, original_filename FROM documents"
	    " WHERE id = ?1",
	.run_retry =
	    "UPDATE runs SET status = 'queued',"
	    "  available_at = " NOW_PLUS(SECONDS("?3")) ", claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = ?4,"
	    "  completed_at = NULL, exit_code = NULL, output_path = NULL"
	    " WHERE id = ?1 AND status = 'running' AND claimed_by = ?2",
	.run_release =
	    "UPDATE runs SET status = 'queued',"
	    "  available_at = " NOW_PLUS(SECONDS("?3")) ", claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = ?4,"
	    "  completed_at = NULL, exit_code = NULL, output_path = NULL,"
	    "  attempt_count = MAX(attempt_count - 1, 0)"
	    " WHERE id = ?1 AND status = 'running' AND claimed_by = ?2",
	.run_fail =
	    "UPDATE runs SET status = 'failed', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = ?3, exit_code = ?4, output_path = NULL"
	    " WHERE id = ?1 AND status = 'running' AND claimed_by = ?2",
	.gc_candidates =
	    "SELECT id, workspace_id, configuration_id, deps_digest"
	    " FROM environments e WHERE" GC_ENV_COND,
	.gc_delete =
	    "DELETE FROM environments WHERE id = ?2 AND id IN (SELECT e.id"
	    " FROM environments e WHERE e.id = ?2 AND" GC_ENV_COND ")",
	.sweep_runs =
	    "UPDATE runs SET" LOST_RUN ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'lease expired'"
	    " WHERE status = 'running' AND claim_expires_at < " NOW
	    " RETURNING status",
	.sweep_environments =
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = 'lease expired',"
	    "  updated_at = " NOW
	    " WHERE status = 'building' AND claim_expires_at < " NOW,
	.singleton =
	    "INSERT INTO worker_leases (name, holder, expires_at)"
	    " VALUES (?1, ?2, " NOW_PLUS(SECONDS("?3")) ")"
	    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
	    "  expires_at = excluded.expires_at"
	    " WHERE worker_leases.holder = excluded.holder"
	    "  OR worker_leases.expires_at < " NOW,
	.environment_failed =
	    "UPDATE environments SET status = 'failed', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = ?3,"
	    "  updated_at = " NOW ", python_interpreter = NULL,"
	    "  python_version = NULL, engine_version = NULL"
	    " WHERE id = ?1 AND status = 'building' AND claimed_by = ?2",
	.charge_runs =
	    "UPDATE runs SET"
	    "  status = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN 'failed' ELSE 'queued' END,"
	    "  completed_at = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN " NOW " ELSE NULL END,"
	    "  exit_code = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN 2 ELSE NULL END,"
	    "  available_at = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN available_at ELSE strftime(" TS ", 'now', "
	    BACKOFF_MOD("attempt_count") ") END,"
	    "  error_message = 'Environment build failed: ' || ?4,"
	    "  attempt_count = attempt_count + 1"
	    " WHERE status = 'queued' AND available_at <= " NOW
	    "  AND attempt_count < max_attempts AND EXISTS (SELECT 1 FROM"
	    "  environments e WHERE e.id = ?3 AND " ENV_KEY("e", "runs") ")",
	.ensure_insert =
	    "INSERT INTO environments (id, workspace_id, configuration_id,"
	    "  engine_spec, deps_digest, status, created_at, updated_at) "
	    "SELECT lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) ||"
	    "  '-4' || substr(hex(randomblob(2)), 2) || '-' ||"
	    "  substr('89ab', 1 + (abs(random()) % 4), 1) ||"
	    "  substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))),"
	    "  k.workspace_id, k.configuration_id, k.engine_spec,"
	    "  k.deps_digest, 'queued', " NOW ", " NOW
	    " FROM (SELECT DISTINCT workspace_id, configuration_id,"
	    "  engine_spec, deps_digest FROM runs"
	    "  WHERE status = 'queued' AND available_at <= " NOW
	    "  AND attempt_count < max_attempts) AS k"
	    " WHERE NOT EXISTS (SELECT 1 FROM environments e WHERE "
	    ENV_KEY("e", "k") ") ON CONFLICT DO NOTHING",
	.ensure_requeue =
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, updated_at = " NOW
	    " WHERE status = 'failed' AND EXISTS (SELECT 1 FROM runs r"
	    "  WHERE " ENV_KEY("environments", "r") " AND r.status = 'queued'"
	    "  AND r.available_at <= " NOW
	    "  AND r.attempt_count < r.max_attempts)",
	.enqueue_document =
	    "INSERT INTO documents (id, workspace_id, original_filename,"
	    "  content_type, byte_size, sha256, stored_uri, expires_at,"
	    "  last_run_id)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7,"
	    "  strftime(" TS ", 'now', '+30 days'), ?8)",
	.enqueue_configuration =
	    "UPDATE configurations SET content_digest = ?2,"
	    "  last_used_at = " NOW ", updated_at = " NOW " WHERE id = ?1",
	.enqueue_run =
	    "INSERT INTO runs (id, configuration_id, workspace_id,"
	    "  input_document_id, input_sheet_names, engine_spec, deps_digest,"
	    "  run_options, max_attempts)"
	    " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	.run_succeeded = SUCCEEDED,
	.run_succeeded_replacing = SUCCEEDED,
	.clear_results = {
		"DELETE FROM run_metrics WHERE run_id = ?1",
		"DELETE FROM run_fields WHERE run_id = ?1",
		"DELETE FROM run_table_columns WHERE run_id = ?1",
	},
};

/* The driver's one call (store_impl.h). */
static json_t *
sq_rows(struct store *st, const char *what, const char *sql,
    const char *fmt, va_list ap)
{
	struct sq *s = (struct sq *)st;

	return rows_json(s, sq_queryv(s, sql, fmt, ap));
}

static int
sq_count(struct store *st, const char *what, const char *sql,
    const char *fmt, va_list ap)
{
	struct sq *s = (struct sq *)st;

	return sq_exec_stmt(s, sq_queryv(s, sql, fmt, ap));
}

static const struct store_ops sqlite_ops = {
	.rows = sq_rows,
	.count = sq_count,
	.guarded = sq_guarded,
	.guarded_claim = sq_guarded_claim,
	.param = "?",
	.run_id_param = "?1",
	.sql = &sqlite_sql,
	.name = "sqlite",
	.close = sq_close,
	.init_schema = sq_init_schema,
	.table_columns = sq_table_columns,
	.claim_environment = sq_claim_environment,
	.claim_run = sq_claim_run,
	.wait = sq_wait,
	.register_names = sq_register,
};
