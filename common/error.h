#pragma once
// Error policy (the exit status each error gives: common/exit_codes.h, mapped in cli/run_cli.cpp):
//  - failures a caller is expected to handle are typed exceptions derived from perennial::Error;
//  - broken invariants are PERENNIAL_CHECK failures (InternalError) that print file:line and values;
//  - library code never calls exit(); the CLI maps exceptions to exit codes.
#include <sstream>
#include <stdexcept>
#include <string>

namespace perennial {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad configuration or command line: the CLI exits with status 2.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// Bad or unreadable input data (IDX files, HDF5 shards).
class DataError : public Error {
 public:
  using Error::Error;
};

// A collective failed or timed out.
class CommError : public Error {
 public:
  using Error::Error;
};

// An HDF5 file could not be written or read back as expected.
class IoError : public Error {
 public:
  using Error::Error;
};

// A broken invariant: a bug in Perennial, never a user's mistake.
class InternalError : public Error {
 public:
  using Error::Error;
};

namespace detail {
[[noreturn]] inline void checkFailed(const char* expr, const char* file, int line,
                                     const std::string& msg) {
  std::ostringstream os;
  os << "internal check failed: " << expr << " at " << file << ":" << line;
  if (!msg.empty()) os << ": " << msg;
  throw InternalError(os.str());
}
}  // namespace detail

}  // namespace perennial

// PERENNIAL_CHECK(cond, "message" << value): throws InternalError with file:line.
#define PERENNIAL_CHECK(cond, msg)                                                       \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::ostringstream perennial_check_os_;                                           \
      perennial_check_os_ << msg;                                                       \
      ::perennial::detail::checkFailed(#cond, __FILE__, __LINE__, perennial_check_os_.str()); \
    }                                                                                   \
  } while (0)
