// One rank fails while the other waits in a collective: the failing rank's error path (the one
// main() takes) must end the whole job at once, long before the 60 s collective timeout.
#include <chrono>
#include <cstdio>

#include "common/error.h"
#include "trainer/cli/commands.h"
#include "trainer/comm/mpi/mpi_communicator.h"

int main() {
  perennial::MpiCommunicator comm(std::chrono::seconds(60));
  float v = 1.0f;
  comm.allReduceSum(&v, 1);
  try {
    if (comm.rank() == 1) throw perennial::DataError("injected: shard unreadable on rank 1 only");
    comm.allReduceSum(&v, 1);  // rank 0 waits here for a rank that will never come
  } catch (const perennial::Error& e) {
    std::fprintf(stderr, "rank %d: error: %s\n", comm.rank(), e.what());
    perennial::cli::abortJobOnError(1);
  }
  return 0;
}
