/*
 * Tests the mapping of an engine.run.completed payload to the rows of
 * run_metrics, run_fields and run_table_columns (reference sections 5.7
 * of the worker behaviour and 2.5 of the engine protocol), against the
 * reference fixture and hand-made payloads, and the lenient parsing of
 * runs.run_options (worker behaviour section 5.2).
 */
#include "unit.h"

#include <jansson.h>

#include "results.h"

/* Parses JSON text (any top-level value); fails the test on error. */
static json_t *
J(const char *text)
{
	json_error_t err;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &err);

	if (v == NULL)
		fail_msg("bad JSON in test (line %d: %s): %s", err.line,
		    err.text, text);
	return v;
}

/* Prints both values and fails the test at file:line. */
static void
json_mismatch(const char *what, json_t *got, json_t *want, const char *file,
    int line)
{
	char *g = got ? json_dumps(got, JSON_SORT_KEYS | JSON_ENCODE_ANY) :
	    NULL;
	char *w = want ? json_dumps(want, JSON_SORT_KEYS | JSON_ENCODE_ANY) :
	    NULL;

	print_error("%s differs:\n got: %s\nwant: %s\n", what,
	    g ? g : "(NULL)", w ? w : "(NULL)");
	free(g);
	free(w);
	_fail(file, line);
}

/* Fails unless got equals the JSON value written in want. */
static void
assert_json_text_at(json_t *got, const char *want, const char *file,
    int line)
{
	json_t *w = J(want);

	if (got == NULL || !json_equal(got, w))
		json_mismatch("JSON", got, w, file, line);
	json_decref(w);
}

/* Fails unless got equals want. */
static void
assert_json_value_at(json_t *got, json_t *want, const char *what,
    const char *file, int line)
{
	if (got == NULL || want == NULL || !json_equal(got, want))
		json_mismatch(what, got, want, file, line);
}

#define assert_json_text(got, want) \
	assert_json_text_at(got, want, __FILE__, __LINE__)
#define assert_json_value(got, want, what) \
	assert_json_value_at(got, want, what, __FILE__, __LINE__)

/* Maps payload text; the result must not be NULL. */
static json_t *
map_text(const char *text, int *dropped)
{
	json_t *p = J(text), *out;

	*dropped = -1;
	out = results_from_payload(p, dropped);
	json_decref(p);
	if (out == NULL)
		fail_msg("results_from_payload gave NULL for %s", text);
	return out;
}

/* Whether an object's keys are exactly the names of a column list. */
static void
assert_keys_are(json_t *obj, const char *const *cols, const char *what)
{
	size_t n = 0;

	assert_true(json_is_object(obj));
	for (; cols[n] != NULL; n++)
		if (json_object_get(obj, cols[n]) == NULL)
			fail_msg("%s lacks column %s", what, cols[n]);
	if (json_object_size(obj) != n)
		fail_msg("%s has %zu keys, the column list %zu", what,
		    json_object_size(obj), n);
}

