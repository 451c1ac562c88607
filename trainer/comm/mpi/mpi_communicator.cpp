#include "trainer/comm/mpi/mpi_communicator.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <thread>
#include <type_traits>

#include "common/error.h"
#include "common/fs_util.h"
#include "trainer/comm/mpi/sum16.h"

namespace perennial {
namespace {

// Finalises MPI at process exit when Perennial initialised it. Asks for MPI_THREAD_SERIALIZED:
// the gradient reducer's communication thread (comm.overlap) calls collectives while the
// training thread runs backward, never two threads at once.
struct MpiEnvironment {
  bool ownsInit = false;
  MpiEnvironment() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
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
    case DType::kBFloat16:
    case DType::kFloat16: return MPI_UINT16_T;  // summed by the operations below
  }
  return MPI_DATATYPE_NULL;
}

// MPI has no 16-bit floating-point types: bfloat16 and half travel as MPI_UINT16_T and are summed
// by these user operations, which add two values in float32 and round the sum back to nearest
// even (NOTE [Gradient compression] in gradient_reducer.cpp; sum16.h). Commutative, so Open MPI
// keeps its usual algorithms.
template <void (*sum)(const uint16_t*, uint16_t*, size_t)>
void sum16(void* in, void* inout, int* len, MPI_Datatype*) {
  sum(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout), static_cast<size_t>(*len));
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
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  serializedThreads_ = level >= MPI_THREAD_SERIALIZED;
  check(MPI_Op_create(&sum16<sumBf16>, /*commute=*/1, &sumBf16_), "MPI_Op_create");
  check(MPI_Op_create(&sum16<sumHalf>, /*commute=*/1, &sumHalf_), "MPI_Op_create");
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
  oneNode_ = placement_.localSize == size_;
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

void MpiCommunicator::begin(const char* call, std::chrono::milliseconds limit) {
  std::lock_guard<std::mutex> lock(mu_);
  call_ = call;
  limit_ = limit;
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
    std::chrono::milliseconds limit = timeout_;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!inflight_) continue;
      waited = std::chrono::steady_clock::now() - changed_;
      call = call_;
      seq = seq_;
      if (limit_.count() > 0) limit = std::min(limit_, timeout_);
    }
    if (waited >= limit) timedOut(call, seq, std::chrono::duration_cast<std::chrono::milliseconds>(waited));
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
  if (finalized) return;
  if (sumBf16_ != MPI_OP_NULL) MPI_Op_free(&sumBf16_);
  if (sumHalf_ != MPI_OP_NULL) MPI_Op_free(&sumHalf_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
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
  const bool narrow = type == DType::kBFloat16 || type == DType::kFloat16;
  PERENNIAL_CHECK(!narrow || op == ReduceOp::kSum, "16-bit floating-point all-reduce supports sum only");
  if (size_ == 1 || count == 0) return;
  const bool floating = narrow || type == DType::kFloat32 || type == DType::kFloat64;
  if (op == ReduceOp::kSum && floating) {
    if (const SharedSegment* seg = sharedSegmentOf(data, count * dtypeSize(type))) {
      Watched watch(*this, "shared_memory_allreduce");  // one word: it travels in stall-inspector cards
      twoShotSum(*seg, static_cast<size_t>(static_cast<const char*>(data) - seg->bases[static_cast<size_t>(rank_)]),
                 count, type);
      return;
    }
  }
  PERENNIAL_CHECK(count <= static_cast<size_t>(INT_MAX), "allReduce count " << count << " exceeds INT_MAX");
  MPI_Op mop = mpiOp(op);
  if (narrow) mop = type == DType::kBFloat16 ? sumBf16_ : sumHalf_;
  begin("MPI_Allreduce");
  int rc = MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpiType(type), mop, comm_);
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

