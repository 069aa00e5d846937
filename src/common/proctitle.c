/*
 * Process titles, set the way PostgreSQL and OpenSSH set them on Linux.
 * The kernel shows a process's command line from the memory that
 * execve(2) loaded the argument strings into, so a title is written over
 * them, and over the environment strings that follow, once those have
 * been copied to the heap.  A title reads "ade-superd: ROLE" or
 * "ade-superd: ROLE STATE [ID]"; the only text in it that does not come
 * from this program is a run's or an environment's id, shown only when
 * it looks like one.  A change is one copy into that memory, cheap
 * enough for every job a worker does.
 *
 * A child also gets a short name of its own (prctl PR_SET_NAME), which
 * top(1), ps -e and the kernel's messages (the OOM killer's among them)
 * show; the supervisor keeps the program's name, the one pgrep(1) and
 * pidof(8) look for.
 */
#include <sys/prctl.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "proctitle.h"
#include "util.h"

#define TITLE_PREFIX	"ade-superd: "
#define TITLE_MAX	256
#define ID_MAX		64

static char	 *area;		/* where titles go; NULL: nowhere */
static size_t	  area_size;
static size_t	  shown;	/* beyond this, the area holds only NULs */
static char	  role[64];
/* The copies live as long as the process; kept here, they are not leaks. */
static char	**saved_argv;
static char	**saved_environ;
static char	 *saved_strings;

/*
 * Copies the arguments and the environment to the heap and takes the
 * memory they were in for the title.  Returns the copy of argv, which the
 * caller uses from then on (getopt's optarg points into it).  Nothing is
 * shown until the first proctitle_setrole: until then, ps shows the
 * command line as it was.
 */
char **
proctitle_init(int argc, char *argv[])
{
	char *end, *slash, *p;
	size_t len, total;
	int i, n;

	if (argc < 1 || argv == NULL || argv[0] == NULL || saved_argv != NULL)
		return argv;
	/* Only strings that lie one after the other, as execve left them. */
	end = argv[0] + strlen(argv[0]);
	for (i = 1; i < argc && argv[i] == end + 1; i++)
		end = argv[i] + strlen(argv[i]);
	for (n = 0; environ != NULL && environ[n] != NULL; n++)
		;
	if (i == argc)
		for (i = 0; i < n && environ[i] == end + 1; i++)
			end = environ[i] + strlen(environ[i]);

	/*
	 * One block holds every string, so one that setenv(3) later
	 * replaces stays reachable from saved_strings rather than leaking.
	 */
	for (i = 0, total = 1; i < n; i++)
		total += strlen(environ[i]) + 1;
	saved_strings = xmalloc(total);
	saved_environ = xcalloc((size_t)n + 1, sizeof(*saved_environ));
	for (i = 0, p = saved_strings; i < n; i++) {
		len = strlen(environ[i]) + 1;
		memcpy(p, environ[i], len);
		saved_environ[i] = p;
		p += len;
	}
	environ = saved_environ;
	saved_argv = xcalloc((size_t)argc + 1, sizeof(*saved_argv));
	for (i = 0; i < argc; i++)
		saved_argv[i] = xstrdup(argv[i]);
	/* What err(3), error(3) and assert(3) print points into the area. */
	program_invocation_name = saved_argv[0];
	slash = strrchr(saved_argv[0], '/');
	program_invocation_short_name = slash != NULL ? slash + 1 :
	    saved_argv[0];

	area = argv[0];
	area_size = (size_t)(end - argv[0]) + 1;
	shown = area_size;	/* the old command line is still there */
	return saved_argv;
}

static void
title_show(const char *title)
{
	size_t len;

	if (area == NULL)
		return;
	len = strlen(title);
	if (len >= area_size)
		len = area_size - 1;
	memcpy(area, title, len);
	/* Only what the last title left beyond this one needs clearing. */
	if (shown > len)
		memset(area + len, '\0', shown - len);
	shown = len;
}

/*
 * Whether id is safe to show: database ids are UUIDs, in lower case on
 * every backend.  Anything else could carry a terminal's control codes
 * or mislead whoever reads ps.
 */
static int
title_id_ok(const char *id)
{
	size_t len = strspn(id, "0123456789abcdef-");

	return len > 0 && len <= ID_MAX && id[len] == '\0';
}

/*
 * The process's role: "supervisor", "worker 3", "maintenance".  name,
 * unless NULL, becomes the process's short name (at most 15 bytes).
 */
void
proctitle_setrole(const char *name, const char *fmt, ...)
{
	char title[TITLE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(role, sizeof(role), fmt, ap);
	va_end(ap);
	if (name != NULL)
		(void)prctl(PR_SET_NAME, name, 0, 0, 0);
	snprintf(title, sizeof(title), TITLE_PREFIX "%s", role);
	title_show(title);
}

/* What the process does now, and the id of what it does it to, or NULL. */
void
proctitle_setstate(const char *state, const char *id)
{
	char title[TITLE_MAX];

	snprintf(title, sizeof(title), TITLE_PREFIX "%s %s%s%s", role, state,
	    id != NULL ? " " : "", id == NULL ? "" : title_id_ok(id) ? id :
	    "(unknown id)");
	title_show(title);
}
