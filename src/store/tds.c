/*
 * The SQL Server driver over FreeTDS db-lib (tds.h): the one file that
 * includes db-lib's headers.  db-lib keeps process-wide state (its
 * handlers, the login and query timeouts), so it is set up in the
 * process that uses it, after fork, and let go with its last
 * connection.
 *
 * Every call is an RPC of sp_executesql; its values travel as typed
 * parameters and are never spliced into the text.  Answers are read
 * with dbdata/dbdatlen rather than bound, and every character type
 * arrives as UTF-8.
 */
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sybfront.h>
#include <sybdb.h>

#include "log.h"
#include "tds.h"
#include "util.h"

/* SQL Server takes at most 2100 parameters; stay well below. */
#define MAXPARAMS	32

/* The connection being opened, for handler calls before dbopen returns. */
static struct tds	*opening;
static pid_t		 lib_pid;
static int		 open_count;
/*
 * Set around calls that a stop (store_stopping) may cancel.  A static
 * rather than a field: the interrupt check does not rely on which
 * pointer db-lib passes it (old FreeTDS passed the TDS socket, not the
 * DBPROCESS).
 */
static int		 interruptible;

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

/* A JSON scalar as a parameter; anything else (null, arrays) is NULL. */
void
mssql_param_json(struct mssql_param *p, json_t *v)
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
			mssql_param_json(p, va_arg(ap, json_t *));
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

void
tds_res_clear(struct tds_res *r)
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

static const struct tds_val *
res_at(const struct tds_res *r, size_t row, int col)
{
	static const struct tds_val null;

	if (row >= r->nrows || col < 0 || col >= r->ncols)
		return &null;
	return &r->v[row * (size_t)r->ncols + (size_t)col];
}

