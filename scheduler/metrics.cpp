#include "scheduler/metrics.h"

#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>

#include <charconv>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "common/error.h"
#include "common/fs_util.h"
#include "common/log.h"

namespace perennial::sched {
namespace {

using nlohmann::json;
using Labels = std::vector<std::pair<std::string, std::string>>;

std::string formatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest form that reads back the same
  return std::string(buf, r.ptr);
}
std::string formatValue(int64_t v) { return std::to_string(v); }

class Writer {
 public:
  void family(const std::string& name, const char* type, const std::string& help) {
    text += "# HELP " + name + " ";
    for (char c : help) {
      if (c == '\\') {
        text += "\\\\";
      } else if (c == '\n') {
        text += "\\n";
      } else {
        text += c;
      }
    }
    text += "\n# TYPE " + name + " " + type + "\n";
  }
  void sample(const std::string& name, const Labels& labels, const std::string& value) {
    text += name;
    if (!labels.empty()) {
      text += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i) text += ',';
        text += labels[i].first + "=\"" + escapeLabelValue(labels[i].second) + "\"";
      }
      text += '}';
    }
    text += ' ' + value + '\n';
  }
  std::string text;
};

// A read transaction: every query sees the same catalog state.

json parseObject(const std::string& text) {
  json j = json::parse(text, nullptr, false);
  return j.is_object() ? j : json::object();
}

std::optional<double> numberField(const json& j, const char* key) {
  if (j.contains(key) && j[key].is_number()) return j[key].get<double>();
  return std::nullopt;
}

}  // namespace

