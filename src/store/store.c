/*
 * Chooses the backend named by the configuration and forwards each
 * operation to it.
 */
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>
#include <time.h>

#include "conf.h"
#include "log.h"
#include "results.h"
#include "store_impl.h"
#include "util.h"

/*
 * The schema, described once: the tables the daemon cannot run without,
 * and the columns of each that it reads or writes (for the result
 * tables, run_id and those results.c fills).  db check reads it; each
 * backend's DDL makes exactly these tables and columns, which a test
 * holds them to (ade-ctl db schema --json).  The ADE migrations create
 * more columns than these; the daemon leaves the others to their
 * defaults.
 */
static const char *const workspaces_cols[] = {
	"id", "name", "slug", "created_at", "updated_at", NULL
};
static const char *const configurations_cols[] = {
	"id", "workspace_id", "display_name", "status", "content_digest",
	"last_used_at", "activated_at", "created_at", "updated_at", NULL
};
static const char *const documents_cols[] = {
	"id", "workspace_id", "original_filename", "content_type",
	"byte_size", "sha256", "stored_uri", "expires_at", "last_run_id",
	"created_at", "updated_at", NULL
};
static const char *const runs_cols[] = {
	"id", "configuration_id", "workspace_id", "input_document_id",
	"input_sheet_names", "output_path", "engine_spec", "deps_digest",
	"status", "exit_code", "created_at", "started_at", "completed_at",
	"error_message", "available_at", "run_options", "attempt_count",
	"max_attempts", "claimed_by", "claim_expires_at", NULL
};
static const char *const environments_cols[] = {
	"id", "workspace_id", "configuration_id", "engine_spec",
	"deps_digest", "status", "error_message", "claimed_by",
	"claim_expires_at", "created_at", "updated_at", "last_used_at",
	"python_version", "python_interpreter", "engine_version", NULL
};
static const char *const leases_cols[] = {
	"name", "holder", "expires_at", NULL
};

/*
 * Columns db init makes because the ADE migrations have them, which the
 * daemon neither reads nor writes.  They are here so that a test can
 * hold every backend's DDL to this one description.
 */
static const char *const workspaces_unused[] = { "settings", NULL };
static const char *const documents_unused[] = {
	"assignee_user_id", "attributes", "comment_count", "deleted_at",
	"deleted_by_user_id", "source", "uploaded_by_user_id", "version",
	NULL
};
static const char *const runs_unused[] = { "submitted_by_user_id", NULL };
static const char *const run_id_col[] = { "run_id", NULL };
static const char *const no_cols[] = { NULL };

static const struct {
	const char		*table;
	const char *const	*cols;		/* needed */
	const char *const	*more;		/* needed too */
	const char *const	*unused;
} required[] = {
	{ "workspaces", workspaces_cols, no_cols, workspaces_unused },
	{ "configurations", configurations_cols, no_cols, no_cols },
	{ "documents", documents_cols, no_cols, documents_unused },
	{ "runs", runs_cols, no_cols, runs_unused },
	{ "environments", environments_cols, no_cols, no_cols },
	{ "run_metrics", run_id_col, results_metric_columns, no_cols },
	{ "run_fields", run_id_col, results_field_columns, no_cols },
	{ "run_table_columns", run_id_col, results_column_columns, no_cols },
	{ "worker_leases", leases_cols, no_cols, no_cols },
};

/*
 * valid_cells came to run_fields and run_table_columns with a later
 * ADE migration.  Without it, results are stored without it, so its
 * absence is reported but not fatal.
 */
#define OPTIONAL_COLUMN	"valid_cells"

/* The result columns of results.c without the optional one. */
static const char *fields_old[16], *table_columns_old[24];

void	(*store_event_hook)(enum store_event);

static const volatile sig_atomic_t *interrupt_stop, *interrupt_quit;

void
store_set_interrupts(const volatile sig_atomic_t *stop,
    const volatile sig_atomic_t *quit)
{
	interrupt_stop = stop;
	interrupt_quit = quit;
}

int
store_stopping(void)
{
	return interrupt_stop != NULL && *interrupt_stop;
}

int
store_quitting(void)
{
	return interrupt_quit != NULL && *interrupt_quit;
}

void
store_event(enum store_event e)
{
	if (store_event_hook != NULL)
		store_event_hook(e);
}

/* An operation's result, with its failure counted. */
static int
counted(int rc)
{
	if (rc < 0)
		store_event(STORE_EV_ERROR);
	return rc;
}

/*
 * The rows one of the backend's statements (struct store_sql) changed;
 * a failure is left to the caller to count.
 */
static int
changed(struct store *st, const char *what, const char *sql,
    const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = st->ops->count(st, what, sql, fmt, ap);
	va_end(ap);
	return n;
}

/* The same, a failure counted. */
static int
count(struct store *st, const char *what, const char *sql, const char *fmt,
    ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = st->ops->count(st, what, sql, fmt, ap);
	va_end(ap);
	return counted(n);
}

/* The rows of one of the backend's statements (struct store_sql). */
static json_t *
rows(struct store *st, const char *what, const char *sql, const char *fmt,
    ...)
{
	va_list ap;
	json_t *a;

	va_start(ap, fmt);
	a = st->ops->rows(st, what, sql, fmt, ap);
	va_end(ap);
	if (a == NULL)
		store_event(STORE_EV_ERROR);
	return a;
}

/* Set by a backend whose open failed in a way no retry can mend. */
static int open_failed_for_good;

