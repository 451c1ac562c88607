#include "trainer/comm/stall_inspector.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/error.h"

namespace perennial {
namespace {

using Clock = std::chrono::steady_clock;
constexpr const char* kQuery = "PERENNIAL-STALL?";
constexpr const char* kAnswer = "PERENNIAL-STALL";
constexpr size_t kMaxLine = 256;

int64_t msLeft(Clock::time_point deadline) {
  return std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
}

void closeFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// Parses "key=value" words of an answer line into A; false when one is missing or malformed.
bool parseAnswer(const std::string& line, RankActivity& a, int& rank) {
  std::istringstream in(line);
  std::string word;
  if (!(in >> word) || word != kAnswer) return false;
  int found = 0;
  while (in >> word) {
    const auto eq = word.find('=');
    if (eq == std::string::npos) return false;
    const std::string key = word.substr(0, eq), value = word.substr(eq + 1);
    try {
      if (key == "rank") {
        rank = std::stoi(value);
      } else if (key == "seq") {
        a.seq = std::stoull(value);
      } else if (key == "in") {
        a.inCollective = value == "1";
      } else if (key == "since_ms") {
        a.sinceMs = std::stoll(value);
      } else if (key == "call") {
        a.call = value;
      } else {
        continue;
      }
    } catch (const std::exception&) {
      return false;
    }
    ++found;
  }
  return found == 5;
}

// A few dozen bytes into an empty socket buffer: never blocks. Nothing is sent for "".
void sendReply(int fd, const std::string& reply) {
  if (reply.empty()) return;
  [[maybe_unused]] const ssize_t sent = ::send(fd, reply.data(), reply.size(), MSG_NOSIGNAL);
}

std::string seconds(int64_t ms) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f s", static_cast<double>(ms) / 1000.0);
  return buf;
}

std::string rankList(const std::vector<int>& ranks) {
  std::string out;
  for (int r : ranks) out += (out.empty() ? "" : ", ") + std::to_string(r);
  return out;
}

}  // namespace

std::string hostName() {
  char host[256] = {0};
  if (::gethostname(host, sizeof(host) - 1) != 0) return "";
  return host;
}

std::vector<HostInterface> hostInterfaces() {
  std::vector<HostInterface> out;
  struct ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return out;
  for (struct ifaddrs* i = list; i; i = i->ifa_next) {
    if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET) continue;
    if (!(i->ifa_flags & IFF_UP) || (i->ifa_flags & IFF_LOOPBACK)) continue;
    char addr[INET_ADDRSTRLEN] = {0};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, addr,
                sizeof(addr));
    int prefix = 0;
    if (i->ifa_netmask) {
      prefix = __builtin_popcount(reinterpret_cast<sockaddr_in*>(i->ifa_netmask)->sin_addr.s_addr);
    }
    out.push_back({i->ifa_name, addr, prefix});
  }
  ::freeifaddrs(list);
  return out;
}

bool interfaceMatches(const HostInterface& iface, const std::string& list) {
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, ',');) {
    item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
    if (item.empty()) continue;
    const auto slash = item.find('/');
    if (slash == std::string::npos) {
      if (item == iface.name) return true;
      continue;
    }
    in_addr net{}, addr{};
    int bits = -1;
    try {
      bits = std::stoi(item.substr(slash + 1));
    } catch (const std::exception&) {
      continue;
    }
    if (bits < 0 || bits > 32 || ::inet_pton(AF_INET, item.substr(0, slash).c_str(), &net) != 1 ||
        ::inet_pton(AF_INET, iface.address.c_str(), &addr) != 1) {
      continue;
    }
    const uint32_t mask = bits == 0 ? 0 : htonl(~uint32_t{0} << (32 - bits));
    if ((net.s_addr & mask) == (addr.s_addr & mask)) return true;
  }
  return false;
}

StallInspector::StallInspector(int rank, std::function<RankActivity()> activity,
                               const std::vector<std::string>& bindAddresses)
    : rank_(rank), activity_(std::move(activity)), host_(hostName()) {
  std::string why;
  for (const auto& address : bindAddresses) {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    if (::inet_pton(AF_INET, address.c_str(), &sa.sin_addr) != 1) continue;
    if (std::find_if(endpoints_.begin(), endpoints_.end(),
                     [&](const auto& e) { return e.address == address; }) != endpoints_.end()) {
      continue;
    }
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    socklen_t len = sizeof(sa);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 ||
        ::listen(fd, 128) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      why += (why.empty() ? "" : "; ") + address + ": " + std::strerror(errno);
      closeFd(fd);
      continue;
    }
    fds_.push_back(fd);
    endpoints_.push_back({address, ntohs(sa.sin_port)});
  }
  if (fds_.empty())
    throw CommError("stall inspector: cannot listen on a TCP port (" +
                    (why.empty() ? "no address" : why) + ")");
}

