#include "trainer/comm/mpi/mpi_communicator.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/fs_util.h"

namespace perennial {
namespace {

// Finalises MPI at process exit when Perennial initialised it.
struct MpiEnvironment {
  bool ownsInit = false;
  MpiEnvironment() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      if (rc != MPI_SUCCESS) throw CommError("MPI_Init_thread failed with code " + std::to_string(rc));
      ownsInit = true;
    }
  }
  ~MpiEnvironment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (ownsInit && !finalized) MPI_Finalize();
  }
};

MPI_Datatype mpiType(DType t) {
  switch (t) {
    case DType::kUInt8: return MPI_UINT8_T;
    case DType::kInt32: return MPI_INT32_T;
    case DType::kInt64: return MPI_INT64_T;
    case DType::kFloat32: return MPI_FLOAT;
    case DType::kFloat64: return MPI_DOUBLE;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// An MPI control variable of string type (e.g. Open MPI's "btl_tcp_if_include") as the library
// uses it, whether it came from the environment, mpirun --mca or a parameter file; "" when the
// library has no such variable or it cannot be read.
std::string controlVariable(const char* name) {
  int provided = 0;
  if (MPI_T_init_thread(MPI_THREAD_SINGLE, &provided) != MPI_SUCCESS) return "";
  std::string value;
  int index = -1;
  if (MPI_T_cvar_get_index(name, &index) == MPI_SUCCESS) {
    char cname[256], desc[1024];
    int nameLen = sizeof(cname), descLen = sizeof(desc), verbosity = 0, bind = 0, scope = 0;
    MPI_Datatype type = MPI_DATATYPE_NULL;
    MPI_T_enum enumtype = MPI_T_ENUM_NULL;
    MPI_T_cvar_handle handle = MPI_T_CVAR_HANDLE_NULL;
    int count = 0;
    if (MPI_T_cvar_get_info(index, cname, &nameLen, &verbosity, &type, &enumtype, desc, &descLen, &bind, &scope) ==
            MPI_SUCCESS &&
        type == MPI_CHAR && MPI_T_cvar_handle_alloc(index, nullptr, &handle, &count) == MPI_SUCCESS) {
      std::vector<char> buf(static_cast<size_t>(std::max(count, 1)) + 1, '\0');
      if (MPI_T_cvar_read(handle, buf.data()) == MPI_SUCCESS) value = buf.data();
      MPI_T_cvar_handle_free(&handle);
    }
  }
  MPI_T_finalize();
  return value;
}

// The interfaces Open MPI's TCP transport may use on this host (btl_tcp_if_include, else every
// interface that btl_tcp_if_exclude leaves, whose default excludes loopback), described for the
// log; ADDRESSES receives their addresses (where the stall inspector listens in a job on several
// hosts).
std::string tcpNetwork(std::vector<std::string>* addresses) {
  const std::string include = controlVariable("btl_tcp_if_include");
  const std::string exclude = controlVariable("btl_tcp_if_exclude");
  std::string used;
  for (const auto& i : hostInterfaces()) {
    const bool in = include.empty() ? !interfaceMatches(i, exclude) : interfaceMatches(i, include);
    if (!in) continue;
    used += (used.empty() ? "" : ", ") + i.name + " " + i.address + "/" + std::to_string(i.prefix);
    if (addresses) addresses->push_back(i.address);
  }
  if (used.empty()) used = "no interface";
  if (!include.empty()) return used + " (btl_tcp_if_include = " + include + ")";
  return used + " (every interface but btl_tcp_if_exclude = " + (exclude.empty() ? "unset" : exclude) + ")";
}

}  // namespace

void MpiCommunicator::ensureInitialized() { static MpiEnvironment env; }

void MpiCommunicator::abortJobIfParallel(int code) {
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

MpiCommunicator::MpiCommunicator(std::chrono::milliseconds timeout, MPI_Comm base)
    : timeout_(timeout) {
  ensureInitialized();
  placement_.host = hostName();
  host_ = placement_.host + ":" + std::to_string(::getpid());
  check(MPI_Comm_dup(base, &comm_), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
  meetPeers();
}

void MpiCommunicator::meetPeers() {
  std::vector<std::string> mpiAddresses;
  placement_.network = tcpNetwork(&mpiAddresses);
  placement_.hosts = {placement_.host};
  if (size_ == 1) return;
  MPI_Comm local = MPI_COMM_NULL;
  check(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local), "MPI_Comm_split_type");
  check(MPI_Comm_rank(local, &placement_.localRank), "MPI_Comm_rank");
  check(MPI_Comm_size(local, &placement_.localSize), "MPI_Comm_size");
  MPI_Comm_free(&local);

  // Every rank's host name.
  constexpr size_t kHostBytes = 256;
  std::string mine = placement_.host.substr(0, kHostBytes - 1);
  mine.resize(kHostBytes, '\0');
  std::vector<char> names(kHostBytes * static_cast<size_t>(size_));
  check(MPI_Allgather(mine.data(), static_cast<int>(kHostBytes), MPI_CHAR, names.data(), static_cast<int>(kHostBytes),
                      MPI_CHAR, comm_),
        "MPI_Allgather");
  placement_.hosts.clear();
  bool oneHost = true;
  for (int r = 0; r < size_; ++r) {
    const char* n = names.data() + kHostBytes * static_cast<size_t>(r);
    placement_.hosts.emplace_back(n, strnlen(n, kHostBytes));
    oneHost = oneHost && placement_.hosts.back() == placement_.host;
  }

  // The stall inspector (NOTE [Stall inspector]): on loopback when the job runs on one host, and
  // also on the interfaces MPI uses when it spans several. Then every rank's card and the job's
  // token. A rank whose listener cannot be made still sends a card: the all-gather must not
  // depend on a local failure.
  const bool watching = timeout_.count() > 0;
  std::string why;
  if (watching) {
    std::vector<std::string> bind{"127.0.0.1"};
    if (!oneHost) bind.insert(bind.end(), mpiAddresses.begin(), mpiAddresses.end());
    try {
      inspector_ = std::make_unique<StallInspector>(rank_, [this] { return activity(); }, bind);
    } catch (const CommError& e) {
      why = e.what();
    }
  }
  std::string card = inspector_ ? inspector_->card() : StallInspector::cardWithout(placement_.host, ::getpid());
  card.resize(StallInspector::kCardBytes, '\0');
  std::vector<char> cards(StallInspector::kCardBytes * static_cast<size_t>(size_));
  check(MPI_Allgather(card.data(), static_cast<int>(StallInspector::kCardBytes), MPI_CHAR, cards.data(),
                      static_cast<int>(StallInspector::kCardBytes), MPI_CHAR, comm_),
        "MPI_Allgather");
  std::string token = rank_ == 0 ? fs::randomHex() : std::string(32, '0');
  check(MPI_Bcast(token.data(), static_cast<int>(token.size()), MPI_CHAR, 0, comm_), "MPI_Bcast");
  if (!watching) return;
  if (inspector_) {
    std::vector<StallPeer> peers;
    for (int r = 0; r < size_; ++r) {
      const char* c = cards.data() + StallInspector::kCardBytes * static_cast<size_t>(r);
      peers.push_back(StallInspector::parseCard(r, std::string(c, strnlen(c, StallInspector::kCardBytes))));
    }
    inspector_->setPeers(std::move(peers), token);
  } else {
    std::fprintf(stderr, "perennial: rank %d/%d (%s): %s; a timed-out collective will not name the missing ranks\n",
                 rank_, size_, host_.c_str(), why.c_str());
  }
  if (::pipe2(wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    throw CommError("rank " + std::to_string(rank_) + " (" + host_ + "): pipe for the collective watchdog: " +
                    std::strerror(errno));
  }
  watchdog_ = std::thread([this] { watch(); });
}

void MpiCommunicator::begin(const char* call) {
  std::lock_guard<std::mutex> lock(mu_);
  call_ = call;
  inflight_ = true;
  ++seq_;
  changed_ = std::chrono::steady_clock::now();
}

void MpiCommunicator::end() {
  std::lock_guard<std::mutex> lock(mu_);
  inflight_ = false;
  changed_ = std::chrono::steady_clock::now();
}

RankActivity MpiCommunicator::activity() {
  std::lock_guard<std::mutex> lock(mu_);
  RankActivity a;
  a.seq = seq_;
  a.call = call_ ? call_ : "";
  a.inCollective = inflight_;
  a.sinceMs = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - changed_).count();
  return a;
}

void MpiCommunicator::watch() {
  const auto tick = std::min<std::chrono::milliseconds>(timeout_ / 4 + std::chrono::milliseconds(1),
                                                        std::chrono::milliseconds(1000));
  std::vector<pollfd> fds{{wake_[0], POLLIN, 0}};
  if (inspector_) {
    for (int fd : inspector_->fds()) fds.push_back({fd, POLLIN, 0});
  }
  for (;;) {
    for (auto& p : fds) p.revents = 0;
    ::poll(fds.data(), fds.size(), static_cast<int>(tick.count()));
    if (fds[0].revents) return;  // the destructor: stop
    if (inspector_) inspector_->serve();
    const char* call = nullptr;
    uint64_t seq = 0;
    std::chrono::steady_clock::duration waited{};
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!inflight_) continue;
      waited = std::chrono::steady_clock::now() - changed_;
      call = call_;
      seq = seq_;
    }
    if (waited >= timeout_) timedOut(call, seq, std::chrono::duration_cast<std::chrono::milliseconds>(waited));
  }
}

