/*
 * The SQL Server backend (SQL Server 2019 and later, Azure SQL): its
 * T-SQL and the store operations, over the db-lib driver of tds.c.  The
 * same statements run on Babelfish for PostgreSQL,
 * which speaks TDS too, so they keep to the subset both understand: no
 * MERGE, no updatable common table expression, every column qualified
 * where a FROM or an alias is in scope, and OUTPUT ... INTO a table
 * variable (runs and environments carry triggers, on which SQL Server
 * refuses a bare OUTPUT).
 *
 * Every statement is an RPC call of sp_executesql with typed parameters;
 * no value is ever spliced into SQL text.  Claims pick one row with
 * UPDLOCK, READPAST, ROWLOCK, READCOMMITTEDLOCK in a scalar subquery and
 * the UPDATE's own WHERE repeats the state check, because Babelfish
 * ignores table hints and would otherwise hand one row to two callers.
 * Time is the server's SYSUTCDATETIME(); ids are compared as
 * UNIQUEIDENTIFIER and returned lower-cased, the form paths are built
 * from.  There is no notification channel: idle workers poll.
 *
 * A connection that breaks is opened again (by the driver) before the
 * next operation, with a growing delay between attempts; the operation
 * that saw the break reports STORE_DEAD, and its caller decides whether
 * to try again.
 */
#include <sys/types.h>

#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "results.h"
#include "store_impl.h"
#include "store_mssql.h"
#include "util.h"

#define MAX_TTL_DAYS	365000L

/*
 * The database clock, as a DATETIMEOFFSET in UTC so that comparisons
 * with the DATETIMEOFFSET columns never mix types.
 */
#define NOW		"CAST(SYSUTCDATETIME() AS DATETIMEOFFSET)"
#define EPOCH		"CAST('1970-01-01T00:00:00+00:00'"		\
			" AS DATETIMEOFFSET)"
#define UUID(p)		"CAST(" p " AS UNIQUEIDENTIFIER)"
#define GUID(c)		"LOWER(CONVERT(varchar(36), " c "))"
/*
 * A time read as milliseconds since 1970: CONVERT styles and FORMAT()
 * differ between SQL Server and Babelfish, DATEDIFF_BIG does not.  The
 * "__ts" suffix tells the reader to turn the number into ISO 8601.
 */
#define TS(c, name)	"DATEDIFF_BIG(millisecond, " EPOCH ", " c ") AS " \
			name "__ts"
/*
 * NOW plus x seconds (a FLOAT).  DATEADD takes an INT only, so whole
 * seconds and milliseconds are added separately to allow long spans.
 */
#define PLUS(x)		"DATEADD(millisecond, CAST(((" x ") - "		\
			"FLOOR(" x ")) * 1000 AS INT), "		\
			"DATEADD(second, CAST(FLOOR(" x ") AS INT), "	\
			NOW "))"
/* The exponent of the backoff, kept between 0 and 30. */
#define EXPO(n)		"CASE WHEN (" n ") < 0 THEN 0"			\
			" WHEN (" n ") > 30 THEN 30 ELSE (" n ") END"
#define RAW_BACKOFF(n)	"@p1 * POWER(CAST(2 AS FLOAT), " EXPO(n) ")"
/*
 * The retry delay after failed attempt n + 1, in seconds, with the base
 * in @p1 and the maximum in @p2 (SQL Server 2019 has no LEAST).
 */
#define BACKOFF(n)	"(CASE WHEN " RAW_BACKOFF(n) " > @p2 THEN @p2 ELSE " \
			RAW_BACKOFF(n) " END)"
/*
 * What the claims pick from: a queued environment; a due run with
 * attempts left whose environment is ready.  On SQL Server UPDLOCK holds
 * the picked row until the UPDATE, and READPAST skips rows that other
 * claimers (or an application's open transaction) hold.
 */
#define PICK_HINTS	" WITH (UPDLOCK, READPAST, ROWLOCK, READCOMMITTEDLOCK)"
#define ENV_PICK	PICK_HINTS " WHERE q.status = 'queued'"
#define RUN_PICK	PICK_HINTS					\
			" JOIN environments e ON " ENV_KEY("e", "q")	\
			" WHERE q.status = 'queued' AND q.available_at <= "	\
			NOW " AND q.attempt_count < q.max_attempts"	\
			" AND e.status = 'ready'"
/*
 * Every batch starts like this.  NOCOUNT keeps row counts from arriving
 * as results; XACT_ABORT makes any error roll back the whole transaction
 * instead of leaving half of it.  Both end with the batch.
 */
#define BATCH		"SET NOCOUNT ON; SET XACT_ABORT ON; "
/*
 * How many rows the statement just before changed.  No batch declares a
 * table variable: on Babelfish 4.2 a batch that has one makes the
 * foreign key checks of a trigger it fires look for the referenced table
 * under a doubly prefixed schema ("relation db_db_dbo.workspaces does
 * not exist", about every second time), and OUTPUT ... INTO a table
 * variable on a table with triggers fails with "portal snapshots (1) did
 * not account for all active snapshots (2)".  @@ROWCOUNT is read right
 * after the statement, before anything else can reset it; a trigger's
 * own statements run in the trigger's scope and leave it alone.
 */
#define ROWCOUNT	" SELECT @@ROWCOUNT AS n;"
/* A run whose claim ended without a result (store_impl.h). */
#define LOST_RUN	GIVE_UP_OR_RETRY(NOW,				\
			    PLUS(BACKOFF("attempt_count - 1")))


static const struct store_ops mssql_ops;
/*
 * The schema of the ADE tables the daemon uses, one batch per table so
 * that a table that exists (created by the ADE migrations, say) is left
 * alone together with its indexes.  Columns that hold people's text
 * (names, file names, error messages, the sheets' headers and labels) are
 * NVARCHAR here, where the ADE migrations make them VARCHAR: a VARCHAR
 * column keeps only the characters of the database collation's code page
 * (unless the collation is a UTF-8 one), and any other character is
 * stored as "?", on SQL Server and on Babelfish alike.
 */
