/*
 * Executing one claimed run: check its inputs, copy the document into
 * the run directory, start the engine in the run's environment, record
 * its events, renew the lease while it works, and finish the run.
 *
 * Failures come in two kinds.  Deterministic ones (the document or the
 * configuration package is missing, a path from the database is hostile,
 * the engine rejects its command line) fail the run at once with exit
 * code 2: trying again cannot help.  Everything else is retried with
 * backoff until max_attempts.  A worker that loses its claim stops the
 * engine and writes nothing more for the run.
 */
#include <sys/file.h>
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dirent.h>

#include "arch.h"
#include "backoff.h"
#include "conf.h"
#include "evlog.h"
#include "log.h"
#include "paths.h"
#include "proc.h"
#include "results.h"
#include "priv.h"
#include "proctitle.h"
#include "rundir.h"
#include "sandbox.h"
#include "scoreboard.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define EXIT_DETERMINISTIC	2
#define RELEASE_DELAY		5.0
#define HEARTBEAT_MAX		3.0

struct job {
	struct worker		*w;
	struct run_claim	*claim;
	const char		*token;
	struct evlog		 log;
	char			 run_dir[PATH_MAX];
	char			 started_at[40];
	double			 t0;
	double			 last_good;	/* last heartbeat through */
	const char		*scope;
	const char		*envroot;
	const char		*cfgdir;
	int			 cancelled;	/* by an operator, seen */
	/* Why the engine could not be started, and whether that will last. */
	char			 not_started[PATH_MAX + 128];
	int			 not_started_lasts;
	int			 fresh;		/* its directory was made ahead */
	int			 used;		/* RUNDIR_* parts it prepared */
};

static int
job_heartbeat(void *arg)
{
	struct job *j = arg;
	int rc;

	rc = store_heartbeat_run(j->w->store, j->claim->id, j->token,
	    j->w->conf->lease_seconds);
	if (rc == -1 || rc == STORE_DEAD)
		log_warnx("run %s: heartbeat: %s", j->claim->id,
		    store_error(j->w->store));
	return rc < 0 ? -1 : rc == 1;
}

static void
job_line(void *arg, int stream, const char *line, size_t len, size_t full)
{
	struct job *j = arg;

	evlog_child_line(&j->log, j->scope, stream, line, len, full);
}

static size_t
job_line_limit(void *arg, const char *head, size_t len)
{
	struct job *j = arg;

	return evlog_line_limit(&j->log, head, len);
}

static void
emit_complete(struct job *j, const char *status, int exit_code,
    const char *error, const char *output_path)
{
	json_t *d;
	char done[40];

	iso8601_now(done, sizeof(done));
	d = json_pack("{s:s, s:{s:s, s:s, s:I}, s:i}", "status", status,
	    "execution", "started_at", j->started_at, "completed_at", done,
	    "duration_ms", (json_int_t)((now_mono() - j->t0) * 1000.0),
	    "exit_code", exit_code);
	if (error != NULL)
		json_object_set_new(d, "error_message", json_string(error));
	if (output_path != NULL)
		json_object_set_new(d, "output_path", json_string(output_path));
	sb_count_run(strcmp(status, "succeeded") == 0 ? SB_RUN_SUCCEEDED :
	    SB_RUN_FAILED, now_mono() - j->t0);
	/* Before run.complete: readers of the log stop there. */
	evlog_note_loss(&j->log);
	evlog_emit(&j->log, strcmp(status, "succeeded") == 0 ? "info" :
	    "error", "run.complete", strcmp(status, "succeeded") == 0 ?
	    "Run succeeded" : "Run failed", d);
}

/*
 * Whether the run this worker no longer holds was cancelled by an
 * operator, rather than taken back by the lease sweep.
 */
static int
was_cancelled(struct job *j)
{
	json_t *r;
	const char *status;

	if (j->cancelled)
		return 1;
	if ((r = store_show_run(j->w->store, j->claim->id)) == NULL)
		return 0;
	status = json_string_value(json_object_get(json_object_get(r, "run"),
	    "status"));
	j->cancelled = status != NULL && strcmp(status, "cancelled") == 0;
	json_decref(r);
	return j->cancelled;
}

static void
lost_claim(struct job *j)
{
	if (was_cancelled(j)) {
		sb_count_run(SB_RUN_CANCELLED, now_mono() - j->t0);
		log_notice("run %s: cancelled; engine stopped, results of "
		    "this attempt discarded", j->claim->id);
		evlog_emit(&j->log, "info", "run.cancelled", "The run was "
		    "cancelled; this attempt's results are discarded", NULL);
		return;
	}
	sb_count_run(SB_RUN_LOST, now_mono() - j->t0);
	log_warnx("run %s: claim lost; stopping without writing", j->claim->id);
	evlog_emit(&j->log, "warning", "run.lost_claim", "The claim on this "
	    "run was lost; this attempt's results are discarded", NULL);
}

/*
 * Calls a store operation again while it fails because the connection
 * is gone (an error of the statement itself is not retried): the claim
 * stays ours until the lease ends, so giving up early would waste the
 * engine's work.
 */
#define STORE_RETRY(j, call) ({						\
	int _rc, _tries = 0;						\
	double _end = now_mono() + (j)->w->conf->lease_seconds / 2;	\
	while ((_rc = (call)) < 0 && store_dead((j)->w->store) &&	\
	    !worker_quit && now_mono() < _end) {			\
		log_warnx("run %s: %s; retrying", (j)->claim->id,	\
		    store_error((j)->w->store));			\
		worker_pause(_tries < 5 ? 1 << _tries : 30,		\
		    &worker_quit);					\
		_tries++;						\
	}								\
	_rc;								\
})

/*
 * Ends an attempt that failed: again later while attempts are left and
 * the failure may pass, otherwise for good.
 */
