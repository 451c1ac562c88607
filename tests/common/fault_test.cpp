// NOTE [Fault points] (common/fault.h): the handler sees every point in order, handlers nest and
// are removed, and PERENNIAL_FAULT_AT kills the process at the Nth arrival, not before.
#include "common/fault.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace perennial {
namespace {

TEST(Fault, HandlersSeeThePointsInOrderAndNest) {
  fault::reached("nobody-listens");  // no handler: nothing happens
  std::vector<std::string> outer, inner;
  {
    fault::ScopedHandler a([&](const std::string& p) { outer.push_back(p); });
    fault::reached("one");
    {
      fault::ScopedHandler b([&](const std::string& p) { inner.push_back(p); });
      fault::reached("two");
    }
    fault::reached("three");
  }
  fault::reached("after");
  EXPECT_EQ(outer, (std::vector<std::string>{"one", "three"}));
  EXPECT_EQ(inner, (std::vector<std::string>{"two"}));
}

TEST(Fault, AHandlerMayThrowToFailTheStep) {
  fault::ScopedHandler h([](const std::string& p) {
    if (p == "disk-write") throw std::runtime_error("injected at " + p);
  });
  EXPECT_NO_THROW(fault::reached("other"));
  EXPECT_THROW(fault::reached("disk-write"), std::runtime_error);
}

// The environment variable is read once per process: the death tests re-run this test in a
// fresh process ("threadsafe" style) with it set.
TEST(FaultDeathTest, EnvironmentKillsAtTheNthArrival) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ::setenv("PERENNIAL_FAULT_AT", "linked:2", 1);
  EXPECT_EXIT(
      {
        fault::reached("validated");
        fault::reached("linked");  // the first arrival: goes on
        fault::reached("recorded");
        fault::reached("linked");  // the second: SIGKILL
        ::_exit(0);
      },
      ::testing::KilledBySignal(SIGKILL), "");
  ::setenv("PERENNIAL_FAULT_AT", "never-reached", 1);
  EXPECT_EXIT(
      {
        fault::reached("linked");
        ::_exit(3);
      },
      ::testing::ExitedWithCode(3), "");
  ::unsetenv("PERENNIAL_FAULT_AT");
}

}  // namespace
}  // namespace perennial