static const char *const schema_batches[] = {
"IF OBJECT_ID(N'workspaces', N'U') IS NULL"
" CREATE TABLE workspaces ("
"  id UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,"
"  name NVARCHAR(255) NOT NULL,"
"  slug VARCHAR(100) NOT NULL CONSTRAINT ux_workspaces_slug UNIQUE,"
"  settings NVARCHAR(MAX) NOT NULL DEFAULT '{}',"
"  created_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET(),"
"  updated_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET())",

"IF OBJECT_ID(N'configurations', N'U') IS NULL BEGIN"
" CREATE TABLE configurations ("
"  id UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,"
"  workspace_id UNIQUEIDENTIFIER NOT NULL REFERENCES workspaces (id),"
"  display_name NVARCHAR(255) NOT NULL,"
"  status VARCHAR(20) NOT NULL DEFAULT 'draft'"
"    CHECK (status IN ('draft', 'active', 'archived')),"
"  content_digest VARCHAR(80),"
"  last_used_at DATETIMEOFFSET,"
"  activated_at DATETIMEOFFSET,"
"  created_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET(),"
"  updated_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET());"
" CREATE INDEX ix_configurations_workspace_status"
"  ON configurations (workspace_id, status);"
" CREATE UNIQUE INDEX ux_configurations_active_per_workspace"
"  ON configurations (workspace_id) WHERE status = 'active';"
" END",

"IF OBJECT_ID(N'documents', N'U') IS NULL"
" CREATE TABLE documents ("
"  id UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,"
"  workspace_id UNIQUEIDENTIFIER NOT NULL REFERENCES workspaces (id),"
"  original_filename NVARCHAR(255) NOT NULL,"
"  content_type VARCHAR(255),"
"  byte_size BIGINT NOT NULL,"
"  version INT NOT NULL DEFAULT 1,"
"  sha256 VARCHAR(64) NOT NULL,"
"  stored_uri VARCHAR(512) NOT NULL,"
"  attributes NVARCHAR(MAX) NOT NULL DEFAULT '{}',"
"  uploaded_by_user_id UNIQUEIDENTIFIER,"
"  assignee_user_id UNIQUEIDENTIFIER,"
"  source VARCHAR(50) NOT NULL DEFAULT 'manual_upload'"
"    CHECK (source IN ('manual_upload')),"
"  expires_at DATETIMEOFFSET NOT NULL,"
"  last_run_id UNIQUEIDENTIFIER,"
"  comment_count INT NOT NULL DEFAULT 0,"
"  deleted_at DATETIMEOFFSET,"
"  deleted_by_user_id UNIQUEIDENTIFIER,"
"  created_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET(),"
"  updated_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET())",

/* CURSOR is a reserved word in T-SQL, hence the brackets. */
"IF OBJECT_ID(N'document_events', N'U') IS NULL BEGIN"
" CREATE TABLE document_events ("
"  [cursor] BIGINT IDENTITY(1, 1) NOT NULL PRIMARY KEY,"
"  workspace_id UNIQUEIDENTIFIER NOT NULL REFERENCES workspaces (id),"
"  document_id UNIQUEIDENTIFIER NOT NULL REFERENCES documents (id),"
"  event_type VARCHAR(40) NOT NULL"
"    CHECK (event_type IN ('document.changed', 'document.deleted')),"
"  document_version INT NOT NULL,"
"  occurred_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET());"
" CREATE INDEX ix_document_events_workspace_cursor"
"  ON document_events (workspace_id, [cursor]);"
" CREATE INDEX ix_document_events_workspace_document"
"  ON document_events (workspace_id, document_id);"
" CREATE INDEX ix_document_events_workspace_occurred"
"  ON document_events (workspace_id, occurred_at);"
" END",

"IF OBJECT_ID(N'runs', N'U') IS NULL BEGIN"
" CREATE TABLE runs ("
"  id UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,"
"  configuration_id UNIQUEIDENTIFIER NOT NULL"
"    REFERENCES configurations (id),"
"  workspace_id UNIQUEIDENTIFIER NOT NULL REFERENCES workspaces (id),"
"  input_document_id UNIQUEIDENTIFIER NOT NULL REFERENCES documents (id),"
"  input_sheet_names NVARCHAR(MAX),"
"  output_path VARCHAR(512),"
"  engine_spec VARCHAR(255) NOT NULL"
"    DEFAULT 'ade-engine @ git+https://github.com/clac-ca/ade-engine@main',"
"  deps_digest VARCHAR(128) NOT NULL DEFAULT 'sha256:"
    "2e1cfa82b035c26cbbbdae632cea070514eb8b773f616aaeaf668e2f0be8f10d',"
"  status VARCHAR(20) NOT NULL DEFAULT 'queued'"
"    CHECK (status IN ('queued', 'running', 'succeeded', 'failed',"
"                      'cancelled')),"
"  exit_code INT,"
"  submitted_by_user_id UNIQUEIDENTIFIER,"
"  created_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET(),"
"  started_at DATETIMEOFFSET,"
"  completed_at DATETIMEOFFSET,"
"  error_message NVARCHAR(MAX),"
"  available_at DATETIMEOFFSET NOT NULL DEFAULT SYSDATETIMEOFFSET(),"
"  run_options NVARCHAR(MAX),"
"  attempt_count INT NOT NULL DEFAULT 0,"
"  max_attempts INT NOT NULL DEFAULT 3,"
"  claimed_by VARCHAR(255),"
"  claim_expires_at DATETIMEOFFSET);"
" CREATE INDEX ix_runs_configuration ON runs (configuration_id);"
" CREATE INDEX ix_runs_workspace ON runs (workspace_id);"
" CREATE INDEX ix_runs_status ON runs (status);"
" CREATE INDEX ix_runs_input_document ON runs (input_document_id);"
" CREATE INDEX ix_runs_workspace_input_finished"
"  ON runs (workspace_id, input_document_id, completed_at, started_at);"
" CREATE INDEX ix_runs_workspace_created ON runs (workspace_id, created_at);"
" CREATE INDEX ix_runs_claim ON runs (status, available_at, created_at);"
" CREATE INDEX ix_runs_claim_expires ON runs (status, claim_expires_at);"
" CREATE INDEX ix_runs_status_completed ON runs (status, completed_at);"
" CREATE UNIQUE INDEX uq_runs_active_job"
"  ON runs (workspace_id, input_document_id, configuration_id)"
"  WHERE status IN ('queued', 'running');"
" END",

"IF OBJECT_ID(N'environments', N'U') IS NULL BEGIN"
" CREATE TABLE environments ("
"  id UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,"
"  workspace_id UNIQUEIDENTIFIER NOT NULL REFERENCES workspaces (id),"
"  configuration_id UNIQUEIDENTIFIER NOT NULL"
"    REFERENCES configurations (id),"
"  engine_spec VARCHAR(255) NOT NULL,"
"  deps_digest VARCHAR(128) NOT NULL,"
"  status VARCHAR(20) NOT NULL DEFAULT 'queued'"
"    CHECK (status IN ('queued', 'building', 'ready', 'failed')),"
"  error_message NVARCHAR(MAX),"
"  claimed_by VARCHAR(255),"
"  claim_expires_at DATETIMEOFFSET,"
"  created_at DATETIMEOFFSET NOT NULL,"
"  updated_at DATETIMEOFFSET NOT NULL,"
"  last_used_at DATETIMEOFFSET,"
"  python_version VARCHAR(50),"
"  python_interpreter VARCHAR(512),"
"  engine_version VARCHAR(50));"
" CREATE UNIQUE INDEX ux_environments_key"
"  ON environments (workspace_id, configuration_id, engine_spec,"
"                   deps_digest);"
" CREATE INDEX ix_environments_workspace ON environments (workspace_id);"
" CREATE INDEX ix_environments_configuration"
"  ON environments (configuration_id);"
" CREATE INDEX ix_environments_claim ON environments (status, created_at);"
" CREATE INDEX ix_environments_claim_expires"
"  ON environments (status, claim_expires_at);"
" CREATE INDEX ix_environments_status_last_used"
"  ON environments (status, last_used_at);"
" CREATE INDEX ix_environments_status_updated"
"  ON environments (status, updated_at);"
" END",

"IF OBJECT_ID(N'run_metrics', N'U') IS NULL"
" CREATE TABLE run_metrics ("
"  run_id UNIQUEIDENTIFIER NOT NULL PRIMARY KEY REFERENCES runs (id),"
"  evaluation_outcome VARCHAR(20),"
"  evaluation_findings_total INT,"
"  evaluation_findings_info INT,"
"  evaluation_findings_warning INT,"
"  evaluation_findings_error INT,"
"  validation_issues_total INT,"
"  validation_issues_info INT,"
"  validation_issues_warning INT,"
"  validation_issues_error INT,"
"  validation_max_severity VARCHAR(10),"
"  workbook_count INT,"
"  sheet_count INT,"
"  table_count INT,"
"  row_count_total INT,"
"  row_count_empty INT,"
"  column_count_total INT,"
"  column_count_empty INT,"
"  column_count_mapped INT,"
"  column_count_unmapped INT,"
"  field_count_expected INT,"
"  field_count_detected INT,"
"  field_count_not_detected INT,"
"  cell_count_total INT,"
"  cell_count_non_empty INT)",

"IF OBJECT_ID(N'run_fields', N'U') IS NULL BEGIN"
" CREATE TABLE run_fields ("
"  run_id UNIQUEIDENTIFIER NOT NULL REFERENCES runs (id),"
"  field NVARCHAR(128) NOT NULL,"
"  label NVARCHAR(255),"
"  detected BIT NOT NULL,"
"  best_mapping_score FLOAT,"
"  valid_cells INT NOT NULL DEFAULT 0,"
"  occurrences_tables INT NOT NULL,"
"  occurrences_columns INT NOT NULL,"
"  PRIMARY KEY (run_id, field));"
" CREATE INDEX ix_run_fields_run ON run_fields (run_id);"
" CREATE INDEX ix_run_fields_field ON run_fields (field);"
" END",

"IF OBJECT_ID(N'run_table_columns', N'U') IS NULL BEGIN"
" CREATE TABLE run_table_columns ("
"  run_id UNIQUEIDENTIFIER NOT NULL REFERENCES runs (id),"
"  workbook_index INT NOT NULL,"
"  workbook_name NVARCHAR(255) NOT NULL,"
"  sheet_index INT NOT NULL,"
"  sheet_name NVARCHAR(255) NOT NULL,"
"  table_index INT NOT NULL,"
"  column_index INT NOT NULL,"
"  header_raw NVARCHAR(MAX),"
"  header_normalized NVARCHAR(MAX),"
"  non_empty_cells INT NOT NULL,"
"  valid_cells INT NOT NULL DEFAULT 0,"
"  mapping_status VARCHAR(32) NOT NULL,"
"  mapped_field NVARCHAR(128),"
"  mapping_score FLOAT,"
"  mapping_method VARCHAR(32),"
"  unmapped_reason VARCHAR(64),"
"  PRIMARY KEY (run_id, workbook_index, sheet_index, table_index,"
"               column_index));"
" CREATE INDEX ix_run_table_columns_run ON run_table_columns (run_id);"
" CREATE INDEX ix_run_table_columns_run_sheet"
"  ON run_table_columns (run_id, sheet_name);"
" CREATE INDEX ix_run_table_columns_run_mapped_field"
"  ON run_table_columns (run_id, mapped_field);"
" END",

/*
 * Tables made by migrations older than valid_cells lack the column the
 * worker writes.
 */
"IF COL_LENGTH(N'run_fields', N'valid_cells') IS NULL"
" ALTER TABLE run_fields ADD valid_cells INT NOT NULL"
"  CONSTRAINT df_run_fields_valid_cells DEFAULT 0",
"IF COL_LENGTH(N'run_table_columns', N'valid_cells') IS NULL"
" ALTER TABLE run_table_columns ADD valid_cells INT NOT NULL"
"  CONSTRAINT df_run_table_columns_valid_cells DEFAULT 0",

"IF OBJECT_ID(N'worker_leases', N'U') IS NULL"
" CREATE TABLE worker_leases ("
"  name VARCHAR(64) NOT NULL PRIMARY KEY,"
"  holder VARCHAR(255) NOT NULL,"
"  expires_at DATETIMEOFFSET NOT NULL)",
NULL
};

