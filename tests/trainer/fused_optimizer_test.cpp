// The fused optimizer step (trainer/optim/fused_optimizer.h) against LibTorch's optimizers: two
// copies of one model see the same batches, one stepped by torch::optim::SGD/Adam/AdamW on its
// own gradients, the other by the fused step over flat bucket-aligned storage; parameters and
// the checkpointed optimizer state must be bitwise equal after every step, and checkpoints must
// move between the two.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>

#include "checkpoint/document.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/config/train_config.h"
#include "trainer/models/model_factory.h"
#include "trainer/optim/fused_optimizer.h"
#include "fake_comm.h"

namespace perennial {
namespace {

const ModelInput kInput{{4, 7}, 5};

TrainConfig optimConfig(const std::string& name) {
  TrainConfig c;
  c.arch = "mlp";
  c.hidden = {13, 9};  // odd sizes: LibTorch's vectorised loops leave scalar tails
  c.optimizer = name;
  c.lr = 0.05;
  return c;
}

bool sameBits(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor x = a.contiguous(), y = b.contiguous();
  return x.sizes() == y.sizes() && x.scalar_type() == y.scalar_type() &&
         (x.numel() == 0 ||  // memcmp must not get the null pointers of empty tensors
          std::memcmp(x.data_ptr(), y.data_ptr(), static_cast<size_t>(x.numel()) * x.element_size()) == 0);
}

checkpoint::Document capture(torch::nn::Module& model, torch::optim::Optimizer& opt, const std::string& name) {
  CheckpointMeta meta;
  meta.arch = "mlp";
  meta.optimizer = name;
  meta.rngStates = cpuGeneratorState();
  return captureState(model, opt, TrainProgress{}, meta, /*copy=*/true);
}

// Every optimizer tensor of A is in B under the same group and name with the same bits, and B has
// no other; returns how many were compared.
size_t expectSameOptimizerState(const checkpoint::Document& a, const checkpoint::Document& b, const std::string& when) {
  size_t compared = 0;
  for (const auto& g : a.groups) {
    if (g.path.rfind("optimizer/", 0) != 0) continue;
    const checkpoint::Group* other = b.group(g.path);
    EXPECT_NE(other, nullptr) << when << ": group " << g.path << " missing";
    if (!other) continue;
    EXPECT_EQ(g.tensors.size(), other->tensors.size()) << when << ": " << g.path;
    for (const auto& t : g.tensors) {
      const checkpoint::Tensor* u = other->find(t.name);
      EXPECT_NE(u, nullptr) << when << ": " << g.path << "/" << t.name << " missing";
      if (!u) continue;
      EXPECT_EQ(t.shape, u->shape) << when << ": " << g.path << "/" << t.name;
      EXPECT_TRUE(t.shape == u->shape && (t.byteSize() == 0 || std::memcmp(t.data(), u->data(), t.byteSize()) == 0))
          << when << ": " << g.path << "/" << t.name << " differs";
      ++compared;
    }
  }
  for (const auto& g : b.groups) {
    if (g.path.rfind("optimizer/", 0) == 0) {
      EXPECT_NE(a.group(g.path), nullptr) << when << ": extra group " << g.path;
    }
  }
  return compared;
}

// One model trained by one optimizer; the fused ones keep their gradients in a reducer's buckets.
struct Replica {
  Model model;
  RecordingComm comm;
  std::unique_ptr<GradientReducer> reducer;
  std::unique_ptr<torch::optim::Optimizer> opt;