void
store_open_permanent(void)
{
	open_failed_for_good = 1;
}

/*
 * Whether the last store_open failed for a reason that waiting cannot
 * mend (a file that is not a database, one that cannot be written), as
 * opposed to a server that is away for now.
 */
int
store_open_failed_for_good(void)
{
	return open_failed_for_good;
}

static struct store *
open_backend(const struct conf *c, struct buf *err, int create)
{
	struct store *st;

	open_failed_for_good = 0;
	if (strcmp(c->db_backend, "sqlite") == 0)
		st = store_sqlite_open(c, err, create);
	else if (strcmp(c->db_backend, "pgsql") == 0)
		st = store_pgsql_open(c, err);
	else if (strcmp(c->db_backend, "mssql") == 0)
		st = store_mssql_open(c, err);
	else {
		buf_printf(err, "the %s backend is not part of this build yet",
		    c->db_backend);
		return NULL;
	}
	if (st != NULL)
		st->wake_fd = -1;
	return st;
}

struct store *
store_open(const struct conf *c, struct buf *err)
{
	return open_backend(c, err, 1);
}

/*
 * Opens a database that must exist already: an SQLite file is not
 * created (nor its directory), so that reading about runs leaves no
 * empty database behind.  Servers' databases are never created.
 */
struct store *
store_open_existing(const struct conf *c, struct buf *err)
{
	return open_backend(c, err, 0);
}

void
store_close(struct store *st)
{
	if (st != NULL) {
		json_decref(st->ahead.row);
		st->ops->close(st);
	}
}

const char *
store_error(struct store *st)
{
	return st->err;
}

/*
 * Whether the last failure was the connection going away, as opposed to
 * an error of the statement itself: only the former is worth retrying.
 */
int
store_dead(struct store *st)
{
	return st->dead;
}

const char *
store_backend(struct store *st)
{
	return st->ops->name;
}

int
store_init_schema(struct store *st)
{
	return st->ops->init_schema(st);
}

/* Whether a space-separated list of names holds name (any case). */
static int
has_name(const char *list, const char *name)
{
	size_t len = strlen(name);
	const char *p = list;

	while (*p != '\0') {
		size_t n = strcspn(p, " ");

		if (n == len && strncasecmp(p, name, len) == 0)
			return 1;
		p += n;
		p += strspn(p, " ");
	}
	return 0;
}

static void
list_add(struct buf *b, const char *table, const char *col)
{
	if (b->len > 0)
		buf_addstr(b, ", ");
	if (col != NULL)
		buf_printf(b, "%s.%s", table, col);
	else
		buf_addstr(b, table);
}

/* Lists what of cols a table lacks; returns how many required ones. */
static int
check_columns(const char *table, const char *const *cols, const char *have,
    struct buf *missing, struct buf *optional)
{
	size_t k;
	int n = 0;

	for (k = 0; cols[k] != NULL; k++) {
		if (has_name(have, cols[k]))
			continue;
		if (strcmp(cols[k], OPTIONAL_COLUMN) == 0) {
			if (optional != NULL)
				list_add(optional, table, cols[k]);
			continue;
		}
		list_add(missing, table, cols[k]);
		n++;
	}
	return n;
}

/*
 * Lists in missing the required tables and columns the database lacks
 * ("runs", "runs.claimed_by") and in optional the optional columns it
 * lacks.  Returns how many required ones are missing, or -1.
 */
int
store_check_schema(struct store *st, struct buf *missing,
    struct buf *optional)
{
	struct buf have;
	size_t i;
	int n = 0, rc;

	buf_init(&have);
	for (i = 0; i < NELEM(required); i++) {
		buf_reset(&have);
		if ((rc = st->ops->table_columns(st, required[i].table,
		    &have)) < 0) {
			buf_free(&have);
			return -1;
		}
		if (rc == 0) {
			list_add(missing, required[i].table, NULL);
			n++;
			continue;
		}
		n += check_columns(required[i].table, required[i].cols,
		    buf_str(&have), missing, optional);
		n += check_columns(required[i].table, required[i].more,
		    buf_str(&have), missing, optional);
	}
	buf_free(&have);
	return n;
}

/*
 * The schema, as {"table": {"required": [...], "optional": [...],
 * "unused": [...]}} in the order db check reads it.
 */
json_t *
store_schema(void)
{
	json_t *all = json_object(), *req, *opt, *unused;
	const char *const *lists[2];
	size_t i, k, l;

	for (i = 0; i < NELEM(required); i++) {
		req = json_array();
		opt = json_array();
		unused = json_array();
		lists[0] = required[i].cols;
		lists[1] = required[i].more;
		for (l = 0; l < NELEM(lists); l++)
			for (k = 0; lists[l][k] != NULL; k++)
				json_array_append_new(strcmp(lists[l][k],
				    OPTIONAL_COLUMN) == 0 ? opt : req,
				    json_string(lists[l][k]));
		for (k = 0; required[i].unused[k] != NULL; k++)
			json_array_append_new(unused,
			    json_string(required[i].unused[k]));
		json_object_set_new(all, required[i].table, json_pack(
		    "{s:o, s:o, s:o}", "required", req, "optional", opt,
		    "unused", unused));
	}
	return all;
}

static void
drop_optional(const char *const *from, const char **to, size_t max)
{
	size_t i, n = 0;

	for (i = 0; from[i] != NULL && n + 1 < max; i++)
		if (strcmp(from[i], OPTIONAL_COLUMN) != 0)
			to[n++] = from[i];
	to[n] = NULL;
}

