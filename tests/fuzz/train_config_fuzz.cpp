// The trainer's configuration parser (parseTrainConfigText) on arbitrary text.
// Expected rejections and checked properties: tests/fuzz/targets.h.
#include "tests/fuzz/fuzz_main.h"

PERENNIAL_FUZZ_TARGET(trainConfig)
