// NOTE [Staging buffers] (trainer/checkpoint_staging.h): an asynchronous capture copies the state
// into one buffer allocated once and reused, and the copy is what a synchronous capture refers to.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "checkpoint/document.h"
#include "trainer/checkpoint_staging.h"
#include "trainer/checkpointing.h"

namespace perennial {
namespace {

struct Trained {
  torch::nn::Sequential model{torch::nn::Linear(7, 5), torch::nn::ReLU(), torch::nn::Linear(5, 3)};
  torch::optim::SGD opt{model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9)};
  void step() {
    opt.zero_grad();
    model->forward(torch::randn({4, 7})).sum().backward();
    opt.step();
  }
};

checkpoint::Document capture(Trained& t, bool copy, StagingBuffers* staging) {
  CheckpointMeta meta;
  meta.arch = "mlp";
  meta.optimizer = "sgd";
  meta.rngStates = cpuGeneratorState();
  return captureState(*t.model, t.opt, TrainProgress{}, meta, copy, staging);
}

// The same groups, tensors and bytes.
void expectSameTensors(const checkpoint::Document& a, const checkpoint::Document& b) {
  ASSERT_EQ(a.groups.size(), b.groups.size());
  for (size_t g = 0; g < a.groups.size(); ++g) {
    ASSERT_EQ(a.groups[g].path, b.groups[g].path);
    ASSERT_EQ(a.groups[g].tensors.size(), b.groups[g].tensors.size()) << a.groups[g].path;
    for (size_t i = 0; i < a.groups[g].tensors.size(); ++i) {
      const auto& x = a.groups[g].tensors[i];
      const auto& y = b.groups[g].tensors[i];
      EXPECT_EQ(x.name, y.name);
      EXPECT_EQ(x.shape, y.shape);
      EXPECT_EQ(x.byteSize(), y.byteSize()) << a.groups[g].path << "/" << x.name;
      // memcmp of no bytes may get null pointers (an empty tensor), which it must not be given.
      if (x.byteSize() > 0 && x.byteSize() == y.byteSize()) {
        EXPECT_EQ(std::memcmp(x.data(), y.data(), x.byteSize()), 0) << a.groups[g].path << "/" << x.name;
      }
    }
  }
}

TEST(Staging, AsyncCapturesCopyIntoOneReusedBuffer) {
  torch::manual_seed(3);
  Trained t;
  t.step();
  StagingBuffers staging(/*pinned=*/false);
  for (int save = 0; save < 3; ++save) {
    checkpoint::Document staged = capture(t, /*copy=*/true, &staging);
    checkpoint::Document live = capture(t, /*copy=*/false, nullptr);
    expectSameTensors(staged, live);
    // A copy: training goes on without changing what is being written.
    const checkpoint::Tensor* w = staged.group("state_dict")->find("0.weight");
    ASSERT_NE(w, nullptr);
    const float before = static_cast<const float*>(w->data())[0];
    t.step();
    EXPECT_EQ(static_cast<const float*>(w->data())[0], before);
    EXPECT_NE(t.model->parameters()[0].view(-1)[0].item<float>(), before);
  }
  EXPECT_EQ(staging.allocations(), 1) << "the staging buffer is allocated once per run";
}

TEST(Staging, GrowsOnlyWhenTheStateGrows) {
  torch::manual_seed(4);
  Trained t;  // no momentum buffers before the first step: a smaller state
  StagingBuffers staging(/*pinned=*/false);
  capture(t, true, &staging);
  const size_t before = staging.capacity();
  t.step();
  checkpoint::Document doc = capture(t, true, &staging);
  EXPECT_GT(staging.capacity(), before);
  EXPECT_EQ(staging.allocations(), 2);
  ASSERT_NE(doc.group("optimizer/momentum_buffer"), nullptr);
  capture(t, true, &staging);
  EXPECT_EQ(staging.allocations(), 2);
}

}  // namespace
}  // namespace perennial