/* The data of the last engine.run.completed line of the sample log. */
static json_t *
sample_payload(void)
{
	struct buf b;
	json_t *found = NULL;
	char *line, *save = NULL;

	buf_init(&b);
	unit_read_fixture("engine-events.sample.ndjson", &b);
	buf_str(&b);
	for (line = strtok_r(b.data, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		json_t *ev = json_loads(line, 0, NULL);
		json_t *name = json_object_get(ev, "event");

		if (json_is_string(name) && strcmp(json_string_value(name),
		    "engine.run.completed") == 0) {
			json_decref(found);
			found = json_incref(json_object_get(ev, "data"));
		}
		json_decref(ev);
	}
	buf_free(&b);
	assert_non_null(found);
	assert_true(json_is_object(found));
	return found;
}

static json_t *
rows_fixture(void)
{
	struct buf b;
	json_t *v;

	buf_init(&b);
	unit_read_fixture("run-completed.rows.json", &b);
	v = J(buf_str(&b));
	buf_free(&b);
	return v;
}

static void
test_reference_payload(void **state)
{
	json_t *p = sample_payload(), *want = rows_fixture(), *got;
	int dropped = -1;

	(void)state;
	got = results_from_payload(p, &dropped);
	assert_non_null(got);
	assert_int_equal(dropped, 0);
	assert_int_equal(json_object_size(got), 3);
	assert_json_value(json_object_get(got, "run_metrics"),
	    json_object_get(want, "run_metrics"), "run_metrics");
	assert_json_value(json_object_get(got, "run_fields"),
	    json_object_get(want, "run_fields"), "run_fields");
	assert_json_value(json_object_get(got, "run_table_columns"),
	    json_object_get(want, "run_table_columns"), "run_table_columns");
	json_decref(got);
	json_decref(want);
	json_decref(p);
}

/* The fixture's rows have exactly the project's columns. */
static void
test_fixture_columns(void **state)
{
	json_t *want = rows_fixture(), *row;
	size_t i;

	(void)state;
	assert_keys_are(json_object_get(want, "run_metrics"),
	    results_metric_columns, "run_metrics");
	assert_int_equal(json_array_size(json_object_get(want, "run_fields")),
	    2);
	json_array_foreach(json_object_get(want, "run_fields"), i, row)
		assert_keys_are(row, results_field_columns, "run_fields row");
	assert_int_equal(json_array_size(json_object_get(want,
	    "run_table_columns")), 3);
	json_array_foreach(json_object_get(want, "run_table_columns"), i, row)
		assert_keys_are(row, results_column_columns,
		    "run_table_columns row");
	json_decref(want);
}

/* Rows made from a payload have every column, even when null. */
static void
test_rows_have_all_columns(void **state)
{
	json_t *got, *row;
	int dropped;
	size_t i;

	(void)state;
	got = map_text("{\"counts\": {\"sheets\": 1},"
	    " \"fields\": [{\"field\": \"a\", \"detected\": true}],"
	    " \"workbooks\": [{\"locator\": {\"workbook\": {\"index\": 0,"
	    "   \"name\": \"w\"}}, \"sheets\": [{\"locator\": {\"sheet\":"
	    "   {\"index\": 0, \"name\": \"s\"}}, \"tables\": [{\"locator\":"
	    "   {\"table\": {\"index\": 0}}, \"structure\": {\"columns\":"
	    "   [{\"index\": 0, \"mapping\": {\"status\":"
	    "   \"unmapped\"}}]}}]}]}]"
	    "}", &dropped);
	assert_keys_are(json_object_get(got, "run_metrics"),
	    results_metric_columns, "run_metrics");
	assert_int_equal(json_array_size(json_object_get(got, "run_fields")),
	    1);
	json_array_foreach(json_object_get(got, "run_fields"), i, row)
		assert_keys_are(row, results_field_columns, "run_fields row");
	assert_int_equal(json_array_size(json_object_get(got,
	    "run_table_columns")), 1);
	json_array_foreach(json_object_get(got, "run_table_columns"), i, row)
		assert_keys_are(row, results_column_columns,
		    "run_table_columns row");
	json_decref(got);
}

static void
test_scope(void **state)
{
	static const char *const ignored[] = {
		"{\"scope\": \"table\", \"counts\": {\"sheets\": 1}}",
		"{\"scope\": \"workbook\"}",
		"{\"scope\": \"RUN\"}",
		"{\"scope\": 1}",
	};
	json_t *p, *got;
	int dropped;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(ignored); i++) {
		p = J(ignored[i]);
		dropped = -1;
		got = results_from_payload(p, &dropped);
		if (got != NULL)
			fail_msg("payload %s was not ignored", ignored[i]);
		json_decref(p);
	}
	got = map_text("{\"scope\": \"run\", \"counts\": {\"sheets\": 4}}",
	    &dropped);
	assert_json_text(json_object_get(json_object_get(got, "run_metrics"),
	    "sheet_count"), "4");
	json_decref(got);
	/* No scope at all is a run payload too. */
	got = map_text("{\"counts\": {\"sheets\": 4}}", &dropped);
	assert_json_text(json_object_get(json_object_get(got, "run_metrics"),
	    "sheet_count"), "4");
	json_decref(got);
}

static void
test_non_object_payload(void **state)
{
	static const char *const bad[] = {
		"[]", "[{\"scope\": \"run\"}]", "\"run\"", "1", "null", "true",
	};
	json_t *p;
	int dropped;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(bad); i++) {
		p = J(bad[i]);
		dropped = -1;
		if (results_from_payload(p, &dropped) != NULL)
			fail_msg("payload %s was mapped", bad[i]);
		assert_int_equal(dropped, 0);
		json_decref(p);
	}
	assert_null(results_from_payload(NULL, &dropped));
}

static void
test_findings_counted(void **state)
{
	json_t *got, *m;
	int dropped;

	(void)state;
	got = map_text("{\"evaluation\": {\"outcome\": \" failure \","
	    " \"findings\": ["
	    "  {\"code\": \"a\", \"severity\": \"ERROR\"},"
	    "  {\"code\": \"b\", \"severity\": \"Warning\"},"
	    "  {\"code\": \"c\", \"severity\": \"info\"},"
	    "  {\"code\": \"d\", \"severity\": \"WARNING\"},"
	    "  {\"code\": \"e\", \"severity\": \"critical\"},"
	    "  {\"code\": \"f\"},"
	    "  {\"code\": \"g\", \"severity\": 3}"
	    "]}}", &dropped);
	m = json_object_get(got, "run_metrics");
	assert_json_text(json_object_get(m, "evaluation_outcome"),
	    "\"failure\"");
	assert_json_text(json_object_get(m, "evaluation_findings_total"), "7");
	assert_json_text(json_object_get(m, "evaluation_findings_info"), "1");
	assert_json_text(json_object_get(m, "evaluation_findings_warning"),
	    "2");
	assert_json_text(json_object_get(m, "evaluation_findings_error"), "1");
	json_decref(got);

	/* findings that is not a list leaves the counts null. */
	got = map_text("{\"evaluation\": {\"outcome\": \"success\","
	    " \"findings\": {\"severity\": \"error\"}}}", &dropped);
	m = json_object_get(got, "run_metrics");
	assert_json_text(json_object_get(m, "evaluation_findings_total"),
	    "null");
	assert_json_text(json_object_get(m, "evaluation_findings_error"),
	    "null");
	json_decref(got);

	/* An empty list is a count of zero, and makes a row. */
	got = map_text("{\"evaluation\": {\"findings\": []}}", &dropped);
	m = json_object_get(got, "run_metrics");
	assert_true(json_is_object(m));
	assert_json_text(json_object_get(m, "evaluation_findings_total"), "0");
	assert_json_text(json_object_get(m, "evaluation_findings_info"), "0");
	json_decref(got);
}

