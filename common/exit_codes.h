#pragma once
// The exit statuses of every `perennial` command, in one place: the scheduler, the Slurm
// executor, train.sbatch and the tests read the same numbers the commands return.
//
//   0    success (validate: the candidate passes)
//   1    failure: bad data, I/O, communication, an internal error (validate: rejected)
//   2    bad usage or configuration (validate: no verdict, whatever the reason)
//   75   train: a signal made the run checkpoint and stop; requeue it with --resume auto
//        (EX_TEMPFAIL from sysexits.h: a temporary failure that a retry is expected to cure)
//   124  a collective timed out and the watchdog ended the process (as timeout(1) does); also
//        a registry on_promote command that ran past its limit
namespace perennial::exit_code {

inline constexpr int kOk = 0;
inline constexpr int kFailure = 1;
inline constexpr int kUsage = 2;
inline constexpr int kRequeue = 75;
inline constexpr int kTimeout = 124;

// `perennial validate`: its status is the verdict.
inline constexpr int kGatePass = 0;
inline constexpr int kGateReject = 1;
inline constexpr int kGateNoVerdict = 2;

}  // namespace perennial::exit_code
