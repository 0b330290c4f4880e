// The CUDA C kernels built for the CPU (see host_emulation.h): one entry point,
// fbgpu_emulate(name, grid, block, args), which fbgpu/engine/cuda_c.py calls through ctypes.
#include <cstring>

#include "host_emulation.h"
#include "segments.cu"

#define FBGPU_KERNEL(name)                                    \
    if (std::strcmp(kernel, #name) == 0) {                    \
        fbgpu_emulate_launch(name, grid, block, args);        \
        return 0;                                             \
    }

extern "C" int fbgpu_emulate(const char* kernel, long long grid, long long block, void** args) {
    FBGPU_KERNEL(seg_sum)
    FBGPU_KERNEL(seg_moments)
    FBGPU_KERNEL(seg_corr)
    FBGPU_KERNEL(seg_bin_sum)
    FBGPU_KERNEL(group_total)
    FBGPU_KERNEL(seg_group_total)
    FBGPU_KERNEL(seg_threshold_mask)
    FBGPU_KERNEL(seg_topk_mask)
    FBGPU_KERNEL(segment_ids)
    FBGPU_KERNEL(ordered_column_sum)
    FBGPU_KERNEL(fused_order_stats)
    FBGPU_KERNEL(trade_order_moments)
    FBGPU_KERNEL(fused_trade_bins)
    FBGPU_KERNEL(fused_minute_stats)
    return 1;  // unknown kernel
}
