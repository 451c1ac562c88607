#pragma once
// A run's metrics.jsonl (run_dir::kMetrics, written by `perennial train`: trainer.h) read back as
// curves, for readers that draw or compare them (the scheduler's report). Torch-free
// (perennial::trainer_api).
#include <string>
#include <vector>

namespace perennial {

struct CurvePoint {
  double step = 0;
  double value = 0;
};

struct MetricsCurves {
  std::vector<CurvePoint> trainLoss;     // "train" records' loss, every train.log_every steps
  std::vector<CurvePoint> testAccuracy;  // "eval" records' test_accuracy, after each epoch
};

// The curves of metrics.jsonl at PATH, each in step order with one point per step: where a step
// was logged more than once (a resumed run appends), the last record wins. Lines that are not
// JSON objects, and records without a finite number for "step" or the value, are skipped; a
// missing or unreadable file gives empty curves.
MetricsCurves readMetricsCurves(const std::string& path);

}  // namespace perennial
