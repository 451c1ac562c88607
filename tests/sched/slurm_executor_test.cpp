// The Slurm executor against stand-in sbatch/squeue/scontrol/scancel programs that record their
// arguments (tests/slurm/ runs it against a real cluster).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "scheduler/slurm_executor.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;

std::string readText(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class SlurmExecutorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = stdfs::temp_directory_path() / ("perennial-slurm-" + std::to_string(::getpid()) + "-" +
                                          ::testing::UnitTest::GetInstance()->current_test_info()->name());
    stdfs::remove_all(dir);
    stdfs::create_directories(dir + "/bin");
    // Each stand-in appends its arguments, one per line, then a separator, to calls.txt.
    auto tool = [&](const std::string& name, const std::string& body) {
      const std::string p = dir + "/bin/" + name;
      std::ofstream(p) << "#!/bin/bash\n{ echo \"== " << name << "\"; printf '%s\\n' \"$@\"; } >>\"" << dir
                       << "/calls.txt\"\n" << body << "\n";
      ::chmod(p.c_str(), 0755);
    };
    tool("sbatch", "echo \"PERENNIAL_EXIT_FILE=$PERENNIAL_EXIT_FILE\" >>\"" + dir + "/calls.txt\"\necho '4242;cluster'");
    // squeue --name=... (finding a job by name) prints by-name.out; squeue -j prints squeue.out.
    tool("squeue", "case \"$*\" in *--name=*) cat \"" + dir + "/by-name.out\" 2>/dev/null;; *) cat \"" + dir +
                       "/squeue.out\" 2>/dev/null;; esac; exit 0");
    tool("scontrol", "cat \"" + dir + "/scontrol.out\" 2>/dev/null || exit 1");
    tool("scancel", "exit 0");
    std::ofstream(dir + "/train.sbatch") << "#!/bin/bash\n";
    o.script = dir + "/train.sbatch";
    o.perennial = "/opt/perennial/bin/perennial";
    o.sbatch = dir + "/bin/sbatch";
    o.squeue = dir + "/bin/squeue";
    o.scontrol = dir + "/bin/scontrol";
    o.scancel = dir + "/bin/scancel";
    o.partition = "debug";
    o.time = "01:00:00";
    // A run directory no shell could take literally.
    spec.runId = "r000007";
    spec.attempt = 2;
    spec.runDir = dir + "/runs/odd name $(touch " + dir + "/pwned) `id`;x";
    spec.ranks = 2;
    spec.trainArgs = {"train", "--config", spec.runDir + "/config.cfg", "--run-dir", spec.runDir + "/train", "--resume", "auto"};
  }
  void TearDown() override { stdfs::remove_all(dir); }

  std::string dir;
  SlurmExecutorOptions o;
  AttemptSpec spec;
};

TEST_F(SlurmExecutorTest, SubmitPassesEveryValueAsItsOwnArgument) {
  SlurmExecutor ex(o);
  EXPECT_EQ(ex.submit(spec), "4242");
  const std::string attempt = spec.runDir + "/attempt-2";
  EXPECT_EQ(readText(attempt + "/job"), "4242\n");
  std::string calls = readText(dir + "/calls.txt");
  calls = calls.substr(calls.find("== sbatch"));  // after looking for a job of this attempt by name
  const std::string want = "== sbatch\n--parsable\n--job-name=" + SlurmExecutor::jobName(spec) + "\n--ntasks=2\n--output=" +
                           attempt + "/log\n--open-mode=append\n--chdir=" + spec.runDir +
                           "\n--partition=debug\n--time=01:00:00\n" + o.script + "\n--config\n" + spec.runDir +
                           "/config.cfg\n--run-dir\n" + spec.runDir + "/train\nPERENNIAL_EXIT_FILE=" + attempt +
                           "/exit.json\n";
  EXPECT_EQ(calls, want);
  EXPECT_FALSE(stdfs::exists(dir + "/pwned")) << "a value was interpreted by a shell";
  EXPECT_EQ(SlurmExecutor::jobName(spec).rfind("perennial-r000007-a2-", 0), 0u);
}