/*
 * The triggers of reference sections 1.2 and 1.3, which write
 * document.changed rows for the API.  CREATE TRIGGER must open its
 * batch, so the check whether the table already has triggers (those of
 * the ADE migrations, which must not fire twice) is a query of its own.
 * Plain <> compares old and new values, as the reference describes: a
 * change from or to NULL alone does not count.
 */
static const struct {
	const char	*table;
	const char	*sql;
} schema_triggers[] = {
	{ "runs",
"CREATE TRIGGER trg_runs_document_events ON runs AFTER INSERT, UPDATE AS"
" BEGIN"
"  SET NOCOUNT ON;"
"  INSERT INTO document_events (workspace_id, document_id, event_type,"
"   document_version, occurred_at)"
"  SELECT i.workspace_id, d.id, 'document.changed', d.version,"
"   SYSDATETIMEOFFSET()"
"  FROM inserted i JOIN documents d ON d.id = i.input_document_id"
"  WHERE NOT EXISTS (SELECT 1 FROM deleted)"
"   OR EXISTS (SELECT 1 FROM deleted o WHERE o.id = i.id AND"
"    (o.status <> i.status OR o.started_at <> i.started_at"
"     OR o.completed_at <> i.completed_at"
"     OR o.output_path <> i.output_path"
"     OR o.error_message <> i.error_message));"
" END" },
	{ "environments",
"CREATE TRIGGER trg_environments_document_events ON environments"
" AFTER UPDATE AS"
" BEGIN"
"  SET NOCOUNT ON;"
"  INSERT INTO document_events (workspace_id, document_id, event_type,"
"   document_version, occurred_at)"
"  SELECT DISTINCT d.workspace_id, d.id, 'document.changed', d.version,"
"   SYSDATETIMEOFFSET()"
"  FROM inserted i JOIN deleted o ON o.id = i.id"
"  JOIN runs r ON " ENV_KEY("r", "i") " AND r.status = 'queued'"
"  JOIN documents d ON d.last_run_id = r.id"
"  WHERE (i.status = 'ready' AND o.status <> 'ready')"
"   OR (i.status <> 'ready' AND o.status = 'ready');"
" END" },
};

/* Pure helpers (store_mssql.h). */

/*
 * Copies len bytes of a URL part into out, decoding %XX escapes.  A
 * broken escape or %00 is an error, since the result is a C string.
 */
static int
url_decode(const char *s, size_t len, char *out, size_t outlen)
{
	size_t i, n = 0;
	int hi, lo;

	for (i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '%') {
			if (i + 2 >= len)
				return -1;
			hi = hex_digit((unsigned char)s[i + 1]);
			lo = hex_digit((unsigned char)s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
				return -1;
			ch = (unsigned char)(hi * 16 + lo);
			i += 2;
		}
		if (n + 1 >= outlen)
			return -1;
		out[n++] = (char)ch;
	}
	out[n] = '\0';
	return 0;
}

/*
 * Reads "mssql+pyodbc://user:password@host:port/database?options".
 * Every part is optional; absent ones are left empty (port 0), and the
 * query string (driver, Encrypt, ...) is ignored: FreeTDS takes TLS
 * settings from freetds.conf.  Returns 0, or -1 with a reason in err.
 */
int
mssql_parse_url(const char *url, struct mssql_url *u, char *err,
    size_t errlen)
{
	static const char scheme[] = "mssql+pyodbc://";
	const char *a, *end, *at, *colon, *hp, *hpend, *h, *hend, *p;
	char *num_end;
	long port;

	memset(u, 0, sizeof(*u));
	if (strncasecmp(url, scheme, sizeof(scheme) - 1) != 0) {
		snprintf(err, errlen, "only mssql+pyodbc:// URLs are accepted");
		return -1;
	}
	a = url + sizeof(scheme) - 1;
	end = a + strcspn(a, "/?#");
	/* The last @ ends the user part: a password may hold an @. */
	at = NULL;
	for (p = a; p < end; p++)
		if (*p == '@')
			at = p;
	if (at != NULL) {
		colon = memchr(a, ':', (size_t)(at - a));
		if (url_decode(a, (size_t)((colon ? colon : at) - a), u->user,
		    sizeof(u->user)) == -1 || (colon != NULL &&
		    url_decode(colon + 1, (size_t)(at - colon - 1),
		    u->password, sizeof(u->password)) == -1)) {
			snprintf(err, errlen, "bad user or password in the "
			    "URL");
			return -1;
		}
		hp = at + 1;
	} else
		hp = a;
	hpend = end;
	colon = NULL;
	if (*hp == '[') {
		/* An IPv6 literal: [::1]:1433. */
		if ((hend = memchr(hp, ']', (size_t)(hpend - hp))) == NULL) {
			snprintf(err, errlen, "unterminated [ in the URL host");
			return -1;
		}
		h = hp + 1;
		if (hend + 1 < hpend) {
			if (hend[1] != ':') {
				snprintf(err, errlen, "bad text after the URL "
				    "host");
				return -1;
			}
			colon = hend + 1;
		}
	} else {
		h = hp;
		colon = memchr(hp, ':', (size_t)(hpend - hp));
		hend = colon != NULL ? colon : hpend;
	}
	if (url_decode(h, (size_t)(hend - h), u->host, sizeof(u->host)) ==
	    -1) {
		snprintf(err, errlen, "bad host in the URL");
		return -1;
	}
	if (colon != NULL && colon + 1 < hpend) {
		char num[16];

		if ((size_t)(hpend - colon - 1) >= sizeof(num)) {
			snprintf(err, errlen, "bad port in the URL");
			return -1;
		}
		memcpy(num, colon + 1, (size_t)(hpend - colon - 1));
		num[hpend - colon - 1] = '\0';
		errno = 0;
		port = strtol(num, &num_end, 10);
		if (!isdigit((unsigned char)num[0]) || *num_end != '\0' ||
		    errno != 0 || port < 1 || port > 65535) {
			snprintf(err, errlen, "bad port in the URL");
			return -1;
		}
		u->port = port;
	}
	if (*end == '/') {
		p = end + 1;
		if (url_decode(p, strcspn(p, "?#"), u->database,
		    sizeof(u->database)) == -1) {
			snprintf(err, errlen, "bad database name in the URL");
			return -1;
		}
	}
	return 0;
}

/* Whether s is a GUID in its 36-character text form, in any case. */
int
mssql_is_guid(const char *s)
{
	size_t i;

	if (s == NULL || strlen(s) != 36)
		return 0;
	for (i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return 0;
		} else if (hex_digit((unsigned char)s[i]) < 0)
			return 0;
	}
	return 1;
}

/* The store. */

static char *
server_name(const char *host, long port)
{
	/* A named instance (host\inst) or a given port is used as is. */
	if (strchr(host, ':') != NULL || strchr(host, '\\') != NULL)
		return xstrdup(host);
	return xasprintf("%s:%ld", host, port);
}

