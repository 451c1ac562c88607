#pragma once
// Shared by the scheduler's GoogleTests: the Fashion-MNIST dataset spec of small test shards.
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "dataset/shard_dataset.h"

// EXPECT that NEEDLE occurs in HAYSTACK (gtest's IsSubstring prints both on failure).
#define EXPECT_CONTAINS(haystack, needle) EXPECT_PRED_FORMAT2(::testing::IsSubstring, needle, haystack)

namespace perennial::sched::testing {

inline constexpr int64_t kRows = 8;
inline constexpr int64_t kElems = 28 * 28;

// Runs FN, expects it to throw E, and returns the message ("" when it did not throw E).
template <typename E>
std::string messageOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

inline data::DatasetSpec fashionSpec() {
  return data::DatasetSpec{"fashion-mnist", "images", "labels", {28, 28}, DType::kUInt8, DType::kInt64, 10};
}

}  // namespace perennial::sched::testing