TEST_F(SlurmExecutorTest, PollFollowsTheJobThroughSlurmsStates) {
  SlurmExecutor ex(o);
  EXPECT_EQ(ex.poll(spec, "").state, AttemptState::kNotStarted);
  ex.submit(spec);
  std::ofstream(dir + "/squeue.out") << "PENDING\n";
  EXPECT_EQ(ex.poll(spec, "4242").state, AttemptState::kRunning);
  std::ofstream(dir + "/squeue.out") << "REQUEUED\n";
  EXPECT_EQ(ex.poll(spec, "4242").state, AttemptState::kRunning);
  stdfs::remove(dir + "/squeue.out");
  std::ofstream(dir + "/scontrol.out") << "JobId=4242 JobName=x JobState=COMPLETED Reason=None ExitCode=0:0 RunTime=00:01:00\n";
  AttemptStatus s = ex.poll(spec, "4242");
  EXPECT_EQ(s.state, AttemptState::kExited);
  EXPECT_EQ(s.exitCode, 0);
  // The batch script's record of the trainer's status wins for a job that ran to its end.
  std::ofstream(spec.runDir + "/attempt-2/exit.json") << "{\"exit_code\": 2}\n";
  std::ofstream(dir + "/scontrol.out") << "JobId=4242 JobState=FAILED ExitCode=2:0\n";
  EXPECT_EQ(ex.poll(spec, "4242").exitCode, 2);
  // Slurm forgot the job: the record alone.
  stdfs::remove(dir + "/scontrol.out");
  s = ex.poll(spec, "4242");
  EXPECT_EQ(s.state, AttemptState::kExited);
  EXPECT_EQ(s.exitCode, 2);
  stdfs::remove(spec.runDir + "/attempt-2/exit.json");
  EXPECT_EQ(ex.poll(spec, "4242").state, AttemptState::kLost);
}

TEST_F(SlurmExecutorTest, AJobSubmittedBeforeACrashIsFoundByName) {
  SlurmExecutor ex(o);
  // The id was never recorded, but Slurm knows a job of this attempt's name.
  std::ofstream(dir + "/by-name.out") << "777\n";
  std::ofstream(dir + "/squeue.out") << "RUNNING\n";
  EXPECT_EQ(ex.submit(spec), "777") << "an attempt Slurm still runs is not submitted again";
  EXPECT_EQ(readText(dir + "/calls.txt").find("== sbatch"), std::string::npos);
}

TEST_F(SlurmExecutorTest, SlurmStatesMapToExitStatuses) {
  EXPECT_EQ(attemptStatusFromSlurm("RUNNING", "", "1").state, AttemptState::kRunning);
  EXPECT_EQ(attemptStatusFromSlurm("COMPLETING", "", "1").state, AttemptState::kRunning);
  EXPECT_EQ(attemptStatusFromSlurm("COMPLETED", "0:0", "1").exitCode, 0);
  EXPECT_EQ(attemptStatusFromSlurm("FAILED", "75:0", "1").exitCode, 75);
  EXPECT_EQ(attemptStatusFromSlurm("FAILED", "0:9", "1").exitCode, 137);
  EXPECT_EQ(attemptStatusFromSlurm("TIMEOUT", "0:15", "1").exitCode, 75);
  EXPECT_EQ(attemptStatusFromSlurm("PREEMPTED", "0:15", "1").exitCode, 75);
  EXPECT_EQ(attemptStatusFromSlurm("OUT_OF_MEMORY", "0:125", "1").exitCode, 137);
  AttemptStatus c = attemptStatusFromSlurm("CANCELLED by 0", "0:15", "1");
  EXPECT_EQ(c.exitCode, 143);
  EXPECT_NE(c.detail.find("CANCELLED"), std::string::npos);
  AttemptStatus n = attemptStatusFromSlurm("NODE_FAIL", "0:0", "9");
  EXPECT_EQ(n.state, AttemptState::kExited);
  EXPECT_EQ(n.exitCode, 1);
  EXPECT_NE(n.detail.find("NODE_FAIL"), std::string::npos);
}

TEST_F(SlurmExecutorTest, CancelUsesScancel) {
  SlurmExecutor ex(o);
  ex.submit(spec);
  ex.cancel(spec, "4242");
  EXPECT_NE(readText(dir + "/calls.txt").find("== scancel\n4242\n"), std::string::npos);
}

TEST_F(SlurmExecutorTest, AMissingScriptIsAConfigurationError) {
  o.script = dir + "/nope.sbatch";
  EXPECT_THROW(SlurmExecutor{o}, ConfigError);
}

}  // namespace
}  // namespace perennial::sched
