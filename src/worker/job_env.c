/*
 * Building an environment: a virtualenv per (workspace, configuration,
 * engine spec, deps digest).  Each build is a new generation, a directory
 * of its own in the environment's root whose interpreter the row records
 * (paths.c), so a rebuild never changes a venv that engines run from.  A
 * host that has no copy of the recorded generation builds one the same
 * way, without a claim and without touching the row.  The build happens
 * in a temporary directory next to its final place and is renamed into
 * place only when every step succeeded and the claim is still held, so a
 * half-built venv is never used, and a rebuild that fails or loses its
 * claim leaves the venv that runs are using alone.  One deadline
 * covers all steps.  A failure is recorded with its reason; the store
 * then charges the waiting runs one attempt each, so a broken
 * configuration ends its runs instead of holding them forever.
 *
 * The configuration package is normally the directory the API wrote
 * (config_packages/<cfg>/), installed editable.  When that directory is
 * missing and config_packages/<cfg>.zip or <cfg>.tar.gz exists instead,
 * the archive is extracted under limits into <build>/config and the
 * package installed from there without -e: the archive is a snapshot,
 * and an editable install would point into the temporary build
 * directory, which is renamed when the build succeeds.  The snapshot
 * stays in <generation>/config next to the venv.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "arch.h"
#include "conf.h"
#include "evlog.h"
#include "log.h"
#include "paths.h"
#include "proc.h"
#include "priv.h"
#include "sandbox.h"
#include "scoreboard.h"
#include "store.h"
#include "util.h"
#include "worker.h"

#define PROBE_TIMEOUT	60.0

/* Limits on what a configuration package archive may expand to. */
#define CONFIG_MAX_ENTRIES	5000
#define CONFIG_MAX_BYTES	(200ULL << 20)
#define CONFIG_MAX_ENTRY_BYTES	(100ULL << 20)

struct build {
	struct worker		*w;
	const struct env_claim	*claim;
	const char		*token;
	struct evlog		 log;
	const char		*scope;
	double			 started;
	double			 deadline;
	double			 last_good;	/* last heartbeat through */
	char			**env;
	struct buf		 out;	/* a probe's stdout */
	int			 capture;
	struct sandbox		 sb;
	/* Where the build happens and where it goes (build_prepare). */
	char			 root[PATH_MAX];	/* the environment's */
	char			 tmp[PATH_MAX];		/* the build's tree */
	char			 target[PATH_MAX];	/* its generation */
	char			 python[PATH_MAX];	/* in target, after */
	char			 venv[PATH_MAX];	/* in tmp */
	char			 pkg[PATH_MAX];		/* the package */
	int			 editable;	/* pkg is the data_dir copy */
	/* What it came to. */
	int			 failed;
	char			 err[1024];
	char			*pyver;
	char			*engver;
};

static int
build_heartbeat(void *arg)
{
	struct build *b = arg;
	int rc;

	if (b->token == NULL)
		return 1;	/* a local copy: no claim to renew */
	rc = store_heartbeat_environment(b->w->store, b->claim->id, b->token,
	    b->w->conf->lease_seconds);
	if (rc == -1)
		log_warnx("environment %s: heartbeat: %s", b->claim->id,
		    store_error(b->w->store));
	return rc < 0 ? -1 : rc == 1;
}

static void
build_line(void *arg, int stream, const char *line, size_t len, size_t full)
{
	struct build *b = arg;

	if (b->capture && stream == 1 && b->out.len < 4096) {
		buf_add(&b->out, line, len);
		buf_add(&b->out, "\n", 1);
	}
	evlog_child_line(&b->log, b->scope, stream, line, len, full);
}

/*
 * Runs one build step.  Returns 0, or -1 with a reason in err.
 */
