/*
 * A compiled engine that does nothing but speak the protocol: it writes
 * an output file and prints one valid engine.run.completed event, so that
 * benchmarks measure the worker and not an interpreter's start-up.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char completed[] =
	"{\"event_id\":\"5459c9379b0b4812acdb716bd5015c1b\",\"engine_r"
	"un_id\":\"13eb2b6ce4fc41f5bc5d0c998f4391a6\",\"timestamp\":\"2"
	"026-11-23T19:08:55.304Z\",\"level\":\"info\",\"event\":\"engine."
	"run.completed\",\"message\":\"engine.run.completed\",\"data\":{"
	"\"schema_version\":1,\"scope\":\"run\",\"execution\":{\"status\":\""
	"succeeded\",\"started_at\":\"2026-01-01T00:00:00.000Z\",\"comp"
	"leted_at\":\"2026-01-01T00:00:00.250Z\",\"duration_ms\":250,\""
	"failure\":null},\"evaluation\":{\"outcome\":\"partial\",\"findin"
	"gs\":[{\"code\":\"validation_errors_present\",\"severity\":\"err"
	"or\",\"message\":\"Validation errors were emitted\",\"count\":1"
	",\"meta\":null}]},\"counts\":{\"workbooks\":1,\"sheets\":1,\"tabl"
	"es\":1,\"rows\":{\"total\":2,\"empty\":0},\"columns\":{\"total\":3,"
	"\"empty\":0,\"mapped\":2,\"unmapped\":1},\"fields\":{\"expected\":"
	"2,\"detected\":2,\"not_detected\":0},\"cells\":{\"total\":6,\"non"
	"_empty\":6}},\"validation\":{\"rows_evaluated\":2,\"issues_tot"
	"al\":1,\"issues_by_severity\":{\"error\":1},\"max_severity\":\"e"
	"rror\"},\"fields\":[{\"field\":\"email\",\"label\":null,\"detected"
	"\":true,\"derived\":false,\"valid_cells\":1,\"best_mapping_sco"
	"re\":1.0,\"source_headers\":[\"Email\"],\"occurrences\":{\"table"
	"s\":1,\"columns\":1}},{\"field\":\"name\",\"label\":null,\"detecte"
	"d\":true,\"derived\":false,\"valid_cells\":2,\"best_mapping_sc"
	"ore\":1.0,\"source_headers\":[\"Name\"],\"occurrences\":{\"table"
	"s\":1,\"columns\":1}}],\"outputs\":{\"normalized\":{\"path\":\"/ru"
	"ns/r1/output/input_normalized.xlsx\",\"sheet_name\":null,\"r"
	"ange_a1\":null}},\"workbooks\":[{\"scope\":\"workbook\",\"locato"
	"r\":{\"workbook\":{\"index\":0,\"name\":\"input.xlsx\"}},\"counts\""
	":{\"workbooks\":null,\"sheets\":1,\"tables\":1,\"rows\":{\"total\""
	":2,\"empty\":0},\"columns\":{\"total\":3,\"empty\":0,\"mapped\":2,"
	"\"unmapped\":1},\"fields\":{\"expected\":2,\"detected\":2,\"not_d"
	"etected\":0},\"cells\":{\"total\":6,\"non_empty\":6}},\"validati"
	"on\":{\"rows_evaluated\":2,\"issues_total\":1,\"issues_by_seve"
	"rity\":{\"error\":1},\"max_severity\":\"error\"},\"fields\":[{\"fi"
	"eld\":\"email\",\"label\":null,\"detected\":true,\"derived\":fals"
	"e,\"valid_cells\":1,\"best_mapping_score\":1.0,\"source_heade"
	"rs\":[\"Email\"],\"occurrences\":{\"tables\":1,\"columns\":1}},{\""
	"field\":\"name\",\"label\":null,\"detected\":true,\"derived\":fal"
	"se,\"valid_cells\":2,\"best_mapping_score\":1.0,\"source_head"
	"ers\":[\"Name\"],\"occurrences\":{\"tables\":1,\"columns\":1}}],\""
	"sheets\":[{\"scope\":\"sheet\",\"locator\":{\"workbook\":{\"index\""
	":0,\"name\":\"input.xlsx\"},\"sheet\":{\"index\":0,\"name\":\"Sheet"
	"1\"}},\"counts\":{\"workbooks\":null,\"sheets\":null,\"tables\":1"
	",\"rows\":{\"total\":2,\"empty\":0},\"columns\":{\"total\":3,\"empt"
	"y\":0,\"mapped\":2,\"unmapped\":1},\"fields\":{\"expected\":2,\"de"
	"tected\":2,\"not_detected\":0},\"cells\":{\"total\":6,\"non_empt"
	"y\":6}},\"validation\":{\"rows_evaluated\":2,\"issues_total\":1"
	",\"issues_by_severity\":{\"error\":1},\"max_severity\":\"error\""
	"},\"fields\":[{\"field\":\"email\",\"label\":null,\"detected\":tru"
	"e,\"derived\":false,\"valid_cells\":1,\"best_mapping_score\":1"
	".0,\"source_headers\":[\"Email\"],\"occurrences\":{\"tables\":1,"
	"\"columns\":1}},{\"field\":\"name\",\"label\":null,\"detected\":tr"
	"ue,\"derived\":false,\"valid_cells\":2,\"best_mapping_score\":"
	"1.0,\"source_headers\":[\"Name\"],\"occurrences\":{\"tables\":1,"
	"\"columns\":1}}],\"scan\":null,\"is_active_sheet\":true,\"table"
	"s\":[{\"scope\":\"table\",\"locator\":{\"workbook\":{\"index\":0,\"n"
	"ame\":\"input.xlsx\"},\"sheet\":{\"index\":0,\"name\":\"Sheet1\"},\""
	"table\":{\"index\":0}},\"counts\":{\"workbooks\":null,\"sheets\":"
	"null,\"tables\":null,\"rows\":{\"total\":2,\"empty\":0},\"columns"
	"\":{\"total\":3,\"empty\":0,\"mapped\":2,\"unmapped\":1},\"fields\""
	":{\"expected\":2,\"detected\":2,\"not_detected\":0},\"cells\":{\""
	"total\":6,\"non_empty\":6}},\"validation\":{\"rows_evaluated\":"
	"2,\"issues_total\":1,\"issues_by_severity\":{\"error\":1},\"max"
	"_severity\":\"error\"},\"fields\":[{\"field\":\"email\",\"label\":n"
	"ull,\"detected\":true,\"derived\":false,\"valid_cells\":1,\"bes"
	"t_mapping_score\":1.0,\"source_headers\":[\"Email\"],\"occurre"
	"nces\":{\"tables\":1,\"columns\":1}},{\"field\":\"name\",\"label\":"
	"null,\"detected\":true,\"derived\":false,\"valid_cells\":2,\"be"
	"st_mapping_score\":1.0,\"source_headers\":[\"Name\"],\"occurre"
	"nces\":{\"tables\":1,\"columns\":1}}],\"structure\":{\"region\":{"
	"\"a1\":\"A1:C3\"},\"header\":{\"row_start\":1,\"row_count\":1,\"inf"
	"erred\":false},\"data\":{\"row_start\":2,\"row_count\":2},\"colu"
	"mns\":[{\"index\":0,\"header\":{\"raw\":\"Email\",\"normalized\":\"e"
	"mail\"},\"non_empty_cells\":2,\"valid_cells\":1,\"mapping\":{\"s"
	"tatus\":\"mapped\",\"field\":\"email\",\"score\":1.0,\"method\":\"cl"
	"assifier\",\"candidates\":[{\"field\":\"email\",\"score\":1.0}],\""
	"unmapped_reason\":null}},{\"index\":1,\"header\":{\"raw\":\"Name"
	"\",\"normalized\":\"name\"},\"non_empty_cells\":2,\"valid_cells\""
	":2,\"mapping\":{\"status\":\"mapped\",\"field\":\"name\",\"score\":1"
	".0,\"method\":\"classifier\",\"candidates\":[{\"field\":\"name\",\""
	"score\":1.0}],\"unmapped_reason\":null}},{\"index\":2,\"header"
	"\":{\"raw\":\"Notes\",\"normalized\":\"notes\"},\"non_empty_cells\""
	":2,\"valid_cells\":null,\"mapping\":{\"status\":\"unmapped\",\"fi"
	"eld\":null,\"score\":null,\"method\":null,\"candidates\":[],\"un"
	"mapped_reason\":\"no_signal\"}}]},\"outputs\":{\"normalized\":{"
	"\"path\":\"/runs/r1/output/input_normalized.xlsx\",\"sheet_na"
	"me\":\"Sheet1\",\"range_a1\":\"Sheet1!A1:C3\"}}}]}]}]}}";

int
main(int argc, char *argv[])
{
	char path[4096];
	int i, fd;

	for (i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--output-dir") == 0) {
			snprintf(path, sizeof(path), "%s/normalized.xlsx",
			    argv[i + 1]);
			if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC,
			    0644)) != -1)
				close(fd);
		}
	fprintf(stderr, "%s\n", completed);
	return 0;
}