// NOTE [Shared-memory all-reduce]: when every rank runs on one node, the gradient buckets can live
// in memory that all of them map (an MPI-3 shared window, MPI_Win_allocate_shared), and an
// all-reduce is then a "two-shot" sum over that memory, as PyTorch's intra-node all-reduce does
// over GPU peer memory: after a barrier (every rank's part is written), rank r sums share r of
// every rank's part, in rank order (((part 0 + part 1) + part 2) + ...), and writes the sum into
// share r of every part; after a second barrier every part holds the whole sum. Each element is
// summed once, by one rank, so every rank has the same bits; at two ranks a + b = b + a gives
// exactly what MPI_Allreduce gives. Beyond two the partial sums are in rank order, where Open MPI's
// order depends on its algorithm: deterministic, but not the bits the same job gets across nodes,
// so the trainer shares memory by default (comm.shared_memory = auto) at world size 2 only, and
// beyond it when asked (true). Shares are whole cache lines, so no two ranks write one line. Open
// MPI's own path through shared memory copies the peer's half into a staging buffer and back (CMA:
// a system call that pins and maps the peer's pages) and costs 1.5x as long at the MLP's 814 KB, 3x
// at 256 KiB-1 MiB; BENCHMARKS.md ("Shared-memory all-reduce"). Sums of float32, float64 and, for
// comm.compression, of bfloat16 and half (sum16.h, the same rounding as the MPI operation) take
// this path; anything else, and memory outside the windows, goes through MPI_Allreduce. The windows
// are not freed before MPI_Finalize (which frees them at process exit): MPI_Win_free is collective,
// and a rank unwinding from an error must not block in it (the job is aborted instead), nor may
// tensors that view the memory dangle while the trainer runs. Open MPI backs a window with one file
// of every rank's part, in /dev/shm, which it unlinks once every rank has mapped it, so nothing is
// left behind when a process ends, however it ends. Open MPI makes that file on rank 0 alone, so
// before allocating every rank checks that /dev/shm has room for it (containers often give it 64
// MiB) and that it fits the rank's RLIMIT_FSIZE, and all agree; where it does not, or the
// allocation fails on every rank (no osc/sm component), the buckets stay with MPI and rank 0 says
// why. A failure on some ranks only leaves the others inside Open MPI's window set-up, which no
// check can rule out: the set-up runs under a limit of its own (kWindowSetupLimit), after which the
// watchdog ends the job, naming MPI_Win_allocate_shared, and a scheduler retries it (sched.chaos
// found this with a file size limit set on rank 0 as a run started).
void* MpiCommunicator::sharedHostBuffer(size_t bytes) {
  if (size_ == 1 || !oneNode_ || bytes == 0) return nullptr;
  return allocateShared(bytes);
}

void* MpiCommunicator::allocateShared(size_t bytes) {
  // The window's file holds every rank's part, page-rounded, and the window's state. It needs
  // room in /dev/shm (with a margin) and must be within every rank's RLIMIT_FSIZE (the file is
  // made by rank 0 alone, which would otherwise fail while the others wait for it).
  constexpr size_t kPage = 4096, kMargin = size_t{1} << 20;
  const size_t file = static_cast<size_t>(size_) * ((bytes + 64 + kPage - 1) / kPage * kPage + kPage);
  const size_t need = file + kMargin;
  struct statvfs fsStat {};
  const bool measured = ::statvfs("/dev/shm", &fsStat) == 0;
  const size_t room = measured ? static_cast<size_t>(fsStat.f_bavail) * fsStat.f_frsize : 0;
  struct rlimit fsize {};
  const bool limited = ::getrlimit(RLIMIT_FSIZE, &fsize) == 0 && fsize.rlim_cur != RLIM_INFINITY &&
                       static_cast<size_t>(fsize.rlim_cur) < file;
  int ok = (!measured || room >= need) && !limited;
  {
    Watched watch(*this, "MPI_Allreduce");
    check(MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm_), "MPI_Allreduce");
  }
  if (!ok) {
    if (rank_ == 0) {
      std::fprintf(stderr,
                   "perennial: a %zu-byte gradient bucket stays with MPI_Allreduce: its shared window needs %zu MiB "
                   "of /dev/shm (%zu MiB free here) within every rank's file size limit (enlarge /dev/shm, or set "
                   "comm.shared_memory = false)\n",
                   bytes, (need + (size_t{1} << 20) - 1) >> 20, room >> 20);
    }
    return nullptr;
  }
  // From here the ranks are together; a rank failing inside Open MPI's set-up leaves the others
  // waiting there, so the set-up has a short limit of its own.
  Watched watch(*this, "MPI_Win_allocate_shared", kWindowSetupLimit);
  return makeWindow(bytes);
}