static int
build_step(struct build *b, const char *scope, char **argv, double limit,
    char *err, size_t errlen)
{
	struct proc_spec ps;
	struct proc_result res;
	double left = b->deadline - now_mono();
	json_t *cmd = json_array();
	char name[64];
	size_t i;

	for (i = 0; argv[i] != NULL; i++)
		json_array_append_new(cmd, json_string(argv[i]));
	sb_set_step(scope);
	snprintf(name, sizeof(name), "%s.start", scope);
	evlog_emit(&b->log, "info", name, "Step started",
	    json_pack("{s:O}", "cmd", cmd));
	if (left <= 0) {
		snprintf(err, errlen, "build deadline passed before %s",
		    scope);
		json_decref(cmd);
		return -1;
	}
	memset(&ps, 0, sizeof(ps));
	ps.argv = argv;
	ps.envp = b->env;
	ps.timeout = limit > 0 && limit < left ? limit : left;
	ps.hb_interval = b->w->conf->lease_seconds / 3;
	if (ps.hb_interval < 1)
		ps.hb_interval = 1;
	ps.lost_after = b->w->conf->lease_seconds * 0.9;
	ps.last_good = &b->last_good;
	ps.heartbeat = build_heartbeat;
	ps.on_line = build_line;
	ps.arg = b;
	ps.max_line = (size_t)b->w->conf->max_event_line;
	ps.stop = &worker_quit;
	ps.sandbox = &b->sb;
	b->scope = scope;
	proc_run(&ps, &res);
	snprintf(name, sizeof(name), "%s.complete", scope);
	evlog_emit(&b->log, res.exit_code == 0 ? "info" : "error", name,
	    "Step finished", json_pack("{s:O, s:i, s:b, s:f}", "cmd", cmd,
	    "exit_code", res.exit_code, "timed_out", res.timed_out,
	    "duration_seconds", res.duration));
	json_decref(cmd);
	if (res.lost)
		snprintf(err, errlen, "lost the claim during %s", scope);
	else if (res.stopped)
		snprintf(err, errlen, "worker stopping during %s", scope);
	else if (res.timed_out)
		snprintf(err, errlen, "%s timed out (exit %d)", scope,
		    res.exit_code);
	else if (res.exit_code != 0)
		snprintf(err, errlen, "%s failed (exit %d)", scope,
		    res.exit_code);
	else
		return 0;
	return -1;
}

/* argv = prefix words, setting words, then the given tail. */
static char **
build_argv(const char *const *head, const char *setting,
    const char *const *tail)
{
	char **extra = argv_split(setting), **v;
	size_t n = 0, i;

	v = xcalloc(16 + argv_len(extra), sizeof(*v));
	for (i = 0; head[i] != NULL; i++)
		v[n++] = xstrdup(head[i]);
	for (i = 0; extra[i] != NULL; i++)
		v[n++] = xstrdup(extra[i]);
	for (i = 0; tail[i] != NULL; i++)
		v[n++] = xstrdup(tail[i]);
	v[n] = NULL;
	argv_free(extra);
	return v;
}

static char *
trimmed_output(struct buf *b)
{
	char *s = xstrdup(buf_str(b)), *e;

	e = s + strlen(s);
	while (e > s && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' '))
		*--e = '\0';
	e = strchr(s, '\n');
	if (e != NULL)
		*e = '\0';
	return s;
}

/* Runs a probe and returns the first line of its stdout, or NULL. */
static char *
probe(struct build *b, const char *scope, char **argv)
{
	char err[256], *v = NULL;

	buf_reset(&b->out);
	b->capture = 1;
	if (build_step(b, scope, argv, PROBE_TIMEOUT, err, sizeof(err)) == 0)
		v = trimmed_output(&b->out);
	b->capture = 0;
	if (v != NULL && *v == '\0') {
		free(v);
		v = NULL;
	}
	return v;
}

/*
 * The archive that stands for a missing configuration package
 * directory: cfgdir with ".zip" or ".tar.gz" appended, a regular file
 * that, once symbolic links are resolved, still lies in the
 * config_packages directory.  Returns 0 with its path in out, or -1
 * when there is none.
 */
static int
config_archive(const char *cfgdir, char *out, size_t len)
{
	static const char *const suffixes[] = { ".zip", ".tar.gz" };
	char base[PATH_MAX], *slash;
	struct stat st;
	size_t i;
	int n;

	snprintf(base, sizeof(base), "%s", cfgdir);
	if ((slash = strrchr(base, '/')) == NULL)
		return -1;
	*slash = '\0';
	for (i = 0; i < NELEM(suffixes); i++) {
		n = snprintf(out, len, "%s%s", cfgdir, suffixes[i]);
		if (n < 0 || (size_t)n >= len)
			return -1;
		if (stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
		    path_within(base, out))
			return 0;
	}
	return -1;
}

/*
 * Extracts a configuration package archive into <tmp>/config, created
 * fresh, and writes the package root inside it to pkg (see
 * arch_package_root for the wrapper directory convention).  On failure
 * the partial extraction is removed and err says why.
 */
