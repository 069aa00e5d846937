/*
 * The SQL Server driver: one connection through FreeTDS db-lib, calls of
 * sp_executesql with typed parameters, their answers as rows, batches
 * in a transaction, and what a failure means.  tds.c is the only file
 * that includes db-lib's headers; store_mssql.c holds the T-SQL and the
 * store operations built on these calls.
 *
 * A failure is written to the store's error (base.err), with base.dead
 * set when the connection is gone; a call on a connection that broke
 * opens a new one first, no more often than a growing delay allows.
 */
#ifndef ADE_TDS_H
#define ADE_TDS_H

#include <stdarg.h>
#include <stddef.h>

#include <jansson.h>

#include "store_impl.h"

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

/* A JSON scalar; anything else (null, arrays, objects) is NULL. */
void	mssql_param_json(struct mssql_param *, json_t *);
size_t	mssql_params(struct mssql_param *out, size_t max, const char *fmt,
	    ...);
void	mssql_param_decl(const struct mssql_param *, size_t n,
	    struct buf *out);
void	mssql_stmt_text(const char *sql, const struct mssql_param *,
	    size_t n, struct buf *out);
int	mssql_tds_version(const char *);
void	mssql_format_ms(long long ms, char *out, size_t len);

/* One value read back from the server. */
struct tds_val {
	char		 kind;	/* 0 NULL, 's', 'i', 'd', 'b' (BIT) */
	long long	 i;
	double		 d;
	char		*s;
	size_t		 len;
};

/* The rows of the last result set of a batch. */
struct tds_res {
	int		 ncols;
	char		**names;
	struct tds_val	*v;
	size_t		 nrows;
	size_t		 cap;
};

void		 tds_res_clear(struct tds_res *);
/* A number; a NULL reads as 0 (check tds_isnull first). */
long long	 tds_int(const struct tds_res *, size_t row, int col);
int		 tds_isnull(const struct tds_res *, size_t row, int col);
/* A string, or NULL for NULL. */
const char	*tds_str(const struct tds_res *, size_t row, int col);
void		 tds_copy(const struct tds_res *, size_t row, int col,
		    char *out, size_t len);
char		*tds_dup(const struct tds_res *, size_t row, int col);
/* The rows as JSON objects keyed by column; "__ts" columns as text. */
json_t		*tds_res_json(const struct tds_res *);

struct tds_dblib_dbprocess;	/* db-lib's DBPROCESS */

/* A connection; the store is its first member. */
struct tds {
	struct store		 base;
	struct tds_dblib_dbprocess *dbp;
	char			*server;	/* host:port or host\instance */
	char			*user;
	char			*password;
	char			*database;
	char			*app;
	int			 tds_version;	/* DBVERSION_*, or 0 */
	int			 login_timeout;
	int			 query_timeout;
	int			 echo;		/* log each statement */
	int			 in_tx;		/* in a BEGIN ... COMMIT */
	int			 logging_in;
	int			 timeouts;	/* SYBETIMEs in this call */
	int			 err_seen;	/* a server error, this call */
	int			 msgno;		/* first error of this call */
	int			 severity;
	char			 msgtext[512];
	int			 cls;		/* class of the last failure */
	double			 reset_at;
	double			 reset_delay;
	int			 babelfish;	/* 1, 0, or -1: not known */
};

/*
 * Logs in with the fields above filled in.  On failure the reason is in
 * err and the connection must still be given to tds_free.
 */
int	tds_open(struct tds *, struct buf *err);
/* Closes the connection, frees t, and lets db-lib go with the last one. */
void	tds_close(struct tds *);
/* Frees what a tds that never opened holds. */
void	tds_free(struct tds *);
int	tds_alive(const struct tds *);
/* Whether a stop signal may cancel the calls that follow. */
void	tds_interruptible(int);

/*
 * The calls.  Each returns 0, -1 (the reason in base.err, its class in
 * cls) or STORE_DEAD.  fmt describes the parameters as mssql_params
 * does.  tds_exec tries a deadlock victim or a lock timeout again,
 * outside a transaction; tds_exec_once does not.
 */
int	tds_plain(struct tds *, const char *what, const char *sql);
int	tds_exec_once(struct tds *, const char *what, const char *sql,
	    struct mssql_param *, size_t n, struct tds_res *res);
int	tds_exec(struct tds *, const char *what, const char *sql,
	    struct mssql_param *, size_t n, struct tds_res *res);
int	tds_call(struct tds *, const char *what, struct tds_res *res,
	    const char *sql, const char *fmt, ...);
/* The one number a batch ends with, or -1 / STORE_DEAD. */
int	tds_count(struct tds *, const char *what, const char *sql,
	    const char *fmt, ...);
int	tds_countv(struct tds *, const char *what, const char *sql,
	    const char *fmt, va_list);
/* The rows as JSON objects keyed by column ("__ts" columns as text). */
json_t	*tds_rows(struct tds *, const char *what, const char *sql,
	    const char *fmt, ...);
json_t	*tds_rowsv(struct tds *, const char *what, const char *sql,
	    const char *fmt, va_list);
int	tds_begin(struct tds *);
int	tds_commit(struct tds *);
/* Ends a failed transaction, keeping the error; returns rc. */
int	tds_rollback(struct tds *, int rc);

#endif
