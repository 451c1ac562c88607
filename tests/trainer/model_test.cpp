// LibTorch-dependent unit tests: model shapes and names, and the gradient reducer over a fake
// communicator (the multi-rank behaviour is tested under mpiexec in tests/mpi/).
#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "common/error.h"
#include "common/fault.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/config/train_config.h"
#include "dataset/shard_dataset.h"
#include "trainer/models/model_factory.h"
#include "trainer/trainer.h"
#include "fake_comm.h"
#include "tiny_dataset.h"

namespace perennial {
namespace {

TrainConfig config(const std::string& arch) {
  TrainConfig c;
  c.arch = arch;
  return c;
}

std::vector<std::string> names(const Model& m) {
  std::vector<std::string> out;
  for (const auto& p : m->named_parameters()) out.push_back(p.key());
  return out;
}

TEST(Models, MlpShapesAndStateDictNames) {
  TrainConfig c = config("mlp");
  c.hidden = {256, 128, 100};
  auto m = makeModel(c, {{28, 28}, 10});
  auto y = m.forward(torch::zeros({5, 28, 28}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{5, 10}));
  // As nn.Sequential(Flatten, Linear, ReLU, Linear, ReLU, Linear, ReLU, Linear) names them.
  EXPECT_EQ(names(m), (std::vector<std::string>{"1.weight", "1.bias", "3.weight", "3.bias", "5.weight",
                                                "5.bias", "7.weight", "7.bias"}));
  int64_t n = 0;
  for (const auto& p : m->parameters()) n += p.numel();
  EXPECT_EQ(n, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 100 + 100 + 100 * 10 + 10);
}

TEST(Models, CnnShapes) {
  TrainConfig c = config("cnn");
  c.convChannels = {8, 16};
  c.kernelSize = 5;
  c.fcHidden = {32};
  c.dropout = 0.25;
  auto m = makeModel(c, {{28, 28}, 10});
  auto y = m.forward(torch::zeros({3, 28, 28}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{3, 10}));
  // conv 1->8 k5, conv 8->16 k5, fc 16*7*7 -> 32, fc 32 -> 10
  auto ps = m->parameters();
  ASSERT_EQ(ps.size(), 8u);
  EXPECT_EQ(ps[0].sizes(), (std::vector<int64_t>{8, 1, 5, 5}));
  EXPECT_EQ(ps[2].sizes(), (std::vector<int64_t>{16, 8, 5, 5}));
  EXPECT_EQ(ps[4].sizes(), (std::vector<int64_t>{32, 16 * 7 * 7}));
  EXPECT_EQ(ps[6].sizes(), (std::vector<int64_t>{10, 32}));
  // [C, H, W] inputs are accepted too.
  auto m3 = makeModel(c, {{3, 16, 16}, 4});
  EXPECT_EQ(m3.forward(torch::zeros({2, 3, 16, 16})).sizes(), (std::vector<int64_t>{2, 4}));
}

TEST(Models, CnnWithTooManyPoolsIsAConfigError) {
  TrainConfig c = config("cnn");
  c.convChannels = {4, 4, 4, 4, 4, 4};
  EXPECT_THROW(makeModel(c, {{28, 28}, 10}), ConfigError);
}

TEST(Models, SameSeedSameInitialWeights) {
  TrainConfig c = config("mlp");
  torch::manual_seed(5);
  auto a = makeModel(c, {{28, 28}, 10});
  torch::manual_seed(5);
  auto b = makeModel(c, {{28, 28}, 10});
  auto pa = a->parameters(), pb = b->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
}

// NOTE [TorchScript export]: the built-in models as TorchScript that LibTorch loads, giving the
// trainer's outputs bit for bit (the same operators), with trainable parameters of the same names.
TEST(Models, BuiltInModelsExportAsTorchScript) {
  const std::string dir = ::testing::TempDir() + "/perennial-export-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  TrainConfig mlp = config("mlp");
  mlp.hidden = {32, 16};
  mlp.dropout = 0.2;
  TrainConfig cnn = config("cnn");
  cnn.convChannels = {4, 8};
  cnn.kernelSize = 3;
  cnn.fcHidden = {16};
  cnn.dropout = 0.1;
  for (const auto& [c, shape] : {std::pair{mlp, std::vector<int64_t>{28, 28}}, std::pair{cnn, std::vector<int64_t>{28, 28}},
                                 std::pair{cnn, std::vector<int64_t>{3, 12, 12}}}) {
    SCOPED_TRACE(c.arch + " on " + c10::str(c10::IntArrayRef(shape)));
    torch::manual_seed(3);
    Model m = makeModel(c, {shape, 10});
    const std::string path = dir + "/" + c.arch + ".pt";
    std::string whyNot;
    ASSERT_TRUE(saveAsTorchScript(m, path, &whyNot)) << whyNot;
    torch::jit::Module loaded = torch::jit::load(path);
    std::vector<int64_t> batch{5};
    batch.insert(batch.end(), shape.begin(), shape.end());
    const torch::Tensor x = torch::rand(batch);
    m->eval();
    EXPECT_FALSE(loaded.is_training()) << "exported for inference";
    torch::NoGradGuard noGrad;
    EXPECT_TRUE(torch::equal(loaded.forward({x}).toTensor(), m.forward(x)));
    std::vector<std::string> got;
    for (const auto& p : loaded.named_parameters()) {
      got.push_back(p.name);
      EXPECT_TRUE(p.value.requires_grad()) << p.name;
    }
    EXPECT_EQ(got, names(m));
    loaded.train();  // dropout on: outputs vary, and the module still runs
    EXPECT_EQ(loaded.forward({x}).toTensor().sizes(), (std::vector<int64_t>{5, 10}));
  }
  // A Sequential with a layer that has no translation, and a module that is not a Sequential:
  // nothing is written, and the reason names the layer.
  std::string whyNot;
  auto bn = torch::nn::Sequential(torch::nn::Flatten(), torch::nn::Linear(4, 3), torch::nn::BatchNorm1d(3));
  EXPECT_FALSE(saveAsTorchScript(wrapModule(bn), dir + "/bn.pt", &whyNot));
  EXPECT_NE(whyNot.find("layer 2 ("), std::string::npos) << whyNot;
  EXPECT_NE(whyNot.find(") has no TorchScript translation"), std::string::npos) << whyNot;
  EXPECT_FALSE(std::filesystem::exists(dir + "/bn.pt"));
  EXPECT_FALSE(saveAsTorchScript(wrapModule(std::make_shared<torch::nn::LinearImpl>(4, 3)), dir + "/lin.pt", &whyNot));
  EXPECT_NE(whyNot.find("neither TorchScript nor a torch::nn::Sequential"), std::string::npos) << whyNot;
  std::filesystem::remove_all(dir);
}

// The C++ API (examples/custom_model): a model of one's own, built by name with its options.
TEST(Models, RegisteredModelWithOptions) {
  registerModel("test-linear", [](const TrainConfig& c, const ModelInput& in) {
    const int64_t features = in.featureShape.at(0) * in.featureShape.at(1);
    auto net = torch::nn::Sequential(torch::nn::Flatten(),
                                     torch::nn::Linear(torch::nn::LinearOptions(features, in.outputs)
                                                           .bias(c.option("bias", "yes") == "yes")));
    return wrapModule(net);
  });
  EXPECT_THROW(registerModel("test-linear", [](const TrainConfig&, const ModelInput&) { return Model{}; }),
               ConfigError);
  EXPECT_THROW(registerModel("mlp", [](const TrainConfig&, const ModelInput&) { return Model{}; }), ConfigError);
  EXPECT_THROW(registerModel("bad name", [](const TrainConfig&, const ModelInput&) { return Model{}; }), ConfigError);
  auto known = registeredModels();
  EXPECT_NE(std::find(known.begin(), known.end(), "test-linear"), known.end());
  EXPECT_NO_THROW(requireRegisteredModel("test-linear"));
  EXPECT_THROW(requireRegisteredModel("test-linaer"), ConfigError);

  TrainConfig c = config("test-linear");
  EXPECT_EQ(makeModel(c, {{4, 4}, 3})->parameters().size(), 2u);
  c.modelOptions = {{"bias", "no"}};
  EXPECT_EQ(makeModel(c, {{4, 4}, 3})->parameters().size(), 1u);
  // A key the builder never reads is refused, naming the key, the model and what it reads.
  c.modelOptions = {{"bias", "no"}, {"widht", "3"}};
  try {
    makeModel(c, {{4, 4}, 3});
    FAIL() << "an unread model.options key was accepted";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown key 'widht': model 'test-linear' does not read it (it reads: bias)"),
              std::string::npos)
        << e.what();
  }
  // Built-in models read none.
  TrainConfig mlp = config("mlp");
  mlp.modelOptions = {{"width", "3"}};
  EXPECT_THROW(makeModel(mlp, {{4, 4}, 3}), ConfigError);
  // Typed options refuse a malformed value.
  c.modelOptions = {{"width", "wide"}};
  EXPECT_THROW(c.optionInt("width", 1), ConfigError);
  EXPECT_THROW(c.optionReal("width", 1.0), ConfigError);
}


TEST(GradientReducer, GradientsAreBucketViewsAndAccumulate) {
  torch::manual_seed(1);
  TrainConfig c = config("mlp");
  c.hidden = {16};
  auto m = makeModel(c, {{4, 4}, 3});
  RecordingComm comm;
  // Cap of 64 floats: 16x16 weight (256 floats) alone, the rest packed greedily.
  GradientReducer reducer(m->parameters(), comm, 64 * 4);
  EXPECT_GT(reducer.buckets().size(), 1u);
  reducer.zeroGrad();
  auto x = torch::randn({8, 4, 4});
  auto y = torch::randint(0, 3, {8}, torch::kInt64);
  torch::nn::functional::cross_entropy(m.forward(x), y).backward();
  std::vector<torch::Tensor> once;
  for (const auto& p : m->parameters()) once.push_back(p.grad().clone());
  torch::nn::functional::cross_entropy(m.forward(x), y).backward();
  auto ps = m->parameters();
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_TRUE(torch::allclose(ps[i].grad(), 2 * once[i])) << "gradients accumulate in the buckets";
  }
  reducer.reduce();
  EXPECT_EQ(comm.reduces.size(), reducer.buckets().size()) << "one collective per bucket";
  size_t total = 0;
  for (size_t n : comm.reduces) total += n;
  size_t numel = 0;
  for (const auto& p : ps) numel += static_cast<size_t>(p.numel());
  EXPECT_EQ(total, numel);
  reducer.zeroGrad();
  for (const auto& p : ps) EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
}

