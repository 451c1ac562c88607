// A stalled collective: every rank but one enters an all-reduce that the stalling rank (argv[1],
// default the last) joins only after 60 s. With a 1 s timeout, the waiting ranks' watchdogs must
// end the job with kExitCommTimeout and a message naming the call, the rank and host that timed
// out, and the rank and host that has not joined (checked by job_ends_test.sh). Exits 0 only if
// nothing happened.
#include <chrono>
#include <cstdlib>
#include <thread>

#include "trainer/comm/mpi/mpi_communicator.h"

int main(int argc, char** argv) {
  perennial::MpiCommunicator comm(std::chrono::milliseconds(1000));
  const int stalling = argc > 1 ? std::atoi(argv[1]) : comm.size() - 1;
  float v = 1.0f;
  comm.allReduceSum(&v, 1);  // all ranks: works
  if (comm.rank() == stalling) std::this_thread::sleep_for(std::chrono::seconds(60));
  comm.allReduceSum(&v, 1);
  return 0;
}
