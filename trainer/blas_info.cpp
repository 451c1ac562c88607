#include "trainer/blas_info.h"

#include <dlfcn.h>
#include <link.h>

#include <climits>
#include <cstdlib>
#include <filesystem>

namespace perennial {
namespace {

int findBlas(struct dl_phdr_info* info, size_t, void* out) {
  const std::string name = info->dlpi_name ? info->dlpi_name : "";
  const auto base = std::filesystem::path(name).filename().string();
  if (base.rfind("libblas.so", 0) == 0 || base.rfind("libopenblas", 0) == 0 ||
      base.rfind("libmkl_rt", 0) == 0) {
    auto* s = static_cast<std::string*>(out);
    if (s->empty() || base.rfind("libblas.so", 0) != 0) *s = name;
  }
  return 0;
}

}  // namespace

BlasInfo detectBlas() {
  BlasInfo info;
  dl_iterate_phdr(findBlas, &info.library);
  if (!info.library.empty()) {
    std::error_code ec;
    auto real = std::filesystem::canonical(info.library, ec);
    if (!ec) info.library = real.string();
  }
  using ConfigFn = char* (*)();
  if (auto fn = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"))) {
    info.vendor = "openblas";
    info.config = fn();
  } else if (dlsym(RTLD_DEFAULT, "mkl_get_version")) {
    info.vendor = "mkl";
  } else if (info.library.find("/blas/") != std::string::npos ||
             info.library.find("libblas.so") != std::string::npos) {
    info.vendor = "reference";
  } else {
    info.vendor = "unknown";
  }
  return info;
}

void setBlasThreads(int threads) {
  using SetFn = void (*)(int);
  if (auto fn = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) fn(threads);
}

}  // namespace perennial
