/*
 * The parts of the SQL Server backend that need no server: reading a
 * mssql+pyodbc:// URL and telling a GUID.  store_mssql.c uses them;
 * they are declared here so that the unit tests can call them (with
 * the driver's own, which tds.h declares).
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

/*
 * The parameters of one call at most: a batch that would have more is
 * sent as several calls in a transaction.  SQL Server allows 2100.
 */
#define MSSQL_BATCH_PARAMS	1000

int	mssql_is_guid(const char *);

#endif
