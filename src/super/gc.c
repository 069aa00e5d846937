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
#include <sys/file.h>
#include <sys/stat.h>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
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

	if (name[0] == '.')
		return;		/* .spare: run directories made ahead */
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

/*
 * This host's venvs.  Every host runs this pass, whoever holds the
 * maintenance lease, since venvs_dir may be a local disk of its own.  An
 * environment whose row is gone loses its directory; a ready one loses
 * its old generations (those its row no longer records).  A generation,
 * or an environment root built before generations, is removed only while
 * holding an exclusive lock on its directory, which a run holds shared
 * for as long as its engine runs: nothing in use is ever removed.
 */
struct local {
	const struct conf	*conf;
	json_t			*envs;		/* id -> row */
	json_t			*removed;
	int			 dry_run;
	struct gc_count		 n;
	int			 depth;
};

/*
 * Removes dir (or, given, only the parts of it named in subs) if nothing
 * holds dir; 1 if removed.
 */
static int
remove_unheld(struct local *l, const char *dir, const char *const *subs,
    const char *kind)
{
	char path[PATH_MAX];
	int fd, rc = 0, bad = 0;
	size_t i;

	if ((fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return 0;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		json_array_append_new(l->removed, json_pack("{s:s, s:s}",
		    "kind", kind, "path", dir));
		for (i = 0; !l->dry_run && subs != NULL && subs[i] != NULL;
		    i++) {
			snprintf(path, sizeof(path), "%s/%s", dir, subs[i]);
			bad |= rm_rf(path) == -1;
		}
		if (!l->dry_run && subs == NULL)
			bad = rm_rf(dir) == -1;
		if (bad) {
			log_warn("gc: remove %s", dir);
			l->n.failed++;
		} else {
			l->n.deleted++;
			rc = 1;
		}
	}
	close(fd);
	return rc;
}

static void
visit_local_env(struct local *l, const char *root, const char *id)
{
	static const char *const old_tree[] = { ".venv", "config", NULL };
	json_t *row = json_object_get(l->envs, id);
	const char *status, *python;
	char cur[GEN_SIZE], sub[PATH_MAX], lock[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int gone = row == NULL;

	l->n.scanned++;
	status = json_string_value(json_object_get(row, "status"));
	python = json_string_value(json_object_get(row, "python_interpreter"));
	if (!gone && (status == NULL || strcmp(status, "ready") != 0 ||
	    python == NULL))
		return;		/* being built, or failed: leave it be */
	path_gen_of(gone ? "" : python, cur, sizeof(cur));
	if (!gone && cur[0] == '\0')
		return;		/* a build from before generations is current */
	if ((d = opendir(root)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (!path_is_gen(de->d_name) || strcmp(de->d_name, cur) == 0)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", root, de->d_name);
		(void)remove_unheld(l, sub, NULL, "generation");
	}
	closedir(d);
	/* What a build from before generations left in the root itself. */
	snprintf(sub, sizeof(sub), "%s/.venv", root);
	if (gone)
		(void)remove_unheld(l, root, NULL, "environment copy");
	else if (is_dir(sub))
		(void)remove_unheld(l, root, old_tree, "generation");
	if (gone && !l->dry_run && !is_dir(root)) {
		snprintf(lock, sizeof(lock), "%s/.locks/%s.lock",
		    l->conf->venvs_root, id);
		(void)unlink(lock);
	}
}

/* venvs/<ws>/<cfg>/deps-<d>/<env>: the environments, four levels down. */
static void
visit_local_level(void *arg, const char *path, const char *name,
    const struct stat *st)
{
	struct local *l = arg;

	(void)st;
	if (name[0] == '.')
		return;		/* .locks, .build-* */
	if (l->depth == 3) {
		visit_local_env(l, path, name);
		return;
	}
	l->depth++;
	each_dir(path, visit_local_level, arg);
	l->depth--;
}

long
gc_local_venvs(const struct conf *c, struct store *st, int dry_run,
    json_t *removed)
{
	struct local l;
	json_t *rows, *row;
	size_t i;

	memset(&l, 0, sizeof(l));
	l.conf = c;
	l.dry_run = dry_run;
	l.removed = removed;
	if ((rows = store_list_environments(st)) == NULL) {
		log_warnx("gc: this host's venvs: %s", store_error(st));
		return -1;
	}
	l.envs = json_object();
	json_array_foreach(rows, i, row) {
		const char *id = json_string_value(json_object_get(row, "id"));

		if (id != NULL)
			json_object_set(l.envs, id, row);
	}
	json_decref(rows);
	each_dir(c->venvs_root, visit_local_level, &l);
	json_decref(l.envs);
	if (l.n.deleted || l.n.failed)
		log_notice("gc%s: this host's venvs: environments scanned=%ld; "
		    "removed=%ld failed=%ld", dry_run ? " (dry run)" : "",
		    l.n.scanned, l.n.deleted, l.n.failed);
	return l.n.deleted;
}
