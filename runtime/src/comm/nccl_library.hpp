// NCCL as a table of function pointers, loaded with dlopen on first use like libcuda: libkjit
// runs (and its CPU tests pass) where NCCL is absent, and a process that already loaded NCCL
// (a framework's) shares that copy, so communicators the framework made are usable here.
#pragma once

#include <nccl.h>

namespace kjit::comm {

#define KJIT_NCCL_FUNCTIONS(X) \
  X(ncclGetVersion)            \
  X(ncclGetUniqueId)           \
  X(ncclGetErrorString)        \
  X(ncclGetLastError)          \
  X(ncclCommInitRankConfig)    \
  X(ncclCommFinalize)          \
  X(ncclCommDestroy)           \
  X(ncclCommAbort)             \
  X(ncclCommGetAsyncError)     \
  X(ncclCommCount)             \
  X(ncclCommUserRank)          \
  X(ncclCommCuDevice)          \
  X(ncclAllGather)             \
  X(ncclReduceScatter)         \
  X(ncclAllReduce)             \
  X(ncclBroadcast)             \
  X(ncclSend)                  \
  X(ncclRecv)                  \
  X(ncclGroupStart)            \
  X(ncclGroupEnd)

struct NcclApi {
#define KJIT_NCCL_MEMBER(name) decltype(&::name) name = nullptr;
  KJIT_NCCL_FUNCTIONS(KJIT_NCCL_MEMBER)
#undef KJIT_NCCL_MEMBER
  int version = 0;  // NCCL_VERSION_CODE of the loaded library
};

// The loaded table; throws Error with the reason when libnccl.so.2 (or $KJIT_LIBNCCL) cannot be
// loaded or is older than kjit needs.
const NcclApi& nccl();

}  // namespace kjit::comm
