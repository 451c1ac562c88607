#pragma once
// Preemption signals. SIGUSR1 (Slurm's pre-timeout signal), SIGTERM and SIGINT only set a flag in
// the handler; the training loop polls it at step boundaries, the ranks agree, checkpoint, and
// exit with kExitRequeue. A second SIGINT restores the default action, so a user can still
// interrupt a stuck process from the terminal. Instances nest: `perennial train` installs the
// handlers first thing, so a signal during start-up (MPI, data, resume) is not fatal but makes
// the run stop at its first step boundary.
namespace perennial {

class StopSignals {
 public:
  StopSignals();   // installs the handlers
  ~StopSignals();  // restores the previous ones
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  bool requested() const;
  int signal() const;  // the first signal received, 0 if none

  // For tests: behave as if SIG had arrived.
  static void raiseFlag(int sig);
};

}  // namespace perennial
