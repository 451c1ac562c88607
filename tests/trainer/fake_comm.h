#pragma once
// A one-rank communicator that records the collectives it is asked for (tests only).
#include <cstring>
#include <string>
#include <vector>

#include "trainer/comm/communicator.h"

namespace perennial {

class RecordingComm : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "recording"; }
  std::string backendVersion() const override { return "0"; }
  void allReduce(void*, size_t count, DType, ReduceOp) override { reduces.push_back(count); }
  void broadcast(void*, size_t bytes, int) override { broadcasts.push_back(bytes); }
  void allGather(const void* in, void* out, size_t bytes) override { std::memcpy(out, in, bytes); }
  void barrier() override {}
  std::vector<size_t> reduces, broadcasts;
};

}  // namespace perennial