static int
extract_config(struct build *b, const char *archive, const char *tmp,
    char *pkg, size_t pkglen, char *err, size_t errlen)
{
	const struct arch_limits lim = { CONFIG_MAX_ENTRIES,
	    CONFIG_MAX_BYTES, CONFIG_MAX_ENTRY_BYTES };
	const char *name = strrchr(archive, '/') + 1;
	char dest[PATH_MAX], why[768];

	snprintf(dest, sizeof(dest), "%s/config", tmp);
	evlog_emit(&b->log, "info", "environment.config.extract.start",
	    "Extracting the configuration package archive",
	    json_pack("{s:s, s:s}", "archive", archive, "dest", dest));
	if (rm_rf(dest) == -1 || mkdir(dest, 0750) == -1) {
		snprintf(why, sizeof(why), "cannot create %s: %s", dest,
		    strerror(errno));
		goto fail;
	}
	if (arch_extract(archive, dest, &lim, why, sizeof(why)) == -1)
		goto fail;
	if (arch_package_root(dest, pkg, pkglen) == -1) {
		snprintf(why, sizeof(why), "cannot find the package root in "
		    "%s: %s", dest, strerror(errno));
		goto fail;
	}
	evlog_emit(&b->log, "info", "environment.config.extract.complete",
	    "Configuration package archive extracted",
	    json_pack("{s:s, s:s}", "archive", archive, "package_root", pkg));
	return 0;

fail:
	rm_rf(dest);
	snprintf(err, errlen, "config package archive %s: %s", name, why);
	evlog_emit(&b->log, "error", "environment.config.extract.failed", err,
	    json_pack("{s:s}", "archive", archive));
	return -1;
}

/*
 * Moves the finished tree into place.  An older tree is exchanged with it
 * in one step (renameat2 RENAME_EXCHANGE), so that the environment's
 * path never lacks a venv, and then removed: engines that run from the
 * path find the new tree's files from then on.
 */
static int
swap_into_place(const char *tmp, const char *root)
{
	char trash[PATH_MAX], rnd[9];

	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, root, RENAME_EXCHANGE) == 0) {
		rm_rf(tmp);
		return 0;
	}
	if (errno == ENOENT)
		return rename(tmp, root);
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* A file system that cannot exchange: two renames. */
	random_hex(rnd, sizeof(rnd));
	snprintf(trash, sizeof(trash), "%s.old-%s", root, rnd);
	if (rename(root, trash) == -1 && errno != ENOENT)
		return -1;
	if (rename(tmp, root) == -1)
		return -1;
	rm_rf(trash);
	return 0;
}

/*
 * The build log lives at the environment's logs/events.ndjson from the
 * start of the build, so that it can be followed there.  A finished build
 * takes it along into its tree just before that tree replaces the
 * environment's (the same file: a reader that has it open reads on).  A
 * failed build leaves it where it is, beside the venv that keeps serving
 * runs, or alone where there is none.
 */
static int
move_log(const char *from_tree, const char *to_tree)
{
	char from[PATH_MAX], to[PATH_MAX];

	snprintf(from, sizeof(from), "%s/logs/events.ndjson", from_tree);
	snprintf(to, sizeof(to), "%s/logs", to_tree);
	if (mkdir_p(to, 0750) == -1)
		return -1;
	strcat(to, "/events.ndjson");
	if (rename(from, to) == -1 && errno != ENOENT)
		return -1;
	return 0;
}

/*
 * Puts a finished tree in place: as a generation's directory of its own
 * (replacing a copy that was there), or as the root itself for a build
 * from before generations, which takes the build log along.
 */
static int
put_in_place(const char *tmp, const char *root, const char *target)
{
	if (strcmp(root, target) == 0 && move_log(root, tmp) == -1)
		return -1;
	return swap_into_place(tmp, target);
}

/*
 * What the build steps may reach besides the system (sandbox.c): they
 * read the engine's source when it is a local path and the configuration
 * package, and write only the build directory and their workspace's pip
 * cache (one per workspace, so that one configuration's build cannot
 * plant wheels for another's).  Returns -1 with a reason in err.
 */