// End to end (here, in the binary that initialises MPI; the INI quoting itself is tested in
// config_test.cpp): a run under a folder whose name holds '#' and ';' trains, and its own config.cfg
// (written by the trainer) trains the same model from the same data again.
TEST(Trainer, ARunUnderAFolderNamedLikeACommentReproducesFromItsConfig) {
  namespace stdfs = std::filesystem;
  const stdfs::path top = stdfs::temp_directory_path() / ("perennial-config-e2e-" + std::to_string(::getpid())) / "r6#x;y";
  stdfs::remove_all(top.parent_path());
  struct Cleanup {
    stdfs::path dir;
    ~Cleanup() { stdfs::remove_all(dir); }
  } cleanup{top.parent_path()};
  for (const char* part : {"train", "test"}) {
    const std::string src = tinyDataset(std::string("ini-") + part, 48);
    stdfs::create_directories(top / part);
    stdfs::copy_file(src + "/shard-0.h5", top / part / "shard-0.h5");
    stdfs::remove_all(src);
  }
  const std::string run1 = (top / "run 1").string(), run2 = (top / "run 2").string();
  TrainArgs a = parseTrainArgs({"--run-dir", run1, "--data.train", (top / "train").string(), "--data.test",
                                (top / "test").string(), "--model.hidden", "8", "--train.batch_size", "8",
                                "--train.max_steps", "2", "--log.progress", "none", "--log.level", "warn"});
  MpiCommunicator comm(std::chrono::seconds(30));
  const TrainResult r1 = train(a.config, a.runDir, comm);
  TrainArgs b = parseTrainArgs({"--config", run1 + "/config.cfg", "--run-dir", run2});
  ASSERT_EQ(b.config.trainDir, (top / "train").string()) << "the trainer's config.cfg does not read back its path";
  ASSERT_EQ(b.config.testDir, (top / "test").string());
  const TrainResult r2 = train(b.config, b.runDir, comm);
  EXPECT_EQ(r2.steps, 2);
  EXPECT_EQ(r2.paramSha256, r1.paramSha256);
}

TEST(Trainer, FailedAsyncSaveSurfacesAndFailsTheRun) {
  TrainConfig c = config("mlp");
  c.trainDir = tinyDataset("train", 64);
  c.testDir = tinyDataset("test", 16);
  c.hidden = {8};
  c.batchSize = 8;
  c.epochs = 3;
  c.ckptEverySteps = 2;
  c.ckptAsync = true;
  c.progress = "none";
  MpiCommunicator comm(std::chrono::seconds(30));
  TrainOptions options;
  const std::string run = c.trainDir + "-run";
  try {
    // The first tensor of the first checkpoint fails to reach the disk.
    fault::ScopedHandler faults([](const std::string& point) {
      if (point == "document-tensor-written") throw IoError("injected: disk full while writing the checkpoint");
    });
    train(c, run, comm, options);
    FAIL() << "a failed asynchronous save went unnoticed";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("injected"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(run + "/result.json")) << "a failed run must not report a result";
  // The same run without the fault completes, and its checkpoints verify.
  TrainResult r = train(c, run, comm);
  EXPECT_EQ(r.steps, 24);
  EXPECT_TRUE(std::filesystem::exists(run + "/result.json"));
}

}  // namespace
}  // namespace perennial
