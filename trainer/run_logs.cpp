#include "trainer/run_logs.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/read_file.h"
#include "common/text.h"

namespace perennial {
namespace {

using json = nlohmann::json;

void openForAppend(std::ofstream& out, const std::string& path, bool append) {
  out.open(path, append ? std::ios::app : std::ios::trunc);
  if (!out) throw IoError(path + ": cannot open for writing: " + std::strerror(errno));
}

void writeLine(std::ofstream& out, const std::string& path, const json& j) {
  if (!out.is_open()) return;
  errno = 0;
  out << dumpJson(j) << '\n';
  out.flush();
  if (!out) throw IoError(path + ": cannot append a record" + (errno ? std::string(": ") + std::strerror(errno) : ""));
}

}  // namespace

size_t dropRecordsAfter(const std::string& path, int64_t step, const std::function<void(const json&)>& kept) {
  const std::string text = fs::readFileIfPresent(path);
  std::string out;
  size_t dropped = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    const bool whole = end != std::string::npos;
    if (!whole) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    const bool hasStep = j.is_object() && j.contains("step") && j["step"].is_number_integer();
    bool keep;
    if (hasStep) {
      keep = j["step"].get<int64_t>() <= step;
    } else {  // a last line without its newline was cut short by a kill unless it is a whole record
      keep = !line.empty() && (whole || !j.is_discarded());
    }
    if (keep) {
      out += line + '\n';
      if (kept && !j.is_discarded()) kept(j);
    } else {
      ++dropped;
    }
  }
  if (dropped == 0 && (text.empty() || text.back() == '\n')) return 0;
  fs::writeFileAtomic(path, out);
  return dropped;
}

MetricsLog::MetricsLog(const std::string& path, bool active, bool append, int64_t resumeStep)
    : path_(path), resumeStep_(append ? resumeStep : -1) {
  if (!active) return;
  if (append) {
    const size_t dropped = dropRecordsAfter(path, resumeStep, [&](const json& j) {
      if (j.is_object() && j.value("kind", "") == "eval" && j.contains("step") && j["step"] == resumeStep) {
        evalAtResume_ = true;
      }
    });
    if (dropped > 0) {
      log::get("train")->info("{}: dropped {} record(s) after step {}, which this run trains again", path, dropped,
                              resumeStep);
    }
  }
  openForAppend(out_, path, append);
}

void MetricsLog::write(const json& j) { writeLine(out_, path_, j); }

SampleLog::SampleLog(bool active, const std::string& dir, Communicator& comm, int64_t resumeStep)
    : rank_(comm.rank()), world_(comm.size()) {
  if (!active) return;
  if (rank_ == 0) {
    std::filesystem::create_directories(dir);
    for (const auto& file : fs::listFiles(dir, ".jsonl")) {
      if (resumeStep < 0) {
        std::filesystem::remove(file);
      } else {
        dropRecordsAfter(file, resumeStep);
      }
    }
  }
  comm.barrier();  // no rank appends before rank 0 has cut the files
  char name[32];
  std::snprintf(name, sizeof name, "/rank-%05d.jsonl", rank_);
  path_ = dir + name;
  openForAppend(out_, path_, /*append=*/true);
}

void SampleLog::write(int64_t epoch, int64_t step, const std::vector<std::vector<int64_t>>& microBatches) {
  if (!out_.is_open()) return;
  std::vector<int64_t> rows;
  for (const auto& b : microBatches) rows.insert(rows.end(), b.begin(), b.end());
  writeLine(out_, path_,
            {{"epoch", epoch}, {"step", step}, {"rank", rank_}, {"world_size", world_}, {"indices", rows}});
}

}  // namespace perennial