static int
build_sandbox(struct build *b, const char *tmp, const char *pkg,
    const char *spec, const char *cache, char *err, size_t errlen)
{
	struct stat st;
	const char *fail = NULL;

	if (sandbox_begin(&b->sb) == -1) {
		snprintf(err, errlen, "cannot make the build's sandbox: %s",
		    strerror(errno));
		return -1;
	}
	if (b->sb.fd == -1)
		return 0;
	if (sandbox_allow(&b->sb, tmp, SANDBOX_WRITE) == -1)
		fail = tmp;
	else if (sandbox_allow(&b->sb, cache, SANDBOX_WRITE) == -1)
		fail = cache;
	else if (sandbox_allow(&b->sb, pkg, SANDBOX_READ) == -1)
		fail = pkg;
	else if (spec[0] == '/' && stat(spec, &st) == 0 &&
	    sandbox_allow(&b->sb, spec, SANDBOX_READ) == -1)
		fail = spec;
	if (fail != NULL) {
		snprintf(err, errlen, "cannot open %s to the build's sandbox: "
		    "%s", fail, errno == EPERM ? "it holds the daemon's own "
		    "files" : strerror(errno));
		sandbox_end(&b->sb);
		return -1;
	}
	return 0;
}

/*
 * A local copy of a ready environment, built by this host without a claim
 * and without touching the row: the venv is kept per host (venvs_dir), so
 * a host that lacks one makes its own from what the row records.  The
 * versions it gets are compared with the recorded ones; a difference is
 * reported, not hidden.  0, or -1 with err set.
 */
static int	build_env(struct worker *, const struct env_claim *,
		    const char *, const char *, const char *, const char *,
		    char *, size_t);

int
job_hydrate_environment(struct worker *w, const struct env_claim *c,
    const char *gen, const char *want_python, const char *want_engine,
    char *err, size_t errlen)
{
	return build_env(w, c, NULL, gen, want_python, want_engine, err,
	    errlen);
}

/* Each build is a new generation (paths.c). */
void
job_build_environment(struct worker *w, const struct env_claim *c,
    const char *token)
{
	char err[16], gen[GEN_SIZE];

	path_new_gen(gen, sizeof(gen));
	(void)build_env(w, c, token, gen, NULL, NULL, err, sizeof(err));
}

/* The versions a local copy got against those the row records. */
static void
compare_versions(struct build *b, const char *id, const char *what,
    const char *want, const char *got)
{
	char msg[256];

	if (want == NULL || *want == '\0' || (got != NULL &&
	    strcmp(want, got) == 0))
		return;
	snprintf(msg, sizeof(msg), "%s version differs from the one recorded: "
	    "%s here, %s recorded", what, got != NULL ? got : "unknown", want);
	evlog_emit(&b->log, "warning", "environment.versions.mismatch", msg,
	    json_pack("{s:s, s:s?, s:s}", "component", what, "local", got,
	    "recorded", want));
	log_warnx("environment %s: %s", id, msg);
}

/*
 * Makes the build's tree (a hidden directory beside the environment's
 * root, swapped into place at the end) and the environment's log, and
 * records the start.  0, or -1 with b->err set.
 */
static int
build_prepare(struct build *b, const char *gen)
{
	const struct conf *cf = b->w->conf;
	const struct env_claim *c = b->claim;
	char parent[PATH_MAX], logdir[PATH_MAX], rnd[9];

	if (path_env_parent(parent, sizeof(parent), cf->venvs_root,
	    c->workspace_id, c->configuration_id, c->deps_digest) == -1 ||
	    path_env_root(b->root, sizeof(b->root), cf->venvs_root,
	    c->workspace_id, c->configuration_id, c->deps_digest,
	    c->id) == -1) {
		snprintf(b->err, sizeof(b->err), "environment ids do not "
		    "make a safe path");
		return -1;
	}
	random_hex(rnd, sizeof(rnd));
	snprintf(b->tmp, sizeof(b->tmp), "%s/.build-%s", parent, rnd);
	snprintf(b->venv, sizeof(b->venv), "%s/.venv", b->tmp);
	snprintf(b->target, sizeof(b->target), "%s%s%s", b->root,
	    gen[0] ? "/" : "", gen);
	snprintf(b->python, sizeof(b->python), "%s/.venv/bin/python",
	    b->target);
	/* An engine user writes the tree; the log is the worker's. */
	snprintf(logdir, sizeof(logdir), "%s/logs", b->root);
	if (mkdir_p(b->tmp, 0750) == -1 || mkdir_p(logdir, 0750) == -1 ||
	    priv_engine_share(b->tmp, 02770) == -1) {
		snprintf(b->err, sizeof(b->err), "cannot create %s: %s",
		    logdir, strerror(errno));
		return -1;
	}
	/* From data_dir when the venvs lie beneath it, else from theirs. */
	priv_engine_reach(cf->data_dir, b->root);
	priv_engine_reach(cf->venvs_root, b->root);
	/* A new file: whoever follows the last build's log sees the change. */
	strcat(logdir, "/events.ndjson");
	if (unlink(logdir) == -1 && errno != ENOENT)
		log_warn("environment %s: unlink %s", c->id, logdir);
	evlog_open(&b->log, logdir, json_pack("{s:s, s:s, s:s, s:s}",
	    "environment_id", c->id, "workspace_id", c->workspace_id,
	    "configuration_id", c->configuration_id, "deps_digest",
	    c->deps_digest), (size_t)cf->max_log_size);
	evlog_emit(&b->log, "info", "environment.start", b->token != NULL ?
	    "Environment build started" : "Building this host's copy of a "
	    "ready environment", json_pack("{s:s, s:s, s:b}", "engine_spec",
	    c->engine_spec, "worker", b->token != NULL ? b->token : b->w->id,
	    "local_copy", b->token == NULL));
	return 0;
}