/* A number value; a NULL reads as 0 (check tds_isnull first). */
long long
tds_int(const struct tds_res *r, size_t row, int col)
{
	const struct tds_val *v = res_at(r, row, col);

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

int
tds_isnull(const struct tds_res *r, size_t row, int col)
{
	return res_at(r, row, col)->kind == 0;
}

/* A string value, or NULL for NULL; numbers are not expected here. */
const char *
tds_str(const struct tds_res *r, size_t row, int col)
{
	const struct tds_val *v = res_at(r, row, col);

	return v->kind == 's' ? v->s : NULL;
}

void
tds_copy(const struct tds_res *r, size_t row, int col, char *out, size_t len)
{
	const char *s = tds_str(r, row, col);

	snprintf(out, len, "%s", s != NULL ? s : "");
}

char *
tds_dup(const struct tds_res *r, size_t row, int col)
{
	const char *s = tds_str(r, row, col);

	return s != NULL ? xstrdup(s) : NULL;
}

/* Starts a new result set: only the last one of a batch is kept. */
static void
res_columns(struct tds *t, struct tds_res *r, int ncols)
{
	int c;

	tds_res_clear(r);
	r->ncols = ncols;
	r->names = xcalloc((size_t)ncols, sizeof(*r->names));
	for (c = 0; c < ncols; c++) {
		const char *name = dbcolname(t->dbp, c + 1);

		r->names[c] = xstrdup(name != NULL ? name : "");
	}
}

/*
 * Copies the current row.  Values are read with dbdata/dbdatlen, never
 * bound: dbcollen says 2 GiB for (N)VARCHAR(MAX).  NULL is exactly a
 * NULL dbdata(); every character type arrives as UTF-8 bytes.
 */
static void
res_row(struct tds *t, struct tds_res *r)
{
	char conv[256];
	int c;

	if (r->nrows == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 8;
		r->v = xrealloc(r->v, r->cap * (size_t)r->ncols *
		    sizeof(*r->v));
	}
	for (c = 0; c < r->ncols; c++) {
		struct tds_val *v = &r->v[r->nrows * (size_t)r->ncols +
		    (size_t)c];
		const BYTE *data = dbdata(t->dbp, c + 1);
		DBINT len = dbdatlen(t->dbp, c + 1);
		int type = dbcoltype(t->dbp, c + 1);
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
			n = dbconvert(t->dbp, type, data, len, SYBCHAR,
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

json_t *
tds_res_json(const struct tds_res *r)
{
	json_t *a = json_array(), *o, *v;
	char name[256], ts[48];
	size_t row, nl;
	int c, is_ts;

	for (row = 0; row < r->nrows; row++) {
		o = json_object();
		for (c = 0; c < r->ncols; c++) {
			const struct tds_val *x = res_at(r, row, c);

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
static struct tds *
tds_of(DBPROCESS *dbp)
{
	struct tds *t = NULL;

	if (dbp != NULL)
		t = (struct tds *)dbgetuserdata(dbp);
	return t != NULL ? t : opening;
}

/* Keeps the first error of a call: later ones are usually its echoes. */
static void
tds_note(struct tds *t, int msgno, int severity, const char *text)
{
	if (t == NULL || t->msgno != 0)
		return;
	t->msgno = msgno;
	t->severity = severity;
	snprintf(t->msgtext, sizeof(t->msgtext), "%.*s",
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
tds_err_handler(DBPROCESS *dbp, int severity, int dberr, int oserr,
    char *dberrstr, char *oserrstr)
{
	struct tds *t = tds_of(dbp);
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
	tds_note(t, dberr, severity, text);
	if (dberr == SYBETIME && dbp != NULL && t != NULL && !t->logging_in &&
	    t->timeouts++ == 0)
		return INT_TIMEOUT;
	return INT_CANCEL;
}

/*
 * Server messages.  Severity 10 and below are information (database
 * changed, PRINT); above that the statement failed, and the first such
 * message of a call is the one reported.
 */
static int
tds_msg_handler(DBPROCESS *dbp, DBINT msgno, int state, int severity,
    char *text, char *srv, char *proc, int line)
{
	struct tds *t = tds_of(dbp);

	if (msgno == 5701 || msgno == 5703 || msgno == 5704)
		return 0;
	if (severity <= 10) {
		log_debug("mssql: %s", text != NULL ? text : "");
		return 0;
	}
	if (t != NULL) {
		tds_note(t, (int)msgno, severity, text);
		t->err_seen = 1;
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
tds_chkintr(void *vdbp)
{
	if (store_quitting())
		return TRUE;
	return store_stopping() && interruptible ? TRUE : FALSE;
}

static int
tds_hndlintr(void *vdbp)
{
	return INT_CANCEL;
}

static void
tds_call_reset(struct tds *t)
{
	t->msgno = 0;
	t->severity = 0;
	t->msgtext[0] = '\0';
	t->err_seen = 0;
	t->timeouts = 0;
}

/*
 * Records a failed call in the store's error and classifies it.  Returns
 * STORE_DEAD when the connection is gone, -1 otherwise.
 */
static int
tds_fail(struct tds *t, const char *what)
{
	int dead = t->dbp == NULL || DBDEAD(t->dbp);

	t->cls = mssql_classify(t->msgno, t->severity, dead, t->msgtext);
	if (t->msgtext[0] != '\0')
		snprintf(t->base.err, sizeof(t->base.err),
		    "mssql: %s: %s (error %d)", what, t->msgtext, t->msgno);
	else
		snprintf(t->base.err, sizeof(t->base.err), "mssql: %s: %s",
		    what, dead ? "connection lost" : "failed");
	t->base.dead = t->cls == MSSQL_DEAD;
	t->base.fail = t->base.dead ? STORE_FAIL_DEAD :
	    mssql_transient(t->cls) ? STORE_FAIL_RETRY :
	    t->cls == MSSQL_DUPLICATE || t->cls == MSSQL_CONSTRAINT ?
	    STORE_FAIL_CONSTRAINT : STORE_FAIL_OTHER;
	return t->base.dead ? STORE_DEAD : -1;
}

/*
 * Reads every result set of the batch that was sent, keeping the rows
 * of the last one in res (if given).  Every path leaves nothing pending:
 * a failure cancels the rest of the batch.
 */
static int
tds_drain(struct tds *t, const char *what, struct tds_res *res, int failed)
{
	RETCODE rc;
	STATUS row;
	int ncols;

	while (!failed && (rc = dbresults(t->dbp)) != NO_MORE_RESULTS) {
		if (rc == FAIL) {
			failed = 1;
			break;
		}
		ncols = dbnumcols(t->dbp);
		if (ncols > 0 && res != NULL)
			res_columns(t, res, ncols);
		while ((row = dbnextrow(t->dbp)) != NO_MORE_ROWS) {
			if (row == FAIL) {
				failed = 1;
				break;
			}
			if (row == REG_ROW && ncols > 0 && res != NULL)
				res_row(t, res);
		}
	}
	if (failed && !DBDEAD(t->dbp))
		dbcancel(t->dbp);
	if (failed || t->err_seen || DBDEAD(t->dbp)) {
		if (res != NULL)
			tds_res_clear(res);
		return tds_fail(t, what);
	}
	t->base.dead = 0;
	return 0;
}

/* Runs a batch without parameters: settings, transactions, DDL. */
int
tds_plain(struct tds *t, const char *what, const char *sql)
{
	if (t->dbp == NULL || DBDEAD(t->dbp)) {
		tds_call_reset(t);
		return tds_fail(t, what);
	}
	tds_call_reset(t);
	if (t->echo)
		log_debug("sql: %s", sql);
	if (dbcmd(t->dbp, sql) == FAIL) {
		dbfreebuf(t->dbp);
		return tds_fail(t, what);
	}
	return tds_drain(t, what, NULL, dbsqlexec(t->dbp) == FAIL);
}

/* Releases db-lib once the last store of this process is closed. */
static void
tds_lib_done(void)
{
	if (open_count == 0 && lib_pid == getpid()) {
		dbexit();
		lib_pid = 0;
	}
}

/*
 * db-lib keeps process-wide state and must be set up in the process
 * that uses it: after fork, in the worker.  dbinit() also puts back the
 * library's own error handler, which would exit on the first network
 * error, so ours go in right after it.
 */
static int
tds_lib_init(struct buf *err)
{
	if (lib_pid == getpid())
		return 0;
	if (dbinit() == FAIL) {
		buf_printf(err, "mssql: dbinit failed");
		return -1;
	}
	dberrhandle(tds_err_handler);
	dbmsghandle(tds_msg_handler);
	lib_pid = getpid();
	open_count = 0;
	return 0;
}

/*
 * Logs in and prepares the session.  On failure the reason is in the
 * store's error and dbp is NULL.
 */
static int
tds_connect(struct tds *t)
{
	LOGINREC *login;
	int fd, flags;

	dbsetlogintime(t->login_timeout);
	dbsettime(t->query_timeout);
	tds_call_reset(t);
	if ((login = dblogin()) == NULL) {
		snprintf(t->base.err, sizeof(t->base.err),
		    "mssql: dblogin failed");
		return -1;
	}
	if (t->user[0] != '\0')
		DBSETLUSER(login, t->user);
	if (t->password != NULL)
		DBSETLPWD(login, t->password);
	DBSETLAPP(login, t->app);
	DBSETLCHARSET(login, "UTF-8");
	if (t->database[0] != '\0')
		DBSETLDBNAME(login, t->database);
	if (t->tds_version > 0)
		DBSETLVERSION(login, (BYTE)t->tds_version);
	t->logging_in = 1;
	opening = t;
	t->dbp = dbopen(login, t->server);
	opening = NULL;
	t->logging_in = 0;
	dbloginfree(login);
	if (t->dbp == NULL) {
		if (t->msgtext[0] != '\0')
			snprintf(t->base.err, sizeof(t->base.err),
			    "mssql: cannot connect to %s: %s (error %d)",
			    t->server, t->msgtext, t->msgno);
		else
			snprintf(t->base.err, sizeof(t->base.err),
			    "mssql: cannot connect to %s", t->server);
		return -1;
	}
	dbsetuserdata(t->dbp, (BYTE *)t);
	dbsetinterrupt(t->dbp, tds_chkintr, tds_hndlintr);
	/*
	 * FreeTDS 1.3 creates the socket without close-on-exec; engines
	 * and build tools must not inherit it.
	 */
	if ((fd = dbiordesc(t->dbp)) >= 0 &&
	    ((flags = fcntl(fd, F_GETFD)) == -1 ||
	    fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == -1))
		log_warn("mssql: cannot set close-on-exec on the socket");
	if (tds_plain(t, "session settings", session_sql) != 0) {
		dbclose(t->dbp);
		t->dbp = NULL;
		return -1;
	}
	return 0;
}

/*
 * Makes sure the connection is usable, opening a new one when the old
 * one broke, no more often than the growing delay allows.
 */
static int
tds_ready(struct tds *t)
{
	double now;

	/* A fatal server error (severity 20 and up) ends the session too. */
	if (t->dbp != NULL && !DBDEAD(t->dbp) && !t->base.dead)
		return 0;
	now = now_mono();
	if (now < t->reset_at) {
		snprintf(t->base.err, sizeof(t->base.err), "mssql: connection "
		    "lost; next reconnect in %.0f s", t->reset_at - now);
		t->base.dead = 1;
		t->base.fail = STORE_FAIL_DEAD;
		t->cls = MSSQL_DEAD;
		return STORE_DEAD;
	}
	if (t->dbp != NULL) {
		dbclose(t->dbp);
		t->dbp = NULL;
	}
	t->in_tx = 0;
	if (tds_connect(t) == -1) {
		t->reset_delay = t->reset_delay < 1 ? 1 :
		    t->reset_delay * 2 > 30 ? 30 : t->reset_delay * 2;
		t->reset_at = now + t->reset_delay + jitter(t->reset_delay / 4);
		t->base.dead = 1;
		t->base.fail = STORE_FAIL_DEAD;
		t->cls = MSSQL_DEAD;
		return STORE_DEAD;
	}
	log_notice("mssql: reconnected");
	store_event(STORE_EV_RECONNECT);
	t->base.dead = 0;
	t->reset_delay = 0;
	return 0;
}

/* Adds a string parameter: short ones as NVARCHAR, long as NTEXT. */
static RETCODE
rpc_string(struct tds *t, const char *name, const char *s, size_t len)
{
	int type = len > MSSQL_SHORT_BYTES ? SYBNTEXT : SYBVARCHAR;

	/* A length of 0 is NULL to db-lib, with a NULL pointer. */
	return dbrpcparam(t->dbp, name, 0, type, -1, (DBINT)len,
	    len > 0 ? (BYTE *)s : NULL);
}

/*
 * Sends sql through sp_executesql with the parameters p and reads the
 * answer into res.  Values stay where they are until dbrpcsend copies
 * them.
 */
int
tds_exec_once(struct tds *t, const char *what, const char *sql,
    struct mssql_param *p, size_t n, struct tds_res *res)
{
	struct buf text, decl;
	char name[16];
	size_t i;
	RETCODE ok = SUCCEED;
	int rc;

	if (t->in_tx) {
		if (t->dbp == NULL || DBDEAD(t->dbp)) {
			tds_call_reset(t);
			return tds_fail(t, what);
		}
	} else if ((rc = tds_ready(t)) != 0)
		return rc;
	buf_init(&text);
	buf_init(&decl);
	mssql_stmt_text(sql, p, n, &text);
	mssql_param_decl(p, n, &decl);
	if (t->echo)
		log_debug("sql: %s", sql);
	tds_call_reset(t);
	if (dbrpcinit(t->dbp, "sp_executesql", 0) == FAIL) {
		buf_free(&text);
		buf_free(&decl);
		return tds_fail(t, what);
	}
	/*
	 * The statement and the declarations go by the names SQL Server
	 * documents for them.  Sent unnamed, Babelfish gives them positional
	 * names of its own ("@p1", "@p2"), which collide with ours; and once
	 * one parameter is named, every later one must be too.
	 */
	ok = rpc_string(t, "@stmt", buf_str(&text), text.len);
	if (ok == SUCCEED && n > 0)
		ok = rpc_string(t, "@params", buf_str(&decl), decl.len);
	for (i = 0; i < n && ok == SUCCEED; i++) {
		snprintf(name, sizeof(name), "@p%zu", i + 1);
		switch (p[i].type) {
		case 'i':
			ok = dbrpcparam(t->dbp, name, 0, SYBINT8, -1, -1,
			    (BYTE *)&p[i].i);
			break;
		case 'd':
			ok = dbrpcparam(t->dbp, name, 0, SYBFLT8, -1, -1,
			    (BYTE *)&p[i].d);
			break;
		default:
			ok = rpc_string(t, name, p[i].s, p[i].s != NULL ?
			    p[i].len : 0);
			break;
		}
	}
	if (ok == SUCCEED)
		ok = dbrpcsend(t->dbp);
	buf_free(&text);
	buf_free(&decl);
	if (ok == FAIL) {
		/* Throw away a half-built call. */
		dbrpcinit(t->dbp, "", DBRPCRESET);
		return tds_fail(t, what);
	}
	rc = tds_drain(t, what, res, dbsqlok(t->dbp) == FAIL);
	/*
	 * A batch with its own BEGIN ... COMMIT that failed may leave its
	 * transaction open: XACT_ABORT does not cover compile errors (a
	 * missing table) nor a cancel.  The next call must not run in it.
	 */
	if (rc != 0 && !t->in_tx)
		tds_rollback(t, rc);
	return rc;
}

/*
 * Runs one batch.  A deadlock victim or a lock timeout is tried again
 * at once (twice at most): batches that write are single statements or
 * wrap their statements in one transaction, so a failed one left
 * nothing behind.  Inside a transaction spanning several batches the
 * caller starts over instead.
 */
int
tds_exec(struct tds *t, const char *what, const char *sql,
    struct mssql_param *p, size_t n, struct tds_res *res)
{
	struct timespec ts;
	int rc, tries;

	for (tries = 0;; tries++) {
		rc = tds_exec_once(t, what, sql, p, n, res);
		if (rc != -1 || t->in_tx || !mssql_transient(t->cls) ||
		    tries >= 2 || store_quitting())
			return rc;
		log_debug("%s; trying again", t->base.err);
		ts.tv_sec = 0;
		ts.tv_nsec = (long)((20 << (2 * tries)) + jitter(20)) *
		    1000000L;
		nanosleep(&ts, NULL);
	}
}

/* tds_exec with the values described by fmt (see mssql_params). */
int
tds_call(struct tds *t, const char *what, struct tds_res *res, const char *sql,
    const char *fmt, ...)
{
	struct mssql_param p[MAXPARAMS];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = params_va(p, MAXPARAMS, fmt, ap);
	va_end(ap);
	return tds_exec(t, what, sql, p, n, res);
}

/*
 * Runs a batch that ends with one number ("SELECT COUNT(*) ...") and
 * returns it, or -1 / STORE_DEAD.
 */
int
tds_countv(struct tds *t, const char *what, const char *sql, const char *fmt,
    va_list ap)
{
	struct mssql_param p[MAXPARAMS];
	struct tds_res r;
	size_t n;
	int rc;

	memset(&r, 0, sizeof(r));
	n = params_va(p, MAXPARAMS, fmt, ap);
	if ((rc = tds_exec(t, what, sql, p, n, &r)) != 0)
		return rc;
	rc = r.nrows > 0 ? (int)tds_int(&r, 0, 0) : 0;
	tds_res_clear(&r);
	return rc;
}

int
tds_count(struct tds *t, const char *what, const char *sql, const char *fmt,
    ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = tds_countv(t, what, sql, fmt, ap);
	va_end(ap);
	return rc;
}

json_t *
tds_rowsv(struct tds *t, const char *what, const char *sql, const char *fmt,
    va_list ap)
{
	struct mssql_param p[MAXPARAMS];
	struct tds_res r;
	json_t *a;
	size_t n;

	memset(&r, 0, sizeof(r));
	n = params_va(p, MAXPARAMS, fmt, ap);
	if (tds_exec(t, what, sql, p, n, &r) != 0)
		return NULL;
	a = tds_res_json(&r);
	tds_res_clear(&r);
	return a;
}

json_t *
tds_rows(struct tds *t, const char *what, const char *sql, const char *fmt,
    ...)
{
	va_list ap;
	json_t *a;

	va_start(ap, fmt);
	a = tds_rowsv(t, what, sql, fmt, ap);
	va_end(ap);
	return a;
}

/*
 * A transaction over several batches, for writes whose size is not
 * known in advance.  XACT_ABORT rolls it back on any error, and the
 * server rolls it back when the connection breaks.
 */
int
tds_begin(struct tds *t)
{
	int rc;

	if ((rc = tds_ready(t)) != 0)
		return rc;
	if ((rc = tds_plain(t, "begin", "SET XACT_ABORT ON; "
	    "BEGIN TRANSACTION")) != 0)
		return tds_rollback(t, rc);
	t->in_tx = 1;
	return 0;
}

int
tds_commit(struct tds *t)
{
	int rc = tds_plain(t, "commit", "COMMIT TRANSACTION");

	t->in_tx = 0;
	if (rc != 0 && t->dbp != NULL && !DBDEAD(t->dbp)) {
		char keep[sizeof(t->base.err)];

		memcpy(keep, t->base.err, sizeof(keep));
		tds_plain(t, "rollback", "IF @@TRANCOUNT > 0 "
		    "ROLLBACK TRANSACTION");
		memcpy(t->base.err, keep, sizeof(keep));
	}
	return rc;
}

/* Ends a transaction that failed, keeping the error that ended it. */
int
tds_rollback(struct tds *t, int rc)
{
	char keep[sizeof(t->base.err)];
	int cls = t->cls, dead = t->base.dead;
	enum store_fail fail = t->base.fail;

	memcpy(keep, t->base.err, sizeof(keep));
	if (t->dbp != NULL && !DBDEAD(t->dbp))
		tds_plain(t, "rollback", "IF @@TRANCOUNT > 0 "
		    "ROLLBACK TRANSACTION");
	t->in_tx = 0;
	memcpy(t->base.err, keep, sizeof(keep));
	t->cls = cls;
	t->base.dead = dead;
	t->base.fail = fail;
	return rc;
}

void
tds_free(struct tds *t)
{
	free(t->server);
	free(t->user);
	if (t->password != NULL) {
		explicit_bzero(t->password, strlen(t->password));
		free(t->password);
	}
	free(t->database);
	free(t->app);
	free(t);
}


int
tds_open(struct tds *t, struct buf *err)
{
	if (tds_lib_init(err) == -1)
		return -1;
	if (tds_connect(t) == -1) {
		buf_printf(err, "%s", t->base.err);
		tds_lib_done();
		return -1;
	}
	open_count++;
	return 0;
}

void
tds_close(struct tds *t)
{
	if (t->dbp != NULL)
		dbclose(t->dbp);
	tds_free(t);
	open_count--;
	tds_lib_done();
}

int
tds_alive(const struct tds *t)
{
	return t->dbp != NULL && !DBDEAD(t->dbp);
}

void
tds_interruptible(int on)
{
	interruptible = on;
}