std::string escapeLabelValue(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

namespace {

std::string renderMetricsOf(Catalog& catalog, const TickStats& ticks, const MetricsContext& context) {
  Writer w;

  // Runs by state: every state of catalog.h has a sample (0 when no run is in it).
  std::map<std::string, int64_t> byState = catalog.runCountsByState();
  w.family("perennial_runs", "gauge", "Runs in the catalog by state.");
  for (RunState st : kAllRunStates) {
    const auto it = byState.find(runStateName(st));
    const int64_t n = it == byState.end() ? 0 : it->second;
    w.sample("perennial_runs", {{"state", runStateName(st)}}, formatValue(n));
    if (it != byState.end()) byState.erase(it);
  }
  for (const auto& [st, n] : byState)  // a state this build does not know (a newer catalog)
    w.sample("perennial_runs", {{"state", st}}, formatValue(n));

  // Shards and quarantine.
  const NewDataStats all = catalog.shardsAfter(0);
  const int64_t shards = all.shards, rows = all.rows;
  const std::vector<std::pair<std::string, int64_t>> byRule = catalog.quarantineCountsByRule();
  int64_t quarantined = 0;
  for (const auto& [rule, n] : byRule) quarantined += n;
  w.family("perennial_shards_ingested_total", "counter",
           "Shards ingested (validated and stored in data/).");
  w.sample("perennial_shards_ingested_total", {}, formatValue(shards));
  w.family("perennial_shard_rows_ingested_total", "counter", "Rows in the ingested shards.");
  w.sample("perennial_shard_rows_ingested_total", {}, formatValue(rows));
  w.family("perennial_shards_quarantined_total", "counter",
           "Files refused by validation and moved to quarantine/.");
  w.sample("perennial_shards_quarantined_total", {}, formatValue(quarantined));
  w.family("perennial_shards_quarantined_by_rule_total", "counter",
           "Quarantined files by the validation rule that refused them.");
  for (const auto& [rule, n] : byRule)
    w.sample("perennial_shards_quarantined_by_rule_total", {{"rule", rule}}, formatValue(n));

  // Triggers: firings (events) and the latest evaluation (trigger_state).
  std::map<std::string, int64_t> firings;
  std::vector<std::pair<std::string, bool>> fired;
  for (const auto& t : catalog.triggerStates()) {
    fired.emplace_back(t.name, t.fired);
    firings[t.name] = 0;
  }
  for (const auto& [name, n] : catalog.eventCountsBySubject("trigger")) firings[name] = n;
  w.family("perennial_trigger_firings_total", "counter",
           "Trigger firings recorded as events (a firing that creates a run, or one that starts "
           "being held).");
  for (const auto& [name, n] : firings)
    w.sample("perennial_trigger_firings_total", {{"trigger", name}}, formatValue(n));
  w.family("perennial_trigger_fired", "gauge",
           "1 when the trigger's latest evaluation fired, else 0.");
  for (const auto& [name, f] : fired)
    w.sample("perennial_trigger_fired", {{"trigger", name}}, f ? "1" : "0");

  // The most recent training that finished.
  w.family("perennial_last_training_duration_seconds", "gauge",
           "Wall time (else training-loop time) of the most recently finished run that trained a "
           "model.");
  if (const std::optional<RunRecord> last = catalog.lastTrainedRun(); last && last->result) {
    // 0 is "not measured" (TrainResult's default).
    const double seconds = last->result->wallSeconds > 0 ? last->result->wallSeconds : last->result->trainSeconds;
    if (seconds > 0) w.sample("perennial_last_training_duration_seconds", {}, formatValue(seconds));
  }

  // The champion.
  w.family("perennial_champion_info", "gauge",
           "The champion: its registry model and version, and the run that trained it.");
  std::optional<double> accuracy;
  if (const auto championRun = catalog.meta("champion")) {
    const std::optional<RunRecord> run = catalog.run(*championRun);
    std::string model, version;
    if (const auto event = catalog.lastEvent("champion", *championRun)) {
      {
        const json detail = parseObject(event->detail);
        if (detail.contains("model") && detail["model"].is_string())
          model = detail["model"].get<std::string>();
        if (detail.contains("version") && detail["version"].is_string())
          version = detail["version"].get<std::string>();
      }
    }
    if (version.empty() && run && run->state == RunState::kPromoted)
      version = catalog.meta("champion_version").value_or("");
    if (model.empty() && !version.empty()) model = context.model;
    w.sample("perennial_champion_info",
             {{"model", model}, {"version", version}, {"run", *championRun}}, "1");
    if (run && run->result && !run->result->test.regression) accuracy = run->result->test.accuracy;
    if (!accuracy && !context.registryDir.empty() && !model.empty() && !version.empty()) {
      std::ifstream in(context.registryDir + "/" + model + "/versions/" + version +
                       "/metrics.json");
      if (in)
        accuracy = numberField(parseObject(std::string(std::istreambuf_iterator<char>(in), {})),
                               "accuracy");
    }
  }
  w.family("perennial_champion_accuracy", "gauge",
           "The champion's test accuracy (its run's result, else its registry metrics).");
  if (accuracy) w.sample("perennial_champion_accuracy", {}, formatValue(*accuracy));
  // A champion that cannot be read holds publishing (docs/scheduler.md, "A damaged champion").
  w.family("perennial_champion_damaged", "gauge",
           "1 while the registry's champion cannot be read (nothing is published until it is repaired or rolled back).");
  w.sample("perennial_champion_damaged", {}, catalog.meta("champion_damaged").value_or("").empty() ? "0" : "1");

  // The daemon's own ticks (in memory: they restart from 0 with the daemon).
  w.family("perennial_scheduler_ticks_total", "counter",
           "Scheduler ticks completed by this daemon.");
  w.sample("perennial_scheduler_ticks_total", {},
           formatValue(static_cast<int64_t>(ticks.ticks.load())));
  w.family("perennial_scheduler_tick_failures_total", "counter",
           "Scheduler ticks that failed with an error (the daemon went on).");
  w.sample("perennial_scheduler_tick_failures_total", {},
           formatValue(static_cast<int64_t>(ticks.failures.load())));
  w.family("perennial_scheduler_tick_duration_seconds", "gauge",
           "Duration of the last completed tick.");
  w.sample("perennial_scheduler_tick_duration_seconds", {}, formatValue(ticks.lastSeconds.load()));
  w.family("perennial_scheduler_last_tick_timestamp_seconds", "gauge",
           "When the last tick completed, in seconds since the epoch (0: none yet).");
  w.sample("perennial_scheduler_last_tick_timestamp_seconds", {}, formatValue(ticks.lastAt.load()));
  return w.text;
}

}  // namespace

// One read transaction: every figure comes from the same state of the catalog.
std::string renderMetrics(Catalog& catalog, const TickStats& ticks, const MetricsContext& context) {
  std::string text;
  catalog.readTransaction([&] { text = renderMetricsOf(catalog, ticks, context); });
  return text;
}

struct MetricsServer::Impl {
  std::string catalogPath;
  const TickStats* ticks = nullptr;
  MetricsContext context;
  httplib::Server server;
  std::thread thread;
  std::atomic<bool> finished{false};
  int port = 0;
  TickStats none;

  std::string scrape() {
    if (!fs::exists(catalogPath)) throw IoError(catalogPath + ": no catalog");
    Catalog cat(catalogPath, Catalog::Access::kReadOnly);  // this thread's own connection
    return renderMetrics(cat, ticks ? *ticks : none, context);
  }
};

MetricsServer::MetricsServer(std::string catalogPath, const TickStats* ticks,
                             MetricsContext context)
    : impl_(std::make_unique<Impl>()) {
  impl_->catalogPath = std::move(catalogPath);
  impl_->ticks = ticks;
  impl_->context = std::move(context);
}

MetricsServer::~MetricsServer() { stop(); }

int MetricsServer::port() const { return impl_->port; }

int MetricsServer::start(int port) {
  PERENNIAL_CHECK(!impl_->thread.joinable(), "MetricsServer::start called twice");
  if (port < 0 || port > 65535)
    throw ConfigError("--metrics-port: " + std::to_string(port) + " is not a port");
  Impl* impl = impl_.get();
  httplib::Server& svr = impl->server;
  // A scrape every few seconds needs neither a large pool nor keep-alive; without keep-alive,
  // stop() does not wait for idle connections.
  svr.new_task_queue = [] { return new httplib::ThreadPool(2); };
  svr.set_keep_alive_max_count(1);
  svr.set_read_timeout(5, 0);
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which would let a second daemon bind
  // the same port and share the scrapes with this one.
  svr.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  svr.Get("/metrics", [impl](const httplib::Request&, httplib::Response& res) {
    try {
      res.set_content(impl->scrape(), "text/plain; version=0.0.4; charset=utf-8");
    } catch (const std::exception& e) {
      log::get("metrics")->warn("scrape failed: {}", e.what());
      res.status = 500;
      res.set_content(std::string("error: ") + e.what() + "\n", "text/plain; charset=utf-8");
    }
  });
  svr.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.status == 404)
      res.set_content("404 not found (the metrics are at /metrics)\n", "text/plain; charset=utf-8");
  });
  const std::string host = "127.0.0.1";  // loopback only: the metrics are not for the network
  if (port == 0) {
    impl->port = svr.bind_to_any_port(host);
    if (impl->port < 0) impl->port = 0;
  } else if (svr.bind_to_port(host, port)) {
    impl->port = port;
  }
  if (impl->port == 0) {
    throw IoError("--metrics-port: cannot listen on " + host + ":" + std::to_string(port) +
                  " (in use, or not allowed)");
  }
  // The serving threads (this one and the pool it creates) block every signal: SIGTERM and
  // SIGINT must reach the main thread, and a scraper that hangs up must not raise SIGPIPE.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  impl->thread = std::thread([impl] {
    impl->server.listen_after_bind();
    impl->finished = true;
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return impl->port;
}

void MetricsServer::stop() {
  Impl* impl = impl_.get();
  if (!impl->thread.joinable()) return;
  // httplib's stop() does nothing before the listening loop has begun: wait for it (or for a
  // loop that ended on its own).
  while (!impl->server.is_running() && !impl->finished)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl->server.stop();
  impl->thread.join();
}

}  // namespace perennial::sched
