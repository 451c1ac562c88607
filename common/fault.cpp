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

// PERENNIAL_FAULT_AT, read once.
struct KillAt {
  std::string point;  // "" when unset
  long nth = 1;
  std::atomic<long> seen{0};
  KillAt() {
    const char* at = std::getenv("PERENNIAL_FAULT_AT");
    if (!at || !*at) return;
    const std::string spec(at);
    const auto colon = spec.find(':');
    point = spec.substr(0, colon);
    if (colon != std::string::npos) {
      char* end = nullptr;
      const long n = std::strtol(spec.c_str() + colon + 1, &end, 10);
      nth = end && *end == '\0' && n >= 1 ? n : 1;
    }
  }
};

KillAt& killAt() {
  static KillAt k;
  return k;
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
  KillAt& k = killAt();
  if (!k.point.empty() && k.point == point && ++k.seen == k.nth) ::kill(::getpid(), SIGKILL);
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