static void
test_issues_by_severity(void **state)
{
	json_t *got, *m;
	int dropped;

	(void)state;
	got = map_text("{\"validation\": {\"issues_total\": 3,"
	    " \"issues_by_severity\": {\"warning\": 3},"
	    " \"max_severity\": \"warning\"}}", &dropped);
	m = json_object_get(got, "run_metrics");
	assert_json_text(json_object_get(m, "validation_issues_total"), "3");
	assert_json_text(json_object_get(m, "validation_issues_warning"), "3");
	assert_json_text(json_object_get(m, "validation_issues_info"), "null");
	assert_json_text(json_object_get(m, "validation_issues_error"),
	    "null");
	assert_json_text(json_object_get(m, "validation_max_severity"),
	    "\"warning\"");
	json_decref(got);

	/* With no issues_by_severity at all, the three are null. */
	got = map_text("{\"validation\": {\"issues_total\": 0}}", &dropped);
	m = json_object_get(got, "run_metrics");
	assert_json_text(json_object_get(m, "validation_issues_total"), "0");
	assert_json_text(json_object_get(m, "validation_issues_info"), "null");
	assert_json_text(json_object_get(m, "validation_issues_warning"),
	    "null");
	assert_json_text(json_object_get(m, "validation_issues_error"),
	    "null");
	json_decref(got);
}

static void
test_metrics_all_null(void **state)
{
	static const char *const empty[] = {
		"{}",
		"{\"scope\": \"run\", \"schema_version\": 1}",
		"{\"counts\": {\"rows\": {}, \"sheets\": null},"
		    " \"evaluation\": {\"outcome\": \"   \"},"
		    " \"validation\": {\"issues_by_severity\": {}}}",
		"{\"counts\": {\"rows\": {\"total\": \"many\"},"
		    " \"tables\": true}}",
		"{\"counts\": 5, \"evaluation\": [], \"validation\": \"x\"}",
	};
	json_t *got;
	int dropped;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(empty); i++) {
		got = map_text(empty[i], &dropped);
		if (!json_is_null(json_object_get(got, "run_metrics")))
			fail_msg("run_metrics of %s is not null", empty[i]);
		assert_int_equal(json_array_size(json_object_get(got,
		    "run_fields")), 0);
		assert_int_equal(json_array_size(json_object_get(got,
		    "run_table_columns")), 0);
		assert_int_equal(dropped, 0);
		json_decref(got);
	}
}

/* Integer metrics accept integral floats and numeric strings only. */
static void
test_metrics_coercion(void **state)
{
	json_t *got;
	int dropped;

	(void)state;
	got = map_text("{\"counts\": {\"workbooks\": 2.0, \"sheets\": \"12\","
	    " \"tables\": \"-3\","
	    " \"rows\": {\"total\": 1.5, \"empty\": \"1.5\"},"
	    " \"columns\": {\"total\": true, \"empty\": \" 4\","
	    "  \"mapped\": \"\", \"unmapped\": \"-\"},"
	    " \"fields\": {\"expected\": 7, \"detected\": null},"
	    " \"cells\": {\"total\": 100, \"non_empty\": \"99\"}},"
	    " \"evaluation\": {\"outcome\": 5},"
	    " \"validation\": {\"max_severity\": \" error \"}}", &dropped);
	assert_json_text(json_object_get(got, "run_metrics"),
	    "{\"evaluation_outcome\": null,"
	    " \"evaluation_findings_total\": null,"
	    " \"evaluation_findings_info\": null,"
	    " \"evaluation_findings_warning\": null,"
	    " \"evaluation_findings_error\": null,"
	    " \"validation_issues_total\": null,"
	    " \"validation_issues_info\": null,"
	    " \"validation_issues_warning\": null,"
	    " \"validation_issues_error\": null,"
	    " \"validation_max_severity\": \"error\","
	    " \"workbook_count\": 2, \"sheet_count\": 12, \"table_count\": -3,"
	    " \"row_count_total\": null, \"row_count_empty\": null,"
	    " \"column_count_total\": null, \"column_count_empty\": null,"
	    " \"column_count_mapped\": null, \"column_count_unmapped\": null,"
	    " \"field_count_expected\": 7, \"field_count_detected\": null,"
	    " \"field_count_not_detected\": null,"
	    " \"cell_count_total\": 100, \"cell_count_non_empty\": 99}");
	json_decref(got);
}

/*
 * A field without a usable name or with a detected value that says
 * neither yes nor no is skipped.  Skipping is not a dropped duplicate:
 * dropped counts rows whose key was already taken (results.c).
 */
