/*
 * The SQL Server backend (SQL Server 2019 and later, Azure SQL), through
 * FreeTDS db-lib.  The same statements run on Babelfish for PostgreSQL,
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
 * A connection that breaks is opened again before the next operation,
 * with a growing delay between attempts; the operation that saw the
 * break reports STORE_DEAD, and its caller decides whether to try again.
 */
#include <sys/types.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sybfront.h>
#include <sybdb.h>

#include "conf.h"
#include "log.h"
#include "results.h"
#include "store_impl.h"
#include "store_mssql.h"
#include "util.h"

#define MAXPARAMS	32
/* SQL Server takes at most 2100 parameters; stay well below. */
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
#define ENV_KEY(e, r)	e ".workspace_id = " r ".workspace_id AND "\
			e ".configuration_id = " r ".configuration_id AND " \
			e ".engine_spec = " r ".engine_spec AND "	\
			e ".deps_digest = " r ".deps_digest"
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
/*
 * A running run whose claim ended without a result (a lease that
 * expired, a worker that died): failed when its attempts are used up,
 * else queued again after the backoff of the attempt it just lost.
 */
#define GIVE_UP_OR_RETRY						\
	"  status = CASE WHEN attempt_count >= max_attempts"		\
	"    THEN 'failed' ELSE 'queued' END,"				\
	"  completed_at = CASE WHEN attempt_count >= max_attempts"	\
	"    THEN " NOW " ELSE NULL END,"				\
	"  available_at = CASE WHEN attempt_count >= max_attempts"	\
	"    THEN available_at ELSE "					\
	PLUS(BACKOFF("attempt_count - 1")) " END"

/* One value read back from the server. */
struct mval {
	char		 kind;	/* 0 NULL, 's', 'i', 'd', 'b' (BIT) */
	long long	 i;
	double		 d;
	char		*s;
	size_t		 len;
};

/* The rows of the last result set of a batch. */
struct mres {
	int		 ncols;
	char		**names;
	struct mval	*v;
	size_t		 nrows;
	size_t		 cap;
};

struct mq {
	struct store	 base;
	DBPROCESS	*dbp;
	char		*server;
	char		*user;
	char		*password;
	char		*database;
	char		*app;
	int		 tds_version;	/* DBVERSION_*, or 0 */
	int		 login_timeout;
	int		 query_timeout;
	int		 echo;
	int		 in_tx;		/* in a BEGIN ... COMMIT */
	int		 logging_in;
	int		 timeouts;	/* SYBETIMEs in this call */
	int		 err_seen;	/* a server error in this call */
	int		 msgno;		/* first error of this call */
	int		 severity;
	char		 msgtext[512];
	int		 cls;		/* class of the last failure */
	double		 reset_at;
	double		 reset_delay;
};

static const struct store_ops mssql_ops;
static int	mq_rollback(struct mq *, int);

/* The store being opened, for handler calls before dbopen returns. */
static struct mq	*mq_opening;
static pid_t		 mq_pid;
static int		 mq_open_count;
/*
 * Set around calls that a stop (store_stopping) may cancel.  A static
 * rather than a field: the interrupt check does not rely on which
 * pointer db-lib passes it (old FreeTDS passed the TDS socket, not the
 * DBPROCESS).
 */
static int		 mq_interruptible;

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

/*
 * Session settings db-lib does not give by default.  Filtered indexes
 * (uq_runs_active_job) refuse changes unless ANSI_NULLS, ANSI_PADDING,
 * ANSI_WARNINGS, ARITHABORT, CONCAT_NULL_YIELDS_NULL and
 * QUOTED_IDENTIFIER are on; TEXTSIZE keeps (N)VARCHAR(MAX) values whole.
 */
static const char session_sql[] =
	"SET NOCOUNT ON; SET ANSI_NULLS ON; SET ANSI_PADDING ON;"
	" SET ANSI_WARNINGS ON; SET ARITHABORT ON;"
	" SET CONCAT_NULL_YIELDS_NULL ON; SET QUOTED_IDENTIFIER ON;"
	" SET NUMERIC_ROUNDABORT OFF; SET ANSI_NULL_DFLT_ON ON;"
	" SET XACT_ABORT ON; SET TEXTSIZE 2147483647";

/* Pure helpers (store_mssql.h). */

/*
 * Sorts a failure into what the caller should do about it.  A dead
 * connection wins over everything; db-lib's own network errors and
 * server errors of severity 20 or more (which end the session) mean the
 * same.  Unknown numbers are "other": report and try later.
 */
int
mssql_classify(int msgno, int severity, int dead, const char *text)
{
	if (dead || severity >= 20)
		return MSSQL_DEAD;
	switch (msgno) {
	case 20002:	/* SYBEFCON: connection failed */
	case 20004:	/* SYBEREAD */
	case 20006:	/* SYBEWRIT */
	case 20009:	/* SYBECONN: server unavailable */
	case 20017:	/* SYBESEOF: unexpected EOF */
	case 20047:	/* SYBEDDNE: DBPROCESS is dead */
	case 20056:	/* SYBECLOS */
		return MSSQL_DEAD;
	case 20003:	/* SYBETIME: query timeout or interrupt */
		return MSSQL_TIMEOUT;
	case 1205:
		return MSSQL_DEADLOCK;
	case 1222:
		return MSSQL_LOCK_TIMEOUT;
	case 33557097:
		/*
		 * Babelfish sends every error it does not map under this
		 * number: only its PostgreSQL text tells them apart.
		 */
		if (text != NULL && strcasestr(text, "lock timeout") != NULL)
			return MSSQL_LOCK_TIMEOUT;
		if (text != NULL && (strcasestr(text, "deadlock") != NULL ||
		    strcasestr(text, "could not serialize") != NULL))
			return MSSQL_DEADLOCK;
		return MSSQL_OTHER;
	case 2627:
	case 2601:
		return MSSQL_DUPLICATE;
	case 515:
	case 547:
		return MSSQL_CONSTRAINT;
	}
	return MSSQL_OTHER;
}

/* Whether the same batch may simply be sent again at once. */
int
mssql_transient(int cls)
{
	return cls == MSSQL_DEADLOCK || cls == MSSQL_LOCK_TIMEOUT;
}

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

/* A JSON scalar as a parameter; anything else (null, arrays) is NULL. */
static void
param_json(struct mssql_param *p, json_t *v)
{
	memset(p, 0, sizeof(*p));
	p->type = 's';
	if (json_is_string(v)) {
		p->s = json_string_value(v);
		p->len = json_string_length(v);
	} else if (json_is_integer(v)) {
		p->type = 'i';
		p->i = (long long)json_integer_value(v);
	} else if (json_is_real(v)) {
		p->type = 'd';
		p->d = json_real_value(v);
	} else if (json_is_boolean(v)) {
		p->type = 'i';
		p->i = json_is_true(v);
	}
}

/* mssql_params, for callers that already hold a va_list. */
static size_t
params_va(struct mssql_param *out, size_t max, const char *fmt,
    va_list ap)
{
	size_t n;

	for (n = 0; fmt[n] != '\0' && n < max; n++) {
		struct mssql_param *p = &out[n];

		memset(p, 0, sizeof(*p));
		switch (fmt[n]) {
		case 's':
			p->type = 's';
			p->s = va_arg(ap, const char *);
			p->len = p->s != NULL ? strlen(p->s) : 0;
			break;
		case 'i':
			p->type = 'i';
			p->i = va_arg(ap, long long);
			break;
		case 'd':
			p->type = 'd';
			p->d = va_arg(ap, double);
			break;
		case 'v':
			param_json(p, va_arg(ap, json_t *));
			break;
		}
	}
	return n;
}

/*
 * Fills out with the values described by fmt, as the other backends
 * take them: s a string (NULL is NULL), i a long long, d a double, v a
 * JSON scalar (booleans become 0 and 1).  Returns how many.
 */
size_t
mssql_params(struct mssql_param *out, size_t max, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = params_va(out, max, fmt, ap);
	va_end(ap);
	return n;
}

/*
 * The second argument of sp_executesql: "@p1 NVARCHAR(4000), @p2
 * BIGINT, @p3 FLOAT".  Strings longer than MSSQL_SHORT_BYTES bytes are
 * NVARCHAR(MAX); a NULL is declared as a short string, which converts
 * to any column type.
 */
void
mssql_param_decl(const struct mssql_param *p, size_t n, struct buf *out)
{
	size_t i;

	for (i = 0; i < n; i++) {
		const char *type;

		switch (p[i].type) {
		case 'i':
			type = "BIGINT";
			break;
		case 'd':
			type = "FLOAT";
			break;
		default:
			type = p[i].s != NULL && p[i].len > MSSQL_SHORT_BYTES ?
			    "NVARCHAR(MAX)" : "NVARCHAR(4000)";
			break;
		}
		buf_printf(out, "%s@p%zu %s", i > 0 ? ", " : "", i + 1, type);
	}
}

/*
 * The statement text sent for sql.  db-lib cannot send an empty string
 * (a length of 0 means NULL), so an empty string travels as NULL and
 * the batch first sets that parameter to N'' itself.
 */
void
mssql_stmt_text(const char *sql, const struct mssql_param *p, size_t n,
    struct buf *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i].type == 's' && p[i].s != NULL && p[i].len == 0)
			buf_printf(out, "SET @p%zu = N''; ", i + 1);
	buf_addstr(out, sql);
}

/*
 * How many rows of ncols values one INSERT carries: the run id is one
 * shared parameter, and a statement stays well under the 2100
 * parameters an RPC call may have.
 */
size_t
mssql_insert_rows_per_batch(size_t ncols)
{
	size_t per = ncols > 0 ? (MSSQL_INSERT_PARAMS - 1) / ncols : 0;

	return per > 0 ? per : 1;
}

/*
 * The INSERT of nrows result rows into table: @p1 is the run id, the
 * values of row i (0-based) are @p(first + i * ncols) onwards.
 */
