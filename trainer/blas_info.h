#pragma once
// Which BLAS the process has loaded. Debian's LibTorch calls the generic libblas.so.3, which is
// the reference BLAS (about 15x slower) unless OpenBLAS provides the alternative.
#include <string>

namespace perennial {

struct BlasInfo {
  std::string library;  // resolved path of the loaded libblas.so.3 (or the OpenBLAS library)
  std::string vendor;   // "openblas", "reference", "mkl", "unknown"
  std::string config;   // openblas_get_config() where available
  bool isReference() const { return vendor == "reference"; }
};

BlasInfo detectBlas();

// Sets OpenBLAS's own thread count when OpenBLAS is loaded (no-op otherwise).
void setBlasThreads(int threads);

}  // namespace perennial