static void
test_fields_skipped(void **state)
{
	json_t *got;
	int dropped;

	(void)state;
	got = map_text("{\"fields\": ["
	    " {\"detected\": true},"
	    " {\"field\": \"\", \"detected\": true},"
	    " {\"field\": \"   \", \"detected\": true},"
	    " {\"field\": 7, \"detected\": true},"
	    " \"not an object\","
	    " {\"field\": \"keep\", \"detected\": true},"
	    " {\"field\": \"maybe\", \"detected\": \"maybe\"},"
	    " {\"field\": \"nodetect\"},"
	    " {\"field\": \"nulldetect\", \"detected\": null},"
	    " {\"field\": \"listdetect\", \"detected\": []}"
	    "]}", &dropped);
	assert_json_text(json_object_get(got, "run_fields"),
	    "[{\"field\": \"keep\", \"label\": null, \"detected\": true,"
	    "  \"best_mapping_score\": null, \"valid_cells\": 0,"
	    "  \"occurrences_tables\": 0, \"occurrences_columns\": 0}]");
	assert_int_equal(dropped, 0);
	json_decref(got);
}

static void
test_fields_coerced(void **state)
{
	json_t *got;
	int dropped;

	(void)state;
	got = map_text("{\"fields\": ["
	    " {\"field\": \"a\", \"detected\": \"yes\"},"
	    " {\"field\": \"b\", \"detected\": 1},"
	    " {\"field\": \"c\", \"detected\": \"0\"},"
	    " {\"field\": \"d\", \"detected\": \" On \"},"
	    " {\"field\": \"e\", \"detected\": 0.0},"
	    " {\"field\": \"f\", \"detected\": \"FALSE\"},"
	    " {\"field\": \" g \", \"label\": \" Label G \","
	    "  \"detected\": \"y\","
	    "  \"best_mapping_score\": \"1.5\", \"valid_cells\": \"12\","
	    "  \"occurrences\": {\"tables\": \"2\", \"columns\": 3.0}},"
	    " {\"field\": \"h\", \"detected\": false,"
	    "  \"best_mapping_score\": 1, \"valid_cells\": \"1.5\","
	    "  \"occurrences\": {\"tables\": \"x\", \"columns\": 2.5}},"
	    " {\"field\": \"i\", \"detected\": \"n\","
	    "  \"best_mapping_score\": \"high\", \"label\": 4}"
	    "]}", &dropped);
	assert_json_text(json_object_get(got, "run_fields"), "["
	    "{\"field\": \"a\", \"label\": null, \"detected\": true,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"b\", \"label\": null, \"detected\": true,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"c\", \"label\": null, \"detected\": false,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"d\", \"label\": null, \"detected\": true,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"e\", \"label\": null, \"detected\": false,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"f\", \"label\": null, \"detected\": false,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"g\", \"label\": \"Label G\", \"detected\": true,"
	    " \"best_mapping_score\": 1.5, \"valid_cells\": 12,"
	    " \"occurrences_tables\": 2, \"occurrences_columns\": 3},"
	    "{\"field\": \"h\", \"label\": null, \"detected\": false,"
	    " \"best_mapping_score\": 1.0, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"i\", \"label\": null, \"detected\": false,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0}"
	    "]");
	assert_int_equal(dropped, 0);
	json_decref(got);
}

/* A field name seen twice keeps its first row. */
static void
test_fields_duplicates(void **state)
{
	json_t *got;
	int dropped;

	(void)state;
	got = map_text("{\"fields\": ["
	    " {\"field\": \"email\", \"detected\": true, \"valid_cells\": 1},"
	    " {\"field\": \"name\", \"detected\": true},"
	    " {\"field\": \"email\", \"detected\": false, \"valid_cells\": 9},"
	    " {\"field\": \" email \", \"detected\": false}"
	    "]}", &dropped);
	assert_json_text(json_object_get(got, "run_fields"), "["
	    "{\"field\": \"email\", \"label\": null, \"detected\": true,"
	    " \"best_mapping_score\": null, \"valid_cells\": 1,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0},"
	    "{\"field\": \"name\", \"label\": null, \"detected\": true,"
	    " \"best_mapping_score\": null, \"valid_cells\": 0,"
	    " \"occurrences_tables\": 0, \"occurrences_columns\": 0}"
	    "]");
	assert_int_equal(dropped, 2);
	json_decref(got);
}

/*
 * Values are fitted to their columns: text cut to the column's bytes on
 * a character boundary, numbers beyond 32 bits dropped or held at the
 * bound, and the key compared once cut.
 */