StallInspector::~StallInspector() {
  for (int& fd : fds_) closeFd(fd);
}

std::string StallInspector::cardWithout(const std::string& host, int64_t pid) {
  return (host.empty() ? "?" : host) + " " + std::to_string(pid) + " -";
}

std::string StallInspector::card() const {
  const std::string head = (host_.empty() ? "?" : host_) + " " + std::to_string(::getpid()) + " ";
  std::string list;
  for (const auto& e : endpoints_) {
    const std::string item = e.address + ":" + std::to_string(e.port);
    if (head.size() + list.size() + item.size() + 1 >= kCardBytes) break;
    list += (list.empty() ? "" : ",") + item;
  }
  return head + (list.empty() ? "-" : list);
}

StallPeer StallInspector::parseCard(int rank, const std::string& card) {
  StallPeer p;
  p.rank = rank;
  std::istringstream in(card);
  std::string host, pid, list;
  if (!(in >> host >> pid >> list)) return p;
  p.host = host;
  try {
    p.pid = std::stoll(pid);
  } catch (const std::exception&) {
    p.pid = 0;
  }
  std::istringstream items(list);
  for (std::string item; std::getline(items, item, ',');) {
    const auto colon = item.rfind(':');
    if (colon == std::string::npos) continue;
    in_addr tmp{};
    int port = 0;
    try {
      port = std::stoi(item.substr(colon + 1));
    } catch (const std::exception&) {
      continue;
    }
    const std::string address = item.substr(0, colon);
    if (port > 0 && port < 65536 && ::inet_pton(AF_INET, address.c_str(), &tmp) == 1) {
      p.endpoints.push_back({address, static_cast<uint16_t>(port)});
    }
  }
  return p;
}

void StallInspector::setPeers(std::vector<StallPeer> peers, std::string token) {
  peers_ = std::move(peers);
  token_ = std::move(token);
}

std::string StallInspector::answer() const {
  const RankActivity a = activity_();
  std::ostringstream os;
  os << kAnswer << " rank=" << rank_ << " seq=" << a.seq << " in=" << (a.inCollective ? 1 : 0)
     << " since_ms=" << a.sinceMs << " call=" << (a.call.empty() ? "-" : a.call) << "\n";
  return os.str();
}

void StallInspector::serve() {
  for (int fd : fds_) serve(fd);
}

std::string StallInspector::replyTo(const std::string& query) const {
  std::istringstream line(query.substr(0, query.find('\n')));
  std::string word, token;
  if (token_.empty() || !(line >> word >> token) || word != kQuery || token != token_) return "";
  return answer();
}

void StallInspector::serve(int fd) {
  for (;;) {
    int client = ::accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (client < 0) return;  // EAGAIN: nothing more waits (or a transient error: next time)
    std::string in;
    const auto deadline = Clock::now() + kServeWait;
    while (in.find('\n') == std::string::npos && in.size() < kMaxLine) {
      pollfd p{client, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(msLeft(deadline))) <= 0) break;
      char buf[kMaxLine];
      const ssize_t n = ::read(client, buf, kMaxLine - in.size());
      if (n <= 0) break;
      in.append(buf, static_cast<size_t>(n));
    }
    sendReply(client, replyTo(in));
    ::close(client);
  }
}

