/*
 * What the worker reads from the engine: the run options written by the
 * API, and the engine.run.completed payload turned into the rows of
 * run_metrics, run_fields and run_table_columns.
 */
#ifndef ADE_RESULTS_H
#define ADE_RESULTS_H

#include <jansson.h>

struct run_options {
	int	 dry_run;
	int	 validate_only;
	int	 active_sheet_only;
	char	 log_level[16];
	json_t	*sheets;	/* array of strings */
	json_t	*extra_args;	/* array of strings */
};

void	 run_options_parse(struct run_options *, const char *options_json,
	    const char *sheet_names_json, const char *default_level);
void	 run_options_free(struct run_options *);

/* What the result columns hold (results.c); the list ends with NULL. */
enum results_type { RESULTS_TEXT, RESULTS_INT, RESULTS_REAL, RESULTS_BOOL };
#define RESULTS_NOT_NULL	0x1
#define RESULTS_KEY		0x2	/* part of the primary key */

struct results_limit {
	const char		*table;
	const char		*column;
	enum results_type	 type;
	int			 max;	/* text: bytes of UTF-8; 0: none */
	int			 flags;
};

extern const struct results_limit results_limits[];
const struct results_limit *results_limit(const char *table,
	    const char *column);

struct results_report {
	long	 max_rows;
	long	 rows;		/* rows kept */
	long	 capped;	/* rows beyond max_rows, not kept */
	int	 duplicates;	/* rows whose key was taken */
	json_t	*adjusted;	/* "table.column": {"cut": n, ...} or NULL */
	json_t	*rows_left_out;	/* table: rows whose key did not fit */
};

json_t	*results_map(json_t *payload, long max_rows, struct results_report *);
void	 results_report_free(struct results_report *);
json_t	*results_from_payload(json_t *payload, int *dropped);

extern const char *const results_metric_columns[];
extern const char *const results_field_columns[];
extern const char *const results_column_columns[];

#endif
