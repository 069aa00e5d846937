/*
 * Mapping of the engine's engine.run.completed payload to result rows.
 * The payload is hostile input: every value is coerced leniently, a row
 * that lacks its key parts is skipped, and a key seen twice keeps its
 * first row, so that one odd payload can never make storing fail.
 * Every value is also fitted to its column (results_limits below) before
 * any backend sees it: a string too long is cut on a character boundary,
 * a number out of range is dropped (or, where the column cannot be NULL,
 * held at the column's bound), and a row whose key does not fit is left
 * out.  Every backend therefore stores the same rows, and nothing the
 * engine says can make the transaction fail and the run be retried.
 *
 * The result is a JSON object with one member per table:
 *   run_metrics        an object keyed by column, or null when empty
 *   run_fields         an array of objects keyed by column
 *   run_table_columns  an array of objects keyed by column
 * Store backends bind the members by the column lists below.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "results.h"
#include "util.h"

const char *const results_metric_columns[] = {
	"evaluation_outcome", "evaluation_findings_total",
	"evaluation_findings_info", "evaluation_findings_warning",
	"evaluation_findings_error", "validation_issues_total",
	"validation_issues_info", "validation_issues_warning",
	"validation_issues_error", "validation_max_severity",
	"workbook_count", "sheet_count", "table_count", "row_count_total",
	"row_count_empty", "column_count_total", "column_count_empty",
	"column_count_mapped", "column_count_unmapped",
	"field_count_expected", "field_count_detected",
	"field_count_not_detected", "cell_count_total",
	"cell_count_non_empty", NULL
};

const char *const results_field_columns[] = {
	"field", "label", "detected", "best_mapping_score", "valid_cells",
	"occurrences_tables", "occurrences_columns", NULL
};

const char *const results_column_columns[] = {
	"workbook_index", "workbook_name", "sheet_index", "sheet_name",
	"table_index", "column_index", "header_raw", "header_normalized",
	"non_empty_cells", "valid_cells", "mapping_status", "mapped_field",
	"mapping_score", "mapping_method", "unmapped_reason", NULL
};

#define T(table, col, type, max, flags) { table, col, type, max, flags }
#define M "run_metrics"
#define F "run_fields"
#define C "run_table_columns"

/*
 * The result columns as the ADE schema declares them, on every backend:
 * text limits in bytes of UTF-8, integers 32 bits wide.  PostgreSQL's
 * varchar(n) holds n characters and SQL Server's VARCHAR(n) n bytes (of
 * UTF-8 under a UTF-8 collation, of its code page otherwise); SQLite
 * holds anything.  n bytes of UTF-8 are never more than n characters nor
 * more than n bytes of any code page, so a value cut to n bytes of UTF-8
 * is stored whole, and alike, everywhere.
 */
const struct results_limit results_limits[] = {
	T(M, "evaluation_outcome", RESULTS_TEXT, 20, 0),
	T(M, "validation_max_severity", RESULTS_TEXT, 10, 0),
	T(F, "field", RESULTS_TEXT, 128, RESULTS_KEY),
	T(F, "label", RESULTS_TEXT, 255, 0),
	T(F, "detected", RESULTS_BOOL, 0, RESULTS_NOT_NULL),
	T(F, "best_mapping_score", RESULTS_REAL, 0, 0),
	T(F, "valid_cells", RESULTS_INT, 0, RESULTS_NOT_NULL),
	T(F, "occurrences_tables", RESULTS_INT, 0, RESULTS_NOT_NULL),
	T(F, "occurrences_columns", RESULTS_INT, 0, RESULTS_NOT_NULL),
	T(C, "workbook_index", RESULTS_INT, 0, RESULTS_KEY),
	T(C, "workbook_name", RESULTS_TEXT, 255, RESULTS_NOT_NULL),
	T(C, "sheet_index", RESULTS_INT, 0, RESULTS_KEY),
	T(C, "sheet_name", RESULTS_TEXT, 255, RESULTS_NOT_NULL),
	T(C, "table_index", RESULTS_INT, 0, RESULTS_KEY),
	T(C, "column_index", RESULTS_INT, 0, RESULTS_KEY),
	T(C, "header_raw", RESULTS_TEXT, 0, 0),
	T(C, "header_normalized", RESULTS_TEXT, 0, 0),
	T(C, "non_empty_cells", RESULTS_INT, 0, RESULTS_NOT_NULL),
	T(C, "valid_cells", RESULTS_INT, 0, RESULTS_NOT_NULL),
	T(C, "mapping_status", RESULTS_TEXT, 32, RESULTS_NOT_NULL),
	T(C, "mapped_field", RESULTS_TEXT, 128, 0),
	T(C, "mapping_score", RESULTS_REAL, 0, 0),
	T(C, "mapping_method", RESULTS_TEXT, 32, 0),
	T(C, "unmapped_reason", RESULTS_TEXT, 64, 0),
	{ NULL, NULL, 0, 0, 0 }
};

