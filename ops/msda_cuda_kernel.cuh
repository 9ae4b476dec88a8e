// napari-focus: multi-scale deformable attention forward on CUDA.
//
// Torch-free interface (raw pointers, CUDA runtime types only) so that the
// kernels compile with plain nvcc; the ATen binding lives in msda_cuda.cpp.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace napari_focus_msda {

enum class DType { kFloat32, kFloat64, kFloat16, kBFloat16 };

// value (B, S, M, D) in `dtype`; spatial_shapes (L, 2) and level_start_index
// (L,) int64 on the device; sampling_locations (B, Q, M, L, P, 2) and
// attention_weights (B, Q, M, L, P) in float32 (float64 when dtype is
// kFloat64); out (B, Q, M * D) in `dtype`. All contiguous. Half-precision
// inputs are accumulated in float32.
cudaError_t ms_deform_attn_forward(DType dtype, const void* value,
                                   const int64_t* spatial_shapes,
                                   const int64_t* level_start_index,
                                   const void* sampling_locations,
                                   const void* attention_weights, void* out,
                                   int64_t batch, int64_t spatial,
                                   int64_t heads, int64_t dim, int64_t queries,
                                   int64_t levels, int64_t points,
                                   cudaStream_t stream);

}  // namespace napari_focus_msda
