// A stalled collective: rank 0 enters an all-reduce that rank 1 joins only after 60 s. With a
// 1 s timeout, rank 0's watchdog must end the process with kExitCommTimeout and a message naming
// the call, the rank and the host (checked by stall_test.sh). Exits 0 only if nothing happened.
#include <chrono>
#include <thread>

#include "trainer/comm/mpi/mpi_communicator.h"

int main() {
  perennial::MpiCommunicator comm(std::chrono::milliseconds(1000));
  float v = 1.0f;
  comm.allReduceSum(&v, 1);  // all ranks: works
  if (comm.rank() != 0) std::this_thread::sleep_for(std::chrono::seconds(60));
  comm.allReduceSum(&v, 1);
  return 0;
}
