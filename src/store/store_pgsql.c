/*
 * The PostgreSQL backend (13 and later).  Claims pick one row with FOR
 * UPDATE SKIP LOCKED in a MATERIALIZED common table expression (as a
 * plain subquery of UPDATE ... FROM, the planner may run it again for
 * every row and claim several), and the UPDATE's own WHERE repeats the
 * state check.  Time is the server's now().  Values travel through
 * PQexecParams as text.  Idle workers LISTEN on ade_run_queued, which
 * triggers installed by "ade-ctl db init" notify when a run is queued or
 * an environment becomes ready.
 *
 * A connection that breaks is reset before the next operation, with a
 * growing delay between attempts; the operation that saw the break
 * reports an error, and its caller decides whether to try again.  Every
 * statement has a time limit (statement_timeout), and TCP keepalives and
 * tcp_user_timeout find a server that went silent, so that no call waits
 * much longer than query_timeout.  Ids given as text are checked to be
 * UUIDs and compared as such, which uses the primary key.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "conf.h"
#include "log.h"
#include "results.h"
#include "store_impl.h"
#include "util.h"

#define PG_CHANNEL	"ade_run_queued"
#define MAXPARAMS	32
/* Statements a session keeps prepared: those sent for every run. */
#define PG_HOT_MAX	8
#define UTC_TEXT(col)	"to_char(" col " AT TIME ZONE 'UTC', "		\
			"'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
/* The retry delay after failed attempt n. */
#define BACKOFF(n)	"make_interval(secs => LEAST($2::float8, $1::float8 *" \
			" power(2, GREATEST(" n ", 0))))"
/* A run whose claim ended without a result (store_impl.h). */
#define LOST_RUN	GIVE_UP_OR_RETRY("now()",			\
			    "now() + " BACKOFF("attempt_count - 1"))

struct pg {
	struct store	 base;
	PGconn		*conn;
	const char	*keys[24];
	const char	*vals[24];
	char		*dsn;
	char		 port[16];
	char		 timeout[16];
	char		 ka_idle[16];
	char		 user_timeout[24];
	long		 stmt_timeout_ms;
	int		 echo;
	int		 listen;
	int		 notified;	/* a notification came with a result */
	int		 needs_setup;	/* a new session lacks its settings */
	int		 in_tx;
	double		 reset_at;
	double		 reset_delay;
	/* The hot statements this session has prepared (pg_hot). */
	uint64_t	 prepared[PG_HOT_MAX];
	int		 nprepared;
	int		 no_prepare;	/* the server forgot one: send texts */
};

static const struct store_ops pgsql_ops;

static const char schema_sql[] =
"CREATE TABLE IF NOT EXISTS workspaces ("
"  id UUID PRIMARY KEY,"
"  name VARCHAR(255) NOT NULL,"
"  slug VARCHAR(100) NOT NULL UNIQUE,"
"  settings JSONB NOT NULL DEFAULT '{}',"
"  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
"  updated_at TIMESTAMPTZ NOT NULL DEFAULT now());"
"CREATE TABLE IF NOT EXISTS configurations ("
"  id UUID PRIMARY KEY,"
"  workspace_id UUID NOT NULL REFERENCES workspaces(id),"
"  display_name VARCHAR(255) NOT NULL,"
"  status VARCHAR(20) NOT NULL DEFAULT 'draft'"
"    CHECK (status IN ('draft', 'active', 'archived')),"
"  content_digest VARCHAR(80),"
"  last_used_at TIMESTAMPTZ,"
"  activated_at TIMESTAMPTZ,"
"  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
"  updated_at TIMESTAMPTZ NOT NULL DEFAULT now());"
"CREATE INDEX IF NOT EXISTS ix_configurations_workspace_status"
"  ON configurations (workspace_id, status);"
"CREATE UNIQUE INDEX IF NOT EXISTS ux_configurations_active_per_workspace"
"  ON configurations (workspace_id) WHERE status = 'active';"
"CREATE TABLE IF NOT EXISTS documents ("
"  id UUID PRIMARY KEY,"
"  workspace_id UUID NOT NULL REFERENCES workspaces(id),"
"  original_filename VARCHAR(255) NOT NULL,"
"  content_type VARCHAR(255),"
"  byte_size BIGINT NOT NULL,"
"  version INTEGER NOT NULL DEFAULT 1,"
"  sha256 VARCHAR(64) NOT NULL,"
"  stored_uri VARCHAR(512) NOT NULL,"
"  attributes JSONB NOT NULL DEFAULT '{}',"
"  uploaded_by_user_id UUID,"
"  assignee_user_id UUID,"
"  source VARCHAR(50) NOT NULL DEFAULT 'manual_upload'"
"    CHECK (source IN ('manual_upload')),"
"  expires_at TIMESTAMPTZ NOT NULL,"
"  last_run_id UUID,"
"  comment_count INTEGER NOT NULL DEFAULT 0,"
"  deleted_at TIMESTAMPTZ,"
"  deleted_by_user_id UUID,"
"  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
"  updated_at TIMESTAMPTZ NOT NULL DEFAULT now());"
"CREATE TABLE IF NOT EXISTS document_events ("
"  cursor BIGSERIAL PRIMARY KEY,"
"  workspace_id UUID NOT NULL REFERENCES workspaces(id),"
"  document_id UUID NOT NULL REFERENCES documents(id),"
"  event_type VARCHAR(40) NOT NULL"
"    CHECK (event_type IN ('document.changed', 'document.deleted')),"
"  document_version INTEGER NOT NULL,"
"  occurred_at TIMESTAMPTZ NOT NULL DEFAULT now());"
"CREATE INDEX IF NOT EXISTS ix_document_events_workspace_cursor"
"  ON document_events (workspace_id, cursor);"
"CREATE INDEX IF NOT EXISTS ix_document_events_workspace_document"
"  ON document_events (workspace_id, document_id);"
"CREATE INDEX IF NOT EXISTS ix_document_events_workspace_occurred"
"  ON document_events (workspace_id, occurred_at);"
"CREATE TABLE IF NOT EXISTS runs ("
"  id UUID PRIMARY KEY,"
"  configuration_id UUID NOT NULL REFERENCES configurations(id),"
"  workspace_id UUID NOT NULL REFERENCES workspaces(id),"
"  input_document_id UUID NOT NULL REFERENCES documents(id),"
"  input_sheet_names JSONB,"
"  output_path VARCHAR(512),"
"  engine_spec VARCHAR(255) NOT NULL"
"    DEFAULT 'ade-engine @ git+https://github.com/clac-ca/ade-engine@main',"
"  deps_digest VARCHAR(128) NOT NULL DEFAULT 'sha256:"
    "2e1cfa82b035c26cbbbdae632cea070514eb8b773f616aaeaf668e2f0be8f10d',"
"  status VARCHAR(20) NOT NULL DEFAULT 'queued'"
"    CHECK (status IN ('queued', 'running', 'succeeded', 'failed',"
"                      'cancelled')),"
"  exit_code INTEGER,"
"  submitted_by_user_id UUID,"
"  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
"  started_at TIMESTAMPTZ,"
"  completed_at TIMESTAMPTZ,"
"  error_message TEXT,"
"  available_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
"  run_options JSONB,"
"  attempt_count INTEGER NOT NULL DEFAULT 0,"
"  max_attempts INTEGER NOT NULL DEFAULT 3,"
"  claimed_by VARCHAR(255),"
"  claim_expires_at TIMESTAMPTZ);"
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
"  id UUID PRIMARY KEY,"
"  workspace_id UUID NOT NULL REFERENCES workspaces(id),"
"  configuration_id UUID NOT NULL REFERENCES configurations(id),"
"  engine_spec VARCHAR(255) NOT NULL,"
"  deps_digest VARCHAR(128) NOT NULL,"
"  status VARCHAR(20) NOT NULL DEFAULT 'queued'"
"    CHECK (status IN ('queued', 'building', 'ready', 'failed')),"
"  error_message TEXT,"
"  claimed_by VARCHAR(255),"
"  claim_expires_at TIMESTAMPTZ,"
"  created_at TIMESTAMPTZ NOT NULL,"
"  updated_at TIMESTAMPTZ NOT NULL,"
"  last_used_at TIMESTAMPTZ,"
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
"  run_id UUID PRIMARY KEY REFERENCES runs(id),"
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
"  run_id UUID NOT NULL REFERENCES runs(id),"
"  field VARCHAR(128) NOT NULL,"
"  label VARCHAR(255),"
"  detected BOOLEAN NOT NULL,"
"  best_mapping_score DOUBLE PRECISION,"
"  valid_cells INTEGER NOT NULL DEFAULT 0,"
"  occurrences_tables INTEGER NOT NULL,"
"  occurrences_columns INTEGER NOT NULL,"
"  PRIMARY KEY (run_id, field));"
"CREATE INDEX IF NOT EXISTS ix_run_fields_run ON run_fields (run_id);"
"CREATE INDEX IF NOT EXISTS ix_run_fields_field ON run_fields (field);"
"CREATE TABLE IF NOT EXISTS run_table_columns ("
"  run_id UUID NOT NULL REFERENCES runs(id),"
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
"  mapping_score DOUBLE PRECISION,"
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
"  expires_at TIMESTAMPTZ NOT NULL);"
/* Tables made by ADE migrations older than valid_cells. */
"ALTER TABLE run_fields"
"  ADD COLUMN IF NOT EXISTS valid_cells INTEGER NOT NULL DEFAULT 0;"
"ALTER TABLE run_table_columns"
"  ADD COLUMN IF NOT EXISTS valid_cells INTEGER NOT NULL DEFAULT 0;"
/*
 * Wake-ups: a run that becomes queued, and an environment that becomes
 * ready (its runs become claimable), notify the channel.
 */
