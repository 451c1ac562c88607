#include "scheduler/slurm_executor.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/exit_codes.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/sha256.h"
#include "scheduler/process.h"
#include "scheduler/run_paths.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

std::string attemptDir(const AttemptSpec& spec) { return RunPaths(spec.runDir).attempt(spec.attempt); }

// KEY=value from `scontrol show job -o` output.
std::string field(const std::string& line, const std::string& key) {
  const std::string k = " " + key + "=";
  auto pos = (" " + line).find(k);
  if (pos == std::string::npos) return "";
  pos += k.size() - 1;
  const auto end = line.find(' ', pos);
  return line.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

std::string readWord(const std::string& path) {
  std::ifstream in(path);
  std::string w;
  in >> w;
  return w;
}

bool isJobId(const std::string& id) {
  return !id.empty() && id.find_first_not_of("0123456789_") == std::string::npos;
}

// The job id that a record of train.sbatch (started.json, exit.json) gives for TOKEN, or "".
std::string jobIdFromRecord(const std::string& path, const std::string& token) {
  std::ifstream in(path);
  if (!in) return "";
  const json j = json::parse(in, nullptr, false);
  if (!j.is_object() || !j.contains("token") || !j["token"].is_string() || j["token"].get<std::string>() != token ||
      !j.contains("job_id") || !j["job_id"].is_string()) {
    return "";
  }
  const std::string id = j["job_id"].get<std::string>();
  return isJobId(id) ? id : "";
}

bool isLiveState(const std::string& s) {
  for (const char* live : {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                           "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT"}) {
    if (s == live) return true;
  }
  return false;
}

}  // namespace

AttemptStatus attemptStatusFromSlurm(const std::string& state, const std::string& exitCode, const std::string& jobId) {
  AttemptStatus s;
  s.execId = jobId;
  // "CANCELLED by 0" -> "CANCELLED"
  const std::string st = state.substr(0, state.find(' '));
  if (isLiveState(st)) {
    s.state = AttemptState::kRunning;
    s.detail = st;
    return s;
  }
  int code = 0, sig = 0;
  std::sscanf(exitCode.c_str(), "%d:%d", &code, &sig);
  s.state = AttemptState::kExited;
  s.detail = "Slurm job " + jobId + " " + st + (exitCode.empty() ? "" : " (ExitCode " + exitCode + ")");
  if (st == "COMPLETED" || st == "FAILED") {
    s.exitCode = sig ? 128 + sig : code;
  } else if (st == "TIMEOUT" || st == "PREEMPTED") {
    s.exitCode = exit_code::kRequeue;  // the pre-timeout signal or preemption: resume from the checkpoint
  } else if (st == "OUT_OF_MEMORY") {
    s.exitCode = 137;
  } else if (st == "CANCELLED") {
    s.exitCode = 143;
  } else {  // NODE_FAIL, BOOT_FAIL, DEADLINE, unknown
    s.exitCode = 1;
  }
  return s;
}

std::string slurmFilenamePattern(const std::string& path) {
  if (path.find('\\') != std::string::npos) {
    throw IoError("Slurm cannot write a job's output to " + path +
                  ": sbatch removes every backslash from a file name pattern; use a root without one");
  }
  std::string out;
  for (const char ch : path) {
    out += ch;
    if (ch == '%') out += '%';
  }
  return out;
}

SlurmExecutor::SlurmExecutor(SlurmExecutorOptions options) : o_(std::move(options)) {
  if (o_.perennial.empty()) o_.perennial = selfExecutable();
  if (o_.script.empty() || !fs::isFile(o_.script)) {
    throw ConfigError("slurm.script: " + (o_.script.empty() ? std::string("required") : o_.script + ": no such file") +
                      " (slurm/train.sbatch of the Perennial sources)");
  }
}

std::string SlurmExecutor::jobName(const AttemptSpec& spec) {
  const std::string tag = toHex(sha256(spec.runDir.data(), spec.runDir.size())).substr(0, 8);
  return "perennial-" + spec.runId + "-a" + std::to_string(spec.attempt) + "-" + tag;
}

