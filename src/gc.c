/*
 * Garbage collection.  Environments: the store deletes the rows of cold
 * environments that no queued or running run needs, in one statement,
 * and only then are their directories removed; a run queued afterwards
 * gets a new environment row and a new directory, so nothing it needs is
 * ever removed.  Build directories left by a worker that died mid-build
 * are removed once they are much older than a build may take.  Run
 * directories are found on disk (not by rescanning every old row, as the
 * original did) and removed when their run finished more than
 * run_artifact_ttl_days ago, or when no run row exists any more and the
 * directory itself is that old.
 */
#include <sys/stat.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "conf.h"
#include "gc.h"
#include "log.h"
#include "paths.h"
#include "store.h"
#include "util.h"

struct gc_count {
	long	scanned;
	long	deleted;
	long	failed;
};

/* Calls fn for every directory entry of path that is a directory. */
static void
each_dir(const char *path, void (*fn)(void *, const char *, const char *,
    const struct stat *), void *arg)
{
	char sub[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d;

	if ((d = opendir(path)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			fn(arg, sub, de->d_name, &st);
	}
	closedir(d);
}

struct walk {
	const struct conf	*conf;
	struct store		*store;
	int			 dry_run;
	struct gc_count		 runs;
	struct gc_count		 builds;
	json_t			*removed;
	int			 depth;
};

static void
remove_dir(struct walk *w, struct gc_count *n, const char *path,
    const char *kind)
{
	n->deleted++;
	json_array_append_new(w->removed, json_pack("{s:s, s:s}", "kind",
	    kind, "path", path));
	if (w->dry_run)
		return;
	if (rm_rf(path) == -1) {
		log_warn("gc: remove %s", path);
		n->deleted--;
		n->failed++;
	}
}

static void
visit_run(void *arg, const char *path, const char *name,
    const struct stat *st)
{
	struct walk *w = arg;
	long ttl = (long)w->conf->gc_run_artifact_ttl_days;
	int rc;

	w->runs.scanned++;
	rc = store_run_finished_before(w->store, name, ttl);
	if (rc == 1 || (rc == 2 && st->st_mtime < time(NULL) - ttl * 86400))
		remove_dir(w, &w->runs, path, "run");
	else if (rc < 0)
		log_warnx("gc: run %s: %s", name, store_error(w->store));
}

static void
visit_workspace(void *arg, const char *path, const char *name,
    const struct stat *st)
{
	char runs[PATH_MAX];

	snprintf(runs, sizeof(runs), "%s/runs", path);
	each_dir(runs, visit_run, arg);
}

/* venvs/<ws>/<cfg>/deps-<d>/.build-*: three levels down, then builds. */
static void
visit_venv_level(void *arg, const char *path, const char *name,
    const struct stat *st)
{
	struct walk *w = arg;
	double stale = 2 * w->conf->env_build_timeout + 3600;

	if (w->depth == 3) {
		if (strncmp(name, ".build-", 7) == 0) {
			w->builds.scanned++;
			if (st->st_mtime < time(NULL) - (time_t)stale)
				remove_dir(w, &w->builds, path, "build");
		}
		return;
	}
	w->depth++;
	each_dir(path, visit_venv_level, arg);
	w->depth--;
}

json_t *
gc_collect(const struct conf *c, struct store *st, int dry_run)
{
	struct gc_count envs = { 0, 0, 0 };
	struct walk w;
	char path[PATH_MAX];
	json_t *rows, *row;
	size_t i;

	memset(&w, 0, sizeof(w));
	w.conf = c;
	w.store = st;
	w.dry_run = dry_run;
	w.removed = json_array();
	if (c->gc_env_ttl_days > 0) {
		rows = store_gc_environments(st, (long)c->gc_env_ttl_days,
		    dry_run);
		if (rows == NULL)
			log_warnx("gc: environments: %s", store_error(st));
		json_array_foreach(rows, i, row) {
			envs.scanned++;
			if (path_env_root(path, sizeof(path), c->venvs_root,
			    json_string_value(json_object_get(row,
			    "workspace_id")), json_string_value(
			    json_object_get(row, "configuration_id")),
			    json_string_value(json_object_get(row,
			    "deps_digest")), json_string_value(
			    json_object_get(row, "id"))) == -1) {
				envs.failed++;
				continue;
			}
			remove_dir(&w, &envs, path, "environment");
		}
		json_decref(rows);
	}
	snprintf(path, sizeof(path), "%s", c->venvs_root);
	each_dir(path, visit_venv_level, &w);
	if (c->gc_run_artifact_ttl_days > 0) {
		snprintf(path, sizeof(path), "%s/workspaces", c->data_dir);
		each_dir(path, visit_workspace, &w);
	}
	if (envs.deleted || envs.failed || w.runs.deleted || w.runs.failed ||
	    w.builds.deleted)
		log_notice("gc%s: environments deleted=%ld failed=%ld; run "
		    "directories scanned=%ld deleted=%ld failed=%ld; stale "
		    "builds deleted=%ld", dry_run ? " (dry run)" : "",
		    envs.deleted, envs.failed, w.runs.scanned, w.runs.deleted,
		    w.runs.failed, w.builds.deleted);
	return json_pack("{s:b, s:{s:I, s:I}, s:{s:I, s:I, s:I}, s:I, s:o}",
	    "dry_run", dry_run,
	    "environments", "deleted", (json_int_t)envs.deleted, "failed",
	    (json_int_t)envs.failed,
	    "runs", "scanned", (json_int_t)w.runs.scanned, "deleted",
	    (json_int_t)w.runs.deleted, "failed", (json_int_t)w.runs.failed,
	    "stale_builds", (json_int_t)w.builds.deleted,
	    "removed", w.removed);
}
