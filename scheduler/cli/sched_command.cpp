#include "scheduler/cli/sched_command.h"

#include <signal.h>

#include <atomic>
#include <boost/program_options.hpp>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/text.h"
#include "scheduler/catalog.h"
#include "scheduler/daemon.h"
#include "scheduler/ingest.h"
#include "scheduler/process.h"
#include "scheduler/scheduler.h"
#include "trainer/config/train_config.h"

namespace perennial::cli {
namespace {
namespace po = boost::program_options;
namespace stdfs = std::filesystem;
using nlohmann::json;
using namespace perennial::sched;

const char* kSchedUsage =
    "usage: perennial sched <command> --root DIR [options]\n\n"
    "commands:\n"
    "  run      --config FILE   the daemon: ingest, triggers, runs (stops on SIGTERM/SIGINT; runs go on)\n"
    "           [--metrics-port P]  serve Prometheus metrics on http://127.0.0.1:P/metrics\n"
    "  tick     --config FILE   one pass, then exit (for cron or a self-resubmitting Slurm job)\n"
    "  status   [--json]        champion, runs by state, shards, triggers' latest decisions\n"
    "  runs     [--json] [--limit N]\n"
    "  shards   [--json] [--limit N] [--quarantine]\n"
    "  events   [--json] [--limit N] [--kind K]\n"
    "  trigger  [--reason TEXT] start a run on demand (at the next tick)\n"
    "  cancel   RUN [--config FILE]  cancel a run (at once when no daemon runs and --config is given)\n\n"
    "The scheduler configuration's keys (configs/scheduler.cfg is an example):\n";

std::string isoTime(double t) {
  if (t <= 0) return "-";
  const std::time_t s = static_cast<std::time_t>(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

struct Common {
  std::string root, config;
  bool json = false;
  int64_t limit = 20;
  std::vector<std::string> positional;
  std::vector<std::string> overrides;
  po::variables_map vm;
};

Common parseCommon(const std::vector<std::string>& args, po::options_description& extra) {
  Common c;
  po::options_description desc;
  desc.add_options()("help,h", "help")("root", po::value<std::string>(&c.root), "scheduler root directory")(
      "config", po::value<std::string>(&c.config), "scheduler configuration file")(
      "json", po::bool_switch(&c.json), "print JSON")("limit", po::value<int64_t>(&c.limit)->default_value(20),
                                                     "rows to print");
  desc.add(extra);
  po::options_description hidden;
  hidden.add_options()("positional", po::value<std::vector<std::string>>(&c.positional));
  po::options_description all;
  all.add(desc).add(hidden);
  po::positional_options_description pos;
  pos.add("positional", -1);
  // Scheduler configuration overrides (--section.key=value) pass through to loadSchedConfig.
  std::vector<std::string> rest;
  for (const auto& a : args) {
    const auto dot = a.find('.');
    if (a.rfind("--", 0) == 0 && dot != std::string::npos && a.find('=') != std::string::npos && dot < a.find('=')) {
      c.overrides.push_back(a);
    } else {
      rest.push_back(a);
    }
  }
  try {
    po::store(po::command_line_parser(rest).options(all).positional(pos).style(
                  po::command_line_style::default_style & ~po::command_line_style::allow_guessing).run(),
              c.vm);
    po::notify(c.vm);
  } catch (const po::error& e) {
    throw ConfigError(std::string("command line: ") + programOptionsMessage(e));
  }
  if (c.vm.count("help")) return c;
  if (c.root.empty()) throw ConfigError("--root: required (the scheduler's root directory)");
  if (c.limit < 1) throw ConfigError("--limit: must be at least 1");
  return c;
}

std::unique_ptr<Catalog> openExisting(const std::string& root) {
  if (!fs::exists(catalogPath(root))) {
    throw ConfigError("--root: " + root + " has no catalog (start the scheduler with `perennial sched run` or `tick`)");
  }
  return std::make_unique<Catalog>(catalogPath(root));
}

// The scheduler opened on the root and configuration of the command line.
std::unique_ptr<SchedulerService> openService(const Common& c) {
  return std::make_unique<SchedulerService>(c.root, c.config, c.overrides);
}

json outcomeJson(const IngestOutcome& o) {
  return {{"source", o.source}, {"accepted", o.accepted}, {"skipped", o.skipped}, {"sha256", o.hash},
          {"rows", o.rows},     {"rule", o.rule},         {"reason", o.reason}};
}

// One line per file, its name escaped: "ingested NAME  N rows", "quarantined NAME  RULE: WHY".
void printOutcome(const IngestOutcome& o) {
  const char* what = o.accepted ? "ingested    " : o.skipped ? "left        " : "quarantined ";
  const std::string detail = o.accepted ? std::to_string(o.rows) + " rows"
                             : o.skipped ? o.reason
                                         : o.rule + ": " + o.reason;
  std::cout << what << printable(o.source) << "  " << printable(detail) << "\n";
}

json tickJson(const TickReport& r) {
  json ingested = json::array();
  for (const auto& o : r.ingested) ingested.push_back(outcomeJson(o));
  json transitions = json::array();
  for (const auto& [id, st] : r.transitions) transitions.push_back({{"run", id}, {"state", runStateName(st)}});
  json triggers = json::object();
  for (const auto& [name, d] : r.decisions) {
    triggers[name] = {{"fire", d.fire}, {"reason", d.reason}, {"values", d.values}, {"thresholds", d.thresholds}};
  }
  return {{"ingested", ingested}, {"created", r.created}, {"transitions", transitions}, {"triggers", triggers},
          {"seconds", r.seconds}};
}

int tickCommand(const Common& c) {
  TickReport r = openService(c)->tickOnce();
  if (c.json) {
    std::cout << dumpJson(tickJson(r), 2) << "\n";
  } else {
    for (const auto& o : r.ingested) printOutcome(o);
    for (const auto& id : r.created) std::cout << "created     " << id << "\n";
    for (const auto& [id, st] : r.transitions) std::cout << "run         " << id << " -> " << runStateName(st) << "\n";
  }
  return 0;
}

std::atomic<bool> gStop{false};
void onStop(int) { gStop.store(true); }

int runCommand(const Common& c, int64_t metricsPort) {
  if (metricsPort < 0 || metricsPort > 65535) {
    throw ConfigError("--metrics-port: " + std::to_string(metricsPort) + " is not a port (1 to 65535; 0: off)");
  }
  auto service = openService(c);
  struct sigaction sa {};
  sa.sa_handler = onStop;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::sigaction(SIGINT, &sa, nullptr);
  service->runDaemon(gStop, static_cast<int>(metricsPort));
  return 0;
}

// Cells are shown escaped (common/text.h): names and reasons come from other users' files.
void printTable(std::vector<std::vector<std::string>> rows) {
  for (auto& r : rows) {
    for (auto& cell : r) cell = printable(cell);
  }
  std::vector<size_t> w;
  for (const auto& r : rows) {
    if (w.size() < r.size()) w.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) w[i] = std::max(w[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(w[i] - r[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

json runJson(const RunRecord& r) {
  json j{{"id", r.id}, {"state", runStateName(r.state)}, {"trigger", r.trigger}, {"reason", r.reason}, {"snapshot", r.snapshotId},
         {"config_sha256", r.configSha256}, {"warm_start", r.warmStart}, {"attempt", r.attempt},
         {"max_attempts", r.maxAttempts}, {"executor", r.executor}, {"exec_id", r.execId}, {"message", r.message},
         {"cancel_requested", r.cancelRequested}, {"created_at", r.createdAt}, {"updated_at", r.updatedAt}};
  j["exit_code"] = r.exitCode ? json(*r.exitCode) : json(nullptr);
  j["finished_at"] = r.finishedAt ? json(*r.finishedAt) : json(nullptr);
  if (r.result) j["result"] = r.result->toJson();
  return j;
}

std::string accuracyOf(const RunRecord& r) {
  if (!r.result) return "-";
  if (r.result->test.regression) return "-";
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.4f", r.result->test.accuracy);
  return buf;
}

int statusCommand(const Common& c) {
  auto cat = openExisting(c.root);
  json j;
  const auto champion = cat->meta("champion");
  j["champion"] = champion ? json(*champion) : json(nullptr);
  // {"model", "version", "problems"} while the registry's champion cannot be read, else null.
  const json damaged = json::parse(cat->meta("champion_damaged").value_or(""), nullptr, false);
  j["champion_damaged"] = damaged.is_object() ? damaged : json(nullptr);
  json byState = json::object();
  for (const auto& [st, n] : cat->runCountsByState()) byState[st] = n;
  j["runs"] = byState;
  const NewDataStats all = cat->shardsAfter(0);
  j["shards"] = {{"count", all.shards}, {"rows", all.rows}, {"quarantined", cat->quarantineCount()}};
  json triggers = json::object();
  for (const auto& t : cat->triggerStates()) {
    json d = json::parse(t.detail);
    d["fired"] = t.fired;
    d["evaluated_at"] = t.evaluatedAt;
    d["last_fired_at"] = t.lastFiredAt ? json(*t.lastFiredAt) : json(nullptr);
    triggers[t.name] = d;
  }
  j["triggers"] = triggers;
  const auto lastTick = cat->meta("last_tick_at");
  j["last_tick_at"] = lastTick ? json(std::stod(*lastTick)) : json(nullptr);
  RootLock probe(c.root, false);
  j["daemon_running"] = !probe.held();
  if (c.json) {
    std::cout << dumpJson(j, 2) << "\n";
    return 0;
  }
  std::cout << "root:       " << c.root << (probe.held() ? "" : "  (a scheduler is running)") << "\n";
  std::cout << "last tick:  " << (lastTick ? isoTime(std::stod(*lastTick)) : "-") << "\n";
  std::string champ = "-";
  if (champion) {
    if (auto r = cat->run(*champion)) champ = r->id + " (accuracy " + accuracyOf(*r) + ")";
  }
  std::cout << "champion:   " << champ << "\n";
  if (damaged.is_object()) {
    std::cout << "            DAMAGED: registry " << damaged.value("model", "") << ":"
              << (damaged.value("version", json()).is_string() ? damaged.value("version", "") : "?")
              << " cannot be read; nothing is published until it is repaired or rolled back\n";
    for (const auto& p : damaged.value("problems", json::array())) {
      if (p.is_string()) std::cout << "              " << p.get<std::string>() << "\n";
    }
  }
  std::cout << "shards:     " << all.shards << " (" << all.rows << " rows), " << cat->quarantineCount()
            << " quarantined\n";
  std::string runs;
  for (auto it = byState.begin(); it != byState.end(); ++it) {
    runs += (runs.empty() ? "" : ", ") + std::to_string(it.value().get<int64_t>()) + " " + it.key();
  }
  std::cout << "runs:       " << (runs.empty() ? "none" : runs) << "\n\ntriggers:\n";
  std::vector<std::vector<std::string>> rows{{"TRIGGER", "FIRES", "EVALUATED", "LAST FIRED", "WHY"}};
  for (const auto& t : cat->triggerStates()) {
    json d = json::parse(t.detail);
    std::string why = d.value("reason", "");
    if (d.contains("held")) why += " [held: " + d["held"].get<std::string>() + "]";
    rows.push_back({t.name, t.fired ? "yes" : "no", isoTime(t.evaluatedAt),
                    t.lastFiredAt ? isoTime(*t.lastFiredAt) : "-", why});
  }
  printTable(rows);
  return 0;
}

int runsCommand(const Common& c) {
  auto cat = openExisting(c.root);
  auto runs = cat->recentRuns(c.limit);
  if (c.json) {
    json a = json::array();
    for (const auto& r : runs) a.push_back(runJson(r));
    std::cout << dumpJson(a, 2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows{{"RUN", "STATE", "TRIGGER", "ATTEMPT", "CREATED", "ACCURACY", "MESSAGE"}};
  for (const auto& r : runs) {
    const bool cancelling = r.cancelRequested && !isTerminalState(r.state);
    rows.push_back({r.id, runStateName(r.state) + std::string(cancelling ? " (cancelling)" : ""), r.trigger,
                    std::to_string(r.attempt) + "/" + std::to_string(r.maxAttempts), isoTime(r.createdAt),
                    accuracyOf(r), r.message.substr(0, 100)});
  }
  printTable(rows);
  return 0;
}

int shardsCommand(const Common& c, bool quarantine) {
  auto cat = openExisting(c.root);
  if (quarantine) {
    auto q = cat->quarantined(c.limit);
    if (c.json) {
      json a = json::array();
      for (const auto& r : q) {
        a.push_back({{"file", r.file}, {"source", r.source}, {"rule", r.rule}, {"reason", r.reason}, {"at", r.at}});
      }
      std::cout << dumpJson(a, 2) << "\n";
      return 0;
    }
    std::vector<std::vector<std::string>> rows{{"SOURCE", "RULE", "AT", "REASON"}};
    for (const auto& r : q) rows.push_back({r.source, r.rule, isoTime(r.at), r.reason.substr(0, 120)});
    printTable(rows);
    return 0;
  }
  auto shards = cat->recentShards(c.limit);
  if (c.json) {
    json a = json::array();
    for (const auto& s : shards) {
      a.push_back({{"seq", s.seq}, {"sha256", s.hash}, {"file", s.file}, {"source", s.source}, {"rows", s.rows},
                   {"bytes", s.bytes}, {"ingested_at", s.ingestedAt}});
    }
    std::cout << dumpJson(a, 2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows{{"SEQ", "SOURCE", "ROWS", "INGESTED", "SHA256"}};
  for (const auto& s : shards) {
    rows.push_back({std::to_string(s.seq), s.source, std::to_string(s.rows), isoTime(s.ingestedAt), s.hash.substr(0, 16)});
  }
  printTable(rows);
  return 0;
}

int eventsCommand(const Common& c, const std::string& kind) {
  auto cat = openExisting(c.root);
  auto events = cat->events(c.limit, kind);
  if (c.json) {
    json a = json::array();
    for (const auto& e : events) {
      a.push_back({{"id", e.id}, {"at", e.at}, {"kind", e.kind}, {"subject", e.subject}, {"detail", json::parse(e.detail, nullptr, false)}});
    }
    std::cout << dumpJson(a, 2) << "\n";
    return 0;
  }
  std::vector<std::vector<std::string>> rows{{"ID", "AT", "KIND", "SUBJECT", "DETAIL"}};
  for (const auto& e : events) {
    rows.push_back({std::to_string(e.id), isoTime(e.at), e.kind, e.subject.substr(0, 16), e.detail.substr(0, 140)});
  }
  printTable(rows);
  return 0;
}

}  // namespace

int schedCommand(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kSchedUsage << schedConfigHelp();
    return args.empty() ? 2 : 0;
  }
  const std::string sub = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "exec") return execSupervisorMain(rest);
  std::string reason, kind;
  bool quarantine = false;
  int64_t metricsPort = 0;
  po::options_description extra;
  if (sub == "trigger") extra.add_options()("reason", po::value<std::string>(&reason), "why (recorded)");
  if (sub == "shards") extra.add_options()("quarantine", po::bool_switch(&quarantine), "list quarantined files");
  if (sub == "events") extra.add_options()("kind", po::value<std::string>(&kind), "only this kind of event");
  if (sub == "run") {
    extra.add_options()("metrics-port", po::value<int64_t>(&metricsPort)->default_value(0),
                        "serve Prometheus metrics on 127.0.0.1:PORT (0: off)");
  }
  Common c = parseCommon(rest, extra);
  if (c.vm.count("help")) {
    std::cout << kSchedUsage << schedConfigHelp();
    return 0;
  }
  const bool takesPositional = sub == "cancel";
  if (!takesPositional && !c.positional.empty()) throw ConfigError("command line: unexpected argument '" + c.positional[0] + "'");
  log::init(0, 1, "info");
  if (sub == "run") return runCommand(c, metricsPort);
  if (sub == "tick") return tickCommand(c);
  if (sub == "status") return statusCommand(c);
  if (sub == "runs") return runsCommand(c);
  if (sub == "shards") return shardsCommand(c, quarantine);
  if (sub == "events") return eventsCommand(c, kind);
  SystemClock clock;
  if (sub == "trigger") {
    auto cat = openExisting(c.root);
    cat->transaction([&] { cat->addRequest("trigger", reason, clock.now()); });
    std::cout << "requested a run; the scheduler starts it at its next tick\n";
    return 0;
  }
  if (sub == "cancel") {
    if (c.positional.size() != 1) throw ConfigError("usage: perennial sched cancel --root DIR RUN");
    const std::string id = c.positional[0];
    auto cat = openExisting(c.root);
    if (!cat->run(id)) throw ConfigError("cancel: no run '" + id + "' in " + c.root);
    cat->transaction([&] { cat->addRequest("cancel", id, clock.now()); });
    RootLock lock(c.root, false);
    if (lock.held() && !c.config.empty()) {
      auto d = openService(c);
      TickReport r;
      d->scheduler().handleCancelRequests(r);
      auto run = d->catalog().run(id);
      if (run && isActiveState(run->state)) d->executor().cancel(d->scheduler().attemptSpec(*run), run->execId);
      std::cout << "run " << id << ": " << (run ? runStateName(run->state) : "?")
                << (run && isActiveState(run->state) ? " (signalled; recorded as cancelled at the next tick)" : "") << "\n";
    } else {
      std::cout << "cancel of " << id << " requested; the scheduler acts on it at its next tick\n";
    }
    return 0;
  }
  std::cerr << "perennial sched: unknown command '" << sub << "'\n" << kSchedUsage;
  return 2;
}

int dataAddCommand(const std::vector<std::string>& args) {
  po::options_description extra;
  Common c = parseCommon(args, extra);
  if (c.vm.count("help")) {
    std::cout << "usage: perennial data add --root DIR [--config FILE] FILE...\n\n"
                 "Copies shards into ROOT/incoming/ (atomically). With --config and no scheduler running,\n"
                 "ingests them at once and prints each one's outcome; otherwise the scheduler ingests them.\n";
    return 0;
  }
  if (c.positional.empty()) throw ConfigError("data add: no files given");
  log::init(0, 1, "info");
  // A bad configuration is reported before anything is copied.
  std::unique_ptr<SchedulerService> d;
  if (!c.config.empty()) d = openService(c);
  ensureRootLayout(c.root);
  std::vector<std::string> names = stageFiles(c.root, c.positional);
  RootLock lock(c.root, false);
  if (!d || !lock.held()) {
    for (const auto& n : names) std::cout << "queued      " << printable(n) << "\n";
    return 0;
  }
  int rejected = 0;
  json out = json::array();
  for (const auto& n : names) {
    IngestOutcome o = d->scheduler().ingester().ingest(n);
    if (!o.accepted) ++rejected;
    out.push_back(outcomeJson(o));
    if (!c.json) printOutcome(o);
  }
  if (c.json) std::cout << dumpJson(out, 2) << "\n";
  return rejected ? 1 : 0;
}

}  // namespace perennial::cli