std::string SlurmExecutor::submit(const AttemptSpec& spec) {
  const std::string dir = attemptDir(spec);
  stdfs::create_directories(dir);
  // Never twice (NOTE [Slurm attempt identity]): a job of this attempt, recorded, in the queue or
  // having left its records, is this attempt's handle, whatever state it is in.
  if (std::string existing = findJob(spec, ""); !existing.empty()) return existing;
  const std::string logPattern = slurmFilenamePattern(dir + "/log");
  // The token is on disk before sbatch runs, so a restarted scheduler knows to look for the job.
  std::string token = readWord(dir + "/token");
  if (token.empty()) {
    token = fs::randomHex();
    fs::writeFileAtomic(dir + "/token", token + "\n");
  }
  std::error_code ec;
  stdfs::remove(dir + "/exit.json", ec);
  stdfs::remove(dir + "/started.json", ec);
  std::vector<std::string> env{"PERENNIAL=" + o_.perennial, "PERENNIAL_EXIT_FILE=" + dir + "/exit.json",
                               "PERENNIAL_START_FILE=" + dir + "/started.json", "PERENNIAL_JOB_TOKEN=" + token};
  // With train.nodes: one task per node, holding the CPUs of its ranks, and train.sbatch starts
  // ranksPerNode ranks on each node (PERENNIAL_RANKS_PER_NODE). Not --ntasks-per-node: with it
  // Slurm would allocate the smallest node count of a range (slurm/README.md, Several nodes).
  const bool byNode = !spec.nodes.empty();
  int64_t cpusPerTask = o_.cpusPerTask;
  if (byNode) cpusPerTask = spec.ranksPerNode * std::max<int64_t>(1, o_.cpusPerTask);
  // Set either way: a value in the scheduler's own environment must not reach a run without nodes.
  env.push_back("PERENNIAL_RANKS_PER_NODE=" + (byNode ? std::to_string(spec.ranksPerNode) : std::string()));
  std::vector<std::string> argv{o_.sbatch,
                                "--parsable",
                                "--job-name=" + jobName(spec),
                                byNode ? "--nodes=" + spec.nodes : "--ntasks=" + std::to_string(spec.ranks),
                                "--output=" + logPattern,
                                "--open-mode=append",
                                "--chdir=" + spec.runDir,
                                "--comment=" + token};
  if (!o_.partition.empty()) argv.push_back("--partition=" + o_.partition);
  if (!o_.account.empty()) argv.push_back("--account=" + o_.account);
  if (!o_.time.empty()) argv.push_back("--time=" + o_.time);
  if (cpusPerTask > 0) argv.push_back("--cpus-per-task=" + std::to_string(cpusPerTask));
  if (!o_.gpusPerNode.empty()) argv.push_back("--gpus-per-node=" + o_.gpusPerNode);
  argv.insert(argv.end(), o_.sbatchArgs.begin(), o_.sbatchArgs.end());
  argv.push_back(o_.script);
  // The script adds `train` and `--resume auto` itself.
  for (size_t i = 0; i < spec.trainArgs.size(); ++i) {
    if (i == 0 && spec.trainArgs[i] == "train") continue;
    if (spec.trainArgs[i] == "--resume" && i + 1 < spec.trainArgs.size()) {
      ++i;
      continue;
    }
    argv.push_back(spec.trainArgs[i]);
  }
  ProcessOutput out = captureProcess(argv, o_.commandTimeoutS, env);
  const std::string id = trim(out.out).substr(0, trim(out.out).find(';'));
  if (out.status != 0 || !isJobId(id)) {
    throw IoError("sbatch failed (exit " + std::to_string(out.status) + "): " + trim(out.err) + trim(out.out));
  }
  fs::writeFileAtomic(dir + "/job", id + "\n");
  return id;
}

std::string SlurmExecutor::findJob(const AttemptSpec& spec, const std::string& execId) {
  if (!execId.empty()) return execId;
  const std::string dir = attemptDir(spec);
  if (std::string id = readWord(dir + "/job"); !id.empty()) return id;
  // No token: this attempt never reached sbatch.
  const std::string token = readWord(dir + "/token");
  if (token.empty()) return "";
  // Submitted, perhaps, but the scheduler died before recording the id.
  std::string id = lookupJob(spec, token);
  if (!id.empty()) {
    log::get("sched")->warn("run {} attempt {}: adopting Slurm job {}, submitted before a restart (its token matches)",
                            spec.runId, spec.attempt, id);
    fs::writeFileAtomic(dir + "/job", id + "\n");
  }
  return id;
}

