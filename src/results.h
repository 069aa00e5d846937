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

json_t	*results_from_payload(json_t *payload, int *dropped);

extern const char *const results_metric_columns[];
extern const char *const results_field_columns[];
extern const char *const results_column_columns[];

#endif
