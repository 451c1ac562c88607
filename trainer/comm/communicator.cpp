#include "trainer/comm/communicator.h"

#include "common/error.h"
#include "common/log.h"
#include "perennial/build_config.h"
#include "trainer/comm/mpi/mpi_communicator.h"

namespace perennial {

std::vector<std::string> availableBackends() {
  if (PERENNIAL_HAVE_NCCL) return {"mpi", "nccl"};
  return {"mpi"};
}

std::unique_ptr<Communicator> makeCommunicator(const CommOptions& options) {
  const auto& b = options.backend;
  std::string have;
  for (const auto& name : availableBackends()) have += (have.empty() ? "" : ", ") + name;
  if (b == "nccl") {
    // The trainer's tensors live where LibTorch puts them; Debian's LibTorch is CPU-only.
    throw ConfigError(std::string("comm.backend: 'nccl' is not available: ") +
                      (PERENNIAL_HAVE_NCCL ? "the NCCL communicator is built, but NCCL reduces GPU tensors and this "
                                             "LibTorch has no CUDA (train on GPU with a CUDA LibTorch, Torch_DIR)"
                                           : "this build has no CUDA toolkit and NCCL") +
                      " (available: auto, " + have + ")");
  }
  if (b != "auto" && b != "mpi") {
    throw ConfigError("comm.backend: '" + b + "' is not available in this build (available: auto, " + have + ")");
  }
  auto comm = std::make_unique<MpiCommunicator>(options.timeout);
  // Rank-prefixed logging needs the rank, which only the communicator knows: set it up here.
  log::init(comm->rank(), comm->size(), options.logLevel);
  if (comm->rank() == 0) {
    log::get("comm")->info("backend mpi ({}), world size {}{}", comm->backendVersion(), comm->size(),
                           b == "auto" ? " (auto: CPU tensors use MPI)" : "");
  }
  return comm;
}

}  // namespace perennial