/*
 * Finds the configuration package, extracting an archive of it into the
 * build's tree, before the slow steps: a missing or hostile package
 * fails the build at once.  0, or -1 with b->err set.
 */
static int
build_package(struct build *b)
{
	const struct conf *cf = b->w->conf;
	const struct env_claim *c = b->claim;
	char cfgdir[PATH_MAX], archive[PATH_MAX];

	b->editable = 1;
	if (path_config_dir(cfgdir, sizeof(cfgdir), cf->data_dir,
	    c->workspace_id, c->configuration_id) == -1) {
		snprintf(b->err, sizeof(b->err), "configuration ids do not "
		    "make a safe path");
		return -1;
	}
	if (is_dir(cfgdir)) {
		snprintf(b->pkg, sizeof(b->pkg), "%s", cfgdir);
		priv_engine_lend(cf->data_dir, cfgdir);
		return 0;
	}
	if (config_archive(cfgdir, archive, sizeof(archive)) == 0) {
		b->editable = 0;
		return extract_config(b, archive, b->tmp, b->pkg,
		    sizeof(b->pkg), b->err, sizeof(b->err));
	}
	snprintf(b->err, sizeof(b->err), "config package dir missing: %s "
	    "(and no .zip or .tar.gz of it)", cfgdir);
	return -1;
}

/*
 * The steps' temporary directory and home (removed before the swap),
 * the workspace's pip cache, the sandbox and the environment variables
 * of the steps.  0, or -1 with b->err set.
 */
static int
build_setup(struct build *b, const char *spec)
{
	const struct conf *cf = b->w->conf;
	char home[PATH_MAX], cache[PATH_MAX];
	char *pip_cache, *tmpdir, *homedir;

	snprintf(home, sizeof(home), "%s/tmp", b->tmp);
	snprintf(cache, sizeof(cache), "%s/cache/pip/%s", cf->data_dir,
	    b->claim->workspace_id);
	if (mkdir_p(home, 0750) == -1 || mkdir_p(cache, 0750) == -1 ||
	    priv_engine_share(home, 02770) == -1 ||
	    priv_engine_share(cache, 02770) == -1) {
		snprintf(b->err, sizeof(b->err), "cannot create %s: %s",
		    is_dir(home) ? cache : home, strerror(errno));
		return -1;
	}
	priv_engine_reach(cf->data_dir, cache);
	if (build_sandbox(b, b->tmp, b->pkg, spec, cache, b->err,
	    sizeof(b->err)) == -1)
		return -1;
	pip_cache = xasprintf("PIP_CACHE_DIR=%s", cache);
	tmpdir = xasprintf("TMPDIR=%s", home);
	homedir = xasprintf("HOME=%s", home);
	{
		char *extra[] = { "PIP_DISABLE_PIP_VERSION_CHECK=1",
		    "PIP_NO_INPUT=1", "PIP_PROGRESS_BAR=off",
		    "PYTHONUNBUFFERED=1", pip_cache, tmpdir, homedir, NULL };

		b->env = proc_env(NULL, 1, extra);
	}
	free(pip_cache);
	free(tmpdir);
	free(homedir);
	return 0;
}

