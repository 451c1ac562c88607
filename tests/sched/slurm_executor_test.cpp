// The Slurm executor against stand-in sbatch/squeue/scontrol/scancel programs that record their
// arguments (tests/slurm/ runs it against a real cluster).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

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
    // The stand-in sbatch also records its environment and the attempt's token file as it was
    // when sbatch ran (token-at-sbatch.txt).
    tool("sbatch", "printf '%s\\n' \"PERENNIAL_EXIT_FILE=$PERENNIAL_EXIT_FILE\" \"PERENNIAL_START_FILE=$PERENNIAL_START_FILE\" "
                   "\"PERENNIAL_JOB_TOKEN=$PERENNIAL_JOB_TOKEN\" \"PERENNIAL_RANKS_PER_NODE=${PERENNIAL_RANKS_PER_NODE-unset}\" >>\"" + dir + "/calls.txt\"\n"
                   "cat \"${PERENNIAL_EXIT_FILE%/exit.json}/token\" >\"" + dir + "/token-at-sbatch.txt\" 2>/dev/null\n"
                   "echo '4242;cluster'");
    // squeue --name=... (finding a job by name) prints by-name.out ("id|uid|comment" lines, every
    // line whatever the filter: the executor must check them itself), or fails when
    // squeue-fails exists; squeue -j prints squeue.out.
    tool("squeue", "case \"$*\" in *--name=*) [ -e \"" + dir + "/squeue-fails\" ] && { echo 'squeue: error: down' >&2; exit 1; }; cat \"" +
                       dir + "/by-name.out\" 2>/dev/null;; *) cat \"" + dir + "/squeue.out\" 2>/dev/null;; esac; exit 0");
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

  std::string attempt() const { return spec.runDir + "/attempt-" + std::to_string(spec.attempt); }
  // The state a crash between sbatch and recording the job id leaves: a token, no job file.
  std::string crashedAfterSbatch(const std::string& token = "0123456789abcdef0123456789abcdef") {
    stdfs::create_directories(attempt());
    std::ofstream(attempt() + "/token") << token << "\n";
    return token;
  }
  int sbatchCalls() const {
    const std::string calls = readText(dir + "/calls.txt");
    int n = 0;
    for (size_t at = calls.find("== sbatch\n"); at != std::string::npos; at = calls.find("== sbatch\n", at + 1)) ++n;
    return n;
  }

  std::string dir;
  SlurmExecutorOptions o;
  AttemptSpec spec;
};

TEST_F(SlurmExecutorTest, SubmitPassesEveryValueAsItsOwnArgument) {
  SlurmExecutor ex(o);
  EXPECT_EQ(ex.submit(spec), "4242");
  const std::string attempt = spec.runDir + "/attempt-2";
  EXPECT_EQ(readText(attempt + "/job"), "4242\n");
  // A fresh attempt asks Slurm nothing before submitting: sbatch is the first call.
  const std::string calls = readText(dir + "/calls.txt");
  const std::string token = readText(attempt + "/token");
  ASSERT_EQ(token.size(), 33u) << "128 random bits in hex and a newline: " << token;
  EXPECT_EQ(readText(dir + "/token-at-sbatch.txt"), token) << "the token is on disk before sbatch runs";
  const std::string want = "== sbatch\n--parsable\n--job-name=" + SlurmExecutor::jobName(spec) + "\n--ntasks=2\n--output=" +
                           attempt + "/log\n--open-mode=append\n--chdir=" + spec.runDir + "\n--comment=" +
                           token.substr(0, 32) + "\n--partition=debug\n--time=01:00:00\n" + o.script + "\n--config\n" +
                           spec.runDir + "/config.cfg\n--run-dir\n" + spec.runDir + "/train\nPERENNIAL_EXIT_FILE=" + attempt +
                           "/exit.json\nPERENNIAL_START_FILE=" + attempt + "/started.json\nPERENNIAL_JOB_TOKEN=" +
                           token.substr(0, 32) + "\nPERENNIAL_RANKS_PER_NODE=\n";
  EXPECT_EQ(calls, want);
  EXPECT_EQ(SlurmExecutor::jobName(spec).rfind("perennial-r000007-a2-", 0), 0u);
  // Another attempt, another token.
  spec.attempt = 3;
  ex.submit(spec);
  EXPECT_NE(readText(spec.runDir + "/attempt-3/token"), token);
  EXPECT_FALSE(stdfs::exists(dir + "/pwned")) << "a value was interpreted by a shell";
}

