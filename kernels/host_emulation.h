// Run the CUDA C kernels of this folder on the CPU, for CI machines without a GPU.
//
// kernels/host_emulation.cpp includes this header, then segments.cu, and g++ builds the pair into
// a shared library (fbgpu/engine/cuda_c.py, "emulated" kernels). Each launch runs the grid's
// blocks one after another; the blockDim threads of a block are real std::threads that meet at
// __syncthreads() on a barrier, and __shared__ arrays are function-static (one block at a
// time uses them). The kernels therefore execute with their real thread interleaving problems
// (a missing barrier shows up as a race, a wrong stride as a wrong sum), only slowly: tests use
// small inputs and FBGPU_BLOCK=8.
#pragma once
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#define FBGPU_HOST_EMULATION 1
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
#define FBGPU_INF (INFINITY)
#define FBGPU_NAN (NAN)

struct FbgpuDim3 {
    long long x = 0, y = 0, z = 0;
};
inline thread_local FbgpuDim3 threadIdx;
inline thread_local FbgpuDim3 blockIdx;
inline FbgpuDim3 blockDim;
inline FbgpuDim3 gridDim;
// A block barrier that notices divergence. On a GPU, a __syncthreads() that only some threads
// of a block reach is undefined behaviour (a hang or silent corruption); here every thread
// counts its barriers, and a wait that no other thread joins within FBGPU_BARRIER_TIMEOUT_S
// seconds (default 60) aborts the process with the kernel's block and the counts, rather than
// hanging the test run.
class FbgpuBarrier {
  public:
    explicit FbgpuBarrier(long long n) : n_(n) {}
    void arrive_and_wait(const char* where) {
        std::unique_lock<std::mutex> lock(m_);
        const unsigned long long gen = gen_;
        if (++arrived_ == n_) {
            arrived_ = 0;
            ++gen_;
            cv_.notify_all();
            return;
        }
        const char* env = std::getenv("FBGPU_BARRIER_TIMEOUT_S");
        const auto timeout = std::chrono::seconds(env ? std::atoll(env) : 60);
        if (!cv_.wait_for(lock, timeout, [&] { return gen_ != gen; })) {
            std::fprintf(stderr,
                         "fbgpu host emulation: %s: %lld of %lld threads of block %lld waited "
                         "at a barrier the others never reached (divergent __syncthreads)\n",
                         where, arrived_, n_, blockIdx.x);
            std::fflush(stderr);
            std::abort();
        }
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    long long n_, arrived_ = 0;
    unsigned long long gen_ = 0;
};
inline FbgpuBarrier* fbgpu_block_barrier = nullptr;

inline void __syncthreads() { fbgpu_block_barrier->arrive_and_wait("__syncthreads"); }

using std::fmax;
using std::fmin;
using std::isfinite;

// kernelParams convention of cuLaunchKernel: args[i] points to the i-th argument's value.
template <typename... A, std::size_t... I>
void fbgpu_call_packed(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}

// Launch f over `grid` blocks of `block` threads, blocks one after another.
template <typename... A>
void fbgpu_emulate_launch(void (*f)(A...), long long grid, long long block, void** args) {
    gridDim.x = grid;
    blockDim.x = block;
    FbgpuBarrier bar(block);
    fbgpu_block_barrier = &bar;
    std::vector<std::thread> threads;
    threads.reserve(block);
    for (long long t = 0; t < block; ++t) {
        threads.emplace_back([=, &bar] {
            threadIdx.x = t;
            for (long long b = 0; b < grid; ++b) {
                blockIdx.x = b;
                fbgpu_call_packed(f, args, std::index_sequence_for<A...>{});
                bar.arrive_and_wait("end of block");  // before its shared arrays are reused
            }
        });
    }
    for (auto& th : threads) th.join();
    fbgpu_block_barrier = nullptr;
}
