#include "common/fault.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

namespace perennial::fault {
namespace {

struct State {
  std::mutex mutex;
  std::shared_ptr<const Handler> handler;
  std::atomic<bool> active{false};  // a handler is installed: the fast path's one load
};

State& state() {
  static State s;
  return s;
}

// PERENNIAL_FAULT_AT=NAME[:N[:ACTION]], read once.
struct FaultAt {
  std::string point;  // "" when unset
  long nth = 1;
  int signal = SIGKILL;  // ACTION kill; stop: SIGSTOP
  std::atomic<long> seen{0};
  FaultAt() {
    const char* at = std::getenv("PERENNIAL_FAULT_AT");
    if (!at || !*at) return;
    const std::string spec(at);
    const auto colon = spec.find(':');
    point = spec.substr(0, colon);
    if (colon == std::string::npos) return;
    const auto second = spec.find(':', colon + 1);
    const std::string count = spec.substr(colon + 1, second == std::string::npos ? std::string::npos : second - colon - 1);
    char* end = nullptr;
    const long n = std::strtol(count.c_str(), &end, 10);
    nth = end && *end == '\0' && n >= 1 ? n : 1;
    if (second != std::string::npos && spec.substr(second + 1) == "stop") signal = SIGSTOP;
  }
};

FaultAt& faultAt() {
  static FaultAt f;
  return f;
}

}  // namespace

void reached(const std::string& point) {
  State& s = state();
  if (s.active.load(std::memory_order_acquire)) {
    std::shared_ptr<const Handler> h;
    {
      std::lock_guard<std::mutex> lock(s.mutex);
      h = s.handler;
    }
    if (h && *h) (*h)(point);
  }
  FaultAt& f = faultAt();
  if (!f.point.empty() && f.point == point && ++f.seen == f.nth) ::kill(::getpid(), f.signal);
}

ScopedHandler::ScopedHandler(Handler handler) {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  previous_ = std::move(s.handler);
  s.handler = std::make_shared<const Handler>(std::move(handler));
  s.active.store(true, std::memory_order_release);
}

ScopedHandler::~ScopedHandler() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  s.handler = std::move(previous_);
  s.active.store(s.handler != nullptr, std::memory_order_release);
}

}  // namespace perennial::fault