"CREATE OR REPLACE FUNCTION fn_runs_notify_queued() RETURNS trigger"
"  LANGUAGE plpgsql AS $$ BEGIN"
"  IF NEW.status = 'queued' AND (TG_OP = 'INSERT'"
"      OR OLD.status IS DISTINCT FROM 'queued') THEN"
"    PERFORM pg_notify('" PG_CHANNEL "', NEW.id::text);"
"  END IF;"
"  RETURN NULL; END $$;"
/*
 * The triggers' conditions keep them from being queued at all for the
 * claims and successes that change a run's status at every run.
 */
"DROP TRIGGER IF EXISTS trg_runs_notify_queued ON runs;"
"CREATE TRIGGER trg_runs_notify_queued AFTER UPDATE OF status"
"  ON runs FOR EACH ROW WHEN (NEW.status = 'queued'"
"  AND OLD.status IS DISTINCT FROM 'queued')"
"  EXECUTE FUNCTION fn_runs_notify_queued();"
"DROP TRIGGER IF EXISTS trg_runs_notify_inserted ON runs;"
"CREATE TRIGGER trg_runs_notify_inserted AFTER INSERT"
"  ON runs FOR EACH ROW WHEN (NEW.status = 'queued')"
"  EXECUTE FUNCTION fn_runs_notify_queued();"
"CREATE OR REPLACE FUNCTION fn_environments_notify_ready() RETURNS trigger"
"  LANGUAGE plpgsql AS $$ BEGIN"
"  IF NEW.status = 'ready' AND OLD.status IS DISTINCT FROM 'ready' THEN"
"    PERFORM pg_notify('" PG_CHANNEL "', 'environment:' || NEW.id::text);"
"  END IF;"
"  RETURN NULL; END $$;"
"DROP TRIGGER IF EXISTS trg_environments_notify_ready ON environments;"
"CREATE TRIGGER trg_environments_notify_ready AFTER UPDATE OF status"
"  ON environments FOR EACH ROW WHEN (NEW.status = 'ready'"
"  AND OLD.status IS DISTINCT FROM 'ready')"
"  EXECUTE FUNCTION fn_environments_notify_ready();";

/*
 * An id from an operator or a directory name as the uuid parameter of a
 * lookup: its canonical form, or NULL (which matches no row) when it is
 * not a UUID.  Comparing "id = $1::uuid" uses the primary key; comparing
 * the id as text would read the whole table.
 */
static const char *
uuid_param(const char *id, char *buf)
{
	return util_uuid_canon(id, buf) == 0 ? buf : NULL;
}

/* What a failure means, by its SQLSTATE. */
static enum store_fail
pg_fail_class(int dead, const char *state)
{
	if (dead)
		return STORE_FAIL_DEAD;
	if (state == NULL)
		return STORE_FAIL_OTHER;
	if (strncmp(state, "23", 2) == 0)	/* integrity constraints */
		return STORE_FAIL_CONSTRAINT;
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strcmp(state, "55P03") == 0)	/* serialization, locks */
		return STORE_FAIL_RETRY;
	return STORE_FAIL_OTHER;
}

static int
pg_fail(struct pg *p, const char *what, const PGresult *r)
{
	const char *msg = r != NULL ? PQresultErrorMessage(r) : "";

	if (msg == NULL || *msg == '\0')
		msg = PQerrorMessage(p->conn);
	snprintf(p->base.err, sizeof(p->base.err), "pgsql: %s: %.*s", what,
	    (int)strcspn(msg, "\n"), msg);
	p->base.dead = PQstatus(p->conn) != CONNECTION_OK;
	p->base.fail = pg_fail_class(p->base.dead, r != NULL ?
	    PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL);
	return p->base.dead ? STORE_DEAD : -1;
}

/* Server notices ("relation exists, skipping") are not errors. */
static void
pg_notice(void *arg, const char *msg)
{
	log_debug("pgsql: %.*s", (int)strcspn(msg, "\n"), msg);
}

/*
 * Settings every session needs: UTC for timestamps, the statement time
 * limit, and the wake-up channel when notifications are wanted.
 */
static int
pg_session_setup(struct pg *p)
{
	char sql[160];
	PGresult *r;
	int ok;

	snprintf(sql, sizeof(sql), "SET TimeZone = 'UTC'; "
	    "SET statement_timeout = %ld%s", p->stmt_timeout_ms,
	    p->listen ? "; LISTEN " PG_CHANNEL : "");
	/* A new session has none of the old one's prepared statements. */
	p->nprepared = 0;
	r = PQexec(p->conn, sql);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	if (!ok)
		snprintf(p->base.err, sizeof(p->base.err), "pgsql: %s",
		    PQresultErrorMessage(r));
	PQclear(r);
	return ok ? 0 : -1;
}

/*
 * Makes sure the connection is usable, resetting a broken one no more
 * often than the growing delay allows.  LISTEN is renewed on every new
 * session.
 */
static int
pg_ready(struct pg *p)
{
	double now;

	if (PQstatus(p->conn) == CONNECTION_OK && !p->needs_setup)
		return 0;
	if (PQstatus(p->conn) == CONNECTION_OK) {
		if (pg_session_setup(p) == -1)
			return -1;
		p->needs_setup = 0;
		return 0;
	}
	now = now_mono();
	if (now < p->reset_at) {
		snprintf(p->base.err, sizeof(p->base.err), "pgsql: connection "
		    "lost; next reconnect in %.0f s", p->reset_at - now);
		p->base.dead = 1;
		return STORE_DEAD;
	}
	PQreset(p->conn);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		p->reset_delay = p->reset_delay < 1 ? 1 :
		    p->reset_delay * 2 > 30 ? 30 : p->reset_delay * 2;
		p->reset_at = now + p->reset_delay + jitter(p->reset_delay / 4);
		return pg_fail(p, "reconnect", NULL);
	}
	log_notice("pgsql: reconnected");
	store_event(STORE_EV_RECONNECT);
	p->base.dead = 0;
	p->reset_delay = 0;
	p->in_tx = 0;
	/* A new session: everything set on the old one is gone. */
	p->needs_setup = 1;
	if (pg_session_setup(p) == -1)
		return -1;
	p->needs_setup = 0;
	return 0;
}

/*
 * Notifications that arrive with a statement's answer are kept as a flag
 * (the next idle wait ends at once), not as libpq's list: a worker that
 * sleeps while another one looks for work never waits on its connection,
 * and the list would grow with every run enqueued.
 */
static void
note_notifies(struct pg *p)
{
	PGnotify *n;

	while ((n = PQnotifies(p->conn)) != NULL) {
		p->notified = 1;
		PQfreemem(n);
	}
}

/* The text form of a JSON scalar as a parameter: NULL for null. */
static char *
param_text(json_t *v, char *num, size_t len)
{
	if (json_is_string(v))
		return (char *)json_string_value(v);
	if (json_is_integer(v))
		snprintf(num, len, "%lld", (long long)json_integer_value(v));
	else if (json_is_real(v))
		snprintf(num, len, "%.17g", json_real_value(v));
	else if (json_is_boolean(v))
		snprintf(num, len, "%s", json_is_true(v) ? "true" : "false");
	else
		return NULL;
	return num;
}

