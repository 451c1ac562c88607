// The scheduler's and the gate's configuration loaders (loadSchedConfig, loadGateConfig) on arbitrary files.
// Expected rejections and checked properties: tests/fuzz/targets.h.
#include "tests/fuzz/fuzz_main.h"

PERENNIAL_FUZZ_TARGET(schedConfig)