static void
test_fields_fitted(void **state)
{
	struct results_report rep;
	json_t *p, *got, *row;
	char name[300];
	size_t i;

	(void)state;
	/* "f" and 100 two-byte characters: 201 bytes. */
	snprintf(name, sizeof(name), "f");
	for (i = 0; i < 100; i++)
		strcat(name, "\xc3\xa9");
	p = json_pack("{s:[{s:s, s:b, s:I, s:f, s:{s:f}},"
	    " {s:s+, s:b}], s:{s:{s:I}}}", "fields", "field", name,
	    "detected", 1, "valid_cells", (json_int_t)1 << 40,
	    "best_mapping_score", 0.5, "occurrences", "tables", 1e300,
	    "field", name, "x", "detected", 0, "counts", "rows", "total",
	    -((json_int_t)1 << 35));
	got = results_map(p, 0, &rep);
	row = json_array_get(json_object_get(got, "run_fields"), 0);
	assert_int_equal(json_array_size(json_object_get(got,
	    "run_fields")), 1);
	/* 127 bytes: the 64th character would end at byte 129. */
	assert_int_equal(json_string_length(json_object_get(row, "field")),
	    127);
	assert_int_equal(json_integer_value(json_object_get(row,
	    "valid_cells")), 2147483647);
	assert_int_equal(json_integer_value(json_object_get(row,
	    "occurrences_tables")), 2147483647);
	assert_true(json_is_null(json_object_get(json_object_get(got,
	    "run_metrics"), "row_count_total")));
	assert_int_equal(rep.duplicates, 1);
	assert_json_text(rep.adjusted, "{"
	    "\"run_fields.field\": {\"cut\": 2},"
	    "\"run_fields.valid_cells\": {\"clamped\": 1},"
	    "\"run_fields.occurrences_tables\": {\"clamped\": 1},"
	    "\"run_metrics.row_count_total\": {\"dropped\": 1}}");
	results_report_free(&rep);
	json_decref(got);
	json_decref(p);
}

/* Rows beyond the limit are counted, not kept. */
static void
test_rows_capped(void **state)
{
	struct results_report rep;
	json_t *p, *got;
	int i;

	(void)state;
	p = json_pack("{s:[]}", "fields");
	for (i = 0; i < 10; i++)
		json_array_append_new(json_object_get(p, "fields"),
		    json_pack("{s:s+, s:b}", "field", "f", i == 0 ? "0" :
		    i == 1 ? "1" : i == 2 ? "2" : "n", "detected", 1));
	got = results_map(p, 3, &rep);
	assert_int_equal(json_array_size(json_object_get(got,
	    "run_fields")), 3);
	assert_int_equal(rep.capped, 7);
	assert_int_equal(rep.rows, 3);
	results_report_free(&rep);
	json_decref(got);
	json_decref(p);
}

/* One workbook and sheet wrapped around the tables given. */
#define WB(tables) \
	"{\"workbooks\": [{\"locator\": {\"workbook\": {\"index\": 0," \
	" \"name\": \"in.xlsx\"}}, \"sheets\": [{\"locator\": {\"sheet\":" \
	" {\"index\": 1, \"name\": \"S\"}}, \"tables\": [" tables "]}]}]}"

static void
test_columns_mapping(void **state)
{
	json_t *got;
	int dropped;

	(void)state;
	got = map_text(WB(
	    "{\"locator\": {\"table\": {\"index\": 2}}, \"structure\":"
	    " {\"columns\": ["
	    "  {\"index\": 0, \"header\": {\"raw\": \" Email \","
	    "   \"normalized\": \"email\"}, \"non_empty_cells\": 5,"
	    "   \"valid_cells\": null, \"mapping\": {\"status\": \"MAPPED\","
	    "   \"field\": \"email\", \"score\": \"0.5\","
	    "   \"method\": \"rules\"}},"
	    "  {\"index\": 1, \"non_empty_cells\": \"4\","
	    "   \"mapping\": {\"status\": \"unknown\", \"field\": \"x\"}},"
	    "  {\"index\": 2, \"non_empty_cells\": 3, \"valid_cells\": \"2\","
	    "   \"mapping\": {\"status\": \" Unmapped \","
	    "   \"unmapped_reason\": \"no_signal\"}},"
	    "  {\"index\": \"3\", \"mapping\": {\"status\": \"unmapped\"}},"
	    "  {\"mapping\": {\"status\": \"mapped\"}},"
	    "  {\"index\": 5},"
	    "  {\"index\": 6, \"mapping\": {\"status\": \"\"}},"
	    "  {\"index\": 7, \"mapping\": {\"status\": 1}},"
	    "  {\"index\": 8, \"non_empty_cells\": 6, \"mapping\":"
	    "   {\"status\": \"mapped\", \"field\": \"name\", \"score\": 1}}"
	    " ]}}"), &dropped);
	assert_json_text(json_object_get(got, "run_table_columns"), "["
	    "{\"workbook_index\": 0, \"workbook_name\": \"in.xlsx\","
	    " \"sheet_index\": 1, \"sheet_name\": \"S\", \"table_index\": 2,"
	    " \"column_index\": 0, \"header_raw\": \"Email\","
	    " \"header_normalized\": \"email\", \"non_empty_cells\": 5,"
	    " \"valid_cells\": 5, \"mapping_status\": \"mapped\","
	    " \"mapped_field\": \"email\", \"mapping_score\": 0.5,"
	    " \"mapping_method\": \"rules\", \"unmapped_reason\": null},"
	    "{\"workbook_index\": 0, \"workbook_name\": \"in.xlsx\","
	    " \"sheet_index\": 1, \"sheet_name\": \"S\", \"table_index\": 2,"
	    " \"column_index\": 2, \"header_raw\": null,"
	    " \"header_normalized\": null, \"non_empty_cells\": 3,"
	    " \"valid_cells\": 2, \"mapping_status\": \"unmapped\","
	    " \"mapped_field\": null, \"mapping_score\": null,"
	    " \"mapping_method\": null, \"unmapped_reason\": \"no_signal\"},"
	    "{\"workbook_index\": 0, \"workbook_name\": \"in.xlsx\","
	    " \"sheet_index\": 1, \"sheet_name\": \"S\", \"table_index\": 2,"
	    " \"column_index\": 3, \"header_raw\": null,"
	    " \"header_normalized\": null, \"non_empty_cells\": 0,"
	    " \"valid_cells\": 0, \"mapping_status\": \"unmapped\","
	    " \"mapped_field\": null, \"mapping_score\": null,"
	    " \"mapping_method\": null, \"unmapped_reason\": null},"
	    "{\"workbook_index\": 0, \"workbook_name\": \"in.xlsx\","
	    " \"sheet_index\": 1, \"sheet_name\": \"S\", \"table_index\": 2,"
	    " \"column_index\": 8, \"header_raw\": null,"
	    " \"header_normalized\": null, \"non_empty_cells\": 6,"
	    " \"valid_cells\": 6, \"mapping_status\": \"mapped\","
	    " \"mapped_field\": \"name\", \"mapping_score\": 1.0,"
	    " \"mapping_method\": null, \"unmapped_reason\": null}"
	    "]");
	assert_int_equal(dropped, 0);
	json_decref(got);
}