/*
 * Settles, once per store (when the database answers), which result columns
 * the tables have: results go to the columns that exist.  Until the
 * database answers, the full lists are used.
 */
static void
probe_result_columns(struct store *st)
{
	struct buf have;

	if (st->probed)
		return;
	st->cols[0] = results_metric_columns;
	st->cols[1] = results_field_columns;
	st->cols[2] = results_column_columns;
	buf_init(&have);
	if (st->ops->table_columns(st, "run_fields", &have) == 1) {
		if (!has_name(buf_str(&have), OPTIONAL_COLUMN)) {
			drop_optional(results_field_columns, fields_old,
			    NELEM(fields_old));
			st->cols[1] = fields_old;
		}
		buf_reset(&have);
		if (st->ops->table_columns(st, "run_table_columns",
		    &have) == 1) {
			if (!has_name(buf_str(&have), OPTIONAL_COLUMN)) {
				drop_optional(results_column_columns,
				    table_columns_old,
				    NELEM(table_columns_old));
				st->cols[2] = table_columns_old;
			}
			st->probed = 1;
		}
	}
	buf_free(&have);
}

const char *const *
store_result_columns(struct store *st, int which)
{
	if (st->cols[which] == NULL) {
		st->cols[0] = results_metric_columns;
		st->cols[1] = results_field_columns;
		st->cols[2] = results_column_columns;
	}
	return st->cols[which];
}

int
store_ensure_environments(struct store *st, long *ins, long *req)
{
	const struct store_sql *sql = st->ops->sql;
	int a, b = 0;

	st->may_stop = 1;
	a = changed(st, "ensure environments", sql->ensure_insert, "");
	/*
	 * Where two hosts insert the same key at once, the loser's whole
	 * INSERT is undone: once more inserts the other keys, now that the
	 * winner's row is there to be skipped.
	 */
	if (a == -1 && st->fail == STORE_FAIL_CONSTRAINT)
		a = changed(st, "ensure environments", sql->ensure_insert, "");
	if (a == -1 && st->fail == STORE_FAIL_CONSTRAINT)
		a = 0;
	if (a >= 0)
		b = changed(st, "ensure environments", sql->ensure_requeue,
		    "");
	st->may_stop = 0;
	if (a < 0 || b < 0)
		return counted(a < 0 ? a : b);
	*ins = a;
	*req = b;
	return 0;
}

/* A claimed row's text value into out ("" for NULL), cut to its size. */
static void
text_copy(json_t *row, const char *col, char *out, size_t len)
{
	snprintf(out, len, "%s", json_string_value(json_object_get(row,
	    col)) != NULL ? json_string_value(json_object_get(row, col)) :
	    "");
}

static const char *
text_of(json_t *row, const char *col)
{
	const char *v = json_string_value(json_object_get(row, col));

	return v != NULL ? v : "";
}