static void
job_fail(struct job *j, int exit_code, const char *raw, int deterministic)
{
	const struct conf *cf = j->w->conf;
	struct run_claim *c = j->claim;
	struct buf text;
	const char *error;
	double delay;
	int rc, retry;

	/*
	 * Messages quote paths and names from the database and the engine:
	 * invalid UTF-8 in them would make the text column refuse the row.
	 */
	buf_init(&text);
	utf8_repair(raw, strlen(raw), &text);
	error = buf_str(&text);

	retry = !deterministic && c->attempt_count < c->max_attempts;
	delay = backoff_delay(cf->backoff_base, cf->backoff_max,
	    c->attempt_count);
	delay += jitter(delay / 10 < 1 ? delay / 10 : 1);
	rc = STORE_RETRY(j, store_run_finish(j->w->store, c->id,
	    j->token, retry ? FINISH_RETRY : FINISH_FAILED, exit_code,
	    error, delay));
	if (rc == 0) {
		lost_claim(j);
		goto out;
	}
	if (rc < 0) {
		log_warnx("run %s: cannot record the failure (%s); the lease "
		    "sweep will recover the run", c->id,
		    store_error(j->w->store));
		goto out;
	}
	if (retry) {
		char msg[96];

		sb_count_run(SB_RUN_RETRIED, now_mono() - j->t0);
		snprintf(msg, sizeof(msg), "Retry scheduled in %.1f s", delay);
		evlog_emit(&j->log, "error", "run.retry", msg, json_pack(
		    "{s:s, s:f, s:i, s:i}", "error_message", error,
		    "retry_in_seconds", delay, "exit_code", exit_code,
		    "attempt", (int)c->attempt_count));
		log_info("run %s: attempt %ld/%ld failed (%s); retry in "
		    "%.1f s", c->id, c->attempt_count, c->max_attempts, error,
		    delay);
	} else {
		emit_complete(j, "failed", exit_code, error, NULL);
		log_info("run %s: failed (%s)", c->id, error);
	}
out:
	buf_free(&text);
}

/* Puts the run back without using up its attempt. */
static void
job_release(struct job *j, const char *why, double delay)
{
	int rc;

	rc = STORE_RETRY(j, store_run_finish(j->w->store, j->claim->id,
	    j->token, FINISH_RELEASE, 0, why, delay));
	if (rc == 0)
		lost_claim(j);
	else if (rc < 0)
		log_warnx("run %s: cannot release it (%s); the lease sweep "
		    "will recover it", j->claim->id, store_error(j->w->store));
	else {
		sb_count_run(SB_RUN_RELEASED, now_mono() - j->t0);
		evlog_emit(&j->log, "warning", "run.released", why, NULL);
		log_info("run %s: released (%s)", j->claim->id, why);
	}
}