TEST_F(SlurmExecutorTest, NodesAskForOneTaskPerNodeWithTheCpusOfItsRanks) {
  // train.nodes = 1-2, train.ranks_per_node = 2, slurm.cpus_per_task = 3: no --ntasks (nor
  // --ntasks-per-node, with which Slurm allocates the smallest count of a range); each node's
  // task holds 2 x 3 CPUs and train.sbatch starts 2 ranks on each node.
  spec.nodes = "1-2";
  spec.ranksPerNode = 2;
  spec.ranks = 4;
  o.cpusPerTask = 3;
  SlurmExecutor ex(o);
  EXPECT_EQ(ex.submit(spec), "4242");
  const std::string calls = readText(dir + "/calls.txt");
  EXPECT_NE(calls.find("\n--nodes=1-2\n"), std::string::npos) << calls;
  EXPECT_NE(calls.find("\n--cpus-per-task=6\n"), std::string::npos) << calls;
  EXPECT_NE(calls.find("\nPERENNIAL_RANKS_PER_NODE=2\n"), std::string::npos) << calls;
  EXPECT_EQ(calls.find("--ntasks"), std::string::npos) << calls;
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

TEST_F(SlurmExecutorTest, AJobSubmittedBeforeACrashIsFoundByItsOwnerAndToken) {
  SlurmExecutor ex(o);
  const std::string token = crashedAfterSbatch();
  const std::string me = std::to_string(::getuid()), other = std::to_string(::getuid() + 1000);
  // The id was never recorded. Slurm knows jobs of this attempt's name: another user's carrying
  // our token (comments are public), one of ours with another token (an earlier root at this
  // path), and ours.
  std::ofstream(dir + "/by-name.out") << "775|" << other << "|" << token << "\n776|" << me << "|ffff\n777|" << me << "|"
                                      << token << "\n";
  std::ofstream(dir + "/squeue.out") << "RUNNING\n";
  AttemptStatus st = ex.poll(spec, "");
  EXPECT_EQ(st.state, AttemptState::kRunning);
  EXPECT_EQ(st.execId, "777");
  EXPECT_EQ(readText(attempt() + "/job"), "777\n") << "the adopted id is recorded";
  EXPECT_EQ(ex.submit(spec), "777") << "an attempt Slurm knows is not submitted again";
  EXPECT_EQ(sbatchCalls(), 0);
  const std::string calls = readText(dir + "/calls.txt");
  EXPECT_NE(calls.find("== squeue\n--me\n-h\n--states=all\n--name=" + SlurmExecutor::jobName(spec) + "\n-o\n%i|%U|%k\n"),
            std::string::npos)
      << calls;
}

TEST_F(SlurmExecutorTest, AnotherUsersJobOrAnotherTokenIsNeverAdopted) {
  SlurmExecutor ex(o);
  const std::string token = crashedAfterSbatch();
  std::ofstream(dir + "/by-name.out") << "775|" << ::getuid() + 1000 << "|" << token << "\n776|" << ::getuid()
                                      << "|ffff\n776|" << ::getuid() << "|" << token << "x\n";
  EXPECT_EQ(ex.poll(spec, "").state, AttemptState::kNotStarted);
  EXPECT_EQ(ex.submit(spec), "4242") << "the attempt is submitted: none of those jobs is its own";
  EXPECT_EQ(sbatchCalls(), 1);
  EXPECT_EQ(readText(attempt() + "/token"), token + "\n") << "the token of the first try is kept";
  EXPECT_NE(readText(dir + "/calls.txt").find("--comment=" + token + "\n"), std::string::npos);
}

TEST_F(SlurmExecutorTest, AJobThatLeftTheQueueIsFoundByTheRecordsItWrote) {
  SlurmExecutor ex(o);
  const std::string token = crashedAfterSbatch();
  // Slurm forgot the job; train.sbatch wrote its start record, then its exit record.
  std::ofstream(attempt() + "/started.json") << "{\"job_id\": \"779\", \"token\": \"" << token << "\", \"restarts\": 0}\n";
  EXPECT_EQ(ex.submit(spec), "779");
  EXPECT_EQ(sbatchCalls(), 0) << "a job that ran is not submitted again";
  EXPECT_EQ(ex.poll(spec, "").state, AttemptState::kLost) << "it started and left no exit record";
  std::ofstream(attempt() + "/exit.json") << "{\"job_id\": \"779\", \"token\": \"" << token
                                          << "\", \"restarts\": 0, \"exit_code\": 0}\n";
  AttemptStatus st = ex.poll(spec, "");
  EXPECT_EQ(st.state, AttemptState::kExited);
  EXPECT_EQ(st.exitCode, 0);
  EXPECT_EQ(st.execId, "779");

  // An exit record alone (the start record was lost) is evidence too; one with another token is not.
  spec.attempt = 4;
  crashedAfterSbatch(token);
  std::ofstream(attempt() + "/started.json") << "{\"job_id\": \"780\", \"token\": \"beef\"}\n";
  std::ofstream(attempt() + "/exit.json") << "{\"job_id\": \"781\", \"token\": \"" << token << "\", \"exit_code\": 1}\n";
  EXPECT_EQ(ex.submit(spec), "781");
  spec.attempt = 5;
  crashedAfterSbatch(token);
  std::ofstream(attempt() + "/started.json") << "{\"job_id\": \"782\", \"token\": \"beef\"}\n";
  EXPECT_EQ(ex.submit(spec), "4242");
  EXPECT_EQ(sbatchCalls(), 1);
}

TEST_F(SlurmExecutorTest, WhenSqueueCannotBeAskedNothingIsGuessed) {
  SlurmExecutor ex(o);
  crashedAfterSbatch();
  std::ofstream(dir + "/squeue-fails") << "";
  EXPECT_THROW(ex.poll(spec, ""), IoError);
  EXPECT_THROW(ex.submit(spec), IoError);
  EXPECT_EQ(sbatchCalls(), 0) << "no second submission while the first cannot be ruled out";
}

TEST_F(SlurmExecutorTest, ARecordedJobIsNeverSubmittedAgain) {
  SlurmExecutor ex(o);
  EXPECT_EQ(ex.submit(spec), "4242");
  // The job ended and Slurm forgot it; the scheduler asks to submit the attempt again (it died
  // before recording that it had).
  EXPECT_EQ(ex.submit(spec), "4242");
  EXPECT_EQ(sbatchCalls(), 1);
}

TEST_F(SlurmExecutorTest, FilePatternsNameThePathItself) {
  // sbatch expands %x, %j, ... in --output: a root under a folder named "%x" or "100%".
  spec.runDir = dir + "/runs %x %j %%/100%";
  SlurmExecutor ex(o);
  ex.submit(spec);
  EXPECT_NE(readText(dir + "/calls.txt").find("\n--output=" + dir + "/runs %%x %%j %%%%/100%%/attempt-2/log\n"),
            std::string::npos)
      << readText(dir + "/calls.txt");
  EXPECT_EQ(slurmFilenamePattern("/a%b"), "/a%%b");
  // Slurm strips every backslash from a pattern: such a path cannot be named, and is refused.
  spec.runDir = dir + "/back\\slash";
  try {
    ex.submit(spec);
    FAIL() << "a run directory with a backslash was submitted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("backslash"), std::string::npos) << e.what();
  }
  EXPECT_EQ(sbatchCalls(), 1);
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