  Replica(TrainConfig c, bool fused, size_t capBytes) {
    torch::manual_seed(11);
    model = makeModel(c, kInput);
    c.fusedOptimizer = fused;
    if (fused) {
      reducer = std::make_unique<GradientReducer>(model->parameters(), comm, capBytes);
      opt = makeOptimizer(c, model->parameters(),
                          std::make_shared<FlatBuckets>(model->parameters(), reducer->buckets(), reducer->gradBuffers()));
    } else {
      opt = makeOptimizer(c, model->parameters(), nullptr);
    }
  }
  void step(const torch::Tensor& x, const torch::Tensor& y, double lr) {
    if (reducer) {
      reducer->zeroGrad();
    } else {
      opt->zero_grad();
    }
    torch::nn::functional::cross_entropy(model.forward(x), y).backward();
    if (reducer) reducer->reduce(/*prescaled=*/true);
    for (auto& group : opt->param_groups()) group.options().set_lr(lr);
    opt->step();
  }
};

void expectSameParams(Replica& a, Replica& b, const std::string& when) {
  auto pa = a.model->named_parameters(), pb = b.model->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    ASSERT_TRUE(sameBits(pa[i].value(), pb[i].value())) << when << ": parameter " << pa[i].key() << " differs";
  }
}

// Trains LibTorch's and the fused optimizer side by side for STEPS steps (the learning rate
// changes every step, as a schedule does) and compares after each step.
void expectBitwise(const TrainConfig& c, int steps, size_t capBytes) {
  Replica ref(c, /*fused=*/false, capBytes), fused(c, /*fused=*/true, capBytes);
  ASSERT_GT(fused.reducer->buckets().size(), 1u) << "the test wants several buckets";
  expectSameParams(ref, fused, "before the first step");
  torch::manual_seed(5);
  for (int s = 0; s < steps; ++s) {
    torch::Tensor x = torch::randn({16, 4, 7});
    torch::Tensor y = torch::randint(0, 5, {16}, torch::kInt64);
    const double lr = c.lr * (1.0 + 0.25 * (s % 4));
    ref.step(x, y, lr);
    fused.step(x, y, lr);
    const std::string when = c.optimizer + " step " + std::to_string(s + 1);
    expectSameParams(ref, fused, when);
    const size_t compared = expectSameOptimizerState(capture(*ref.model, *ref.opt, c.optimizer),
                                                     capture(*fused.model, *fused.opt, c.optimizer), when);
    const bool stateless = c.optimizer == "sgd" && c.momentum == 0;
    EXPECT_EQ(compared == 0, stateless) << when << ": " << compared << " optimizer tensors";
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(FusedOptimizer, ProbeFindsLibTorchsRounding) {
  bool bitwise = false;
  libTorchMulAdd(&bitwise);
  EXPECT_TRUE(bitwise) << "the fused kernels could not reproduce LibTorch's rounding on this machine";
}

TEST(FusedOptimizer, ParametersBecomeViewsOfTheirBucket) {
  TrainConfig c = optimConfig("sgd");
  Replica r(c, /*fused=*/true, 64 * 4);
  for (const auto& p : r.model->parameters()) {
    ASSERT_TRUE(p.grad().defined());
    // Each parameter sits at the offset of its gradient in a buffer of the same layout.
    bool found = false;
    for (size_t b = 0; b < r.reducer->buckets().size() && !found; ++b) {
      for (const auto& e : r.reducer->buckets()[b].entries) {
        const auto& grads = r.reducer->gradBuffers()[b];
        if (static_cast<const char*>(p.grad().data_ptr()) ==
            static_cast<const char*>(grads.data_ptr()) + e.offset * grads.element_size()) {
          found = true;
        }
      }
    }
    EXPECT_TRUE(found);
  }
}

TEST(FusedOptimizer, SgdMomentumIsBitwiseLibTorchs) {
  TrainConfig c = optimConfig("sgd");
  c.momentum = 0.9;
  expectBitwise(c, 6, 64 * 4);
}

TEST(FusedOptimizer, SgdNesterovWithWeightDecayIsBitwiseLibTorchs) {
  TrainConfig c = optimConfig("sgd");
  c.momentum = 0.9;
  c.nesterov = true;
  c.weightDecay = 1e-3;
  expectBitwise(c, 6, 64 * 4);
}

TEST(FusedOptimizer, PlainSgdIsBitwiseLibTorchs) {
  TrainConfig c = optimConfig("sgd");
  c.momentum = 0.0;
  c.weightDecay = 1e-4;
  expectBitwise(c, 4, 100 * 4);
}

TEST(FusedOptimizer, AdamIsBitwiseLibTorchs) {
  TrainConfig c = optimConfig("adam");
  c.lr = 1e-3;
  expectBitwise(c, 6, 64 * 4);
  c.weightDecay = 1e-2;
  expectBitwise(c, 6, 200 * 4);
}

TEST(FusedOptimizer, AdamWIsBitwiseLibTorchs) {
  TrainConfig c = optimConfig("adamw");
  c.lr = 1e-3;
  c.weightDecay = 1e-2;
  expectBitwise(c, 6, 64 * 4);
}

// A checkpoint written by either optimizer restores into the other, and training goes on as if
// never interrupted (the format is LibTorch's state, by name).
TEST(FusedOptimizer, CheckpointsMoveBetweenFusedAndLibTorch) {
  for (const std::string name : {"sgd", "adam", "adamw"}) {
    TrainConfig c = optimConfig(name);
    c.momentum = 0.9;
    c.weightDecay = 1e-3;
    for (const bool fromFused : {true, false}) {
      Replica a(c, fromFused, 64 * 4);
      torch::manual_seed(7);
      std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
      for (int s = 0; s < 6; ++s) batches.emplace_back(torch::randn({8, 4, 7}), torch::randint(0, 5, {8}, torch::kInt64));
      for (int s = 0; s < 3; ++s) a.step(batches[s].first, batches[s].second, c.lr);
      checkpoint::Document doc = capture(*a.model, *a.opt, name);
      Replica b(c, !fromFused, 64 * 4);
      restoreState(doc, "test", *b.model, *b.opt, name, 0, 1);
      for (int s = 3; s < 6; ++s) {
        a.step(batches[s].first, batches[s].second, c.lr);
        b.step(batches[s].first, batches[s].second, c.lr);
      }
      const std::string when = name + (fromFused ? ": fused -> LibTorch" : ": LibTorch -> fused");
      expectSameParams(a, b, when);
      EXPECT_GT(expectSameOptimizerState(capture(*a.model, *a.opt, name), capture(*b.model, *b.opt, name), when), 0u);
    }
  }
}

// Before the first step there is no state (as LibTorch), so such a checkpoint has no optimizer
// groups; the state that appears after it has LibTorch's names.
TEST(FusedOptimizer, StateAppearsAtTheFirstStepUnderLibTorchsNames) {
  TrainConfig c = optimConfig("adam");
  Replica r(c, /*fused=*/true, 64 * 4);
  checkpoint::Document before = capture(*r.model, *r.opt, "adam");
  for (const auto& g : before.groups) EXPECT_NE(g.path.rfind("optimizer/", 0), 0u) << g.path;
  r.step(torch::randn({8, 4, 7}), torch::randint(0, 5, {8}, torch::kInt64), c.lr);
  checkpoint::Document after = capture(*r.model, *r.opt, "adam");
  const size_t params = r.model->parameters().size();
  for (const std::string kind : {"step", "exp_avg", "exp_avg_sq"}) {
    const checkpoint::Group* g = after.group("optimizer/" + kind);
    ASSERT_NE(g, nullptr) << kind;
    EXPECT_EQ(g->tensors.size(), params);
    ASSERT_NE(g->find("1.weight"), nullptr) << "state is named by parameter";
  }
}

}  // namespace
}  // namespace perennial