void MpiCommunicator::timedOut(const char* call, uint64_t seq, std::chrono::milliseconds waited) {
  std::string who = "another rank has not joined it (crashed, stalled, or called a different collective)";
  if (inspector_) {
    const auto reports = inspector_->probe(kProbeBudget);
    who = StallInspector::describe(seq, call, rank_, inspector_->peers(), reports);
  }
  std::fprintf(stderr,
               "perennial: %s (collective #%llu) timed out after %lld ms on rank %d/%d (%s): %s; ending this "
               "process with status %d so the job does not hang (see comm.timeout_s)\n",
               call, static_cast<unsigned long long>(seq), static_cast<long long>(waited.count()), rank_, size_,
               host_.c_str(), who.c_str(), kExitCommTimeout);
  std::fflush(stderr);
  // Ranks that timed out at the same moment probe each other: answer them a little longer, so
  // that none of them takes this rank, waiting in the same collective, for a missing one.
  const auto until = std::chrono::steady_clock::now() + kLinger;
  while (inspector_ && std::chrono::steady_clock::now() < until) {
    std::vector<pollfd> fds;
    for (int fd : inspector_->fds()) fds.push_back({fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), 50) > 0) inspector_->serve();
  }
  std::_Exit(kExitCommTimeout);
}

MpiCommunicator::~MpiCommunicator() {
  if (watchdog_.joinable()) {
    const char stop = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_[1], &stop, 1);
    watchdog_.join();
  }
  for (int& fd : wake_) {
    if (fd >= 0) ::close(fd);
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

std::string MpiCommunicator::backendVersion() const {
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(version, &len);
  std::string v(version, static_cast<size_t>(len));
  auto cut = v.find_first_of(",\n");
  return cut == std::string::npos ? v : v.substr(0, cut);
}

void MpiCommunicator::check(int rc, const char* call) const {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  std::ostringstream os;
  os << call << " failed on rank " << rank_ << "/" << size_ << " (" << host_ << "): "
     << std::string(msg, static_cast<size_t>(len));
  throw CommError(os.str());
}

void MpiCommunicator::allReduce(void* data, size_t count, DType type, ReduceOp op) {
  if (size_ == 1 || count == 0) return;
  PERENNIAL_CHECK(count <= static_cast<size_t>(INT_MAX), "allReduce count " << count << " exceeds INT_MAX");
  begin("MPI_Allreduce");
  int rc = MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpiType(type), mpiOp(op), comm_);
  end();
  check(rc, "MPI_Allreduce");
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
  if (size_ == 1 || bytes == 0) return;
  PERENNIAL_CHECK(bytes <= static_cast<size_t>(INT_MAX), "broadcast of " << bytes << " bytes exceeds INT_MAX");
  begin("MPI_Bcast");
  int rc = MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_);
  end();
  check(rc, "MPI_Bcast");
}

void MpiCommunicator::allGather(const void* in, void* out, size_t bytes) {
  PERENNIAL_CHECK(bytes <= static_cast<size_t>(INT_MAX), "allGather of " << bytes << " bytes exceeds INT_MAX");
  begin("MPI_Allgather");
  int rc = MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, comm_);
  end();
  check(rc, "MPI_Allgather");
}

void MpiCommunicator::barrier() {
  if (size_ == 1) return;
  begin("MPI_Barrier");
  int rc = MPI_Barrier(comm_);
  end();
  check(rc, "MPI_Barrier");
}

}  // namespace perennial