void* MpiCommunicator::makeWindow(size_t bytes) {
  MPI_Info info = MPI_INFO_NULL;
  check(MPI_Info_create(&info), "MPI_Info_create");
  // Each rank's part rounded up to whole pages, so that the parts sit alike within their pages.
  check(MPI_Info_set(info, "alloc_shared_noncontig", "true"), "MPI_Info_set");
  // Open MPI places the parts 8 bytes past a cache line (after its own header); each part gets
  // a line more, and the buffer starts at the part's first line boundary, in every part alike.
  constexpr size_t kLine = 64;
  void* base = nullptr;
  MPI_Win win = MPI_WIN_NULL;
  int ok = MPI_Win_allocate_shared(static_cast<MPI_Aint>(bytes + kLine), 1, info, comm_, &base, &win) == MPI_SUCCESS;
  MPI_Info_free(&info);
  SharedSegment seg;
  seg.win = win;
  seg.bytes = bytes;
  if (ok) {
    ok = MPI_Win_set_errhandler(win, MPI_ERRORS_RETURN) == MPI_SUCCESS;
    size_t misalign = 0;
    for (int r = 0; r < size_ && ok; ++r) {
      MPI_Aint size = 0;
      int unit = 0;
      void* p = nullptr;
      ok = MPI_Win_shared_query(win, r, &size, &unit, &p) == MPI_SUCCESS && p && static_cast<size_t>(size) >= bytes + kLine;
      const size_t m = reinterpret_cast<uintptr_t>(p) % kLine;
      if (r == 0) misalign = m;
      ok = ok && m == misalign;  // the same in every part: the shares' bounds assume it
      seg.bases.push_back(static_cast<char*>(p) + (kLine - m) % kLine);
    }
    base = ok ? seg.bases[static_cast<size_t>(rank_)] : nullptr;
  }
  // Every rank uses the window or none does (a window that some rank could not map is left
  // alone: freeing it is collective over ranks that may not have it).
  check(MPI_Allreduce(MPI_IN_PLACE, &ok, 1, MPI_INT, MPI_MIN, comm_), "MPI_Allreduce");
  if (!ok) {
    if (rank_ == 0) {
      std::fprintf(stderr, "perennial: a %zu-byte gradient bucket stays with MPI_Allreduce: MPI could not make a "
                   "shared window of it (is Open MPI's osc/sm component there?)\n", bytes);
    }
    return nullptr;
  }
  check(MPI_Win_lock_all(MPI_MODE_NOCHECK, win), "MPI_Win_lock_all");
  std::memset(base, 0, bytes);
  shared_.push_back(std::move(seg));
  return base;
}

const MpiCommunicator::SharedSegment* MpiCommunicator::sharedSegmentOf(const void* data, size_t bytes) const {
  const auto p = reinterpret_cast<uintptr_t>(data);
  for (const SharedSegment& s : shared_) {
    const auto mine = reinterpret_cast<uintptr_t>(s.bases[static_cast<size_t>(rank_)]);
    if (p >= mine && bytes <= s.bytes && p - mine <= s.bytes - bytes) return &s;
  }
  return nullptr;
}

