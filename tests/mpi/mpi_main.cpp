// GoogleTest main for multi-rank tests: every rank runs every test; only rank 0 prints, and the
// process fails if the tests failed on this rank (mpiexec then fails too).
#include <gtest/gtest.h>
#include <mpi.h>

#include "trainer/comm/mpi/mpi_communicator.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  perennial::MpiCommunicator::ensureInitialized();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  // Every rank learns whether any rank failed, so the exit status is the same everywhere.
  int anyFailed = 0;
  MPI_Allreduce(&failed, &anyFailed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && anyFailed && !failed) std::fprintf(stderr, "tests failed on another rank\n");
  return anyFailed ? 1 : 0;
}