/*
 * The name of a prepared statement: a hash of its text, so that a name
 * stands for one text whatever the version of the worker that chose it.
 */
static uint64_t
pg_stmt_name(const char *sql, char name[24])
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a */

	for (; *sql != '\0'; sql++)
		h = (h ^ (unsigned char)*sql) * 1099511628211ULL;
	snprintf(name, 24, "ade_%016llx", (unsigned long long)h);
	return h;
}

/*
 * A hot statement (a claim or a success, sent for every run) is parsed
 * and planned once per session, not at every call: its plan costs more
 * than its execution.  Returns 1 when sql is prepared under name, 0 when
 * it is to be sent as text (the set is full, or the server forgot a
 * prepared statement, as it does behind a pooler that shares sessions),
 * -1 on error.
 */
static int
pg_hot(struct pg *p, const char *sql, int nparams, char name[24])
{
	PGresult *r;
	uint64_t h;
	int i, st;

	if (p->no_prepare)
		return 0;
	h = pg_stmt_name(sql, name);
	for (i = 0; i < p->nprepared; i++)
		if (p->prepared[i] == h)
			return 1;
	if (p->nprepared == PG_HOT_MAX)
		return 0;
	if (p->echo)
		log_debug("sql: PREPARE %s", name);
	r = PQprepare(p->conn, name, sql, nparams, NULL);
	note_notifies(p);
	st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK) {
		/*
		 * A session that refuses (one a pooler shares, where another
		 * client's statement has the name) still takes the text.
		 */
		if (PQstatus(p->conn) == CONNECTION_OK && !p->in_tx) {
			log_notice("pgsql: cannot prepare %s (%.*s); sending "
			    "statements as text from now on", name,
			    (int)strcspn(PQresultErrorMessage(r), "\n"),
			    PQresultErrorMessage(r));
			p->no_prepare = 1;
			PQclear(r);
			return 0;
		}
		pg_fail(p, "prepare", r);
		PQclear(r);
		return -1;
	}
	PQclear(r);
	p->prepared[p->nprepared++] = h;
	return 1;
}

/*
 * Sends sql with its n parameters, prepared when it is hot (pg_hot).
 * Returns the result, whatever its status, or NULL with the error
 * recorded.
 */
static PGresult *
pg_send(struct pg *p, int hot, const char *sql, int n,
    const char *const *vals)
{
	char name[24];
	const char *state;
	PGresult *r;
	int st;

	if (hot && (hot = pg_hot(p, sql, n, name)) == -1)
		return NULL;
	if (hot) {
		r = PQexecPrepared(p->conn, name, n, vals, NULL, NULL, 0);
		st = PQresultStatus(r);
		state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
		/*
		 * Gone (the session is shared, or was reset), or its plan
		 * outdated by a change of the tables' columns: from then on
		 * the text goes each time, as it always can, starting with
		 * this one unless a transaction was open (the failure undid
		 * it).
		 */
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
		    state != NULL && (strcmp(state, "26000") == 0 ||
		    strcmp(state, "0A000") == 0)) {
			log_notice("pgsql: prepared statement %s unusable "
			    "(%s); sending statements as text from now on",
			    name, state);
			p->no_prepare = 1;
			if (!p->in_tx && PQstatus(p->conn) == CONNECTION_OK) {
				PQclear(r);
				hot = 0;
			}
		}
	}
	if (!hot)
		r = PQexecParams(p->conn, sql, n, NULL, vals, NULL, NULL, 0);
	note_notifies(p);
	if (r == NULL)
		pg_fail(p, "query", NULL);
	return r;
}

/*
 * Runs one statement with parameters described by fmt: s a string (NULL
 * is NULL), i a long long, d a double, v a JSON scalar; hot when it is
 * one of the statements every run sends (pg_hot).  Returns the result,
 * or NULL with the error recorded.
 */
static PGresult *
pg_queryv(struct pg *p, int hot, const char *sql, const char *fmt,
    va_list ap)
{
	char *vals[MAXPARAMS], nums[MAXPARAMS][40];
	const char *s;
	PGresult *r;
	int n, st;

	if (!p->in_tx && pg_ready(p) != 0)
		return NULL;
	if (p->echo)
		log_debug("sql: %s", sql);
	for (n = 0; fmt[n] != '\0' && n < MAXPARAMS; n++) {
		vals[n] = nums[n];
		switch (fmt[n]) {
		case 's':
			s = va_arg(ap, const char *);
			vals[n] = (char *)s;
			break;
		case 'i':
			snprintf(nums[n], sizeof(nums[n]), "%lld",
			    va_arg(ap, long long));
			break;
		case 'd':
			snprintf(nums[n], sizeof(nums[n]), "%.17g",
			    va_arg(ap, double));
			break;
		case 'v':
			vals[n] = param_text(va_arg(ap, json_t *), nums[n],
			    sizeof(nums[n]));
			break;
		}
	}
	if ((r = pg_send(p, hot, sql, n, (const char *const *)vals)) ==
	    NULL)
		return NULL;
	st = PQresultStatus(r);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pg_fail(p, "query", r);
		PQclear(r);
		return NULL;
	}
	return r;
}

