#include "trainer/comm/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "common/error.h"
#include "common/log.h"
#include "perennial/build_config.h"
#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/comm/stall_inspector.h"
#if PERENNIAL_HAVE_NCCL
#include "trainer/comm/nccl/nccl_communicator.h"
#endif

namespace perennial {
namespace {

std::string joined(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// comm.backend = nccl in a build without the NCCL communicator.
ConfigError ncclNotBuilt() {
  return ConfigError("comm.backend: 'nccl' is not available: this build has no NCCL communicator (the CUDA "
                     "toolkit and NCCL were not found when it was configured; see docs/gpu.md) "
                     "(available: auto, " + joined(availableBackends()) + ")");
}

}  // namespace

std::vector<std::string> availableBackends() {
  if (PERENNIAL_HAVE_NCCL) return {"mpi", "nccl"};
  return {"mpi"};
}

int launcherLocalRank(std::string* variable) {
  for (const char* var : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMIX_LOCAL_RANK"}) {
    if (const char* v = std::getenv(var)) {
      char* end = nullptr;
      const long n = std::strtol(v, &end, 10);
      if (end != v && *end == '\0' && n >= 0) {
        if (variable) *variable = var;
        return static_cast<int>(n);
      }
    }
  }
  return -1;
}

int launcherLocalRank() { return std::max(0, launcherLocalRank(nullptr)); }

int RankPlacement::nodes() const {
  return static_cast<int>(std::set<std::string>(hosts.begin(), hosts.end()).size());
}

RankPlacement Communicator::placement() const {
  RankPlacement p;
  p.host = hostName();
  p.localRank = rank();
  p.localSize = size();
  p.hosts.assign(static_cast<size_t>(size()), p.host);
  return p;
}

LocalRank localRankOf(const Communicator& comm) {
  const RankPlacement p = comm.placement();
  LocalRank out;
  out.size = p.localSize;
  std::string variable;
  const int launcher = launcherLocalRank(&variable);
  if (launcher < 0) {
    out.rank = p.localRank;
    out.source = "MPI_COMM_TYPE_SHARED";
    return out;
  }
  out.rank = launcher;
  out.source = variable;
  if (launcher != p.localRank) {
    out.note = variable + "=" + std::to_string(launcher) + " but MPI_COMM_TYPE_SHARED gives local rank " +
               std::to_string(p.localRank) + " of " + std::to_string(p.localSize) +
               " (the launcher's is used; ranks of one node may take the same GPU)";
  }
  return out;
}

int gpuForLocalRank(int localRank, int64_t gpus) {
  PERENNIAL_CHECK(gpus > 0, "gpuForLocalRank needs at least one GPU, got " << gpus);
  return static_cast<int>(localRank % gpus);
}

std::unique_ptr<Communicator> makeCommunicator(const CommOptions& options) {
  const auto& b = options.backend;
  if (b == "nccl" && !PERENNIAL_HAVE_NCCL) throw ncclNotBuilt();
  if (b != "auto" && b != "mpi" && b != "nccl") {
    throw ConfigError("comm.backend: '" + b + "' is not available in this build (available: auto, " +
                      joined(availableBackends()) + ")");
  }
  auto comm = std::make_unique<MpiCommunicator>(options.timeout);
  // Rank-prefixed logging needs the rank, which only the communicator knows: set it up here.
  log::init(comm->rank(), comm->size(), options.logLevel);
  if (comm->rank() == 0) {
    log::get("comm")->debug("host communicator: mpi ({}), world size {}", comm->backendVersion(), comm->size());
  }
  return comm;
}

std::unique_ptr<Communicator> makeTensorCommunicator(Communicator& host, const std::string& backend, int cudaDevice,
                                                     void* stream, std::chrono::milliseconds timeout,
                                                     std::string* why) {
  const bool cuda = cudaDevice >= 0;
  auto say = [&](const std::string& text) {
    if (why) *why = text;
  };
  if (!cuda) {
    if (backend == "nccl") {
      throw ConfigError("comm.backend: 'nccl' reduces GPU tensors, and this run trains on the CPU (train.device; "
                        "use comm.backend = auto or mpi, or train.device = cuda)");
    }
    say(backend == "auto" ? "auto: CPU tensors use MPI" : "comm.backend = mpi");
    return nullptr;
  }
  if (backend == "mpi") {
    say("comm.backend = mpi: CUDA tensors are staged through host memory for each collective");
    return nullptr;
  }
#if PERENNIAL_HAVE_NCCL
  say(backend == "auto" ? "auto: CUDA tensors use NCCL" : "comm.backend = nccl");
  return std::make_unique<NcclCommunicator>(host, cudaDevice, static_cast<cudaStream_t>(stream), timeout);
#else
  (void)host;
  (void)stream;
  (void)timeout;
  if (backend == "nccl") throw ncclNotBuilt();
  say("auto: this build has no NCCL, so CUDA tensors are staged through host memory over MPI");
  return nullptr;
#endif
}

}  // namespace perennial
