// The scheduler's shard validator (validateShard) on arbitrary files.
// Expected rejections and checked properties: tests/fuzz/targets.h.
#include "tests/fuzz/fuzz_main.h"

PERENNIAL_FUZZ_TARGET(shardValidator)
