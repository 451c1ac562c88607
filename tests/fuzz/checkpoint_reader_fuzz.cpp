// The checkpoint and weights-file reader (readDocument, readTensorFile, verifyCheckpoint) on arbitrary files.
// Expected rejections and checked properties: tests/fuzz/targets.h.
#include "tests/fuzz/fuzz_main.h"

PERENNIAL_FUZZ_TARGET(checkpointReader)
