// The CUDA driver API as a table of function pointers, resolved from libcuda.so.1 with dlopen
// and cuGetProcAddress on first use. Nothing in kjit links libcuda, so the library, the CLI and
// the CPU tests run on machines without a driver; the first GPU call there throws NoDriverError.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>

#include <string>

namespace kjit::driver {

// Each entry names the ABI version it is typed and resolved with (cudaTypedefs.h's
// PFN_<name>_v<version>): cuGetProcAddress returns exactly that variant, so a newer driver or
// header that changes a signature (cuCtxGetDevice gained a context argument in 13.0) cannot
// hand back a function of another shape. Macros such as cuMemAlloc -> cuMemAlloc_v2 also
// rename the member, consistently at every use.
#define KJIT_DRIVER_FUNCTIONS(X)        \
  X(cuInit, 2000)                       \
  X(cuDriverGetVersion, 2020)           \
  X(cuGetErrorName, 6000)               \
  X(cuGetErrorString, 6000)             \
  X(cuDeviceGet, 2000)                  \
  X(cuDeviceGetCount, 2000)             \
  X(cuDeviceGetName, 2000)              \
  X(cuDeviceGetAttribute, 2000)         \
  X(cuDeviceTotalMem, 3020)             \
  X(cuDevicePrimaryCtxRetain, 7000)     \
  X(cuCtxSetCurrent, 4000)              \
  X(cuCtxGetCurrent, 4000)              \
  X(cuCtxGetDevice, 2000)               \
  X(cuStreamCreate, 2000)               \
  X(cuStreamDestroy, 4000)              \
  X(cuStreamSynchronize, 2000)          \
  X(cuEventCreate, 2000)                \
  X(cuEventDestroy, 4000)               \
  X(cuEventRecord, 2000)                \
  X(cuEventSynchronize, 2000)           \
  X(cuEventElapsedTime, 12080)          \
  X(cuEventQuery, 2000)                 \
  X(cuStreamQuery, 2000)                \
  X(cuStreamWaitEvent, 3020)            \
  X(cuDeviceGetUuid, 11040)             \
  X(cuPointerGetAttributes, 7000)       \
  X(cuMemHostAlloc, 2020)               \
  X(cuMemFreeHost, 2000)                \
  X(cuMemcpyAsync, 4000)                \
  X(cuMemAllocFromPoolAsync, 11020)     \
  X(cuMemPoolCreate, 11020)             \
  X(cuMemPoolSetAttribute, 11020)       \
  X(cuMemFreeAsync, 11020)              \
  X(cuMemAlloc, 3020)                   \
  X(cuMemFree, 3020)                    \
  X(cuMemcpyHtoD, 3020)                 \
  X(cuMemcpyDtoH, 3020)                 \
  X(cuMemcpyDtoDAsync, 3020)            \
  X(cuMemsetD8, 3020)                   \
  X(cuMemsetD32Async, 3020)             \
  X(cuMemGetInfo, 3020)                 \
  X(cuLibraryLoadData, 12000)           \
  X(cuLibraryUnload, 12000)             \
  X(cuLibraryGetKernel, 12000)          \
  X(cuKernelGetParamInfo, 12040)        \
  X(cuKernelSetAttribute, 12000)        \
  X(cuLaunchKernel, 4000)               \
  X(cuLaunchKernelEx, 11060)            \
  X(cuTensorMapEncodeTiled, 12000)      \
  X(cuStreamBeginCapture, 10010)        \
  X(cuStreamEndCapture, 10000)          \
  X(cuGraphInstantiateWithFlags, 11040) \
  X(cuGraphLaunch, 10000)               \
  X(cuGraphExecDestroy, 10000)          \
  X(cuGraphDestroy, 10000)

struct Api {
#define KJIT_DRIVER_MEMBER(name, version) PFN_##name##_v##version name = nullptr;
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