/* A column key seen twice keeps its first row; other tables are apart. */
static void
test_columns_duplicates(void **state)
{
	json_t *got, *rows;
	int dropped;

	(void)state;
	got = map_text(WB(
	    "{\"locator\": {\"table\": {\"index\": 0}}, \"structure\":"
	    " {\"columns\": ["
	    "  {\"index\": 0, \"header\": {\"raw\": \"first\"},"
	    "   \"mapping\": {\"status\": \"unmapped\"}},"
	    "  {\"index\": 0, \"header\": {\"raw\": \"second\"},"
	    "   \"mapping\": {\"status\": \"mapped\"}},"
	    "  {\"index\": 1, \"mapping\": {\"status\": \"unmapped\"}}"
	    " ]}},"
	    "{\"locator\": {\"table\": {\"index\": 1}}, \"structure\":"
	    " {\"columns\": ["
	    "  {\"index\": 0, \"header\": {\"raw\": \"other table\"},"
	    "   \"mapping\": {\"status\": \"unmapped\"}}"
	    " ]}},"
	    "{\"locator\": {\"table\": {\"index\": 0}}, \"structure\":"
	    " {\"columns\": ["
	    "  {\"index\": 1, \"header\": {\"raw\": \"repeated table\"},"
	    "   \"mapping\": {\"status\": \"unmapped\"}}"
	    " ]}}"), &dropped);
	rows = json_object_get(got, "run_table_columns");
	assert_int_equal(json_array_size(rows), 3);
	assert_json_text(json_object_get(json_array_get(rows, 0),
	    "header_raw"), "\"first\"");
	assert_json_text(json_object_get(json_array_get(rows, 0),
	    "mapping_status"), "\"unmapped\"");
	assert_json_text(json_object_get(json_array_get(rows, 1),
	    "column_index"), "1");
	assert_json_text(json_object_get(json_array_get(rows, 2),
	    "header_raw"), "\"other table\"");
	assert_json_text(json_object_get(json_array_get(rows, 2),
	    "table_index"), "1");
	assert_int_equal(dropped, 2);
	json_decref(got);
}

/* Workbooks, sheets and tables without their locator parts are skipped. */
static void
test_columns_locators(void **state)
{
	json_t *got, *rows;
	int dropped;

	(void)state;
#define COLS \
	"\"structure\": {\"columns\": [{\"index\": 0, \"mapping\":" \
	" {\"status\": \"unmapped\"}}]}"
#define TABLE(loc) "{\"locator\": {\"table\": " loc "}, " COLS "}"
	got = map_text("{\"workbooks\": ["
	    /* a workbook without a name */
	    "{\"locator\": {\"workbook\": {\"index\": 0}}, \"sheets\": [{"
	    " \"locator\": {\"sheet\": {\"index\": 0, \"name\": \"S\"}},"
	    " \"tables\": [" TABLE("{\"index\": 0}") "]}]},"
	    /* a workbook with a blank name */
	    "{\"locator\": {\"workbook\": {\"index\": 1, \"name\": \"  \"}},"
	    " \"sheets\": [{\"locator\": {\"sheet\": {\"index\": 0,"
	    " \"name\": \"S\"}}, \"tables\": [" TABLE("{\"index\": 0}") "]}]},"
	    /* a workbook without an index */
	    "{\"locator\": {\"workbook\": {\"name\": \"noindex.xlsx\"}},"
	    " \"sheets\": [{\"locator\": {\"sheet\": {\"index\": 0,"
	    " \"name\": \"S\"}}, \"tables\": [" TABLE("{\"index\": 0}") "]}]},"
	    /* a good workbook with good and bad sheets and tables */
	    "{\"locator\": {\"workbook\": {\"index\": \"3\","
	    " \"name\": \" good.xlsx \"}}, \"sheets\": ["
	    " {\"locator\": {\"sheet\": {\"index\": 0}},"
	    "  \"tables\": [" TABLE("{\"index\": 0}") "]},"
	    " {\"locator\": {\"sheet\": {\"name\": \"NoIndex\"}},"
	    "  \"tables\": [" TABLE("{\"index\": 0}") "]},"
	    " {\"locator\": {\"sheet\": {\"index\": 2, \"name\": \"Good\"}},"
	    "  \"tables\": [" TABLE("{}") ", " TABLE("{\"index\": \"x\"}") ","
	    "   " TABLE("{\"index\": 4}") "]}"
	    "]}"
	    "]}", &dropped);
#undef TABLE
#undef COLS
	rows = json_object_get(got, "run_table_columns");
	assert_json_text(rows, "[{\"workbook_index\": 3,"
	    " \"workbook_name\": \"good.xlsx\", \"sheet_index\": 2,"
	    " \"sheet_name\": \"Good\", \"table_index\": 4,"
	    " \"column_index\": 0,"
	    " \"header_raw\": null, \"header_normalized\": null,"
	    " \"non_empty_cells\": 0, \"valid_cells\": 0,"
	    " \"mapping_status\": \"unmapped\", \"mapped_field\": null,"
	    " \"mapping_score\": null, \"mapping_method\": null,"
	    " \"unmapped_reason\": null}]");
	assert_int_equal(dropped, 0);
	json_decref(got);
}

