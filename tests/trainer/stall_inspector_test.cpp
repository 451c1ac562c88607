// The stall inspector (NOTE [Stall inspector]) without MPI: several inspectors in one process
// over loopback, each serving from its own thread, with activities set by the test; a rank whose
// process is gone (its port closed), one that is connected but silent, and strangers without the
// token.
#include "trainer/comm/stall_inspector.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "common/error.h"

namespace perennial {
namespace {

using std::chrono::milliseconds;

// One rank: an inspector whose activity the test sets, answering queries from a thread.
class Rank {
 public:
  explicit Rank(int rank) : inspector_(rank, [this] { return get(); }, {"127.0.0.1"}) {}
  ~Rank() { stopServing(); }
  void set(uint64_t seq, const std::string& call, bool in) {
    std::lock_guard<std::mutex> lock(mu_);
    a_.seq = seq;
    a_.call = call;
    a_.inCollective = in;
    a_.sinceMs = 1500;
  }
  void startServing() {
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{inspector_.fds().at(0), POLLIN, 0};
        if (::poll(&p, 1, 20) > 0) inspector_.serve();
      }
    });
  }
  void stopServing() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  StallInspector& inspector() { return inspector_; }

 private:
  RankActivity get() {
    std::lock_guard<std::mutex> lock(mu_);
    return a_;
  }
  std::mutex mu_;
  RankActivity a_;
  StallInspector inspector_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

const std::string kToken = "0123456789abcdef0123456789abcdef";

std::vector<StallPeer> peersOf(std::vector<Rank*> ranks) {
  std::vector<StallPeer> peers;
  for (size_t r = 0; r < ranks.size(); ++r) {
    peers.push_back(StallInspector::parseCard(static_cast<int>(r), ranks[r]->inspector().card()));
  }
  return peers;
}

// A listener that accepts connections (the kernel completes them) but never answers.
struct SilentListener {
  int fd = -1;
  uint16_t port = 0;
  SilentListener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(sa);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    EXPECT_EQ(::listen(fd, 8), 0);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
  }
  ~SilentListener() { ::close(fd); }
};

TEST(StallInspector, NamesTheRankThatHasNotJoinedAndItsHost) {
  Rank r0(0), r1(1), r2(2);
  const auto peers = peersOf({&r0, &r1, &r2});
  for (Rank* r : {&r0, &r1, &r2}) r->inspector().setPeers(peers, kToken);
  r0.set(2, "MPI_Allreduce", true);
  r1.set(2, "MPI_Allreduce", true);
  r2.set(1, "MPI_Allreduce", false);  // still computing after collective #1
  r1.startServing();
  r2.startServing();
  const auto reports = r0.inspector().probe(milliseconds(2000));
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_EQ(reports[0].rank, 1);
  EXPECT_EQ(reports[1].rank, 2);
  for (const auto& r : reports) ASSERT_TRUE(r.answered) << "rank " << r.rank << ": " << r.error;
  EXPECT_EQ(reports[1].activity.seq, 1u);
  EXPECT_FALSE(reports[1].activity.inCollective);
  const std::string text = StallInspector::describe(2, "MPI_Allreduce", 0, peers, reports);
  EXPECT_NE(
      text.find(
          "not joined by rank 2 on " + hostName() + " (pid " + std::to_string(::getpid()) +
          "): has not reached it: outside any collective for 1.5 s since MPI_Allreduce #1 ended"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("ranks 0, 1 wait in it"), std::string::npos) << text;
  EXPECT_EQ(text.find("rank 1 on"), std::string::npos) << "a waiting rank is not missing: " << text;
}

TEST(StallInspector, TwoRanksProbingEachOtherBothGetAnswers) {
  // Every rank whose collective times out probes at the same moment: each must answer the
  // other while it waits for its own answers.
  Rank r0(0), r1(1);
  const auto peers = peersOf({&r0, &r1});
  for (Rank* r : {&r0, &r1}) r->inspector().setPeers(peers, kToken);
  r0.set(5, "MPI_Bcast", true);
  r1.set(5, "MPI_Allreduce", true);
  std::vector<PeerReport> fromR1;
  std::thread t([&] { fromR1 = r1.inspector().probe(milliseconds(2000)); });
  const auto fromR0 = r0.inspector().probe(milliseconds(2000));
  t.join();
  ASSERT_EQ(fromR0.size(), 1u);
  ASSERT_EQ(fromR1.size(), 1u);
  EXPECT_TRUE(fromR0[0].answered) << fromR0[0].error;
  EXPECT_TRUE(fromR1[0].answered) << fromR1[0].error;
  const std::string text = StallInspector::describe(5, "MPI_Bcast", 0, peers, fromR0);
  EXPECT_NE(text.find("in MPI_Allreduce instead"), std::string::npos) << text;
}

TEST(StallInspector, AGoneProcessAndASilentOneAreNamedWithTheReason) {
  Rank r0(0);
  SilentListener silent;
  std::vector<StallPeer> peers = peersOf({&r0});
  StallPeer gone;  // a port nobody listens on any more
  {
    Rank dead(1);
    gone = StallInspector::parseCard(1, dead.inspector().card());
  }
  peers.push_back(gone);
  StallPeer stuck;
  stuck.rank = 2;
  stuck.host = hostName();
  stuck.pid = 99;
  stuck.endpoints = {{"127.0.0.1", silent.port}};
  peers.push_back(stuck);
  StallPeer away;  // another host that gave only a loopback address: never asked there
  away.rank = 3;
  away.host = "node4";
  away.pid = 98;
  away.endpoints = {{"127.0.0.1", silent.port}};
  peers.push_back(away);
  r0.inspector().setPeers(peers, kToken);
  r0.set(7, "MPI_Allreduce", true);
  const auto start = std::chrono::steady_clock::now();
  const auto reports = r0.inspector().probe(milliseconds(500));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_LT(took, milliseconds(1500)) << "the probe must keep to its budget";
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_FALSE(reports[0].answered);
  EXPECT_NE(reports[0].error.find("Connection refused"), std::string::npos) << reports[0].error;
  EXPECT_FALSE(reports[1].answered);
  EXPECT_NE(reports[1].error.find("connected, but no answer within 0.5 s"), std::string::npos)
      << reports[1].error;
  EXPECT_FALSE(reports[2].answered);
  EXPECT_NE(reports[2].error.find("no address of it can be reached from this host"),
            std::string::npos)
      << reports[2].error;
  const std::string text = StallInspector::describe(7, "MPI_Allreduce", 0, peers, reports);
  EXPECT_NE(text.find("rank 1 on " + hostName()), std::string::npos) << text;
  EXPECT_NE(text.find("rank 2 on " + hostName() + " (pid 99): does not answer"), std::string::npos)
      << text;
  EXPECT_NE(text.find("rank 3 on node4 (pid 98): does not answer"), std::string::npos) << text;
  EXPECT_NE(text.find("rank 0 waits in it"), std::string::npos) << text;
}

TEST(StallInspector, AnswersOnlyQueriesWithTheToken) {
  Rank r0(0);
  r0.inspector().setPeers(peersOf({&r0}), kToken);
  r0.set(3, "MPI_Barrier", true);
  r0.startServing();
  const StallPeer me = StallInspector::parseCard(0, r0.inspector().card());
  ASSERT_EQ(me.endpoints.size(), 1u);
  auto ask = [&](const std::string& query) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(me.endpoints[0].port);
    ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
    EXPECT_EQ(::send(fd, query.data(), query.size(), 0), static_cast<ssize_t>(query.size()));
    std::string got;
    char buf[256];
    for (ssize_t n; (n = ::read(fd, buf, sizeof(buf))) > 0;)
      got.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return got;
  };
  EXPECT_EQ(ask("PERENNIAL-STALL? ffffffffffffffffffffffffffffffff\n"), "")
      << "a wrong token gets nothing";
  EXPECT_EQ(ask("GET / HTTP/1.0\r\n\r\n"), "");
  EXPECT_EQ(ask("PERENNIAL-STALL? " + kToken + "\n"),
            "PERENNIAL-STALL rank=0 seq=3 in=1 since_ms=1500 call=MPI_Barrier\n");
}

