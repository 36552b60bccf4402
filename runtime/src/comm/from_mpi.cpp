// Bootstrap over MPI and the choice of backend.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "comm/mpi_communicator.hpp"
#include "kjit/comm_mpi.hpp"

namespace kjit::comm {
namespace {

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, text, &length);
  throw CommError(fmt::format("kjit comm: {} failed: {}", what, std::string(text, length)));
}

// Why NCCL cannot run on this rank ("" when it can): it needs the library and a GPU that no
// other rank of the node uses. Collective over the node.
std::string nccl_obstacle(MPI_Comm node, int device) {
  const std::array<unsigned char, 16> uuid = device_info(device).uuid;
  int node_size = 0;
  MPI_Comm_size(node, &node_size);
  std::vector<unsigned char> all(uuid.size() * node_size);
  check_mpi(MPI_Allgather(uuid.data(), 16, MPI_BYTE, all.data(), 16, MPI_BYTE, node),
            "MPI_Allgather of the GPU ids");
  std::string why;
  if (!nccl_available(&why)) return why;
  int sharing = 0;
  for (int p = 0; p < node_size; ++p) {
    sharing += std::equal(uuid.begin(), uuid.end(), all.begin() + uuid.size() * p);
  }
  if (sharing > 1) {
    return fmt::format("{} ranks of this node share GPU {}, and NCCL refuses two ranks on one GPU",
                       sharing, device);
  }
  return "";
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) return;
  int provided = 0;
  check_mpi(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided), "MPI_Init_thread");
  owned_ = true;
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owned_ && !finalized) MPI_Finalize();
}

std::unique_ptr<Communicator> from_mpi(MPI_Comm comm, int device, const Options& options) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    throw InvalidArgument("from_mpi: MPI is not initialised (call MPI_Init or make an MpiSession)");
  }
  if (comm == MPI_COMM_NULL) throw InvalidArgument("from_mpi: the MPI communicator is null");
  // kjit_mpi uses libkjit's public API only (it links against either build of it).
  const char* env = std::getenv("KJIT_COMM");
  const std::string requested = env ? env : "";
  if (!requested.empty() && requested != "nccl" && requested != "mpi") {
    throw InvalidArgument(fmt::format("KJIT_COMM='{}': the backends are nccl and mpi", requested));
  }
  const auto timeout = resolve_timeout(options);

  // kjit's messages travel on its own duplicate, never meeting the caller's.
  MPI_Comm own = MPI_COMM_NULL;
  check_mpi(MPI_Comm_dup(comm, &own), "MPI_Comm_dup");
  int rank = 0, size = 0;
  MPI_Comm_rank(own, &rank);
  MPI_Comm_size(own, &size);
  MPI_Comm node = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split_type(own, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  int local_rank = 0;
  MPI_Comm_rank(node, &local_rank);

  std::string obstacle;
  if (!driver_available(&obstacle)) {
    // No driver: only the MPI backend can be made (its calls then fail at the device checks).
  } else if (device_count() == 0) {
    obstacle = "no GPU";
  } else {
    if (device < 0) device = local_rank % device_count();
    set_device(device);
    if (requested != "mpi") obstacle = nccl_obstacle(node, device);
  }
  MPI_Comm_free(&node);
  // Every rank must pick the same backend.
  int can_here = obstacle.empty(), can_everywhere = 0;
  check_mpi(MPI_Allreduce(&can_here, &can_everywhere, 1, MPI_INT, MPI_MIN, own),
            "MPI_Allreduce of the backend choice");
  if (!can_everywhere && obstacle.empty()) obstacle = "another rank cannot run NCCL";

  if (requested == "mpi" || (requested.empty() && !can_everywhere)) {
    if (requested.empty() && rank == 0) {
      std::fputs(fmt::format("kjit: the communicator uses the MPI backend (host staging, a test "
                             "and fallback path): {}\n",
                             obstacle)
                     .c_str(),
                 stderr);
    }
    return make_mpi_communicator(own, timeout);
  }
  if (!can_everywhere) {
    MPI_Comm_free(&own);
    throw CommError(
        fmt::format("KJIT_COMM=nccl, but NCCL cannot run on rank {}: {}", rank, obstacle));
  }
  UniqueId id;
  if (rank == 0) id = make_unique_id();
  check_mpi(MPI_Bcast(id.bytes.data(), static_cast<int>(id.bytes.size()), MPI_BYTE, 0, own),
            "MPI_Bcast of the NCCL unique id");
  MPI_Comm_free(&own);
  return from_unique_id(id, rank, size, device, Options{timeout});
}

}  // namespace kjit::comm