/* Runs one pip or venv step: head, the setting's words, then tail. */
static int
build_run(struct build *b, const char *scope, const char *const *head,
    const char *setting, const char *const *tail)
{
	char **argv = build_argv(head, setting, tail);
	int rc;

	rc = build_step(b, scope, argv, 0, b->err, sizeof(b->err));
	argv_free(argv);
	return rc;
}

/*
 * The venv, the engine and the configuration package installed in it,
 * and the versions they came with.  0, or -1 with b->err set.
 */
static int
build_venv(struct build *b, const char *spec)
{
	const struct conf *cf = b->w->conf;
	const char *venv_head[] = { cf->python, "-m", "venv", NULL };
	const char *venv_tail[] = { b->venv, NULL };
	const char *pip[] = { b->venv, "-m", "pip", "install", NULL };
	const char *engine_local[] = { "-e", spec, NULL };
	const char *engine_remote[] = { spec, NULL };
	const char *pkg_local[] = { "-e", b->pkg, NULL };
	const char *pkg_snapshot[] = { b->pkg, NULL };
	char *pv[] = { b->venv, "--version", NULL };
	char *ev[] = { b->venv, "-c", "import ade_engine; print(getattr("
	    "ade_engine, '__version__', 'unknown'))", NULL };
	char msg[256];

	if (build_run(b, "environment.venv", venv_head, cf->venv_args,
	    venv_tail) == -1)
		return -1;
	/* From here on, venv names the venv's interpreter. */
	snprintf(b->venv, sizeof(b->venv), "%s/.venv/bin/python", b->tmp);
	if (access(b->venv, X_OK) == -1) {
		snprintf(b->err, sizeof(b->err), "venv has no bin/python");
		return -1;
	}
	if (build_run(b, "environment.engine", pip, cf->pip_args,
	    is_dir(spec) ? engine_local : engine_remote) == -1 ||
	    build_run(b, "environment.config", pip, cf->pip_args,
	    b->editable ? pkg_local : pkg_snapshot) == -1)
		return -1;
	b->pyver = probe(b, "environment.probe.python", pv);
	b->engver = probe(b, "environment.probe.engine", ev);
	snprintf(msg, sizeof(msg), "python=%s engine=%s",
	    b->pyver ? b->pyver : "unknown", b->engver ? b->engver :
	    "unknown");
	evlog_emit(&b->log, "info", "environment.versions", msg, NULL);
	if (b->pyver == NULL) {
		snprintf(b->err, sizeof(b->err), "the venv's python does not "
		    "run");
		return -1;
	}
	return 0;
}

/* Puts a finished build in place; -1 (b->err set) when it cannot. */
static int
build_put_in_place(struct build *b)
{
	if (put_in_place(b->tmp, b->root, b->target) == 0)
		return 0;
	snprintf(b->err, sizeof(b->err), "cannot move the build into "
	    "place: %s", strerror(errno));
	(void)move_log(b->tmp, b->root);
	return -1;
}

/* The end of a local copy: no row to write. */
static void
build_end_copy(struct build *b, const char *want_python,
    const char *want_engine)
{
	const char *id = b->claim->id;

	if (!b->failed) {
		compare_versions(b, id, "python", want_python, b->pyver);
		compare_versions(b, id, "engine", want_engine, b->engver);
	}
	evlog_close(&b->log);
	if (!b->failed && build_put_in_place(b) == -1)
		b->failed = 1;
	if (!b->failed)
		log_info("environment %s: this host's copy is ready (%s, "
		    "engine %s)", id, b->pyver, b->engver ? b->engver :
		    "unknown");
}

/*
 * The end of a build under a claim: the build goes in place and the row
 * says ready, or the row records the failure (or, when the worker is
 * stopping, gives the environment back).
 */
