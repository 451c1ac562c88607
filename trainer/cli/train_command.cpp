#include <iostream>

#include "common/log.h"
#include "trainer/cli/commands.h"
#include "trainer/comm/communicator.h"
#include "trainer/config/train_config.h"
#include "trainer/trainer.h"

namespace perennial::cli {

int trainCommand(const std::vector<std::string>& args) {
  TrainArgs parsed = parseTrainArgs(args);
  if (parsed.help) {
    std::cout << parsed.helpText;
    return 0;
  }
  const TrainConfig& c = parsed.config;
  CommOptions options;
  options.backend = c.backend;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(c.timeoutS * 1000));
  auto comm = makeCommunicator(options);
  log::init(comm->rank(), comm->size(), c.logLevel);
  train(c, parsed.runDir, *comm);
  return 0;
}

}  // namespace perennial::cli