void
mssql_insert_sql(const char *table, const char *const *cols, size_t first,
    size_t nrows, struct buf *out)
{
	size_t ncols, i, k, np = first - 1;

	for (ncols = 0; cols[ncols] != NULL; ncols++)
		;
	buf_printf(out, "SET NOCOUNT ON; INSERT INTO %s (run_id", table);
	for (k = 0; k < ncols; k++)
		buf_printf(out, ", %s", cols[k]);
	buf_addstr(out, ") VALUES ");
	for (i = 0; i < nrows; i++) {
		buf_printf(out, "%s(CAST(@p1 AS UNIQUEIDENTIFIER)",
		    i > 0 ? ", " : "");
		for (k = 0; k < ncols; k++)
			buf_printf(out, ", @p%zu", ++np);
		buf_addstr(out, ")");
	}
}

/*
 * The db-lib code for a tds_version setting: 7.0 to 7.4; "auto" or
 * empty leave it to freetds.conf (0); anything else is -1.
 */
int
mssql_tds_version(const char *v)
{
	static const struct {
		const char	*name;
		int		 code;
	} map[] = {
		{ "7.0", DBVERSION_70 }, { "7.1", DBVERSION_71 },
		{ "7.2", DBVERSION_72 }, { "7.3", DBVERSION_73 },
		{ "7.4", DBVERSION_74 },
	};
	size_t i;

	if (v == NULL || *v == '\0' || strcasecmp(v, "auto") == 0)
		return 0;
	for (i = 0; i < NELEM(map); i++)
		if (strcmp(v, map[i].name) == 0)
			return map[i].code;
	return -1;
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

/* Milliseconds since 1970 as "2026-01-25T02:44:00.123Z". */
void
mssql_format_ms(long long ms, char *out, size_t len)
{
	long long secs = ms / 1000, frac = ms % 1000;
	struct tm tm;
	time_t t;
	char date[32];

	if (frac < 0) {
		frac += 1000;
		secs--;
	}
	t = (time_t)secs;
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
		snprintf(out, len, "%lld", ms);
		return;
	}
	snprintf(out, len, "%s.%03lldZ", date, frac);
}

/* Results. */

static void
mres_clear(struct mres *r)
{
	size_t k;
	int c;

	for (k = 0; k < r->nrows * (size_t)r->ncols; k++)
		free(r->v[k].s);
	for (c = 0; c < r->ncols; c++)
		free(r->names[c]);
	free(r->names);
	free(r->v);
	memset(r, 0, sizeof(*r));
}

static const struct mval *
mres_at(const struct mres *r, size_t row, int col)
{
	static const struct mval null;

	if (row >= r->nrows || col < 0 || col >= r->ncols)
		return &null;
	return &r->v[row * (size_t)r->ncols + (size_t)col];
}

/* A number value; a NULL reads as 0 (check mres_isnull first). */
static long long
mres_int(const struct mres *r, size_t row, int col)
{
	const struct mval *v = mres_at(r, row, col);

	switch (v->kind) {
	case 'i':
	case 'b':
		return v->i;
	case 'd':
		return (long long)v->d;
	case 's':
		return strtoll(v->s, NULL, 10);
	}
	return 0;
}

static int
mres_isnull(const struct mres *r, size_t row, int col)
{
	return mres_at(r, row, col)->kind == 0;
}

/* A string value, or NULL for NULL; numbers are not expected here. */
static const char *
mres_str(const struct mres *r, size_t row, int col)
{
	const struct mval *v = mres_at(r, row, col);

	return v->kind == 's' ? v->s : NULL;
}

static void
mres_copy(const struct mres *r, size_t row, int col, char *out, size_t len)
{
	const char *s = mres_str(r, row, col);

	snprintf(out, len, "%s", s != NULL ? s : "");
}

static char *
mres_dup(const struct mres *r, size_t row, int col)
{
	const char *s = mres_str(r, row, col);

	return s != NULL ? xstrdup(s) : NULL;
}

/* Starts a new result set: only the last one of a batch is kept. */
static void
mres_columns(struct mq *m, struct mres *r, int ncols)
{
	int c;

	mres_clear(r);
	r->ncols = ncols;
	r->names = xcalloc((size_t)ncols, sizeof(*r->names));
	for (c = 0; c < ncols; c++) {
		const char *name = dbcolname(m->dbp, c + 1);

		r->names[c] = xstrdup(name != NULL ? name : "");
	}
}

/*
 * Copies the current row.  Values are read with dbdata/dbdatlen, never
 * bound: dbcollen says 2 GiB for (N)VARCHAR(MAX).  NULL is exactly a
 * NULL dbdata(); every character type arrives as UTF-8 bytes.
 */
static void
mres_row(struct mq *m, struct mres *r)
{
	char conv[256];
	int c;

	if (r->nrows == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 8;
		r->v = xrealloc(r->v, r->cap * (size_t)r->ncols *
		    sizeof(*r->v));
	}
	for (c = 0; c < r->ncols; c++) {
		struct mval *v = &r->v[r->nrows * (size_t)r->ncols + (size_t)c];
		const BYTE *data = dbdata(m->dbp, c + 1);
		DBINT len = dbdatlen(m->dbp, c + 1);
		int type = dbcoltype(m->dbp, c + 1);
		DBINT n;

		memset(v, 0, sizeof(*v));
		if (data == NULL)
			continue;
		switch (type) {
		case SYBINT1:
			v->kind = 'i';
			v->i = *(const DBTINYINT *)data;
			break;
		case SYBINT2: {
			DBSMALLINT x;

			memcpy(&x, data, sizeof(x));
			v->kind = 'i';
			v->i = x;
			break;
		}
		case SYBINT4: {
			DBINT x;

			memcpy(&x, data, sizeof(x));
			v->kind = 'i';
			v->i = x;
			break;
		}
		case SYBINT8: {
			DBBIGINT x;

			memcpy(&x, data, sizeof(x));
			v->kind = 'i';
			v->i = x;
			break;
		}
		case SYBBIT:
		case SYBBITN:
			v->kind = 'b';
			v->i = *(const DBBIT *)data != 0;
			break;
		case SYBFLT8: {
			DBFLT8 x;

			memcpy(&x, data, sizeof(x));
			v->kind = 'd';
			v->d = x;
			break;
		}
		case SYBREAL: {
			DBREAL x;

			memcpy(&x, data, sizeof(x));
			v->kind = 'd';
			v->d = x;
			break;
		}
		case SYBCHAR:
		case SYBVARCHAR:
		case SYBTEXT:
		case SYBNTEXT:
		case SYBNVARCHAR:
			v->kind = 's';
			v->len = len > 0 ? (size_t)len : 0;
			v->s = xmalloc(v->len + 1);
			memcpy(v->s, data, v->len);
			v->s[v->len] = '\0';
			break;
		default:
			/* GUIDs, decimals, dates: as text. */
			n = dbconvert(m->dbp, type, data, len, SYBCHAR,
			    (BYTE *)conv, (DBINT)sizeof(conv) - 1);
			if (n < 0 || n >= (DBINT)sizeof(conv))
				break;
			/* A CHAR destination may come back padded. */
			while (n > 0 && conv[n - 1] == ' ')
				n--;
			conv[n] = '\0';
			v->kind = 's';
			v->s = xstrdup(conv);
			v->len = (size_t)n;
			break;
		}
	}
	r->nrows++;
}

/* The rows as JSON objects keyed by column; "__ts" columns as text. */
static json_t *
rows_json(struct mres *r)
{
	json_t *a = json_array(), *o, *v;
	char name[256], ts[48];
	size_t row, nl;
	int c, is_ts;

	for (row = 0; row < r->nrows; row++) {
		o = json_object();
		for (c = 0; c < r->ncols; c++) {
			const struct mval *x = mres_at(r, row, c);

			snprintf(name, sizeof(name), "%s", r->names[c]);
			nl = strlen(name);
			is_ts = nl > 4 && strcmp(name + nl - 4, "__ts") == 0;
			if (is_ts)
				name[nl - 4] = '\0';
			switch (x->kind) {
			case 0:
				v = json_null();
				break;
			case 'i':
				if (is_ts) {
					mssql_format_ms(x->i, ts, sizeof(ts));
					v = json_string(ts);
				} else
					v = json_integer(x->i);
				break;
			case 'b':
				v = json_boolean(x->i);
				break;
			case 'd':
				v = json_real(x->d);
				break;
			default: {
				struct buf b;

				buf_init(&b);
				utf8_repair(x->s, x->len, &b);
				v = json_string(buf_str(&b));
				buf_free(&b);
			}
			}
			json_object_set_new(o, name, v);
		}
		json_array_append_new(a, o);
	}
	return a;
}

/* Errors and the connection. */

/*
 * The store a handler call is about: the DBPROCESS's user data, or the
 * store being opened while dbopen has not returned yet.
 */
static struct mq *
mq_of(DBPROCESS *dbp)
{
	struct mq *m = NULL;

	if (dbp != NULL)
		m = (struct mq *)dbgetuserdata(dbp);
	return m != NULL ? m : mq_opening;
}

/* Keeps the first error of a call: later ones are usually its echoes. */
static void
mq_note(struct mq *m, int msgno, int severity, const char *text)
{
	if (m == NULL || m->msgno != 0)
		return;
	m->msgno = msgno;
	m->severity = severity;
	snprintf(m->msgtext, sizeof(m->msgtext), "%.*s",
	    (int)strcspn(text != NULL ? text : "", "\r\n"),
	    text != NULL ? text : "");
}

/*
 * db-lib's errors (network, timeouts, misuse).  It must never return
 * INT_EXIT: without MS semantics that makes the library call exit().
 * A timeout of a running query (dbsettime, or the stop interrupt) is
 * answered with INT_TIMEOUT once, which cancels the batch and keeps the
 * connection; a second one in the same call, or one while logging in,
 * gives up on the connection.
 */
