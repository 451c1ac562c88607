#include "trainer/comm/communicator.h"

#include "common/error.h"
#include "common/log.h"
#include "trainer/comm/mpi/mpi_communicator.h"

namespace perennial {

std::vector<std::string> availableBackends() { return {"mpi"}; }

std::unique_ptr<Communicator> makeCommunicator(const CommOptions& options) {
  const auto& b = options.backend;
  if (b != "auto" && b != "mpi") {
    std::string have;
    for (const auto& name : availableBackends()) have += (have.empty() ? "" : ", ") + name;
    throw ConfigError("comm.backend: '" + b + "' is not available in this build (available: auto, " +
                      have + "; the NCCL backend needs a build with CUDA and NCCL)");
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
