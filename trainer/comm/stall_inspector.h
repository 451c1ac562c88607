#pragma once
// NOTE [Stall inspector]: a blocked MPI collective cannot say who is missing: MPI has no way to
// ask which ranks have entered a collective, and under MPI_THREAD_FUNNELED the watchdog thread
// may not call MPI at all. So every rank keeps a side channel outside MPI, like Horovod's stall
// inspector: a TCP listener on an ephemeral port, known to every other rank from a start-up
// all-gather of "cards" (host, pid, port, addresses). When a rank's collective times out, it
// asks every other rank over that channel what it is doing (the number of the collective it is
// in or last began, and since when) and names in its message the ranks that have not joined,
// with their hosts: those busy elsewhere, those in a different collective, and those that do not
// answer at all (process gone: connection refused; host cut off or stopped: no answer within the
// budget). It costs nothing per collective: a rank's state is read only when someone asks.
//
// The listeners bind the loopback address when every rank runs on one host, and otherwise also
// the addresses of the interfaces MPI's TCP traffic uses (btl_tcp_if_include; SECURITY.md). They
// answer only queries that carry the job's token (128 random bits broadcast by rank 0 at
// start-up), with nothing but that rank's collective counter, so other users of the hosts learn
// nothing and can steer nothing; a client that connects and stays silent costs at most
// kServeWait of the answering thread.
//
// Contract: not thread-safe; one thread (the communicator's watchdog) calls serve() and probe().
// ACTIVITY is called from that thread and must not block for long.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace perennial {

// What a rank is doing, as its communicator knows it.
struct RankActivity {
  uint64_t seq = 0;  // collectives begun so far: the number of the one in flight, if any
  std::string call;  // that collective ("MPI_Allreduce"), or "" before the first
  bool inCollective = false;
  int64_t sinceMs = 0;  // how long it has been in the collective, or out of the last one
};

// Where a rank's listener can be reached.
struct StallEndpoint {
  std::string address;  // IPv4
  uint16_t port = 0;
  bool operator==(const StallEndpoint& o) const { return address == o.address && port == o.port; }
};

// Another rank, as every rank learnt it at start-up.
struct StallPeer {
  int rank = 0;
  std::string host;
  int64_t pid = 0;
  std::vector<StallEndpoint> endpoints;  // none: that rank cannot be asked (watchdog off)
};

// What asking one peer gave.
struct PeerReport {
  int rank = 0;
  bool answered = false;
  RankActivity activity;  // when answered
  std::string error;      // why not
};

class StallInspector {
 public:
  // How long one incoming query may take to arrive once connected.
  static constexpr std::chrono::milliseconds kServeWait{100};

  // Listens on an ephemeral TCP port of each of BIND_ADDRESSES (IPv4 literals, e.g. 127.0.0.1 and
  // the interfaces MPI uses). An address that cannot be bound is left out; throws CommError when
  // none can.
  StallInspector(int rank, std::function<RankActivity()> activity,
                 const std::vector<std::string>& bindAddresses);
  ~StallInspector();
  StallInspector(const StallInspector&) = delete;
  StallInspector& operator=(const StallInspector&) = delete;

  // This rank's card for the start-up all-gather: "host pid addr:port,addr:port,...", at most
  // kCardBytes - 1 characters (endpoints that do not fit are left out). cardWithout(host, pid)
  // is the card of a rank without listeners.
  static constexpr size_t kCardBytes = 320;
  std::string card() const;
  static std::string cardWithout(const std::string& host, int64_t pid);
  // Parses a card of RANK; malformed endpoints are left out (no endpoint: cannot be asked).
  static StallPeer parseCard(int rank, const std::string& card);
  // Every rank's card (this rank's included) and the job's token.
  void setPeers(std::vector<StallPeer> peers, std::string token);
  const std::vector<StallPeer>& peers() const { return peers_; }

  // The listening sockets: one is readable when a query waits (poll them, then call serve()).
  const std::vector<int>& fds() const { return fds_; }
  // Answers the queries waiting now, without blocking longer than kServeWait per connection.
  void serve();
  // Asks every other rank within BUDGET, answering queries meanwhile (peers probe each other at
  // the same time). One report per other rank, in rank order.
  std::vector<PeerReport> probe(std::chrono::milliseconds budget);

  // "not joined by rank 2 on node2 (pid 77): has not reached it: ..." for the ranks that have
  // not joined collective SEQ (CALL) by REPORTS, and "ranks 0, 1 wait in it" (SELF, the asking
  // rank, among them).
  static std::string describe(uint64_t seq, const std::string& call, int self,
                              const std::vector<StallPeer>& peers,
                              const std::vector<PeerReport>& reports);

 private:
  std::string answer() const;
  void serve(int fd);
  int rank_;
  std::function<RankActivity()> activity_;
  std::vector<int> fds_;
  std::vector<StallEndpoint> endpoints_;
  std::string host_;
  std::vector<StallPeer> peers_;
  std::string token_;
};

// The host's IPv4 interfaces that are up, loopback excluded: name and address.
struct HostInterface {
  std::string name, address;
  int prefix = 0;  // netmask length
};
std::vector<HostInterface> hostInterfaces();

// Whether interface IFACE matches an Open MPI-style interface list (btl_tcp_if_include): names
// ("eth0") and IPv4 subnets ("10.1.0.0/16"), separated by commas.
bool interfaceMatches(const HostInterface& iface, const std::string& list);

// The host name (gethostname), "" if it cannot be had.
std::string hostName();

}  // namespace perennial