static PGresult *
pg_query(struct pg *p, const char *sql, const char *fmt, ...)
{
	PGresult *r;
	va_list ap;

	va_start(ap, fmt);
	r = pg_queryv(p, 0, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* pg_query for a statement every run sends: prepared once a session. */
static PGresult *
pg_query_hot(struct pg *p, const char *sql, const char *fmt, ...)
{
	PGresult *r;
	va_list ap;

	va_start(ap, fmt);
	r = pg_queryv(p, 1, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* Runs a statement; returns the rows it changed or returned, or -1. */
static int
pg_exec(PGresult *r)
{
	int n;

	if (r == NULL)
		return -1;
	n = PQntuples(r) > 0 ? PQntuples(r) : atoi(PQcmdTuples(r));
	PQclear(r);
	return n;
}

static int
pg_plain(struct pg *p, const char *sql)
{
	PGresult *r;
	int st;

	if (p->echo)
		log_debug("sql: %s", sql);
	r = PQexec(p->conn, sql);
	st = PQresultStatus(r);

	note_notifies(p);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pg_fail(p, sql, r);
		PQclear(r);
		return -1;
	}
	PQclear(r);
	return 0;
}

static int
pg_begin(struct pg *p)
{
	if (pg_ready(p) != 0)
		return -1;
	if (pg_plain(p, "BEGIN") == -1)
		return -1;
	p->in_tx = 1;
	return 0;
}

static int
pg_commit(struct pg *p)
{
	int rc = pg_plain(p, "COMMIT");

	p->in_tx = 0;
	return rc;
}

static int
pg_rollback(struct pg *p, int rc)
{
	char keep[sizeof(p->base.err)];

	memcpy(keep, p->base.err, sizeof(keep));
	if (PQstatus(p->conn) == CONNECTION_OK)
		pg_plain(p, "ROLLBACK");
	p->in_tx = 0;
	memcpy(p->base.err, keep, sizeof(keep));
	return rc;
}

static void
val_copy(PGresult *r, int row, int col, char *out, size_t len)
{
	snprintf(out, len, "%s", PQgetisnull(r, row, col) ? "" :
	    PQgetvalue(r, row, col));
}

static json_t *
rows_json(PGresult *r)
{
	json_t *a = json_array(), *o, *v;
	int i, k;

	if (r == NULL) {
		json_decref(a);
		return NULL;
	}
	for (i = 0; i < PQntuples(r); i++) {
		o = json_object();
		for (k = 0; k < PQnfields(r); k++) {
			const char *s = PQgetvalue(r, i, k);

			if (PQgetisnull(r, i, k))
				v = json_null();
			else switch (PQftype(r, k)) {
			case 20: case 21: case 23:	/* int8, int2, int4 */
				v = json_integer(strtoll(s, NULL, 10));
				break;
			case 700: case 701: case 1700:	/* floats, numeric */
				v = json_real(strtod(s, NULL));
				break;
			case 16:			/* bool */
				v = json_boolean(s[0] == 't');
				break;
			default: {
				struct buf b;

				buf_init(&b);
				utf8_repair(s, strlen(s), &b);
				v = json_string(buf_str(&b));
				buf_free(&b);
			}
			}
			json_object_set_new(o, PQfname(r, k), v);
		}
		json_array_append_new(a, o);
	}
	PQclear(r);
	return a;
}

/* A claim's answer: 1 with its row, 0 without one, -1 on error. */
static int
first_row(PGresult *r, json_t **row)
{
	json_t *a = rows_json(r);

	if (a == NULL)
		return -1;
	if (json_array_size(a) > 0)
		*row = json_incref(json_array_get(a, 0));
	json_decref(a);
	return *row != NULL;
}

/* SQLAlchemy-style URLs (postgresql+psycopg://) become libpq URIs. */
static char *
dsn_for_libpq(const char *dsn)
{
	const char *plus = strchr(dsn, '+'), *colon = strstr(dsn, "://");

	if (plus != NULL && colon != NULL && plus < colon)
		return xasprintf("%.*s%s", (int)(plus - dsn), dsn, colon);
	return xstrdup(dsn);
}

static int
conf_port_is_default(const struct conf *c)
{
	const struct conf_key *k;
	size_t i, n;

	k = conf_keys(&n);
	for (i = 0; i < n; i++)
		if (strcmp(k[i].name, "port") == 0)
			return c->lines[i] == 0;
	return 1;
}

struct store *
store_pgsql_open(const struct conf *c, struct buf *err)
{
	struct pg *p = xcalloc(1, sizeof(*p));
	double keep;
	int n = 0;

	p->base.ops = &pgsql_ops;
	/* of the 65535 the protocol allows, with room to spare */
	p->base.max_params = 8000;
	p->echo = c->db_echo;
	p->listen = c->notify;
	snprintf(p->port, sizeof(p->port), "%lld", conf_port_is_default(c) ?
	    5432LL : c->db_port);
	snprintf(p->timeout, sizeof(p->timeout), "%.0f", c->db_login_timeout);
	/*
	 * A connection whose server went away without a word (a host that
	 * died, a dropped route) must not hold a heartbeat past the lease:
	 * statement_timeout cannot help when no answer comes at all.  TCP
	 * keepalives find a silent peer, and tcp_user_timeout a peer that
	 * stopped acknowledging, each within about query_timeout.  They come
	 * before the DSN, whose own settings win.
	 */
	keep = c->db_query_timeout / 4 < 1 ? 1 : c->db_query_timeout / 4;
	snprintf(p->ka_idle, sizeof(p->ka_idle), "%.0f", keep);
	snprintf(p->user_timeout, sizeof(p->user_timeout), "%.0f",
	    c->db_query_timeout * 1000);
	p->keys[n] = "keepalives";
	p->vals[n++] = "1";
	p->keys[n] = "keepalives_idle";
	p->vals[n++] = p->ka_idle;
	p->keys[n] = "keepalives_interval";
	p->vals[n++] = p->ka_idle;
	p->keys[n] = "keepalives_count";
	p->vals[n++] = "3";
	p->keys[n] = "tcp_user_timeout";
	p->vals[n++] = p->user_timeout;
	if (c->db_dsn[0] != '\0') {
		p->dsn = dsn_for_libpq(c->db_dsn);
		p->keys[n] = "dbname";
		p->vals[n++] = p->dsn;
	} else {
		p->keys[n] = "host";
		p->vals[n++] = c->db_host;
		p->keys[n] = "port";
		p->vals[n++] = p->port;
		p->keys[n] = "dbname";
		p->vals[n++] = c->db_name;
		if (c->db_user[0] != '\0') {
			p->keys[n] = "user";
			p->vals[n++] = c->db_user;
		}
		if (c->password != NULL) {
			p->keys[n] = "password";
			p->vals[n++] = c->password;
		}
	}
	p->keys[n] = "connect_timeout";
	p->vals[n++] = p->timeout;
	p->keys[n] = "application_name";
	p->vals[n++] = c->db_app_name;
	p->keys[n] = NULL;
	p->vals[n] = NULL;
	p->conn = PQconnectdbParams(p->keys, p->vals, 1);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		const char *m = PQerrorMessage(p->conn);

		buf_printf(err, "pgsql: %.*s", (int)strcspn(m, "\n"), m);
		PQfinish(p->conn);
		free(p->dsn);
		free(p);
		return NULL;
	}
	PQsetNoticeProcessor(p->conn, pg_notice, NULL);
	p->stmt_timeout_ms = (long)(c->db_query_timeout * 1000);
	if (pg_session_setup(p) == -1) {
		buf_printf(err, "%s", p->base.err);
		PQfinish(p->conn);
		free(p->dsn);
		free(p);
		return NULL;
	}
	return &p->base;
}

static void
pg_close(struct store *st)
{
	struct pg *p = (struct pg *)st;

	PQfinish(p->conn);
	free(p->dsn);
	free(p);
}

static int
pg_init_schema(struct store *st)
{
	struct pg *p = (struct pg *)st;

	if (pg_begin(p) == -1)
		return -1;
	if (pg_plain(p, schema_sql) == -1)
		return pg_rollback(p, -1);
	return pg_commit(p);
}

static int
pg_table_columns(struct store *st, const char *table, struct buf *out)
{
	static const char sql[] =
	    "SELECT column_name::text FROM information_schema.columns"
	    " WHERE table_schema = current_schema() AND table_name = $1"
	    " ORDER BY ordinal_position";
	struct pg *p = (struct pg *)st;
	PGresult *r;
	int i, n;

	if ((r = pg_query(p, sql, "s", table)) == NULL)
		return -1;
	n = PQntuples(r);
	for (i = 0; i < n; i++)
		buf_printf(out, "%s%s", i > 0 ? " " : "", PQgetvalue(r, i, 0));
	PQclear(r);
	return n > 0;
}

static int
pg_claim_environment(struct store *st, const char *token, double lease,
    json_t **row)
{
	static const char sql[] =
	    "WITH c AS MATERIALIZED (SELECT id FROM environments"
	    "  WHERE status = 'queued' ORDER BY created_at LIMIT 1"
	    "  FOR UPDATE SKIP LOCKED)"
	    " UPDATE environments e SET status = 'building', claimed_by = $1,"
	    "  claim_expires_at = now() + make_interval(secs => $2),"
	    "  error_message = NULL, updated_at = now()"
	    " FROM c WHERE e.id = c.id AND e.status = 'queued'"
	    " RETURNING e.id, e.workspace_id, e.configuration_id,"
	    "  e.engine_spec, e.deps_digest";

	return first_row(pg_query_hot((struct pg *)st, sql, "sd", token,
	    lease), row);
}

/*
 * Claims the oldest due run whose environment is ready (SKIP LOCKED: the
 * claimers pass each other by); the run's document row comes with it.
 * A run may hold the result rows of an earlier success (an operator
 * queued it again, with ade-ctl or by hand, and its attempts may start
 * from 0): the claim removes whatever there is, so that the success can
 * add the new rows in the statement that guards it (pg_guarded) without
 * meeting them.  For a new run these are three lookups that find
 * nothing.  The UPDATE finds its row by the primary key alone: c holds
 * the row's lock, taken where it was still queued and due, so no one
 * can have changed it since; a test of its status there would let the
 * planner, whose statistics of a busy queue are always stale, read the
 * runs by status, the whole queue for one row.
 */
static const char claim_run_sql[] =
    "WITH c AS MATERIALIZED (SELECT q.id, e.id AS env_id,"
    "  e.python_interpreter AS env_python,"
    "  q.input_document_id AS doc_id FROM runs q"
    "  JOIN environments e ON " ENV_KEY("e", "q")
    "  WHERE q.status = 'queued' AND q.available_at <= now()"
    "  AND q.attempt_count < q.max_attempts AND e.status = 'ready'"
    "  ORDER BY q.available_at, q.created_at LIMIT 1"
    "  FOR UPDATE OF q SKIP LOCKED),"
    " m AS (DELETE FROM run_metrics WHERE run_id IN (SELECT id FROM c)),"
    " f AS (DELETE FROM run_fields WHERE run_id IN (SELECT id FROM c)),"
    " t AS (DELETE FROM run_table_columns"
    "  WHERE run_id IN (SELECT id FROM c))"
    " UPDATE runs r SET status = 'running', claimed_by = $1,"
    "  claim_expires_at = now() + make_interval(secs => $2),"
    "  started_at = COALESCE(r.started_at, now()),"
    "  attempt_count = r.attempt_count + 1, error_message = NULL,"
    "  exit_code = NULL, completed_at = NULL"
    " FROM c LEFT JOIN documents d ON d.id = c.doc_id"
    " WHERE r.id = c.id"
    " RETURNING r.id, r.workspace_id, r.configuration_id,"
    "  r.input_document_id, r.engine_spec, r.deps_digest, "
    UTC_TEXT("r.started_at") " AS started_at, r.attempt_count,"
    "  r.max_attempts, r.run_options::text AS run_options,"
    "  r.input_sheet_names::text AS input_sheet_names, c.env_id,"
    "  c.env_python,"
    "  extract(epoch FROM now() - r.available_at) * 1000 AS waited_ms,"
    "  d.id IS NOT NULL AS doc_found,"
    "  d.stored_uri AS doc_stored_uri,"
    "  d.original_filename AS doc_original_filename";

static int
pg_claim_run(struct store *st, const char *token, double lease,
    json_t **row)
{
	return first_row(pg_query_hot((struct pg *)st, claim_run_sql, "sd",
	    token, lease), row);
}

/*
 * How a guard ends (store_impl.h): it divides by zero when the row it
 * updates (u) was not there.
 */
#define GUARD_END	" SELECT 1 / count(*) FROM u"
/* The parameters one statement may carry (the protocol counts in 16 bits). */
#define PG_MAX_PARAMS	65535

/*
 * Reads a pipeline's answers: those to the n statements sent, then the
 * sync's.  The statements ran as one transaction; the first to fail
 * undid the others, and its SQLSTATE goes to state (when not NULL).
 * Returns 0, or -1 with the error recorded.
 */
static int
pipeline_end(struct pg *p, int n, char state[6], long *last)
{
	PGresult *r;
	int i, rc = 0, st;

	if (state != NULL)
		state[0] = '\0';
	for (i = 0; i < n && PQstatus(p->conn) == CONNECTION_OK; i++)
		while ((r = PQgetResult(p->conn)) != NULL) {
			st = PQresultStatus(r);
			if (i == n - 1 && last != NULL)
				*last = atol(PQcmdTuples(r));
			if (rc == 0 && st != PGRES_COMMAND_OK &&
			    st != PGRES_TUPLES_OK) {
				const char *code = PQresultErrorField(r,
				    PG_DIAG_SQLSTATE);

				if (state != NULL && code != NULL)
					snprintf(state, 6, "%s", code);
				rc = pg_fail(p, "pipeline", r);
			}
			PQclear(r);
		}
	if (PQstatus(p->conn) == CONNECTION_OK) {
		r = PQgetResult(p->conn);
		if (PQresultStatus(r) != PGRES_PIPELINE_SYNC && rc == 0)
			rc = pg_fail(p, "pipeline sync", r);
		PQclear(r);
	}
	note_notifies(p);
	if (PQexitPipelineMode(p->conn) != 1 && rc == 0)
		rc = pg_fail(p, "pipeline end", NULL);
	if (PQstatus(p->conn) != CONNECTION_OK)
		rc = pg_fail(p, "pipeline", NULL);
	return rc;
}

/* Whether the statements can run as one: a guard and INSERTs. */
static size_t
foldable(const struct store_stmt *t, size_t n)
{
	size_t i, len = strlen(t[0].sql), tail = strlen(GUARD_END), nv = 0;

	if (n < 2 || len < tail || strncmp(t[0].sql, "WITH ", 5) != 0 ||
	    strcmp(t[0].sql + len - tail, GUARD_END) != 0)
		return 0;
	for (i = 0; i < n; i++) {
		if (i > 0 && strncmp(t[i].sql, "INSERT INTO ", 12) != 0)
			return 0;
		nv += json_array_size(t[i].values);
	}
	return nv <= PG_MAX_PARAMS ? nv : 0;
}

/*
 * A guard and the INSERTs after it as one statement: each INSERT becomes
 * a part of the guard's WITH, its parameters numbered on from those
 * before it.  The server parses, plans and runs one statement instead of
 * one per table, and the guard's division by zero undoes the INSERTs
 * with it.  nv is the number of parameters in all; vals (nv of them)
 * point into the statements' values or into nums.  A lone statement is
 * taken as it is.
 */
static void
fold(const struct store_stmt *t, size_t n, struct buf *sql,
    const char **vals, char (*nums)[40])
{
	size_t i, k, at = 0;

	if (n == 1)
		buf_addstr(sql, t[0].sql);
	else
		buf_add(sql, t[0].sql, strlen(t[0].sql) - strlen(GUARD_END));
	for (i = 0; i < n; i++) {
		if (i > 0) {
			buf_printf(sql, ", i%lu AS (", (unsigned long)i);
			store_renumber(sql, t[i].sql, "$", at + 1);
			buf_addstr(sql, ")");
		}
		for (k = 0; k < json_array_size(t[i].values); k++, at++)
			vals[at] = param_text(json_array_get(t[i].values, k),
			    nums[at], sizeof(nums[at]));
	}
	if (n > 1)
		buf_addstr(sql, GUARD_END);
}

/*
 * A failure in a pipeline: one of a prepared statement the server forgot
 * (pg_send) has texts sent from then on.
 */
static int
pipe_fail(struct pg *p, const char *what, PGresult *r)
{
	const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	if (state != NULL && (strcmp(state, "26000") == 0 ||
	    strcmp(state, "0A000") == 0) && !p->no_prepare) {
		log_notice("pgsql: a prepared statement is unusable (%s); "
		    "sending statements as text from now on", state);
		p->no_prepare = 1;
	}
	return pg_fail(p, what, r);
}

/* The guard's answer: 1, 0 when it changed no row, or the failure. */
static int
guard_result(struct pg *p, const char *what, PGresult *r)
{
	const char *state;

	if (PQresultStatus(r) == PGRES_TUPLES_OK ||
	    PQresultStatus(r) == PGRES_COMMAND_OK)
		return 1;
	state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
	if (state != NULL && strcmp(state, "22012") == 0)
		return 0;
	return pipe_fail(p, what, r);
}

static int
guarded_one(struct pg *p, const char *what, const struct store_stmt *t,
    size_t n, size_t nv)
{
	const char **vals;
	char (*nums)[40];
	struct buf sql;
	PGresult *r;
	int rc;

	vals = xcalloc(nv + 1, sizeof(*vals));
	nums = xcalloc(nv + 1, sizeof(*nums));
	buf_init(&sql);
	fold(t, n, &sql, vals, nums);
	if (p->echo)
		log_debug("sql: %s", buf_str(&sql));
	/* Its text changes only with the result tables' columns. */
	r = pg_send(p, 1, buf_str(&sql), (int)nv, vals);
	if (r == NULL)
		rc = p->base.dead ? STORE_DEAD : -1;
	else
		rc = guard_result(p, what, r);
	PQclear(r);
	buf_free(&sql);
	free(vals);
	free(nums);
	return rc;
}

/*
 * Queues one statement of a pipeline: by the name it was prepared
 * under, or as text.
 */
static int
pipe_send(struct pg *p, int hot, const char *name, const char *sql, int n,
    const char *const *vals)
{
	if (hot)
		return PQsendQueryPrepared(p->conn, name, n, vals, NULL, NULL,
		    0);
	return PQsendQueryParams(p->conn, sql, n, NULL, vals, NULL, NULL, 0);
}

/*
 * The next answer of a pipeline: that of one statement (the NULL that
 * ends it consumed), or NULL when the connection failed.
 */
static PGresult *
pipe_result(struct pg *p)
{
	PGresult *r, *more;

	if ((r = PQgetResult(p->conn)) == NULL)
		return NULL;
	if (PQresultStatus(r) != PGRES_PIPELINE_SYNC)
		while ((more = PQgetResult(p->conn)) != NULL)
			PQclear(more);
	return r;
}

/*
 * A success and the claim of the next run as one transaction in one
 * round trip (store_impl.h, guarded_claim): the guard, folded into one
 * statement, then the claim, then the sync that commits both.  When the
 * guard fails, the server skips the claim (the pipeline is aborted);
 * when the claim fails, the success is undone with it.
 */
static int	pg_guarded(struct store *, const char *,
		    const struct store_stmt *, size_t, long *);

static int
guarded_claim_once(struct store *st, const char *what,
    const struct store_stmt *t, size_t n, const char *token, double lease,
    json_t **row, int *looked)
{
	struct pg *p = (struct pg *)st;
	const char *cvals[2], **vals;
	char (*nums)[40], lease_s[40], name[2][24];
	struct buf sql;
	int hot[2], rc;
	size_t nv;
	PGresult *r;

	*row = NULL;
	*looked = 0;
	if ((rc = pg_ready(p)) != 0)
		return rc;
	nv = n == 1 ? json_array_size(t[0].values) : foldable(t, n);
	if (n == 0 || (n > 1 && nv == 0))
		return pg_guarded(st, what, t, n, NULL);
	vals = xcalloc(nv + 1, sizeof(*vals));
	nums = xcalloc(nv + 1, sizeof(*nums));
	buf_init(&sql);
	fold(t, n, &sql, vals, nums);
	snprintf(lease_s, sizeof(lease_s), "%.17g", lease);
	cvals[0] = token;
	cvals[1] = lease_s;
	/* Both are prepared, when they are not yet, before the pipeline. */
	if ((hot[0] = pg_hot(p, buf_str(&sql), (int)nv, name[0])) == -1 ||
	    (hot[1] = pg_hot(p, claim_run_sql, 2, name[1])) == -1) {
		rc = p->base.dead ? STORE_DEAD : -1;
		goto out;
	}
	if (p->echo) {
		log_debug("sql: %s", buf_str(&sql));
		log_debug("sql+: %s", claim_run_sql);
	}
	if (PQenterPipelineMode(p->conn) != 1) {
		rc = pg_fail(p, "pipeline", NULL);
		goto out;
	}
	if (pipe_send(p, hot[0], name[0], buf_str(&sql), (int)nv, vals) != 1 ||
	    pipe_send(p, hot[1], name[1], claim_run_sql, 2, cvals) != 1 ||
	    PQpipelineSync(p->conn) != 1) {
		/* Without the sync nothing commits; the session is reset. */
		rc = pg_fail(p, "pipeline", NULL);
		PQreset(p->conn);
		p->needs_setup = 1;
		goto out;
	}
	/* The success's answer, the claim's, then the sync's. */
	if ((r = pipe_result(p)) == NULL)
		rc = pg_fail(p, what, NULL);
	else
		rc = guard_result(p, what, r);
	PQclear(r);
	if (PQstatus(p->conn) == CONNECTION_OK &&
	    (r = pipe_result(p)) != NULL) {
		if (rc == 1 && PQresultStatus(r) == PGRES_TUPLES_OK) {
			*looked = 1;
			if (PQntuples(r) > 0)
				first_row(r, row);	/* it clears r */
			else
				PQclear(r);
			r = NULL;
		} else if (rc == 1)
			rc = pipe_fail(p, "claim run", r);
		PQclear(r);
	}
	if (PQstatus(p->conn) == CONNECTION_OK) {
		r = PQgetResult(p->conn);
		if (PQresultStatus(r) != PGRES_PIPELINE_SYNC && rc >= 0)
			rc = pg_fail(p, "pipeline sync", r);
		PQclear(r);
	}
	note_notifies(p);
	if (PQexitPipelineMode(p->conn) != 1 && rc >= 0)
		rc = pg_fail(p, "pipeline end", NULL);
	if (PQstatus(p->conn) != CONNECTION_OK)
		rc = pg_fail(p, what, NULL);
	if (rc != 1) {
		/*
		 * Nothing of it was written, or, when the connection went,
		 * nothing is known of it (store.c).
		 */
		json_decref(*row);
		*row = NULL;
		*looked = 0;
	}
out:
	buf_free(&sql);
	free(vals);
	free(nums);
	return rc;
}

/*
 * A prepared statement the server forgot fails the pipeline, and undoes
 * the success with it: the whole goes again at once, as text.
 */
static int
pg_guarded_claim(struct store *st, const char *what,
    const struct store_stmt *t, size_t n, const char *token, double lease,
    json_t **row, int *looked)
{
	struct pg *p = (struct pg *)st;
	int prepared = !p->no_prepare, rc;

	rc = guarded_claim_once(st, what, t, n, token, lease, row, looked);
	if (rc == -1 && prepared && p->no_prepare &&
	    PQstatus(p->conn) == CONNECTION_OK)
		rc = guarded_claim_once(st, what, t, n, token, lease, row,
		    looked);
	return rc;
}

/*
 * The INSERT of a result table's rows from one JSON array ($2): the
 * server turns each element into a row of the table's type, by column
 * name, as its own input functions read the values.
 */
static void
pg_insert_json_sql(struct buf *out, const char *table,
    const char *const *cols)
{
	size_t k;

	buf_printf(out, "INSERT INTO %s (run_id", table);
	for (k = 0; cols[k] != NULL; k++)
		buf_printf(out, ", %s", cols[k]);
	buf_addstr(out, ") SELECT $1::uuid");
	for (k = 0; cols[k] != NULL; k++)
		buf_printf(out, ", j.%s", cols[k]);
	buf_printf(out, " FROM json_populate_recordset(NULL::%s, $2::json)"
	    " j", table);
}

/*
 * The statements as one transaction in one round trip (store_impl.h):
 * a guard followed by INSERTs as one statement, others in one pipeline.
 * The first statement guards the others by failing with a division by
 * zero when it changed no row, which undoes it and skips the rest.
 */
static int
pg_guarded(struct store *st, const char *what, const struct store_stmt *t,
    size_t n, long *last)
{
	struct pg *p = (struct pg *)st;
	size_t i, k, nv, most = 0;
	const char **vals;
	char (*nums)[40], state[6];
	int rc;

	if ((rc = pg_ready(p)) != 0)
		return rc;
	if (last == NULL && (nv = foldable(t, n)) > 0)
		return guarded_one(p, what, t, n, nv);
	for (i = 0; i < n; i++)
		if (json_array_size(t[i].values) > most)
			most = json_array_size(t[i].values);
	vals = xcalloc(most + 1, sizeof(*vals));
	nums = xcalloc(most + 1, sizeof(*nums));
	if (PQenterPipelineMode(p->conn) != 1) {
		free(vals);
		free(nums);
		return pg_fail(p, "pipeline", NULL);
	}
	for (i = 0, rc = 0; i < n && rc == 0; i++) {
		/* "sql+": in the round trip of the statement before. */
		if (p->echo)
			log_debug("%s %s", i == 0 ? "sql:" : "sql+:",
			    t[i].sql);
		nv = json_array_size(t[i].values);
		for (k = 0; k < nv; k++)
			vals[k] = param_text(json_array_get(t[i].values, k),
			    nums[k], sizeof(nums[k]));
		if (PQsendQueryParams(p->conn, t[i].sql, (int)nv, NULL, vals,
		    NULL, NULL, 0) != 1)
			rc = pg_fail(p, what, NULL);
	}
	free(vals);
	free(nums);
	if (rc != 0 || PQpipelineSync(p->conn) != 1) {
		/* Without the sync nothing commits; the session is reset. */
		rc = rc != 0 ? rc : pg_fail(p, "pipeline sync", NULL);
		PQreset(p->conn);
		p->needs_setup = 1;
		return rc;
	}
	rc = pipeline_end(p, (int)n, state, last);
	if (rc != 0 && strcmp(state, "22012") == 0)
		return 0;	/* the guard changed no row */
	return rc != 0 ? rc : 1;
}

#define GC_ENV_COND							\
	" e.status IN ('ready', 'failed')"				\
	" AND COALESCE(e.last_used_at, e.updated_at) <"			\
	"  now() - make_interval(days => $1::int)"			\
	" AND (e.claim_expires_at IS NULL OR e.claim_expires_at <= now())" \
	" AND NOT EXISTS (SELECT 1 FROM configurations c"		\
	"  WHERE c.id = e.configuration_id AND c.status = 'active')"	\
	" AND NOT EXISTS (SELECT 1 FROM runs r WHERE " ENV_KEY("e", "r") \
	"  AND r.status IN ('queued', 'running'))"

/* Consumes pending notifications; returns how many there were. */
static int
drain_notifies(struct pg *p)
{
	PGnotify *n;
	int count = 0;

	while ((n = PQnotifies(p->conn)) != NULL) {
		count++;
		PQfreemem(n);
	}
	return count;
}

static int
pg_wait(struct store *st, double timeout)
{
	struct pg *p = (struct pg *)st;
	struct pollfd pfd[2];
	double end = now_mono() + timeout, left;

	if (pg_ready(p) != 0) {
		/* Sleep instead, so a dead server is not hammered. */
		store_pause(st, timeout);
		return 0;
	}
	if (drain_notifies(p) > 0 || p->notified) {
		p->notified = 0;
		return 1;
	}
	while ((left = end - now_mono()) > 0) {
		pfd[0].fd = PQsocket(p->conn);
		pfd[0].events = POLLIN;
		pfd[0].revents = 0;
		pfd[1].fd = st->wake_fd;
		pfd[1].events = POLLIN;
		pfd[1].revents = 0;
		if (pfd[0].fd < 0)
			return 0;
		if (poll(pfd, 2, (int)(left * 1000) + 1) <= 0)
			return 0;	/* timeout, or a signal */
		if (pfd[1].revents != 0)
			return 0;	/* asked to stop waiting */
		if (PQconsumeInput(p->conn) == 0) {
			pg_fail(p, "listen", NULL);
			return 0;
		}
		if (drain_notifies(p) > 0)
			return 1;
	}
	return 0;
}

static int
lookup_one(PGresult *r, char *out)
{
	int got;

	if (r == NULL)
		return -1;
	if ((got = PQntuples(r) > 0))
		val_copy(r, 0, 0, out, 64);
	PQclear(r);
	return got;
}

static int
pg_register(struct store *st, const char *ws, const char *cfg, char *ws_id,
    char *cfg_id)
{
	static const char find_ws[] =
	    "SELECT id FROM workspaces WHERE slug = $1 OR id = $2::uuid";
	static const char add_ws[] =
	    "INSERT INTO workspaces (id, name, slug) VALUES ($1, $2, $3)";
	static const char find_cfg[] =
	    "SELECT id FROM configurations WHERE workspace_id = $1 AND"
	    " (display_name = $2 OR id = $3::uuid)";
	static const char add_cfg[] =
	    "INSERT INTO configurations (id, workspace_id, display_name,"
	    "  status, activated_at) SELECT $1, $2, $3,"
	    "  CASE WHEN EXISTS (SELECT 1 FROM configurations WHERE"
	    "   workspace_id = $2 AND status = 'active') THEN 'draft'"
	    "   ELSE 'active' END, now()";
	struct pg *p = (struct pg *)st;
	char slug[101], wu[37], cu[37];
	int rc;

	util_slug(ws, slug, sizeof(slug));
	if (pg_begin(p) == -1)
		return -1;
	if (pg_plain(p, "LOCK TABLE workspaces, configurations IN SHARE ROW "
	    "EXCLUSIVE MODE") == -1)
		return pg_rollback(p, -1);
	rc = lookup_one(pg_query(p, find_ws, "ss", slug, uuid_param(ws, wu)),
	    ws_id);
	if (rc == 0) {
		util_uuid(ws_id);
		rc = pg_exec(pg_query(p, add_ws, "sss", ws_id, ws, slug));
	}
	if (rc < 0)
		return pg_rollback(p, -1);
	rc = lookup_one(pg_query(p, find_cfg, "sss", ws_id, cfg,
	    uuid_param(cfg, cu)), cfg_id);
	if (rc == 0) {
		util_uuid(cfg_id);
		rc = pg_exec(pg_query(p, add_cfg, "sss", cfg_id, ws_id, cfg));
	}
	if (rc < 0)
		return pg_rollback(p, -1);
	return pg_commit(p);
}

/* The statements store.c runs itself (store_impl.h). */
/*
 * (id, token, output path): a run's success, guarded by its claim.  It
 * divides by zero when the claim is lost (store_impl.h).  The result rows
 * of an earlier success need no clearing here: the claim of the run's
 * new attempt removed them.
 */
#define SUCCEEDED							\
	"WITH u AS (UPDATE runs SET status = 'succeeded',"		\
	"  completed_at = now(), claimed_by = NULL,"			\
	"  claim_expires_at = NULL, exit_code = 0, output_path = $3,"	\
	"  error_message = NULL"					\
	"  WHERE id = $1 AND status = 'running' AND claimed_by = $2"	\
	"  RETURNING id)" GUARD_END

static const struct store_sql pgsql_sql = {
	.list_hosts =
	    "SELECT name, holder, " UTC_TEXT("expires_at") " AS expires_at,"
	    "  CASE WHEN expires_at < now() THEN 'gone' ELSE 'up' END AS state"
	    " FROM worker_leases WHERE name LIKE 'host:%' ORDER BY name",
	.list_runs =
	    "SELECT id::text AS id, status, attempt_count, max_attempts,"
	    "  exit_code, " UTC_TEXT("created_at") " AS created_at, "
	    UTC_TEXT("started_at") " AS started_at, "
	    UTC_TEXT("completed_at") " AS completed_at, "
	    UTC_TEXT("available_at") " AS available_at,"
	    "  claimed_by, error_message," NAMES_OF_RUN " FROM runs"
	    " WHERE $1::text IS NULL OR status = $1"
	    " ORDER BY created_at DESC, id LIMIT $2",
	.list_environments =
	    "SELECT id::text AS id, workspace_id::text AS workspace_id,"
	    "  configuration_id::text AS configuration_id, deps_digest, status,"
	    "  error_message, claimed_by, "
	    UTC_TEXT("created_at") " AS created_at, "
	    UTC_TEXT("updated_at") " AS updated_at, "
	    UTC_TEXT("last_used_at") " AS last_used_at,"
	    "  python_version, engine_version, python_interpreter"
	    " FROM environments ORDER BY created_at",
	.show_run =
	    "SELECT id::text AS id, configuration_id::text AS configuration_id,"
	    "  workspace_id::text AS workspace_id,"
	    "  input_document_id::text AS input_document_id,"
	    "  input_sheet_names::text AS input_sheet_names, output_path,"
	    "  submitted_by_user_id::text AS submitted_by_user_id,"
	    "  engine_spec, deps_digest, status, exit_code, "
	    UTC_TEXT("created_at") " AS created_at, "
	    UTC_TEXT("started_at") " AS started_at, "
	    UTC_TEXT("completed_at") " AS completed_at, error_message, "
	    UTC_TEXT("available_at") " AS available_at,"
	    "  run_options::text AS run_options, attempt_count, max_attempts,"
	    "  claimed_by, " UTC_TEXT("claim_expires_at") " AS claim_expires_at,"
	    NAMES_OF_RUN " FROM runs WHERE id = $1::uuid",
	.show_metrics =
	    "SELECT * FROM run_metrics WHERE run_id = $1::uuid",
	/* every column the table has: valid_cells came later */
	.show_fields =
	    "SELECT * FROM run_fields WHERE run_id = $1::uuid"
	    " ORDER BY field",
	.show_columns =
	    "SELECT * FROM run_table_columns WHERE run_id = $1::uuid"
	    " ORDER BY workbook_index, sheet_index, table_index, column_index",
	.heartbeat_run =
	    "UPDATE runs SET claim_expires_at = now() +"
	    "  make_interval(secs => $3)"
	    " WHERE id = $1 AND status = 'running' AND claimed_by = $2",
	.heartbeat_environment =
	    "UPDATE environments SET"
	    "  claim_expires_at = now() + make_interval(secs => $3)"
	    " WHERE id = $1 AND status = 'building' AND claimed_by = $2",
	.environment_touch =
	    "UPDATE environments SET last_used_at = now(), updated_at = now()"
	    " WHERE id = $1",
	.environment_requeue =
	    "UPDATE environments SET status = 'queued', error_message = $2,"
	    "  claimed_by = NULL, claim_expires_at = NULL, updated_at = now()"
	    " WHERE id = $1 AND status = 'ready'",
	.run_requeue =
	    "UPDATE runs SET status = 'queued', attempt_count = 0,"
	    "  available_at = now(), started_at = NULL, completed_at = NULL,"
	    "  exit_code = NULL,"
	    "  error_message = NULL, output_path = NULL, claimed_by = NULL,"
	    "  claim_expires_at = NULL"
	    " WHERE id = $1::uuid AND status IN ('succeeded', 'failed',"
	    "  'cancelled')",
	.run_cancel =
	    "UPDATE runs SET status = 'cancelled', completed_at = now(),"
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'Run cancelled by an operator'"
	    " WHERE id = $1::uuid AND status IN ('queued', 'running')",
	.environment_rebuild =
	    "UPDATE environments SET status = 'queued', error_message = NULL,"
	    "  claimed_by = NULL, claim_expires_at = NULL, updated_at = now()"
	    " WHERE id = $1::uuid"
	    "  AND status IN ('ready', 'failed', 'queued')",
	.run_abandon =
	    "UPDATE runs SET" LOST_RUN ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = $4, exit_code = NULL, output_path = NULL"
	    " WHERE id = $3 AND status = 'running' AND claimed_by = $5",
	.environment_abandon =
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = $3, updated_at = now()"
	    " WHERE id = $1 AND status = 'building' AND claimed_by = $2",
	.run_claimed_with =
	    "SELECT id::text AS id FROM runs"
	    " WHERE claimed_by = $1 AND status = 'running'",
	.environment_claimed_with =
	    "SELECT id::text AS id FROM environments WHERE claimed_by = $1"
	    " AND status = 'building'",
	.run_finished_before =
	    "SELECT status IN ('succeeded', 'failed', 'cancelled') AND"
	    " completed_at < now() - make_interval(days => $2::int) AS v"
	    " FROM runs WHERE id = $1::uuid",
	.pending =
	    "SELECT (SELECT count(*) FROM runs WHERE (status = 'queued'"
	    "  AND attempt_count < max_attempts) OR status = 'running') +"
	    " (SELECT count(*) FROM environments"
	    "  WHERE status IN ('queued', 'building')) AS n",
	.queue_stats =
	    QUEUE_STATS("extract(epoch FROM now() - available_at) * 1000"),
	.next_due =
	    "SELECT extract(epoch FROM min(available_at) - now()) * 1000"
	    " AS ms FROM runs WHERE status = 'queued'"
	    " AND attempt_count < max_attempts",
	.host_beat =
	    "INSERT INTO worker_leases (name, holder, expires_at)"
	    " VALUES ($1, $2, now() + make_interval(secs => $3))"
	    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
	    "  expires_at = excluded.expires_at",
	.environment_ready =
	    "UPDATE environments SET status = 'ready', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = NULL,"
	    "  updated_at = now(), python_interpreter = $3,"
	    "  python_version = $4, engine_version = $5"
	    " WHERE id = $1 AND status = 'building' AND claimed_by = $2",
	.document =
	    "SELECT stored_uri, original_filename FROM documents"
	    " WHERE id = $1",
	.run_retry =
	    "UPDATE runs SET status = 'queued',"
	    "  available_at = now() + make_interval(secs => $3),"
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = $4, completed_at = NULL, exit_code = NULL,"
	    "  output_path = NULL"
	    " WHERE id = $1 AND status = 'running' AND claimed_by = $2",
	.run_release =
	    "UPDATE runs SET status = 'queued',"
	    "  available_at = now() + make_interval(secs => $3),"
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = $4, completed_at = NULL, exit_code = NULL,"
	    "  output_path = NULL,"
	    "  attempt_count = GREATEST(attempt_count - 1, 0)"
	    " WHERE id = $1 AND status = 'running' AND claimed_by = $2",
	.run_fail =
	    "UPDATE runs SET status = 'failed', completed_at = now(),"
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = $3, exit_code = $4, output_path = NULL"
	    " WHERE id = $1 AND status = 'running' AND claimed_by = $2",
	.gc_candidates =
	    "SELECT id::text AS id, workspace_id::text AS workspace_id,"
	    " configuration_id::text AS configuration_id, deps_digest"
	    " FROM environments e WHERE" GC_ENV_COND,
	.gc_delete =
	    "DELETE FROM environments e WHERE e.id = $2::uuid AND"
	    GC_ENV_COND,
	.sweep_runs =
	    "UPDATE runs SET" LOST_RUN ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'lease expired'"
	    " WHERE status = 'running' AND claim_expires_at < now()"
	    " RETURNING status",
	.sweep_environments =
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = 'lease expired',"
	    "  updated_at = now()"
	    " WHERE status = 'building' AND claim_expires_at < now()",
	.singleton =
	    "INSERT INTO worker_leases (name, holder, expires_at)"
	    " VALUES ($1, $2, now() + make_interval(secs => $3))"
	    " ON CONFLICT (name) DO UPDATE SET holder = excluded.holder,"
	    "  expires_at = excluded.expires_at"
	    " WHERE worker_leases.holder = excluded.holder"
	    "  OR worker_leases.expires_at < now()",
	.environment_failed =
	    "WITH u AS (UPDATE environments SET status = 'failed',"
	    "  claimed_by = NULL, claim_expires_at = NULL, error_message = $3,"
	    "  updated_at = now(), python_interpreter = NULL,"
	    "  python_version = NULL, engine_version = NULL"
	    "  WHERE id = $1 AND status = 'building' AND claimed_by = $2"
	    "  RETURNING id)" GUARD_END,
	.charge_runs =
	    "UPDATE runs r SET"
	    "  status = CASE WHEN r.attempt_count + 1 >= r.max_attempts"
	    "    THEN 'failed' ELSE 'queued' END,"
	    "  completed_at = CASE WHEN r.attempt_count + 1 >= r.max_attempts"
	    "    THEN now() ELSE NULL END,"
	    "  exit_code = CASE WHEN r.attempt_count + 1 >= r.max_attempts"
	    "    THEN 2 ELSE NULL END,"
	    "  available_at = CASE WHEN r.attempt_count + 1 >= r.max_attempts"
	    "    THEN r.available_at ELSE now() + " BACKOFF("r.attempt_count")
	    "    END,"
	    "  error_message = 'Environment build failed: ' || $4::text,"
	    "  attempt_count = r.attempt_count + 1"
	    " FROM environments e"
	    " WHERE e.id = $3 AND " ENV_KEY("e", "r") " AND r.status = 'queued'"
	    "  AND r.available_at <= now()"
	    "  AND r.attempt_count < r.max_attempts",
	.ensure_insert =
	    "INSERT INTO environments (id, workspace_id, configuration_id,"
	    "  engine_spec, deps_digest, status, created_at, updated_at)"
	    " SELECT gen_random_uuid(), k.workspace_id, k.configuration_id,"
	    "  k.engine_spec, k.deps_digest, 'queued', now(), now()"
	    " FROM (SELECT DISTINCT workspace_id, configuration_id,"
	    "  engine_spec, deps_digest FROM runs WHERE status = 'queued'"
	    "  AND available_at <= now() AND attempt_count < max_attempts) k"
	    " WHERE NOT EXISTS (SELECT 1 FROM environments e WHERE "
	    ENV_KEY("e", "k") ") ON CONFLICT DO NOTHING",
	.ensure_requeue =
	    "UPDATE environments e SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, updated_at = now()"
	    " WHERE e.status = 'failed' AND EXISTS (SELECT 1 FROM runs r"
	    "  WHERE " ENV_KEY("e", "r") " AND r.status = 'queued'"
	    "  AND r.available_at <= now() AND r.attempt_count < r.max_attempts)",
	.enqueue_document =
	    "INSERT INTO documents (id, workspace_id, original_filename,"
	    "  content_type, byte_size, sha256, stored_uri, expires_at,"
	    "  last_run_id)"
	    " VALUES ($1, $2, $3, $4, $5, $6, $7, now() + interval '30 days',"
	    "  $8)",
	.enqueue_configuration =
	    "UPDATE configurations SET content_digest = $2,"
	    "  last_used_at = now(), updated_at = now() WHERE id = $1",
	.enqueue_run =
	    "INSERT INTO runs (id, configuration_id, workspace_id,"
	    "  input_document_id, input_sheet_names, engine_spec, deps_digest,"
	    "  run_options, max_attempts)"
	    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
	.run_succeeded = SUCCEEDED,
	.run_succeeded_replacing = SUCCEEDED,	/* the claim cleared them */
};

/* The driver's one call (store_impl.h). */
static json_t *
pg_rows(struct store *st, const char *what, const char *sql,
    const char *fmt, va_list ap)
{
	return rows_json(pg_queryv((struct pg *)st, 0, sql, fmt, ap));
}

static int
pg_count(struct store *st, const char *what, const char *sql,
    const char *fmt, va_list ap)
{
	return pg_exec(pg_queryv((struct pg *)st, 0, sql, fmt, ap));
}

static const struct store_ops pgsql_ops = {
	.rows = pg_rows,
	.count = pg_count,
	.guarded = pg_guarded,
	.guarded_claim = pg_guarded_claim,
	.param = "$",
	.run_id_param = "$1",
	.insert_json_sql = pg_insert_json_sql,
	.sql = &pgsql_sql,
	.name = "pgsql",
	.close = pg_close,
	.init_schema = pg_init_schema,
	.table_columns = pg_table_columns,
	.claim_environment = pg_claim_environment,
	.claim_run = pg_claim_run,
	.wait = pg_wait,
	.register_names = pg_register,
};