static int
is_regular(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static const char *
file_kind(mode_t m)
{
	if (S_ISDIR(m))
		return "a directory";
	if (S_ISFIFO(m))
		return "a FIFO";
	if (S_ISSOCK(m))
		return "a socket";
	if (S_ISCHR(m) || S_ISBLK(m))
		return "a device";
	return "not a regular file";
}

/*
 * Whether the document is a regular file inside the data directory; if
 * not, msg says what it is instead (a missing file is not the same as a
 * directory or a FIFO where the file should be), and transient whether
 * trying again may help.
 */
static int
document_check(const char *path, const char *base, char *msg, size_t len,
    int *transient)
{
	struct stat st;

	*transient = 0;
	if (stat(path, &st) == -1) {
		if (errno == ENOENT || errno == ENOTDIR)
			snprintf(msg, len, "Document file missing: %s", path);
		else {
			*transient = 1;
			snprintf(msg, len, "Document file %s cannot be read: "
			    "%s", path, strerror(errno));
		}
		return -1;
	}
	if (!path_within(base, path)) {
		snprintf(msg, len, "Document file %s lies outside the data "
		    "directory", path);
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(msg, len, "Document %s is %s, not a regular file",
		    path, file_kind(st.st_mode));
		return -1;
	}
	return 0;
}

/* A regular file itself, not a link to one: engine output is hostile. */
static int
is_plain_file(const char *p)
{
	struct stat st;

	return lstat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/*
 * The output file to record, relative to the run directory: the path the
 * engine reported when it lies inside the run directory, else
 * output/normalized.xlsx, else the first regular file under output/.
 */
static char *
find_output(struct job *j, json_t *payload)
{
	json_t *p = json_object_get(json_object_get(json_object_get(payload,
	    "outputs"), "normalized"), "path");
	char full[PATH_MAX], dir[PATH_MAX];
	size_t n = strlen(j->run_dir);
	struct dirent *de;
	char *out = NULL;
	DIR *d;

	if (json_is_string(p) && json_string_length(p) > 0) {
		const char *s = json_string_value(p);

		if (s[0] == '/')
			snprintf(full, sizeof(full), "%s", s);
		else
			snprintf(full, sizeof(full), "%s/%s", j->run_dir, s);
		if (is_regular(full) && path_within(j->run_dir, full)) {
			char real[PATH_MAX], rbase[PATH_MAX];

			if (realpath(full, real) != NULL &&
			    realpath(j->run_dir, rbase) != NULL) {
				n = strlen(rbase);
				return xstrdup(real + n + 1);
			}
		}
	}
	snprintf(full, sizeof(full), "%s/output/normalized.xlsx", j->run_dir);
	if (is_plain_file(full) && path_within(j->run_dir, full))
		return xstrdup("output/normalized.xlsx");
	snprintf(dir, sizeof(dir), "%s/output", j->run_dir);
	if ((d = opendir(dir)) == NULL)
		return NULL;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(full, sizeof(full), "%s/%s", dir, de->d_name);
		if (is_plain_file(full) && path_within(j->run_dir, full)) {
			out = xasprintf("output/%s", de->d_name);
			break;
		}
	}
	closedir(d);
	return out;
}

static char *
append_failure(const char *base, json_t *payload)
{
	json_t *m = json_object_get(json_object_get(json_object_get(payload,
	    "execution"), "failure"), "message");
	struct buf b;
	char *s;

	if (!json_is_string(m))
		return xstrdup(base);
	buf_init(&b);
	utf8_repair(json_string_value(m), json_string_length(m) > 500 ? 500 :
	    json_string_length(m), &b);
	s = xasprintf("%s: %s", base, buf_str(&b));
	buf_free(&b);
	return s;
}

/*
 * The result rows of the completion payload, fitted to their columns and
 * to max_result_rows; what was left out or changed is written to the
 * event log.
 */
static json_t *
map_results(struct job *j)
{
	struct results_report rep;
	json_t *results;

	results = results_map(j->log.completed,
	    (long)j->w->conf->max_result_rows, &rep);
	if (rep.duplicates > 0)
		evlog_emit(&j->log, "warning", "run.results.duplicates",
		    "Result rows with a key seen before were left out",
		    json_pack("{s:i}", "dropped", rep.duplicates));
	if (rep.adjusted != NULL)
		evlog_emit(&j->log, "warning", "run.results.adjusted",
		    "Result values that do not fit their columns were cut or "
		    "dropped", json_pack("{s:O, s:O}", "columns",
		    rep.adjusted, "rows_dropped", rep.rows_left_out != NULL ?
		    rep.rows_left_out : json_object()));
	if (rep.capped > 0) {
		log_warnx("run %s: %ld result rows beyond max_result_rows "
		    "(%ld) left out", j->claim->id, rep.capped, rep.max_rows);
		evlog_emit(&j->log, "warning", "run.results.capped",
		    "Result rows beyond max_result_rows were left out",
		    json_pack("{s:I, s:I, s:I}", "max_result_rows",
		    (json_int_t)rep.max_rows, "stored", (json_int_t)rep.rows,
		    "left_out", (json_int_t)rep.capped));
	}
	results_report_free(&rep);
	return results;
}


/* One part of the run's directory, empty, in out. */
static int
prepare_dir(struct job *j, int part, char *out, size_t len)
{
	const char *sub = part == RUNDIR_INPUT ? "input" :
	    part == RUNDIR_OUTPUT ? "output" : "tmp";

	snprintf(out, len, "%s/%s", j->run_dir, sub);
	j->used |= part;
	/* A directory made ahead has it, empty. */
	if (j->fresh)
		return 0;
	/* Nothing from an earlier attempt may be taken for this one's. */
	if (rm_rf(out) == -1 || mkdir_p(out, 0750) == -1 ||
	    priv_engine_share(out, part == RUNDIR_INPUT ? 02750 : 02770) == -1)
		return -1;
	return 0;
}

/*
 * What the engine may reach besides the system (sandbox.c): it reads its
 * environment, its configuration package, the engine's source when that
 * is a local directory (an editable install imports from there), the
 * paths named in engine_command, and the run's input; it
 * writes only the run's output and temporary directories.  Returns -1
 * with a reason in msg, -2 when a grant would reach the daemon's own
 * files.
 */
static int
run_sandbox(struct job *j, struct sandbox *sb, char *msg, size_t len)
{
	const struct conf *cf = j->w->conf;
	const char *spec = j->claim->engine_spec[0] != '\0' ?
	    j->claim->engine_spec : cf->engine_spec;
	char path[PATH_MAX], word[PATH_MAX], **words;
	const char *fail = NULL;
	size_t i;

	if (sandbox_begin(sb) == -1) {
		snprintf(msg, len, "cannot make the engine's sandbox: %s",
		    strerror(errno));
		return -1;
	}
	if (sb->fd == -1)
		return 0;
	if (sandbox_allow(sb, j->envroot, SANDBOX_READ) == -1)
		fail = j->envroot;
	else if (sandbox_allow(sb, j->cfgdir, SANDBOX_READ) == -1)
		fail = j->cfgdir;
	if (fail == NULL && spec[0] == '/' && is_dir(spec) &&
	    sandbox_allow(sb, spec, SANDBOX_READ) == -1)
		fail = spec;
	/* The operator's engine_command may name a program or a script. */
	words = argv_split(cf->engine_command);
	for (i = 0; fail == NULL && words[i] != NULL; i++) {
		if (words[i][0] != '/')
			continue;
		snprintf(path, sizeof(path), "%s", words[i]);
		if (!is_dir(path))
			*strrchr(path, '/') = '\0';
		if (sandbox_allow(sb, path[0] != '\0' ? path : "/",
		    SANDBOX_READ) == -1) {
			/* The words are freed below; the name is kept. */
			snprintf(word, sizeof(word), "%s", words[i]);
			fail = word;
		}
	}
	argv_free(words);
	/* A validation has neither input nor output. */
	snprintf(path, sizeof(path), "%s/input", j->run_dir);
	if (fail == NULL && (j->used & RUNDIR_INPUT) &&
	    sandbox_allow(sb, path, SANDBOX_READ) == -1)
		fail = "the input directory";
	snprintf(path, sizeof(path), "%s/output", j->run_dir);
	if (fail == NULL && (j->used & RUNDIR_OUTPUT) &&
	    sandbox_allow(sb, path, SANDBOX_WRITE) == -1)
		fail = "the output directory";
	snprintf(path, sizeof(path), "%s/tmp", j->run_dir);
	if (fail == NULL && sandbox_allow(sb, path, SANDBOX_WRITE) == -1)
		fail = "the temporary directory";
	if (fail != NULL) {
		int ours = errno == EPERM;

		snprintf(msg, len, "cannot open %s to the engine's sandbox: "
		    "%s", fail, ours ? "it holds the daemon's own files" :
		    strerror(errno));
		sandbox_end(sb);
		return ours ? -2 : -1;
	}
	return 0;
}

/* Runs the engine (or its validator) and returns its result. */
static void
run_child(struct job *j, const char *scope, char **argv,
    struct proc_result *res)
{
	const struct conf *cf = j->w->conf;
	struct proc_spec ps;
	struct sandbox sb;
	json_t *cmd = json_array();
	char bindir[PATH_MAX], start[64], done[64];
	char tmp[PATH_MAX], msg[PATH_MAX + 128], *tmpdir, *home;
	char *extra[] = { "PYTHONUNBUFFERED=1",
	    "PIP_DISABLE_PIP_VERSION_CHECK=1", "PIP_NO_INPUT=1",
	    "PIP_PROGRESS_BAR=off", NULL, NULL, NULL };
	char **env;
	size_t i;
	int r;

	/* Its own temporary directory, which is also its home. */
	if (prepare_dir(j, RUNDIR_TMP, tmp, sizeof(tmp)) == -1) {
		memset(res, 0, sizeof(*res));
		res->spawn_failed = 1;
		res->exit_code = 127;
		snprintf(j->not_started, sizeof(j->not_started), "cannot "
		    "make its temporary directory: %s", strerror(errno));
		evlog_emit(&j->log, "error", "run.sandbox", "Engine not "
		    "started", json_pack("{s:s}", "error", strerror(errno)));
		return;
	}
	if ((r = run_sandbox(j, &sb, msg, sizeof(msg))) < 0) {
		memset(res, 0, sizeof(*res));
		res->spawn_failed = 1;
		res->exit_code = 127;
		/*
		 * A grant that would open the daemon's own files to the
		 * engine is the configuration's doing: another attempt would
		 * be refused the same way.
		 */
		snprintf(j->not_started, sizeof(j->not_started), "%s", msg);
		j->not_started_lasts = r == -2;
		log_warnx("run %s: %s", j->claim->id, msg);
		evlog_emit(&j->log, "error", "run.sandbox", "Engine not "
		    "started", json_pack("{s:s}", "error", msg));
		return;
	}
	tmpdir = xasprintf("TMPDIR=%s", tmp);
	home = xasprintf("HOME=%s", tmp);
	extra[4] = tmpdir;
	extra[5] = home;

	for (i = 0; argv[i] != NULL; i++)
		json_array_append_new(cmd, json_string(argv[i]));
	snprintf(start, sizeof(start), "%s.start", scope);
	snprintf(done, sizeof(done), "%s.complete", scope);
	/* It works in its run's directory, whatever the daemon's is. */
	evlog_emit(&j->log, "info", start, "Engine started",
	    json_pack("{s:O, s:s}", "cmd", cmd, "cwd", j->run_dir));
	snprintf(bindir, sizeof(bindir), "%s", argv[0]);
	if (strrchr(bindir, '/') != NULL)
		*strrchr(bindir, '/') = '\0';
	env = proc_env(strchr(argv[0], '/') ? bindir : NULL, 0, extra);
	memset(&ps, 0, sizeof(ps));
	ps.argv = argv;
	ps.envp = env;
	ps.cwd = j->run_dir;
	ps.timeout = cf->run_timeout;
	/*
	 * Renew the lease every third of it, and at least every few seconds:
	 * a heartbeat that finds the run cancelled stops the engine, so an
	 * operator's cancel takes effect within seconds.
	 */
	ps.hb_interval = cf->lease_seconds / 3 < 1 ? 1 : cf->lease_seconds / 3;
	if (ps.hb_interval > HEARTBEAT_MAX)
		ps.hb_interval = HEARTBEAT_MAX;
	ps.lost_after = cf->lease_seconds * 0.9;
	ps.last_good = &j->last_good;
	ps.heartbeat = job_heartbeat;
	ps.on_line = job_line;
	ps.line_limit = job_line_limit;
	ps.arg = j;
	ps.max_line = (size_t)cf->max_event_line;
	ps.stop = &worker_quit;
	ps.sandbox = &sb;
	j->scope = scope;
	sb_set_step(scope);
	proc_run(&ps, res);
	sb_set_step(NULL);
	priv_engine_settle(j->run_dir);
	sandbox_end(&sb);
	free(tmpdir);
	free(home);
	/* An engine stopped because its run was cancelled did no wrong. */
	evlog_emit(&j->log, res->exit_code == 0 || (res->lost &&
	    was_cancelled(j)) ? "info" : "error", done, "Engine finished", json_pack("{s:O, s:i, s:b, s:f}", "cmd", cmd,
	    "exit_code", res->exit_code, "timed_out", res->timed_out,
	    "duration_seconds", res->duration));
	json_decref(cmd);
	argv_free(env);
}

/* The engine invocation prefix with {python} replaced. */
static char **
engine_argv(const struct conf *cf, const char *python, size_t room)
{
	char **pre = argv_split(cf->engine_command[0] != '\0' ?
	    cf->engine_command : "{python} -m ade_engine");
	char **v;
	size_t i, n = argv_len(pre);

	v = xcalloc(n + room + 1, sizeof(*v));
	for (i = 0; i < n; i++) {
		if (strcmp(pre[i], "{python}") == 0)
			v[i] = xstrdup(python);
		else
			v[i] = xstrdup(pre[i]);
	}
	argv_free(pre);
	return v;
}

static void
push(char **v, const char *s)
{
	size_t n = argv_len(v);

	v[n] = xstrdup(s);
	v[n + 1] = NULL;
}

static void
run_validate(struct job *j, const char *python, const char *cfgdir,
    struct run_options *o)
{
	struct proc_result res;
	char **argv, msg[128];
	int rc;

	argv = engine_argv(j->w->conf, python, 16);
	push(argv, "config");
	push(argv, "validate");
	push(argv, "--config-package");
	push(argv, cfgdir);
	push(argv, "--log-format");
	push(argv, "ndjson");
	push(argv, "--log-level");
	push(argv, o->log_level);
	run_child(j, "run.validate", argv, &res);
	argv_free(argv);
	if (res.lost) {
		lost_claim(j);
		return;
	}
	if (res.stopped) {
		job_release(j, "worker stopping", 0);
		return;
	}
	if (res.exit_code == 0) {
		rc = STORE_RETRY(j, store_run_succeeded(j->w->store,
		    j->claim->id, j->token, NULL, NULL));
		if (rc == 0)
			lost_claim(j);
		else if (rc > 0)
			emit_complete(j, "succeeded", 0, NULL, NULL);
		return;
	}
	if (res.spawn_failed && j->not_started[0] != '\0') {
		snprintf(msg, sizeof(msg), "Validator not started: %s",
		    j->not_started);
		job_fail(j, res.exit_code, msg, j->not_started_lasts);
		return;
	}
	snprintf(msg, sizeof(msg), "Validation failed (exit %d)",
	    res.exit_code);
	/*
	 * An invalid package (exit 1) and a usage error (exit 2) stay what
	 * they are; a timeout, a signal or an engine that could not be
	 * started (127) may not.
	 */
	job_fail(j, res.exit_code, msg, !res.timed_out && !res.spawn_failed &&
	    (res.exit_code == 1 || res.exit_code == EXIT_DETERMINISTIC));
}

/*
 * Checks the document's file and names, and copies it into the run's
 * input directory as in; out is the output directory.  0, or -1 with
 * the job failed.
 */
static int
copy_document(struct job *j, const struct document *doc, char *in,
    size_t inlen, char *out, size_t outlen)
{
	const struct conf *cf = j->w->conf;
	const struct run_claim *c = j->claim;
	char docpath[PATH_MAX], docbase[PATH_MAX];
	char msg[PATH_MAX + 64];
	const char *input;
	int transient;

	if (path_document(docpath, sizeof(docpath), cf->data_dir,
	    c->workspace_id, doc->stored_uri) == -1) {
		snprintf(msg, sizeof(msg), "Document %s has an unsafe "
		    "stored_uri", c->input_document_id);
		job_fail(j, EXIT_DETERMINISTIC, msg, 1);
		return -1;
	}
	snprintf(docbase, sizeof(docbase), "%s/workspaces", cf->data_dir);
	if (document_check(docpath, docbase, msg, sizeof(msg), &transient) ==
	    -1) {
		job_fail(j, transient ? 1 : EXIT_DETERMINISTIC, msg,
		    !transient);
		return -1;
	}
	input = doc->original_filename;
	if (input == NULL || input[0] == '\0')
		input = "input";
	else if (!path_filename_ok(input)) {
		snprintf(msg, sizeof(msg), "Document %s has an unsafe "
		    "original_filename", c->input_document_id);
		job_fail(j, EXIT_DETERMINISTIC, msg, 1);
		return -1;
	}
	if (prepare_dir(j, RUNDIR_INPUT, in, inlen) == -1 ||
	    prepare_dir(j, RUNDIR_OUTPUT, out, outlen) == -1) {
		snprintf(msg, sizeof(msg), "cannot prepare %s: %s", j->run_dir,
		    strerror(errno));
		job_fail(j, 1, msg, 0);
		return -1;
	}
	if (strlen(in) + strlen(input) + 2 > inlen) {
		job_fail(j, EXIT_DETERMINISTIC, "input path too long", 1);
		return -1;
	}
	strcat(in, "/");
	strcat(in, input);
	if (copy_file(docpath, in) == -1) {
		snprintf(msg, sizeof(msg), "cannot copy the document: %s",
		    strerror(errno));
		job_fail(j, 1, msg, 0);
		return -1;
	}
	return 0;
}

/*
 * The run's input: its document row (or what the claim brought of it),
 * then its file copied in (copy_document).  0, or -1 with the job
 * failed.
 */
static int
run_inputs(struct job *j, char *in, size_t inlen, char *out, size_t outlen)
{
	struct run_claim *c = j->claim;
	char msg[PATH_MAX + 64];
	struct document doc;
	int rc;

	if (c->doc_read) {
		/* The claim brought the row; doc takes its strings. */
		doc.stored_uri = c->doc_stored_uri;
		doc.original_filename = c->doc_original_filename;
		c->doc_stored_uri = c->doc_original_filename = NULL;
		rc = c->doc_found && doc.stored_uri != NULL;
	} else
		rc = STORE_RETRY(j, store_get_document(j->w->store,
		    c->input_document_id, &doc));
	if (rc < 0) {
		job_fail(j, EXIT_DETERMINISTIC, "cannot read the document row",
		    0);
		return -1;
	}
	if (rc == 0) {
		snprintf(msg, sizeof(msg), "Document not found: %s",
		    c->input_document_id);
		job_fail(j, EXIT_DETERMINISTIC, msg, 1);
		store_document_free(&doc);
		return -1;
	}
	rc = copy_document(j, &doc, in, inlen, out, outlen);
	store_document_free(&doc);
	return rc;
}

/* The engine's command line for the run (protocol: process file). */
static char **
run_argv(struct job *j, const char *python, const char *cfgdir,
    const struct run_options *o, const char *in, const char *out)
{
	char **argv;
	json_t *v;
	size_t i;

	argv = engine_argv(j->w->conf, python, 24 + 2 *
	    json_array_size(o->sheets) + json_array_size(o->extra_args));
	push(argv, "process");
	push(argv, "file");
	push(argv, "--input");
	push(argv, in);
	push(argv, "--output-dir");
	push(argv, out);
	push(argv, "--config-package");
	push(argv, cfgdir);
	push(argv, "--log-format");
	push(argv, "ndjson");
	push(argv, "--log-level");
	push(argv, o->log_level);
	if (o->active_sheet_only)
		push(argv, "--active-sheet-only");
	else
		json_array_foreach(o->sheets, i, v) {
			push(argv, "--input-sheet");
			push(argv, json_string_value(v));
		}
	json_array_foreach(o->extra_args, i, v)
		push(argv, json_string_value(v));
	return argv;
}

/*
 * Settles a run whose engine did not succeed, or whose results cannot
 * be read: 1 when it did (nothing done), 0 when the job is settled.
 */
static int
engine_succeeded(struct job *j, const struct proc_result *res)
{
	const struct conf *cf = j->w->conf;
	char msg[PATH_MAX + 64], *err;

	if (res->lost)
		lost_claim(j);
	else if (res->stopped)
		job_release(j, "worker stopping", 0);
	else if (res->timed_out) {
		snprintf(msg, sizeof(msg), "Run timed out after %g s",
		    cf->run_timeout);
		job_fail(j, PROC_EXIT_TIMEOUT, msg, 0);
	} else if (res->spawn_failed && j->not_started[0] != '\0') {
		snprintf(msg, sizeof(msg), "Engine not started: %s",
		    j->not_started);
		job_fail(j, res->exit_code, msg, j->not_started_lasts);
	} else if (res->spawn_failed || res->exit_code != 0) {
		snprintf(msg, sizeof(msg), res->exit_code ==
		    EXIT_DETERMINISTIC ? "Engine rejected its input (usage "
		    "error, exit %d)" : "Engine failed (exit %d)",
		    res->exit_code);
		err = append_failure(msg, j->log.completed);
		job_fail(j, res->exit_code, err,
		    res->exit_code == EXIT_DETERMINISTIC);
		free(err);
	} else if (j->log.completed == NULL &&
	    j->log.completed_error[0] != '\0') {
		/*
		 * The engine reported its results, but they cannot be read:
		 * the same engine and input would report them the same way,
		 * so the run fails at once, and says why.
		 */
		snprintf(msg, sizeof(msg), "Results not stored: %s",
		    j->log.completed_error);
		evlog_emit(&j->log, "error", "run.results.unreadable", msg,
		    NULL);
		job_fail(j, EXIT_DETERMINISTIC, msg, 1);
	} else
		return 1;
	return 0;
}

/* Stores the results of a run whose engine succeeded, and finishes it. */
static void
run_store_results(struct job *j, const struct proc_result *res)
{
	struct run_claim *c = j->claim;
	char msg[PATH_MAX + 64], *output_path;
	json_t *results = NULL;
	double t;
	int rc;

	if (j->log.completed != NULL)
		results = map_results(j);
	else {
		log_warnx("run %s: the engine succeeded without an "
		    "engine.run.completed event; no result rows", c->id);
		evlog_emit(&j->log, "warning", "run.results.missing_payload",
		    "The engine reported no engine.run.completed event", NULL);
	}
	output_path = find_output(j, j->log.completed);
	t = now_mono();
	rc = STORE_RETRY(j, store_run_succeeded(j->w->store, c->id, j->token,
	    output_path, results));
	t = now_mono() - t;
	if (rc == 0)
		lost_claim(j);
	else if (rc > 0) {
		emit_complete(j, "succeeded", 0, NULL, output_path);
		log_info("run %s: succeeded", c->id);
		/*
		 * Where the time went, and when (seconds since 1970) the
		 * spawn began; make bench reads these.
		 */
		log_debug("run %s: ms claim %.2f prepare %.2f spawn %.2f "
		    "engine %.2f reap %.2f finalize %.2f at %.6f", c->id,
		    c->claim_took * 1e3, (res->began - j->t0) * 1e3,
		    res->spawn * 1e3, res->until_exit * 1e3,
		    res->after_exit * 1e3, t * 1e3,
		    now_wall() - (now_mono() - res->began));
	} else {
		snprintf(msg, sizeof(msg), "storing the results failed: %s",
		    store_error(j->w->store));
		job_fail(j, 1, msg, 0);
	}
	json_decref(results);
	free(output_path);
}

/* A run: its input copied in, the engine, then its results stored. */
static void
run_process(struct job *j, const char *python, const char *cfgdir,
    struct run_options *o)
{
	char in[PATH_MAX], out[PATH_MAX], **argv;
	struct proc_result res;

	if (run_inputs(j, in, sizeof(in), out, sizeof(out)) == -1)
		return;
	argv = run_argv(j, python, cfgdir, o, in, out);
	run_child(j, "run.engine", argv, &res);
	argv_free(argv);
	if (engine_succeeded(j, &res))
		run_store_results(j, &res);
}

/* A venv this host can run: there, and an engine user's own. */
static int
venv_usable(const char *envdir)
{
	char python[PATH_MAX];

	snprintf(python, sizeof(python), "%s/.venv/bin/python", envdir);
	return access(python, X_OK) == 0 && priv_engine_owns(envdir);
}

/*
 * Marks the venv in use for as long as the run lasts: a shared lock on its
 * directory, which garbage collection must take exclusively before it
 * removes an old generation.  The descriptor is not inherited.
 */
static int
venv_hold(const char *envdir)
{
	int fd;

	if ((fd = open(envdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if (flock(fd, LOCK_SH) == -1) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The versions the environment's row records, when it can be read. */
static void
recorded_versions(struct store *st, const char *id, char **py, char **eng)
{
	json_t *rows, *row;
	size_t i;

	*py = *eng = NULL;
	if ((rows = store_list_environments(st)) == NULL)
		return;
	json_array_foreach(rows, i, row) {
		const char *rid = json_string_value(json_object_get(row, "id"));
		const char *p, *e;

		if (rid == NULL || strcmp(rid, id) != 0)
			continue;
		p = json_string_value(json_object_get(row, "python_version"));
		e = json_string_value(json_object_get(row, "engine_version"));
		*py = p != NULL ? xstrdup(p) : NULL;
		*eng = e != NULL ? xstrdup(e) : NULL;
		break;
	}
	json_decref(rows);
}

/*
 * The run's environment is ready, but this host has no venv for it (its
 * venvs_dir is its own, or was wiped; or the venv was made before
 * engine_user was set).  One worker of the host, under a lock file in
 * venvs_dir, builds the host's copy from what the row records; the row is
 * left alone, so that other hosts go on running the environment's runs.
 * The run goes back to the queue without using its attempt, for a host
 * that has the venv or for this one once its copy is there; a worker that
 * finds the lock taken puts its run back too and takes other work.  Should
 * the copy fail, the environment is queued for a build as a whole, whose
 * failure is accounted for as any build's.
 *
 * Returns 1 when the venv is there after all (the run goes on), else 0.
 */
static int
local_copy(struct job *j, const char *envdir, const char *gen)
{
	const struct conf *cf = j->w->conf;
	const struct run_claim *c = j->claim;
	struct env_claim ec;
	char lock[PATH_MAX], err[1024], *py, *eng;
	int fd;

	snprintf(lock, sizeof(lock), "%s/.locks", cf->venvs_root);
	if (mkdir_p(lock, 0750) == -1)
		log_warn("mkdir %s", lock);
	snprintf(lock + strlen(lock), sizeof(lock) - strlen(lock), "/%s.lock",
	    c->env_id);
	if ((fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0640)) == -1) {
		log_warn("run %s: open %s", c->id, lock);
		job_release(j, "Cannot lock this host's copy of the "
		    "environment", RELEASE_DELAY);
		return 0;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) == -1) {
		close(fd);
		job_release(j, "This host is building its copy of the "
		    "environment", RELEASE_DELAY);
		return 0;
	}
	if (venv_usable(envdir)) {
		close(fd);	/* another worker of the host just made it */
		return 1;
	}
	log_notice("run %s: environment %s has no venv on this host; "
	    "building this host's copy", c->id, c->env_id);
	job_release(j, "The environment has no venv on this host yet; "
	    "building one here", 0);
	memset(&ec, 0, sizeof(ec));
	snprintf(ec.id, sizeof(ec.id), "%s", c->env_id);
	snprintf(ec.workspace_id, sizeof(ec.workspace_id), "%s",
	    c->workspace_id);
	snprintf(ec.configuration_id, sizeof(ec.configuration_id), "%s",
	    c->configuration_id);
	snprintf(ec.engine_spec, sizeof(ec.engine_spec), "%s", c->engine_spec);
	snprintf(ec.deps_digest, sizeof(ec.deps_digest), "%s", c->deps_digest);
	recorded_versions(j->w->store, ec.id, &py, &eng);
	sb_set_claim(SB_CLAIM_NONE, NULL, NULL);
	sb_set_state(SB_BUILDING);
	proctitle_setstate("building", ec.id);
	if (job_hydrate_environment(j->w, &ec, gen, py, eng, err,
	    sizeof(err)) == -1 && !worker_quit) {
		log_warnx("environment %s: this host's copy failed (%s); "
		    "queueing the environment for a build", ec.id, err);
		store_environment_requeue(j->w->store, ec.id, err);
	}
	free(py);
	free(eng);
	close(fd);
	return 0;
}

/*
 * Marks the run's environment used, for garbage collection, which counts
 * in days: a worker that keeps running the same environment's runs does
 * it once a minute, not with a statement per run.
 */
#define TOUCH_EVERY	60.0

static void
touch_environment(struct worker *w, const struct run_claim *c)
{
	static char last_env[sizeof(c->env_id)];
	static double last_at;
	double now = now_mono();

	if (strcmp(last_env, c->env_id) == 0 && now - last_at < TOUCH_EVERY)
		return;
	if (store_environment_touch(w->store, c->env_id) < 0) {
		log_warnx("run %s: cannot touch environment: %s", c->id,
		    store_error(w->store));
		return;
	}
	snprintf(last_env, sizeof(last_env), "%s", c->env_id);
	last_at = now;
}

/*
 * The run's directory and its event log, opened with the run's start.
 * 0, or -1 with the job failed.
 */
static int
job_open_log(struct job *j)
{
	const struct conf *cf = j->w->conf;
	const struct run_claim *c = j->claim;
	char logdir[PATH_MAX];

	if (path_run_dir(j->run_dir, sizeof(j->run_dir), cf->data_dir,
	    c->workspace_id, c->id) == -1) {
		job_fail(j, EXIT_DETERMINISTIC, "run ids do not make a safe "
		    "path", 1);
		return -1;
	}
	snprintf(logdir, sizeof(logdir), "%s/logs", j->run_dir);
	/* One made ahead comes with its log there, empty. */
	j->fresh = rundir_take(j->w, j->run_dir);
	if (!j->fresh && mkdir_p(logdir, 0750) == -1)
		log_warn("mkdir %s", logdir);
	/*
	 * An engine user passes through to its run's directory, which is
	 * closed to it again when the run is over.
	 */
	priv_engine_reach(cf->data_dir, j->run_dir);
	if (priv_engine_share(j->run_dir, 0750) == -1)
		log_warn("chgrp %s", j->run_dir);
	strcat(logdir, "/events.ndjson");
	evlog_open(&j->log, logdir, json_pack("{s:s, s:s, s:s, s:s, s:i}",
	    "job_id", c->id, "workspace_id", c->workspace_id,
	    "configuration_id", c->configuration_id, "environment_id",
	    c->env_id, "attempt", (int)c->attempt_count),
	    (size_t)cf->max_log_size);
	j->log.max_completed = (size_t)(cf->max_completion_size >
	    cf->max_event_line ? cf->max_completion_size : cf->max_event_line);
	evlog_emit(&j->log, "info", "run.start", "Run started",
	    json_pack("{s:i, s:i, s:s}", "attempt", (int)c->attempt_count,
	    "max_attempts", (int)c->max_attempts, "worker", j->token));
	return 0;
}

/*
 * The environment's generation the row records, in envdir, held against
 * collection (the lock's descriptor in *held); a host without it makes
 * its own copy first.  0, or -1 with the job settled.
 */
static int
job_environment(struct job *j, char *envdir, size_t len, int *held)
{
	const struct conf *cf = j->w->conf;
	const struct run_claim *c = j->claim;
	char envroot[PATH_MAX], gen[GEN_SIZE];

	if (path_env_root(envroot, sizeof(envroot), cf->venvs_root,
	    c->workspace_id, c->configuration_id, c->deps_digest,
	    c->env_id) == -1) {
		job_fail(j, EXIT_DETERMINISTIC, "environment ids do not make "
		    "a safe path", 1);
		return -1;
	}
	/* The generation the row records, in its own directory. */
	path_gen_of(c->env_python, gen, sizeof(gen));
	snprintf(envdir, len, "%s%s%s", envroot, gen[0] ? "/" : "", gen);
	/*
	 * Held first, then looked at: collection cannot remove what this
	 * run found usable (it takes the lock exclusively before it removes).
	 */
	*held = venv_hold(envdir);
	if (*held != -1 && venv_usable(envdir))
		return 0;
	if (*held != -1)
		close(*held);
	*held = -1;
	if (!local_copy(j, envdir, gen))
		return -1;
	if ((*held = venv_hold(envdir)) == -1 || !venv_usable(envdir)) {
		job_release(j, "The environment's venv went away on this host",
		    RELEASE_DELAY);
		return -1;
	}
	return 0;
}

/*
 * The configuration package's directory: the data_dir copy, or the
 * snapshot the build kept of a package delivered as an archive.  0, or
 * -1 with the job failed.
 */
static int
job_config_dir(struct job *j, const char *envdir, char *cfgdir, size_t len)
{
	const struct conf *cf = j->w->conf;
	const struct run_claim *c = j->claim;
	char snap[PATH_MAX], msg[PATH_MAX + 64];

	if (path_config_dir(cfgdir, len, cf->data_dir, c->workspace_id,
	    c->configuration_id) == -1)
		cfgdir[0] = '\0';
	else if (access(cfgdir, F_OK) == -1) {
		snprintf(snap, sizeof(snap), "%s/config", envdir);
		if (access(snap, F_OK) == 0 &&
		    arch_package_root(snap, cfgdir, len) == -1)
			cfgdir[0] = '\0';
	}
	if (cfgdir[0] == '\0' || access(cfgdir, F_OK) == -1) {
		snprintf(msg, sizeof(msg), "Missing config package dir: %s",
		    cfgdir);
		job_fail(j, EXIT_DETERMINISTIC, msg, 1);
		return -1;
	}
	priv_engine_lend(cf->data_dir, cfgdir);
	return 0;
}

void
job_execute_run(struct worker *w, struct run_claim *c, const char *token)
{
	const struct conf *cf = w->conf;
	char envdir[PATH_MAX], python[PATH_MAX], cfgdir[PATH_MAX];
	struct run_options opts;
	struct job j;
	int held = -1, rc;

	memset(&j, 0, sizeof(j));
	j.w = w;
	j.claim = c;
	j.token = token;
	j.t0 = now_mono();
	/* The claim set the lease: it counts as a heartbeat. */
	j.last_good = j.t0;
	j.log.fd = -1;
	snprintf(j.started_at, sizeof(j.started_at), "%s", c->started_at);
	log_info("run %s: attempt %ld/%ld", c->id, c->attempt_count,
	    c->max_attempts);
	if (job_open_log(&j) == -1)
		return;
	run_options_parse(&opts, c->run_options, c->input_sheet_names,
	    cf->log_level);
	/*
	 * A directory made ahead keeps what this kind of run uses, taken
	 * out now, while the claim is surely this worker's: once the run is
	 * given back, another attempt may be using the directory.
	 */
	if (j.fresh)
		rundir_trim(j.run_dir, opts.dry_run ? 0 : opts.validate_only ?
		    RUNDIR_TMP : RUNDIR_INPUT | RUNDIR_OUTPUT | RUNDIR_TMP);
	if (job_environment(&j, envdir, sizeof(envdir), &held) == -1 ||
	    job_config_dir(&j, envdir, cfgdir, sizeof(cfgdir)) == -1)
		goto out;
	snprintf(python, sizeof(python), "%s/.venv/bin/python", envdir);
	j.envroot = envdir;
	j.cfgdir = cfgdir;
	touch_environment(w, c);
	if (opts.dry_run) {
		rc = STORE_RETRY(&j, store_run_succeeded(w->store, c->id,
		    token, NULL, NULL));
		if (rc == 0)
			lost_claim(&j);
		else if (rc > 0) {
			emit_complete(&j, "succeeded", 0, NULL, NULL);
			log_info("run %s: dry run succeeded", c->id);
		}
	} else if (opts.validate_only)
		run_validate(&j, python, cfgdir, &opts);
	else
		run_process(&j, python, cfgdir, &opts);
out:
	run_options_free(&opts);
	if (held != -1)
		close(held);
	if (priv_engine_unshare(j.run_dir) == -1)
		log_warn("chgrp %s", j.run_dir);
	evlog_close(&j.log);
}