static void
build_end_claimed(struct build *b)
{
	struct worker *w = b->w;
	const struct conf *cf = w->conf;
	const char *id = b->claim->id;
	long charged;
	int rc, lost = 0;

	evlog_close(&b->log);
	/*
	 * A finished build replaces the environment only while the claim
	 * is still ours: one renewed here holds for lease_seconds, far
	 * longer than the rename takes, so nobody else can be building it.
	 */
	if (!b->failed) {
		rc = store_heartbeat_environment(w->store, id, b->token,
		    cf->lease_seconds);
		if (rc != 1) {
			b->failed = 1;
			lost = rc == 0;
			snprintf(b->err, sizeof(b->err), "cannot confirm the "
			    "claim before putting the build in place: %s",
			    rc == 0 ? "it was lost" : store_error(w->store));
		} else if (build_put_in_place(b) == -1)
			b->failed = 1;
	}
	if (!b->failed) {
		rc = store_environment_ready(w->store, id, b->token,
		    b->python, b->pyver, b->engver);
		if (rc == 1)
			log_info("environment %s: ready (%s, engine %s)", id,
			    b->pyver, b->engver ? b->engver : "unknown");
	} else if (lost)
		rc = 0;
	else if (worker_quit) {
		/* Not the environment's fault: another worker may build it. */
		log_notice("environment %s: build interrupted", id);
		rc = store_environment_abandon(w->store, id, b->token,
		    "build interrupted: worker stopping");
		rc = rc < 0 ? rc : 1;
	} else {
		rc = store_environment_failed(w->store, id, b->token, b->err,
		    cf->backoff_base, cf->backoff_max, &charged);
		if (rc == 1)
			log_warnx("environment %s: build failed: %s (%ld "
			    "waiting runs charged an attempt)", id, b->err,
			    charged);
	}
	if (rc == 1 && !b->failed)
		sb_count_build(SB_BUILD_READY, now_mono() - b->started);
	else if (rc == 1 && !worker_quit)
		sb_count_build(SB_BUILD_FAILED, now_mono() - b->started);
	else if (rc == 0)
		sb_count_build(SB_BUILD_LOST, now_mono() - b->started);
	if (rc == 0)
		log_warnx("environment %s: lost the claim; result dropped", id);
	else if (rc < 0)
		log_warnx("environment %s: cannot record the result: %s", id,
		    store_error(w->store));
}

/*
 * Builds generation gen of the environment ("": the root itself, as
 * before generations) under the claim token, or, with no token, as a
 * local copy (see job_hydrate_environment).
 */
static int
build_env(struct worker *w, const struct env_claim *c, const char *token,
    const char *gen, const char *want_python, const char *want_engine,
    char *errout, size_t errlen)
{
	const struct conf *cf = w->conf;
	struct build *b;
	const char *spec;
	char home[PATH_MAX];
	int failed;

	b = xcalloc(1, sizeof(*b));
	b->sb.fd = -1;
	b->w = w;
	b->claim = c;
	b->token = token;
	b->started = now_mono();
	b->deadline = b->started + cf->env_build_timeout;
	/* The claim renewed the lease: it counts as a heartbeat. */
	b->last_good = now_mono();
	buf_init(&b->out);
	b->log.fd = -1;
	b->failed = 1;
	log_info("environment %s: %s (deps %s)", c->id, token != NULL ?
	    "building" : "building this host's copy", c->deps_digest);

	spec = c->engine_spec[0] != '\0' ? c->engine_spec : cf->engine_spec;
	if (build_prepare(b, gen) == 0 && build_package(b) == 0 &&
	    build_setup(b, spec) == 0 && build_venv(b, spec) == 0) {
		evlog_emit(&b->log, "info", "environment.complete",
		    "Environment ready", NULL);
		b->failed = 0;
	}
	sb_set_step(NULL);
	sandbox_end(&b->sb);
	if (b->tmp[0] != '\0') {
		priv_engine_settle(b->tmp);
		snprintf(home, sizeof(home), "%s/tmp", b->tmp);
		rm_rf(home);
	}
	if (b->failed && b->err[0] == '\0')
		snprintf(b->err, sizeof(b->err), "environment build failed");
	if (b->failed)
		evlog_emit(&b->log, "error", "environment.failed", b->err,
		    NULL);
	if (token == NULL)
		build_end_copy(b, want_python, want_engine);
	else
		build_end_claimed(b);
	/* Whatever was not put in place, including a lost claim's build. */
	if (b->tmp[0] != '\0' && is_dir(b->tmp))
		rm_rf(b->tmp);
	argv_free(b->env);
	buf_free(&b->out);
	free(b->pyver);
	free(b->engver);
	failed = b->failed;
	snprintf(errout, errlen, "%s", failed ? b->err : "");
	free(b);
	return failed ? -1 : 0;
}
