#pragma once
// SHA-256 through OpenSSL's EVP interface.
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace perennial {

using Digest = std::array<uint8_t, 32>;

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  // An independent copy of the state so far: both can go on with different data (a hasher that
  // may have to resume from an earlier point keeps copies).
  Sha256 clone() const;

  void update(const void* data, size_t bytes);
  Digest finish();  // the object may not be updated after finish()

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string toHex(const Digest& digest);
Digest sha256(const void* data, size_t bytes);
// Streams the file; throws IoError naming the file when it cannot be read.
Digest sha256File(const std::string& path);

}  // namespace perennial