/* A claimed row's column into the field of the same name. */
#define TEXT_FIELD(row, out, field)					\
	text_copy(row, #field, (out)->field, sizeof((out)->field))

static char *
text_dup(json_t *row, const char *col)
{
	const char *v = json_string_value(json_object_get(row, col));

	return v != NULL ? xstrdup(v) : NULL;
}

/* A number, whichever way the driver gave it. */
static double
number_of(json_t *row, const char *col)
{
	json_t *v = json_object_get(row, col);

	if (json_is_string(v))
		return strtod(json_string_value(v), NULL);
	if (json_is_boolean(v))
		return json_is_true(v);
	return json_number_value(v);
}

int
store_claim_environment(struct store *st, const char *token, double lease,
    struct env_claim *out)
{
	json_t *row = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	rc = st->ops->claim_environment(st, token, lease, &row);
	if (rc == 1) {
		TEXT_FIELD(row, out, id);
		TEXT_FIELD(row, out, workspace_id);
		TEXT_FIELD(row, out, configuration_id);
		TEXT_FIELD(row, out, engine_spec);
		TEXT_FIELD(row, out, deps_digest);
	}
	json_decref(row);
	return counted(rc);
}

int
store_heartbeat_environment(struct store *st, const char *id,
    const char *token, double lease)
{
	return count(st, "heartbeat environment",
	    st->ops->sql->heartbeat_environment, "ssd", id, token, lease);
}

int
store_environment_ready(struct store *st, const char *id, const char *token,
    const char *python, const char *pyver, const char *engver)
{
	return count(st, "environment ready", st->ops->sql->environment_ready,
	    "sssss", id, token, python, pyver, engver);
}

int
store_environment_failed(struct store *st, const char *id, const char *token,
    const char *error, double base, double max, long *charged)
{
	struct store_stmt t[2];
	int rc;

	*charged = 0;
	t[0].sql = st->ops->sql->environment_failed;
	t[0].values = json_pack("[sss?]", id, token, error);
	t[0].owned = 0;
	t[1].sql = st->ops->sql->charge_runs;
	t[1].values = json_pack("[ffss?]", base, max, id, error);
	t[1].owned = 0;
	rc = st->ops->guarded(st, "environment failed", t, 2, charged);
	json_decref(t[0].values);
	json_decref(t[1].values);
	return counted(rc);
}

int
store_environment_requeue(struct store *st, const char *id, const char *error)
{
	return count(st, "requeue environment",
	    st->ops->sql->environment_requeue, "ss", id, error);
}

int
store_environment_touch(struct store *st, const char *id)
{
	return count(st, "touch environment", st->ops->sql->environment_touch,
	    "s", id);
}

/*
 * What a claim ahead is at: asked for the next success; done, with the
 * run (or none) waiting for store_claim_run; unsure, when the connection
 * went during the success, so that the claim may have committed unseen.
 */
enum { AHEAD_NONE, AHEAD_ASKED, AHEAD_DONE, AHEAD_UNSURE };

int
store_claim_ahead(struct store *st, const char *token, double lease)
{
	if (token == NULL) {
		if (st->ahead.state == AHEAD_ASKED)
			st->ahead.state = AHEAD_NONE;
		return 0;
	}
	if (st->ops->guarded_claim == NULL || st->ahead.off ||
	    st->ahead.state != AHEAD_NONE)
		return 0;
	snprintf(st->ahead.token, sizeof(st->ahead.token), "%s", token);
	st->ahead.lease = lease;
	st->ahead.state = AHEAD_ASKED;
	return 1;
}

int
store_claimed_ahead(struct store *st, char *token, size_t len, int *found)
{
	if (st->ahead.state != AHEAD_DONE)
		return 0;
	snprintf(token, len, "%s", st->ahead.token);
	if (found != NULL)
		*found = st->ahead.row != NULL;
	return 1;
}

/*
 * Gives back a claim made ahead that will not be acted on, or one that
 * may have been made unseen; the run loses no attempt.  1 when a run was
 * given back, 0 when there was none, or the failure (the lease then
 * gives it back).
 */
static int
ahead_release(struct store *st, const char *error)
{
	char id[64];
	int rc = 0;

	if (st->ahead.state == AHEAD_UNSURE)
		rc = store_release_claim(st, 0, st->ahead.token, error, id);
	else if (st->ahead.state == AHEAD_DONE && st->ahead.row != NULL)
		rc = store_run_finish(st, text_of(st->ahead.row, "id"),
		    st->ahead.token, FINISH_RELEASE, 0, error, 0);
	if (rc >= 0 || st->ahead.state == AHEAD_DONE) {
		json_decref(st->ahead.row);
		st->ahead.row = NULL;
		st->ahead.state = AHEAD_NONE;
	}
	return rc;
}

int
store_release_ahead(struct store *st, const char *error)
{
	/* A worker stopped before it was connected has none. */
	if (st == NULL)
		return 0;
	return ahead_release(st, error);
}

int
store_claim_run(struct store *st, const char *token, double lease,
    struct run_claim *out)
{
	json_t *row = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (st->ahead.state == AHEAD_UNSURE)
		ahead_release(st, NULL);
	if (st->ahead.state == AHEAD_DONE &&
	    strcmp(token, st->ahead.token) == 0) {
		/* Claimed with the last success: no round trip. */
		row = st->ahead.row;
		st->ahead.row = NULL;
		st->ahead.state = AHEAD_NONE;
		rc = row != NULL;
	} else
		rc = st->ops->claim_run(st, token, lease, &row);
	if (rc == 1) {
		TEXT_FIELD(row, out, id);
		TEXT_FIELD(row, out, workspace_id);
		TEXT_FIELD(row, out, configuration_id);
		TEXT_FIELD(row, out, input_document_id);
		TEXT_FIELD(row, out, engine_spec);
		TEXT_FIELD(row, out, deps_digest);
		TEXT_FIELD(row, out, started_at);
		TEXT_FIELD(row, out, env_id);
		TEXT_FIELD(row, out, env_python);
		out->attempt_count = (long)number_of(row, "attempt_count");
		out->max_attempts = (long)number_of(row, "max_attempts");
		out->run_options = text_dup(row, "run_options");
		out->input_sheet_names = text_dup(row, "input_sheet_names");
		out->waited = number_of(row, "waited_ms") / 1000.0;
		if ((out->doc_read = json_object_get(row, "doc_found") !=
		    NULL)) {
			out->doc_found = number_of(row, "doc_found") != 0;
			out->doc_stored_uri = text_dup(row,
			    "doc_stored_uri");
			out->doc_original_filename = text_dup(row,
			    "doc_original_filename");
		}
	}
	json_decref(row);
	return counted(rc);
}

void
store_run_claim_free(struct run_claim *c)
{
	free(c->run_options);
	free(c->input_sheet_names);
	free(c->doc_stored_uri);
	free(c->doc_original_filename);
	c->run_options = c->input_sheet_names = NULL;
	c->doc_stored_uri = c->doc_original_filename = NULL;
}

int
store_heartbeat_run(struct store *st, const char *id, const char *token,
    double lease)
{
	return count(st, "heartbeat run", st->ops->sql->heartbeat_run, "ssd",
	    id, token, lease);
}

int
store_get_document(struct store *st, const char *id, struct document *d)
{
	json_t *a, *row;
	char u[37];

	memset(d, 0, sizeof(*d));
	/* An id that is no UUID names no document. */
	if (util_uuid_canon(id, u) == -1)
		return 0;
	if ((a = rows(st, "document", st->ops->sql->document, "s", u)) ==
	    NULL)
		return st->dead ? STORE_DEAD : -1;
	row = json_array_get(a, 0);
	d->stored_uri = text_dup(row, "stored_uri");
	d->original_filename = text_dup(row, "original_filename");
	json_decref(a);
	return d->stored_uri != NULL;
}

void
store_document_free(struct document *d)
{
	free(d->stored_uri);
	free(d->original_filename);
	d->stored_uri = d->original_filename = NULL;
}

size_t
store_rows_per_insert(size_t max_params, size_t ncols)
{
	size_t per = ncols > 0 && max_params > 1 ?
	    (max_params - 1) / ncols : 0;

	return per > 0 ? per : 1;
}

void
store_renumber(struct buf *out, const char *sql, const char *param,
    size_t first)
{
	size_t len = strlen(param);
	const char *q;
	char *end;

	while ((q = strstr(sql, param)) != NULL) {
		buf_add(out, sql, (size_t)(q - sql) + len);
		sql = q + len;
		if (*sql >= '0' && *sql <= '9') {
			buf_printf(out, "%lu", strtoul(sql, &end, 10) + first -
			    1);
			sql = end;
		}
	}
	buf_addstr(out, sql);
}

void
store_insert_sql(struct buf *out, const char *param, const char *run_id,
    const char *table, const char *const *cols, size_t nrows)
{
	size_t i, k, n = 1;

	buf_printf(out, "INSERT INTO %s (run_id", table);
	for (k = 0; cols[k] != NULL; k++)
		buf_printf(out, ", %s", cols[k]);
	buf_addstr(out, ") VALUES ");
	for (i = 0; i < nrows; i++) {
		buf_printf(out, "%s(%s", i > 0 ? ", " : "", run_id);
		for (k = 0; cols[k] != NULL; k++)
			buf_printf(out, ", %s%zu", param, ++n);
		buf_addstr(out, ")");
	}
}

/* The statements of a transaction as they are put together. */
struct stmts {
	struct store_stmt	*v;
	size_t			 n, cap;
};

static json_t *
stmts_add(struct stmts *s, const char *sql, int owned)
{
	if (s->n == s->cap) {
		s->cap = s->cap > 0 ? 2 * s->cap : 8;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n].sql = owned ? xstrdup(sql) : sql;
	s->v[s->n].owned = owned;
	s->v[s->n].values = json_array();
	return s->v[s->n++].values;
}

static void
stmts_free(struct stmts *s)
{
	size_t i;

	for (i = 0; i < s->n; i++) {
		if (s->v[i].owned)
			free((char *)s->v[i].sql);
		json_decref(s->v[i].values);
	}
	free(s->v);
}

/*
 * Adds the INSERTs of one result table's rows: as many rows to a
 * statement as the backend's parameters allow, or all of them as one
 * JSON value where the backend reads rows from JSON.
 */
static void
add_inserts(struct store *st, struct stmts *s, const char *table,
    const char *const *cols, json_t *rows, const char *id)
{
	size_t ncols, per, total = json_array_size(rows), first, i, k, n;
	struct buf sql;
	json_t *vals;

	buf_init(&sql);
	if (st->ops->insert_json_sql != NULL) {
		char *text = json_dumps(rows, JSON_COMPACT);

		if (text == NULL)
			fatalx("cannot write result rows as JSON");
		st->ops->insert_json_sql(&sql, table, cols);
		vals = stmts_add(s, buf_str(&sql), 1);
		json_array_append_new(vals, json_string(id));
		json_array_append_new(vals, json_string(text));
		free(text);
		buf_free(&sql);
		return;
	}
	for (ncols = 0; cols[ncols] != NULL; ncols++)
		;
	per = store_rows_per_insert(st->max_params, ncols);
	for (first = 0; first < total; first += n) {
		n = total - first < per ? total - first : per;
		buf_reset(&sql);
		store_insert_sql(&sql, st->ops->param, st->ops->run_id_param,
		    table, cols, n);
		vals = stmts_add(s, buf_str(&sql), 1);
		json_array_append_new(vals, json_string(id));
		for (i = 0; i < n; i++)
			for (k = 0; k < ncols; k++) {
				json_t *v = json_object_get(json_array_get(
				    rows, first + i), cols[k]);

				json_array_append(vals, v != NULL ? v :
				    json_null());
			}
	}
	buf_free(&sql);
}

/*
 * A success that claims the next run too (store_claim_ahead).  Should
 * that fail for another reason than the connection, the claim may be
 * what failed: the success is written alone, and no claim is made ahead
 * again on this connection.
 */
static int
succeeded_claim(struct store *st, struct stmts *s)
{
	json_t *row = NULL;
	int rc, looked = 0;

	rc = st->ops->guarded_claim(st, "run succeeded", s->v, s->n,
	    st->ahead.token, st->ahead.lease, &row, &looked);
	st->ahead.state = AHEAD_NONE;
	if (rc == 1 && looked) {
		st->ahead.state = AHEAD_DONE;
		st->ahead.row = row;
	} else if (rc == STORE_DEAD)
		st->ahead.state = AHEAD_UNSURE;
	else if (rc < 0) {
		log_notice("%s; the next run is claimed on its own from now on",
		    st->err);
		st->ahead.off = 1;
		rc = st->ops->guarded(st, "run succeeded", s->v, s->n, NULL);
	}
	return rc;
}

/*
 * A run's success as one transaction: its row, guarded by the claim,
 * then, when there are results, the rows of an earlier success cleared
 * and the new ones inserted.  Either all of it is written or nothing.
 */
int
store_run_succeeded(struct store *st, const char *id, const char *token,
    const char *output_path, json_t *results)
{
	static const char *const tables[3] = {
		"run_metrics", "run_fields", "run_table_columns"
	};
	const struct store_sql *sql = st->ops->sql;
	struct stmts s = { NULL, 0, 0 };
	json_t *vals, *rows;
	int i, rc;

	probe_result_columns(st);
	vals = stmts_add(&s, results != NULL ? sql->run_succeeded_replacing :
	    sql->run_succeeded, 0);
	json_array_append_new(vals, json_string(id));
	json_array_append_new(vals, json_string(token));
	json_array_append_new(vals, output_path != NULL ?
	    json_string(output_path) : json_null());
	for (i = 0; results != NULL && i < 3; i++)
		if (sql->clear_results[i] != NULL)
			json_array_append_new(stmts_add(&s,
			    sql->clear_results[i], 0), json_string(id));
	for (i = 0; results != NULL && i < 3; i++) {
		rows = json_object_get(results, tables[i]);
		if (json_is_object(rows)) {
			/* run_metrics: one row, given as an object */
			rows = json_array();
			json_array_append(rows, json_object_get(results,
			    tables[i]));
		} else
			json_incref(rows);
		add_inserts(st, &s, tables[i], store_result_columns(st, i),
		    rows, id);
		json_decref(rows);
	}
	rc = st->ahead.state == AHEAD_ASKED ? succeeded_claim(st, &s) :
	    st->ops->guarded(st, "run succeeded", s.v, s.n, NULL);
	stmts_free(&s);
	return counted(rc);
}

int
store_run_finish(struct store *st, const char *id, const char *token,
    enum run_finish how, int exit_code, const char *error, double delay)
{
	const struct store_sql *sql = st->ops->sql;

	switch (how) {
	case FINISH_RETRY:
		return count(st, "retry run", sql->run_retry, "ssds", id, token,
		    delay, error);
	case FINISH_RELEASE:
		return count(st, "release run", sql->run_release, "ssds", id,
		    token, delay, error);
	case FINISH_FAILED:
		break;
	}
	return count(st, "fail run", sql->run_fail, "sssi", id, token, error,
	    (long long)exit_code);
}

int
store_sweep(struct store *st, double base, double max,
    struct sweep_counts *out)
{
	const struct store_sql *sql = st->ops->sql;
	json_t *a, *row;
	size_t i;
	long n;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	st->may_stop = 1;
	if ((a = rows(st, "sweep", sql->sweep_runs, "dd", base, max)) ==
	    NULL)
		rc = st->dead ? STORE_DEAD : -1;
	json_array_foreach(a, i, row) {
		n = json_object_get(row, "n") != NULL ? (long)number_of(row,
		    "n") : 1;
		if (strcmp(text_of(row, "status"), "failed") == 0)
			out->runs_failed += n;
		else
			out->runs_requeued += n;
	}
	json_decref(a);
	if (rc == 0 && (rc = count(st, "sweep", sql->sweep_environments,
	    "")) >= 0) {
		out->envs_requeued = rc;
		rc = 0;
	}
	st->may_stop = 0;
	return rc;
}

/*
 * Releases the claim of a worker that died: the attempt counts (the run
 * may be what killed it), so the run is queued again after its backoff,
 * or fails when it has no attempts left.  Guarded by the dead worker's
 * token, so a claim that moved on is left alone.
 */
int
store_run_abandon(struct store *st, const char *id, const char *token,
    const char *error, double base, double max)
{
	return count(st, "abandon run", st->ops->sql->run_abandon, "ddsss",
	    base, max, id, error, token);
}

/* Puts an environment whose builder went away back in the queue. */
int
store_environment_abandon(struct store *st, const char *id, const char *token,
    const char *error)
{
	return count(st, "abandon environment",
	    st->ops->sql->environment_abandon, "sss", id, token, error);
}

/*
 * Releases the claim a worker made with token and died before it had
 * recorded which row it got.  It cannot have begun to work on it, so a
 * run gets back the attempt the claim counted and is due at once, and
 * an environment is queued again.  Returns 1 with the row's id in id
 * (64 bytes), or 0 when no row is held with the token: the claim never
 * committed, or has been released since.
 */
/* 1 with the id (64 bytes) of what token holds, 0 without one. */
static int
claimed_with(struct store *st, int env, const char *token, char *id)
{
	json_t *a;
	const char *v;

	if ((a = rows(st, "claim lookup", env ?
	    st->ops->sql->environment_claimed_with :
	    st->ops->sql->run_claimed_with, "s", token)) == NULL)
		return st->dead ? STORE_DEAD : -1;
	v = json_string_value(json_object_get(json_array_get(a, 0), "id"));
	if (v != NULL)
		snprintf(id, 64, "%s", v);
	json_decref(a);
	return v != NULL;
}

int
store_release_claim(struct store *st, int env, const char *token,
    const char *error, char *id)
{
	int rc;

	id[0] = '\0';
	if ((rc = claimed_with(st, env, token, id)) <= 0)
		return rc;
	if (env)
		return store_environment_abandon(st, id, token, error);
	return store_run_finish(st, id, token, FINISH_RELEASE, 0, error, 0);
}

/*
 * Takes or renews the lease called name for holder.  Returns 1 when the
 * caller holds it, 0 when someone else does.
 */
int
store_singleton(struct store *st, const char *name, const char *holder,
    double lease)
{
	int n;

	n = changed(st, "lease", st->ops->sql->singleton, "ssd", name, holder,
	    lease);
	if (n == -1 && st->fail == STORE_FAIL_CONSTRAINT)
		return 0;
	return counted(n < 0 ? n : n == 1);
}

/*
 * A host says it is alive: its row "host:ID" in worker_leases holds info
 * (JSON) and expires after ttl seconds unless said again.  Only the host
 * itself writes its row.
 */
int
store_host_beat(struct store *st, const char *name, const char *info,
    double ttl)
{
	return count(st, "host", st->ops->sql->host_beat, "ssd", name, info,
	    ttl);
}

/* The hosts' rows: name, holder (the info), expires_at and state. */
json_t *
store_list_hosts(struct store *st)
{
	return rows(st, "list hosts", st->ops->sql->list_hosts, "");
}

/*
 * Deletes the rows of cold environments that no queued or running run
 * needs (or, with dry_run, only lists them) and returns them as an array
 * of objects (id, workspace_id, configuration_id, deps_digest), so that
 * the caller removes their directories after the rows are gone.
 */
json_t *
store_gc_environments(struct store *st, long ttl_days, int dry_run)
{
	json_t *found, *gone, *row;
	size_t i;
	int n;

	if (ttl_days > 365000L)
		ttl_days = 365000L;
	st->may_stop = 1;
	found = rows(st, "gc environments", st->ops->sql->gc_candidates, "i",
	    (long long)ttl_days);
	if (found == NULL || dry_run) {
		st->may_stop = 0;
		return found;
	}
	/* Each goes by a statement that decides again: a run queued
	 * meanwhile keeps its environment. */
	gone = json_array();
	json_array_foreach(found, i, row) {
		n = count(st, "gc environments", st->ops->sql->gc_delete, "is",
		    (long long)ttl_days, json_string_value(json_object_get(row,
		    "id")));
		if (n < 0) {
			json_decref(gone);
			gone = NULL;
			break;
		}
		if (n > 0)
			json_array_append(gone, row);
	}
	st->may_stop = 0;
	json_decref(found);
	return gone;
}

/*
 * 1 when the run is finished (succeeded, failed or cancelled) and
 * completed more than ttl_days ago, or no longer exists; 0 otherwise.
 */
int
store_run_finished_before(struct store *st, const char *id, long ttl_days)
{
	json_t *a, *v;
	char u[37];
	int rc;

	/* A directory that is not named by a UUID belongs to no run. */
	if (util_uuid_canon(id, u) == -1)
		return 2;
	if (ttl_days > 365000L)
		ttl_days = 365000L;
	if ((a = rows(st, "run age", st->ops->sql->run_finished_before, "si",
	    u, (long long)ttl_days)) == NULL)
		return st->dead ? STORE_DEAD : -1;
	if (json_array_size(a) == 0)
		rc = 2;
	else {
		v = json_object_get(json_array_get(a, 0), "v");
		rc = json_is_true(v) || (json_is_integer(v) &&
		    json_integer_value(v) != 0);
	}
	json_decref(a);
	return rc;
}

const char *const run_statuses[RUN_STATUSES] = {
	"queued", "running", "succeeded", "failed", "cancelled"
};

static void
queue_stats_add(struct queue_stats *q, const char *status, long n,
    long due, double oldest)
{
	size_t i;

	for (i = 0; status != NULL && i < RUN_STATUSES; i++)
		if (strcmp(status, run_statuses[i]) == 0)
			q->runs[i] += n;
	q->due += due;
	if (oldest > q->oldest_due)
		q->oldest_due = oldest;
}

/*
 * The rows of a statement that only looks, which a stop may cut short
 * (the worker is idle when it asks).
 */
static json_t *
look(struct store *st, const char *what, const char *sql)
{
	json_t *a;

	st->may_stop = 1;
	a = rows(st, what, sql, "");
	st->may_stop = 0;
	return a;
}

int
store_queue_stats(struct store *st, struct queue_stats *q)
{
	json_t *a, *row;
	size_t i;

	memset(q, 0, sizeof(*q));
	if ((a = look(st, "queue stats", st->ops->sql->queue_stats)) == NULL)
		return st->dead ? STORE_DEAD : -1;
	json_array_foreach(a, i, row)
		queue_stats_add(q, json_string_value(json_object_get(row,
		    "status")), (long)number_of(row, "n"),
		    (long)number_of(row, "due"),
		    number_of(row, "oldest_ms") / 1000.0);
	json_decref(a);
	return 0;
}

int
store_pending(struct store *st, long *count)
{
	json_t *a;

	if ((a = look(st, "pending", st->ops->sql->pending)) == NULL)
		return st->dead ? STORE_DEAD : -1;
	*count = (long)number_of(json_array_get(a, 0), "n");
	json_decref(a);
	return 0;
}

/*
 * Seconds until the earliest queued run becomes due (a large number when
 * none is queued), so that an idle worker need not poll to find it.
 */
int
store_next_due(struct store *st, double *seconds)
{
	json_t *a, *ms;

	if ((a = look(st, "next due", st->ops->sql->next_due)) == NULL)
		return st->dead ? STORE_DEAD : -1;
	ms = json_object_get(json_array_get(a, 0), "ms");
	*seconds = ms == NULL || json_is_null(ms) ? 1e9 :
	    number_of(json_array_get(a, 0), "ms") / 1000.0;
	json_decref(a);
	return 0;
}

/*
 * Waits up to timeout seconds for a sign of new work.  Backends that can
 * be told (PostgreSQL's NOTIFY) return 1 when they were; the others just
 * sleep and return 0.  A signal, or the descriptor of store_wake_on
 * becoming readable, ends the wait early.
 */
int
store_wait(struct store *st, double timeout)
{
	if (st->ops->wait != NULL)
		return st->ops->wait(st, timeout);
	store_pause(st, timeout);
	return 0;
}

/*
 * Names a descriptor that becomes readable when the caller wants every
 * wait of the store to end (the worker's stop pipe), or -1.  A signal
 * cuts a sleep short only when it arrives during the sleep; a readable
 * descriptor also ends the waits that begin after it.
 */
void
store_wake_on(struct store *st, int fd)
{
	st->wake_fd = fd;
}

/* Sleeps up to secs, or until the wake descriptor is readable. */
void
store_pause(struct store *st, double secs)
{
	struct pollfd pfd;

	if (secs <= 0)
		return;
	if (secs > 86400)
		secs = 86400;
	pfd.fd = st->wake_fd;
	pfd.events = POLLIN;
	pfd.revents = 0;
	(void)poll(&pfd, 1, (int)(secs * 1000) + 1);
}

/* Whether the backend is told of new work, so that polling can be rare. */
int
store_listens(struct store *st)
{
	return st->ops->wait != NULL;
}

int
store_wait_looks(struct store *st)
{
	return st->ops->wait_looks;
}

int
store_register(struct store *st, const char *ws, const char *cfg,
    char *ws_id, char *cfg_id)
{
	return counted(st->ops->register_names(st, ws, cfg, ws_id, cfg_id));
}

int
store_enqueue(struct store *st, const struct enqueue_req *req)
{
	const struct store_sql *sql = st->ops->sql;
	struct store_stmt t[3] = {
		{ sql->enqueue_document, NULL, 0 },
		{ sql->enqueue_configuration, NULL, 0 },
		{ sql->enqueue_run, NULL, 0 },
	};
	int rc;

	t[0].values = json_pack("[s?s?s?s?Is?s?s?]", req->document_id,
	    req->workspace_id, req->original_filename, req->content_type,
	    (json_int_t)req->document_size, req->document_sha256,
	    req->stored_uri, req->run_id);
	t[1].values = json_pack("[s?s?]", req->configuration_id,
	    req->content_digest);
	t[2].values = json_pack("[s?s?s?s?s?s?s?s?I]", req->run_id,
	    req->configuration_id, req->workspace_id, req->document_id,
	    req->input_sheet_names, req->engine_spec, req->deps_digest,
	    req->run_options, (json_int_t)req->max_attempts);
	rc = st->ops->guarded(st, "enqueue", t, 3, NULL);
	json_decref(t[0].values);
	json_decref(t[1].values);
	json_decref(t[2].values);
	if (rc == 0)
		snprintf(st->err, sizeof(st->err), "enqueue: the document's "
		    "row was not written");
	return counted(rc == 1 ? 0 : rc == 0 ? -1 : rc);
}

json_t *
store_list_runs(struct store *st, const char *status, long limit)
{
	return rows(st, "list runs", st->ops->sql->list_runs, "si", status,
	    (long long)(limit < 0 ? 0 : limit));
}

/*
 * Puts a finished run (succeeded, failed or cancelled) back in the queue
 * with fresh attempts.  Returns 1, or 0 when the run is not finished.
 */
int
store_run_requeue(struct store *st, const char *id)
{
	char u[37];

	if (util_uuid_canon(id, u) == -1)
		return 0;
	return count(st, "requeue run", st->ops->sql->run_requeue, "s", u);
}

/*
 * Cancels a queued or running run.  A worker running it loses its claim
 * at its next heartbeat and stops the engine.  Returns 1, or 0 when the
 * run was neither queued nor running.
 */
int
store_run_cancel(struct store *st, const char *id)
{
	char u[37];

	if (util_uuid_canon(id, u) == -1)
		return 0;
	return count(st, "cancel run", st->ops->sql->run_cancel, "s", u);
}

json_t *
store_list_environments(struct store *st)
{
	return rows(st, "list environments",
	    st->ops->sql->list_environments, "");
}

/*
 * Queues a ready or failed environment for a new build.  Returns 1, or 0
 * when it is being built (or does not exist).
 */
int
store_environment_rebuild(struct store *st, const char *id)
{
	char u[37];

	if (util_uuid_canon(id, u) == -1)
		return 0;
	return count(st, "rebuild environment",
	    st->ops->sql->environment_rebuild, "s", u);
}

/* The first row of a statement's answer, or JSON null. */
static json_t *
first_row(json_t *a)
{
	json_t *row = json_array_size(a) > 0 ? json_array_get(a, 0) :
	    json_null();

	json_incref(row);
	json_decref(a);
	return row;
}

/*
 * A run with its results: {"run": row or null, "metrics": row or null,
 * "fields": [rows], "table_columns": [rows]}; the result rows without
 * their run_id.  A text that is no UUID names no run.
 */
json_t *
store_show_run(struct store *st, const char *id)
{
	static const char *const parts[] = {
		"run", "metrics", "fields", "table_columns"
	};
	const struct store_sql *q = st->ops->sql;
	const char *sql[NELEM(parts)];
	json_t *out, *a, *row;
	char u[37];
	size_t k, i;

	sql[0] = q->show_run;
	sql[1] = q->show_metrics;
	sql[2] = q->show_fields;
	sql[3] = q->show_columns;
	out = json_object();
	for (k = 0; k < NELEM(parts); k++) {
		if (util_uuid_canon(id, u) == -1)
			a = json_array();
		else if ((a = rows(st, "show run", sql[k], "s", u)) == NULL) {
			json_decref(out);
			return NULL;
		}
		if (k > 0)
			json_array_foreach(a, i, row)
				json_object_del(row, "run_id");
		json_object_set_new(out, parts[k], k < 2 ? first_row(a) : a);
	}
	return out;
}