struct store *
store_mssql_open(const struct conf *c, struct buf *err)
{
	struct mssql_url u;
	struct tds *m;
	char why[160];
	const char *host, *user, *db;
	long port;

	memset(&u, 0, sizeof(u));
	if (c->db_url_override[0] != '\0' &&
	    mssql_parse_url(c->db_url_override, &u, why, sizeof(why)) == -1) {
		buf_printf(err, "mssql: url_override: %s", why);
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	m->base.ops = &mssql_ops;
	m->base.max_params = MSSQL_BATCH_PARAMS;
	m->babelfish = -1;
	m->echo = c->db_echo;
	if ((m->tds_version = mssql_tds_version(c->db_tds_version)) < 0) {
		buf_printf(err, "mssql: tds_version %s is not one of 7.0, 7.1, "
		    "7.2, 7.3, 7.4 or auto", c->db_tds_version);
		free(m);
		return NULL;
	}
	/* Parts the URL names win; the others come from the keys. */
	host = u.host[0] != '\0' ? u.host : c->db_host;
	port = u.port > 0 ? u.port : (long)c->db_port;
	user = u.user[0] != '\0' ? u.user : c->db_user;
	db = u.database[0] != '\0' ? u.database : c->db_name;
	m->server = server_name(host, port);
	m->user = xstrdup(user);
	if (u.password[0] != '\0')
		m->password = xstrdup(u.password);
	else if (c->password != NULL)
		m->password = xstrdup(c->password);
	explicit_bzero(u.password, sizeof(u.password));
	m->database = xstrdup(db);
	m->app = xstrdup(c->db_app_name);
	m->login_timeout = (int)(c->db_login_timeout + 0.999);
	m->query_timeout = (int)(c->db_query_timeout + 0.999);
	log_debug("mssql: server %s, database %s, TDS %s", m->server,
	    m->database, c->db_tds_version);
	if (tds_open(m, err) == -1) {
		tds_free(m);
		return NULL;
	}
	return &m->base;
}

static void
mq_close(struct store *st)
{
	tds_close((struct tds *)st);
}

/*
 * Creates what is missing of the schema in one transaction: the tables
 * (with their indexes), the valid_cells columns, and the triggers of
 * tables that have none yet.
 */
static int
mq_init_schema(struct store *st)
{
	static const char has_triggers[] =
	    BATCH "SELECT COUNT(*) AS n FROM sys.triggers"
	    " WHERE parent_id = OBJECT_ID(@p1)";
	struct tds *m = (struct tds *)st;
	size_t i;
	int rc, n;

	if ((rc = tds_begin(m)) != 0)
		return -1;
	for (i = 0; schema_batches[i] != NULL; i++)
		if (tds_plain(m, "schema", schema_batches[i]) != 0)
			return tds_rollback(m, -1);
	for (i = 0; i < NELEM(schema_triggers); i++) {
		n = tds_count(m, "schema", has_triggers, "s",
		    schema_triggers[i].table);
		if (n < 0)
			return tds_rollback(m, -1);
		if (n == 0 && tds_plain(m, "schema", schema_triggers[i].sql) !=
		    0)
			return tds_rollback(m, -1);
	}
	return tds_commit(m) == 0 ? 0 : -1;
}

/*
 * Warns when the database keeps VARCHAR text in a code page other than
 * UTF-8 and runs.error_message is VARCHAR, as the ADE migrations make it
 * and most text columns: any
 * character outside that code page (a Japanese sheet header in a Latin-1
 * database, say) is stored as "?" without an error.
 */
static void
mq_check_collation(struct tds *m)
{
	static const char sql[] =
	    BATCH "DECLARE @c NVARCHAR(128) = CAST(DATABASEPROPERTYEX(DB_NAME(),"
	    " 'Collation') AS NVARCHAR(128));"
	    " SELECT @c AS collation,"
	    " CAST(COLLATIONPROPERTY(@c, 'CodePage') AS INT) AS code_page,"
	    /*
	     * By name: Babelfish's sys.columns numbers types its own way
	     * (VARCHAR(MAX) is 17028 there, 167 on SQL Server).
	     */
	    " (SELECT COUNT(*) FROM INFORMATION_SCHEMA.COLUMNS c"
	    "  WHERE c.TABLE_NAME = N'runs' AND c.COLUMN_NAME = N'error_message'"
	    "  AND c.DATA_TYPE = N'varchar') AS varchar_text;";
	struct tds_res r;
	long long cp;

	memset(&r, 0, sizeof(r));
	if (tds_call(m, "collation", &r, sql, "") != 0 || r.nrows == 0) {
		tds_res_clear(&r);
		return;
	}
	cp = tds_int(&r, 0, 1);
	if (!tds_isnull(&r, 0, 1) && cp != 65001 && cp != 0 &&
	    tds_int(&r, 0, 2) > 0)
		log_warnx("mssql: database %s has collation %s (code page %lld):"
		    " its VARCHAR columns store characters outside that code page"
		    " as \"?\"; a UTF-8 collation (*_UTF8) or NVARCHAR columns keep"
		    " all text", m->database, tds_str(&r, 0, 0) != NULL ?
		    tds_str(&r, 0, 0) : "?", cp);
	tds_res_clear(&r);
}

/*
 * The columns of a table.  The catalog views show a login only the
 * objects it has permissions on, so when sys.columns knows no such table
 * an empty SELECT of it tells why: a table that does not exist is error
 * 208 on SQL Server ("relation ... does not exist" under Babelfish's
 * catch-all number) and is missing; a permission error is reported as it
 * is, instead of as missing tables.  A SELECT that works there found
 * something other than a table of ours (Babelfish also looks in sys, where
 * a view is called configurations).  The table name is one of the
 * store's own, never a value from outside.
 */
static int
mq_table_columns(struct store *st, const char *table, struct buf *out)
{
	static const char sql[] =
	    BATCH "SELECT name FROM sys.columns"
	    " WHERE object_id = OBJECT_ID(@p1, N'U')";
	struct tds *m = (struct tds *)st;
	struct buf probe;
	struct tds_res r;
	size_t i;
	int rc;

	memset(&r, 0, sizeof(r));
	if ((rc = tds_call(m, "schema check", &r, sql, "s", table)) != 0)
		return rc < 0 ? -1 : rc;
	for (i = 0; i < r.nrows; i++)
		buf_printf(out, "%s%s", i > 0 ? " " : "", tds_str(&r, i, 0));
	rc = r.nrows > 0;
	tds_res_clear(&r);
	/* Once per check: runs is the table every check reads. */
	if (rc > 0 && strcmp(table, "runs") == 0)
		mq_check_collation(m);
	if (rc > 0)
		return rc;
	buf_init(&probe);
	buf_printf(&probe, BATCH "SELECT TOP (0) * FROM [%s]", table);
	rc = tds_exec(m, "schema check", buf_str(&probe), NULL, 0, NULL);
	buf_free(&probe);
	if (rc == 0 || (rc == -1 && (strstr(m->base.err, "(error 208)") !=
	    NULL || (strstr(m->base.err, "(error 33557097)") != NULL &&
	    strstr(m->base.err, "does not exist") != NULL))))
		return 0;
	return rc < 0 ? -1 : rc;
}

/*
 * After a claim batch was cancelled (a stop signal, the query timeout),
 * puts back whatever it may still have committed under its token: the
 * cancel can land between COMMIT and the final SELECT, and the claim
 * would then wait for its lease to run out.
 */
static void
claim_undo(struct tds *m, const char *sql, const char *token)
{
	char keep[sizeof(m->base.err)];
	int cls = m->cls, n;

	if (cls != MSSQL_TIMEOUT || !tds_alive(m))
		return;
	memcpy(keep, m->base.err, sizeof(keep));
	n = tds_count(m, "claim undo", sql, "s", token);
	if (n > 0)
		log_notice("put back a claim whose answer was cancelled");
	memcpy(m->base.err, keep, sizeof(keep));
	m->cls = cls;
}

/*
 * Runs a claim batch (parameters: token, lease, spread): 1 with the
 * claimed row in row, 0 when there was none.  A stop signal may cancel
 * it; a cancelled one is undone by undo.
 *
 * A claim waits at most CLAIM_LOCK_MS for a row lock.  SQL Server never
 * waits here (READPAST skips locked rows), but Babelfish ignores the
 * hint: a row that another session keeps locked in an open transaction
 * would hold every claimer up until its query timeout, and then again on
 * every poll.  After a lock timeout (which ends the batch and its
 * transaction) the claim is tried again with a spread: the row is picked
 * at random among the oldest due ones, so one locked row cannot keep the
 * others waiting.
 */
#define CLAIM_LOCK_MS	"1000"
#define CLAIM_SPREAD	"32"

static int
mq_claim(struct tds *m, const char *what, const char *sql, const char *undo,
    const char *token, double lease, json_t **row)
{
	struct mssql_param p[3];
	struct tds_res r;
	long long spread;
	json_t *a;
	int rc;

	memset(&r, 0, sizeof(r));
	tds_interruptible(1);
	for (spread = 0;; spread++) {
		mssql_params(p, NELEM(p), "sdi", token, lease, spread);
		rc = tds_exec_once(m, what, sql, p, NELEM(p), &r);
		if (rc != -1 || !mssql_transient(m->cls) || spread >= 2 ||
		    store_quitting() || store_stopping())
			break;
		/* The batch ended before it could put the lock timeout back. */
		if (m->cls == MSSQL_LOCK_TIMEOUT)
			tds_plain(m, "claim", "SET LOCK_TIMEOUT -1");
		log_debug("%s; claiming again", m->base.err);
	}
	tds_interruptible(0);
	if (rc == -1)
		claim_undo(m, undo, token);
	if (rc == 0 && r.nrows > 0) {
		a = tds_res_json(&r);
		*row = json_incref(json_array_get(a, 0));
		json_decref(a);
		rc = 1;
	}
	tds_res_clear(&r);
	return rc;
}

/*
 * Claims the oldest queued environment.  The row is picked and changed
 * in one short transaction: on SQL Server the UPDLOCK of the pick holds
 * the row until the UPDATE, and READPAST lets concurrent claimers (and
 * rows an application's open transaction holds) be skipped instead of
 * waited for.  Babelfish ignores the hints, so the UPDATE repeats the
 * state check, and "0 rows" there means another claimer won the row:
 * the batch picks again, three times at most, until the pick finds
 * nothing.  The claimed row is read back by its id.
 */
static int
mq_claim_environment(struct store *st, const char *token, double lease,
    json_t **row)
{
	static const char sql[] =
	    BATCH
	    "SET LOCK_TIMEOUT " CLAIM_LOCK_MS ";"
	    "DECLARE @try INT = 0, @n INT = 0, @id UNIQUEIDENTIFIER;"
	    "WHILE @try < 3 BEGIN"
	    " SET @id = NULL;"
	    " SET @n = 0;"
	    " BEGIN TRANSACTION;"
	    " IF @p3 = 0"
	    "  SELECT TOP (1) @id = q.id FROM environments q" ENV_PICK
	    "   ORDER BY q.created_at;"
	    " ELSE"
	    "  SELECT TOP (1) @id = w.id FROM (SELECT TOP (" CLAIM_SPREAD ")"
	    "   q.id FROM environments q" ENV_PICK " ORDER BY q.created_at) w"
	    "   ORDER BY NEWID();"
	    " IF @id IS NOT NULL BEGIN"
	    "  UPDATE environments SET status = 'building', claimed_by = @p1,"
	    "   claim_expires_at = " PLUS("@p2") ", error_message = NULL,"
	    "   updated_at = " NOW
	    "  WHERE id = @id AND status = 'queued';"
	    "  SET @n = @@ROWCOUNT;"
	    " END;"
	    " COMMIT TRANSACTION;"
	    " IF @n > 0 OR @id IS NULL BREAK;"
	    " SET @try = @try + 1;"
	    "END;"
	    "SET LOCK_TIMEOUT -1;"
	    "SELECT " GUID("c.id") " AS id,"
	    " " GUID("c.workspace_id") " AS workspace_id,"
	    " " GUID("c.configuration_id") " AS configuration_id,"
	    " c.engine_spec, c.deps_digest FROM environments c"
	    " WHERE @n > 0 AND c.id = @id;";
	static const char undo[] =
	    BATCH
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, updated_at = " NOW
	    " WHERE claimed_by = @p1 AND status = 'building';"
	    ROWCOUNT;
	return mq_claim((struct tds *)st, "claim environment", sql, undo,
	    token, lease, row);
}

/*
 * Claims the oldest due run whose environment is ready, the way
 * environments are claimed: pick with UPDLOCK, READPAST (concurrent
 * claimers skip each other's rows on SQL Server), and an UPDATE whose
 * own WHERE repeats status, attempts and due time, because Babelfish
 * waits instead of skipping and must then not claim the row again.  The
 * run's document row comes with it.
 */
static int
mq_claim_run(struct store *st, const char *token, double lease,
    json_t **row)
{
	static const char sql[] =
	    BATCH
	    "SET LOCK_TIMEOUT " CLAIM_LOCK_MS ";"
	    "DECLARE @try INT = 0, @n INT = 0, @id UNIQUEIDENTIFIER;"
	    "WHILE @try < 3 BEGIN"
	    " SET @id = NULL;"
	    " SET @n = 0;"
	    " BEGIN TRANSACTION;"
	    " IF @p3 = 0"
	    "  SELECT TOP (1) @id = q.id FROM runs q" RUN_PICK
	    "   ORDER BY q.available_at, q.created_at;"
	    " ELSE"
	    "  SELECT TOP (1) @id = w.id FROM (SELECT TOP (" CLAIM_SPREAD ")"
	    "   q.id FROM runs q" RUN_PICK
	    "   ORDER BY q.available_at, q.created_at) w ORDER BY NEWID();"
	    " IF @id IS NOT NULL BEGIN"
	    "  UPDATE runs SET status = 'running', claimed_by = @p1,"
	    "   claim_expires_at = " PLUS("@p2") ","
	    "   started_at = COALESCE(started_at, " NOW "),"
	    "   attempt_count = attempt_count + 1, error_message = NULL,"
	    "   exit_code = NULL, completed_at = NULL"
	    "  WHERE id = @id AND status = 'queued'"
	    "  AND attempt_count < max_attempts AND available_at <= " NOW ";"
	    "  SET @n = @@ROWCOUNT;"
	    " END;"
	    " COMMIT TRANSACTION;"
	    " IF @n > 0 OR @id IS NULL BREAK;"
	    " SET @try = @try + 1;"
	    "END;"
	    "SET LOCK_TIMEOUT -1;"
	    "SELECT " GUID("c.id") " AS id,"
	    " " GUID("c.workspace_id") " AS workspace_id,"
	    " " GUID("c.configuration_id") " AS configuration_id,"
	    " " GUID("c.input_document_id") " AS input_document_id,"
	    " c.engine_spec, c.deps_digest, " TS("c.started_at", "started_at")
	    ", c.attempt_count, c.max_attempts, c.run_options,"
	    " c.input_sheet_names, " GUID("e.id") " AS env_id,"
	    " DATEDIFF_BIG(millisecond, c.available_at, " NOW ") AS waited_ms,"
	    " e.python_interpreter AS env_python,"
	    " CASE WHEN d.id IS NULL THEN 0 ELSE 1 END AS doc_found,"
	    " d.stored_uri AS doc_stored_uri,"
	    " d.original_filename AS doc_original_filename"
	    " FROM runs c LEFT JOIN environments e ON " ENV_KEY("e", "c")
	    " LEFT JOIN documents d ON d.id = c.input_document_id"
	    " WHERE @n > 0 AND c.id = @id;";
	static const char undo[] =
	    BATCH
	    "UPDATE runs SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL,"
	    "  attempt_count = CASE WHEN attempt_count > 0"
	    "   THEN attempt_count - 1 ELSE 0 END"
	    " WHERE claimed_by = @p1 AND status = 'running';"
	    ROWCOUNT;
	return mq_claim((struct tds *)st, "claim run", sql, undo, token,
	    lease, row);
}

/* A statement's values as parameters, from p onwards; returns the end. */
static struct mssql_param *
json_params(struct mssql_param *p, json_t *values)
{
	size_t i;

	for (i = 0; i < json_array_size(values); i++)
		mssql_param_json(p++, json_array_get(values, i));
	return p;
}

/*
 * The statements as one batch, one round trip, the others only if the
 * first changed a row; one transaction (XACT_ABORT ON).
 */
static int
guarded_batch(struct tds *m, const char *what, const struct store_stmt *t,
    size_t n, size_t nparams, long *last)
{
	struct mssql_param *p, *end;
	struct tds_res r;
	struct buf sql;
	size_t i;
	int rc;

	p = end = xcalloc(nparams + 1, sizeof(*p));
	buf_init(&sql);
	buf_addstr(&sql, BATCH "DECLARE @n INT, @last INT = 0; "
	    "BEGIN TRANSACTION; ");
	for (i = 0; i < n; i++) {
		store_renumber(&sql, t[i].sql, "@p", (size_t)(end - p) + 1);
		end = json_params(end, t[i].values);
		buf_addstr(&sql, i == 0 ? "; SET @n = @@ROWCOUNT; " :
		    i == n - 1 ? "; SET @last = @@ROWCOUNT; " : "; ");
		if (i == 0 && n > 1)
			buf_addstr(&sql, "IF @n > 0 BEGIN ");
	}
	buf_addstr(&sql, n > 1 ? "END; " : "");
	buf_addstr(&sql, "COMMIT TRANSACTION; SELECT @n AS n, @last AS last;");
	memset(&r, 0, sizeof(r));
	rc = tds_exec(m, what, buf_str(&sql), p, nparams, &r);
	if (rc == 0)
		rc = r.nrows > 0 && tds_int(&r, 0, 0) > 0;
	if (rc == 1 && last != NULL)
		*last = (long)(n > 1 ? tds_int(&r, 0, 1) : tds_int(&r, 0, 0));
	tds_res_clear(&r);
	buf_free(&sql);
	free(p);
	return rc;
}

/*
 * The statements one call each, in a transaction, when their parameters
 * are too many for one call.
 */
static int
guarded_each(struct tds *m, const char *what, const struct store_stmt *t,
    size_t n, long *last)
{
	struct mssql_param *p;
	struct tds_res r;
	struct buf sql;
	size_t i;
	int rc;

	if ((rc = tds_begin(m)) != 0)
		return rc;
	buf_init(&sql);
	memset(&r, 0, sizeof(r));
	for (i = 0; i < n && rc == 0; i++) {
		buf_reset(&sql);
		buf_addstr(&sql, BATCH);
		buf_addstr(&sql, t[i].sql);
		buf_addstr(&sql, i == 0 || i == n - 1 ? ";" ROWCOUNT : ";");
		p = xcalloc(json_array_size(t[i].values) + 1, sizeof(*p));
		json_params(p, t[i].values);
		tds_res_clear(&r);
		rc = tds_exec(m, what, buf_str(&sql), p,
		    json_array_size(t[i].values), &r);
		free(p);
		if (rc == 0 && i == 0 && (r.nrows == 0 ||
		    tds_int(&r, 0, 0) <= 0))
			rc = 1;		/* the guard changed no row */
		if (rc == 0 && i == n - 1 && last != NULL)
			*last = r.nrows > 0 ? (long)tds_int(&r, 0, 0) : 0;
	}
	tds_res_clear(&r);
	buf_free(&sql);
	if (rc == 1)
		return tds_rollback(m, 0);
	if (rc != 0)
		return tds_rollback(m, rc);
	return (rc = tds_commit(m)) != 0 ? rc : 1;
}

/*
 * The statements in one transaction, the first guarding the others
 * (store_impl.h): one batch when their parameters fit one call.  A
 * deadlock victim starts over from the beginning, since the server
 * rolled everything back.
 */
static int
mq_guarded(struct store *st, const char *what, const struct store_stmt *t,
    size_t n, long *last)
{
	struct tds *m = (struct tds *)st;
	struct timespec ts;
	size_t i, nparams = 0;
	int rc, tries;

	for (i = 0; i < n; i++)
		nparams += json_array_size(t[i].values);
	for (tries = 0;; tries++) {
		if (nparams <= MSSQL_BATCH_PARAMS)
			rc = guarded_batch(m, what, t, n, nparams, last);
		else
			rc = guarded_each(m, what, t, n, last);
		if (rc != -1 || !mssql_transient(m->cls) || tries >= 2 ||
		    store_quitting())
			return rc;
		log_debug("%s; trying again", m->base.err);
		ts.tv_sec = 0;
		ts.tv_nsec = (long)((50 << (2 * tries)) + jitter(50)) *
		    1000000L;
		nanosleep(&ts, NULL);
	}
}

#define GC_ENV_COND							\
	" e.status IN ('ready', 'failed')"				\
	" AND COALESCE(e.last_used_at, e.updated_at) <"			\
	"  DATEADD(day, -CAST(@p1 AS INT), " NOW ")"			\
	" AND (e.claim_expires_at IS NULL OR e.claim_expires_at <= " NOW ")" \
	" AND NOT EXISTS (SELECT 1 FROM configurations c"		\
	"  WHERE c.id = e.configuration_id AND c.status = 'active')"	\
	" AND NOT EXISTS (SELECT 1 FROM runs r WHERE " ENV_KEY("e", "r") \
	"  AND r.status IN ('queued', 'running'))"

/*
 * Finds or creates the workspace (by slug, or by id when the name is a
 * GUID) and the configuration (by display name within it, or id).  The
 * first configuration of a workspace is made its active one.  UPDLOCK,
 * HOLDLOCK serialise two registrations of the same names on SQL Server;
 * on Babelfish the unique slug is the guard.
 */
static int
mq_register(struct store *st, const char *ws, const char *cfg, char *ws_id,
    char *cfg_id)
{
	static const char sql[] =
	    BATCH
	    "DECLARE @ws UNIQUEIDENTIFIER, @cfg UNIQUEIDENTIFIER;"
	    "BEGIN TRANSACTION;"
	    "SELECT @ws = w.id FROM workspaces w WITH (UPDLOCK, HOLDLOCK)"
	    " WHERE w.slug = @p1 OR w.id = " UUID("@p2") ";"
	    "IF @ws IS NULL BEGIN"
	    " SET @ws = " UUID("@p3") ";"
	    " INSERT INTO workspaces (id, name, slug) VALUES (@ws, @p4, @p1);"
	    "END;"
	    "SELECT @cfg = c.id FROM configurations c WITH (UPDLOCK, HOLDLOCK)"
	    " WHERE c.workspace_id = @ws AND (c.display_name = @p5"
	    "  OR c.id = " UUID("@p6") ");"
	    "IF @cfg IS NULL BEGIN"
	    " SET @cfg = " UUID("@p7") ";"
	    " INSERT INTO configurations (id, workspace_id, display_name,"
	    "  status, activated_at)"
	    " SELECT @cfg, @ws, @p5,"
	    "  CASE WHEN EXISTS (SELECT 1 FROM configurations a"
	    "   WHERE a.workspace_id = @ws AND a.status = 'active')"
	    "   THEN 'draft' ELSE 'active' END, " NOW ";"
	    "END;"
	    "COMMIT TRANSACTION;"
	    "SELECT " GUID("@ws") " AS ws, " GUID("@cfg") " AS cfg;";
	struct tds *m = (struct tds *)st;
	struct tds_res r;
	char slug[101], new_ws[37], new_cfg[37];
	int rc;

	util_slug(ws, slug, sizeof(slug));
	util_uuid(new_ws);
	util_uuid(new_cfg);
	memset(&r, 0, sizeof(r));
	rc = tds_call(m, "register", &r, sql, "sssssss", slug,
	    mssql_is_guid(ws) ? ws : NULL, new_ws, ws, cfg,
	    mssql_is_guid(cfg) ? cfg : NULL, new_cfg);
	if (rc != 0)
		return -1;
	if (r.nrows == 0) {
		tds_res_clear(&r);
		snprintf(m->base.err, sizeof(m->base.err),
		    "mssql: register: no answer");
		return -1;
	}
	tds_copy(&r, 0, 0, ws_id, 64);
	tds_copy(&r, 0, 1, cfg_id, 64);
	tds_res_clear(&r);
	return 0;
}

/* The statements store.c runs itself (store_impl.h). */
/* (id, token, output path): a run's success, guarded by its claim */
#define SUCCEEDED							\
	"UPDATE runs SET status = 'succeeded', completed_at = " NOW ","	\
	"  claimed_by = NULL, claim_expires_at = NULL, exit_code = 0,"	\
	"  output_path = @p3, error_message = NULL"			\
	" WHERE id = " UUID("@p1") " AND status = 'running'"		\
	" AND claimed_by = @p2"

static const struct store_sql mssql_sql = {
	.list_hosts =
	    BATCH "SELECT name, holder, " TS("expires_at", "expires_at") ","
	    " CASE WHEN expires_at < " NOW " THEN 'gone' ELSE 'up' END"
	    "  AS state"
	    " FROM worker_leases WHERE name LIKE 'host:%' ORDER BY name",
	.list_runs =
	    BATCH "SELECT TOP (@p2) " GUID("id") " AS id, status,"
	    "  attempt_count, max_attempts, exit_code, "
	    TS("created_at", "created_at") ", "
	    TS("started_at", "started_at") ", "
	    TS("completed_at", "completed_at") ", "
	    TS("available_at", "available_at") ","
	    "  claimed_by, error_message," NAMES_OF_RUN " FROM runs"
	    " WHERE @p1 IS NULL OR status = @p1"
	    " ORDER BY runs.created_at DESC, runs.id",
	.list_environments =
	    BATCH "SELECT " GUID("id") " AS id,"
	    " " GUID("workspace_id") " AS workspace_id,"
	    " " GUID("configuration_id") " AS configuration_id,"
	    " deps_digest, status, error_message, claimed_by, "
	    TS("created_at", "created_at") ", "
	    TS("updated_at", "updated_at") ", "
	    TS("last_used_at", "last_used_at") ","
	    " python_version, engine_version, python_interpreter"
	    " FROM environments ORDER BY environments.created_at",
	.show_run =
	    BATCH "SELECT " GUID("id") " AS id,"
	    " " GUID("configuration_id") " AS configuration_id,"
	    " " GUID("workspace_id") " AS workspace_id,"
	    " " GUID("input_document_id") " AS input_document_id,"
	    " input_sheet_names, output_path,"
	    " " GUID("submitted_by_user_id") " AS submitted_by_user_id,"
	    " engine_spec, deps_digest, status, exit_code, "
	    TS("created_at", "created_at") ", "
	    TS("started_at", "started_at") ", "
	    TS("completed_at", "completed_at") ", error_message, "
	    TS("available_at", "available_at") ","
	    " run_options, attempt_count, max_attempts, claimed_by, "
	    TS("claim_expires_at", "claim_expires_at") ","
	    NAMES_OF_RUN " FROM runs WHERE id = " UUID("@p1"),
	.show_metrics =
	    BATCH "SELECT * FROM run_metrics WHERE run_id = " UUID("@p1"),
	/* every column the table has: valid_cells came later */
	.show_fields =
	    BATCH "SELECT * FROM run_fields WHERE run_id = " UUID("@p1")
	    " ORDER BY field",
	.show_columns =
	    BATCH "SELECT * FROM run_table_columns"
	    " WHERE run_id = " UUID("@p1")
	    " ORDER BY workbook_index, sheet_index, table_index, column_index",
	.heartbeat_run =
	    BATCH
	    "UPDATE runs SET claim_expires_at = " PLUS("@p3")
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT,
	.heartbeat_environment =
	    BATCH
	    "UPDATE environments SET claim_expires_at = " PLUS("@p3")
	    " WHERE id = " UUID("@p1") " AND status = 'building'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT,
	.environment_touch =
	    BATCH
	    "UPDATE environments SET last_used_at = " NOW ","
	    "  updated_at = " NOW
	    " WHERE id = " UUID("@p1") ";"
	    ROWCOUNT,
	.environment_requeue =
	    BATCH
	    "UPDATE environments SET status = 'queued', error_message = @p2,"
	    "  claimed_by = NULL, claim_expires_at = NULL, updated_at = " NOW
	    " WHERE id = " UUID("@p1") " AND status = 'ready';"
	    ROWCOUNT,
	.run_requeue =
	    BATCH
	    "UPDATE runs SET status = 'queued', attempt_count = 0,"
	    "  available_at = " NOW ", started_at = NULL, completed_at = NULL,"
	    "  exit_code = NULL,"
	    "  error_message = NULL, output_path = NULL, claimed_by = NULL,"
	    "  claim_expires_at = NULL"
	    " WHERE id = " UUID("@p1") " AND status IN ('succeeded', 'failed',"
	    "  'cancelled');"
	    ROWCOUNT,
	.run_cancel =
	    BATCH
	    "UPDATE runs SET status = 'cancelled', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'Run cancelled by an operator'"
	    " WHERE id = " UUID("@p1") " AND status IN ('queued', 'running');"
	    ROWCOUNT,
	.environment_rebuild =
	    BATCH
	    "UPDATE environments SET status = 'queued', error_message = NULL,"
	    "  claimed_by = NULL, claim_expires_at = NULL, updated_at = " NOW
	    " WHERE id = " UUID("@p1")
	    "  AND status IN ('ready', 'failed', 'queued');"
	    ROWCOUNT,
	.run_abandon =
	    BATCH
	    "UPDATE runs SET" LOST_RUN ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = @p4, exit_code = NULL, output_path = NULL"
	    " WHERE id = " UUID("@p3") " AND status = 'running'"
	    " AND claimed_by = @p5;"
	    ROWCOUNT,
	.environment_abandon =
	    BATCH
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = @p3,"
	    "  updated_at = " NOW
	    " WHERE id = " UUID("@p1") " AND status = 'building'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT,
	.run_claimed_with =
	    BATCH "SELECT " GUID("id") " AS id FROM runs"
	    " WHERE claimed_by = @p1 AND status = 'running';",
	.environment_claimed_with =
	    BATCH "SELECT " GUID("id") " AS id FROM environments"
	    " WHERE claimed_by = @p1 AND status = 'building';",
	.run_finished_before =
	    BATCH "SELECT CASE WHEN status IN ('succeeded', 'failed',"
	    " 'cancelled') AND completed_at <"
	    " DATEADD(day, -CAST(@p2 AS INT), " NOW ") THEN 1 ELSE 0 END AS v"
	    " FROM runs WHERE id = " UUID("@p1"),
	.pending =
	    BATCH "SELECT (SELECT COUNT_BIG(*) FROM runs WHERE"
	    "  (status = 'queued' AND attempt_count < max_attempts)"
	    "  OR status = 'running') +"
	    " (SELECT COUNT_BIG(*) FROM environments"
	    "  WHERE status IN ('queued', 'building')) AS n",
	/* ages in milliseconds: db-lib reads a BIGINT exactly */
	.queue_stats = BATCH QUEUE_STATS(
	    "DATEDIFF_BIG(millisecond, available_at, " NOW ")"),
	.next_due =
	    BATCH "SELECT DATEDIFF_BIG(millisecond, " NOW ", MIN(available_at))"
	    " AS ms FROM runs WHERE status = 'queued'"
	    " AND attempt_count < max_attempts",
	.host_beat =
	    BATCH
	    "DECLARE @n INT;"
	    "UPDATE worker_leases SET holder = @p2,"
	    "  expires_at = " PLUS("@p3")
	    " WHERE name = @p1;"
	    "SET @n = @@ROWCOUNT;"
	    "IF @n = 0 BEGIN"
	    " INSERT INTO worker_leases (name, holder, expires_at)"
	    "  VALUES (@p1, @p2, " PLUS("@p3") ");"
	    " SET @n = @@ROWCOUNT;"
	    "END;"
	    "SELECT @n AS n;",
	.environment_ready =
	    BATCH
	    "UPDATE environments SET status = 'ready', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = NULL,"
	    "  updated_at = " NOW ", python_interpreter = @p3,"
	    "  python_version = @p4, engine_version = @p5"
	    " WHERE id = " UUID("@p1") " AND status = 'building'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT,
	.document =
	    BATCH "SELECT stored_uri, original_filename FROM documents"
	    " WHERE id = " UUID("@p1"),
	.run_retry =
	    BATCH
	    "UPDATE runs SET status = 'queued',"
	    "  available_at = " PLUS("@p3") ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = @p4, completed_at = NULL, exit_code = NULL,"
	    "  output_path = NULL"
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT,
	.run_release =
	    BATCH
	    "UPDATE runs SET status = 'queued',"
	    "  available_at = " PLUS("@p3") ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = @p4, completed_at = NULL, exit_code = NULL,"
	    "  output_path = NULL,"
	    "  attempt_count = CASE WHEN attempt_count > 0"
	    "    THEN attempt_count - 1 ELSE 0 END"
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT,
	.run_fail =
	    BATCH
	    "UPDATE runs SET status = 'failed', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = @p3, exit_code = @p4, output_path = NULL"
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT,
	.gc_candidates =
	    BATCH "SELECT " GUID("e.id") " AS id,"
	    " " GUID("e.workspace_id") " AS workspace_id,"
	    " " GUID("e.configuration_id") " AS configuration_id,"
	    " e.deps_digest FROM environments e WHERE" GC_ENV_COND,
	.gc_delete =
	    BATCH
	    "DELETE FROM environments WHERE environments.id = " UUID("@p2")
	    " AND environments.id IN (SELECT e.id FROM environments e"
	    "  WHERE e.id = " UUID("@p2") " AND" GC_ENV_COND ");"
	    ROWCOUNT,
	/* an UPDATE of runs cannot OUTPUT without INTO: it has triggers */
	.sweep_runs =
	    BATCH
	    "DECLARE @f INT, @q INT;"
	    "BEGIN TRANSACTION;"
	    "UPDATE runs SET status = 'failed', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'lease expired'"
	    " WHERE status = 'running' AND claim_expires_at < " NOW
	    " AND attempt_count >= max_attempts;"
	    "SET @f = @@ROWCOUNT;"
	    "UPDATE runs SET status = 'queued', completed_at = NULL,"
	    "  available_at = " PLUS(BACKOFF("attempt_count - 1")) ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'lease expired'"
	    " WHERE status = 'running' AND claim_expires_at < " NOW
	    " AND attempt_count < max_attempts;"
	    "SET @q = @@ROWCOUNT;"
	    "COMMIT TRANSACTION;"
	    "SELECT 'failed' AS status, @f AS n"
	    " UNION ALL SELECT 'queued', @q;",
	.sweep_environments =
	    BATCH
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = 'lease expired',"
	    "  updated_at = " NOW
	    " WHERE status = 'building' AND claim_expires_at < " NOW ";"
	    ROWCOUNT,
	.ensure_insert =
	    BATCH
	    "INSERT INTO environments (id, workspace_id, configuration_id,"
	    "  engine_spec, deps_digest, status, created_at, updated_at)"
	    " SELECT NEWID(), k.workspace_id, k.configuration_id,"
	    "  k.engine_spec, k.deps_digest, 'queued', " NOW ", " NOW
	    " FROM (SELECT DISTINCT q.workspace_id, q.configuration_id,"
	    "  q.engine_spec, q.deps_digest FROM runs q"
	    "  WHERE q.status = 'queued' AND q.available_at <= " NOW
	    "  AND q.attempt_count < q.max_attempts) k"
	    " WHERE NOT EXISTS (SELECT 1 FROM environments e WITH (UPDLOCK,"
	    "  HOLDLOCK) WHERE " ENV_KEY("e", "k") ");"
	    ROWCOUNT,
	.ensure_requeue =
	    BATCH
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, updated_at = " NOW
	    " WHERE environments.status = 'failed' AND EXISTS (SELECT 1"
	    "  FROM runs r WHERE " ENV_KEY("r", "environments")
	    "  AND r.status = 'queued' AND r.available_at <= " NOW
	    "  AND r.attempt_count < r.max_attempts);"
	    ROWCOUNT,
	.singleton =
	    BATCH
	    "DECLARE @n INT;"
	    "BEGIN TRANSACTION;"
	    "UPDATE worker_leases SET holder = @p2,"
	    "  expires_at = " PLUS("@p3")
	    " WHERE name = @p1 AND (holder = @p2 OR expires_at < " NOW ");"
	    "SET @n = @@ROWCOUNT;"
	    "IF @n = 0 AND NOT EXISTS (SELECT 1"
	    "  FROM worker_leases w WHERE w.name = @p1) BEGIN"
	    " INSERT INTO worker_leases (name, holder, expires_at)"
	    "  VALUES (@p1, @p2, " PLUS("@p3") ");"
	    " SET @n = @@ROWCOUNT;"
	    "END;"
	    "COMMIT TRANSACTION;"
	    "SELECT @n AS n;",
	/* statements of a batch (mq_guarded): no BATCH, no last ";" */
	.enqueue_document =
	    "INSERT INTO documents (id, workspace_id, original_filename,"
	    "  content_type, byte_size, sha256, stored_uri, expires_at,"
	    "  last_run_id)"
	    " VALUES (" UUID("@p1") ", " UUID("@p2") ", @p3, @p4, @p5, @p6,"
	    "  @p7, DATEADD(day, 30, " NOW "), " UUID("@p8") ")",
	.enqueue_configuration =
	    "UPDATE configurations SET content_digest = @p2,"
	    "  last_used_at = " NOW ", updated_at = " NOW
	    " WHERE id = " UUID("@p1"),
	.enqueue_run =
	    "INSERT INTO runs (id, configuration_id, workspace_id,"
	    "  input_document_id, input_sheet_names, engine_spec, deps_digest,"
	    "  run_options, max_attempts)"
	    " VALUES (" UUID("@p1") ", " UUID("@p2") ", " UUID("@p3") ","
	    "  " UUID("@p4") ", @p5, @p6, @p7, @p8, @p9)",
	.environment_failed =
	    "UPDATE environments SET status = 'failed', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = @p3,"
	    "  updated_at = " NOW ", python_interpreter = NULL,"
	    "  python_version = NULL, engine_version = NULL"
	    " WHERE id = " UUID("@p1") " AND status = 'building'"
	    " AND claimed_by = @p2",
	.charge_runs =
	    "UPDATE runs SET"
	    "  status = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN 'failed' ELSE 'queued' END,"
	    "  completed_at = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN " NOW " ELSE NULL END,"
	    "  exit_code = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN 2 ELSE NULL END,"
	    "  available_at = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN available_at ELSE " PLUS(BACKOFF("attempt_count"))
	    "    END,"
	    "  error_message = 'Environment build failed: ' + @p4,"
	    "  attempt_count = attempt_count + 1"
	    " WHERE runs.status = 'queued' AND runs.available_at <= " NOW
	    "  AND runs.attempt_count < runs.max_attempts"
	    "  AND EXISTS (SELECT 1 FROM environments e"
	    "  WHERE e.id = " UUID("@p3") " AND " ENV_KEY("e", "runs") ")",
	.run_succeeded = SUCCEEDED,
	.run_succeeded_replacing = SUCCEEDED,
	.clear_results = {
		"DELETE FROM run_metrics WHERE run_id = " UUID("@p1") ";"
		" DELETE FROM run_fields WHERE run_id = " UUID("@p1") ";"
		" DELETE FROM run_table_columns WHERE run_id = " UUID("@p1"),
	},
};

/* The driver's one call (store_impl.h). */
static json_t *
mq_rows(struct store *st, const char *what, const char *sql,
    const char *fmt, va_list ap)
{
	json_t *a;

	tds_interruptible(st->may_stop);
	a = tds_rowsv((struct tds *)st, what, sql, fmt, ap);
	tds_interruptible(0);
	return a;
}

static int
mq_count(struct store *st, const char *what, const char *sql,
    const char *fmt, va_list ap)
{
	int n;

	tds_interruptible(st->may_stop);
	n = tds_countv((struct tds *)st, what, sql, fmt, ap);
	tds_interruptible(0);
	return n;
}

/*
 * The idle wait.  SQL Server tells no one of a new row, so the wait is a
 * batch that looks at the queue on the server every WAIT_STEP_MS until
 * it finds work or its time is up: the host sends one statement every
 * few seconds, and sees a new run within a step of its commit.
 *
 * The look stops at the first due queued run, or queued environment,
 * with READPAST so that a row an application is still inserting does
 * not hold it up.  Both sides are index seeks on status = 'queued' that
 * end at their first row; on SQL Server ix_runs_claim (status,
 * available_at, created_at) can bound the due time too, and
 * ix_environments_claim serves the environments.  Babelfish's plan
 * (SET BABELFISH_SHOWPLAN_ALL ON, the look as one SELECT):
 *
 *	Result
 *	  InitPlan 1 (returns $0)
 *	    ->  Index Scan using ix_runs_status_completed on runs q
 *	          Index Cond: (status = 'queued')
 *	          Filter: ((attempt_count < max_attempts) AND
 *	                   (available_at <= sysutcdatetime()))
 *	  InitPlan 2 (returns $1)
 *	    ->  Index Only Scan using ix_environments_status_updated
 *	          Index Cond: (status = 'queued')
 *
 * The look does not ask whether the run's environment is ready: a run
 * it sees may not be claimable yet, and the worker then backs off before
 * it waits again (wait_looks).  Babelfish has no WAITFOR; there each
 * step sleeps in PostgreSQL's pg_sleep, which T-SQL can call there.
 */
#define WAIT_STEP_MS	100
#define WAIT_BATCH_MAX	10.0	/* seconds one batch waits at most */
#define WAIT_BATCH(sleep)						\
	BATCH								\
	"DECLARE @i INT = 0, @hit INT = 0, @z INT;"			\
	"WHILE @hit = 0 AND @i <= @p1 BEGIN"				\
	" IF EXISTS (SELECT 1 FROM runs q WITH (READPAST)"		\
	"  WHERE q.status = 'queued' AND q.available_at <= " NOW		\
	"  AND q.attempt_count < q.max_attempts)"			\
	"  OR EXISTS (SELECT 1 FROM environments q WITH (READPAST)"	\
	"  WHERE q.status = 'queued')"					\
	"  SET @hit = 1;"						\
	" ELSE IF @i < @p1 " sleep ";"				\
	" SET @i = @i + 1;"						\
	"END;"								\
	"SELECT @hit AS hit;"

/* Whether the server is Babelfish: 1, 0, or -1 when it cannot tell. */
static int
mq_babelfish(struct tds *m)
{
	json_t *a;

	if (m->babelfish != -1)
		return m->babelfish;
	/* NULL on SQL Server, which knows no such property. */
	a = tds_rows(m, "server kind", "SELECT CAST(SERVERPROPERTY("
	    "'babelfish') AS INT) AS b", "");
	if (a == NULL)
		return -1;
	m->babelfish = json_integer_value(json_object_get(
	    json_array_get(a, 0), "b")) == 1;
	json_decref(a);
	return m->babelfish;
}

static int
mq_wait(struct store *st, double timeout)
{
	/* Each sleeps WAIT_STEP_MS. */
	static const char sql_server[] = WAIT_BATCH(
	    "WAITFOR DELAY '00:00:00.100'");
	static const char babelfish[] = WAIT_BATCH(
	    "SELECT @z = COUNT(*) FROM (SELECT pg_sleep(0.1) AS s) w");
	struct tds *m = (struct tds *)st;
	double end = now_mono() + timeout, left, chunk;
	long long steps = 1;
	json_t *a;
	int hit = 0, bbf;

	/* The last batch may be one look without a step (steps 0). */
	while (!hit && steps > 0 && (left = end - now_mono()) > 0 &&
	    !store_stopping() && !store_quitting()) {
		chunk = left < WAIT_BATCH_MAX ? left : WAIT_BATCH_MAX;
		if (chunk > m->query_timeout / 2.0)
			chunk = m->query_timeout / 2.0;
		steps = (long long)(chunk * 1000 / WAIT_STEP_MS);
		a = NULL;
		tds_interruptible(1);
		if ((bbf = mq_babelfish(m)) != -1)
			a = tds_rows(m, "idle look", bbf ? babelfish :
			    sql_server, "i", steps);
		tds_interruptible(0);
		if (a == NULL) {
			/* Not in a tight loop: the next call reports it. */
			if (!store_stopping() && !store_quitting())
				store_pause(st, left < 1 ? left : 1);
			return 0;
		}
		hit = json_integer_value(json_object_get(json_array_get(a, 0),
		    "hit")) == 1;
		json_decref(a);
	}
	return hit;
}

static const struct store_ops mssql_ops = {
	.rows = mq_rows,
	.count = mq_count,
	.guarded = mq_guarded,
	.param = "@p",
	.run_id_param = UUID("@p1"),
	.sql = &mssql_sql,
	.name = "mssql",
	.close = mq_close,
	.init_schema = mq_init_schema,
	.table_columns = mq_table_columns,
	.claim_environment = mq_claim_environment,
	.claim_run = mq_claim_run,
	.wait = mq_wait,
	.wait_looks = 1,
	.register_names = mq_register,
};