namespace {

// Share r of COUNT elements that start OFFSET bytes into a cache-line-aligned part:
// [bound(r), bound(r + 1)), each bound at a 64-byte boundary of the memory, so no two ranks write
// one line. The same on every rank (it depends on the offset, not on where the part is mapped).
size_t shareBound(size_t count, size_t offset, size_t elementBytes, int r, int world) {
  if (r >= world) return count;
  if (r == 0) return 0;
  const size_t line = 64 / elementBytes;
  const size_t lead = offset % 64 / elementBytes;  // elements of the first line before the data
  const size_t b = (count / static_cast<size_t>(world) * static_cast<size_t>(r) + lead) / line * line;
  return std::min(b < lead ? 0 : b - lead, count);
}

// Sums share [LO, HI) of the parts at BASES + OFFSET into every part, in rank order:
// ACC = part 0, then ACC = ADD(part q, ACC) for q = 1, 2, ... (ADD(in, inout): inout = in + inout,
// which is part 0 + part 1 + ... since addition commutes), chunk by chunk so that ACC stays in
// the L1 cache. Two float parts take one pass: a + b stored into both.
template <typename T, typename Add>
void sumShare(const std::vector<char*>& bases, size_t offset, size_t lo, size_t hi, Add add) {
  auto part = [&](size_t q) { return reinterpret_cast<T*>(bases[q] + offset); };
  if constexpr (std::is_floating_point_v<T>) {
    if (bases.size() == 2) {
      T* __restrict a = part(0);
      T* __restrict b = part(1);
      for (size_t i = lo; i < hi; ++i) {
        const T sum = a[i] + b[i];
        a[i] = sum;
        b[i] = sum;
      }
      return;
    }
  }
  constexpr size_t kChunk = 4096 / sizeof(T);
  alignas(64) T acc[kChunk];
  for (size_t b = lo; b < hi; b += kChunk) {
    const size_t n = std::min(kChunk, hi - b);
    std::memcpy(acc, part(0) + b, n * sizeof(T));
    for (size_t q = 1; q < bases.size(); ++q) add(part(q) + b, acc, n);
    for (size_t q = 0; q < bases.size(); ++q) std::memcpy(part(q) + b, acc, n * sizeof(T));
  }
}

template <typename T>
void addInto(const T* in, T* inout, size_t n) {
  for (size_t i = 0; i < n; ++i) inout[i] = in[i] + inout[i];
}

}  // namespace

void MpiCommunicator::twoShotSum(const SharedSegment& seg, size_t offset, size_t count, DType type) {
  auto sync = [&] {
    check(MPI_Win_sync(seg.win), "MPI_Win_sync");  // this rank's stores are visible before the barrier ends
    check(MPI_Barrier(comm_), "MPI_Barrier");
    check(MPI_Win_sync(seg.win), "MPI_Win_sync");
  };
  ++sharedReductions_;
  sync();  // every part is written
  const size_t elementBytes = dtypeSize(type);
  const size_t lo = shareBound(count, offset, elementBytes, rank_, size_);
  const size_t hi = shareBound(count, offset, elementBytes, rank_ + 1, size_);
  switch (type) {
    case DType::kFloat32: sumShare<float>(seg.bases, offset, lo, hi, addInto<float>); break;
    case DType::kFloat64: sumShare<double>(seg.bases, offset, lo, hi, addInto<double>); break;
    case DType::kBFloat16: sumShare<uint16_t>(seg.bases, offset, lo, hi, sumBf16); break;
    case DType::kFloat16: sumShare<uint16_t>(seg.bases, offset, lo, hi, sumHalf); break;
    default: throw InternalError("shared-memory all-reduce of an unsupported type");
  }
  sync();  // every share is summed into every part
}

void MpiCommunicator::barrier() {
  if (size_ == 1) return;
  begin("MPI_Barrier");
  int rc = MPI_Barrier(comm_);
  end();
  check(rc, "MPI_Barrier");
}

}  // namespace perennial