static int
mq_err_handler(DBPROCESS *dbp, int severity, int dberr, int oserr,
    char *dberrstr, char *oserrstr)
{
	struct mq *m = mq_of(dbp);
	char text[512];

	/* The server's message has already been recorded. */
	if (dberr == SYBESMSG)
		return INT_CANCEL;
	/* A timeout's system error is a leftover (EINPROGRESS). */
	if (oserr != 0 && oserrstr != NULL && dberr != SYBETIME)
		snprintf(text, sizeof(text), "%s (%s)", dberrstr != NULL ?
		    dberrstr : "db-lib error", oserrstr);
	else
		snprintf(text, sizeof(text), "%s", dberrstr != NULL ?
		    dberrstr : "db-lib error");
	if (dberr == 2403 || dberr == 2404) {
		/* Characters lost converting to or from UTF-8. */
		log_warnx("mssql: %s", text);
		return INT_CANCEL;
	}
	mq_note(m, dberr, severity, text);
	if (dberr == SYBETIME && dbp != NULL && m != NULL && !m->logging_in &&
	    m->timeouts++ == 0)
		return INT_TIMEOUT;
	return INT_CANCEL;
}

/*
 * Server messages.  Severity 10 and below are information (database
 * changed, PRINT); above that the statement failed, and the first such
 * message of a call is the one reported.
 */
static int
mq_msg_handler(DBPROCESS *dbp, DBINT msgno, int state, int severity,
    char *text, char *srv, char *proc, int line)
{
	struct mq *m = mq_of(dbp);

	if (msgno == 5701 || msgno == 5703 || msgno == 5704)
		return 0;
	if (severity <= 10) {
		log_debug("mssql: %s", text != NULL ? text : "");
		return 0;
	}
	if (m != NULL) {
		mq_note(m, (int)msgno, severity, text);
		m->err_seen = 1;
	}
	return 0;
}

/*
 * Asked by db-lib about once a second while it waits for the server.
 * A quit (SIGQUIT) stops any query; a stop (SIGTERM) only those whose
 * loss is harmless (claims, sweeps, counts), so that a worker finishing
 * its last job can still record the result.
 */
static int
mq_chkintr(void *vdbp)
{
	if (store_quitting())
		return TRUE;
	return store_stopping() && mq_interruptible ? TRUE : FALSE;
}

static int
mq_hndlintr(void *vdbp)
{
	return INT_CANCEL;
}

static void
mq_call_reset(struct mq *m)
{
	m->msgno = 0;
	m->severity = 0;
	m->msgtext[0] = '\0';
	m->err_seen = 0;
	m->timeouts = 0;
}

/*
 * Records a failed call in the store's error and classifies it.  Returns
 * STORE_DEAD when the connection is gone, -1 otherwise.
 */
static int
mq_fail(struct mq *m, const char *what)
{
	int dead = m->dbp == NULL || DBDEAD(m->dbp);

	m->cls = mssql_classify(m->msgno, m->severity, dead, m->msgtext);
	if (m->msgtext[0] != '\0')
		snprintf(m->base.err, sizeof(m->base.err),
		    "mssql: %s: %s (error %d)", what, m->msgtext, m->msgno);
	else
		snprintf(m->base.err, sizeof(m->base.err), "mssql: %s: %s",
		    what, dead ? "connection lost" : "failed");
	m->base.dead = m->cls == MSSQL_DEAD;
	return m->base.dead ? STORE_DEAD : -1;
}

/*
 * Reads every result set of the batch that was sent, keeping the rows
 * of the last one in res (if given).  Every path leaves nothing pending:
 * a failure cancels the rest of the batch.
 */
static int
mq_drain(struct mq *m, const char *what, struct mres *res, int failed)
{
	RETCODE rc;
	STATUS row;
	int ncols;

	while (!failed && (rc = dbresults(m->dbp)) != NO_MORE_RESULTS) {
		if (rc == FAIL) {
			failed = 1;
			break;
		}
		ncols = dbnumcols(m->dbp);
		if (ncols > 0 && res != NULL)
			mres_columns(m, res, ncols);
		while ((row = dbnextrow(m->dbp)) != NO_MORE_ROWS) {
			if (row == FAIL) {
				failed = 1;
				break;
			}
			if (row == REG_ROW && ncols > 0 && res != NULL)
				mres_row(m, res);
		}
	}
	if (failed && !DBDEAD(m->dbp))
		dbcancel(m->dbp);
	if (failed || m->err_seen || DBDEAD(m->dbp)) {
		if (res != NULL)
			mres_clear(res);
		return mq_fail(m, what);
	}
	m->base.dead = 0;
	return 0;
}

/* Runs a batch without parameters: settings, transactions, DDL. */
static int
mq_plain(struct mq *m, const char *what, const char *sql)
{
	if (m->dbp == NULL || DBDEAD(m->dbp)) {
		mq_call_reset(m);
		return mq_fail(m, what);
	}
	mq_call_reset(m);
	if (m->echo)
		log_debug("sql: %s", sql);
	if (dbcmd(m->dbp, sql) == FAIL) {
		dbfreebuf(m->dbp);
		return mq_fail(m, what);
	}
	return mq_drain(m, what, NULL, dbsqlexec(m->dbp) == FAIL);
}

/* Releases db-lib once the last store of this process is closed. */
static void
mq_lib_done(void)
{
	if (mq_open_count == 0 && mq_pid == getpid()) {
		dbexit();
		mq_pid = 0;
	}
}

/*
 * db-lib keeps process-wide state and must be set up in the process
 * that uses it: after fork, in the worker.  dbinit() also puts back the
 * library's own error handler, which would exit on the first network
 * error, so ours go in right after it.
 */
static int
mq_lib_init(struct buf *err)
{
	if (mq_pid == getpid())
		return 0;
	if (dbinit() == FAIL) {
		buf_printf(err, "mssql: dbinit failed");
		return -1;
	}
	dberrhandle(mq_err_handler);
	dbmsghandle(mq_msg_handler);
	mq_pid = getpid();
	mq_open_count = 0;
	return 0;
}

/*
 * Logs in and prepares the session.  On failure the reason is in the
 * store's error and dbp is NULL.
 */
static int
mq_connect(struct mq *m)
{
	LOGINREC *login;
	int fd, flags;

	dbsetlogintime(m->login_timeout);
	dbsettime(m->query_timeout);
	mq_call_reset(m);
	if ((login = dblogin()) == NULL) {
		snprintf(m->base.err, sizeof(m->base.err),
		    "mssql: dblogin failed");
		return -1;
	}
	if (m->user[0] != '\0')
		DBSETLUSER(login, m->user);
	if (m->password != NULL)
		DBSETLPWD(login, m->password);
	DBSETLAPP(login, m->app);
	DBSETLCHARSET(login, "UTF-8");
	if (m->database[0] != '\0')
		DBSETLDBNAME(login, m->database);
	if (m->tds_version > 0)
		DBSETLVERSION(login, (BYTE)m->tds_version);
	m->logging_in = 1;
	mq_opening = m;
	m->dbp = dbopen(login, m->server);
	mq_opening = NULL;
	m->logging_in = 0;
	dbloginfree(login);
	if (m->dbp == NULL) {
		if (m->msgtext[0] != '\0')
			snprintf(m->base.err, sizeof(m->base.err),
			    "mssql: cannot connect to %s: %s (error %d)",
			    m->server, m->msgtext, m->msgno);
		else
			snprintf(m->base.err, sizeof(m->base.err),
			    "mssql: cannot connect to %s", m->server);
		return -1;
	}
	dbsetuserdata(m->dbp, (BYTE *)m);
	dbsetinterrupt(m->dbp, mq_chkintr, mq_hndlintr);
	/*
	 * FreeTDS 1.3 creates the socket without close-on-exec; engines
	 * and build tools must not inherit it.
	 */
	if ((fd = dbiordesc(m->dbp)) >= 0 &&
	    ((flags = fcntl(fd, F_GETFD)) == -1 ||
	    fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == -1))
		log_warn("mssql: cannot set close-on-exec on the socket");
	if (mq_plain(m, "session settings", session_sql) != 0) {
		dbclose(m->dbp);
		m->dbp = NULL;
		return -1;
	}
	return 0;
}

/*
 * Makes sure the connection is usable, opening a new one when the old
 * one broke, no more often than the growing delay allows.
 */
static int
mq_ready(struct mq *m)
{
	double now;

	/* A fatal server error (severity 20 and up) ends the session too. */
	if (m->dbp != NULL && !DBDEAD(m->dbp) && !m->base.dead)
		return 0;
	now = now_mono();
	if (now < m->reset_at) {
		snprintf(m->base.err, sizeof(m->base.err), "mssql: connection "
		    "lost; next reconnect in %.0f s", m->reset_at - now);
		m->base.dead = 1;
		m->cls = MSSQL_DEAD;
		return STORE_DEAD;
	}
	if (m->dbp != NULL) {
		dbclose(m->dbp);
		m->dbp = NULL;
	}
	m->in_tx = 0;
	if (mq_connect(m) == -1) {
		m->reset_delay = m->reset_delay < 1 ? 1 :
		    m->reset_delay * 2 > 30 ? 30 : m->reset_delay * 2;
		m->reset_at = now + m->reset_delay + jitter(m->reset_delay / 4);
		m->base.dead = 1;
		m->cls = MSSQL_DEAD;
		return STORE_DEAD;
	}
	log_notice("mssql: reconnected");
	store_event(STORE_EV_RECONNECT);
	m->base.dead = 0;
	m->reset_delay = 0;
	return 0;
}

/* Adds a string parameter: short ones as NVARCHAR, long as NTEXT. */
static RETCODE
rpc_string(struct mq *m, const char *name, const char *s, size_t len)
{
	int type = len > MSSQL_SHORT_BYTES ? SYBNTEXT : SYBVARCHAR;

	/* A length of 0 is NULL to db-lib, with a NULL pointer. */
	return dbrpcparam(m->dbp, name, 0, type, -1, (DBINT)len,
	    len > 0 ? (BYTE *)s : NULL);
}

/*
 * Sends sql through sp_executesql with the parameters p and reads the
 * answer into res.  Values stay where they are until dbrpcsend copies
 * them.
 */
static int
mq_exec_once(struct mq *m, const char *what, const char *sql,
    struct mssql_param *p, size_t n, struct mres *res)
{
	struct buf text, decl;
	char name[16];
	size_t i;
	RETCODE ok = SUCCEED;
	int rc;