std::string SlurmExecutor::lookupJob(const AttemptSpec& spec, const std::string& token) {
  // Our own jobs of this name in every state Slurm still remembers (the default lists only
  // pending, running and completing ones), with their owner and comment.
  ProcessOutput out = captureProcess(
      {o_.squeue, "--me", "-h", "--states=all", "--name=" + jobName(spec), "-o", "%i|%U|%k"}, o_.commandTimeoutS);
  if (out.status != 0) {
    throw IoError("squeue failed (exit " + std::to_string(out.status) + "): " + trim(out.err) +
                  "; cannot tell whether run " + spec.runId + " attempt " + std::to_string(spec.attempt) +
                  " was submitted before a restart, so it is neither adopted nor submitted now");
  }
  const std::string uid = std::to_string(::getuid());
  std::istringstream lines(out.out);
  for (std::string line; std::getline(lines, line);) {
    line = trim(line);
    const size_t a = line.find('|');
    const size_t b = a == std::string::npos ? a : line.find('|', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), owner = line.substr(a + 1, b - a - 1), comment = line.substr(b + 1);
    if (isJobId(id) && owner == uid && comment == token) return id;
  }
  // Gone from Slurm's memory: the records the job itself wrote into the attempt directory.
  const std::string dir = attemptDir(spec);
  for (const char* record : {"/started.json", "/exit.json"}) {
    if (std::string id = jobIdFromRecord(dir + record, token); !id.empty()) return id;
  }
  return "";
}

AttemptStatus SlurmExecutor::poll(const AttemptSpec& spec, const std::string& execId) {
  const std::string id = findJob(spec, execId);
  AttemptStatus s;
  if (id.empty()) return s;  // not started
  s.execId = id;
  ProcessOutput q = captureProcess({o_.squeue, "-h", "-j", id, "-o", "%T"}, o_.commandTimeoutS);
  const std::string qs = trim(q.out);
  if (q.status == 0 && !qs.empty() && isLiveState(qs)) return attemptStatusFromSlurm(qs, "", id);
  ProcessOutput c = captureProcess({o_.scontrol, "show", "job", id, "-o"}, o_.commandTimeoutS);
  if (c.status == 0 && !field(c.out, "JobState").empty()) {
    AttemptStatus st = attemptStatusFromSlurm(field(c.out, "JobState"), field(c.out, "ExitCode"), id);
    if (st.state == AttemptState::kRunning) return st;
    // The batch script records the trainer's own status; prefer it for a job that ran to its end.
    std::ifstream in(attemptDir(spec) + "/exit.json");
    json j = json::parse(in, nullptr, false);
    if ((field(c.out, "JobState") == "COMPLETED" || field(c.out, "JobState") == "FAILED") && j.is_object() &&
        j.contains("exit_code")) {
      st.exitCode = j["exit_code"].get<int>();
    }
    return st;
  }
  // Slurm forgot the job (past MinJobAge): the batch script's record is all there is.
  std::ifstream in(attemptDir(spec) + "/exit.json");
  json j = json::parse(in, nullptr, false);
  if (j.is_object() && j.contains("exit_code")) {
    s.state = AttemptState::kExited;
    s.exitCode = j["exit_code"].get<int>();
    s.detail = "Slurm job " + id + " (from its exit record)";
    return s;
  }
  s.state = AttemptState::kLost;
  s.detail = "Slurm no longer knows job " + id + " and it left no exit record";
  return s;
}

void SlurmExecutor::cancel(const AttemptSpec& spec, const std::string& execId) {
  const std::string id = findJob(spec, execId);
  if (id.empty()) return;
  ProcessOutput out = captureProcess({o_.scancel, id}, o_.commandTimeoutS);
  if (out.status != 0) throw IoError("scancel " + id + " failed: " + trim(out.err));
}

}  // namespace perennial::sched
