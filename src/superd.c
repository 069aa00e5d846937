/*
 * ade-superd: start-up, options and the configuration check.  The worker
 * loop is in worker.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "util.h"
#include "worker.h"

#ifndef ADE_SYSCONFDIR
#define ADE_SYSCONFDIR "/etc"
#endif
#ifndef ADE_VERSION
#define ADE_VERSION "0.0.0"
#endif

static void __attribute__((noreturn))
usage(void)
{
	fprintf(stderr, "usage: ade-superd [-dfnV] [-c file] "
	    "[--exit-when-idle]\n");
	exit(WORKER_EXIT_CONFIG);
}

int
main(int argc, char *argv[])
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "debug", no_argument, NULL, 'd' },
		{ "foreground", no_argument, NULL, 'f' },
		{ "check", no_argument, NULL, 'n' },
		{ "exit-when-idle", no_argument, NULL, 'x' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = ADE_SYSCONFDIR "/ade/worker.conf";
	struct conf *conf;
	struct buf errs;
	enum log_level level;
	int ch, check = 0, debug = 0, idle = 0, rc;

	while ((ch = getopt_long(argc, argv, "c:dfnxV", longopts, NULL)) !=
	    -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'd':
			debug = 1;
			break;
		case 'f':
			break;
		case 'n':
			check = 1;
			break;
		case 'x':
			idle = 1;
			break;
		case 'V':
			printf("ade-superd %s\n", ADE_VERSION);
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();

	conf = conf_new();
	buf_init(&errs);
	if (conf_load(conf, path, &errs) == -1) {
		fputs(buf_str(&errs), stderr);
		buf_free(&errs);
		conf_free(conf);
		return check ? 1 : WORKER_EXIT_CONFIG;
	}
	buf_free(&errs);
	if (check) {
		printf("%s: configuration OK\n", path);
		conf_free(conf);
		return 0;
	}
	log_init(debug || isatty(2) ? LOG_DEST_STDERR : LOG_DEST_SYSLOG, NULL,
	    "ade-superd");
	if (log_parse_level(conf->log_level, &level) == 0)
		log_setlevel(level);
	log_setrole("worker");
	if (geteuid() == 0)
		log_warnx("running as root: engines run untrusted "
		    "configuration code; start ade-superd as an unprivileged "
		    "user");
	rc = worker_main(conf, idle);
	conf_free(conf);
	return rc;
}