#undef T
#undef M
#undef F
#undef C

/* Every other column of run_metrics is a nullable 32-bit integer. */
static const struct results_limit metric_int = {
	"run_metrics", NULL, RESULTS_INT, 0, 0
};

const struct results_limit *
results_limit(const char *table, const char *column)
{
	const struct results_limit *l;

	for (l = results_limits; l->table != NULL; l++)
		if (strcmp(l->table, table) == 0 &&
		    strcmp(l->column, column) == 0)
			return l;
	if (strcmp(table, "run_metrics") == 0)
		return &metric_int;
	return NULL;
}

static const char *const truthy[] = { "1", "true", "yes", "y", "on" };
static const char *const falsy[] = { "0", "false", "no", "n", "off" };

/* A trimmed copy of a string's middle, or NULL when empty. */
static json_t *
c_str(json_t *v)
{
	const char *s, *e;

	if (!json_is_string(v))
		return json_null();
	s = json_string_value(v);
	e = s + json_string_length(v);
	while (s < e && isspace((unsigned char)*s))
		s++;
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	if (s == e)
		return json_null();
	return json_stringn(s, (size_t)(e - s));
}

static int
numeric_string(const char *s, int allow_point)
{
	int digits = 0, point = 0;

	if (*s == '-')
		s++;
	for (; *s != '\0'; s++) {
		if (isdigit((unsigned char)*s))
			digits++;
		else if (*s == '.' && allow_point && !point)
			point = 1;
		else
			return 0;
	}
	return digits > 0;
}

/*
 * A whole number.  One beyond what 64 bits hold (a real such as 1e300, a
 * string of many digits) is held at the 64-bit bound, so that fitting
 * sees it as out of range like any other; a fraction is not a count.
 */
static json_t *
c_int(json_t *v)
{
	double d;

	if (json_is_integer(v))
		return json_integer(json_integer_value(v));
	if (json_is_real(v)) {
		d = json_real_value(v);
		if (!isfinite(d) || d != floor(d))
			return json_null();
		if (d >= 9223372036854775807.0)
			return json_integer(INT64_MAX);
		if (d < -9223372036854775807.0)
			return json_integer(INT64_MIN);
		return json_integer((json_int_t)d);
	}
	if (json_is_string(v) && numeric_string(json_string_value(v), 0))
		return json_integer(strtoll(json_string_value(v), NULL, 10));
	return json_null();
}

static json_t *
c_float(json_t *v)
{
	double d;

	if (json_is_number(v))
		return json_real(json_number_value(v));
	if (json_is_string(v) && numeric_string(json_string_value(v), 1)) {
		d = strtod(json_string_value(v), NULL);
		if (isfinite(d))
			return json_real(d);
	}
	return json_null();
}

/* The length of the longest prefix of s within max bytes that ends on a
 * character boundary (s is valid UTF-8: jansson checked it). */