	if (m->in_tx) {
		if (m->dbp == NULL || DBDEAD(m->dbp)) {
			mq_call_reset(m);
			return mq_fail(m, what);
		}
	} else if ((rc = mq_ready(m)) != 0)
		return rc;
	buf_init(&text);
	buf_init(&decl);
	mssql_stmt_text(sql, p, n, &text);
	mssql_param_decl(p, n, &decl);
	if (m->echo)
		log_debug("sql: %s", sql);
	mq_call_reset(m);
	if (dbrpcinit(m->dbp, "sp_executesql", 0) == FAIL) {
		buf_free(&text);
		buf_free(&decl);
		return mq_fail(m, what);
	}
	/*
	 * The statement and the declarations go by the names SQL Server
	 * documents for them.  Sent unnamed, Babelfish gives them positional
	 * names of its own ("@p1", "@p2"), which collide with ours; and once
	 * one parameter is named, every later one must be too.
	 */
	ok = rpc_string(m, "@stmt", buf_str(&text), text.len);
	if (ok == SUCCEED && n > 0)
		ok = rpc_string(m, "@params", buf_str(&decl), decl.len);
	for (i = 0; i < n && ok == SUCCEED; i++) {
		snprintf(name, sizeof(name), "@p%zu", i + 1);
		switch (p[i].type) {
		case 'i':
			ok = dbrpcparam(m->dbp, name, 0, SYBINT8, -1, -1,
			    (BYTE *)&p[i].i);
			break;
		case 'd':
			ok = dbrpcparam(m->dbp, name, 0, SYBFLT8, -1, -1,
			    (BYTE *)&p[i].d);
			break;
		default:
			ok = rpc_string(m, name, p[i].s, p[i].s != NULL ?
			    p[i].len : 0);
			break;
		}
	}
	if (ok == SUCCEED)
		ok = dbrpcsend(m->dbp);
	buf_free(&text);
	buf_free(&decl);
	if (ok == FAIL) {
		/* Throw away a half-built call. */
		dbrpcinit(m->dbp, "", DBRPCRESET);
		return mq_fail(m, what);
	}
	rc = mq_drain(m, what, res, dbsqlok(m->dbp) == FAIL);
	/*
	 * A batch with its own BEGIN ... COMMIT that failed may leave its
	 * transaction open: XACT_ABORT does not cover compile errors (a
	 * missing table) nor a cancel.  The next call must not run in it.
	 */
	if (rc != 0 && !m->in_tx)
		mq_rollback(m, rc);
	return rc;
}

/*
 * Runs one batch.  A deadlock victim or a lock timeout is tried again
 * at once (twice at most): batches that write are single statements or
 * wrap their statements in one transaction, so a failed one left
 * nothing behind.  Inside a transaction spanning several batches the
 * caller starts over instead.
 */
static int
mq_exec(struct mq *m, const char *what, const char *sql,
    struct mssql_param *p, size_t n, struct mres *res)
{
	struct timespec ts;
	int rc, tries;

	for (tries = 0;; tries++) {
		rc = mq_exec_once(m, what, sql, p, n, res);
		if (rc != -1 || m->in_tx || !mssql_transient(m->cls) ||
		    tries >= 2 || store_quitting())
			return rc;
		log_debug("%s; trying again", m->base.err);
		ts.tv_sec = 0;
		ts.tv_nsec = (long)((20 << (2 * tries)) + jitter(20)) *
		    1000000L;
		nanosleep(&ts, NULL);
	}
}

/* mq_exec with the values described by fmt (see mssql_params). */
static int
mq_call(struct mq *m, const char *what, struct mres *res, const char *sql,
    const char *fmt, ...)
{
	struct mssql_param p[MAXPARAMS];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = params_va(p, MAXPARAMS, fmt, ap);
	va_end(ap);
	return mq_exec(m, what, sql, p, n, res);
}

/*
 * Runs a batch that ends with one number ("SELECT COUNT(*) ...") and
 * returns it, or -1 / STORE_DEAD.
 */
static int
mq_count(struct mq *m, const char *what, const char *sql, const char *fmt,
    ...)
{
	struct mssql_param p[MAXPARAMS];
	struct mres r;
	va_list ap;
	size_t n;
	int rc;

	memset(&r, 0, sizeof(r));
	va_start(ap, fmt);
	n = params_va(p, MAXPARAMS, fmt, ap);
	va_end(ap);
	if ((rc = mq_exec(m, what, sql, p, n, &r)) != 0)
		return rc;
	rc = r.nrows > 0 ? (int)mres_int(&r, 0, 0) : 0;
	mres_clear(&r);
	return rc;
}

/* Runs a query and returns its rows as JSON objects, or NULL. */
static json_t *
mq_rows(struct mq *m, const char *what, const char *sql, const char *fmt,
    ...)
{
	struct mssql_param p[MAXPARAMS];
	struct mres r;
	va_list ap;
	json_t *a;
	size_t n;

	memset(&r, 0, sizeof(r));
	va_start(ap, fmt);
	n = params_va(p, MAXPARAMS, fmt, ap);
	va_end(ap);
	if (mq_exec(m, what, sql, p, n, &r) != 0)
		return NULL;
	a = rows_json(&r);
	mres_clear(&r);
	return a;
}

/*
 * A transaction over several batches, for writes whose size is not
 * known in advance.  XACT_ABORT rolls it back on any error, and the
 * server rolls it back when the connection breaks.
 */
static int
mq_begin(struct mq *m)
{
	int rc;

	if ((rc = mq_ready(m)) != 0)
		return rc;
	if ((rc = mq_plain(m, "begin", "SET XACT_ABORT ON; "
	    "BEGIN TRANSACTION")) != 0)
		return mq_rollback(m, rc);
	m->in_tx = 1;
	return 0;
}

static int
mq_commit(struct mq *m)
{
	int rc = mq_plain(m, "commit", "COMMIT TRANSACTION");

	m->in_tx = 0;
	if (rc != 0 && m->dbp != NULL && !DBDEAD(m->dbp)) {
		char keep[sizeof(m->base.err)];

		memcpy(keep, m->base.err, sizeof(keep));
		mq_plain(m, "rollback", "IF @@TRANCOUNT > 0 "
		    "ROLLBACK TRANSACTION");
		memcpy(m->base.err, keep, sizeof(keep));
	}
	return rc;
}

/* Ends a transaction that failed, keeping the error that ended it. */
static int
mq_rollback(struct mq *m, int rc)
{
	char keep[sizeof(m->base.err)];
	int cls = m->cls, dead = m->base.dead;

	memcpy(keep, m->base.err, sizeof(keep));
	if (m->dbp != NULL && !DBDEAD(m->dbp))
		mq_plain(m, "rollback", "IF @@TRANCOUNT > 0 "
		    "ROLLBACK TRANSACTION");
	m->in_tx = 0;
	memcpy(m->base.err, keep, sizeof(keep));
	m->cls = cls;
	m->base.dead = dead;
	return rc;
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

static void
mq_free(struct mq *m)
{
	free(m->server);
	free(m->user);
	if (m->password != NULL) {
		explicit_bzero(m->password, strlen(m->password));
		free(m->password);
	}
	free(m->database);
	free(m->app);
	free(m);
}

struct store *
store_mssql_open(const struct conf *c, struct buf *err)
{
	struct mssql_url u;
	struct mq *m;
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
	if (mq_lib_init(err) == -1) {
		mq_free(m);
		return NULL;
	}
	if (mq_connect(m) == -1) {
		buf_printf(err, "%s", m->base.err);
		mq_free(m);
		mq_lib_done();
		return NULL;
	}
	mq_open_count++;
	return &m->base;
}

static void
mq_close(struct store *st)
{
	struct mq *m = (struct mq *)st;

	if (m->dbp != NULL)
		dbclose(m->dbp);
	mq_free(m);
	mq_open_count--;
	mq_lib_done();
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
	struct mq *m = (struct mq *)st;
	size_t i;
	int rc, n;

	if ((rc = mq_begin(m)) != 0)
		return -1;
	for (i = 0; schema_batches[i] != NULL; i++)
		if (mq_plain(m, "schema", schema_batches[i]) != 0)
			return mq_rollback(m, -1);
	for (i = 0; i < NELEM(schema_triggers); i++) {
		n = mq_count(m, "schema", has_triggers, "s",
		    schema_triggers[i].table);
		if (n < 0)
			return mq_rollback(m, -1);
		if (n == 0 && mq_plain(m, "schema", schema_triggers[i].sql) !=
		    0)
			return mq_rollback(m, -1);
	}
	return mq_commit(m) == 0 ? 0 : -1;
}

/*
 * Warns when the database keeps VARCHAR text in a code page other than
 * UTF-8 and runs.error_message is VARCHAR, as the ADE migrations make it
 * and most text columns: any
 * character outside that code page (a Japanese sheet header in a Latin-1
 * database, say) is stored as "?" without an error.
 */
static void
mq_check_collation(struct mq *m)
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
	struct mres r;
	long long cp;

	memset(&r, 0, sizeof(r));
	if (mq_call(m, "collation", &r, sql, "") != 0 || r.nrows == 0) {
		mres_clear(&r);
		return;
	}
	cp = mres_int(&r, 0, 1);
	if (!mres_isnull(&r, 0, 1) && cp != 65001 && cp != 0 &&
	    mres_int(&r, 0, 2) > 0)
		log_warnx("mssql: database %s has collation %s (code page %lld):"
		    " its VARCHAR columns store characters outside that code page"
		    " as \"?\"; a UTF-8 collation (*_UTF8) or NVARCHAR columns keep"
		    " all text", m->database, mres_str(&r, 0, 0) != NULL ?
		    mres_str(&r, 0, 0) : "?", cp);
	mres_clear(&r);
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
	struct mq *m = (struct mq *)st;
	struct buf probe;
	struct mres r;
	size_t i;
	int rc;

	memset(&r, 0, sizeof(r));
	if ((rc = mq_call(m, "schema check", &r, sql, "s", table)) != 0)
		return rc < 0 ? -1 : rc;
	for (i = 0; i < r.nrows; i++)
		buf_printf(out, "%s%s", i > 0 ? " " : "", mres_str(&r, i, 0));
	rc = r.nrows > 0;
	mres_clear(&r);
	/* Once per check: runs is the table every check reads. */
	if (rc > 0 && strcmp(table, "runs") == 0)
		mq_check_collation(m);
	if (rc > 0)
		return rc;
	buf_init(&probe);
	buf_printf(&probe, BATCH "SELECT TOP (0) * FROM [%s]", table);
	rc = mq_exec(m, "schema check", buf_str(&probe), NULL, 0, NULL);
	buf_free(&probe);
	if (rc == 0 || (rc == -1 && (strstr(m->base.err, "(error 208)") !=
	    NULL || (strstr(m->base.err, "(error 33557097)") != NULL &&
	    strstr(m->base.err, "does not exist") != NULL))))
		return 0;
	return rc < 0 ? -1 : rc;
}

