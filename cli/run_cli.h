#pragma once
// The whole `perennial` command line: train, eval, ckpt, data, sched, validate, registry, report,
// docs, version. The `perennial` executable is only a call to it; a program of your own registers
// its models (trainer/models/model_factory.h) and then calls it, and gets every command with them
// (examples/custom_model/). Processes the scheduler starts (training runs, evaluations, the
// validation gate) run the same executable (/proc/self/exe), so they know the same models.
//
// Exit codes: common/exit_codes.h (0 success, 1 failure, 2 bad usage or configuration; validate:
// 0 pass, 1 reject, 2 no verdict; train: 75 checkpointed on a signal, requeue it).
namespace perennial {

int runCli(int argc, char** argv);

}  // namespace perennial
