#pragma once
// Triggers decide when to start a training run. Each is a small class behind one interface;
// the scheduler evaluates all of them every tick, records each one's latest decision (with the
// values and thresholds that led to it) and starts at most one run when any fires, subject to
// the cool-down and the concurrency limit.
//
// "New" data are the shards no live run covers yet: ingested after the newest snapshot of the
// champion or of any run that is pending, active or succeeded (failed and cancelled runs do not
// cover data, so their data can fire a trigger again after the cool-down).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scheduler/catalog.h"
#include "dataset/profile.h"
#include "scheduler/sched_config.h"

namespace perennial::sched {

// Evaluates a model on shards (the decay trigger's measurement; the CLI runs `perennial eval`).
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  // Accuracy of the weights file MODEL on the shard files SHARDS. Throws Error on failure.
  virtual double accuracy(const std::string& model, const std::vector<std::string>& shards) = 0;
};

struct TriggerContext {
  double now = 0;
  Catalog* catalog = nullptr;
  std::string root;
  std::optional<RunRecord> champion;
  std::optional<SnapshotRecord> championSnapshot;
  int64_t coveredSeq = 0;  // shards with seq <= this are covered (see above)
  NewDataStats newData;    // shards after coveredSeq
  Evaluator* evaluator = nullptr;
};

struct TriggerDecision {
  bool fire = false;
  std::string reason;
  nlohmann::json values = nlohmann::json::object();
  nlohmann::json thresholds = nlohmann::json::object();
};

class Trigger {
 public:
  virtual ~Trigger() = default;
  virtual std::string name() const = 0;
  virtual TriggerDecision evaluate(TriggerContext& ctx) = 0;
  // Called in the transaction that creates the run this trigger fired (e.g. to consume requests).
  virtual void onRunCreated(TriggerContext&, const std::string& /*runId*/) {}
};

class OnDemandTrigger : public Trigger {
 public:
  std::string name() const override { return "on_demand"; }
  TriggerDecision evaluate(TriggerContext& ctx) override;
  void onRunCreated(TriggerContext& ctx, const std::string& runId) override;
};

class ScheduleTrigger : public Trigger {
 public:
  explicit ScheduleTrigger(double intervalS) : interval_(intervalS) {}
  std::string name() const override { return "schedule"; }
  TriggerDecision evaluate(TriggerContext& ctx) override;

 private:
  double interval_;
};

class NewDataTrigger : public Trigger {
 public:
  explicit NewDataTrigger(int64_t minRows) : minRows_(minRows) {}
  std::string name() const override { return "new_data"; }
  TriggerDecision evaluate(TriggerContext& ctx) override;

 private:
  int64_t minRows_;
};

// PSI of the new data's profile against the champion's training data.
class DriftTrigger : public Trigger {
 public:
  DriftTrigger(double threshold, int64_t minRows) : threshold_(threshold), minRows_(minRows) {}
  std::string name() const override { return "drift"; }
  TriggerDecision evaluate(TriggerContext& ctx) override;

 private:
  double threshold_;
  int64_t minRows_;
  std::string cacheKey_;
  nlohmann::json cached_;
};

// The champion's accuracy on the new labelled shards against its validation accuracy.
class DecayTrigger : public Trigger {
 public:
  DecayTrigger(double margin, int64_t minRows) : margin_(margin), minRows_(minRows) {}
  std::string name() const override { return "decay"; }
  TriggerDecision evaluate(TriggerContext& ctx) override;

 private:
  double margin_;
  int64_t minRows_;
  std::string cacheKey_;
  double cachedAccuracy_ = 0;
};

// The triggers the configuration turns on, in evaluation order.
std::vector<std::unique_ptr<Trigger>> makeTriggers(const SchedConfig& config);

}  // namespace perennial::sched