TEST(StallInspector, CardsRoundTripAndBadOnesCannotBeAsked) {
  Rank r0(0);
  const StallPeer p = StallInspector::parseCard(4, r0.inspector().card());
  EXPECT_EQ(p.rank, 4);
  EXPECT_EQ(p.host, hostName());
  EXPECT_EQ(p.pid, ::getpid());
  ASSERT_EQ(p.endpoints.size(), 1u) << "it listens where it was told to, and nowhere else";
  EXPECT_EQ(p.endpoints[0].address, "127.0.0.1");
  EXPECT_GT(p.endpoints[0].port, 0);
  EXPECT_LT(r0.inspector().card().size(), StallInspector::kCardBytes);
  for (const char* bad :
       {"", "host", "host 1 -", "host 1 1.2.3.4:99999", "host x y:z", "h 1 127.0.0.1"}) {
    EXPECT_TRUE(StallInspector::parseCard(1, bad).endpoints.empty()) << bad;
  }
  EXPECT_TRUE(StallInspector::parseCard(1, StallInspector::cardWithout("h", 5)).endpoints.empty());
  const StallPeer odd =
      StallInspector::parseCard(1, "h 5 10.0.0.1:80,not-an-address:81,10.0.0.2:82");
  EXPECT_EQ(odd.endpoints, (std::vector<StallEndpoint>{{"10.0.0.1", 80}, {"10.0.0.2", 82}}));
  EXPECT_THROW(StallInspector(0, [] { return RankActivity{}; }, {"not-an-address"}), CommError);
}

TEST(StallInspector, InterfaceListsMatchByNameOrSubnet) {
  const HostInterface eth{"eth0", "10.213.0.12", 24};
  EXPECT_TRUE(interfaceMatches(eth, "eth0"));
  EXPECT_TRUE(interfaceMatches(eth, "ib0, eth0"));
  EXPECT_TRUE(interfaceMatches(eth, "10.213.0.0/24"));
  EXPECT_TRUE(interfaceMatches(eth, "10.0.0.0/8"));
  EXPECT_TRUE(interfaceMatches(eth, "0.0.0.0/0"));
  EXPECT_FALSE(interfaceMatches(eth, "eth1"));
  EXPECT_FALSE(interfaceMatches(eth, "10.213.1.0/24"));
  EXPECT_FALSE(interfaceMatches(eth, "127.0.0.1/8,sppp"));
  EXPECT_FALSE(interfaceMatches(eth, "10.213.0.0/33,x/y,"));
  EXPECT_FALSE(interfaceMatches(eth, ""));
}

}  // namespace
}  // namespace perennial
