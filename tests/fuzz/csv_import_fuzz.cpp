// The CSV importer (readCsv) on arbitrary text under three schemas and two delimiters.
// Expected rejections and checked properties: tests/fuzz/targets.h.
#include "tests/fuzz/fuzz_main.h"

PERENNIAL_FUZZ_TARGET(csvImport)