std::vector<PeerReport> StallInspector::probe(std::chrono::milliseconds budget) {
  struct Ask {
    PeerReport report;
    const StallPeer* peer = nullptr;
    size_t next = 0;  // the next address to try
    int fd = -1;
    bool connected = false, sent = false, done = false;
    std::string in, lastError;
  };
  std::vector<Ask> asks;
  for (const auto& p : peers_) {
    if (p.rank == rank_) continue;
    Ask a;
    a.report.rank = p.rank;
    a.peer = &p;
    asks.push_back(std::move(a));
  }
  const auto deadline = Clock::now() + budget;
  const std::string query = std::string(kQuery) + " " + token_ + "\n";

  // Starts a connection to the next endpoint of A; false when none is left. A peer on this host
  // is asked on loopback first; one on another host never on loopback.
  auto connectNext = [&](Ask& a) {
    closeFd(a.fd);
    std::vector<StallEndpoint> order;
    const bool local = a.peer->host == host_;
    for (const auto& e : a.peer->endpoints) {
      const bool loopback = e.address.rfind("127.", 0) == 0;
      if (loopback && local) order.insert(order.begin(), e);
      if (!loopback) order.push_back(e);
    }
    while (a.next < order.size()) {
      const StallEndpoint e = order[a.next++];
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_port = htons(e.port);
      if (::inet_pton(AF_INET, e.address.c_str(), &sa.sin_addr) != 1) continue;
      a.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (a.fd < 0) {
        a.lastError = std::string("socket: ") + std::strerror(errno);
        return false;
      }
      if (::connect(a.fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 ||
          errno == EINPROGRESS)
        return true;
      a.lastError = e.address + ": " + std::strerror(errno);
      closeFd(a.fd);
    }
    if (a.lastError.empty()) a.lastError = "no address of it can be reached from this host";
    return false;
  };
  auto finish = [&](Ask& a, const std::string& error) {
    closeFd(a.fd);
    a.done = true;
    if (!a.report.answered) a.report.error = error;
  };
  for (auto& a : asks) {
    if (a.peer->endpoints.empty()) {
      finish(a, "it has no stall inspector (its comm.timeout_s is 0, or its listener failed)");
    } else if (!connectNext(a)) {
      finish(a, "no connection: " + a.lastError);
    }
  }

  // Queries of other ranks arriving meanwhile are served inside this loop, never by blocking in
  // serve(): two ranks that probe each other at the same moment would each wait in serve() for
  // the query the other has not sent yet, and both would see the other give no answer.
  struct Client {
    int fd = -1;
    std::string in;
    Clock::time_point deadline;
  };
  std::vector<Client> clients;
  auto answerClient = [&](Client& c) {
    sendReply(c.fd, replyTo(c.in));
    closeFd(c.fd);
  };

  for (;;) {
    const bool asking = std::any_of(asks.begin(), asks.end(), [](const Ask& a) { return !a.done; });
    const int64_t left = msLeft(deadline);
    // Once this rank's own questions are settled, it still answers the clients it accepted (each
    // within kServeWait), so a peer that asked at the same moment gets its answer.
    if ((!asking || left == 0) && clients.empty()) break;
    std::vector<pollfd> fds;
    std::vector<Ask*> owners;
    for (int fd : fds_) fds.push_back({fd, POLLIN, 0});
    const size_t firstClient = fds.size();
    for (const auto& c : clients) fds.push_back({c.fd, POLLIN, 0});
    const size_t firstAsk = fds.size();
    if (asking && left > 0) {
      for (auto& a : asks) {
        if (a.done) continue;
        fds.push_back({a.fd, static_cast<short>(a.connected && a.sent ? POLLIN : POLLOUT), 0});
        owners.push_back(&a);
      }
    }
    int64_t wait = asking && left > 0 ? std::min<int64_t>(left, 100) : 100;
    for (const auto& c : clients) wait = std::min(wait, msLeft(c.deadline));
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait)) < 0 && errno != EINTR) break;
    for (size_t i = firstClient; i < firstAsk; ++i) {
      Client& c = clients[i - firstClient];
      if (fds[i].revents) {
        char buf[kMaxLine];
        const ssize_t n = ::read(c.fd, buf, kMaxLine - std::min(kMaxLine, c.in.size()));
        if (n > 0) c.in.append(buf, static_cast<size_t>(n));
        if (n > 0 && c.in.find('\n') == std::string::npos && c.in.size() < kMaxLine) continue;
        if (n < 0 && errno == EAGAIN) continue;
        answerClient(c);
      } else if (msLeft(c.deadline) == 0) {
        answerClient(c);  // silent for kServeWait: closed (answered only if a line came)
      }
    }
    clients.erase(std::remove_if(clients.begin(), clients.end(),
                                 [](const Client& c) { return c.fd < 0; }),
                  clients.end());
    for (size_t i = 0; i < firstClient; ++i) {
      if (!(fds[i].revents & POLLIN)) continue;
      for (;;) {
        const int fd = ::accept4(fds[i].fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        // A flood of connections (anyone on the host may connect) costs descriptors: beyond
        // twice the job's ranks (every other rank asking at once is the norm), or 64, waiting at
        // once, a connection is closed unanswered.
        if (clients.size() >= std::max<size_t>(64, 2 * peers_.size())) {
          ::close(fd);
          continue;
        }
        clients.push_back({fd, "", Clock::now() + kServeWait});
      }
    }
    for (size_t i = firstAsk; i < fds.size(); ++i) {
      Ask& a = *owners[i - firstAsk];
      if (!fds[i].revents) continue;
      if (!a.connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        ::getsockopt(a.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
          a.lastError = std::strerror(err);
          if (!connectNext(a)) finish(a, "no connection: " + a.lastError);
          continue;
        }
        a.connected = true;
      }
      if (!a.sent) {
        if (::send(a.fd, query.data(), query.size(), MSG_NOSIGNAL) !=
            static_cast<ssize_t>(query.size())) {
          finish(a, std::string("could not send the query: ") + std::strerror(errno));
          continue;
        }
        a.sent = true;
        continue;
      }
      char buf[kMaxLine];
      const ssize_t n = ::read(a.fd, buf, sizeof(buf));
      if (n > 0 && a.in.size() < kMaxLine) {
        a.in.append(buf, static_cast<size_t>(n));
        if (a.in.find('\n') == std::string::npos) continue;
      }
      int answeredRank = -1;
      a.report.answered =
          parseAnswer(a.in.substr(0, a.in.find('\n')), a.report.activity, answeredRank) &&
          answeredRank == a.report.rank;
      finish(a, n < 0 ? std::string("the connection failed: ") + std::strerror(errno)
                      : "connected, but it gave no valid answer");
    }
  }
  for (auto& a : asks) {
    if (a.done) continue;
    finish(a, a.connected ? "connected, but no answer within " + seconds(budget.count()) +
                                " (the process is stopped or overloaded)"
                          : "no connection within " + seconds(budget.count()) +
                                " (its host is unreachable or down)");
  }
  std::vector<PeerReport> out;
  out.reserve(asks.size());
  for (auto& a : asks) out.push_back(std::move(a.report));
  return out;
}

