#pragma once
// The whole `perennial` command line: train, eval, ckpt, data, sched, validate, registry, report,
// docs, version. The `perennial` executable is only a call to it; a program of your own registers
// its models (trainer/models/model_factory.h) and then calls it, and gets every command with them
// (examples/custom_model/). Processes the scheduler starts (training runs, evaluations, the
// validation gate) run the same executable (/proc/self/exe), so they know the same models.
//
// Exit codes: 0 success; 1 failure (bad data, I/O, communication, internal error);
// 2 bad usage or configuration (unknown key, wrong type, out-of-range value);
// validate: 0 pass, 1 reject, 2 no verdict (bad input or any error);
// 75 (train) a signal made the run checkpoint and stop: requeue it with --resume auto.
namespace perennial {

int runCli(int argc, char** argv);

}  // namespace perennial
