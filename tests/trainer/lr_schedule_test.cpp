#include "trainer/optim/lr_schedule.h"

#include <gtest/gtest.h>

namespace perennial {
namespace {

TEST(LrSchedule, ConstantWithWarmup) {
  LrSchedule s{"constant", 0.1, 4, 1000, 0.1, 0, 100};
  EXPECT_DOUBLE_EQ(s.at(0), 0.025);
  EXPECT_DOUBLE_EQ(s.at(3), 0.1);
  EXPECT_DOUBLE_EQ(s.at(50), 0.1);
}

TEST(LrSchedule, StepDecay) {
  LrSchedule s{"step", 1.0, 0, 10, 0.5, 0, 100};
  EXPECT_DOUBLE_EQ(s.at(0), 1.0);
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);
  EXPECT_DOUBLE_EQ(s.at(10), 0.5);
  EXPECT_DOUBLE_EQ(s.at(25), 0.25);
}

TEST(LrSchedule, CosineFromBaseToMinAfterWarmup) {
  LrSchedule s{"cosine", 1.0, 10, 0, 0, 0.1, 110};
  EXPECT_DOUBLE_EQ(s.at(9), 1.0);          // last warm-up step reaches the base rate
  EXPECT_DOUBLE_EQ(s.at(10), 1.0);         // cosine starts at the base rate
  EXPECT_NEAR(s.at(60), 0.55, 1e-12);      // half-way: (base + min) / 2
  EXPECT_NEAR(s.at(110), 0.1, 1e-12);      // end: min_lr
  EXPECT_NEAR(s.at(500), 0.1, 1e-12);      // and stays there
}

}  // namespace
}  // namespace perennial