std::string StallInspector::describe(uint64_t seq, const std::string& call, int self,
                                     const std::vector<StallPeer>& peers,
                                     const std::vector<PeerReport>& reports) {
  auto where = [&](int rank) {
    for (const auto& p : peers) {
      if (p.rank == rank)
        return "rank " + std::to_string(rank) + " on " + p.host + " (pid " + std::to_string(p.pid) +
               ")";
    }
    return "rank " + std::to_string(rank);
  };
  std::vector<int> waiting{self};
  std::vector<std::string> missing;
  for (const auto& r : reports) {
    if (!r.answered) {
      missing.push_back(where(r.rank) + ": does not answer: " + r.error);
      continue;
    }
    const RankActivity& a = r.activity;
    if (a.inCollective && a.seq == seq && a.call == call) {
      waiting.push_back(r.rank);
    } else if (a.inCollective && a.seq == seq) {
      missing.push_back(where(r.rank) + ": in " + a.call + " instead (collective #" +
                        std::to_string(a.seq) + ": the ranks call different collectives)");
    } else if (a.inCollective) {
      missing.push_back(where(r.rank) + ": waits in " + a.call + " (collective #" +
                        std::to_string(a.seq) + ") for " + seconds(a.sinceMs) +
                        " (the ranks are out of step)");
    } else if (a.seq < seq) {
      missing.push_back(
          where(r.rank) + ": has not reached it: outside any collective for " + seconds(a.sinceMs) +
          (a.seq == 0 ? " (none begun yet)"
                      : " since " + a.call + " #" + std::to_string(a.seq) + " ended"));
    } else {
      // It has been through this collective: it is not what blocks it (MPI_Bcast's root may leave
      // early).
      waiting.push_back(r.rank);
    }
  }
  std::sort(waiting.begin(), waiting.end());
  std::string out;
  if (missing.empty()) {
    out = reports.empty() ? "no other rank could be asked"
                          : "every other rank has joined it (a slow network or an MPI problem, not "
                            "a missing rank)";
  } else {
    out = "not joined by ";
    for (size_t i = 0; i < missing.size(); ++i) out += (i ? "; " : "") + missing[i];
  }
  out += "; " +
         std::string(waiting.size() == 1 ? "rank " + rankList(waiting) + " waits"
                                         : "ranks " + rankList(waiting) + " wait") +
         " in it";
  return out;
}

}  // namespace perennial
