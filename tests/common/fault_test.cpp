// NOTE [Fault points] (common/fault.h): the handler sees every point in order, handlers nest and
// are removed, and PERENNIAL_FAULT_AT kills (or, with ":stop", stops) the process at the Nth
// arrival, not before.
#include "common/fault.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
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

// ":stop" freezes the process instead (SIGSTOP), as a hung peer. A stopped process never exits,
// which a death test cannot wait for: this test runs itself again in a child (PERENNIAL_FAULT_TEST_CHILD
// set), sees it stop at the second arrival, and kills it.
TEST(FaultStop, EnvironmentStopsAtTheNthArrival) {
  if (::getenv("PERENNIAL_FAULT_TEST_CHILD")) {
    fault::reached("linked");  // the first arrival: goes on
    const char mark[] = "passed-first";
    if (::write(3, mark, sizeof(mark) - 1) < 0) ::_exit(6);  // to the parent's pipe
    fault::reached("linked");  // the second: SIGSTOP
    ::_exit(5);               // only if it did not stop
  }
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::dup2(out[1], 3);
    const int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, STDOUT_FILENO);  // the child's own gtest report
    ::setenv("PERENNIAL_FAULT_TEST_CHILD", "1", 1);
    ::setenv("PERENNIAL_FAULT_AT", "linked:2:stop", 1);
    ::execl("/proc/self/exe", "fault_child", "--gtest_filter=FaultStop.EnvironmentStopsAtTheNthArrival", nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, WUNTRACED), child);
  const bool stopped = WIFSTOPPED(status) && WSTOPSIG(status) == SIGSTOP;
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  std::string said;
  char buf[256];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof(buf))) > 0;) said.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  EXPECT_TRUE(stopped) << "status " << status;
  EXPECT_NE(said.find("passed-first"), std::string::npos) << said;
}

}  // namespace
}  // namespace perennial