/*
 * Creates the missing environment rows for runnable queued runs, and
 * puts a failed environment back in the queue once one of its runs is
 * due again.  UPDLOCK, HOLDLOCK on the existence check keeps two workers
 * from inserting the same key on SQL Server; Babelfish ignores hints, so
 * a duplicate key there only means another worker was first.
 */
static int
mq_ensure_environments(struct store *st, long *inserted, long *requeued)
{
	static const char ins[] =
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
	    ROWCOUNT;
	static const char req[] =
	    BATCH
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, updated_at = " NOW
	    " WHERE environments.status = 'failed' AND EXISTS (SELECT 1"
	    "  FROM runs r WHERE " ENV_KEY("r", "environments")
	    "  AND r.status = 'queued' AND r.available_at <= " NOW
	    "  AND r.attempt_count < r.max_attempts);"
	    ROWCOUNT;
	struct mq *m = (struct mq *)st;
	int a, b = 0;

	mq_interruptible = 1;
	a = mq_count(m, "ensure environments", ins, "");
	/*
	 * A duplicate rolled the whole INSERT back: once more inserts the
	 * other keys, now that the winner's row is there to be skipped.
	 */
	if (a == -1 && m->cls == MSSQL_DUPLICATE)
		a = mq_count(m, "ensure environments", ins, "");
	if (a == -1 && m->cls == MSSQL_DUPLICATE)
		a = 0;
	if (a >= 0)
		b = mq_count(m, "ensure environments", req, "");
	mq_interruptible = 0;
	if (a < 0)
		return a;
	if (b < 0)
		return b;
	*inserted = a;
	*requeued = b;
	return 0;
}

/*
 * After a claim batch was cancelled (a stop signal, the query timeout),
 * puts back whatever it may still have committed under its token: the
 * cancel can land between COMMIT and the final SELECT, and the claim
 * would then wait for its lease to run out.
 */
static void
claim_undo(struct mq *m, const char *sql, const char *token)
{
	char keep[sizeof(m->base.err)];
	int cls = m->cls, n;

	if (cls != MSSQL_TIMEOUT || m->dbp == NULL || DBDEAD(m->dbp))
		return;
	memcpy(keep, m->base.err, sizeof(keep));
	n = mq_count(m, "claim undo", sql, "s", token);
	if (n > 0)
		log_notice("put back a claim whose answer was cancelled");
	memcpy(m->base.err, keep, sizeof(keep));
	m->cls = cls;
}

/*
 * Runs a claim batch (parameters: token, lease, spread), which a stop
 * signal may cancel; a cancelled one is undone by undo.
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
mq_claim(struct mq *m, const char *what, struct mres *r, const char *sql,
    const char *undo, const char *token, double lease)
{
	struct mssql_param p[3];
	long long spread;
	int rc;

	mq_interruptible = 1;
	for (spread = 0;; spread++) {
		mssql_params(p, NELEM(p), "sdi", token, lease, spread);
		rc = mq_exec_once(m, what, sql, p, NELEM(p), r);
		if (rc != -1 || !mssql_transient(m->cls) || spread >= 2 ||
		    store_quitting() || store_stopping())
			break;
		/* The batch ended before it could put the lock timeout back. */
		if (m->cls == MSSQL_LOCK_TIMEOUT)
			mq_plain(m, "claim", "SET LOCK_TIMEOUT -1");
		log_debug("%s; claiming again", m->base.err);
	}
	mq_interruptible = 0;
	if (rc == -1)
		claim_undo(m, undo, token);
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
    struct env_claim *out)
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
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	memset(&r, 0, sizeof(r));
	rc = mq_claim(m, "claim environment", &r, sql, undo, token, lease);
	if (rc != 0)
		return rc;
	if (r.nrows > 0) {
		mres_copy(&r, 0, 0, out->id, sizeof(out->id));
		mres_copy(&r, 0, 1, out->workspace_id,
		    sizeof(out->workspace_id));
		mres_copy(&r, 0, 2, out->configuration_id,
		    sizeof(out->configuration_id));
		mres_copy(&r, 0, 3, out->engine_spec, sizeof(out->engine_spec));
		mres_copy(&r, 0, 4, out->deps_digest, sizeof(out->deps_digest));
		rc = 1;
	}
	mres_clear(&r);
	return rc;
}

static int
mq_heartbeat_environment(struct store *st, const char *id, const char *token,
    double lease)
{
	static const char sql[] =
	    BATCH
	    "UPDATE environments SET claim_expires_at = " PLUS("@p3")
	    " WHERE id = " UUID("@p1") " AND status = 'building'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT;

	return mq_count((struct mq *)st, "heartbeat environment", sql, "ssd",
	    id, token, lease);
}

static int
mq_environment_ready(struct store *st, const char *id, const char *token,
    const char *python, const char *pyver, const char *engver)
{
	static const char sql[] =
	    BATCH
	    "UPDATE environments SET status = 'ready', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = NULL,"
	    "  updated_at = " NOW ", python_interpreter = @p3,"
	    "  python_version = @p4, engine_version = @p5"
	    " WHERE id = " UUID("@p1") " AND status = 'building'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT;

	return mq_count((struct mq *)st, "environment ready", sql, "sssss",
	    id, token, python, pyver, engver);
}

/*
 * Marks a build failed and, in the same transaction, charges one attempt
 * to every run that was waiting for it: those with attempts left go back
 * to the queue after their backoff, the others fail with the build's
 * error.  A broken environment therefore ends its runs within their
 * attempts instead of keeping them queued forever.
 */
static int
mq_environment_failed(struct store *st, const char *id, const char *token,
    const char *error, double base, double max, long *charged)
{
	static const char sql[] =
	    BATCH
	    "DECLARE @e INT = 0, @r INT = 0;"
	    "BEGIN TRANSACTION;"
	    "UPDATE environments SET status = 'failed', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = @p5,"
	    "  updated_at = " NOW ", python_interpreter = NULL,"
	    "  python_version = NULL, engine_version = NULL"
	    " WHERE id = " UUID("@p3") " AND status = 'building'"
	    " AND claimed_by = @p4;"
	    "SET @e = @@ROWCOUNT;"
	    "IF @e > 0 BEGIN"
	    " UPDATE runs SET"
	    "  status = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN 'failed' ELSE 'queued' END,"
	    "  completed_at = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN " NOW " ELSE NULL END,"
	    "  exit_code = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN 2 ELSE NULL END,"
	    "  available_at = CASE WHEN attempt_count + 1 >= max_attempts"
	    "    THEN available_at ELSE " PLUS(BACKOFF("attempt_count"))
	    "    END,"
	    "  error_message = 'Environment build failed: ' + @p5,"
	    "  attempt_count = attempt_count + 1"
	    " WHERE runs.status = 'queued' AND runs.available_at <= " NOW
	    "  AND runs.attempt_count < runs.max_attempts"
	    "  AND EXISTS (SELECT 1 FROM environments e"
	    "  WHERE e.id = " UUID("@p3") " AND " ENV_KEY("e", "runs") ");"
	    " SET @r = @@ROWCOUNT;"
	    "END;"
	    "COMMIT TRANSACTION;"
	    "SELECT @e AS env, @r AS charged;";
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	memset(&r, 0, sizeof(r));
	rc = mq_call(m, "environment failed", &r, sql, "ddsss", base, max, id,
	    token, error);
	if (rc != 0)
		return rc;
	rc = 0;
	if (r.nrows > 0 && mres_int(&r, 0, 0) > 0) {
		*charged = (long)mres_int(&r, 0, 1);
		rc = 1;
	}
	mres_clear(&r);
	return rc;
}

static int
mq_environment_requeue(struct store *st, const char *id, const char *error)
{
	static const char sql[] =
	    BATCH
	    "UPDATE environments SET status = 'queued', error_message = @p2,"
	    "  claimed_by = NULL, claim_expires_at = NULL, updated_at = " NOW
	    " WHERE id = " UUID("@p1") " AND status = 'ready';"
	    ROWCOUNT;

	return mq_count((struct mq *)st, "requeue environment", sql, "ss", id,
	    error);
}

