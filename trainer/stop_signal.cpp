#include "trainer/stop_signal.h"

#include <csignal>

namespace perennial {
namespace {

// Signal handlers can only touch lock-free atomics / sig_atomic_t: this flag is necessarily
// process-wide.
volatile std::sig_atomic_t gSignal = 0;
struct sigaction gOld[3];
int gDepth = 0;  // nested instances: only the outermost installs, resets and restores
constexpr int kSignals[3] = {SIGUSR1, SIGTERM, SIGINT};

void onSignal(int sig) {
  if (gSignal == 0) {
    gSignal = sig;
  } else if (sig == SIGINT) {
    std::signal(SIGINT, SIG_DFL);  // second Ctrl-C: the default action
  }
}

}  // namespace

StopSignals::StopSignals() {
  if (gDepth++ > 0) return;
  gSignal = 0;
  struct sigaction sa {};
  sa.sa_handler = onSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &sa, &gOld[i]);
}

StopSignals::~StopSignals() {
  if (--gDepth > 0) return;
  for (int i = 0; i < 3; ++i) sigaction(kSignals[i], &gOld[i], nullptr);
}

bool StopSignals::requested() const { return gSignal != 0; }
int StopSignals::signal() const { return gSignal; }
void StopSignals::raiseFlag(int sig) { gSignal = sig; }

}  // namespace perennial
