/*
 * The parts of the SQL Server backend that need no server: reading a
 * mssql+pyodbc:// URL, the text of the multi-row INSERTs of results,
 * and telling a GUID.  store_mssql.c uses them; they are declared here
 * so that the unit tests can call them (with the driver's own, which
 * tds.h declares).
 */
#ifndef ADE_STORE_MSSQL_H
#define ADE_STORE_MSSQL_H

#include <stddef.h>

#include "tds.h"

struct buf;

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

/* Parameters of one multi-row INSERT of result rows, at most. */
#define MSSQL_INSERT_PARAMS	1000

size_t	mssql_insert_rows_per_batch(size_t ncols);
void	mssql_insert_sql(const char *table, const char *const *cols,
	    size_t first, size_t nrows, struct buf *out);
int	mssql_is_guid(const char *);

#endif