static int
mq_environment_touch(struct store *st, const char *id)
{
	static const char sql[] =
	    BATCH
	    "UPDATE environments SET last_used_at = " NOW ","
	    "  updated_at = " NOW
	    " WHERE id = " UUID("@p1") ";"
	    ROWCOUNT;

	return mq_count((struct mq *)st, "touch environment", sql, "s", id);
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
    struct run_claim *out)
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
	    " DATEDIFF_BIG(millisecond, c.available_at, " NOW ") AS waited,"
	    " e.python_interpreter,"
	    " CASE WHEN d.id IS NULL THEN 0 ELSE 1 END AS doc_found,"
	    " d.stored_uri, d.original_filename"
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
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	memset(&r, 0, sizeof(r));
	rc = mq_claim(m, "claim run", &r, sql, undo, token, lease);
	if (rc != 0)
		return rc;
	if (r.nrows > 0) {
		mres_copy(&r, 0, 0, out->id, sizeof(out->id));
		mres_copy(&r, 0, 1, out->workspace_id,
		    sizeof(out->workspace_id));
		mres_copy(&r, 0, 2, out->configuration_id,
		    sizeof(out->configuration_id));
		mres_copy(&r, 0, 3, out->input_document_id,
		    sizeof(out->input_document_id));
		mres_copy(&r, 0, 4, out->engine_spec, sizeof(out->engine_spec));
		mres_copy(&r, 0, 5, out->deps_digest, sizeof(out->deps_digest));
		if (!mres_isnull(&r, 0, 6))
			mssql_format_ms(mres_int(&r, 0, 6), out->started_at,
			    sizeof(out->started_at));
		out->attempt_count = (long)mres_int(&r, 0, 7);
		out->max_attempts = (long)mres_int(&r, 0, 8);
		out->run_options = mres_dup(&r, 0, 9);
		out->input_sheet_names = mres_dup(&r, 0, 10);
		mres_copy(&r, 0, 11, out->env_id, sizeof(out->env_id));
		out->waited = (double)mres_int(&r, 0, 12) / 1000.0;
		mres_copy(&r, 0, 13, out->env_python,
		    sizeof(out->env_python));
		out->doc_read = 1;
		out->doc_found = mres_int(&r, 0, 14) != 0;
		out->doc_stored_uri = mres_dup(&r, 0, 15);
		out->doc_original_filename = mres_dup(&r, 0, 16);
		rc = 1;
	}
	mres_clear(&r);
	return rc;
}

static int
mq_heartbeat_run(struct store *st, const char *id, const char *token,
    double lease)
{
	static const char sql[] =
	    BATCH
	    "UPDATE runs SET claim_expires_at = " PLUS("@p3")
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT;

	return mq_count((struct mq *)st, "heartbeat run", sql, "ssd", id,
	    token, lease);
}

static int
mq_get_document(struct store *st, const char *id, struct document *d)
{
	static const char sql[] =
	    BATCH "SELECT stored_uri, original_filename FROM documents"
	    " WHERE id = " UUID("@p1");
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	if (!mssql_is_guid(id))
		return 0;
	memset(&r, 0, sizeof(r));
	if ((rc = mq_call(m, "document", &r, sql, "s", id)) != 0)
		return rc;
	if (r.nrows > 0) {
		d->stored_uri = mres_dup(&r, 0, 0);
		d->original_filename = mres_dup(&r, 0, 1);
	}
	mres_clear(&r);
	return d->stored_uri != NULL;
}

/*
 * Inserts one result table's rows, as many rows per statement as the
 * parameter budget allows (the run id is one shared parameter).
 */
static int
insert_rows(struct mq *m, const char *table, const char *const *cols,
    json_t *rows, const char *run_id)
{
	struct mssql_param *p;
	struct buf sql;
	size_t ncols, per, total, first, k, i, np;
	int rc = 0;

	for (ncols = 0; cols[ncols] != NULL; ncols++)
		;
	total = json_array_size(rows);
	if (total == 0)
		return 0;
	per = mssql_insert_rows_per_batch(ncols);
	p = xcalloc(1 + per * ncols, sizeof(*p));
	buf_init(&sql);
	for (first = 0; first < total && rc == 0; first += per) {
		size_t count = total - first < per ? total - first : per;

		buf_reset(&sql);
		mssql_insert_sql(table, cols, 2, count, &sql);
		mssql_params(p, 1, "s", run_id);
		np = 1;
		for (i = 0; i < count; i++) {
			json_t *row = json_array_get(rows, first + i);

			for (k = 0; k < ncols; k++)
				param_json(&p[np++], json_object_get(row,
				    cols[k]));
		}
		rc = mq_exec(m, table, buf_str(&sql), p, np, NULL);
	}
	buf_free(&sql);
	free(p);
	return rc;
}

/* Appends the INSERT of rows to a success batch; returns the values. */
static size_t
batch_rows(struct buf *sql, struct mssql_param *p, size_t np,
    const char *table, const char *const *cols, json_t *rows)
{
	size_t ncols, i, k, n = json_array_size(rows);

	if (n == 0)
		return 0;
	for (ncols = 0; cols[ncols] != NULL; ncols++)
		;
	mssql_insert_sql(table, cols, np + 1, n, sql);
	buf_addstr(sql, "; ");
	for (i = 0; i < n; i++)
		for (k = 0; k < ncols; k++)
			param_json(&p[np++], json_object_get(json_array_get(
			    rows, i), cols[k]));
	return n * ncols;
}

/*
 * A run's success as one batch, one round trip, when its result rows
 * fit the parameters of one call: the row, and only if the claim still
 * held, the result rows replaced; one transaction (XACT_ABORT ON).
 * Returns 1, 0 when the claim was lost, -1 or STORE_DEAD on error, and
 * 2 when the rows do not fit.
 */
static int
run_succeeded_batch(struct mq *m, const char *id, const char *token,
    const char *output_path, json_t *results)
{
	static const char upd[] =
	    BATCH
	    "DECLARE @n INT;"
	    "BEGIN TRANSACTION;"
	    "UPDATE runs SET status = 'succeeded', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL, exit_code = 0,"
	    "  output_path = @p3, error_message = NULL"
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    "SET @n = @@ROWCOUNT;";
	static const char del[] =
	    "IF @n > 0 BEGIN "
	    "DELETE FROM run_metrics WHERE run_id = " UUID("@p1") ";"
	    "DELETE FROM run_fields WHERE run_id = " UUID("@p1") ";"
	    "DELETE FROM run_table_columns WHERE run_id = " UUID("@p1") "; ";
	json_t *metrics = json_object_get(results, "run_metrics");
	json_t *fields = json_object_get(results, "run_fields");
	json_t *columns = json_object_get(results, "run_table_columns");
	json_t *one = json_array();
	const char *const *c0 = store_result_columns(&m->base, 0);
	const char *const *c1 = store_result_columns(&m->base, 1);
	const char *const *c2 = store_result_columns(&m->base, 2);
	struct mssql_param *p;
	struct buf sql;
	struct mres r;
	size_t need = 3, k;
	int rc;

	if (json_is_object(metrics))
		json_array_append(one, metrics);
	for (k = 0; c0[k] != NULL; k++)
		need += json_array_size(one);
	for (k = 0; c1[k] != NULL; k++)
		need += json_array_size(fields);
	for (k = 0; c2[k] != NULL; k++)
		need += json_array_size(columns);
	if (need > MSSQL_INSERT_PARAMS) {
		json_decref(one);
		return 2;
	}
	p = xcalloc(need, sizeof(*p));
	mssql_params(p, 3, "sss", id, token, output_path);
	buf_init(&sql);
	buf_addstr(&sql, upd);
	if (results != NULL) {
		k = 3;
		buf_addstr(&sql, del);
		k += batch_rows(&sql, p, k, "run_metrics", c0, one);
		k += batch_rows(&sql, p, k, "run_fields", c1, fields);
		k += batch_rows(&sql, p, k, "run_table_columns", c2, columns);
		buf_addstr(&sql, "END;");
	}
	buf_addstr(&sql, "COMMIT TRANSACTION; SELECT @n AS n;");
	memset(&r, 0, sizeof(r));
	rc = mq_exec(m, "run succeeded", buf_str(&sql), p, need, &r);
	if (rc == 0)
		rc = r.nrows > 0 && mres_int(&r, 0, 0) > 0;
	mres_clear(&r);
	buf_free(&sql);
	free(p);
	json_decref(one);
	return rc;
}

static int
run_succeeded_once(struct mq *m, const char *id, const char *token,
    const char *output_path, json_t *results)
{
	static const char upd[] =
	    BATCH
	    "UPDATE runs SET status = 'succeeded', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL, exit_code = 0,"
	    "  output_path = @p3, error_message = NULL"
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT;
	static const char del[] =
	    BATCH
	    "DELETE FROM run_metrics WHERE run_id = " UUID("@p1") ";"
	    "DELETE FROM run_fields WHERE run_id = " UUID("@p1") ";"
	    "DELETE FROM run_table_columns WHERE run_id = " UUID("@p1") ";";
	json_t *metrics, *one;
	int n;

	if ((n = mq_begin(m)) != 0)
		return n;
	n = mq_count(m, "run succeeded", upd, "sss", id, token, output_path);
	if (n <= 0)
		return mq_rollback(m, n);
	if (results != NULL) {
		if ((n = mq_call(m, "run succeeded", NULL, del, "s", id)) != 0)
			return mq_rollback(m, n);
		metrics = json_object_get(results, "run_metrics");
		if (json_is_object(metrics)) {
			one = json_array();
			json_array_append(one, metrics);
			n = insert_rows(m, "run_metrics",
			    store_result_columns(&m->base, 0), one, id);
			json_decref(one);
			if (n != 0)
				return mq_rollback(m, n);
		}
		if ((n = insert_rows(m, "run_fields",
		    store_result_columns(&m->base, 1),
		    json_object_get(results, "run_fields"), id)) != 0 ||
		    (n = insert_rows(m, "run_table_columns",
		    store_result_columns(&m->base, 2),
		    json_object_get(results, "run_table_columns"), id)) != 0)
			return mq_rollback(m, n);
	}
	if ((n = mq_commit(m)) != 0)
		return n;
	return 1;
}

/*
 * Marks the run succeeded and replaces its result rows, all in one
 * transaction (XACT_ABORT ON): either the run is succeeded with every
 * row, or nothing changed.  A deadlock victim starts over from the
 * beginning, since the server rolled everything back.  Returns 1, 0
 * when the claim was lost, -1 on error.
 */
