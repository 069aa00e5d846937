/*
 * The parts of the SQL Server backend that need no server: classifying
 * an error number, reading a mssql+pyodbc:// URL, turning values into
 * the typed parameters of sp_executesql and their declaration string,
 * and small text helpers.  store_mssql.c uses them; they are declared
 * here so that the unit tests can call them.
 */
#ifndef ADE_STORE_MSSQL_H
#define ADE_STORE_MSSQL_H

#include <stddef.h>

struct buf;

/*
 * What a failure means for the caller.  Only MSSQL_DEAD asks for a new
 * connection; a deadlock victim or a lock timeout passes if the work is
 * tried again; the others are errors of the statement itself.
 */
enum mssql_class {
	MSSQL_OTHER,		/* anything else: report, retry later */
	MSSQL_DEAD,		/* the connection is gone */
	MSSQL_DEADLOCK,		/* chosen as deadlock victim (1205) */
	MSSQL_LOCK_TIMEOUT,	/* 1222, or Babelfish's 33557097 */
	MSSQL_TIMEOUT,		/* the query timeout or a stop signal */
	MSSQL_DUPLICATE,	/* unique key (2627, 2601) */
	MSSQL_CONSTRAINT	/* NOT NULL (515), CHECK or foreign key (547) */
};

int	mssql_classify(int msgno, int severity, int dead, const char *text);
int	mssql_transient(int cls);

/* The parts of a url_override; absent parts are empty (port 0). */
struct mssql_url {
	char	user[256];
	char	password[256];
	char	host[256];
	long	port;
	char	database[256];
};

int	mssql_parse_url(const char *url, struct mssql_url *out, char *err,
	    size_t errlen);

/*
 * Strings of at most this many bytes are declared NVARCHAR(4000) and
 * sent as SYBVARCHAR (FreeTDS sends them as NVARCHAR on TDS 7); longer
 * ones are declared NVARCHAR(MAX) and sent as SYBNTEXT.
 */
#define MSSQL_SHORT_BYTES	4000

/* One value of a statement: @p1 is the first. */
struct mssql_param {
	char		 type;	/* 's' (s NULL is NULL), 'i' or 'd' */
	const char	*s;
	size_t		 len;
	long long	 i;
	double		 d;
};

size_t	mssql_params(struct mssql_param *out, size_t max, const char *fmt,
	    ...);
void	mssql_param_decl(const struct mssql_param *, size_t n,
	    struct buf *out);
void	mssql_stmt_text(const char *sql, const struct mssql_param *,
	    size_t n, struct buf *out);
/* Parameters of one multi-row INSERT of result rows, at most. */
#define MSSQL_INSERT_PARAMS	1000

size_t	mssql_insert_rows_per_batch(size_t ncols);
void	mssql_insert_sql(const char *table, const char *const *cols,
	    size_t first, size_t nrows, struct buf *out);
int	mssql_tds_version(const char *);
int	mssql_is_guid(const char *);
void	mssql_format_ms(long long ms, char *out, size_t len);

#endif