/* run_options_parse */

/* An array of strings, compared with the JSON text want. */
#define assert_strings(arr, want) do { \
	assert_true(json_is_array(arr)); \
	assert_json_text(arr, want); \
} while (0)

static void
test_options_defaults(void **state)
{
	static const char *const inputs[] = {
		NULL, "", "not json", "[1]", "null", "\"x\"", "{\"a\": 1",
		"{}",
	};
	struct run_options o;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(inputs); i++) {
		memset(&o, 0x55, sizeof(o));
		run_options_parse(&o, inputs[i], NULL, "info");
		assert_int_equal(o.dry_run, 0);
		assert_int_equal(o.validate_only, 0);
		assert_int_equal(o.active_sheet_only, 0);
		assert_string_equal(o.log_level, "INFO");
		assert_strings(o.sheets, "[]");
		assert_strings(o.extra_args, "[]");
		run_options_free(&o);
		assert_null(o.sheets);
		assert_null(o.extra_args);
	}
}

static int
dry_run_of(const char *value)
{
	struct run_options o;
	char text[128];
	int r;

	snprintf(text, sizeof(text), "{\"dry_run\": %s}", value);
	run_options_parse(&o, text, NULL, "info");
	r = o.dry_run;
	run_options_free(&o);
	return r;
}

static void
test_options_truthy(void **state)
{
	static const char *const yes[] = {
		"true", "1", "2", "-1", "0.5", "\"yes\"", "\"On\"", "\"TRUE\"",
		"\"y\"", "\"1\"", "\" yes \"",
	};
	static const char *const no[] = {
		"false", "0", "0.0", "\"no\"", "\"off\"", "\"0\"", "\"\"",
		"\"maybe\"", "\"2\"", "null", "[]", "{}", "[true]",
		"\"yesno\"",
	};
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(yes); i++)
		if (dry_run_of(yes[i]) != 1)
			fail_msg("dry_run %s is not true", yes[i]);
	for (i = 0; i < NELEM(no); i++)
		if (dry_run_of(no[i]) != 0)
			fail_msg("dry_run %s is not false", no[i]);
}

/*
 * A long string is compared whole: text after a truthy word and many
 * spaces does not leave the word standing alone.
 */
static void
test_options_truthy_long_string(void **state)
{
	(void)state;
	/* "on", 14 spaces, "x". */
	assert_int_equal(dry_run_of("\"on              x\""), 0);
	/* "true", 12 spaces, "false". */
	assert_int_equal(dry_run_of("\"true            false\""), 0);
}

static void
test_options_flags(void **state)
{
	struct run_options o;

	(void)state;
	run_options_parse(&o, "{\"validation_only\": \"yes\"}", NULL, "info");
	assert_int_equal(o.validate_only, 1);
	assert_int_equal(o.dry_run, 0);
	run_options_free(&o);

	run_options_parse(&o, "{\"validate_only\": true,"
	    " \"active_sheet_only\": \"on\", \"dry_run\": \"off\"}", NULL,
	    "info");
	assert_int_equal(o.validate_only, 1);
	assert_int_equal(o.active_sheet_only, 1);
	assert_int_equal(o.dry_run, 0);
	run_options_free(&o);

	/* Either name being true is enough. */
	run_options_parse(&o, "{\"validate_only\": false,"
	    " \"validation_only\": 1}", NULL, "info");
	assert_int_equal(o.validate_only, 1);
	assert_int_equal(o.active_sheet_only, 0);
	run_options_free(&o);
}