static int
mq_run_succeeded(struct store *st, const char *id, const char *token,
    const char *output_path, json_t *results)
{
	struct mq *m = (struct mq *)st;
	struct timespec ts;
	int rc, tries;

	for (tries = 0;; tries++) {
		rc = run_succeeded_batch(m, id, token, output_path, results);
		if (rc == 2)
			rc = run_succeeded_once(m, id, token, output_path,
			    results);
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

static int
mq_run_finish(struct store *st, const char *id, const char *token,
    enum run_finish how, int exit_code, const char *error, double delay)
{
	static const char retry[] =
	    BATCH
	    "UPDATE runs SET status = 'queued',"
	    "  available_at = " PLUS("@p3") ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = @p4, completed_at = NULL, exit_code = NULL,"
	    "  output_path = NULL"
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT;
	static const char release[] =
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
	    ROWCOUNT;
	static const char failed[] =
	    BATCH
	    "UPDATE runs SET status = 'failed', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = @p3, exit_code = @p4, output_path = NULL"
	    " WHERE id = " UUID("@p1") " AND status = 'running'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT;
	struct mq *m = (struct mq *)st;

	switch (how) {
	case FINISH_RETRY:
		return mq_count(m, "retry run", retry, "ssds", id, token,
		    delay, error);
	case FINISH_RELEASE:
		return mq_count(m, "release run", release, "ssds", id, token,
		    delay, error);
	case FINISH_FAILED:
		break;
	}
	return mq_count(m, "fail run", failed, "sssi", id, token, error,
	    (long long)exit_code);
}

/*
 * Recovers the work of workers that died: each statement decides and
 * changes in one step, so a heartbeat that lands first always wins.
 */
static int
mq_sweep(struct store *st, double base, double max, struct sweep_counts *out)
{
	static const char sql[] =
	    BATCH
	    "DECLARE @f INT, @q INT, @e INT;"
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
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = 'lease expired',"
	    "  updated_at = " NOW
	    " WHERE status = 'building' AND claim_expires_at < " NOW ";"
	    "SET @e = @@ROWCOUNT;"
	    "COMMIT TRANSACTION;"
	    "SELECT @f AS failed, @q AS requeued, @e AS envs;";
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	memset(&r, 0, sizeof(r));
	mq_interruptible = 1;
	rc = mq_call(m, "sweep", &r, sql, "dd", base, max);
	mq_interruptible = 0;
	if (rc != 0)
		return rc;
	if (r.nrows > 0) {
		out->runs_failed = (long)mres_int(&r, 0, 0);
		out->runs_requeued = (long)mres_int(&r, 0, 1);
		out->envs_requeued = (long)mres_int(&r, 0, 2);
	}
	mres_clear(&r);
	return 0;
}

static int
mq_run_abandon(struct store *st, const char *id, const char *token,
    const char *error, double base, double max)
{
	static const char sql[] =
	    BATCH
	    "UPDATE runs SET" GIVE_UP_OR_RETRY ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = @p4, exit_code = NULL, output_path = NULL"
	    " WHERE id = " UUID("@p3") " AND status = 'running'"
	    " AND claimed_by = @p5;"
	    ROWCOUNT;

	return mq_count((struct mq *)st, "abandon run", sql, "ddsss", base,
	    max, id, error, token);
}

static int
mq_environment_abandon(struct store *st, const char *id, const char *token,
    const char *error)
{
	static const char sql[] =
	    BATCH
	    "UPDATE environments SET status = 'queued', claimed_by = NULL,"
	    "  claim_expires_at = NULL, error_message = @p3,"
	    "  updated_at = " NOW
	    " WHERE id = " UUID("@p1") " AND status = 'building'"
	    " AND claimed_by = @p2;"
	    ROWCOUNT;

	return mq_count((struct mq *)st, "abandon environment", sql, "sss",
	    id, token, error);
}

static int
mq_claimed_with(struct store *st, int env, const char *token, char *id)
{
	static const char runs[] =
	    BATCH "SELECT " GUID("id") " AS id FROM runs"
	    " WHERE claimed_by = @p1 AND status = 'running';";
	static const char envs[] =
	    BATCH "SELECT " GUID("id") " AS id FROM environments"
	    " WHERE claimed_by = @p1 AND status = 'building';";
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	memset(&r, 0, sizeof(r));
	if ((rc = mq_call(m, "claim lookup", &r, env ? envs : runs, "s",
	    token)) != 0)
		return rc;
	if (r.nrows > 0) {
		mres_copy(&r, 0, 0, id, 64);
		rc = 1;
	}
	mres_clear(&r);
	return rc;
}

/*
 * Takes or renews a named lease.  There is no MERGE on Babelfish: the
 * UPDATE renews our own or an expired lease, and only when no row exists
 * the INSERT creates it; the primary key is the real guard, so losing
 * an insert race (a duplicate key) means someone else holds it.
 */
static int
mq_singleton(struct store *st, const char *name, const char *holder,
    double lease)
{
	static const char sql[] =
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
	    "SELECT @n AS n;";
	struct mq *m = (struct mq *)st;
	int n;

	n = mq_count(m, "lease", sql, "ssd", name, holder, lease);
	if (n == -1 && m->cls == MSSQL_DUPLICATE)
		return 0;
	return n < 0 ? n : n == 1;
}

/* Only the host writes its row: an UPDATE, or the first INSERT. */
static int
mq_host_beat(struct store *st, const char *name, const char *info,
    double ttl)
{
	static const char sql[] =
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
	    "SELECT @n AS n;";

	return mq_count((struct mq *)st, "host", sql, "ssd", name, info, ttl);
}

static json_t *
mq_list_hosts(struct store *st)
{
	static const char sql[] =
	    BATCH "SELECT name, holder, " TS("expires_at", "expires_at") ","
	    " CASE WHEN expires_at < " NOW " THEN 'gone' ELSE 'up' END"
	    "  AS state"
	    " FROM worker_leases WHERE name LIKE 'host:%' ORDER BY name";

	return mq_rows((struct mq *)st, "list hosts", sql, "");
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

static json_t *
mq_gc_environments(struct store *st, long ttl_days, int dry_run)
{
	static const char list[] =
	    BATCH "SELECT " GUID("e.id") " AS id,"
	    " " GUID("e.workspace_id") " AS workspace_id,"
	    " " GUID("e.configuration_id") " AS configuration_id,"
	    " e.deps_digest FROM environments e WHERE" GC_ENV_COND;
	/*
	 * Each candidate is deleted by a statement that decides again, so
	 * a run queued meanwhile keeps its environment.
	 */
	static const char del[] =
	    BATCH
	    "DELETE FROM environments WHERE environments.id = " UUID("@p2")
	    " AND environments.id IN (SELECT e.id FROM environments e"
	    "  WHERE e.id = " UUID("@p2") " AND" GC_ENV_COND ");"
	    ROWCOUNT;
	struct mq *m = (struct mq *)st;
	json_t *rows, *gone, *row;
	size_t i;
	int n;

	if (ttl_days > MAX_TTL_DAYS)
		ttl_days = MAX_TTL_DAYS;
	mq_interruptible = 1;
	rows = mq_rows(m, "gc environments", list, "i", (long long)ttl_days);
	if (rows == NULL || dry_run) {
		mq_interruptible = 0;
		return rows;
	}
	gone = json_array();
	json_array_foreach(rows, i, row) {
		n = mq_count(m, "gc environments", del, "is",
		    (long long)ttl_days,
		    json_string_value(json_object_get(row, "id")));
		if (n < 0) {
			json_decref(gone);
			gone = NULL;
			break;
		}
		if (n > 0)
			json_array_append(gone, row);
	}
	mq_interruptible = 0;
	json_decref(rows);
	return gone;
}

static int
mq_run_finished_before(struct store *st, const char *id, long ttl_days)
{
	static const char sql[] =
	    BATCH "SELECT CASE WHEN status IN ('succeeded', 'failed',"
	    " 'cancelled') AND completed_at <"
	    " DATEADD(day, -CAST(@p2 AS INT), " NOW ") THEN 1 ELSE 0 END AS v"
	    " FROM runs WHERE id = " UUID("@p1");
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	/* A directory that is not named by a GUID belongs to no run. */
	if (!mssql_is_guid(id))
		return 2;
	if (ttl_days > MAX_TTL_DAYS)
		ttl_days = MAX_TTL_DAYS;
	memset(&r, 0, sizeof(r));
	if ((rc = mq_call(m, "run age", &r, sql, "si", id,
	    (long long)ttl_days)) != 0)
		return rc;
	rc = r.nrows > 0 ? (int)mres_int(&r, 0, 0) : 2;
	mres_clear(&r);
	return rc;
}

/* Work that is not finished yet: runs that may still execute, builds. */
static int
mq_pending(struct store *st, long *count)
{
	static const char sql[] =
	    BATCH "SELECT (SELECT COUNT_BIG(*) FROM runs WHERE"
	    "  (status = 'queued' AND attempt_count < max_attempts)"
	    "  OR status = 'running') +"
	    " (SELECT COUNT_BIG(*) FROM environments"
	    "  WHERE status IN ('queued', 'building')) AS n";
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	memset(&r, 0, sizeof(r));
	mq_interruptible = 1;
	rc = mq_call(m, "pending", &r, sql, "");
	mq_interruptible = 0;
	if (rc != 0)
		return rc;
	*count = (long)mres_int(&r, 0, 0);
	mres_clear(&r);
	return 0;
}

static int
mq_queue_stats(struct store *st, struct queue_stats *q)
{
	/* Ages in milliseconds: db-lib reads a BIGINT exactly. */
	static const char sql[] = BATCH QUEUE_STATS(
	    "DATEDIFF_BIG(millisecond, available_at, " NOW ")");
	struct mq *m = (struct mq *)st;
	struct mres r;
	size_t i;
	int rc;

	memset(&r, 0, sizeof(r));
	mq_interruptible = 1;
	rc = mq_call(m, "queue stats", &r, sql, "");
	mq_interruptible = 0;
	if (rc != 0)
		return rc;
	for (i = 0; i < r.nrows; i++)
		store_queue_stats_add(q, mres_str(&r, i, 0),
		    (long)mres_int(&r, i, 1), (long)mres_int(&r, i, 2),
		    (double)mres_int(&r, i, 3) / 1000.0);
	mres_clear(&r);
	return 0;
}

static int
mq_next_due(struct store *st, double *seconds)
{
	static const char sql[] =
	    BATCH "SELECT DATEDIFF_BIG(millisecond, " NOW ", MIN(available_at))"
	    " AS ms FROM runs WHERE status = 'queued'"
	    " AND attempt_count < max_attempts";
	struct mq *m = (struct mq *)st;
	struct mres r;
	int rc;

	memset(&r, 0, sizeof(r));
	mq_interruptible = 1;
	rc = mq_call(m, "next due", &r, sql, "");
	mq_interruptible = 0;
	if (rc != 0)
		return rc;
	*seconds = r.nrows == 0 || mres_isnull(&r, 0, 0) ? 1e9 :
	    (double)mres_int(&r, 0, 0) / 1000.0;
	mres_clear(&r);
	return 0;
}

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
	struct mq *m = (struct mq *)st;
	struct mres r;
	char slug[101], new_ws[37], new_cfg[37];
	int rc;

	util_slug(ws, slug, sizeof(slug));
	util_uuid(new_ws);
	util_uuid(new_cfg);
	memset(&r, 0, sizeof(r));
	rc = mq_call(m, "register", &r, sql, "sssssss", slug,
	    mssql_is_guid(ws) ? ws : NULL, new_ws, ws, cfg,
	    mssql_is_guid(cfg) ? cfg : NULL, new_cfg);
	if (rc != 0)
		return -1;
	if (r.nrows == 0) {
		mres_clear(&r);
		snprintf(m->base.err, sizeof(m->base.err),
		    "mssql: register: no answer");
		return -1;
	}
	mres_copy(&r, 0, 0, ws_id, 64);
	mres_copy(&r, 0, 1, cfg_id, 64);
	mres_clear(&r);
	return 0;
}

static int
mq_enqueue(struct store *st, const struct enqueue_req *q)
{
	static const char sql[] =
	    BATCH
	    "BEGIN TRANSACTION;"
	    "INSERT INTO documents (id, workspace_id, original_filename,"
	    "  content_type, byte_size, sha256, stored_uri, expires_at,"
	    "  last_run_id)"
	    " VALUES (" UUID("@p1") ", " UUID("@p2") ", @p3, @p4, @p5, @p6,"
	    "  @p7, DATEADD(day, 30, " NOW "), " UUID("@p8") ");"
	    "UPDATE configurations SET content_digest = @p10,"
	    "  last_used_at = " NOW ", updated_at = " NOW
	    " WHERE id = " UUID("@p9") ";"
	    "INSERT INTO runs (id, configuration_id, workspace_id,"
	    "  input_document_id, input_sheet_names, engine_spec, deps_digest,"
	    "  run_options, max_attempts)"
	    " VALUES (" UUID("@p8") ", " UUID("@p9") ", " UUID("@p2") ","
	    "  " UUID("@p1") ", @p11, @p12, @p13, @p14, @p15);"
	    "COMMIT TRANSACTION;";
	struct mq *m = (struct mq *)st;

	return mq_call(m, "enqueue", NULL, sql, "ssssisssssssssi",
	    q->document_id, q->workspace_id, q->original_filename,
	    q->content_type, (long long)q->document_size, q->document_sha256,
	    q->stored_uri, q->run_id, q->configuration_id, q->content_digest,
	    q->input_sheet_names, q->engine_spec, q->deps_digest,
	    q->run_options, (long long)q->max_attempts) == 0 ? 0 : -1;
}

static json_t *
mq_list_runs(struct store *st, const char *status, long limit)
{
	static const char sql[] =
	    BATCH "SELECT TOP (@p2) " GUID("id") " AS id, status,"
	    "  attempt_count, max_attempts, exit_code, "
	    TS("created_at", "created_at") ", "
	    TS("started_at", "started_at") ", "
	    TS("completed_at", "completed_at") ", "
	    TS("available_at", "available_at") ","
	    "  claimed_by, error_message," NAMES_OF_RUN " FROM runs"
	    " WHERE @p1 IS NULL OR status = @p1"
	    " ORDER BY runs.created_at DESC, runs.id";

	return mq_rows((struct mq *)st, "list runs", sql, "si", status,
	    (long long)(limit < 0 ? 0 : limit));
}

static int
mq_run_requeue(struct store *st, const char *id)
{
	static const char sql[] =
	    BATCH
	    "UPDATE runs SET status = 'queued', attempt_count = 0,"
	    "  available_at = " NOW ", started_at = NULL, completed_at = NULL,"
	    "  exit_code = NULL,"
	    "  error_message = NULL, output_path = NULL, claimed_by = NULL,"
	    "  claim_expires_at = NULL"
	    " WHERE id = " UUID("@p1") " AND status IN ('succeeded', 'failed',"
	    "  'cancelled');"
	    ROWCOUNT;

	if (!mssql_is_guid(id))
		return 0;
	return mq_count((struct mq *)st, "requeue run", sql, "s", id);
}

static int
mq_run_cancel(struct store *st, const char *id)
{
	static const char sql[] =
	    BATCH
	    "UPDATE runs SET status = 'cancelled', completed_at = " NOW ","
	    "  claimed_by = NULL, claim_expires_at = NULL,"
	    "  error_message = 'Run cancelled by an operator'"
	    " WHERE id = " UUID("@p1") " AND status IN ('queued', 'running');"
	    ROWCOUNT;

	if (!mssql_is_guid(id))
		return 0;
	return mq_count((struct mq *)st, "cancel run", sql, "s", id);
}

static json_t *
mq_list_environments(struct store *st)
{
	static const char sql[] =
	    BATCH "SELECT " GUID("id") " AS id,"
	    " " GUID("workspace_id") " AS workspace_id,"
	    " " GUID("configuration_id") " AS configuration_id,"
	    " deps_digest, status, error_message, claimed_by, "
	    TS("created_at", "created_at") ", "
	    TS("updated_at", "updated_at") ", "
	    TS("last_used_at", "last_used_at") ","
	    " python_version, engine_version, python_interpreter"
	    " FROM environments ORDER BY environments.created_at";

	return mq_rows((struct mq *)st, "list environments", sql, "");
}

static int
mq_environment_rebuild(struct store *st, const char *id)
{
	static const char sql[] =
	    BATCH
	    "UPDATE environments SET status = 'queued', error_message = NULL,"
	    "  claimed_by = NULL, claim_expires_at = NULL, updated_at = " NOW
	    " WHERE id = " UUID("@p1")
	    "  AND status IN ('ready', 'failed', 'queued');"
	    ROWCOUNT;

	if (!mssql_is_guid(id))
		return 0;
	return mq_count((struct mq *)st, "rebuild environment", sql, "s", id);
}

static json_t *
mq_show_run(struct store *st, const char *id)
{
	static const char run[] =
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
	    NAMES_OF_RUN " FROM runs WHERE id = " UUID("@p1");
	/* every column the table has: valid_cells came later */
	static const char fld[] =
	    BATCH "SELECT * FROM run_fields WHERE run_id = " UUID("@p1")
	    " ORDER BY field";
	static const char col[] =
	    BATCH "SELECT * FROM run_table_columns"
	    " WHERE run_id = " UUID("@p1")
	    " ORDER BY workbook_index, sheet_index, table_index, column_index";
	struct mq *m = (struct mq *)st;
	struct buf met;
	json_t *out, *a;
	size_t k;

	out = json_object();
	if (!mssql_is_guid(id)) {
		json_object_set_new(out, "run", json_null());
		json_object_set_new(out, "metrics", json_null());
		json_object_set_new(out, "fields", json_array());
		json_object_set_new(out, "table_columns", json_array());
		return out;
	}
	if ((a = mq_rows(m, "show run", run, "s", id)) == NULL)
		goto fail;
	json_object_set(out, "run", json_array_size(a) ? json_array_get(a, 0)
	    : json_null());
	json_decref(a);
	/* The metric columns are the ones results.c fills. */
	buf_init(&met);
	buf_addstr(&met, BATCH "SELECT ");
	for (k = 0; results_metric_columns[k] != NULL; k++)
		buf_printf(&met, "%s%s", k > 0 ? ", " : "",
		    results_metric_columns[k]);
	buf_addstr(&met, " FROM run_metrics WHERE run_id = " UUID("@p1"));
	a = mq_rows(m, "show run", buf_str(&met), "s", id);
	buf_free(&met);
	if (a == NULL)
		goto fail;
	json_object_set(out, "metrics", json_array_size(a) ?
	    json_array_get(a, 0) : json_null());
	json_decref(a);
	if ((a = mq_rows(m, "show run", fld, "s", id)) == NULL)
		goto fail;
	json_object_set_new(out, "fields", a);
	if ((a = mq_rows(m, "show run", col, "s", id)) == NULL)
		goto fail;
	json_object_set_new(out, "table_columns", a);
	return out;
fail:
	json_decref(out);
	return NULL;
}

static const struct store_ops mssql_ops = {
	.name = "mssql",
	.close = mq_close,
	.init_schema = mq_init_schema,
	.table_columns = mq_table_columns,
	.ensure_environments = mq_ensure_environments,
	.claim_environment = mq_claim_environment,
	.heartbeat_environment = mq_heartbeat_environment,
	.environment_ready = mq_environment_ready,
	.environment_failed = mq_environment_failed,
	.environment_requeue = mq_environment_requeue,
	.environment_touch = mq_environment_touch,
	.claim_run = mq_claim_run,
	.heartbeat_run = mq_heartbeat_run,
	.get_document = mq_get_document,
	.run_succeeded = mq_run_succeeded,
	.run_finish = mq_run_finish,
	.sweep = mq_sweep,
	.run_abandon = mq_run_abandon,
	.environment_abandon = mq_environment_abandon,
	.claimed_with = mq_claimed_with,
	.singleton = mq_singleton,
	.gc_environments = mq_gc_environments,
	.run_finished_before = mq_run_finished_before,
	.pending = mq_pending,
	.queue_stats = mq_queue_stats,
	.next_due = mq_next_due,
	.wait = NULL,		/* no notifications: idle workers poll */
	.register_names = mq_register,
	.enqueue = mq_enqueue,
	.list_runs = mq_list_runs,
	.run_requeue = mq_run_requeue,
	.run_cancel = mq_run_cancel,
	.list_environments = mq_list_environments,
	.host_beat = mq_host_beat,
	.list_hosts = mq_list_hosts,
	.environment_rebuild = mq_environment_rebuild,
	.show_run = mq_show_run,
};