static size_t
utf8_prefix(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return len;
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

static void
note(struct results_report *rep, const char *table, const char *column,
    const char *what)
{
	char key[96];
	json_t *o, *n;

	if (rep->adjusted == NULL)
		rep->adjusted = json_object();
	snprintf(key, sizeof(key), "%s.%s", table, column);
	if ((o = json_object_get(rep->adjusted, key)) == NULL) {
		o = json_object();
		json_object_set_new(rep->adjusted, key, o);
	}
	n = json_object_get(o, what);
	json_object_set_new(o, what, json_integer(n != NULL ?
	    json_integer_value(n) + 1 : 1));
}

/*
 * Fits a row's values to the columns of table: returns 0, or -1 when a
 * key part does not fit and the row must be left out.
 */
static int
fit_row(const char *table, json_t *row, struct results_report *rep)
{
	const struct results_limit *l;
	const char *col;
	json_t *v;
	json_int_t i;
	size_t n;
	void *tmp;

	json_object_foreach_safe(row, tmp, col, v) {
		if ((l = results_limit(table, col)) == NULL)
			continue;
		if (l->type == RESULTS_TEXT && json_is_string(v) &&
		    l->max > 0 && json_string_length(v) > (size_t)l->max) {
			n = utf8_prefix(json_string_value(v),
			    json_string_length(v), (size_t)l->max);
			json_object_set_new(row, col, json_stringn(
			    json_string_value(v), n));
			note(rep, table, col, "cut");
		} else if (l->type == RESULTS_INT && json_is_integer(v)) {
			i = json_integer_value(v);
			if (i >= INT32_MIN && i <= INT32_MAX)
				continue;
			if (l->flags & RESULTS_KEY) {
				note(rep, table, col, "row_left_out");
				return -1;
			}
			if (l->flags & RESULTS_NOT_NULL) {
				json_object_set_new(row, col, json_integer(
				    i < 0 ? INT32_MIN : INT32_MAX));
				note(rep, table, col, "clamped");
			} else {
				json_object_set_new(row, col, json_null());
				note(rep, table, col, "dropped");
			}
		}
	}
	return 0;
}

/* Returns 1, 0, or -1 when the value says neither. */
static int
c_bool(json_t *v)
{
	size_t i;

	if (json_is_boolean(v))
		return json_is_true(v);
	if (json_is_number(v))
		return json_number_value(v) != 0;
	if (json_is_string(v)) {
		char tmp[16];
		size_t n = 0;
		const char *s = json_string_value(v);

		while (isspace((unsigned char)*s))
			s++;
		for (; *s != '\0' && n + 1 < sizeof(tmp); s++)
			tmp[n++] = (char)tolower((unsigned char)*s);
		if (*s != '\0')
			return -1;	/* longer than any word we know */
		while (n > 0 && isspace((unsigned char)tmp[n - 1]))
			n--;
		tmp[n] = '\0';
		for (i = 0; i < NELEM(truthy); i++)
			if (strcmp(tmp, truthy[i]) == 0)
				return 1;
		for (i = 0; i < NELEM(falsy); i++)
			if (strcmp(tmp, falsy[i]) == 0)
				return 0;
	}
	return -1;
}

/* Follows a dotted path of object members; NULL if any is missing. */
static json_t *
dig(json_t *o, const char *path)
{
	char key[64];
	const char *s = path;
	size_t n;

	while (o != NULL && *s != '\0') {
		n = strcspn(s, ".");
		if (n >= sizeof(key))
			return NULL;
		memcpy(key, s, n);
		key[n] = '\0';
		o = json_is_object(o) ? json_object_get(o, key) : NULL;
		s += n;
		if (*s == '.')
			s++;
	}
	return o;
}

static json_t *
metrics_row(json_t *p, struct results_report *rep)
{
	static const struct {
		const char	*column;
		const char	*path;
		int		 is_str;
	} map[] = {
		{ "evaluation_outcome", "evaluation.outcome", 1 },
		{ "validation_issues_total", "validation.issues_total", 0 },
		{ "validation_issues_info",
		    "validation.issues_by_severity.info", 0 },
		{ "validation_issues_warning",
		    "validation.issues_by_severity.warning", 0 },
		{ "validation_issues_error",
		    "validation.issues_by_severity.error", 0 },
		{ "validation_max_severity", "validation.max_severity", 1 },
		{ "workbook_count", "counts.workbooks", 0 },
		{ "sheet_count", "counts.sheets", 0 },
		{ "table_count", "counts.tables", 0 },
		{ "row_count_total", "counts.rows.total", 0 },
		{ "row_count_empty", "counts.rows.empty", 0 },
		{ "column_count_total", "counts.columns.total", 0 },
		{ "column_count_empty", "counts.columns.empty", 0 },
		{ "column_count_mapped", "counts.columns.mapped", 0 },
		{ "column_count_unmapped", "counts.columns.unmapped", 0 },
		{ "field_count_expected", "counts.fields.expected", 0 },
		{ "field_count_detected", "counts.fields.detected", 0 },
		{ "field_count_not_detected", "counts.fields.not_detected", 0 },
		{ "cell_count_total", "counts.cells.total", 0 },
		{ "cell_count_non_empty", "counts.cells.non_empty", 0 },
	};
	json_t *row = json_object(), *findings, *f, *v;
	json_int_t info = 0, warning = 0, error = 0;
	size_t i, set = 0;
	const char *const *c;

	for (c = results_metric_columns; *c != NULL; c++)
		json_object_set_new(row, *c, json_null());
	for (i = 0; i < NELEM(map); i++) {
		v = dig(p, map[i].path);
		v = map[i].is_str ? c_str(v) : c_int(v);
		if (!json_is_null(v))
			set++;
		json_object_set_new(row, map[i].column, v);
	}
	findings = dig(p, "evaluation.findings");
	if (json_is_array(findings)) {
		json_array_foreach(findings, i, f) {
			json_t *sev = json_object_get(f, "severity");
			const char *s;

			if (!json_is_string(sev))
				continue;
			s = json_string_value(sev);
			if (strcasecmp(s, "info") == 0)
				info++;
			else if (strcasecmp(s, "warning") == 0)
				warning++;
			else if (strcasecmp(s, "error") == 0)
				error++;
		}
		json_object_set_new(row, "evaluation_findings_total",
		    json_integer((json_int_t)json_array_size(findings)));
		json_object_set_new(row, "evaluation_findings_info",
		    json_integer(info));
		json_object_set_new(row, "evaluation_findings_warning",
		    json_integer(warning));
		json_object_set_new(row, "evaluation_findings_error",
		    json_integer(error));
		set++;
	}
	if (set == 0) {
		json_decref(row);
		return json_null();
	}
	fit_row("run_metrics", row, rep);
	return row;
}

static json_int_t
int_or(json_t *v, json_int_t def)
{
	json_t *i = c_int(v);
	json_int_t r = json_is_integer(i) ? json_integer_value(i) : def;

	json_decref(i);
	return r;
}

/*
 * Whether one more row may be added: rows beyond the run's limit are
 * counted, not kept, so that a payload with a million fields cannot make
 * the worker's memory or the transaction grow without bound.
 */
static int
room(struct results_report *rep)
{
	if (rep->max_rows > 0 && rep->rows >= rep->max_rows) {
		rep->capped++;
		return 0;
	}
	return 1;
}

static void
left_out(struct results_report *rep, const char *table)
{
	json_t *n;

	if (rep->rows_left_out == NULL)
		rep->rows_left_out = json_object();
	n = json_object_get(rep->rows_left_out, table);
	json_object_set_new(rep->rows_left_out, table, json_integer(
	    n != NULL ? json_integer_value(n) + 1 : 1));
}

static json_t *
fields_rows(json_t *p, struct results_report *rep)
{
	json_t *rows = json_array(), *seen = json_object(), *f, *name, *row;
	size_t i;
	int det;

	json_array_foreach(json_object_get(p, "fields"), i, f) {
		name = c_str(json_object_get(f, "field"));
		det = c_bool(json_object_get(f, "detected"));
		if (json_is_null(name) || det == -1) {
			json_decref(name);
			continue;
		}
		if (!room(rep)) {
			json_decref(name);
			continue;
		}
		row = json_object();
		json_object_set_new(row, "field", name);
		json_object_set_new(row, "label",
		    c_str(json_object_get(f, "label")));
		json_object_set_new(row, "detected", json_boolean(det));
		json_object_set_new(row, "best_mapping_score",
		    c_float(json_object_get(f, "best_mapping_score")));
		json_object_set_new(row, "valid_cells", json_integer(
		    int_or(json_object_get(f, "valid_cells"), 0)));
		json_object_set_new(row, "occurrences_tables", json_integer(
		    int_or(dig(f, "occurrences.tables"), 0)));
		json_object_set_new(row, "occurrences_columns", json_integer(
		    int_or(dig(f, "occurrences.columns"), 0)));
		/* The key is the name as stored, that is, once cut. */
		fit_row("run_fields", row, rep);
		name = json_object_get(row, "field");
		if (json_object_get(seen, json_string_value(name)) != NULL) {
			rep->duplicates++;
			json_decref(row);
			continue;
		}
		json_object_set_new(seen, json_string_value(name), json_true());
		json_array_append_new(rows, row);
		rep->rows++;
	}
	json_decref(seen);
	return rows;
}

/* The index and name of a locator part; -1 when either is unusable. */
static int
locate(json_t *node, const char *part, int need_name, json_int_t *index,
    json_t **name)
{
	json_t *loc = json_object_get(json_object_get(node, "locator"), part);
	json_t *i = c_int(json_object_get(loc, "index"));

	*name = NULL;
	if (!json_is_integer(i)) {
		json_decref(i);
		return -1;
	}
	*index = json_integer_value(i);
	json_decref(i);
	if (!need_name)
		return 0;
	*name = c_str(json_object_get(loc, "name"));
	if (json_is_null(*name)) {
		*name = NULL;
		return -1;
	}
	return 0;
}

static json_t *
column_row(json_t *col, json_int_t wi, json_t *wn, json_int_t si,
    json_t *sn, json_int_t ti)
{
	json_t *row, *status, *mapping = json_object_get(col, "mapping");
	json_t *index = c_int(json_object_get(col, "index"));
	json_int_t non_empty, valid;
	char st[16];
	size_t n;

	status = c_str(json_object_get(mapping, "status"));
	n = json_is_string(status) ? json_string_length(status) : 0;
	if (!json_is_integer(index) || n == 0 || n >= sizeof(st)) {
		json_decref(index);
		json_decref(status);
		return NULL;
	}
	for (size_t k = 0; k <= n; k++)
		st[k] = (char)tolower((unsigned char)
		    json_string_value(status)[k]);
	json_decref(status);
	if (strcmp(st, "mapped") != 0 && strcmp(st, "unmapped") != 0) {
		json_decref(index);
		return NULL;
	}
	non_empty = int_or(json_object_get(col, "non_empty_cells"), 0);
	valid = int_or(json_object_get(col, "valid_cells"), non_empty);
	row = json_object();
	json_object_set_new(row, "workbook_index", json_integer(wi));
	json_object_set(row, "workbook_name", wn);
	json_object_set_new(row, "sheet_index", json_integer(si));
	json_object_set(row, "sheet_name", sn);
	json_object_set_new(row, "table_index", json_integer(ti));
	json_object_set_new(row, "column_index", index);
	json_object_set_new(row, "header_raw", c_str(dig(col, "header.raw")));
	json_object_set_new(row, "header_normalized",
	    c_str(dig(col, "header.normalized")));
	json_object_set_new(row, "non_empty_cells", json_integer(non_empty));
	json_object_set_new(row, "valid_cells", json_integer(valid));
	json_object_set_new(row, "mapping_status", json_string(st));
	json_object_set_new(row, "mapped_field",
	    c_str(json_object_get(mapping, "field")));
	json_object_set_new(row, "mapping_score",
	    c_float(json_object_get(mapping, "score")));
	json_object_set_new(row, "mapping_method",
	    c_str(json_object_get(mapping, "method")));
	json_object_set_new(row, "unmapped_reason",
	    c_str(json_object_get(mapping, "unmapped_reason")));
	return row;
}

static json_t *
columns_rows(json_t *p, struct results_report *rep)
{
	json_t *rows = json_array(), *seen = json_object();
	json_t *wb, *sh, *tb, *col, *wn, *sn, *tn, *row;
	json_int_t wi, si, ti;
	size_t a, b, c, d;
	char key[128];

	json_array_foreach(json_object_get(p, "workbooks"), a, wb) {
		if (locate(wb, "workbook", 1, &wi, &wn) == -1)
			continue;
		json_array_foreach(json_object_get(wb, "sheets"), b, sh) {
			if (locate(sh, "sheet", 1, &si, &sn) == -1)
				continue;
			json_array_foreach(json_object_get(sh, "tables"), c,
			    tb) {
				if (locate(tb, "table", 0, &ti, &tn) == -1)
					continue;
				json_array_foreach(dig(tb, "structure.columns"),
				    d, col) {
					if (!room(rep))
						continue;
					row = column_row(col, wi, wn, si, sn,
					    ti);
					if (row == NULL)
						continue;
					if (fit_row("run_table_columns", row,
					    rep) == -1) {
						left_out(rep,
						    "run_table_columns");
						json_decref(row);
						continue;
					}
					snprintf(key, sizeof(key),
					    "%lld/%lld/%lld/%lld",
					    (long long)wi, (long long)si,
					    (long long)ti, (long long)
					    json_integer_value(json_object_get(
					    row, "column_index")));
					if (json_object_get(seen, key)) {
						rep->duplicates++;
						json_decref(row);
						continue;
					}
					json_object_set_new(seen, key,
					    json_true());
					json_array_append_new(rows, row);
					rep->rows++;
				}
			}
			json_decref(sn);
		}
		json_decref(wn);
	}
	json_decref(seen);
	return rows;
}

/*
 * Maps a payload.  A payload whose scope is present and is not "run"
 * yields NULL: it describes something else and nothing is stored.  The
 * report says which values were fitted to their columns, how many rows
 * were left out because their key was already taken (duplicates) or did
 * not fit, and how many were beyond max_rows (0: no limit).
 */
json_t *
results_map(json_t *p, long max_rows, struct results_report *rep)
{
	json_t *scope, *out;

	memset(rep, 0, sizeof(*rep));
	rep->max_rows = max_rows;
	if (!json_is_object(p))
		return NULL;
	scope = json_object_get(p, "scope");
	if (scope != NULL && !(json_is_string(scope) &&
	    strcmp(json_string_value(scope), "run") == 0))
		return NULL;
	out = json_object();
	json_object_set_new(out, "run_metrics", metrics_row(p, rep));
	json_object_set_new(out, "run_fields", fields_rows(p, rep));
	json_object_set_new(out, "run_table_columns", columns_rows(p, rep));
	return out;
}

void
results_report_free(struct results_report *rep)
{
	json_decref(rep->adjusted);
	json_decref(rep->rows_left_out);
	rep->adjusted = rep->rows_left_out = NULL;
}

/* results_map without a row limit; dropped counts the duplicates. */
json_t *
results_from_payload(json_t *p, int *dropped)
{
	struct results_report rep;
	json_t *out;

	out = results_map(p, 0, &rep);
	*dropped = rep.duplicates;
	results_report_free(&rep);
	return out;
}

static int
truthy_value(json_t *v)
{
	return c_bool(v) == 1;
}

/* Appends the non-empty trimmed strings of v (a list or one string). */
static json_t *
string_list(json_t *v)
{
	json_t *out = json_array(), *s, *item;
	size_t i;

	if (json_is_string(v)) {
		s = c_str(v);
		if (!json_is_null(s))
			json_array_append(out, s);
		json_decref(s);
	} else
		json_array_foreach(v, i, item) {
			s = c_str(item);
			if (!json_is_null(s))
				json_array_append(out, s);
			json_decref(s);
		}
	return out;
}

/*
 * Parses runs.run_options leniently: text that is not a JSON object
 * means every default.  Sheet names come from the options, else from the
 * input_sheet_names column.
 */
void
run_options_parse(struct run_options *o, const char *options_json,
    const char *sheets_json, const char *default_level)
{
	json_t *opt = NULL, *v;
	size_t i;

	memset(o, 0, sizeof(*o));
	if (options_json != NULL)
		opt = json_loads(options_json, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(opt)) {
		json_decref(opt);
		opt = json_object();
	}
	o->dry_run = truthy_value(json_object_get(opt, "dry_run"));
	o->validate_only = truthy_value(json_object_get(opt,
	    "validate_only")) || truthy_value(json_object_get(opt,
	    "validation_only"));
	o->active_sheet_only = truthy_value(json_object_get(opt,
	    "active_sheet_only"));
	v = c_str(json_object_get(opt, "log_level"));
	snprintf(o->log_level, sizeof(o->log_level), "%s",
	    json_is_string(v) ? json_string_value(v) : default_level);
	json_decref(v);
	for (i = 0; o->log_level[i] != '\0'; i++)
		o->log_level[i] = (char)toupper((unsigned char)o->log_level[i]);
	o->sheets = string_list(json_object_get(opt, "input_sheet_names"));
	if (json_array_size(o->sheets) == 0 && sheets_json != NULL) {
		json_t *col = json_loads(sheets_json, 0, NULL);

		json_decref(o->sheets);
		o->sheets = string_list(col);
		json_decref(col);
	}
	v = json_object_get(opt, "engine_args");
	if (v == NULL)
		v = json_object_get(opt, "extra_args");
	o->extra_args = string_list(v);
	json_decref(opt);
}

void
run_options_free(struct run_options *o)
{
	json_decref(o->sheets);
	json_decref(o->extra_args);
	o->sheets = o->extra_args = NULL;
}