static void
test_options_log_level(void **state)
{
	static const struct {
		const char	*json;
		const char	*def;
		const char	*want;
	} cases[] = {
		{ "{\"log_level\": \"  debug \"}", "info", "DEBUG" },
		{ "{\"log_level\": \"Warning\"}", "info", "WARNING" },
		{ "{\"log_level\": \"\"}", "info", "INFO" },
		{ "{\"log_level\": \"   \"}", "warning", "WARNING" },
		{ "{\"log_level\": 10}", "error", "ERROR" },
		{ "{\"log_level\": null}", "debug", "DEBUG" },
		{ "{}", "notice", "NOTICE" },
	};
	struct run_options o;
	size_t i;

	(void)state;
	for (i = 0; i < NELEM(cases); i++) {
		run_options_parse(&o, cases[i].json, NULL, cases[i].def);
		if (strcmp(o.log_level, cases[i].want) != 0)
			fail_msg("%s with default %s: log level \"%s\", want "
			    "\"%s\"", cases[i].json, cases[i].def, o.log_level,
			    cases[i].want);
		run_options_free(&o);
	}
}

static void
test_options_sheets(void **state)
{
	struct run_options o;

	(void)state;
	run_options_parse(&o, "{\"input_sheet_names\": [\"Sheet1\", \"\","
	    " \"  \", \" Data \", 5, null, \"Last\"]}", "[\"Column\"]", "info");
	assert_strings(o.sheets, "[\"Sheet1\", \"Data\", \"Last\"]");
	run_options_free(&o);

	/* A single string is a list of one. */
	run_options_parse(&o, "{\"input_sheet_names\": \" Only \"}", NULL,
	    "info");
	assert_strings(o.sheets, "[\"Only\"]");
	run_options_free(&o);

	/* Without names in the options, the column's JSON is used. */
	run_options_parse(&o, "{\"dry_run\": false}", "[\"A\", \" B \", \"\"]",
	    "info");
	assert_strings(o.sheets, "[\"A\", \"B\"]");
	run_options_free(&o);

	run_options_parse(&o, "{\"input_sheet_names\": []}", "[\"A\"]",
	    "info");
	assert_strings(o.sheets, "[\"A\"]");
	run_options_free(&o);

	run_options_parse(&o, "{\"input_sheet_names\": [\"\", \" \"]}",
	    "[\"A\"]", "info");
	assert_strings(o.sheets, "[\"A\"]");
	run_options_free(&o);

	run_options_parse(&o, "not json", "[\"A\", \"C\"]", "info");
	assert_strings(o.sheets, "[\"A\", \"C\"]");
	run_options_free(&o);

	/* A column that is not JSON gives no names. */
	run_options_parse(&o, NULL, "Sheet1", "info");
	assert_strings(o.sheets, "[]");
	run_options_free(&o);

	run_options_parse(&o, NULL, "null", "info");
	assert_strings(o.sheets, "[]");
	run_options_free(&o);
}

static void
test_options_engine_args(void **state)
{
	struct run_options o;

	(void)state;
	run_options_parse(&o, "{\"engine_args\": [\"--a\", \"--b=1\"]}", NULL,
	    "info");
	assert_strings(o.extra_args, "[\"--a\", \"--b=1\"]");
	run_options_free(&o);

	run_options_parse(&o, "{\"extra_args\": [\"--x\", \"\", \"-v\"]}",
	    NULL, "info");
	assert_strings(o.extra_args, "[\"--x\", \"-v\"]");
	run_options_free(&o);

	run_options_parse(&o, "{\"extra_args\": \"--fast\"}", NULL, "info");
	assert_strings(o.extra_args, "[\"--fast\"]");
	run_options_free(&o);

	/* engine_args is the name that wins. */
	run_options_parse(&o, "{\"extra_args\": [\"--extra\"],"
	    " \"engine_args\": [\"--engine\"]}", NULL, "info");
	assert_strings(o.extra_args, "[\"--engine\"]");
	run_options_free(&o);

	run_options_parse(&o, "{\"engine_args\": 5}", NULL, "info");
	assert_strings(o.extra_args, "[]");
	run_options_free(&o);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reference_payload),
		cmocka_unit_test(test_fixture_columns),
		cmocka_unit_test(test_rows_have_all_columns),
		cmocka_unit_test(test_scope),
		cmocka_unit_test(test_non_object_payload),
		cmocka_unit_test(test_findings_counted),
		cmocka_unit_test(test_issues_by_severity),
		cmocka_unit_test(test_metrics_all_null),
		cmocka_unit_test(test_metrics_coercion),
		cmocka_unit_test(test_fields_skipped),
		cmocka_unit_test(test_fields_coerced),
		cmocka_unit_test(test_fields_duplicates),
		cmocka_unit_test(test_fields_fitted),
		cmocka_unit_test(test_rows_capped),
		cmocka_unit_test(test_columns_mapping),
		cmocka_unit_test(test_columns_duplicates),
		cmocka_unit_test(test_columns_locators),
		cmocka_unit_test(test_options_defaults),
		cmocka_unit_test(test_options_truthy),
		cmocka_unit_test(test_options_truthy_long_string),
		cmocka_unit_test(test_options_flags),
		cmocka_unit_test(test_options_log_level),
		cmocka_unit_test(test_options_sheets),
		cmocka_unit_test(test_options_engine_args),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
