/*
 * Tests the parts of the SQL Server backend that need no server: error
 * classification (dead connection, deadlock victim, duplicate key,
 * constraint, lock timeout, other), the url_override parser, the typed
 * parameters of sp_executesql and their declaration string, the empty
 * string workaround, the TDS version names, the GUID check and the
 * formatting of times read as milliseconds.
 *
 * With ADE_TEST_MSSQL_HOST set (and _PORT, _USER, _PASSWORD), test_live
 * also runs the store operations against that server, in a database it
 * creates and drops (or in the scratch database _DATABASE names); without
 * a host it is skipped.
 */
#include "unit.h"

#include <jansson.h>
#include <sybfront.h>
#include <sybdb.h>
#include <uuid/uuid.h>

#include "conf.h"
#include "store.h"
#include "store_mssql.h"

/* A connection that is gone is dead, whatever the number says. */
static void
test_classify_dead(void **state)
{
	(void)state;
	assert_int_equal(mssql_classify(0, 0, 1, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(2627, 14, 1, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(1205, 13, 1, NULL), MSSQL_DEAD);
	/* db-lib's network errors. */
	assert_int_equal(mssql_classify(20002, 9, 0, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(20004, 9, 0, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(20006, 9, 0, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(20009, 9, 0, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(20017, 9, 0, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(20047, 1, 0, NULL), MSSQL_DEAD);
	/* Severity 20 and above ends the session. */
	assert_int_equal(mssql_classify(4060, 20, 0, NULL), MSSQL_DEAD);
	assert_int_equal(mssql_classify(0, 25, 0, NULL), MSSQL_DEAD);
}

static void
test_classify_statement_errors(void **state)
{
	(void)state;
	assert_int_equal(mssql_classify(1205, 13, 0, NULL), MSSQL_DEADLOCK);
	assert_int_equal(mssql_classify(2627, 14, 0, NULL), MSSQL_DUPLICATE);
	assert_int_equal(mssql_classify(2601, 14, 0, NULL), MSSQL_DUPLICATE);
	assert_int_equal(mssql_classify(515, 16, 0, NULL), MSSQL_CONSTRAINT);
	assert_int_equal(mssql_classify(547, 16, 0, NULL), MSSQL_CONSTRAINT);
	assert_int_equal(mssql_classify(1222, 16, 0, NULL), MSSQL_LOCK_TIMEOUT);
	/* Babelfish's catch-all number: told apart by its text */
	assert_int_equal(mssql_classify(33557097, 16, 0,
	    "canceling statement due to lock timeout"), MSSQL_LOCK_TIMEOUT);
	assert_int_equal(mssql_classify(33557097, 16, 0, "deadlock detected"),
	    MSSQL_DEADLOCK);
	assert_int_equal(mssql_classify(33557097, 16, 0, "could not serialize "
	    "access due to concurrent update"), MSSQL_DEADLOCK);
	assert_int_equal(mssql_classify(33557097, 16, 0,
	    "relation \"worker_leases\" does not exist"), MSSQL_OTHER);
	assert_int_equal(mssql_classify(33557097, 16, 0, NULL), MSSQL_OTHER);
	assert_int_equal(mssql_classify(20003, 6, 0, NULL), MSSQL_TIMEOUT);
	/* Anything else: report, try later. */
	assert_int_equal(mssql_classify(8152, 16, 0, NULL), MSSQL_OTHER);
	assert_int_equal(mssql_classify(18456, 14, 0, NULL), MSSQL_OTHER);
	assert_int_equal(mssql_classify(0, 0, 0, NULL), MSSQL_OTHER);
	assert_int_equal(mssql_classify(266, 16, 0, NULL), MSSQL_OTHER);
}

/* Only deadlock victims and lock timeouts are sent again at once. */
static void
test_transient(void **state)
{
	(void)state;
	assert_true(mssql_transient(MSSQL_DEADLOCK));
	assert_true(mssql_transient(MSSQL_LOCK_TIMEOUT));
	assert_false(mssql_transient(MSSQL_DEAD));
	assert_false(mssql_transient(MSSQL_DUPLICATE));
	assert_false(mssql_transient(MSSQL_CONSTRAINT));
	assert_false(mssql_transient(MSSQL_TIMEOUT));
	assert_false(mssql_transient(MSSQL_OTHER));
}

static void
test_url_full(void **state)
{
	struct mssql_url u;
	char err[128];

	(void)state;
	assert_int_equal(mssql_parse_url("mssql+pyodbc://ade:s%40cret%3Ax@"
	    "db.example.com:14330/ade_prod?driver=ODBC+Driver+18+for+SQL+"
	    "Server&Encrypt=yes", &u, err, sizeof(err)), 0);
	assert_string_equal(u.user, "ade");
	assert_string_equal(u.password, "s@cret:x");
	assert_string_equal(u.host, "db.example.com");
	assert_int_equal(u.port, 14330);
	assert_string_equal(u.database, "ade_prod");

	/* A raw @ in the password: the last @ ends the user part. */
	assert_int_equal(mssql_parse_url("mssql+pyodbc://u:p@ss@h/db", &u, err,
	    sizeof(err)), 0);
	assert_string_equal(u.user, "u");
	assert_string_equal(u.password, "p@ss");
	assert_string_equal(u.host, "h");
	assert_string_equal(u.database, "db");

	/* Escapes everywhere; '+' stays a plus outside the query. */
	assert_int_equal(mssql_parse_url("mssql+pyodbc://d%C3%A9v+1:a+b@"
	    "host%5Cinst/my%20db", &u, err, sizeof(err)), 0);
	assert_string_equal(u.user, "d\xc3\xa9v+1");
	assert_string_equal(u.password, "a+b");
	assert_string_equal(u.host, "host\\inst");
	assert_int_equal(u.port, 0);
	assert_string_equal(u.database, "my db");

	/* IPv6 literal with a port; the scheme in any case. */
	assert_int_equal(mssql_parse_url("MSSQL+PYODBC://sa:pw@[::1]:1500/x",
	    &u, err, sizeof(err)), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 1500);
	assert_string_equal(u.database, "x");
}

/* Absent parts are empty, so that the configuration keys fill them. */
static void
test_url_missing_parts(void **state)
{
	struct mssql_url u;
	char err[128];

	(void)state;
	assert_int_equal(mssql_parse_url("mssql+pyodbc://h", &u, err,
	    sizeof(err)), 0);
	assert_string_equal(u.host, "h");
	assert_string_equal(u.user, "");
	assert_string_equal(u.password, "");
	assert_int_equal(u.port, 0);
	assert_string_equal(u.database, "");

	assert_int_equal(mssql_parse_url("mssql+pyodbc://u@h:1433/", &u, err,
	    sizeof(err)), 0);
	assert_string_equal(u.user, "u");
	assert_string_equal(u.password, "");
	assert_string_equal(u.host, "h");
	assert_int_equal(u.port, 1433);
	assert_string_equal(u.database, "");

	assert_int_equal(mssql_parse_url("mssql+pyodbc://u:@h:/db?x=1", &u,
	    err, sizeof(err)), 0);
	assert_string_equal(u.user, "u");
	assert_string_equal(u.password, "");
	assert_int_equal(u.port, 0);
	assert_string_equal(u.database, "db");

	assert_int_equal(mssql_parse_url("mssql+pyodbc:///db", &u, err,
	    sizeof(err)), 0);
	assert_string_equal(u.host, "");
	assert_string_equal(u.database, "db");
}

static void
test_url_rejects(void **state)
{
	static const char *const bad[] = {
		"postgresql://u:p@h/db",
		"mssql://u:p@h/db",
		"mssql+pymssql://u:p@h/db",
		"mssql+pyodbc:/h/db",
		"",
		"mssql+pyodbc://u:p%zz@h/db",
		"mssql+pyodbc://u:p%4@h/db",
		"mssql+pyodbc://u:p%@h/db",
		"mssql+pyodbc://u:p%00@h/db",
		"mssql+pyodbc://h:abc/db",
		"mssql+pyodbc://h:0/db",
		"mssql+pyodbc://h:70000/db",
		"mssql+pyodbc://h:-1/db",
		"mssql+pyodbc://h:12x/db",
		"mssql+pyodbc://[::1/db",
		"mssql+pyodbc://[::1]x/db",
		"mssql+pyodbc://h/d%ZZb",
	};
	struct mssql_url u;
	char err[128];
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(bad); i++) {
		err[0] = '\0';
		if (mssql_parse_url(bad[i], &u, err, sizeof(err)) != -1)
			fail_msg("accepted %s", bad[i]);
		assert_true(err[0] != '\0');
	}
}

/* Too long for the fixed fields is an error, not a silent cut. */
static void
test_url_too_long(void **state)
{
	struct mssql_url u;
	char url[1024], err[128];

	(void)state;
	snprintf(url, sizeof(url), "mssql+pyodbc://u:p@%0300d/db", 7);
	assert_int_equal(mssql_parse_url(url, &u, err, sizeof(err)), -1);
}

static void
test_param_decl(void **state)
{
	struct mssql_param p[8];
	struct buf b;
	size_t n;

	(void)state;
	buf_init(&b);
	n = mssql_params(p, 8, "sid", "x", 5LL, 1.5);
	assert_int_equal(n, 3);
	assert_int_equal(p[0].type, 's');
	assert_string_equal(p[0].s, "x");
	assert_int_equal(p[0].len, 1);
	assert_int_equal(p[1].type, 'i');
	assert_int_equal(p[1].i, 5);
	assert_int_equal(p[2].type, 'd');
	assert_true(p[2].d == 1.5);
	mssql_param_decl(p, n, &b);
	assert_string_equal(buf_str(&b), "@p1 NVARCHAR(4000), @p2 BIGINT, "
	    "@p3 FLOAT");

	/* No parameters, no declaration. */
	buf_reset(&b);
	mssql_param_decl(p, 0, &b);
	assert_string_equal(buf_str(&b), "");

	/* A NULL string is a short string. */
	buf_reset(&b);
	n = mssql_params(p, 8, "ss", (const char *)NULL, "");
	assert_int_equal(n, 2);
	assert_null(p[0].s);
	mssql_param_decl(p, n, &b);
	assert_string_equal(buf_str(&b), "@p1 NVARCHAR(4000), "
	    "@p2 NVARCHAR(4000)");
	buf_free(&b);
}

/* Above 4000 bytes a string is NVARCHAR(MAX); at 4000 it is not. */
static void
test_param_decl_long(void **state)
{
	struct mssql_param p[4];
	struct buf b;
	char *s = xcalloc(1, MSSQL_SHORT_BYTES + 64);

	(void)state;
	memset(s, 'a', MSSQL_SHORT_BYTES + 1);
	s[MSSQL_SHORT_BYTES + 1] = '\0';
	buf_init(&b);
	mssql_params(p, 4, "is", 1LL, s);
	mssql_param_decl(p, 2, &b);
	assert_string_equal(buf_str(&b), "@p1 BIGINT, @p2 NVARCHAR(MAX)");
	s[MSSQL_SHORT_BYTES] = '\0';
	buf_reset(&b);
	mssql_params(p, 4, "s", s);
	mssql_param_decl(p, 1, &b);
	assert_string_equal(buf_str(&b), "@p1 NVARCHAR(4000)");
	/* Multi-byte text counts in bytes, the unit FreeTDS sends. */
	buf_reset(&b);
	memset(s, 0, MSSQL_SHORT_BYTES + 64);
	{
		size_t i;

		for (i = 0; i + 2 <= 2001 * 2; i += 2)
			memcpy(s + i, "\xc3\xa9", 2);
	}
	mssql_params(p, 4, "s", s);
	assert_int_equal(p[0].len, 4002);
	mssql_param_decl(p, 1, &b);
	assert_string_equal(buf_str(&b), "@p1 NVARCHAR(MAX)");
	buf_free(&b);
	free(s);
}

/* JSON scalars: strings, integers, reals, booleans as 0/1, null. */
static void
test_params_json(void **state)
{
	struct mssql_param p[8];
	json_t *s = json_string("abc"), *i = json_integer(42);
	json_t *r = json_real(0.25), *t = json_true(), *f = json_false();
	json_t *z = json_null();
	struct buf b;
	size_t n;

	(void)state;
	n = mssql_params(p, 8, "vvvvvvv", s, i, r, t, f, z, (json_t *)NULL);
	assert_int_equal(n, 7);
	assert_int_equal(p[0].type, 's');
	assert_string_equal(p[0].s, "abc");
	assert_int_equal(p[0].len, 3);
	assert_int_equal(p[1].type, 'i');
	assert_int_equal(p[1].i, 42);
	assert_int_equal(p[2].type, 'd');
	assert_true(p[2].d == 0.25);
	assert_int_equal(p[3].type, 'i');
	assert_int_equal(p[3].i, 1);
	assert_int_equal(p[4].type, 'i');
	assert_int_equal(p[4].i, 0);
	assert_int_equal(p[5].type, 's');
	assert_null(p[5].s);
	assert_int_equal(p[6].type, 's');
	assert_null(p[6].s);
	buf_init(&b);
	mssql_param_decl(p, n, &b);
	assert_string_equal(buf_str(&b), "@p1 NVARCHAR(4000), @p2 BIGINT, "
	    "@p3 FLOAT, @p4 BIGINT, @p5 BIGINT, @p6 NVARCHAR(4000), "
	    "@p7 NVARCHAR(4000)");
	buf_free(&b);
	json_decref(s);
	json_decref(i);
	json_decref(r);
	json_decref(t);
	json_decref(f);
	json_decref(z);
}

/* The parameter list stops at max, never writing past it. */
static void
test_params_max(void **state)
{
	struct mssql_param p[3];

	(void)state;
	assert_int_equal(mssql_params(p, 2, "iii", 1LL, 2LL, 3LL), 2);
	assert_int_equal(p[1].i, 2);
}

/* An empty string travels as NULL and the batch sets it back to N''. */
static void
test_stmt_text(void **state)
{
	struct mssql_param p[4];
	struct buf b;
	size_t n;

	(void)state;
	buf_init(&b);
	n = mssql_params(p, 4, "sss", "a", "", (const char *)NULL);
	mssql_stmt_text("SELECT 1", p, n, &b);
	assert_string_equal(buf_str(&b), "SET @p2 = N''; SELECT 1");
	buf_reset(&b);
	n = mssql_params(p, 4, "sis", "", 0LL, "");
	mssql_stmt_text("SELECT 2", p, n, &b);
	assert_string_equal(buf_str(&b), "SET @p1 = N''; SET @p3 = N''; "
	    "SELECT 2");
	buf_reset(&b);
	mssql_stmt_text("SELECT 3", p, 0, &b);
	assert_string_equal(buf_str(&b), "SELECT 3");
	buf_free(&b);
}

/*
 * Statements joined into one batch or statement number their parameters
 * on from those before them; text that is no parameter stays as it is.
 */
static void
test_renumber(void **state)
{
	struct buf b;

	(void)state;
	buf_init(&b);
	store_renumber(&b, "UPDATE t SET a = @p1, b = @p12 WHERE c = @p2",
	    "@p", 5);
	assert_string_equal(buf_str(&b),
	    "UPDATE t SET a = @p5, b = @p16 WHERE c = @p6");
	buf_reset(&b);
	store_renumber(&b, "INSERT INTO t VALUES ($1, $2), ($1, $3) -- $",
	    "$", 10);
	assert_string_equal(buf_str(&b),
	    "INSERT INTO t VALUES ($10, $11), ($10, $12) -- $");
	buf_reset(&b);
	store_renumber(&b, "SELECT 1", "$", 3);
	assert_string_equal(buf_str(&b), "SELECT 1");
	buf_free(&b);
}

/*
 * The multi-row INSERT of result rows, in SQL Server's and PostgreSQL's
 * words, and how many rows a statement's parameters allow.
 */
static void
test_insert_sql(void **state)
{
	static const char *const cols[] = { "field", "label", NULL };
	struct buf b;
	size_t per;

	(void)state;
	buf_init(&b);
	store_insert_sql(&b, "@p", "CAST(@p1 AS UNIQUEIDENTIFIER)",
	    "run_fields", cols, 2);
	assert_string_equal(buf_str(&b), "INSERT INTO "
	    "run_fields (run_id, field, label) VALUES "
	    "(CAST(@p1 AS UNIQUEIDENTIFIER), @p2, @p3), "
	    "(CAST(@p1 AS UNIQUEIDENTIFIER), @p4, @p5)");
	buf_reset(&b);
	store_insert_sql(&b, "$", "$1", "t", cols, 1);
	assert_string_equal(buf_str(&b), "INSERT INTO t "
	    "(run_id, field, label) VALUES ($1, $2, $3)");
	buf_free(&b);

	/* run id + rows x columns stays within the budget */
	for (per = 1; per <= 40; per++)
		assert_true(1 + store_rows_per_insert(MSSQL_BATCH_PARAMS,
		    per) * per <= MSSQL_BATCH_PARAMS);
	assert_int_equal(store_rows_per_insert(1000, 15), 66);
	assert_int_equal(store_rows_per_insert(1000, 24), 41);
	/* a row always fits, even a wide one */
	assert_int_equal(store_rows_per_insert(1000, 5000), 1);
	assert_int_equal(store_rows_per_insert(0, 3), 1);
	assert_true(MSSQL_BATCH_PARAMS < 2100);
}

static void
test_tds_version(void **state)
{
	(void)state;
	assert_int_equal(mssql_tds_version("7.4"), DBVERSION_74);
	assert_int_equal(mssql_tds_version("7.3"), DBVERSION_73);
	assert_int_equal(mssql_tds_version("7.2"), DBVERSION_72);
	assert_int_equal(mssql_tds_version("7.1"), DBVERSION_71);
	assert_int_equal(mssql_tds_version("7.0"), DBVERSION_70);
	assert_int_equal(mssql_tds_version("auto"), 0);
	assert_int_equal(mssql_tds_version("AUTO"), 0);
	assert_int_equal(mssql_tds_version(""), 0);
	assert_int_equal(mssql_tds_version(NULL), 0);
	assert_int_equal(mssql_tds_version("8.0"), -1);
	assert_int_equal(mssql_tds_version("5.0"), -1);
	assert_int_equal(mssql_tds_version("7.4 "), -1);
	assert_int_equal(mssql_tds_version("74"), -1);
}

static void
test_is_guid(void **state)
{
	(void)state;
	assert_true(mssql_is_guid("6f9619ff-8b86-d011-b42d-00c04fc964ff"));
	assert_true(mssql_is_guid("6F9619FF-8B86-D011-B42D-00C04FC964FF"));
	assert_false(mssql_is_guid(NULL));
	assert_false(mssql_is_guid(""));
	assert_false(mssql_is_guid("6f9619ff8b86d011b42d00c04fc964ff"));
	assert_false(mssql_is_guid("6f9619ff-8b86-d011-b42d-00c04fc964f"));
	assert_false(mssql_is_guid("6f9619ff-8b86-d011-b42d-00c04fc964fff"));
	assert_false(mssql_is_guid("6f9619f-f8b86-d011-b42d-00c04fc964ff"));
	assert_false(mssql_is_guid("6f9619ff-8b86-d011-b42d-00c04fc964fg"));
	assert_false(mssql_is_guid("{6f9619ff-8b86-d011-b42d-00c04fc964f}"));
	assert_false(mssql_is_guid("my-workspace"));
}

static void
test_format_ms(void **state)
{
	char out[48];

	(void)state;
	mssql_format_ms(0, out, sizeof(out));
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
	mssql_format_ms(1769309040123LL, out, sizeof(out));
	assert_string_equal(out, "2026-01-25T02:44:00.123Z");
	mssql_format_ms(-1, out, sizeof(out));
	assert_string_equal(out, "1969-12-31T23:59:59.999Z");
	mssql_format_ms(-1000, out, sizeof(out));
	assert_string_equal(out, "1969-12-31T23:59:59.000Z");
}

static void
set_str(char **field, const char *value)
{
	free(*field);
	*field = xstrdup(value);
}

static void
live_uuid(char *out)
{
	uuid_t u;

	uuid_generate_random(u);
	uuid_unparse_lower(u, out);
}

/*
 * One pass through the operations the worker and ade-ctl use, against a
 * real server: a fresh workspace, one run, its environment, the claim,
 * the fenced heartbeat and finish with result rows, then the operator
 * commands.  Runs left behind are finished, so the test can run again.
 */
/*
 * A store call that must return want; otherwise the test fails with the
 * store's own error.
 */
#define LIVE(call, want) do {						\
	long got_ = (long)(call);					\
									\
	if (got_ != (long)(want))					\
		fail_msg("%s = %ld, not %ld: %s", #call, got_,		\
		    (long)(want), store_error(st));			\
} while (0)

static int
live_err(DBPROCESS *dbp, int severity, int dberr, int oserr, char *text,
    char *ostext)
{
	print_error("db-lib: %s\n", text != NULL ? text : "?");
	return INT_CANCEL;
}

static int
live_msg(DBPROCESS *dbp, DBINT no, int state, int severity, char *text,
    char *srv, char *proc, int line)
{
	if (severity > 10)
		print_error("server: %s (error %d)\n", text != NULL ? text :
		    "?", (int)no);
	return 0;
}

/*
 * Runs one statement in the login's default database, on a connection
 * of its own: creating and dropping the live test's scratch database.
 */
static int
live_admin(const char *host, const char *port, const char *user,
    const char *password, const char *sql)
{
	LOGINREC *login;
	DBPROCESS *dbp;
	char server[300];
	int ok = -1;

	if (dbinit() == FAIL)
		return -1;
	dberrhandle(live_err);
	dbmsghandle(live_msg);
	snprintf(server, sizeof(server), "%s:%s", host, port != NULL &&
	    *port != '\0' ? port : "1433");
	if ((login = dblogin()) == NULL)
		goto out;
	DBSETLUSER(login, user != NULL ? user : "");
	if (password != NULL)
		DBSETLPWD(login, password);
	DBSETLCHARSET(login, "UTF-8");
	DBSETLVERSION(login, DBVERSION_74);
	dbp = dbopen(login, server);
	dbloginfree(login);
	if (dbp == NULL)
		goto out;
	if (dbcmd(dbp, sql) == SUCCEED && dbsqlexec(dbp) == SUCCEED) {
		while (dbresults(dbp) == SUCCEED)
			while (dbnextrow(dbp) != NO_MORE_ROWS)
				;
		ok = 0;
	}
	dbclose(dbp);
out:
	dbexit();
	return ok;
}

static void
test_live(void **state)
{
	const char *host = getenv("ADE_TEST_MSSQL_HOST"), *v;
	const char *port = getenv("ADE_TEST_MSSQL_PORT");
	const char *user = getenv("ADE_TEST_MSSQL_USER");
	const char *password = getenv("ADE_TEST_MSSQL_PASSWORD");
	char ws[64], cfg[64], ws_name[64], doc[37], run[37], tok[80];
	char scratch[64], sql[128];
	char *longtext;
	struct enqueue_req q;
	struct env_claim ec;
	struct run_claim rc;
	struct sweep_counts sc;
	struct document d;
	struct conf *c;
	struct store *st;
	struct buf err, missing;
	json_t *res, *row, *shown, *list;
	long ins, req, n;
	double due;

	(void)state;
	/*
	 * It works in the scratch database ADE_TEST_MSSQL_DATABASE names
	 * (never master), or else in one it creates and drops itself.
	 */
	if (host == NULL || *host == '\0')
		skip();
	scratch[0] = '\0';
	v = getenv("ADE_TEST_MSSQL_DATABASE");
	if (v != NULL && strcasecmp(v, "master") == 0)
		fail_msg("ADE_TEST_MSSQL_DATABASE must not be master");
	if (v == NULL || *v == '\0') {
		live_uuid(doc);
		snprintf(scratch, sizeof(scratch), "ade_unit_%.8s", doc);
		snprintf(sql, sizeof(sql), "CREATE DATABASE %s", scratch);
		if (live_admin(host, port, user, password, sql) != 0)
			fail_msg("cannot create the scratch database %s",
			    scratch);
	}
	c = conf_new();
	set_str(&c->db_backend, "mssql");
	set_str(&c->db_host, host);
	if ((v = getenv("ADE_TEST_MSSQL_PORT")) != NULL && *v != '\0')
		c->db_port = atoll(v);
	if ((v = getenv("ADE_TEST_MSSQL_USER")) != NULL)
		set_str(&c->db_user, v);
	if (scratch[0] != '\0')
		set_str(&c->db_name, scratch);
	else
		set_str(&c->db_name, getenv("ADE_TEST_MSSQL_DATABASE"));
	if ((v = getenv("ADE_TEST_MSSQL_PASSWORD")) != NULL && *v != '\0')
		c->password = xstrdup(v);
	buf_init(&err);
	buf_init(&missing);
	st = store_open(c, &err);
	if (st == NULL)
		fail_msg("open: %s", buf_str(&err));
	assert_int_equal(store_init_schema(st), 0);
	LIVE(store_check_schema(st, &missing, NULL), 0);

	live_uuid(doc);
	snprintf(ws_name, sizeof(ws_name), "Unit Test %.8s", doc);
	LIVE(store_register(st, ws_name, "cfg", ws, cfg), 0);
	assert_true(mssql_is_guid(ws) && mssql_is_guid(cfg));
	live_uuid(run);
	memset(&q, 0, sizeof(q));
	q.workspace_id = ws;
	q.configuration_id = cfg;
	q.content_digest = "sha256:x";
	q.document_id = doc;
	q.original_filename = "d\xc3\xa9j\xc3\xa0.xlsx";
	q.stored_uri = "uploads/x";
	q.document_sha256 = "00";
	q.document_size = 3000000000LL;
	q.content_type = "";
	q.run_id = run;
	q.engine_spec = "ade-engine";
	q.deps_digest = doc;
	q.run_options = "{\"note\": \"\xe6\x97\xa5\xe6\x9c\xac\"}";
	q.input_sheet_names = NULL;
	q.max_attempts = 3;
	if (store_enqueue(st, &q) != 0)
		fail_msg("enqueue: %s", store_error(st));

	LIVE(store_ensure_environments(st, &ins, &req), 0);
	assert_true(ins >= 1);
	snprintf(tok, sizeof(tok), "unit#%.8s", run);
	LIVE(store_claim_environment(st, tok, 60, &ec), 1);
	LIVE(store_heartbeat_environment(st, ec.id, tok, 60), 1);
	LIVE(store_heartbeat_environment(st, ec.id, "other", 60),
	    0);
	LIVE(store_environment_ready(st, ec.id, tok, "/py", "",
	    NULL), 1);

	LIVE(store_claim_run(st, tok, 60, &rc), 1);
	assert_string_equal(rc.id, run);
	assert_string_equal(rc.env_id, ec.id);
	assert_int_equal(rc.attempt_count, 1);
	assert_string_equal(rc.run_options, q.run_options);
	assert_null(rc.input_sheet_names);
	assert_int_equal(strlen(rc.started_at), 24);
	LIVE(store_heartbeat_run(st, run, tok, 60), 1);
	LIVE(store_heartbeat_run(st, run, "other", 60), 0);
	LIVE(store_get_document(st, rc.input_document_id, &d), 1);
	assert_string_equal(d.original_filename, q.original_filename);
	store_document_free(&d);

	longtext = xmalloc(9000);
	memset(longtext, 'h', 8999);
	longtext[8999] = '\0';
	res = json_pack("{s:{s:s, s:i}, s:[{s:s, s:n, s:b, s:f, s:i, s:i,"
	    " s:i}], s:[{s:i, s:s, s:i, s:s, s:i, s:i, s:s, s:s, s:i, s:i,"
	    " s:s, s:n, s:n, s:n, s:n}]}",
	    "run_metrics", "evaluation_outcome", "ok", "sheet_count", 2,
	    "run_fields", "field", "amount", "label", "detected", 1,
	    "best_mapping_score", 0.5, "valid_cells", 3,
	    "occurrences_tables", 1, "occurrences_columns", 1,
	    "run_table_columns", "workbook_index", 0, "workbook_name", "",
	    "sheet_index", 0, "sheet_name", "Sheet1", "table_index", 0,
	    "column_index", 0, "header_raw", longtext, "header_normalized",
	    "amount", "non_empty_cells", 4, "valid_cells", 4,
	    "mapping_status", "unmapped", "mapped_field", "mapping_score",
	    "mapping_method", "unmapped_reason");
	assert_non_null(res);
	if (store_run_succeeded(st, run, tok, "out/x.xlsx", res) != 1)
		fail_msg("succeeded: %s", store_error(st));
	LIVE(store_run_succeeded(st, run, tok, NULL, res), 0);
	json_decref(res);
	store_run_claim_free(&rc);

	shown = store_show_run(st, run);
	assert_non_null(shown);
	row = json_object_get(shown, "run");
	assert_string_equal(json_string_value(json_object_get(row, "status")),
	    "succeeded");
	assert_string_equal(json_string_value(json_object_get(row, "id")),
	    run);
	row = json_object_get(shown, "metrics");
	assert_int_equal(json_integer_value(json_object_get(row,
	    "sheet_count")), 2);
	row = json_array_get(json_object_get(shown, "fields"), 0);
	assert_true(json_is_true(json_object_get(row, "detected")));
	row = json_array_get(json_object_get(shown, "table_columns"), 0);
	assert_string_equal(json_string_value(json_object_get(row,
	    "header_raw")), longtext);
	assert_string_equal(json_string_value(json_object_get(row,
	    "workbook_name")), "");
	json_decref(shown);
	free(longtext);

	list = store_list_runs(st, "succeeded", 5);
	assert_non_null(list);
	json_decref(list);
	list = store_list_environments(st);
	assert_non_null(list);
	json_decref(list);
	list = store_gc_environments(st, 1, 1);
	assert_non_null(list);
	json_decref(list);
	LIVE(store_sweep(st, 5, 300, &sc), 0);
	LIVE(store_pending(st, &n), 0);
	LIVE(store_next_due(st, &due), 0);
	LIVE(store_run_finished_before(st, run, 1), 0);
	LIVE(store_run_finished_before(st, "not-a-guid", 1), 2);
	LIVE(store_singleton(st, doc, "a", 60), 1);
	LIVE(store_singleton(st, doc, "b", 60), 0);
	LIVE(store_singleton(st, doc, "a", 60), 1);
	LIVE(store_run_requeue(st, run), 1);
	LIVE(store_run_cancel(st, run), 1);
	LIVE(store_run_cancel(st, run), 0);
	/* The environment is built again, and that build fails. */
	LIVE(store_environment_rebuild(st, ec.id), 1);
	LIVE(store_environment_rebuild(st, "x"), 0);
	LIVE(store_claim_environment(st, tok, 60, &ec), 1);
	LIVE(store_environment_failed(st, ec.id, tok, "boom", 5,
	    300, &n), 1);
	assert_int_equal(n, 0);

	store_close(st);
	conf_free(c);
	buf_free(&err);
	buf_free(&missing);
	if (scratch[0] != '\0') {
		snprintf(sql, sizeof(sql), "DROP DATABASE %s", scratch);
		assert_int_equal(live_admin(host, port, user, password, sql),
		    0);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify_dead),
		cmocka_unit_test(test_classify_statement_errors),
		cmocka_unit_test(test_transient),
		cmocka_unit_test(test_url_full),
		cmocka_unit_test(test_url_missing_parts),
		cmocka_unit_test(test_url_rejects),
		cmocka_unit_test(test_url_too_long),
		cmocka_unit_test(test_param_decl),
		cmocka_unit_test(test_param_decl_long),
		cmocka_unit_test(test_params_json),
		cmocka_unit_test(test_params_max),
		cmocka_unit_test(test_stmt_text),
		cmocka_unit_test(test_renumber),
		cmocka_unit_test(test_insert_sql),
		cmocka_unit_test(test_tds_version),
		cmocka_unit_test(test_is_guid),
		cmocka_unit_test(test_format_ms),
		cmocka_unit_test(test_live),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
