#include "scheduler/triggers.h"
#include "scheduler/run_paths.h"

#include <cmath>

#include "common/error.h"
#include "common/log.h"

namespace perennial::sched {
namespace {
using nlohmann::json;

// The decision a data trigger stored last time, so a restarted scheduler need not measure the
// same data again.
std::optional<json> storedValues(Catalog& cat, const std::string& trigger) {
  for (const auto& t : cat.triggerStates()) {
    if (t.name != trigger) continue;
    try {
      return json::parse(t.detail).at("values");
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

std::string dataKey(const TriggerContext& ctx) {
  return (ctx.champion ? ctx.champion->id : std::string("-")) + ":" + std::to_string(ctx.coveredSeq) + ":" +
         std::to_string(ctx.newData.maxSeq);
}

}  // namespace

TriggerDecision OnDemandTrigger::evaluate(TriggerContext& ctx) {
  TriggerDecision d;
  auto open = ctx.catalog->openRequests("trigger");
  d.values["requests"] = open.size();
  d.thresholds["requests"] = 1;
  if (!open.empty()) {
    d.fire = true;
    d.reason = "requested" + (open.front().arg.empty() ? std::string() : ": " + open.front().arg);
  } else {
    d.reason = "no request";
  }
  return d;
}

void OnDemandTrigger::onRunCreated(TriggerContext& ctx, const std::string&) {
  for (const auto& r : ctx.catalog->openRequests("trigger")) ctx.catalog->closeRequest(r.id, ctx.now);
}

TriggerDecision ScheduleTrigger::evaluate(TriggerContext& ctx) {
  TriggerDecision d;
  // Measured from the last run of any trigger, or from when the scheduler first ran.
  double since = ctx.catalog->lastRunCreatedAt().value_or(0);
  if (since == 0) since = std::stod(ctx.catalog->meta("created_at").value_or(std::to_string(ctx.now)));
  const double elapsed = ctx.now - since;
  d.values["seconds_since_last_run"] = elapsed;
  d.thresholds["interval_s"] = interval_;
  d.fire = elapsed >= interval_;
  d.reason = d.fire ? "interval of " + std::to_string(static_cast<int64_t>(interval_)) + " s elapsed"
                    : "next in " + std::to_string(static_cast<int64_t>(std::ceil(interval_ - elapsed))) + " s";
  return d;
}

TriggerDecision NewDataTrigger::evaluate(TriggerContext& ctx) {
  TriggerDecision d;
  d.values["new_rows"] = ctx.newData.rows;
  d.values["new_shards"] = ctx.newData.shards;
  d.thresholds["new_data_rows"] = minRows_;
  d.fire = ctx.newData.rows >= minRows_;
  d.reason = std::to_string(ctx.newData.rows) + " new rows" + (d.fire ? " >= " : " < ") + std::to_string(minRows_);
  return d;
}

TriggerDecision DriftTrigger::evaluate(TriggerContext& ctx) {
  TriggerDecision d;
  d.thresholds["psi"] = threshold_;
  d.thresholds["min_rows"] = minRows_;
  d.values["new_rows"] = ctx.newData.rows;
  if (!ctx.champion || !ctx.championSnapshot) {
    d.reason = "no champion to compare with";
    return d;
  }
  if (ctx.newData.rows < minRows_) {
    d.reason = "too few new rows to measure (" + std::to_string(ctx.newData.rows) + ")";
    return d;
  }
  const std::string key = dataKey(ctx);
  if (cacheKey_.empty()) {  // first evaluation in this process: reuse a stored measurement
    if (auto v = storedValues(*ctx.catalog, name()); v && v->value("key", "") == key && v->contains("psi")) {
      cacheKey_ = key;
      cached_ = v->at("psi");
    }
  }
  if (cacheKey_ != key) {
    Profile base = Profile::fromJson(ctx.championSnapshot->profile, "snapshot " + ctx.championSnapshot->id);
    Profile now;
    for (const auto& s : ctx.catalog->shards(ctx.coveredSeq, ctx.newData.maxSeq, true)) {
      now.merge(Profile::fromJson(s.profile, "shard " + s.hash));
    }
    cached_ = driftScores(base, now);
    cacheKey_ = key;
  }
  d.values["key"] = key;
  d.values["psi"] = cached_;
  const double score = cached_.at("max").get<double>();
  d.fire = score >= threshold_;
  char buf[96];
  std::snprintf(buf, sizeof buf, "PSI %.3f %s %.3f", score, d.fire ? ">=" : "<", threshold_);
  d.reason = buf;
  return d;
}

TriggerDecision DecayTrigger::evaluate(TriggerContext& ctx) {
  TriggerDecision d;
  d.thresholds["margin"] = margin_;
  d.thresholds["min_rows"] = minRows_;
  d.values["new_rows"] = ctx.newData.rows;
  if (!ctx.champion) {
    d.reason = "no champion to measure";
    return d;
  }
  if (!ctx.champion->result || ctx.champion->result->test.regression) {
    d.reason = "the champion has no recorded validation accuracy";
    return d;
  }
  const double validation = ctx.champion->result->test.accuracy;
  d.values["validation_accuracy"] = validation;
  if (ctx.newData.rows < minRows_) {
    d.reason = "too few new rows to measure (" + std::to_string(ctx.newData.rows) + ")";
    return d;
  }
  if (!ctx.evaluator) {
    d.reason = "no evaluator";
    return d;
  }
  const std::string key = dataKey(ctx);
  if (cacheKey_.empty()) {
    if (auto v = storedValues(*ctx.catalog, name()); v && v->value("key", "") == key && v->contains("accuracy_on_new")) {
      cacheKey_ = key;
      cachedAccuracy_ = v->at("accuracy_on_new").get<double>();
    }
  }
  if (cacheKey_ != key) {
    std::vector<std::string> files;
    for (const auto& s : ctx.catalog->shards(ctx.coveredSeq, ctx.newData.maxSeq, false)) {
      files.push_back(ctx.root + "/" + s.file);
    }
    const std::string model = RunPaths::of(ctx.root, ctx.champion->id).model();
    cachedAccuracy_ = ctx.evaluator->accuracy(model, files);
    cacheKey_ = key;
  }
  d.values["key"] = key;
  d.values["accuracy_on_new"] = cachedAccuracy_;
  const double drop = validation - cachedAccuracy_;
  d.values["drop"] = drop;
  d.fire = drop >= margin_;
  char buf[128];
  std::snprintf(buf, sizeof buf, "accuracy on new data %.4f vs validation %.4f: drop %.4f %s %.4f", cachedAccuracy_,
                validation, drop, d.fire ? ">=" : "<", margin_);
  d.reason = buf;
  return d;
}

std::vector<std::unique_ptr<Trigger>> makeTriggers(const SchedConfig& c) {
  std::vector<std::unique_ptr<Trigger>> out;
  if (c.onDemand) out.push_back(std::make_unique<OnDemandTrigger>());
  if (c.intervalS > 0) out.push_back(std::make_unique<ScheduleTrigger>(c.intervalS));
  if (c.newDataRows > 0) out.push_back(std::make_unique<NewDataTrigger>(c.newDataRows));
  if (c.driftPsi > 0) out.push_back(std::make_unique<DriftTrigger>(c.driftPsi, c.driftMinRows));
  if (c.decayMargin > 0) out.push_back(std::make_unique<DecayTrigger>(c.decayMargin, c.decayMinRows));
  return out;
}

}  // namespace perennial::sched
