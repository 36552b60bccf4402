// The CUDA driver API as a table of function pointers, resolved from libcuda.so.1 with dlopen
// and cuGetProcAddress on first use. Nothing in kjit links libcuda, so the library, the CLI and
// the CPU tests run on machines without a driver; the first GPU call there throws NoDriverError.
#pragma once

#include <cuda.h>

#include <string>

namespace kjit::driver {

// Each entry is typed from cuda.h's own declaration (macros such as cuMemAlloc -> cuMemAlloc_v2
// pick the ABI version the header describes; cuGetProcAddress is asked for that version).
#define KJIT_DRIVER_FUNCTIONS(X)                                                                  \
  X(cuInit)                                                                                       \
  X(cuDriverGetVersion)                                                                           \
  X(cuGetErrorName)                                                                               \
  X(cuGetErrorString)                                                                             \
  X(cuDeviceGet)                                                                                  \
  X(cuDeviceGetCount)                                                                             \
  X(cuDeviceGetName)                                                                              \
  X(cuDeviceGetAttribute)                                                                         \
  X(cuDeviceTotalMem)                                                                             \
  X(cuDevicePrimaryCtxRetain)                                                                     \
  X(cuDevicePrimaryCtxRelease)                                                                    \
  X(cuCtxSetCurrent)                                                                              \
  X(cuCtxGetCurrent)                                                                              \
  X(cuCtxGetDevice)                                                                               \
  X(cuCtxSynchronize)                                                                             \
  X(cuStreamCreate)                                                                               \
  X(cuStreamDestroy)                                                                              \
  X(cuStreamSynchronize)                                                                          \
  X(cuEventCreate)                                                                                \
  X(cuEventDestroy)                                                                               \
  X(cuEventRecord)                                                                                \
  X(cuEventSynchronize)                                                                           \
  X(cuEventElapsedTime)                                                                           \
  X(cuMemAlloc)                                                                                   \
  X(cuMemFree)                                                                                    \
  X(cuMemcpyHtoD)                                                                                 \
  X(cuMemcpyDtoH)                                                                                 \
  X(cuMemsetD8)                                                                                   \
  X(cuMemGetInfo)                                                                                 \
  X(cuLibraryLoadData)                                                                            \
  X(cuLibraryUnload)                                                                              \
  X(cuLibraryGetKernel)                                                                           \
  X(cuKernelGetParamInfo)                                                                         \
  X(cuKernelSetAttribute)                                                                         \
  X(cuKernelGetAttribute)                                                                         \
  X(cuLaunchKernel)                                                                               \
  X(cuLaunchKernelEx)

struct Api {
#define KJIT_DRIVER_MEMBER(name) decltype(&::name) name = nullptr;
  KJIT_DRIVER_FUNCTIONS(KJIT_DRIVER_MEMBER)
#undef KJIT_DRIVER_MEMBER
};

// The loaded table; throws NoDriverError (with the reason) when libcuda cannot be loaded or
// initialised. The environment variable KJIT_LIBCUDA names another library file (tests use a
// path that does not exist to check the no-driver behaviour on a GPU machine).
const Api& api();

// Throws DriverError naming `what` and the driver's error name and text unless result is
// CUDA_SUCCESS.
void check(CUresult result, const char* what);

// Makes sure the calling thread has a current context (device 0's primary context if none), as
// the CUDA runtime does implicitly. Cheap after the first call on a thread.
void ensure_context();

// Retains `ordinal`'s primary context for the life of the process and returns it.
CUcontext primary_context(int ordinal);

}  // namespace kjit::driver
