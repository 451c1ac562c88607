#pragma once
// The libFuzzer entry point around one of targets.h's entry points: whatever escapes it (an
// unexpected exception type or a violated property) is printed with its type and aborts, which
// libFuzzer records as a crash and saves with the input.
#include <cxxabi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <typeinfo>

#include "tests/fuzz/targets.h"

namespace perennial::fuzz {

inline std::string demangled(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && d ? d : name;
  std::free(d);
  return out;
}

template <void (*Target)(const uint8_t*, size_t)>
int runOne(const uint8_t* data, size_t size) {
  try {
    Target(data, size);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\n==perennial-fuzz== unexpected %s: %s\n", demangled(typeid(e).name()).c_str(), e.what());
    std::abort();
  } catch (...) {
    std::fprintf(stderr, "\n==perennial-fuzz== unexpected exception of unknown type\n");
    std::abort();
  }
  return 0;
}

}  // namespace perennial::fuzz

#define PERENNIAL_FUZZ_TARGET(fn)                                                 \
  extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {      \
    return ::perennial::fuzz::runOne<&::perennial::fuzz::fn>(data, size);        \
  }
