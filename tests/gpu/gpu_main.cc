// Main of gpu_tests: without a usable CUDA device it prints why and exits 77,
// which CTest reports as skipped (SKIP_RETURN_CODE).

#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cuda_runtime.h>

#include <cstdio>

int main(int argc, char** argv) {
  int num_devices = 0;
  const cudaError_t err = cudaGetDeviceCount(&num_devices);
  if (err != cudaSuccess || num_devices == 0) {
    std::fprintf(stderr, "gpu_tests: skipped, no CUDA device (%s)\n",
                 err != cudaSuccess ? cudaGetErrorString(err) : "device count is 0");
    return 77;
  }
  return Catch::Session().run(argc, argv);
}
